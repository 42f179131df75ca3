// useRtEvents (react.js), run against a stand-in for React's hooks
// (test-support/fake-react.js) that a resolve hook puts in place of 'react'.

import test from 'node:test';
import assert from 'node:assert/strict';
import { register } from 'node:module';
import { Clock, fakeWebSocket, ev } from '../test-support/fakes.js';

register('../test-support/react-loader.js', import.meta.url);
const { useRtEvents, getRtEvents } = await import('../react.js');
const { render, flush, unmount } = await import('../test-support/fake-react.js');

let n = 0;
function setup() {
  const clock = new Clock();
  const WS = fakeWebSocket();
  const url = `http://react${++n}.test`;
  const connection = {
    WebSocket: WS, EventSource: null, fetch: null, window: null, navigator: null,
    setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, random: () => 0.5,
  };
  return { clock, WS, url, connection };
}

test('the hook subscribes, and returns events, lastEvent, status', () => {
  const { WS, url, connection } = setup();
  const c = render(() => useRtEvents({ executionId: 'e1', type: 'job_progress' }, { url, connection, history: true }));
  assert.equal(c.result.status, 'connecting');
  assert.deepEqual(c.result.events, []);
  const ws = WS.last();
  ws.open();
  flush(c);
  assert.equal(c.result.status, 'open');
  assert.equal(c.result.transport, 'websocket');
  assert.deepEqual(ws.ops('subscribe'), [{ op: 'subscribe', sub: 's1', filter: { executionId: 'e1', type: ['job_progress'] }, after: 0 }]);
  ws.events('s1', ev(1), ev(2));
  ws.subscribed('s1', 2);
  flush(c);
  assert.deepEqual(c.result.events.map((e) => e.id), [1, 2]);
  assert.equal(c.result.lastEvent.id, 2);
  assert.ok(c.result.lastEvent.ts instanceof Date);
  assert.equal(c.result.ready, true);
  ws.recv({ op: 'gap', sub: 's1', after: 0, oldest: 1 });
  flush(c);
  assert.deepEqual(c.result.gap, { after: 0, oldest: 1 });
});

test('a filter equal by value keeps the subscription; a changed one resubscribes', () => {
  const { WS, url, connection } = setup();
  let filter = { executionId: 'e1', type: ['b', 'a'] };
  const c = render(() => useRtEvents({ ...filter }, { url, connection }));
  const ws = WS.last();
  ws.open();
  ws.subscribed('s1');
  ws.events('s1', ev(5, { type: 'a' }));
  flush(c);
  filter = { type: ['a', 'b'], executionId: 'e1', jobId: undefined };
  flush(c, () => useRtEvents({ ...filter }, { url, connection }));
  assert.equal(ws.ops('subscribe').length, 1);
  assert.equal(ws.ops('unsubscribe').length, 0);
  assert.deepEqual(c.result.events.map((e) => e.id), [5]);
  filter = { executionId: 'e2' };
  flush(c, () => useRtEvents({ ...filter }, { url, connection }));
  assert.deepEqual(ws.ops('unsubscribe'), [{ op: 'unsubscribe', sub: 's1' }]);
  assert.deepEqual(ws.ops('subscribe').at(-1), { op: 'subscribe', sub: 's2', filter: { executionId: 'e2' } });
  assert.deepEqual(c.result.events, [], 'events start over for the new filter');
  assert.equal(c.result.lastEvent, null);
});

test('one shared RtEvents per url, closed a while after its last hook unmounts', async () => {
  const { WS, url, clock, connection } = setup();
  const a = render(() => useRtEvents({ executionId: 'e1' }, { url, connection }));
  const b = render(() => useRtEvents({ jobId: 'j1' }, { url, connection }));
  assert.equal(WS.sockets.length, 1, 'one connection for both');
  const rt = getRtEvents(url);
  WS.last().open();
  WS.last().subscribed('s1');
  WS.last().subscribed('s2');
  WS.last().events(['s1', 's2'], ev(1));
  flush(a);
  flush(b);
  assert.deepEqual(a.result.events.map((e) => e.id), [1]);
  assert.deepEqual(b.result.events.map((e) => e.id), [1]);
  unmount(a);
  unmount(b);
  assert.equal(rt.status, 'open', 'kept for a remount');
  const c = render(() => useRtEvents({ executionId: 'e1' }, { url, connection }));
  assert.equal(getRtEvents(url), rt);
  unmount(c);
  await clock.advance(5000);
  assert.equal(rt.status, 'closed');
  assert.equal(WS.last().closedWith, 1000);
  const d = render(() => useRtEvents({ executionId: 'e1' }, { url, connection }));
  assert.notEqual(getRtEvents(url), rt, 'a new one after close');
  assert.equal(WS.sockets.length, 2);
  unmount(d);
});

test('a null filter or enabled: false subscribes to nothing', () => {
  const { WS, url, connection } = setup();
  const c = render(() => useRtEvents(null, { url, connection }));
  assert.equal(WS.sockets.length, 0);
  assert.equal(c.result.status, 'closed');
  flush(c, () => useRtEvents({ executionId: 'e1' }, { url, connection, enabled: false }));
  assert.equal(WS.sockets.length, 0);
  flush(c, () => useRtEvents({ executionId: 'e1' }, { url, connection }));
  assert.equal(WS.sockets.length, 1);
});

test('limit keeps the last events only; onEvent is the latest callback, without resubscribing', () => {
  const { WS, url, connection } = setup();
  const seen = [];
  let tag = 'first';
  const hook = () => useRtEvents({ executionId: 'e1' }, { url, connection, limit: 2, onEvent: (e) => seen.push([tag, e.id]) });
  const c = render(hook);
  WS.last().open();
  WS.last().subscribed('s1');
  WS.last().events('s1', ev(1), ev(2));
  tag = 'second';
  flush(c, () => useRtEvents({ executionId: 'e1' }, { url, connection, limit: 2, onEvent: (e) => seen.push([tag, e.id]) }));
  WS.last().events('s1', ev(3));
  flush(c);
  assert.deepEqual(c.result.events.map((e) => e.id), [2, 3]);
  assert.deepEqual(seen, [['first', 1], ['first', 2], ['second', 3]]);
  assert.equal(WS.last().ops('subscribe').length, 1);
});

test('a client option uses that RtEvents and leaves it open on unmount', () => {
  const { WS, url, connection } = setup();
  const rt = getRtEvents(url, connection);
  const c = render(() => useRtEvents({ executionId: 'e1' }, { client: rt }));
  WS.last().open();
  flush(c);
  assert.equal(c.result.status, 'open');
  unmount(c);
  assert.deepEqual(WS.last().ops('unsubscribe'), [{ op: 'unsubscribe', sub: 's1' }]);
  assert.equal(rt.status, 'open');
  rt.close();
});

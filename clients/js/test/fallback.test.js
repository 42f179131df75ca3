// Transports other than WebSocket: the fall back to Server-Sent Events and to
// polling the history API, what each sends and receives, and the switch back
// to the better transport without losing or repeating events.

import test from 'node:test';
import assert from 'node:assert/strict';
import { makeRt, record, ev, fakeFetch } from '../test-support/fakes.js';

const page = (events, next = null) => ({ body: { events, next } });

// Makes WebSocket fail twice before ever opening: the fall back to SSE.
async function toSse(f) {
  f.WS.last().fail();
  await f.clock.advance(f.clock.pending()[0]);
  f.WS.last().fail();
  await f.clock.advance(0);
}

test('WebSocket failing twice before any open falls back to SSE at once', async () => {
  const f = makeRt();
  const a = record(f.rt, { executionId: 'e1', type: ['a', 'b'] }, { after: 5 });
  await toSse(f);
  assert.equal(f.WS.sockets.length, 2);
  assert.equal(f.ES.all.length, 1);
  const es = f.ES.last();
  assert.equal(es.url, 'http://rt.test:8787/api/events/stream?executionId=e1&type=a%2Cb&after=5');
  assert.equal(f.rt.transport, 'sse');
  assert.equal(f.rt.status, 'reconnecting');
  es.open();
  assert.equal(f.rt.status, 'open');
  assert.deepEqual(f.statuses.at(-1), { status: 'open', transport: 'sse', attempt: 0 });
  assert.deepEqual(a.got.ready, [{ replayed: null, transport: 'sse' }]);
  es.send(ev(6, { type: 'a' }));
  es.send(ev(6, { type: 'a' }));
  es.send(ev(5, { type: 'a' }));
  es.send(ev(7, { type: 'b' }));
  assert.deepEqual(a.got.ids, [6, 7]);
  assert.ok(a.got.events[0].ts instanceof Date);
});

test('no WebSocket at all: SSE from the start, one EventSource per sub', async () => {
  const f = makeRt({ WebSocket: undefined });
  record(f.rt, { executionId: 'e1' });
  record(f.rt, { jobId: 'j1' }, { history: true });
  assert.equal(f.rt.transport, 'sse');
  assert.deepEqual(f.ES.all.map((e) => e.url.split('?')[1]), ['executionId=e1', 'jobId=j1&after=0']);
  f.ES.all[0].fail();
  assert.equal(f.rt.status, 'reconnecting');
  await f.clock.advance(f.clock.pending()[0]);
  assert.equal(f.ES.all.length, 4);
  f.ES.all[2].open();
  assert.equal(f.rt.status, 'reconnecting', 'open once every stream is');
  f.ES.all[3].open();
  assert.equal(f.rt.status, 'open');
});

test('a WebSocket that has worked is retried, not given up for SSE', async () => {
  const f = makeRt({ random: () => 0 });
  f.WS.last().open();
  for (let i = 0; i < 5; i++) {
    f.WS.last().fail();
    await f.clock.advance(0);
  }
  assert.equal(f.ES.all.length, 0);
  assert.equal(f.rt.transport, 'websocket');
  assert.equal(f.WS.sockets.length, 6);
});

test('SSE gap event: onGap with {after, oldest}', async () => {
  const f = makeRt({ WebSocket: null });
  const a = record(f.rt, { executionId: 'e1' }, { after: 3 });
  f.ES.last().open();
  f.ES.last().gap({ after: 3, oldest: 50 });
  f.ES.last().send(ev(50));
  assert.deepEqual(a.got.gaps, [{ after: 3, oldest: 50 }]);
  assert.deepEqual(f.gaps, [['s1', { after: 3, oldest: 50 }]]);
  assert.deepEqual(a.got.ids, [50]);
});

test('SSE error: the client closes the stream and reopens it after the backoff, from lastId', async () => {
  const f = makeRt({ WebSocket: null });
  const a = record(f.rt, { executionId: 'e1' });
  const b = record(f.rt, { jobId: 'j9' }, { after: 2 });
  f.ES.all.forEach((e) => e.open());
  f.ES.all[0].send(ev(10));
  f.ES.all[0].fail();
  assert.ok(f.ES.all[0].closed && f.ES.all[1].closed, 'closed by the client, not left to reconnect itself');
  assert.equal(f.rt.status, 'reconnecting');
  assert.deepEqual(f.clock.pending(), [500]);
  await f.clock.advance(500);
  assert.equal(f.ES.all.length, 4);
  assert.equal(f.ES.all[2].params.get('after'), '10');
  assert.equal(f.ES.all[3].params.get('after'), '2');
  f.ES.all[2].send(ev(10));
  f.ES.all[2].send(ev(11));
  assert.deepEqual(a.got.ids, [10, 11]);
  assert.ok(b);
});

test('SSE failing twice before any open falls back to polling, with pagination by next', async () => {
  const fetch = fakeFetch((u, n) => {
    if (n === 1) return page([ev(6), ev(7)], 7);
    if (n === 2) return page([ev(8)]);
    if (n === 3) return page([ev(9)]);
    return page([]);
  });
  const f = makeRt({ WebSocket: null, fetch });
  const a = record(f.rt, { executionId: 'e1', type: 'job_progress' }, { after: 5 });
  f.ES.last().fail();
  await f.clock.advance(f.clock.pending()[0]);
  f.ES.last().fail();
  await f.clock.advance(0);
  assert.equal(f.rt.transport, 'poll');
  assert.equal(fetch.calls.length, 2, 'a full page (next != null) is followed at once');
  const [p1, p2] = fetch.calls;
  assert.equal(p1.pathname, '/api/events');
  assert.equal(p1.search, '?executionId=e1&type=job_progress&after=5&limit=1000');
  assert.equal(p2.searchParams.get('after'), '7');
  assert.deepEqual(a.got.ids, [6, 7, 8]);
  assert.equal(f.rt.status, 'open');
  assert.deepEqual(a.got.ready, [{ replayed: null, transport: 'poll' }]);
  await f.clock.advance(1999);
  assert.equal(fetch.calls.length, 2);
  await f.clock.advance(1);
  assert.equal(fetch.calls.length, 3, 'then every pollInterval');
  assert.equal(fetch.calls[2].searchParams.get('after'), '8');
  assert.deepEqual(a.got.ids, [6, 7, 8, 9]);
});

test('polling: a 5xx or a network error is a failure (backoff), a 4xx an error for that sub', async () => {
  let mode = 'ok';
  const fetch = fakeFetch(() => {
    if (mode === 'down') return new Error('connection refused');
    if (mode === '503') return { status: 503, body: { error: 'feed_down', message: 'x' } };
    if (mode === '400') return { status: 400, body: { error: 'bad_filter', message: 'organizationId is not a UUID' } };
    return page([]);
  });
  const f = makeRt({ WebSocket: null, EventSource: null, fetch, random: () => 1 });
  const mine = [];
  const sub = f.rt.subscribe({ executionId: 'e1' }, { after: 1, onError: (e, s) => mine.push([e.code, s.name]) });
  await f.clock.advance(0);
  assert.equal(f.rt.status, 'open');
  mode = 'down';
  await f.clock.advance(2000);
  assert.equal(f.rt.status, 'reconnecting');
  assert.match(f.rt.state.error, /connection refused/);
  assert.deepEqual(f.clock.pending(), [1000]);
  mode = '503';
  await f.clock.advance(1000);
  assert.equal(f.rt.state.attempt, 1);
  assert.equal(f.rt.state.error, 'HTTP 503');
  mode = '400';
  await f.clock.advance(2000);
  assert.equal(f.rt.status, 'open', 'the server answered');
  assert.deepEqual(f.errors.map((e) => [e.code, e.sub, e.transport]), [['bad_filter', 's1', 'poll']]);
  assert.deepEqual(mine, [['bad_filter', 's1']], 'its onError too');
  assert.equal(sub.error, null, 'not failed: polling retries it');
  const n = fetch.calls.length;
  await f.clock.advance(29999);
  assert.equal(fetch.calls.length, n, 'a refused sub is retried slowly');
  mode = 'ok';
  await f.clock.advance(1);
  assert.equal(fetch.calls.length, n + 1);
});

test('polling a live sub with no cursor reads to the end of history first, delivering none of it', async () => {
  const fetch = fakeFetch((u, n) => [page([ev(1), ev(2)], 2), page([ev(3)]), page([ev(4)])][n - 1] ?? page([]));
  const f = makeRt({ WebSocket: null, EventSource: null, fetch });
  const a = record(f.rt, { executionId: 'e1' });
  await f.clock.advance(0);
  assert.deepEqual(fetch.calls.map((u) => u.searchParams.get('after')), ['0', '2']);
  assert.deepEqual(a.got.ids, []);
  await f.clock.advance(2000);
  assert.equal(fetch.calls[2].searchParams.get('after'), '3');
  assert.deepEqual(a.got.ids, [4]);
});

test('on polling, WebSocket is tried again every upgradeInterval; when it opens, polling stops with nothing lost or repeated', async () => {
  const fetch = fakeFetch((u) => {
    const after = Number(u.searchParams.get('after'));
    return after < 3 ? page([ev(after + 1)]) : page([]);
  });
  const f = makeRt({ EventSource: null, fetch });
  const a = record(f.rt, { executionId: 'e1' }, { after: 0 });
  f.WS.last().fail();
  await f.clock.advance(f.clock.pending()[0]);
  f.WS.last().fail();
  await f.clock.advance(0);
  assert.equal(f.rt.transport, 'poll');
  await f.clock.advance(4000);
  assert.deepEqual(a.got.ids, [1, 2, 3]);
  assert.equal(f.WS.sockets.length, 2);
  await f.clock.advance(60000 - 4000);
  assert.equal(f.WS.sockets.length, 3, 'a probe after upgradeInterval');
  assert.equal(f.rt.transport, 'poll', 'still polling while the probe connects');
  const calls = fetch.calls.length;
  const ws = f.WS.last();
  ws.open();
  assert.equal(f.rt.transport, 'websocket');
  assert.equal(f.rt.status, 'open');
  assert.deepEqual(ws.ops('subscribe'), [{ op: 'subscribe', sub: 's1', filter: { executionId: 'e1' }, after: 3 }]);
  ws.events('s1', ev(3), ev(4));
  ws.subscribed('s1', 1);
  assert.deepEqual(a.got.ids, [1, 2, 3, 4]);
  await f.clock.advance(10000);
  assert.equal(fetch.calls.length, calls, 'polling stopped');
});

test('a failed probe leaves the transport as it is and tries again later; SSE is tried when WebSocket fails', async () => {
  const fetch = fakeFetch(() => page([]));
  const f = makeRt({ fetch });
  const a = record(f.rt, { executionId: 'e1' }, { after: 0 });
  // WebSocket x2, then SSE x2: polling
  f.WS.last().fail();
  await f.clock.advance(f.clock.pending()[0]);
  f.WS.last().fail();
  await f.clock.advance(0);
  f.ES.last().fail();
  await f.clock.advance(f.clock.pending()[0]);
  f.ES.last().fail();
  await f.clock.advance(0);
  assert.equal(f.rt.transport, 'poll');
  assert.equal(f.ES.all.length, 2);
  await f.clock.advance(60000);
  f.WS.last().fail(); // the WebSocket probe fails: SSE is probed next
  assert.equal(f.rt.transport, 'poll');
  assert.equal(f.rt.status, 'open');
  assert.equal(f.ES.all.length, 3);
  const es = f.ES.last();
  assert.equal(es.params.get('after'), '0');
  es.send(ev(1)); // both may deliver during the probe: once each
  es.open();
  assert.equal(f.rt.transport, 'sse');
  const calls = fetch.calls.length;
  await f.clock.advance(10000);
  assert.equal(fetch.calls.length, calls, 'polling stopped');
  es.send(ev(1));
  es.send(ev(2));
  assert.deepEqual(a.got.ids, [1, 2]);
  // from SSE, the WebSocket is probed again
  await f.clock.advance(60000 - 10000);
  assert.equal(f.WS.sockets.length, 4);
  f.WS.last().open();
  assert.equal(f.rt.transport, 'websocket');
  assert.ok(es.closed);
  assert.equal(f.WS.last().ops('subscribe')[0].after, 2);
});

test('unsubscribe closes its EventSource; on polling it stops the polls', async () => {
  const f = makeRt({ WebSocket: null });
  const a = record(f.rt, { executionId: 'e1' });
  const b = record(f.rt, { executionId: 'e2' });
  f.ES.all.forEach((e) => e.open());
  a.sub.unsubscribe();
  assert.equal(f.ES.all[0].closed, true);
  assert.equal(f.ES.all[1].closed, false);
  f.ES.all[0].send(ev(1));
  assert.deepEqual(a.got.ids, []);
  assert.ok(b);

  const fetch = fakeFetch(() => page([]));
  const g = makeRt({ WebSocket: null, EventSource: null, fetch });
  const c = record(g.rt, { executionId: 'e1' }, { after: 0 });
  await g.clock.advance(2000);
  const n = fetch.calls.length;
  assert.ok(n >= 2);
  c.sub.unsubscribe();
  await g.clock.advance(20000);
  assert.equal(fetch.calls.length, n);
});

test('subscribing while on SSE opens a stream for the new sub alone', () => {
  const f = makeRt({ WebSocket: null });
  record(f.rt, { executionId: 'e1' });
  f.ES.last().open();
  const b = record(f.rt, { jobId: 'j1' }, { after: 9 });
  assert.equal(f.ES.all.length, 2);
  assert.equal(f.ES.last().url.split('?')[1], 'jobId=j1&after=9');
  f.ES.last().open();
  f.ES.last().send(ev(10));
  assert.deepEqual(b.got.ids, [10]);
});

test('transports option limits and orders what is tried', async () => {
  const fetch = fakeFetch(() => page([]));
  const f = makeRt({ transports: ['poll'], fetch });
  record(f.rt, { executionId: 'e1' }, { after: 0 });
  await f.clock.advance(0);
  assert.equal(f.WS.sockets.length, 0);
  assert.equal(f.rt.transport, 'poll');
  assert.equal(f.rt.status, 'open');
  await f.clock.advance(120000);
  assert.equal(f.WS.sockets.length, 0, 'no probe of what was not asked for');
});

test('SSE: a live sub with no event yet resumes from the highest id seen before its stream was asked for', async () => {
  const f = makeRt({ WebSocket: null });
  const a = record(f.rt, { executionId: 'e1' }, { after: 30 });
  f.ES.all[0].open();
  f.ES.all[0].send(ev(40));
  const b = record(f.rt, { jobId: 'j7' });
  assert.equal(f.ES.all[1].params.get('after'), null, 'live: no after');
  f.ES.all[0].send(ev(41)); // after b's request went out: not a safe point for b
  f.ES.all[1].open();
  f.ES.all[1].fail();
  await f.clock.advance(f.clock.pending()[0]);
  assert.equal(f.ES.all[2].params.get('after'), '41');
  assert.equal(f.ES.all[3].params.get('after'), '40');
  assert.equal(b.sub.lastId, null);
  assert.ok(a);
});

test('polling: an answer that is not the history format is not an exception', async () => {
  const fetch = fakeFetch((u, n) => (n === 1 ? { body: { events: { not: 'a list' }, next: null } } : n === 2 ? { body: null } : page([ev(1)])));
  const f = makeRt({ WebSocket: null, EventSource: null, fetch });
  const a = record(f.rt, { executionId: 'e1' }, { after: 0 });
  await f.clock.advance(0);
  assert.equal(f.rt.status, 'open');
  await f.clock.advance(2000); // the second answer has no JSON body: a failure
  assert.equal(f.rt.status, 'reconnecting');
  await f.clock.advance(f.clock.pending()[0]);
  assert.deepEqual(a.got.ids, [1]);
  assert.equal(f.rt.status, 'open');
});

test('SSE: a message that is not an event is an error for its sub (its onError), not an exception', () => {
  const f = makeRt({ WebSocket: null });
  const mine = [];
  const a = record(f.rt, { executionId: 'e1' });
  f.rt.subscribe({ executionId: 'e2' }, { onError: (e, s) => mine.push([e.code, s.name]) });
  f.ES.all.forEach((e) => e.open());
  f.ES.all[1].onmessage({ data: 'not json' });
  f.ES.all[1].send(ev(3, { executionId: 'e2' }));
  assert.deepEqual(mine, [['bad_frame', 's2']]);
  assert.deepEqual(f.errors.map((e) => [e.code, e.sub]), [['bad_frame', 's2']]);
  assert.deepEqual(a.got.ids, []);
  assert.equal(f.rt.status, 'open');
});

test('a sub the server refused over WebSocket is not asked for on another transport either', async () => {
  const f = makeRt({ transports: ['sse', 'websocket'] });
  const a = record(f.rt, { executionId: 'e1' });
  const b = record(f.rt, { organizationId: 'not-a-uuid' });
  f.ES.all[0].fail();
  await f.clock.advance(f.clock.pending()[0]);
  f.ES.last().fail();
  await f.clock.advance(0);
  assert.equal(f.rt.transport, 'websocket');
  const ws = f.WS.last();
  ws.open();
  ws.recv({ op: 'error', sub: 's2', code: 'bad_filter', message: 'organizationId is not a UUID' });
  assert.equal(b.sub.error.code, 'bad_filter');
  const n = f.ES.all.length;
  f.rt.reconnect(); // from the best transport: SSE
  assert.equal(f.rt.transport, 'sse');
  assert.deepEqual(f.ES.all.slice(n).map((e) => e.params.get('executionId')), ['e1'], 'a stream for s1 only');
  f.ES.last().open();
  assert.equal(f.rt.status, 'open');
  assert.ok(a);

  // the same on polling
  let down = true;
  const fetch = fakeFetch(() => (down ? new Error('refused') : page([])));
  const g = makeRt({ transports: ['poll', 'websocket'], fetch });
  record(g.rt, { executionId: 'e1' }, { after: 0 });
  record(g.rt, { organizationId: 'not-a-uuid' }, { after: 0 });
  await g.clock.advance(0);
  await g.clock.advance(g.clock.pending()[0]);
  assert.equal(g.rt.transport, 'websocket');
  g.WS.last().open();
  g.WS.last().recv({ op: 'error', sub: 's2', code: 'bad_filter', message: 'organizationId is not a UUID' });
  down = false;
  const m = fetch.calls.length;
  g.rt.reconnect();
  await g.clock.advance(0);
  assert.equal(g.rt.transport, 'poll');
  assert.equal(g.rt.status, 'open');
  assert.deepEqual(fetch.calls.slice(m).map((u) => u.searchParams.get('executionId')), ['e1'], 'polls for s1 only');
});

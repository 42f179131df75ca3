// What subscriptions get over WebSocket: the subscribe messages, routing of
// events (sent once per connection) to every matching local subscription,
// dedup, resume after a drop, replay of a subscription added to an open
// connection, gap, ready, unsubscribe, server errors.

import test from 'node:test';
import assert from 'node:assert/strict';
import { makeRt, record, ev } from '../test-support/fakes.js';

test('subscribe messages: names s1, s2, ...; filter; after, history, live', () => {
  const { rt, WS } = makeRt();
  rt.subscribe({ executionId: 'e1', type: 'job_progress' }, { after: 120 });
  rt.subscribe({ jobId: 'j1', type: ['a', 'b'], organizationId: undefined }, { history: true });
  rt.subscribe({});
  const ws = WS.last();
  assert.deepEqual(ws.sent, [], 'nothing before the socket opens');
  ws.open();
  assert.deepEqual(ws.ops('subscribe'), [
    { op: 'subscribe', sub: 's1', filter: { executionId: 'e1', type: ['job_progress'] }, after: 120 },
    { op: 'subscribe', sub: 's2', filter: { jobId: 'j1', type: ['a', 'b'] }, after: 0 },
    { op: 'subscribe', sub: 's3', filter: {} },
  ]);
  // and on an open socket, at once
  rt.subscribe({ batchId: 'b1' }, { after: '7' });
  assert.deepEqual(ws.sent.at(-1), { op: 'subscribe', sub: 's4', filter: { batchId: 'b1' }, after: 7 });
});

test('an event: ts is a Date, data the parsed object, keys kept; rt "event" too', () => {
  const { rt, WS, events } = makeRt();
  const { sub, got } = record(rt, { executionId: 'e1' });
  WS.last().open();
  WS.last().subscribed('s1');
  WS.last().events(ev(42, { organizationId: '6f1c0f8e-0000-4000-8000-000000000001' }));
  const e = got.events[0];
  assert.ok(e.ts instanceof Date);
  assert.equal(e.ts.toISOString(), '2026-11-22T10:00:00.123Z');
  assert.deepEqual(e.data, { pct: 42 });
  assert.equal(e.type, 'job_progress');
  assert.equal(e.executionId, 'e1');
  assert.equal(e.jobId, 'j1');
  assert.equal(e.organizationId, '6f1c0f8e-0000-4000-8000-000000000001');
  assert.equal(sub.lastId, 42);
  assert.deepEqual(events, [['s1', 42]]);
});

test('dedup: an event delivered twice is seen once; ids <= lastId are dropped', () => {
  const { rt, WS } = makeRt();
  const a = record(rt, { executionId: 'e1' }, { after: 10 });
  WS.last().open();
  WS.last().subscribed('s1');
  WS.last().events(ev(9), ev(10), ev(11), ev(11));
  WS.last().events(ev(11), ev(12), ev(10));
  assert.deepEqual(a.got.ids, [11, 12]);
  assert.equal(a.sub.lastId, 12);
});

test('an event sent once for a connection goes to every matching sub, once each', () => {
  const { rt, WS } = makeRt();
  const byExec = record(rt, { executionId: 'e1' });
  const byJob = record(rt, { jobId: 'j1', type: ['job_progress', 'job_failed'] });
  const otherJob = record(rt, { jobId: 'j2' });
  const otherType = record(rt, { executionId: 'e1', type: 'job_completed' });
  const byOrg = record(rt, { organizationId: '6F1C0F8E-0000-4000-8000-00000000000A' });
  const ws = WS.last();
  ws.open();
  for (const s of ['s1', 's2', 's3', 's4', 's5']) ws.subscribed(s);
  ws.events(ev(43, { organizationId: '6f1c0f8e-0000-4000-8000-00000000000a' }));
  ws.events(ev(44, { type: 'job_completed' }));
  ws.events(ev(43)); // again: nobody gets it twice
  assert.deepEqual(byExec.got.ids, [43, 44]);
  assert.deepEqual(byJob.got.ids, [43]);
  assert.deepEqual(otherJob.got.ids, []);
  assert.deepEqual(otherType.got.ids, [44]);
  assert.deepEqual(byOrg.got.ids, [43], 'organizationId compares case-insensitively');
  assert.equal(byJob.sub.lastId, 43);
});

test('resume: after a drop every sub resubscribes from its own lastId; replays are not duplicated', async () => {
  const { rt, WS, clock } = makeRt();
  const a = record(rt, { executionId: 'e1' });
  const b = record(rt, { jobId: 'j2' }, { after: 7 });
  const c = record(rt, { batchId: 'b9' }, { history: true });
  const d = record(rt, { batchId: 'nothing' });
  let ws = WS.last();
  ws.open();
  ['s1', 's2', 's3', 's4'].forEach((s) => ws.subscribed(s));
  ws.events(ev(20), ev(21, { executionId: 'e2', jobId: 'j2' }), ev(22));
  ws.drop();
  await clock.advance(1000);
  ws = WS.last();
  assert.equal(WS.sockets.length, 2);
  ws.open();
  const after = Object.fromEntries(ws.ops('subscribe').map((m) => [m.sub, m.after]));
  // a: its lastId; b: its lastId; c: history not yet delivered: 0;
  // d: live, nothing yet: the highest id the connection got while d was
  // live, since the server sent d's own events up to there before it
  assert.deepEqual(after, { s1: 22, s2: 21, s3: 0, s4: 22 });
  ws.events(ev(21, { executionId: 'e2', jobId: 'j2' }), ev(22), ev(23));
  ['s1', 's2', 's3', 's4'].forEach((s) => ws.subscribed(s));
  assert.deepEqual(a.got.ids, [20, 22, 23]);
  assert.deepEqual(b.got.ids, [21]);
  assert.deepEqual(c.got.ids, []);
});

test('a live sub with nothing received and nothing seen resubscribes live', async () => {
  const { rt, WS, clock } = makeRt();
  rt.subscribe({ executionId: 'e1' });
  WS.last().open();
  WS.last().subscribed('s1');
  WS.last().drop();
  await clock.advance(1000);
  WS.last().open();
  assert.deepEqual(WS.last().ops('subscribe'), [{ op: 'subscribe', sub: 's1', filter: { executionId: 'e1' } }]);
});

test('a sub added to an open connection gets the events the server skipped for it, in order', () => {
  // The server sends each event once per connection: events a live sub
  // already took are left out of a new sub's replay. The client has them.
  const { rt, WS } = makeRt();
  const a = record(rt, { executionId: 'e1' });
  const ws = WS.last();
  ws.open();
  ws.subscribed('s1');
  ws.events(ev(10), ev(11, { jobId: 'j2' }));
  const b = record(rt, { jobId: 'j1' }, { history: true });
  assert.deepEqual(ws.sent.at(-1), { op: 'subscribe', sub: 's2', filter: { jobId: 'j1' }, after: 0 });
  ws.events(ev(3)); // replay for s2
  ws.events(ev(12)); // live, taken for s1: s2 must wait for its replay
  assert.deepEqual(a.got.ids, [10, 11, 12]);
  assert.deepEqual(b.got.ids, [], 'held until subscribed');
  ws.events(ev(5, { executionId: 'e7' })); // rest of the replay
  ws.subscribed('s2', 2);
  assert.deepEqual(b.got.ids, [3, 5, 10, 12]);
  assert.equal(b.sub.lastId, 12);
  assert.deepEqual(b.got.ready, [{ replayed: 2, transport: 'websocket' }]);
  ws.events(ev(13));
  assert.deepEqual(b.got.ids, [3, 5, 10, 12, 13]);
  assert.deepEqual(a.got.ids, [10, 11, 12, 13]);
});

test('a live sub does not take older events that arrive before its "subscribed"', () => {
  const { rt, WS } = makeRt();
  record(rt, { executionId: 'e1' }, { history: true });
  const ws = WS.last();
  ws.open();
  const live = record(rt, { executionId: 'e1' });
  ws.events(ev(1), ev(2)); // s1's replay, queued before s2 existed
  ws.subscribed('s1', 2);
  ws.subscribed('s2');
  ws.events(ev(3));
  assert.deepEqual(live.got.ids, [3]);
});

test('when the cache no longer reaches back, a new sub makes a fresh connection', async () => {
  const { rt, WS, clock } = makeRt({ cacheSize: 4 });
  const a = record(rt, { executionId: 'e1' });
  WS.last().open();
  WS.last().subscribed('s1');
  for (let i = 1; i <= 10; i++) WS.last().events(ev(i));
  record(rt, { executionId: 'e1' }, { history: true });
  assert.equal(WS.sockets[0].closedWith, 1000);
  assert.equal(rt.status, 'reconnecting');
  await clock.advance(1000);
  WS.last().open();
  assert.deepEqual(WS.last().ops('subscribe').map((m) => m.after), [10, 0]);
  assert.deepEqual(a.got.ids.length, 10);
});

test('gap: onGap and rt "gap" with {after, oldest}', () => {
  const { rt, WS, gaps } = makeRt();
  const a = record(rt, { executionId: 'e1' }, { after: 5 });
  WS.last().open();
  WS.last().recv({ op: 'gap', sub: 's1', after: 5, oldest: 20 });
  assert.deepEqual(a.got.gaps, [{ after: 5, oldest: 20 }]);
  assert.deepEqual(gaps, [['s1', { after: 5, oldest: 20 }]]);
  WS.last().recv({ op: 'gap', sub: 'nope', after: 1, oldest: 2 });
  assert.equal(gaps.length, 1);
});

test('onReady on "subscribed", each time; ready false while reconnecting', async () => {
  const { rt, WS, clock } = makeRt();
  const a = record(rt, { executionId: 'e1' }, { after: 1 });
  WS.last().open();
  assert.equal(a.sub.ready, false);
  WS.last().subscribed('s1', 3);
  assert.equal(a.sub.ready, true);
  WS.last().drop();
  assert.equal(a.sub.ready, false);
  await clock.advance(1000);
  WS.last().open();
  WS.last().subscribed('s1', 0);
  assert.deepEqual(a.got.ready, [{ replayed: 3, transport: 'websocket' }, { replayed: 0, transport: 'websocket' }]);
});

test('unsubscribe: sends unsubscribe, stops delivery to that sub only, not resubscribed later', async () => {
  const { rt, WS, clock } = makeRt();
  const a = record(rt, { executionId: 'e1' });
  const b = record(rt, { executionId: 'e1' });
  const ws = WS.last();
  ws.open();
  ws.subscribed('s1');
  ws.subscribed('s2');
  ws.events(ev(1));
  a.sub.unsubscribe();
  a.sub.unsubscribe(); // twice is fine
  assert.deepEqual(ws.ops('unsubscribe'), [{ op: 'unsubscribe', sub: 's1' }]);
  ws.recv({ op: 'unsubscribed', sub: 's1' });
  ws.events(ev(2));
  assert.deepEqual(a.got.ids, [1]);
  assert.deepEqual(b.got.ids, [1, 2]);
  ws.drop();
  await clock.advance(1000);
  WS.last().open();
  assert.deepEqual(WS.last().ops('subscribe').map((m) => m.sub), ['s2']);
});

test('server errors and bad frames are emitted as "error", never thrown', () => {
  const { rt, WS, errors } = makeRt();
  record(rt, { executionId: 'e1' });
  const ws = WS.last();
  ws.open();
  assert.doesNotThrow(() => {
    ws.recv({ op: 'error', code: 'too_many_subs', message: 'a connection holds at most 64 subscriptions' });
    ws.recv('not json');
    ws.recv('null');
    ws.recv({ op: 'events', events: 'not a list' });
    ws.events({ nonsense: true });
    ws.recv({ op: 'from_the_future' });
  });
  assert.deepEqual(errors.map((e) => e.code), ['too_many_subs', 'bad_frame', 'bad_frame', 'bad_frame']);
  assert.equal(errors[0].message, 'a connection holds at most 64 subscriptions');
  assert.equal(rt.status, 'open');
});

test('a throwing listener does not stop delivery to the others', () => {
  const { rt, WS, errors } = makeRt();
  rt.subscribe({ executionId: 'e1' }, { onEvent() { throw new Error('app bug'); } });
  const b = record(rt, { executionId: 'e1' });
  WS.last().open();
  WS.last().subscribed('s1');
  WS.last().subscribed('s2');
  WS.last().events(ev(1), ev(2));
  assert.deepEqual(b.got.ids, [1, 2]);
  assert.equal(errors.length, 2);
  assert.equal(errors[0].code, 'listener_error');
  assert.equal(errors[0].message, 'app bug');
});

test('on/off: off and the function on() returns both remove a listener', () => {
  const { rt, WS } = makeRt();
  record(rt, { executionId: 'e1' });
  const seen = [];
  const f = (e) => seen.push(['f', e.id]);
  const g = (e) => seen.push(['g', e.id]);
  rt.on('event', f);
  const offG = rt.on('event', g);
  WS.last().open();
  WS.last().subscribed('s1');
  WS.last().events(ev(1));
  rt.off('event', f);
  offG();
  WS.last().events(ev(2));
  assert.deepEqual(seen, [['f', 1], ['g', 1]]);
});

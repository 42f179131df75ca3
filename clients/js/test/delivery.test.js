// What subscriptions get over WebSocket: the subscribe messages, routing of
// each events frame to exactly the subscriptions it names, dedup, resume
// after a drop, the replay of a subscription added to an open connection and
// the catching up of one that fell behind, gap, ready, unsubscribe, server
// errors and subscriptions the server refuses.

import test from 'node:test';
import assert from 'node:assert/strict';
import { makeRt, record, ev } from '../test-support/fakes.js';
import { matches } from '../rtevents.js';

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
  WS.last().events('s1', ev(42, { organizationId: '6f1c0f8e-0000-4000-8000-000000000001' }));
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
  WS.last().events('s1', ev(9), ev(10), ev(11), ev(11));
  WS.last().events('s1', ev(11), ev(12), ev(10));
  assert.deepEqual(a.got.ids, [11, 12]);
  assert.equal(a.sub.lastId, 12);
});

test('routing is by the frame\'s subs only: a frame for s1 is not delivered to s2, even when s2\'s filter matches', () => {
  const { rt, WS, events } = makeRt();
  const a = record(rt, { executionId: 'e1' });
  const b = record(rt, { executionId: 'e1' });
  const c = record(rt, { jobId: 'j9' });
  const ws = WS.last();
  ws.open();
  ['s1', 's2', 's3'].forEach((s) => ws.subscribed(s));
  ws.events('s1', ev(1));
  ws.events('s2', ev(2));
  // the server's word, not the filter: an event it sends for s3 is s3's
  ws.events('s3', ev(3, { jobId: 'j8' }));
  ws.events(['nope', 'gone'], ev(4)); // names not known here: nobody
  ws.events([], ev(5));
  assert.deepEqual(a.got.ids, [1]);
  assert.deepEqual(b.got.ids, [2]);
  assert.deepEqual(c.got.ids, [3]);
  assert.deepEqual(events, [['s1', 1], ['s2', 2], ['s3', 3]]);
  assert.equal(rt.maxSeenId, 5, 'seen, though for nobody');
});

test('a frame naming several subs delivers each event to each of them, once', () => {
  const { rt, WS, events } = makeRt();
  const a = record(rt, { executionId: 'e1' });
  const b = record(rt, { jobId: 'j1', type: ['job_progress', 'job_failed'] });
  const c = record(rt, { jobId: 'j1' });
  const ws = WS.last();
  ws.open();
  ['s1', 's2', 's3'].forEach((s) => ws.subscribed(s));
  ws.events(['s1', 's2'], ev(43), ev(44));
  ws.events(['s2', 's1', 's2'], ev(44), ev(45)); // 44 again, s2 named twice: once each
  assert.deepEqual(a.got.ids, [43, 44, 45]);
  assert.deepEqual(b.got.ids, [43, 44, 45]);
  assert.deepEqual(c.got.ids, [], 'not named');
  assert.deepEqual(events, [['s1', 43], ['s2', 43], ['s1', 44], ['s2', 44], ['s2', 45], ['s1', 45]]);
  assert.equal(b.sub.lastId, 45);
});

test('matches(): the server\'s filter rule, for applications', () => {
  const e = { id: 1, type: 'job_progress', executionId: 'e1', jobId: 'j1', organizationId: '6f1c0f8e-0000-4000-8000-00000000000a' };
  assert.equal(matches({}, e), true);
  assert.equal(matches({ executionId: 'e1', type: ['job_failed', 'job_progress'] }, e), true);
  assert.equal(matches({ executionId: 'e1', type: ['job_failed'] }, e), false);
  assert.equal(matches({ batchId: 'b1' }, e), false, 'a key the event lacks');
  assert.equal(matches({ jobId: 'j2' }, e), false);
  assert.equal(matches({ organizationId: '6F1C0F8E-0000-4000-8000-00000000000A' }, e), true, 'organizationId compares case-insensitively');
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
  ws.events('s1', ev(20));
  ws.events('s2', ev(21, { executionId: 'e2', jobId: 'j2' }));
  ws.events('s1', ev(22));
  ws.drop();
  await clock.advance(1000);
  ws = WS.last();
  assert.equal(WS.sockets.length, 2);
  ws.open();
  const after = Object.fromEntries(ws.ops('subscribe').map((m) => [m.sub, m.after]));
  // a: its lastId; b: its lastId; c: history not yet delivered: 0;
  // d: live, nothing yet: the highest id the connection got while d was
  // live, since the server queued d's own events up to there before it
  assert.deepEqual(after, { s1: 22, s2: 21, s3: 0, s4: 22 });
  ws.events('s2', ev(21, { executionId: 'e2', jobId: 'j2' }));
  ws.events('s1', ev(22), ev(23));
  ['s1', 's2', 's3', 's4'].forEach((s) => ws.subscribed(s));
  assert.deepEqual(a.got.ids, [20, 22, 23]);
  assert.deepEqual(b.got.ids, [21]);
  assert.deepEqual(c.got.ids, []);
  assert.deepEqual(d.got.ids, []);
});

test('"subscribed" with after: a sub that had nothing yet resumes from there, not live', async () => {
  const { rt, WS, clock } = makeRt();
  rt.subscribe({ executionId: 'e1' });
  WS.last().open();
  WS.last().recv({ op: 'subscribed', sub: 's1', replayed: 0, after: 41 });
  WS.last().drop();
  await clock.advance(30000);
  WS.last().open();
  assert.deepEqual(WS.last().ops('subscribe').at(-1), { op: 'subscribe', sub: 's1', filter: { executionId: 'e1' }, after: 41 });
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

test('a sub added to an open connection: its replay, in frames naming it, comes as it arrives, before "subscribed"', () => {
  const { rt, WS } = makeRt();
  const a = record(rt, { executionId: 'e1' });
  const ws = WS.last();
  ws.open();
  ws.subscribed('s1');
  ws.events('s1', ev(10), ev(11, { jobId: 'j2' }));
  const b = record(rt, { jobId: 'j1' }, { history: true });
  assert.deepEqual(ws.sent.at(-1), { op: 'subscribe', sub: 's2', filter: { jobId: 'j1' }, after: 0 });
  // s2's replay brings its own copy of 10, which the connection had for s1
  ws.events('s2', ev(3));
  assert.deepEqual(b.got.ids, [3], 'no holding back: the frames naming s2 are its events, in order');
  ws.events('s1', ev(12)); // live for s1 while s2 catches up: not s2's (yet)
  assert.deepEqual(b.got.ids, [3]);
  ws.events('s2', ev(5, { executionId: 'e7' }), ev(10), ev(12));
  ws.subscribed('s2', 4);
  assert.deepEqual(b.got.ids, [3, 5, 10, 12]);
  assert.equal(b.sub.lastId, 12);
  assert.deepEqual(b.got.ready, [{ replayed: 4, transport: 'websocket' }]);
  ws.events(['s1', 's2'], ev(13));
  assert.deepEqual(b.got.ids, [3, 5, 10, 12, 13]);
  assert.deepEqual(a.got.ids, [10, 11, 12, 13]);
});

test('a sub that fell behind gets its own copies after its earlier ones, even of events the connection had for another', () => {
  // s2 falls behind (server over budget) on 2, an event for s2 alone; 3,
  // for both, goes out for s1 alone; then s2's copies of 2 and 3.
  const { rt, WS } = makeRt();
  const a = record(rt, { executionId: 'e1', jobId: 'j1' });
  const b = record(rt, { executionId: 'e1' });
  const ws = WS.last();
  ws.open();
  ws.subscribed('s1');
  ws.subscribed('s2');
  ws.events(['s1', 's2'], ev(1));
  ws.events('s1', ev(3));
  assert.deepEqual(b.got.ids, [1], '3 is not s2\'s before 2');
  ws.events('s2', ev(2, { jobId: 'j2' }), ev(3));
  ws.events(['s1', 's2'], ev(4));
  assert.deepEqual(b.got.ids, [1, 2, 3, 4]);
  assert.deepEqual(a.got.ids, [1, 3, 4]);
});

test('a live sub does not take older events that arrive before its "subscribed"', () => {
  const { rt, WS } = makeRt();
  record(rt, { executionId: 'e1' }, { history: true });
  const ws = WS.last();
  ws.open();
  const live = record(rt, { executionId: 'e1' });
  ws.events('s1', ev(1), ev(2)); // s1's replay, queued before s2 existed
  ws.subscribed('s1', 2);
  ws.subscribed('s2');
  ws.events(['s1', 's2'], ev(3));
  assert.deepEqual(live.got.ids, [3]);
});

test('a sub added to an open connection asks the server from its cursor, on that connection, whatever it has received', () => {
  const { rt, WS } = makeRt();
  const a = record(rt, { executionId: 'e1' });
  const ws = WS.last();
  ws.open();
  ws.subscribed('s1');
  ws.events('s1', ...Array.from({ length: 6000 }, (_, i) => ev(i + 1)));
  const b = record(rt, { executionId: 'e1' }, { history: true });
  assert.equal(WS.sockets.length, 1);
  assert.equal(ws.closedWith, null, 'the connection stays');
  assert.equal(rt.status, 'open');
  assert.deepEqual(ws.ops('subscribe').at(-1), { op: 'subscribe', sub: 's2', filter: { executionId: 'e1' }, after: 0 });
  assert.deepEqual(b.got.ids, [], 'nothing from what the connection had for s1');
  ws.events('s2', ev(1), ev(2));
  assert.deepEqual(b.got.ids, [1, 2]);
  assert.equal(a.got.ids.length, 6000);
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
  ws.events(['s1', 's2'], ev(1));
  a.sub.unsubscribe();
  a.sub.unsubscribe(); // twice is fine
  assert.deepEqual(ws.ops('unsubscribe'), [{ op: 'unsubscribe', sub: 's1' }]);
  ws.events(['s1', 's2'], ev(2)); // sent before the server had the unsubscribe
  ws.events('s1', ev(3));
  ws.recv({ op: 'unsubscribed', sub: 's1' });
  ws.events('s2', ev(4));
  assert.deepEqual(a.got.ids, [1]);
  assert.deepEqual(b.got.ids, [1, 2, 4]);
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
    ws.recv({ op: 'error', code: 'bad_json', message: 'the message is not valid JSON' });
    ws.recv('not json');
    ws.recv('null');
    ws.recv({ op: 'events', subs: ['s1'], events: 'not a list' });
    ws.recv({ op: 'events', events: [ev(1)] });
    ws.recv({ op: 'events', subs: 's1', events: [ev(1)] });
    ws.events('s1', { nonsense: true });
    ws.recv({ op: 'from_the_future' });
  });
  assert.deepEqual(errors.map((e) => [e.code, e.sub]), [['bad_json', undefined], ...Array(5).fill(['bad_frame', undefined])]);
  assert.equal(errors[0].message, 'the message is not valid JSON');
  assert.equal(errors[0].transport, 'websocket');
  assert.match(errors[3].message, /subs/);
  assert.equal(rt.status, 'open');
});

test('an error naming a sub fails it: its onError and "error" with the sub; not asked for again', async () => {
  const { rt, WS, clock, errors } = makeRt();
  const about = [];
  rt.on('error', (e, sub) => about.push(sub?.name));
  const a = record(rt, { executionId: 'e1' });
  const mine = [];
  const b = rt.subscribe({ organizationId: 'not-a-uuid' }, { onError: (e, sub) => mine.push([e.code, sub.name]) });
  const c = record(rt, { jobId: 'j1' }, { after: 4 });
  let ws = WS.last();
  ws.open();
  ws.subscribed('s1');
  ws.recv({ op: 'error', sub: 's2', code: 'bad_filter', message: 'organizationId is not a UUID' });
  ws.recv({ op: 'error', sub: 's3', code: 'too_many_subs', message: 'a connection holds at most 64 subscriptions' });
  assert.deepEqual(mine, [['bad_filter', 's2']], "only s2's onError");
  assert.deepEqual(errors.map((e) => [e.code, e.sub, e.transport]), [['bad_filter', 's2', 'websocket'], ['too_many_subs', 's3', 'websocket']]);
  assert.deepEqual(about, ['s2', 's3'], 'the Subscription, as the listener\'s second argument');
  assert.equal(b.error.code, 'bad_filter');
  assert.equal(c.sub.error.code, 'too_many_subs');
  assert.equal(a.sub.error, null);
  assert.equal(b.ready, false);
  assert.equal(b.closed, false, 'it stays, failed');
  ws.subscribed('s3'); // whatever comes late, it stays failed
  assert.equal(c.sub.ready, false);
  assert.deepEqual(c.got.ready, []);
  ws.events('s1', ev(5));
  assert.deepEqual(a.got.ids, [5], 'the others go on');
  assert.equal(rt.status, 'open');
  // an error naming a sub not held here: "error" only
  ws.recv({ op: 'error', sub: 's9', code: 'unknown_sub', message: 'no subscription of that name is open' });
  assert.deepEqual([errors.at(-1).sub, about.at(-1)], ['s9', undefined]);
  // not resubscribed on the next connection, nor unsubscribed
  assert.deepEqual(ws.ops('unsubscribe'), [], 'the server does not have them');
  ws.drop();
  await clock.advance(1000);
  ws = WS.last();
  ws.open();
  assert.deepEqual(ws.ops('subscribe').map((m) => m.sub), ['s1']);
  b.unsubscribe();
  assert.equal(b.closed, true);
  assert.deepEqual(ws.ops('unsubscribe'), [], 'the server does not have it');
  rt.subscribe({ organizationId: '6f1c0f8e-0000-4000-8000-000000000001' });
  assert.deepEqual(ws.ops('subscribe').map((m) => m.sub), ['s1', 's4'], 'a new subscription is asked for');
});

test('a throwing listener does not stop delivery to the others', () => {
  const { rt, WS, errors } = makeRt();
  rt.subscribe({ executionId: 'e1' }, { onEvent() { throw new Error('app bug'); } });
  const b = record(rt, { executionId: 'e1' });
  WS.last().open();
  WS.last().subscribed('s1');
  WS.last().subscribed('s2');
  WS.last().events(['s1', 's2'], ev(1), ev(2));
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
  WS.last().events('s1', ev(1));
  rt.off('event', f);
  offG();
  WS.last().events('s1', ev(2));
  assert.deepEqual(seen, [['f', 1], ['g', 1]]);
});

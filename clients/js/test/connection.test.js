// The connection state machine: status events, backoff with full jitter,
// 'offline', manual and network-driven retries, heartbeats, timeouts, close.

import test from 'node:test';
import assert from 'node:assert/strict';
import { makeRt, record } from '../test-support/fakes.js';

const brief = (s) => [s.status, s.transport, s.attempt];

test('connects to /ws of the base url and goes connecting -> open', () => {
  const { rt, WS, statuses } = makeRt();
  assert.equal(rt.status, 'connecting');
  assert.equal(rt.transport, 'websocket');
  assert.equal(WS.sockets.length, 1);
  assert.equal(WS.last().url, 'ws://rt.test:8787/ws');
  WS.last().open();
  assert.deepEqual(statuses.map(brief), [['open', 'websocket', 0]]);
  assert.equal(rt.status, 'open');
});

test('https base url gives wss, a path prefix is kept', () => {
  const { WS } = makeRt({ url: 'https://example.com/rt/' });
  assert.equal(WS.last().url, 'wss://example.com/rt/ws');
});

test('a drop goes reconnecting, retries after a jittered delay, opens again', async () => {
  const { rt, WS, clock, statuses } = makeRt();
  WS.last().open();
  WS.last().drop(1001, 'going away');
  assert.equal(rt.status, 'reconnecting');
  const s = statuses.at(-1);
  assert.deepEqual(brief(s), ['reconnecting', 'websocket', 0]);
  assert.match(s.error, /1001/);
  // after a drop: random(0, minDelay * 2^0); random() is 0.5
  assert.deepEqual(clock.pending(), [500]);
  await clock.advance(499);
  assert.equal(WS.sockets.length, 1);
  await clock.advance(1);
  assert.equal(WS.sockets.length, 2);
  WS.last().open();
  assert.deepEqual(statuses.map(brief).map((b) => b[0]), ['open', 'reconnecting', 'open']);
});

test('backoff: exponential, full jitter, capped at maxDelay; offline after offlineAfter, slow retries go on', async () => {
  let r = 1; // upper end of the jitter: delay == the bound
  const { rt, WS, clock, statuses } = makeRt({ transports: ['websocket'], random: () => r });
  const delays = [];
  for (let n = 1; n <= 11; n++) {
    WS.last().fail();
    assert.equal(clock.pending().length, 1, 'one retry timer');
    delays.push(clock.pending()[0]);
    assert.equal(rt.status, n >= 8 ? 'offline' : 'reconnecting', `after ${n} failures`);
    assert.equal(statuses.at(-1).attempt, n);
    await clock.advance(clock.pending()[0]);
    assert.equal(WS.sockets.length, n + 1, 'it keeps retrying');
  }
  // 1000 * 2^n for n = 1..7, capped at 30000; then slow retries at maxDelay
  assert.deepEqual(delays, [2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000, 30000, 30000, 30000]);

  // full jitter: the lower end is 0, whatever the attempt
  r = 0;
  WS.last().open();
  WS.last().fail(); // a drop after open: attempt 0
  assert.deepEqual(clock.pending(), [0]);
  assert.equal(rt.status, 'reconnecting');
  await clock.advance(0);
  WS.last().fail();
  assert.deepEqual(clock.pending(), [0]);

  // once offline, retries stay between maxDelay/2 and maxDelay
  for (let n = 0; n < 10; n++) { await clock.advance(clock.pending()[0]); WS.last().fail(); }
  assert.equal(rt.status, 'offline');
  assert.deepEqual(clock.pending(), [15000]);
});

test('minDelay, maxDelay and offlineAfter are options', async () => {
  const { rt, WS, clock } = makeRt({ transports: ['websocket'], random: () => 1, minDelay: 100, maxDelay: 500, offlineAfter: 3 });
  const delays = [];
  for (let n = 1; n <= 4; n++) {
    WS.last().fail();
    delays.push(clock.pending()[0]);
    if (n < 3) assert.equal(rt.status, 'reconnecting');
    await clock.advance(clock.pending()[0]);
  }
  assert.equal(rt.status, 'offline');
  assert.deepEqual(delays, [200, 400, 500, 500]);
});

test('the open resets the attempt count', async () => {
  const { WS, clock, statuses } = makeRt({ random: () => 1 });
  WS.last().open();
  WS.last().drop();
  await clock.advance(1000);
  WS.last().fail();
  assert.deepEqual(clock.pending(), [2000]);
  await clock.advance(2000);
  WS.last().open();
  assert.equal(statuses.at(-1).attempt, 0);
  WS.last().drop();
  assert.deepEqual(clock.pending(), [1000]);
});

test('reconnect() retries at once, from any state', async () => {
  const { rt, WS, clock } = makeRt({ transports: ['websocket'] });
  for (let i = 0; i < 8; i++) { WS.last().fail(); await clock.advance(clock.pending()[0]); }
  WS.last().fail();
  assert.equal(rt.status, 'offline');
  const n = WS.sockets.length;
  rt.reconnect();
  assert.equal(WS.sockets.length, n + 1, 'a new attempt, no wait');
  assert.equal(rt.status, 'reconnecting');
  assert.equal(clock.pending().length, 1, 'only the connect timeout, the slow retry is gone');
  WS.last().open();
  assert.equal(rt.status, 'open');
  // while open: drops the connection and makes a new one
  const old = WS.last();
  rt.reconnect();
  assert.equal(old.closedWith, 1000);
  assert.equal(WS.sockets.length, n + 2);
  assert.equal(rt.status, 'reconnecting');
});

test("the window's 'online' event retries at once; 'offline' shows offline", async () => {
  const { rt, WS, clock, win } = makeRt({ transports: ['websocket'] });
  WS.last().fail();
  assert.equal(rt.status, 'reconnecting');
  win.dispatch('offline');
  assert.equal(rt.status, 'offline');
  const n = WS.sockets.length;
  win.dispatch('online');
  assert.equal(WS.sockets.length, n + 1);
  WS.last().open();
  // while open, 'online' (a new network, maybe a dead socket) sends a ping
  win.dispatch('online');
  assert.deepEqual(WS.last().ops('ping'), [{ op: 'ping' }]);
  assert.equal(WS.sockets.length, n + 1);
  // and 'offline' while open changes nothing by itself
  win.dispatch('offline');
  assert.equal(rt.status, 'open');
  assert.ok(clock);
});

test('navigator.onLine false: no attempt, offline, until online', async () => {
  const nav = { onLine: false };
  const { rt, WS, clock, win } = makeRt({ navigator: nav });
  assert.equal(WS.sockets.length, 0);
  assert.equal(rt.status, 'offline');
  await clock.advance(30000); // the slow check finds it still offline
  assert.equal(WS.sockets.length, 0);
  nav.onLine = true;
  win.dispatch('online');
  assert.equal(WS.sockets.length, 1);
  WS.last().open();
  assert.equal(rt.status, 'open');
});

test('heartbeat: ping every pingInterval, two silent intervals = dead, reconnect', async () => {
  const { rt, WS, clock, statuses } = makeRt();
  const ws = WS.last();
  ws.open();
  await clock.advance(25000);
  assert.equal(ws.ops('ping').length, 1);
  ws.recv({ op: 'pong' });
  await clock.advance(25000);
  assert.equal(ws.ops('ping').length, 2);
  await clock.advance(25000); // silent: missed 1
  assert.equal(ws.ops('ping').length, 3);
  assert.equal(ws.closedWith, null);
  assert.equal(rt.status, 'open');
  await clock.advance(25000); // silent again: dead
  assert.equal(ws.closedWith, 1000);
  assert.equal(rt.status, 'reconnecting');
  assert.equal(statuses.at(-1).error, 'heartbeat timeout');
  await clock.advance(1000);
  assert.equal(WS.sockets.length, 2);
});

test('any frame counts as traffic for the heartbeat', async () => {
  const { rt, WS, clock, ...f } = makeRt();
  record(rt, { executionId: 'e1' });
  const ws = WS.last();
  ws.open();
  for (let i = 1; i <= 6; i++) {
    await clock.advance(25000);
    ws.events('s1', { id: i, type: 't', ts: '2026-01-01T00:00:00Z', executionId: 'e1', data: {} });
  }
  assert.equal(ws.closedWith, null);
  assert.equal(rt.status, 'open');
  assert.ok(f);
});

test('a connection that never opens times out after connectTimeout', async () => {
  const { rt, WS, clock, statuses } = makeRt({ connectTimeout: 5000 });
  await clock.advance(4999);
  assert.equal(rt.status, 'connecting');
  await clock.advance(1);
  assert.equal(WS.sockets[0].closedWith, 1000);
  assert.equal(rt.status, 'reconnecting');
  assert.equal(statuses.at(-1).error, 'connect timeout');
});

test('a WebSocket constructor that throws is a failed attempt, not an exception', () => {
  const { rt } = makeRt({ WebSocket: class { constructor() { throw new Error('CSP says no'); } }, transports: ['websocket'] });
  assert.equal(rt.status, 'reconnecting');
  assert.equal(rt.state.error, 'CSP says no');
  assert.equal(rt.state.attempt, 1);
});

test('close(): status closed, socket closed, no more retries, listeners removed', async () => {
  const { rt, WS, clock, win, statuses } = makeRt();
  const { sub } = record(rt, { executionId: 'e1' });
  WS.last().open();
  rt.close();
  assert.equal(rt.status, 'closed');
  assert.equal(statuses.at(-1).status, 'closed');
  assert.equal(WS.last().closedWith, 1000);
  assert.equal(sub.closed, true);
  assert.equal(clock.pending().length, 0);
  assert.equal(win.count('online'), 0);
  await clock.advance(120000);
  assert.equal(WS.sockets.length, 1);
  assert.throws(() => rt.subscribe({ executionId: 'e1' }), /closed/);
  rt.reconnect(); // a no-op once closed
  assert.equal(WS.sockets.length, 1);
});

test('a status event for every change, none without one', async () => {
  const { rt, WS, clock, statuses } = makeRt({ random: () => 0 });
  WS.last().open();
  WS.last().open(); // a second open event changes nothing
  WS.last().fail();
  await clock.advance(0);
  WS.last().fail();
  assert.deepEqual(statuses.map(brief), [
    ['open', 'websocket', 0],
    ['reconnecting', 'websocket', 0],
    ['reconnecting', 'websocket', 1],
  ]);
  assert.ok(rt);
});

test('bad options and filters throw at the caller', () => {
  const { rt } = makeRt();
  assert.throws(() => rt.subscribe({ executionId: 42 }), TypeError);
  assert.throws(() => rt.subscribe({ jobId: '' }), TypeError);
  assert.throws(() => rt.subscribe({ type: [''] }), TypeError);
});

test('token: in the WebSocket and SSE URLs, as a Bearer header when polling; a function is asked at each connect', async () => {
  let n = 0;
  const { rt, WS, clock } = makeRt({ token: () => `tok${++n}` });
  rt.subscribe({ executionId: 'e1' });
  assert.equal(new URL(WS.last().url).searchParams.get('token'), 'tok1');
  WS.last().open();
  WS.last().drop();
  await clock.advance(30000);
  assert.ok(n >= 2, 'asked again');
  assert.equal(new URL(WS.last().url).searchParams.get('token'), `tok${n}`, 'a fresh token for the reconnect');

  const sse = makeRt({ token: 'abc', transports: ['sse'] });
  sse.rt.subscribe({ executionId: 'e1' });
  assert.equal(sse.ES.last().params.get('token'), 'abc');

  const poll = makeRt({ token: 'abc', transports: ['poll'] });
  poll.rt.subscribe({ executionId: 'e1' }, { after: 0 });
  await poll.clock.advance(10);
  assert.ok(poll.fetch.calls.length > 0, 'polled');
  assert.equal(poll.fetch.inits[0].headers.authorization, 'Bearer abc');
  assert.equal(poll.fetch.calls[0].searchParams.get('token'), null, 'not in the polled URL');

  const none = makeRt();
  none.rt.subscribe({ executionId: 'e1' });
  assert.equal(new URL(none.WS.last().url).search, '', 'no token: no parameter');
});

// test-support/fakes.js: the fakes the client tests drive rtevents.js with:
// a manual clock (setTimeout/clearTimeout), WebSocket, EventSource, fetch,
// window and navigator. Kept outside test/ because `node --test test/` runs
// every .js file under test/ as a test file.

import { RtEvents } from '../rtevents.js';

/** Lets promise callbacks (fetch, res.json) run. */
export const settle = async () => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
};

/** A clock that moves only when the test says so. */
export class Clock {
  constructor() {
    this.now = 0;
    this.timers = new Map();
    this.n = 0;
    this.setTimeout = (fn, ms = 0) => {
      const id = ++this.n;
      this.timers.set(id, { fn, at: this.now + ms, ms });
      return id;
    };
    this.clearTimeout = (id) => { this.timers.delete(id); };
  }
  /** Delays (as asked) of the timers still pending, in order of creation. */
  pending() { return [...this.timers.values()].map((t) => t.ms); }
  /** Runs every timer due within ms, in time order, settling promises between. */
  async advance(ms) {
    const end = this.now + ms;
    for (;;) {
      await settle();
      let best = null;
      for (const [id, t] of this.timers) if (t.at <= end && (!best || t.at < best[1].at)) best = [id, t];
      if (!best) break;
      this.timers.delete(best[0]);
      this.now = best[1].at;
      best[1].fn();
    }
    this.now = end;
    await settle();
  }
}

export function fakeWebSocket() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.sent = [];
      this.readyState = 0;
      this.closedWith = null;
      sockets.push(this);
    }
    send(s) {
      if (this.readyState !== 1) throw new Error('InvalidStateError');
      this.sent.push(JSON.parse(s));
    }
    close(code) { this.closedWith = code ?? 1005; this.readyState = 3; }
    // driven by the test:
    open(welcome = true) {
      this.readyState = 1;
      this.onopen?.({});
      if (welcome) this.recv({ op: 'welcome', connection: '1', heartbeat: 30 });
    }
    recv(m) { this.onmessage?.({ data: typeof m === 'string' ? m : JSON.stringify(m) }); }
    /** An events frame for subs (a name or a list of names), as the server sends it. */
    events(subs, ...evs) { this.recv({ op: 'events', subs: [].concat(subs), events: evs }); }
    subscribed(sub, replayed = 0) { this.recv({ op: 'subscribed', sub, replayed }); }
    fail() { this.readyState = 3; this.onerror?.({}); this.onclose?.({ code: 1006 }); }
    drop(code = 1006, reason = '') { this.readyState = 3; this.onclose?.({ code, reason }); }
    ops(op) { return this.sent.filter((m) => m.op === op); }
  }
  FakeWebSocket.sockets = sockets;
  FakeWebSocket.last = () => sockets[sockets.length - 1];
  return FakeWebSocket;
}

export function fakeEventSource() {
  const all = [];
  class FakeEventSource {
    constructor(url) {
      this.url = url;
      this.params = new URL(url).searchParams;
      this.listeners = {};
      this.closed = false;
      all.push(this);
    }
    addEventListener(type, fn) { (this.listeners[type] ||= []).push(fn); }
    close() { this.closed = true; }
    open() { this.onopen?.({}); }
    send(ev) { this.onmessage?.({ data: JSON.stringify(ev), lastEventId: String(ev.id) }); }
    gap(info) { for (const fn of this.listeners.gap || []) fn({ data: JSON.stringify(info) }); }
    fail() { this.onerror?.({}); }
  }
  FakeEventSource.all = all;
  FakeEventSource.last = () => all[all.length - 1];
  return FakeEventSource;
}

/**
 * fetch answering with handler(url: URL, n) -> {status?, body} | Error.
 * Calls are recorded as URLs.
 */
export function fakeFetch(handler) {
  const calls = [];
  const inits = [];
  const f = async (url, init) => {
    const u = new URL(url);
    calls.push(u);
    inits.push(init);
    const r = await handler(u, calls.length);
    if (r instanceof Error) throw r;
    const status = r.status ?? 200;
    return { ok: status >= 200 && status < 300, status, json: async () => r.body };
  };
  f.calls = calls;
  f.inits = inits;
  return f;
}

export function fakeWindow() {
  const l = {};
  return {
    addEventListener(t, fn) { (l[t] ||= new Set()).add(fn); },
    removeEventListener(t, fn) { l[t]?.delete(fn); },
    dispatch(t) { for (const fn of l[t] || []) fn({ type: t }); },
    count(t) { return l[t]?.size ?? 0; },
  };
}

/** An event as the server sends it. */
export function ev(id, extra = {}) {
  return {
    id, type: 'job_progress', ts: '2026-11-22T10:00:00.123456+00:00',
    executionId: 'e1', jobId: 'j1', data: { pct: id }, ...extra,
  };
}

/**
 * An RtEvents wired to fakes; returns the fakes and what it emitted.
 * Pass WebSocket/EventSource/fetch: null to take a transport away.
 */
export function makeRt(options = {}) {
  const clock = new Clock();
  const WS = fakeWebSocket();
  const ES = fakeEventSource();
  const fetch = fakeFetch(() => ({ body: { events: [], next: null } }));
  const win = fakeWindow();
  const nav = { onLine: true };
  const rt = new RtEvents({
    url: 'http://rt.test:8787/',
    WebSocket: WS, EventSource: ES, fetch,
    setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout,
    random: () => 0.5, window: win, navigator: nav,
    ...options,
  });
  const statuses = [], errors = [], events = [], gaps = [];
  rt.on('status', (s) => statuses.push(s));
  rt.on('error', (e) => errors.push(e));
  rt.on('event', (e, sub) => events.push([sub.name, e.id]));
  rt.on('gap', (g, sub) => gaps.push([sub.name, g]));
  return { rt, clock, WS, ES, fetch: options.fetch ?? fetch, win, nav, statuses, errors, events, gaps };
}

/** Subscribes and records what the subscription gets. */
export function record(rt, filter, options = {}) {
  const got = { ids: [], events: [], gaps: [], ready: [] };
  const sub = rt.subscribe(filter, {
    ...options,
    onEvent(e) { got.ids.push(e.id); got.events.push(e); },
    onGap(g) { got.gaps.push(g); },
    onReady(info) { got.ready.push(info); },
  });
  return { sub, got };
}

// rtevents.js: the browser (and Node) client of the rtevents worker.
//
// This file owns the client side of PROTOCOL.md: one WebSocket per RtEvents
// carrying any number of subscriptions; Server-Sent Events, then polling the
// history API, when WebSocket cannot connect; reconnects with backoff; resume
// by event id and per-subscription dedup, so that a subscription sees every
// matching event once, in ascending id, whatever the transport does.
// Over WebSocket each events frame names the subscriptions it is for.
// No dependencies, no build step. Also sets globalThis.RtEvents.

const KEYS = ['executionId', 'batchId', 'jobId', 'organizationId'];
const ORDER = ['websocket', 'sse', 'poll'];
const DEFAULTS = {
  minDelay: 1000, maxDelay: 30000, offlineAfter: 8, pollInterval: 2000,
  pingInterval: 25000, connectTimeout: 10000, upgradeInterval: 60000,
  fallbackAfter: 2,
};

// The filter as the server takes it: known keys only, type always a list.
// Bad types throw here, at the caller, rather than as a server error that
// cannot name the subscription it is about.
function normFilter(f = {}) {
  const out = {};
  for (const k of KEYS) {
    const v = f[k];
    if (v == null) continue;
    if (typeof v !== 'string' || !v) throw new TypeError(`rtevents: filter.${k} must be a non-empty string`);
    out[k] = v;
  }
  if (f.type != null) {
    const t = [].concat(f.type);
    if (!t.every((x) => typeof x === 'string' && x)) throw new TypeError('rtevents: filter.type must be a string or an array of strings');
    out.type = t;
  }
  return out;
}

// The server's own rule (README "Subscriptions"), for applications: the
// client routes by the server's word, never by this. organizationId is a
// UUID, which the server prints in lower case whatever case the filter used.
export function matches(f, ev) {
  for (const k of KEYS) {
    const want = f[k];
    if (want === undefined) continue;
    const got = ev[k];
    if (got == null || (k === 'organizationId' ? got.toLowerCase() !== want.toLowerCase() : got !== want)) return false;
  }
  return !f.type || f.type.includes(ev.type);
}

function query(f, extra) {
  const q = new URLSearchParams();
  for (const k of KEYS) if (f[k] !== undefined) q.set(k, f[k]);
  if (f.type) q.set('type', f.type.join(','));
  for (const k in extra) if (extra[k] != null) q.set(k, extra[k]);
  return q.toString();
}

function toEvent(raw) {
  if (!raw || typeof raw.id !== 'number') throw new Error('not an event');
  return { ...raw, ts: new Date(raw.ts) };
}

class Emitter {
  constructor() { this._l = new Map(); }
  /** Adds a listener; returns a function that removes it. */
  on(type, fn) {
    if (!this._l.has(type)) this._l.set(type, new Set());
    this._l.get(type).add(fn);
    return () => this.off(type, fn);
  }
  off(type, fn) { this._l.get(type)?.delete(fn); }
  _emit(type, ...args) {
    for (const fn of [...(this._l.get(type) || [])]) this._call(fn, args, type);
  }
  // A throwing listener must not break the state machine that called it.
  _call(fn, args, type) {
    if (!fn) return;
    try { fn(...args); } catch (e) {
      if (type !== 'error' && this._l.get('error')?.size) this._emit('error', { code: 'listener_error', message: String(e?.message ?? e), error: e });
      else console.error(e);
    }
  }
}

class Subscription {
  constructor(rt, name, filter, o) {
    this._rt = rt;
    this._o = o;
    this.name = name;
    this.filter = filter;
    /** Last id delivered (or the resume cursor given); null: live, nothing yet. */
    this.lastId = o.after != null ? Number(o.after) : o.history ? 0 : null;
    this.ready = false;
    this.closed = false;
    /** The server refused it (an error naming it): it is not asked for again. */
    this.error = null;
    // For a live subscription that has received nothing yet: an id known to
    // be at or before its start, to resume from (_ready, WsT.stop).
    this._floor = null;
  }
  get _cursor() {
    const a = this.lastId, b = this._floor;
    return a == null ? b : b == null ? a : Math.max(a, b);
  }
  unsubscribe() { this._rt._unsubscribe(this); }
}

/* ---- transports: each object is one connection attempt, never reused ---- */

class WsT {
  constructor(rt) {
    this.rt = rt;
    this.name = 'websocket';
    this.live = new Set(); // names of the subs "subscribed" on this connection
    this.max = 0;          // highest id received on this connection
  }
  start() {
    const rt = this.rt, t = rt._token(), ws = this.ws = new rt._WS(rt.url.replace(/^http/, 'ws') + '/ws' +
      (t ? '?token=' + encodeURIComponent(t) : ''));
    ws.onopen = () => {
      this.up = this.alive = true;
      rt._opened(this);
      if (this.dead) return;
      for (const s of rt._subs.values()) this.add(s);
      this._beat();
    };
    ws.onmessage = (e) => this._msg(e.data);
    ws.onclose = (e) => rt._down(this, 'closed' + (e?.code ? ' ' + e.code : '') + (e?.reason ? ' ' + e.reason : ''));
    ws.onerror = () => rt._down(this, 'websocket error');
  }
  stop() {
    this.dead = true;
    this.rt._ct(this.hb);
    // A live sub that has had no event yet resumes from the highest id this
    // connection got while it was live: the server queues a live sub's
    // events in id order with all the connection gets (README, Limits).
    for (const name of this.live) {
      const s = this.rt._subs.get(name);
      if (s && s.lastId == null && this.max) s._floor = Math.max(s._floor ?? 0, this.max);
    }
    const ws = this.ws;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try { ws.close(1000); } catch {}
  }
  send(m) {
    try { this.ws.send(JSON.stringify(m)); } catch {} // closing: onclose reconnects
  }
  poke() { this.send({ op: 'ping' }); }
  add(s) {
    if (!this.up || s.error) return; // subscribed at open; a refused sub stays out
    const c = s._cursor;
    this.send({ op: 'subscribe', sub: s.name, filter: s.filter, ...(c != null && { after: c }) });
  }
  remove(s) {
    this.live.delete(s.name);
    if (this.up && !s.error) this.send({ op: 'unsubscribe', sub: s.name });
  }
  // Heartbeat: a ping every pingInterval; two intervals without any frame
  // from the server (a pong included) and the connection is dead.
  _beat() {
    this.hb = this.rt._st(() => {
      this.missed = this.alive ? 0 : (this.missed || 0) + 1;
      this.alive = false;
      if (this.missed >= 2) return this.rt._down(this, 'heartbeat timeout');
      this.poke();
      this._beat();
    }, this.rt.o.pingInterval);
  }
  _msg(data) {
    const rt = this.rt;
    this.alive = true;
    let m;
    try { m = JSON.parse(data); } catch {}
    if (!m || typeof m !== 'object') return rt._error({ code: 'bad_frame', message: 'not a JSON object' });
    const s = rt._subs.get(m.sub);
    if (m.op === 'events') {
      // The frame names the subs its events are for: per sub, exactly its
      // events, ascending (a sub catching up gets its own copies). Names
      // not known here (unsubscribed meanwhile) are skipped.
      if (!Array.isArray(m.subs)) return rt._error({ code: 'bad_frame', message: 'events frame without subs' });
      const to = m.subs.map((n) => rt._subs.get(n)).filter(Boolean);
      for (const raw of Array.isArray(m.events) ? m.events : []) {
        let ev;
        try { ev = toEvent(raw); } catch { rt._error({ code: 'bad_frame', message: 'not an event' }); continue; }
        rt._seen(ev);
        if (ev.id > this.max) this.max = ev.id;
        for (const sub of to) rt._deliver(sub, ev);
      }
    } else if (m.op === 'subscribed') {
      if (!s || s.error) return;
      this.live.add(m.sub); // its resume point if it stays empty: see stop()
      // the server has had every event of it up to "after": resume from there
      if (Number.isSafeInteger(m.after)) s._floor = Math.max(s._floor ?? 0, m.after);
      rt._ready(s, { replayed: m.replayed, transport: this.name });
    } else if (m.op === 'gap') {
      if (s) rt._gap(s, { after: m.after, oldest: m.oldest });
    } else if (m.op === 'error') {
      // An error naming a sub of ours refuses its subscribe (bad_filter,
      // too_many_subs, ...): it fails, and is not asked for again.
      const err = { code: m.code, message: m.message, ...(m.sub != null && { sub: m.sub }), transport: this.name };
      if (s) rt._fail(s, err);
      else rt._error(err);
    }
    // welcome, pong, unsubscribed, and ops from newer servers: nothing to do
  }
}

class SseT {
  constructor(rt) {
    this.rt = rt;
    this.name = 'sse';
    this.es = new Map(); // sub -> EventSource
    this.open = new Set();
  }
  start() {
    for (const s of this.rt._subs.values()) this.add(s);
    if (!this.es.size) this.rt._opened(this, false); // nothing to connect yet
  }
  stop() {
    this.dead = true;
    for (const es of this.es.values()) {
      es.onopen = es.onmessage = es.onerror = null;
      es.close();
    }
  }
  add(s) {
    const rt = this.rt;
    if (s.error) return;
    const es = new rt._ES(rt.url + '/api/events/stream?' + query(s.filter, { after: s._cursor, token: rt._token() }));
    // Every id received before the request went out is at or before the
    // stream's start: s's resume point if it stays empty.
    const before = rt.maxSeenId;
    this.es.set(s, es);
    es.onopen = () => {
      this.open.add(s);
      rt._ready(s, { replayed: null, transport: this.name }, before);
      this._check();
    };
    es.onmessage = (e) => {
      let ev;
      try { ev = toEvent(JSON.parse(e.data)); } catch { return rt._error({ code: 'bad_frame', message: 'not an event', sub: s.name }, s); }
      rt._seen(ev);
      rt._deliver(s, ev);
    };
    es.addEventListener('gap', (e) => {
      if (this.dead) return;
      try { rt._gap(s, JSON.parse(e.data)); } catch {}
    });
    // EventSource would reconnect by itself, at its own pace and from its
    // own Last-Event-ID: close it and let the backoff reopen from lastId.
    es.onerror = () => rt._down(this, 'event stream error');
  }
  remove(s) {
    const es = this.es.get(s);
    if (!es) return;
    es.onopen = es.onmessage = es.onerror = null;
    es.close();
    this.es.delete(s);
    this.open.delete(s);
    this._check();
  }
  _check() {
    if (!this.up && this.es.size && this.open.size === this.es.size) {
      this.up = true;
      this.rt._opened(this);
    }
  }
}

class PollT {
  constructor(rt) {
    this.rt = rt;
    this.name = 'poll';
    this.subs = new Map(); // sub -> pending timer
  }
  start() {
    for (const s of this.rt._subs.values()) this.add(s);
    if (!this.subs.size) this.rt._opened(this, false);
  }
  stop() {
    this.dead = true;
    for (const t of this.subs.values()) this.rt._ct(t);
    this.subs.clear();
  }
  add(s) {
    if (s.error) return;
    this.subs.set(s, null);
    this._run(s).catch((e) => this.rt._error({ code: 'bad_frame', message: String(e?.message ?? e), sub: s.name }, s));
  }
  remove(s) {
    this.rt._ct(this.subs.get(s));
    this.subs.delete(s);
  }
  _wait(s, ms) {
    return new Promise((r) => this.subs.set(s, this.rt._st(r, ms)));
  }
  async _run(s) {
    const rt = this.rt;
    const live = () => !this.dead && this.subs.has(s);
    // A live subscription with no cursor at all reads to the end of the
    // history first without delivering it: the history API has no "now".
    let skip = s._cursor == null, first = true;
    while (live()) {
      let res, body;
      try {
        const t = rt._token();
        res = await rt._fetch(rt.url + '/api/events?' + query(s.filter, { after: s._cursor ?? 0, limit: 1000 }),
          { headers: { accept: 'application/json', ...(t && { authorization: 'Bearer ' + t }) } });
        body = await res.json().catch(() => null);
      } catch (e) {
        if (live()) rt._down(this, 'fetch failed: ' + (e?.message ?? e));
        return;
      }
      if (!live()) return;
      if (res.status >= 500 || !body) return rt._down(this, 'HTTP ' + res.status);
      if (!this.up) {
        this.up = true;
        rt._opened(this);
        if (!live()) return;
      }
      if (!res.ok) {
        // The server answered: a 4xx is about this sub (a bad filter). Say
        // so, and retry slowly.
        rt._error({ code: body.error, message: body.message, sub: s.name, transport: this.name }, s);
        await this._wait(s, rt.o.maxDelay);
        continue;
      }
      const evs = [];
      for (const raw of Array.isArray(body.events) ? body.events : []) {
        try { evs.push(toEvent(raw)); } catch { rt._error({ code: 'bad_frame', message: 'not an event', sub: s.name }, s); }
      }
      for (const ev of evs) {
        rt._seen(ev);
        if (skip) s._floor = ev.id;
        else rt._deliver(s, ev);
      }
      if (body.next != null && evs.length) continue; // more pages, right away
      skip = false;
      if (first) rt._ready(s, { replayed: null, transport: this.name });
      first = false;
      await this._wait(s, rt.o.pollInterval);
    }
  }
}

const MAKE = { websocket: WsT, sse: SseT, poll: PollT };

export class RtEvents extends Emitter {
  constructor(options = {}) {
    super();
    const g = globalThis, o = options;
    this.o = { ...DEFAULTS };
    for (const k in DEFAULTS) if (o[k] != null) this.o[k] = o[k];
    this.url = String(o.url ?? g.location?.origin ?? '').replace(/\/+$/, '');
    if (!this.url) throw new TypeError('rtevents: options.url is required outside a page');
    // Given as null (or undefined), a transport is not used; not given,
    // the global one is. The global fetch is wrapped: a browser's refuses
    // to be called as a method of another object ("Illegal invocation").
    this._WS = 'WebSocket' in o ? o.WebSocket : g.WebSocket;
    this._ES = 'EventSource' in o ? o.EventSource : g.EventSource;
    this._fetch = 'fetch' in o ? o.fetch : g.fetch && ((...a) => g.fetch(...a));
    // the token (rtevents.auth = token): a string, or a function asked at
    // each (re)connect, so that a page can hand over a fresh one
    this._token = () => (typeof o.token === 'function' ? o.token() : o.token) || null;
    this._st = o.setTimeout ?? ((f, ms) => setTimeout(f, ms));
    this._ct = o.clearTimeout ?? ((t) => clearTimeout(t));
    this._rand = o.random ?? Math.random;
    this.transports = (o.transports ?? ORDER).filter((t) => MAKE[t]);
    this._subs = new Map();
    this._n = 0;
    /** Highest event id received on any transport. */
    this.maxSeenId = 0;
    this._fails = {};    // transport -> failed attempts in a row
    this._ok = {};       // transport -> has opened once
    this._failures = 0;  // failed attempts since the last open
    this._tn = 0;        // index of the transport in use or tried next
    this._state = { status: 'connecting', transport: null, attempt: 0 };
    this._nav = 'navigator' in o ? o.navigator : g.navigator;
    this._win = 'window' in o ? o.window : g.addEventListener ? g : null;
    this._online = () => (this._t?.up ? this._t.poke?.() : this.reconnect());
    this._offline = () => this._t?.up || this._set('offline');
    this._win?.addEventListener('online', this._online);
    this._win?.addEventListener('offline', this._offline);
    this._connect();
  }

  get status() { return this._state.status; }
  /** The last status event: {status, transport, attempt, error?}. */
  get state() { return this._state; }
  get transport() { return this._state.transport; }

  subscribe(filter, options = {}) {
    if (this._closed) throw new Error('rtevents: closed');
    const s = new Subscription(this, 's' + ++this._n, normFilter(filter), options);
    this._subs.set(s.name, s);
    this._t?.add(s);
    this._p?.add(s);
    return s;
  }

  /** Retry now: drops the current connection or waiting, starts from the best transport. */
  reconnect() {
    if (this._closed) return;
    this._stopAll();
    this._tn = 0;
    this._connect(this.status === 'connecting' ? 'connecting' : 'reconnecting');
  }

  close() {
    if (this._closed) return;
    this._closed = true;
    this._stopAll();
    this._win?.removeEventListener('online', this._online);
    this._win?.removeEventListener('offline', this._offline);
    for (const s of this._subs.values()) s.closed = true;
    this._subs.clear();
    this._set('closed');
  }

  /* ---- internals, called by the transports ---- */

  _stopAll() {
    for (const k of ['_timer', '_upTimer', '_cto']) this._ct(this[k]);
    this._t?.stop();
    this._p?.stop();
    this._t = this._p = null;
    for (const s of this._subs.values()) s.ready = false;
  }

  _pick(from) {
    for (let i = from; i < this.transports.length; i++) {
      const t = this.transports[i];
      if (t === 'websocket' ? this._WS : t === 'sse' ? this._ES : this._fetch) return i;
    }
    return -1;
  }

  // Starts t, which this._t or this._p already holds: start() may report at once.
  _start(t) {
    try { t.start(); } catch (e) { return this._down(t, String(e?.message ?? e)); }
    // A connection that neither opens nor fails (a black-holing proxy).
    if (!t.dead && !t.up && (t.name === 'websocket' || this._subs.size)) {
      this._cto = this._st(() => t.dead || t.up || this._down(t, 'connect timeout'), this.o.connectTimeout);
    }
  }

  _connect(status) {
    this._ct(this._timer);
    if (this._closed) return;
    // The browser knows it has no network: no attempt, a slow check, and
    // the "online" event retries at once.
    if (this._nav?.onLine === false) {
      this._set('offline');
      this._timer = this._st(() => this._connect(), this._slow());
      return;
    }
    const i = this._pick(this._tn);
    if (i < 0) {
      this._set('offline', 'no transport available');
      return;
    }
    this._tn = i;
    this._set(status ?? (this.status === 'open' ? 'reconnecting' : this.status));
    this._start(this._t = new MAKE[this.transports[i]](this));
  }

  _opened(t, real = true) {
    if (t === this._p) { // a better transport works: switch to it
      this._p = null;
      this._t?.stop();
      this._t = t;
      this._tn = this.transports.indexOf(t.name);
    } else if (t !== this._t) return;
    this._ct(this._cto);
    if (real) {
      this._ok[t.name] = true;
      this._fails[t.name] = 0;
    }
    this._failures = 0;
    this._set('open');
    this._armUpgrade();
  }

  _down(t, error) {
    if (t.dead) return;
    t.stop();
    if (t === this._p) {
      this._p = null;
      return this._upgrade(this.transports.indexOf(t.name) + 1);
    }
    if (t !== this._t) return;
    this._stopAll();
    let delay;
    if (t.up) this._failures = 0;
    else {
      this._failures++;
      this._fails[t.name] = (this._fails[t.name] || 0) + 1;
    }
    const next = this._pick(this._tn + 1);
    // Fall back only from a transport that has never worked here (a proxy
    // that refuses it); one that worked and failed is an outage: retry it.
    if (!t.up && !this._ok[t.name] && this._fails[t.name] >= this.o.fallbackAfter && next >= 0) {
      this._tn = next;
      delay = 0;
    } else if (this._failures >= this.o.offlineAfter) delay = this._slow();
    else delay = this._rand() * Math.min(this.o.maxDelay, this.o.minDelay * 2 ** this._failures);
    this._set(this._failures >= this.o.offlineAfter ? 'offline' : 'reconnecting', error);
    this._timer = this._st(() => this._connect(), delay);
  }

  // Retries once offline: slow, still spread.
  _slow() { return this.o.maxDelay * (0.5 + this._rand() / 2); }

  // On a fallback transport, try the better ones again now and then.
  _armUpgrade() {
    this._ct(this._upTimer);
    if (this._t?.up && this._pick(0) < this._tn) this._upTimer = this._st(() => this._upgrade(0), this.o.upgradeInterval);
  }

  _upgrade(from) {
    const i = this._pick(from);
    if (this._closed || !this._t) return;
    if (i < 0 || i >= this._tn) return this._armUpgrade();
    // The probe runs beside the current transport; if it opens, _opened
    // switches over. Both may deliver the same events meanwhile: lastId
    // per sub drops the second copy.
    this._start(this._p = new MAKE[this.transports[i]](this));
  }

  _set(status, error) {
    const st = this._state, transport = this._t?.name ?? this.transports[this._tn] ?? null;
    if (st.status === status && st.transport === transport && st.attempt === this._failures && !error) return;
    this._state = { status, transport, attempt: this._failures, ...(error && { error }) };
    this._emit('status', this._state);
  }

  _seen(ev) { if (ev.id > this.maxSeenId) this.maxSeenId = ev.id; }

  // The only way an event reaches a subscription: ascending, never twice.
  _deliver(s, ev) {
    if (s.closed || ev.id <= (s._cursor ?? 0)) return;
    s.lastId = ev.id;
    this._call(s._o.onEvent, [ev, s]);
    this._emit('event', ev, s);
  }

  // floor: an id at or before where the server started s, a resume point
  // for a live sub that has had no event yet (it may bring a few older
  // events, never a gap).
  _ready(s, info, floor) {
    if (s.closed) return;
    if (s.lastId == null && floor) s._floor = Math.max(s._floor ?? 0, floor);
    s.ready = true;
    this._call(s._o.onReady, [info, s]);
  }

  _gap(s, info) {
    if (s.closed) return;
    this._call(s._o.onGap, [info, s]);
    this._emit('gap', info, s);
  }

  // s: the subscription the error is about, if any (info.sub names it).
  _error(info, s) {
    if (s && !s.closed) this._call(s._o.onError, [info, s]);
    this._emit('error', info, s);
  }

  // The server refused s: it stays, failed and not ready, and no transport
  // asks for it again (that would repeat the refusal on every reconnect)
  // until the application unsubscribes it.
  _fail(s, info) {
    if (!s.error) {
      s.error = info;
      s.ready = false;
      this._t?.remove(s);
      this._p?.remove(s);
    }
    this._error(info, s);
  }

  _unsubscribe(s) {
    if (s.closed) return;
    s.closed = true;
    this._subs.delete(s.name);
    this._t?.remove(s);
    this._p?.remove(s);
  }
}

globalThis.RtEvents = RtEvents;
export default RtEvents;

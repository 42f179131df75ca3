// react.js: the React entry point of rtevents ('rtevents/react').
//
// Owns useRtEvents, a hook over one subscription, and the RtEvents shared by
// every hook of a page for one url. React is a peer dependency, imported
// here only, so that rtevents.js itself stays framework-free.

import { useEffect, useRef, useState } from 'react';
import { RtEvents } from './rtevents.js';

const KEYS = ['executionId', 'batchId', 'jobId', 'organizationId'];
// How long a shared RtEvents outlives its last hook: long enough for React's
// StrictMode unmount/remount and for a route change that remounts the hook,
// so that neither costs a reconnect.
const CLOSE_DELAY = 5000;
const shared = new Map(); // url -> { rt, users, timer }

function entryFor(url, options = {}) {
  const key = url ?? globalThis.location?.origin ?? '';
  let entry = shared.get(key);
  if (!entry || entry.rt.status === 'closed') {
    entry = { key, rt: new RtEvents({ ...options, url: key || undefined }), users: 0 };
    shared.set(key, entry);
  }
  return entry;
}

/**
 * The RtEvents the hooks share for url (default: the page's origin), made
 * with the options of the first caller.
 */
export function getRtEvents(url, options) {
  return entryFor(url, options).rt;
}

// Counts the hooks using a shared RtEvents; closes it when the last goes.
// Its timers are the RtEvents' own (injectable, as in the tests).
function acquire(url, options) {
  const entry = entryFor(url, options), rt = entry.rt;
  rt._ct(entry.timer);
  entry.users++;
  return () => {
    if (--entry.users > 0) return;
    entry.timer = rt._st(() => {
      if (entry.users > 0) return;
      rt.close();
      if (shared.get(entry.key) === entry) shared.delete(entry.key);
    }, CLOSE_DELAY);
  };
}

// The filter by value: the same filter written anew at each render is the
// same subscription; a changed one is a new subscription.
function filterKey(f) {
  if (f == null) return null;
  const out = {};
  for (const k of KEYS) if (f[k] != null) out[k] = f[k];
  if (f.type != null) out.type = [].concat(f.type).sort();
  return JSON.stringify(out);
}

const EMPTY = { events: [], lastEvent: null, gap: null, ready: false };

/**
 * Subscribes while mounted; a null filter (or enabled: false) subscribes to
 * nothing. Returns { events, lastEvent, status, transport, gap, ready }.
 */
export function useRtEvents(filter, options = {}) {
  const { client, url, connection, after, history = false, limit = 1000, enabled = true } = options;
  const key = filterKey(filter);
  const [state, setState] = useState(EMPTY);
  const [conn, setConn] = useState({ status: 'connecting', transport: null });
  // The latest callbacks, without resubscribing when their identity changes.
  const callbacks = useRef(options);
  callbacks.current = options;

  useEffect(() => {
    if (key == null || !enabled) return undefined;
    const release = client ? null : acquire(url, connection);
    const rt = client ?? getRtEvents(url);
    const show = (s) => setConn((c) => (c.status === s.status && c.transport === s.transport ? c : { status: s.status, transport: s.transport }));
    show(rt.state);
    const offStatus = rt.on('status', show);
    setState(EMPTY);
    const sub = rt.subscribe(JSON.parse(key), {
      after,
      history,
      onEvent(ev) {
        setState((st) => ({ ...st, events: [...st.events, ev].slice(-limit), lastEvent: ev }));
        callbacks.current.onEvent?.(ev);
      },
      onGap(info) {
        setState((st) => ({ ...st, gap: info }));
        callbacks.current.onGap?.(info);
      },
      onReady() {
        setState((st) => (st.ready ? st : { ...st, ready: true }));
      },
    });
    return () => {
      sub.unsubscribe();
      offStatus();
      release?.();
    };
  }, [client, url, key, after, history, limit, enabled]);

  return { ...state, status: key == null || !enabled ? 'closed' : conn.status, transport: conn.transport };
}

export default useRtEvents;

// rtevents.d.ts: the types of rtevents.js (the client of the rtevents worker).

/** An event as delivered: `ts` parsed into a Date, `data` the stored JSON object. */
export interface RtEvent<D = Record<string, unknown>> {
  /** The stream position, ascending; the resume cursor. */
  id: number;
  type: string;
  ts: Date;
  executionId?: string;
  batchId?: string;
  jobId?: string;
  /** A UUID, lower case as the server prints it. */
  organizationId?: string;
  data: D;
}

/** All optional, combined with AND. Null/undefined keys are left out; empty strings are refused. */
export interface RtFilter {
  executionId?: string | null;
  batchId?: string | null;
  jobId?: string | null;
  /** Compared case-insensitively. */
  organizationId?: string | null;
  /** One type or a list of types. */
  type?: string | string[] | null;
}

export type RtStatusName = 'connecting' | 'open' | 'reconnecting' | 'offline' | 'closed';
export type RtTransport = 'websocket' | 'sse' | 'poll';

export interface RtStatus {
  status: RtStatusName;
  /** The transport in use, or the one being tried. */
  transport: RtTransport | null;
  /** Failed connection attempts since the last open. */
  attempt: number;
  /** Why the last connection ended or failed. */
  error?: string;
}

/**
 * The server says TTL cleanup deleted events after the cursor before they
 * could be replayed (any events: the check does not look at the filter), so
 * some may have been missed: reload the state rather than trust the stream.
 */
export interface RtGap {
  /** The cursor that was asked for. */
  after: number;
  /** The lowest id above `after` still stored. */
  oldest: number;
}

export interface RtReady {
  /** Events replayed (WebSocket); null where the transport does not say. */
  replayed: number | null;
  transport: RtTransport;
}

export interface RtError {
  /** Server codes (bad_filter, too_many_subs, ...), or bad_frame, listener_error. */
  code: string;
  message?: string;
  /** The name of the subscription concerned, when known (the server names it in errors about one). */
  sub?: string;
  transport?: RtTransport;
  /** The exception, for listener_error. */
  error?: unknown;
}

export interface RtEventsOptions {
  /** Base http(s) URL of the worker; default globalThis.location.origin. */
  url?: string;
  /**
   * The token when the worker has rtevents.auth = token: a string, or a
   * function asked at each (re)connect. Sent as the token parameter of the
   * WebSocket and SSE URLs (browsers cannot set their headers) and as
   * "Authorization: Bearer" when polling.
   */
  token?: string | (() => string | null | undefined);
  /** Tried in this order; default ['websocket', 'sse', 'poll']. */
  transports?: RtTransport[];
  /** Reconnect backoff: random(0, min(maxDelay, minDelay * 2^attempt)). Default 1000 ms. */
  minDelay?: number;
  /** Default 30000 ms. */
  maxDelay?: number;
  /** Failed attempts before status 'offline' (retries go on, between maxDelay/2 and maxDelay). Default 8. */
  offlineAfter?: number;
  /** Polling transport: ms between polls once caught up. Default 2000. */
  pollInterval?: number;
  /** WebSocket: ms between {"op":"ping"}; two silent intervals and the connection is dead. Default 25000. */
  pingInterval?: number;
  /** An attempt that neither opens nor fails in this many ms fails. Default 10000. */
  connectTimeout?: number;
  /** On a fallback transport, how often the better ones are tried again. Default 60000 ms. */
  upgradeInterval?: number;
  /** Consecutive failures, before it ever opened, that make a transport give way to the next. Default 2. */
  fallbackAfter?: number;
  /** Injectable; null or undefined disables the transport. Default: the globals. */
  WebSocket?: (new (url: string) => WebSocket) | null;
  EventSource?: (new (url: string) => EventSource) | null;
  fetch?: ((url: string, init?: RequestInit) => Promise<Response>) | null;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (handle: unknown) => void;
  /** Returns [0, 1); default Math.random. */
  random?: () => number;
  /** Where 'online'/'offline' events come from; default globalThis when it has addEventListener. */
  window?: Pick<EventTarget, 'addEventListener' | 'removeEventListener'> | null;
  /** navigator.onLine === false skips attempts until 'online'; default globalThis.navigator. */
  navigator?: { onLine?: boolean } | null;
}

export interface SubscribeOptions<D = Record<string, unknown>> {
  /** Resume cursor: deliver events with id > after. */
  after?: number | string;
  /** Hydrate from stored history first (after = 0), then live. */
  history?: boolean;
  onEvent?(ev: RtEvent<D>, sub: Subscription): void;
  onGap?(info: RtGap, sub: Subscription): void;
  /** Replay done, live from now on; called after each (re)subscription. */
  onReady?(info: RtReady, sub: Subscription): void;
  /**
   * An error about this subscription (also an 'error' event). Over WebSocket
   * it is the server refusing it (bad_filter, too_many_subs, ...): it is then
   * `error`, and not asked for again until unsubscribed. Over polling, a 4xx
   * answer (retried every maxDelay); over SSE or polling, a bad_frame on its
   * own stream.
   */
  onError?(err: RtError, sub: Subscription): void;
}

export interface Subscription {
  /** s1, s2, ... */
  readonly name: string;
  /** The normalized filter (type always a list). */
  readonly filter: Readonly<{ executionId?: string; batchId?: string; jobId?: string; organizationId?: string; type?: string[] }>;
  /** The last id delivered, or the cursor given; null for a live subscription that has had nothing yet. */
  readonly lastId: number | null;
  /** Live: its replay is done on the current connection. */
  readonly ready: boolean;
  readonly closed: boolean;
  /**
   * Set when the server refused it (a WebSocket error naming it): it stays,
   * never ready, and is not subscribed again on any connection until
   * unsubscribe(); null otherwise.
   */
  readonly error: RtError | null;
  unsubscribe(): void;
}

export interface RtEventsEvents {
  status: (s: RtStatus) => void;
  /** Every delivery, with the subscription it went to (an event matching two subscriptions comes twice). */
  event: (ev: RtEvent, sub: Subscription) => void;
  gap: (info: RtGap, sub: Subscription) => void;
  /** sub: the subscription the error is about, when it is one of this client's. */
  error: (err: RtError, sub?: Subscription) => void;
}

export declare class RtEvents {
  constructor(options?: RtEventsOptions);
  readonly url: string;
  readonly transports: RtTransport[];
  /** Highest event id received on any transport. */
  readonly maxSeenId: number;
  readonly status: RtStatusName;
  readonly transport: RtTransport | null;
  /** The last status event. */
  readonly state: RtStatus;
  subscribe<D = Record<string, unknown>>(filter?: RtFilter, options?: SubscribeOptions<D>): Subscription;
  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof RtEventsEvents>(type: K, listener: RtEventsEvents[K]): () => void;
  off<K extends keyof RtEventsEvents>(type: K, listener: RtEventsEvents[K]): void;
  /** Retry now, from the best transport. */
  reconnect(): void;
  /** For good: status 'closed', every subscription closed. */
  close(): void;
}

/**
 * Whether ev passes a normalized filter, by the server's rule. For
 * applications: the client routes events by the subscriptions the server
 * names, not by this.
 */
export declare function matches(filter: Subscription['filter'], ev: RtEvent): boolean;

export default RtEvents;

declare global {
  // Set by importing rtevents.js, for pages that prefer a global.
  var RtEvents: typeof import('./rtevents.js').RtEvents;
}

// react.d.ts: the types of react.js (useRtEvents, 'rtevents/react').

import type { RtEvent, RtEvents, RtEventsOptions, RtFilter, RtGap, RtStatusName, RtTransport } from './rtevents.js';

export interface UseRtEventsOptions<D = Record<string, unknown>> {
  /** Use this RtEvents instead of the shared one (it is left open on unmount). */
  client?: RtEvents;
  /** Base URL of the worker; one shared RtEvents per url. Default the page's origin. */
  url?: string;
  /** Options for the shared RtEvents, used when the first hook for its url creates it. */
  connection?: Omit<RtEventsOptions, 'url'>;
  /** Resume cursor. */
  after?: number | string;
  /** Hydrate from stored history first, then live. */
  history?: boolean;
  /** The most events kept in `events` (the oldest go first). Default 1000. */
  limit?: number;
  /** false: subscribe to nothing (as does a null filter). Default true. */
  enabled?: boolean;
  /** Called for each event; the latest function is used, without resubscribing. */
  onEvent?(ev: RtEvent<D>): void;
  onGap?(info: RtGap): void;
}

export interface UseRtEventsResult<D = Record<string, unknown>> {
  /** Events of the current filter, ascending id; reset when the filter changes. */
  events: RtEvent<D>[];
  lastEvent: RtEvent<D> | null;
  /** 'closed' while disabled. */
  status: RtStatusName;
  transport: RtTransport | null;
  /** Set when the server reports events deleted before they could be replayed: reload. */
  gap: RtGap | null;
  /** The replay is done; live from now on. */
  ready: boolean;
}

/**
 * One subscription while mounted. The filter is compared by value: a new
 * object with the same keys keeps the subscription; a changed one replaces it.
 */
export declare function useRtEvents<D = Record<string, unknown>>(
  filter: RtFilter | null | undefined,
  options?: UseRtEventsOptions<D>,
): UseRtEventsResult<D>;

/** The RtEvents shared by the hooks for url, created with options if it does not exist yet. */
export declare function getRtEvents(url?: string, options?: Omit<RtEventsOptions, 'url'>): RtEvents;

export default useRtEvents;

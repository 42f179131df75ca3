/*-------------------------------------------------------------------------
 *
 * rtevents.h
 *		Declarations shared by the modules of the rtevents extension.
 *
 * Each module owns one concern; this header is the list of what they offer
 * one another:
 *
 *	rtevents.c			_PG_init: wires GUCs, shared memory and background workers
 *	guc.c				the rtevents.* configuration parameters
 *	horizon.c			which event ids may still commit (publisher slots)
 *	event_json.c		the event as JSON, exactly as clients receive it
 *	publish.c			rt_publish() and the triggers that NOTIFY inserts
 *	feed_read.c			rt_read_events(): the feed's read of the table
 *	sequencer.c			the LISTEN feed as one ascending, gap-free stream of ids
 *	stream.c			the live stream: the ring of recent events, fan-out
 *	replay.c			catching clients up from the table, page by page
 *	request.c			the filter and cursor of an HTTP request
 *	sse.c				GET /api/events/stream: Server-Sent Events
 *	history.c			GET /api/events: history as JSON
 *	cleanup_worker.c	the background worker that runs TTL cleanup
 *	server_worker.c		the background worker that serves clients: its event loop
 *	listen_feed.c		the server worker's LISTEN connection
 *	http.c				the server worker's plain HTTP endpoints
 *
 *-------------------------------------------------------------------------
 */
#ifndef RTEVENTS_H
#define RTEVENTS_H

#include "postgres.h"

#include "access/htup.h"
#include "access/tupdesc.h"
#include "lib/stringinfo.h"
#include "utils/relcache.h"
#include "utils/timestamp.h"

/*
 * NOTIFY refuses payloads of 8000 bytes or more (NOTIFY_PAYLOAD_MAX_LENGTH is
 * private to async.c); an event whose JSON would not fit is announced by a
 * reference instead and read from the table.
 */
#define RT_NOTIFY_PAYLOAD_MAX	7999

/* Bounds on what a caller may store; they also bound what the worker sends. */
#define RT_MAX_TYPE_LEN			200
#define RT_MAX_KEY_LEN			200

/* guc.c */
extern int	rt_port;
extern char *rt_listen_addresses;
extern char *rt_channel;
extern int	rt_default_ttl;
extern int	rt_cleanup_interval;
extern int	rt_cleanup_batch_size;
extern char *rt_database;
extern char *rt_feed_conninfo;
extern int	rt_heartbeat;
extern int	rt_max_client_buffer;

extern void rt_define_gucs(void);

/* horizon.c */
extern void rt_horizon_request_shmem(void);
extern void rt_horizon_init_shmem(void);
extern void rt_horizon_register_callbacks(void);
extern void rt_horizon_claim(Relation rel);
extern int64 rt_horizon_lowest_open_id(bool *any_open);

/* event_json.c */
typedef struct RtEvent
{
	int64		id;
	const char *type;
	TimestampTz ts;
	const char *execution_id;	/* routing keys: NULL when absent */
	const char *batch_id;
	const char *job_id;
	const char *organization_id;	/* uuid, as text */
	const char *data;			/* jsonb, as text */
} RtEvent;

extern void rt_event_append_json(StringInfo buf, const RtEvent *event);
extern void rt_event_from_tuple(RtEvent *event, HeapTuple tuple,
								TupleDesc tupdesc);

/* publish.c */
extern void rt_publish_register_callbacks(void);

/* sequencer.c */
typedef struct RtSequencer
{
	int64		decided;		/* every id <= decided: delivered or never */
	int64		announced;		/* highest id a notification has named */
	int64		horizon;		/* as read before the current table read */
	int64		walk_next;		/* next id the current read may deliver */
} RtSequencer;

extern void rt_sequencer_init(RtSequencer *seq, int64 decided);
extern bool rt_payload_highest_id(const char *payload, int64 *id);
extern void rt_sequencer_announce(RtSequencer *seq, int64 id);
extern bool rt_sequencer_next_read(RtSequencer *seq, int64 *after, int64 *upto);
extern void rt_sequencer_read_horizon(RtSequencer *seq, int64 horizon);
extern bool rt_sequencer_accept(RtSequencer *seq, int64 id);
extern void rt_sequencer_read_done(RtSequencer *seq, int64 upto);
extern bool rt_sequencer_behind(const RtSequencer *seq);

/* cleanup_worker.c */
extern void rt_register_cleanup_worker(void);

/*
 * The server worker.  Everything below runs in that one process, around one
 * libwebsockets event loop; libwebsockets.h is included only by the modules
 * that call it, hence the incomplete types.
 *
 * Code called back from inside the loop (descriptor handlers, lws_sul
 * timers, HTTP callbacks) must never ereport(ERROR): a longjmp out of
 * libwebsockets would leave it corrupt.  It uses malloc/free and fixed
 * buffers, and logs at LOG at most.
 */
struct lws;
struct lws_context;
struct lws_protocols;

/* server_worker.c */
typedef enum RtFdEvent
{
	RT_FD_READABLE,
	RT_FD_WRITABLE,				/* after rt_server_want_writable() */
	RT_FD_CLOSED				/* hung up: the loop has already dropped it */
} RtFdEvent;

/* Returns nonzero to stop watching (the loop then closes the descriptor). */
typedef int (*RtFdHandler) (struct lws *wsi, RtFdEvent event, void *arg);

typedef struct RtFdWatch
{
	const char *name;			/* for the log */
	RtFdHandler handler;
	void	   *arg;
} RtFdWatch;

extern void rt_register_server_worker(void);
extern struct lws_context *rt_server_context(void);
extern struct lws *rt_server_watch_fd(int fd, const RtFdWatch *watch);
extern void rt_server_want_writable(struct lws *wsi);
extern void rt_server_unwatch_fd(struct lws *wsi);
extern void rt_server_wake(void);

/* listen_feed.c */
typedef enum RtFeedState
{
	RT_FEED_DOWN,				/* no connection; a retry is scheduled */
	RT_FEED_CONNECTING,			/* connecting, or LISTEN not yet confirmed */
	RT_FEED_UP					/* listening */
} RtFeedState;

extern void rt_feed_start(void);
extern void rt_feed_reload(void);
extern void rt_feed_stop(void);
extern RtFeedState rt_feed_state(void);
extern uint64 rt_feed_notifications(void);
extern uint64 rt_feed_reads(void);
extern void rt_feed_kick(void);
extern void rt_feed_on_notify(const char *payload);

/* stream.c */
typedef struct RtEventKeys
{
	const char *type;
	const char *execution_id;	/* routing keys: NULL when absent */
	const char *batch_id;
	const char *job_id;
	const char *organization_id;
} RtEventKeys;

typedef struct RtStreamEvent
{
	int			refcount;
	int64		id;
	RtEventKeys keys;
	char	   *json;			/* as clients receive it (event_json.c) */
	size_t		json_len;
} RtStreamEvent;

/* Called for every event let out, or with NULL for a hole (see stream.c). */
typedef void (*RtStreamListener) (RtStreamEvent *ev);

extern RtStreamEvent *rt_stream_event_new(int64 id, const char *type,
										  const char *execution_id,
										  const char *batch_id,
										  const char *job_id,
										  const char *organization_id,
										  const char *json);
extern void rt_stream_event_retain(RtStreamEvent *ev);
extern void rt_stream_event_release(RtStreamEvent *ev);
extern void rt_stream_start(int64 last_id);
extern void rt_stream_set_listener(RtStreamListener listener);
extern void rt_stream_deliver(RtStreamEvent *ev);
extern void rt_stream_drop(int64 id);
extern int64 rt_stream_last_id(void);
extern int64 rt_stream_ring_after(int64 after, uint64 *first);
extern RtStreamEvent *rt_stream_ring_at(uint64 index);
extern int64 rt_stream_ring_floor(void);
extern uint64 rt_stream_delivered(void);
extern uint64 rt_stream_dropped(void);

/* request.c */
#define RT_REQ_MAX_TYPES	32

typedef struct RtRequest
{
	char	   *keys[4];		/* executionId, batchId, jobId, organizationId */
	char	   *types[RT_REQ_MAX_TYPES];
	int			ntypes;
	char	   *types_literal;	/* the same, as a Postgres array literal */
	int64		after;
	bool		has_after;
	char	   *since;			/* RFC 3339, checked; Postgres casts them */
	char	   *until;
	int			limit;
	int			offset;
} RtRequest;

extern bool rt_request_parse(struct lws *wsi, RtRequest *req, bool history,
							 const char **code, const char **message);
extern bool rt_request_parse_id(const char *s, int64 *id);
extern bool rt_request_matches(const RtRequest *req, const RtEventKeys *keys);
extern void rt_request_free(RtRequest *req);

/* What a connection of the http protocol carries (http.c's user data). */
typedef enum RtHttpKind
{
	RT_HTTP_NONE = 0,
	RT_HTTP_SSE,
	RT_HTTP_HISTORY
} RtHttpKind;

typedef struct RtHttpSession
{
	RtHttpKind	kind;
	void	   *state;			/* sse.c's or history.c's */
} RtHttpSession;

/* replay.c */
typedef struct RtReplay RtReplay;
/* Takes over the reference to ev. */
typedef void (*RtReplayRowFn) (void *owner, RtStreamEvent *ev);
/* The page is done (the replay is freed); more: there may be more rows. */
typedef void (*RtReplayDoneFn) (void *owner, bool ok, bool more);

#define RT_REPLAY_PARAMS	11

extern RtReplay *rt_replay_start(const RtRequest *req, int64 after,
								 int64 upto, void *owner,
								 RtReplayRowFn on_row, RtReplayDoneFn on_done);
extern RtReplay *rt_replay_query(const RtRequest *req, int64 after,
								 int64 upto, int limit, int offset,
								 void *owner, RtReplayRowFn on_row,
								 RtReplayDoneFn on_done);
extern void rt_replay_cancel(RtReplay *r);
extern bool rt_replay_next_page(const char *params[RT_REPLAY_PARAMS],
								char buf[4][24]);
extern void rt_replay_row(RtStreamEvent *ev);
extern void rt_replay_page_done(bool ok);
extern void rt_replay_page_lost(void);
extern bool rt_replay_waiting(void);
extern uint64 rt_replay_pages(void);

/* sse.c */
extern int	rt_sse_open(struct lws *wsi, void **user, const char **code,
						const char **message);
extern int	rt_sse_writable(struct lws *wsi, void *user);
extern void rt_sse_closed(void *user);
extern int	rt_sse_clients(void);

/* history.c */
extern int	rt_history_open(struct lws *wsi, void **user, const char **code,
							const char **message);
extern int	rt_history_writable(struct lws *wsi, void *user);
extern void rt_history_closed(void *user);

/* http.c */
extern const struct lws_protocols rt_http_protocol;

#endif							/* RTEVENTS_H */

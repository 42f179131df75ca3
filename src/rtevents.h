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
 *	connections.c		the server worker's clients, in shared memory: rtevents_connections
 *	event_json.c		the event as JSON, exactly as clients receive it
 *	publish.c			rt_publish() and the triggers that NOTIFY inserts
 *	feed_read.c			rt_read_events(): the feed's read of the table
 *	sequencer.c			the LISTEN feed as one ascending, gap-free stream of ids
 *	stream.c			the live stream: the ring of recent events, fan-out
 *	replay.c			catching clients up from the table, page by page
 *	subscription.c		subscriptions, their index, and the client queues they fill
 *	request.c			the filter and cursor of an HTTP request
 *	sse.c				GET /api/events/stream: Server-Sent Events
 *	ws.c				GET /ws: the WebSocket protocol
 *	client_message.c	what a WebSocket client may say, parsed
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
#include "lib/ilist.h"
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
extern int	rt_batch_ms;
extern int	rt_client_timeout;
extern int	rt_max_connections;

extern void rt_define_gucs(void);

/* horizon.c */
extern void rt_horizon_request_shmem(void);
extern void rt_horizon_init_shmem(void);
extern void rt_horizon_register_callbacks(void);
extern void rt_horizon_claim(Relation rel);
extern int64 rt_horizon_lowest_open_id(bool *any_open);

/*
 * One shared-memory slot per client of the server worker, for the
 * rtevents_connections view.  The worker alone writes them.  It calls
 * rt_conn_reset_all() once at start; the rest, from rt_conn_acquire() on,
 * is safe inside libwebsockets callbacks (no ereport, no palloc), and takes
 * a slot index of -1 (no slot) as a no-op.
 */

/* connections.c */
typedef enum RtConnTransport
{
	RT_CONN_SSE,
	RT_CONN_WEBSOCKET,
	RT_CONN_HISTORY
} RtConnTransport;

extern void rt_conn_request_shmem(void);
extern void rt_conn_init_shmem(void);
extern void rt_conn_reset_all(void);
extern int	rt_conn_acquire(RtConnTransport transport, const char *peer);
extern uint64 rt_conn_id(int slot);
extern void rt_conn_set(int slot, int subscriptions, int64 queued_bytes);
extern void rt_conn_set_queued(int slot, int64 queued_bytes);
extern void rt_conn_touch(int slot);
extern void rt_conn_release(int slot);
extern int	rt_conn_in_use(void);

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
extern void rt_server_set_heartbeat(void);

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
extern double rt_feed_held_now(void);
extern double rt_feed_held_total(void);
extern uint64 rt_feed_holds(void);
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
	bool		message;		/* not an event: a protocol message, in json */
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
extern bool rt_stream_started(void);
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
extern bool rt_request_set_key(RtRequest *c, int i, const char *v,
							   const char **message, bool *oom);
extern bool rt_request_add_type(RtRequest *c, const char *t,
								const char **message, bool *oom);
extern bool rt_request_end_types(RtRequest *c, bool *oom);
extern bool rt_request_has_filter(const RtRequest *c);
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

typedef struct RtReplayHooks
{
	/* A row; takes over the reference to ev. */
	void		(*on_row) (void *owner, RtStreamEvent *ev);
	/* The page is done (the replay is freed); more: there may be more rows. */
	void		(*on_done) (void *owner, bool ok, bool more);
	/*
	 * Before the rows: cleanup deleted events after the page's cursor, and
	 * oldest is the first id kept after it.  NULL: the page does not ask.
	 */
	void		(*on_gap) (void *owner, int64 oldest);
} RtReplayHooks;

#define RT_REPLAY_PARAMS	12

extern RtReplay *rt_replay_start(const RtRequest *req, int64 after,
								 int64 upto, void *owner,
								 const RtReplayHooks *hooks);
extern RtReplay *rt_replay_query(const RtRequest *req, int64 after,
								 int64 upto, int limit, int offset,
								 void *owner, const RtReplayHooks *hooks);
extern void rt_replay_cancel(RtReplay *r);
extern bool rt_replay_next_page(const char *params[RT_REPLAY_PARAMS],
								char buf[4][24]);
extern void rt_replay_gap(int64 oldest);
extern void rt_replay_row(RtStreamEvent *ev);
extern void rt_replay_page_done(bool ok);
extern void rt_replay_page_lost(void);
extern bool rt_replay_waiting(void);
extern uint64 rt_replay_pages(void);

/* subscription.c */
#define RT_SUB_NAME_MAX		64

typedef struct RtSub RtSub;
typedef struct RtClient RtClient;

/* What a transport is told about its client's subscriptions. */
typedef struct RtClientOps
{
	/* s has sent its replay (replayed events) and is live from now on */
	void		(*live) (RtClient *c, RtSub *s, int64 replayed);
	/* cleanup deleted events past after; oldest is the first one kept */
	void		(*gap) (RtClient *c, RtSub *s, int64 after, int64 oldest);
} RtClientOps;

/*
 * A connection's subscriptions and the queue they fill, embedded in the
 * transport's own state; only subscription.c changes it.
 */
struct RtClient
{
	struct lws *wsi;
	const RtClientOps *ops;
	dlist_node	node;			/* in the list of every client */
	dlist_head	subs;
	int			nsubs;
	RtStreamEvent **queue;		/* ring of queued events and messages */
	int			queue_cap;
	int			queue_head;
	int			queue_len;
	size_t		queued_bytes;
	dlist_node	flush_node;		/* waiting for rtevents.batch_ms */
	bool		flush_pending;
	bool		closing;
	int			conn;			/* its rtevents_connections slot */
};

extern void rt_subscriptions_init(void);
extern bool rt_client_init(RtClient *c, struct lws *wsi,
						   const RtClientOps *ops, RtConnTransport transport);
extern void rt_client_release(RtClient *c);
extern void rt_client_give_up(RtClient *c);
extern bool rt_client_queue_message(RtClient *c, const char *msg);
extern RtStreamEvent *rt_client_peek(const RtClient *c, int i);
extern void rt_client_pop(RtClient *c);
extern void rt_client_wrote(RtClient *c);
extern uint8_t *rt_client_write_buffer(size_t size);
extern RtSub *rt_client_find_sub(RtClient *c, const char *name);
extern RtSub *rt_sub_open(RtClient *c, const char *name, RtRequest *req,
						  bool has_after, int64 after);
extern void rt_sub_close(RtSub *s);
extern const char *rt_sub_name(const RtSub *s);
extern int	rt_subscriptions(void);
extern uint64 rt_events_out(void);
extern uint64 rt_clients_dropped(void);

/* client_message.c */
typedef enum RtClientOp
{
	RT_OP_SUBSCRIBE,
	RT_OP_UNSUBSCRIBE,
	RT_OP_PING
} RtClientOp;

typedef struct RtClientMessage
{
	RtClientOp	op;
	char		sub[RT_SUB_NAME_MAX + 1];
	RtRequest	filter;			/* malloc'd: the caller frees it */
	bool		has_after;
	int64		after;
} RtClientMessage;

extern bool rt_client_message_parse(char *text, size_t len,
									RtClientMessage *m, const char **code,
									const char **message);

/* sse.c */
extern int	rt_sse_open(struct lws *wsi, void **user, const char **code,
						const char **message);
extern int	rt_sse_writable(struct lws *wsi, void *user);
extern void rt_sse_closed(void *user);
extern int	rt_sse_clients(void);

/* ws.c */
extern void rt_ws_going_away(void);
extern int	rt_ws_clients(void);
extern const struct lws_protocols rt_ws_protocol;

/* history.c */
extern int	rt_history_open(struct lws *wsi, void **user, const char **code,
							const char **message);
extern int	rt_history_writable(struct lws *wsi, void *user);
extern void rt_history_closed(void *user);

/* http.c */
extern const struct lws_protocols rt_http_protocol;
extern int	rt_http_confirm_upgrade(struct lws *wsi, const char *upgrade);

#endif							/* RTEVENTS_H */

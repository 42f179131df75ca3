/*-------------------------------------------------------------------------
 *
 * sse.c
 *		GET /api/events/stream: Server-Sent Events.
 *
 * One subscription per stream, given by the query string's filter.  A
 * client that names a cursor (Last-Event-ID, else after) first catches up:
 * from the live stream's ring when it still reaches back that far, else from
 * the table (replay.c) up to the ring's floor, then from the ring, and goes
 * live once the ring covers its cursor.  Live events are never buffered for
 * a client that is still catching up: it reads them from the ring when it
 * gets there, so the switch to live has neither gap nor duplicate.  Every
 * event is written once, in ascending id, after the client's cursor.
 *
 * Each client has a queue of shared (reference-counted) events and a byte
 * budget, rtevents.max_client_buffer.  A live client that a burst puts over
 * it stops taking live events and catches up from the ring as it drains, so
 * a burst costs it no more memory; a client so slow that the ring moves past
 * it is closed, and resumes with Last-Event-ID.  Nobody else waits for it.
 *
 * Everything here runs inside libwebsockets callbacks: malloc and fixed
 * buffers, no ereport(ERROR).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdlib.h>

#include <libwebsockets.h>

#include "rtevents.h"

#define RT_SSE_WRITE_CHUNK		(32 * 1024)
#define RT_SSE_RETRY_MS			2000

typedef enum SsePhase
{
	SSE_CATCHING_UP,			/* behind; goes on as its queue drains */
	SSE_REPLAYING,				/* a page of the table is being read */
	SSE_LIVE
} SsePhase;

typedef struct SseClient
{
	struct SseClient *next;
	struct lws *wsi;
	SsePhase	phase;
	RtRequest	req;			/* the filter */
	int64		cursor;			/* every match up to here is queued */
	RtReplay   *replay;
	int64		replay_upto;	/* where the running replay ends */
	bool		replay_cut;		/* rows of this page left for the next */
	RtStreamEvent **queue;		/* ring of queued events */
	int			queue_cap;
	int			queue_head;
	int			queue_len;
	size_t		queued_bytes;
	bool		lagging;		/* fell out of live over its budget */
	bool		preamble_sent;	/* retry: hint */
	bool		heartbeat_due;
	bool		closing;
} SseClient;

static SseClient *clients = NULL;
static int	nclients = 0;
static lws_sorted_usec_list_t heartbeat_timer;
static bool heartbeat_scheduled = false;

static void sse_catch_up(SseClient *c);

/* Last-Event-ID, when present, wins over after (PROTOCOL.md). */
static bool
last_event_id(struct lws *wsi, RtRequest *req, const char **code,
			  const char **message)
{
	char		buf[32];

	if (lws_hdr_custom_length(wsi, "last-event-id:", 14) <= 0)
		return true;
	if (lws_hdr_custom_copy(wsi, buf, sizeof(buf), "last-event-id:", 14) < 0 ||
		!rt_request_parse_id(buf, &req->after))
	{
		*code = "bad_cursor";
		*message = "Last-Event-ID must be an event id";
		return false;
	}
	req->has_after = true;
	return true;
}

/* ---- the queue ---- */

static bool
enqueue(SseClient *c, RtStreamEvent *ev)
{
	/* Over budget; though one event bigger than the budget may go alone. */
	if (c->queue_len > 0 &&
		c->queued_bytes + ev->json_len > (size_t) rt_max_client_buffer * 1024)
		return false;
	if (c->queue_len == c->queue_cap)
	{
		int			cap = c->queue_cap ? c->queue_cap * 2 : 16;
		RtStreamEvent **q = malloc(sizeof(RtStreamEvent *) * cap);

		if (q == NULL)
			return false;
		for (int i = 0; i < c->queue_len; i++)
			q[i] = c->queue[(c->queue_head + i) % c->queue_cap];
		free(c->queue);
		c->queue = q;
		c->queue_cap = cap;
		c->queue_head = 0;
	}
	rt_stream_event_retain(ev);
	c->queue[(c->queue_head + c->queue_len++) % c->queue_cap] = ev;
	c->queued_bytes += ev->json_len;
	c->cursor = ev->id;
	return true;
}

/*
 * Too far behind, or out of memory: close; the client resumes.  Not through
 * a write, which a client that stopped reading would never allow.
 */
static void
give_up(SseClient *c)
{
	if (c->closing)
		return;
	c->closing = true;
	lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

/*
 * Queue ev if the client wants it.  False when it wants it but the queue is
 * over budget: the client then catches up from the ring as it drains, from
 * its cursor, which ev has not passed.
 */
static bool
offer(SseClient *c, RtStreamEvent *ev)
{
	if (ev->id <= c->cursor || !rt_request_matches(&c->req, &ev->keys))
		return true;
	if (!enqueue(c, ev))
	{
		c->phase = SSE_CATCHING_UP;
		c->lagging = true;
		return false;
	}
	lws_callback_on_writable(c->wsi);
	return true;
}

/* ---- catching up ---- */

/* A row of a replay page: queued, or left for the next page when full. */
static void
replay_row(void *owner, RtStreamEvent *ev)
{
	SseClient  *c = owner;

	if (c->replay_cut ||
		(c->queue_len > 0 &&
		 c->queued_bytes + ev->json_len > (size_t) rt_max_client_buffer * 1024))
		c->replay_cut = true;	/* this row and the rest: the next page */
	else if (!offer(c, ev))
		c->replay_cut = true;	/* out of memory */
	rt_stream_event_release(ev);
}

static bool
has_room(const SseClient *c)
{
	return c->queued_bytes < (size_t) rt_max_client_buffer * 1024 / 2;
}

static void
replay_done(void *owner, bool ok, bool more)
{
	SseClient  *c = owner;

	c->replay = NULL;
	if (!ok)
	{
		give_up(c);
		return;
	}
	/* Every match up to the replay's end is queued, unless rows were left. */
	if (!more && !c->replay_cut)
		c->cursor = Max(c->cursor, c->replay_upto);
	c->replay_cut = false;
	c->phase = SSE_CATCHING_UP;
	if (has_room(c))
		sse_catch_up(c);
}

/*
 * From the cursor towards live, as far as the client's queue allows: a page
 * of the table while the ring does not reach back to the cursor, then the
 * ring.  Called again as the queue drains (rt_sse_writable).
 */
static void
sse_catch_up(SseClient *c)
{
	uint64		first;
	int64		n = rt_stream_ring_after(c->cursor, &first);
	int64		i;

	if (n < 0 && c->lagging)
	{
		give_up(c);				/* so slow that the ring has moved past it */
		return;
	}
	if (n < 0)
	{
		c->phase = SSE_REPLAYING;
		c->replay_upto = rt_stream_ring_floor();
		c->replay = rt_replay_start(&c->req, c->cursor, c->replay_upto,
									c, replay_row, replay_done);
		if (c->replay == NULL)
			give_up(c);
		return;
	}
	for (i = 0; i < n && !c->closing && has_room(c); i++)
	{
		RtStreamEvent *ev = rt_stream_ring_at(first + i);

		if (ev == NULL || !offer(c, ev))
			break;
		c->cursor = Max(c->cursor, ev->id);	/* past events it does not want */
	}
	if (i == n)
	{
		c->cursor = Max(c->cursor, rt_stream_last_id());
		c->phase = SSE_LIVE;
		c->lagging = false;
	}
}

/* ---- the live stream ---- */

static void
on_live_event(RtStreamEvent *ev)
{
	for (SseClient *c = clients; c != NULL; c = c->next)
	{
		if (c->closing)
			continue;
		if (c->lagging && c->cursor < rt_stream_ring_floor())
			give_up(c);			/* the ring has moved past a stalled client */
		else if (c->phase != SSE_LIVE)
			continue;
		else if (ev == NULL)
			give_up(c);			/* a hole in the stream: resume from the table */
		else
			(void) offer(c, ev);
	}
}

static void
heartbeat(lws_sorted_usec_list_t *sul)
{
	heartbeat_scheduled = false;
	for (SseClient *c = clients; c != NULL; c = c->next)
	{
		c->heartbeat_due = true;
		lws_callback_on_writable(c->wsi);
	}
	if (clients != NULL)
	{
		lws_sul_schedule(rt_server_context(), 0, &heartbeat_timer, heartbeat,
						 (lws_usec_t) rt_heartbeat * LWS_US_PER_SEC);
		heartbeat_scheduled = true;
	}
}

/* ---- the HTTP side ---- */

static void
client_free(SseClient *c)
{
	rt_replay_cancel(c->replay);
	for (int i = 0; i < c->queue_len; i++)
		rt_stream_event_release(c->queue[(c->queue_head + i) % c->queue_cap]);
	free(c->queue);
	rt_request_free(&c->req);
	free(c);
}

/*
 * LWS_CALLBACK_HTTP for GET /api/events/stream.  Returns 0 once streaming,
 * 1 with *code and *message for a 400, -1 to drop the connection.
 */
int
rt_sse_open(struct lws *wsi, void **user, const char **code,
			const char **message)
{
	uint8_t		buf[LWS_PRE + 512];
	uint8_t    *start = buf + LWS_PRE,
			   *p = start,
			   *end = buf + sizeof(buf);
	SseClient  *c = calloc(1, sizeof(SseClient));
	bool		has_cursor;

	if (c == NULL)
		return -1;
	c->wsi = wsi;
	if (!rt_request_parse(wsi, &c->req, false, code, message) ||
		!last_event_id(wsi, &c->req, code, message))
	{
		client_free(c);
		return 1;
	}
	has_cursor = c->req.has_after;
	c->cursor = c->req.after;

	if (lws_add_http_common_headers(wsi, HTTP_STATUS_OK, "text/event-stream",
									LWS_ILLEGAL_HTTP_CONTENT_LEN, &p, end) ||
		lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL,
									 (const unsigned char *) "no-store", 8,
									 &p, end) ||
		lws_finalize_write_http_header(wsi, start, &p, end))
	{
		client_free(c);
		return -1;
	}
	lws_http_mark_sse(wsi);

	c->next = clients;
	clients = c;
	nclients++;
	*user = c;
	if (!heartbeat_scheduled)
	{
		lws_sul_schedule(rt_server_context(), 0, &heartbeat_timer, heartbeat,
						 (lws_usec_t) rt_heartbeat * LWS_US_PER_SEC);
		heartbeat_scheduled = true;
	}
	rt_stream_set_listener(on_live_event);

	if (has_cursor)
		sse_catch_up(c);
	else
	{
		c->cursor = rt_stream_last_id();
		c->phase = SSE_LIVE;
	}
	lws_callback_on_writable(wsi);
	return 0;
}

/*
 * The one buffer writes are built in: the loop is single-threaded and lws
 * copies what the socket does not take.  It grows for a big event and goes
 * back to its usual size afterwards.
 */
static uint8_t *
write_buffer(size_t size)
{
	static uint8_t *buf = NULL;
	static size_t cap = 0;

	if (size > cap || (cap > 4 * (LWS_PRE + RT_SSE_WRITE_CHUNK) && size < cap / 4))
	{
		uint8_t    *grown = realloc(buf, size);

		if (grown == NULL)
			return NULL;
		buf = grown;
		cap = size;
	}
	return buf;
}

/* LWS_CALLBACK_HTTP_WRITEABLE: as much of the queue as one write takes. */
int
rt_sse_writable(struct lws *wsi, void *user)
{
	SseClient  *c = user;
	uint8_t    *buf,
			   *start,
			   *p;
	size_t		room = RT_SSE_WRITE_CHUNK;
	int			n;

	if (c == NULL || c->closing)
		return -1;

	/* The first event decides the buffer: a big one gets its own. */
	if (c->queue_len > 0)
		room = Max(room, c->queue[c->queue_head]->json_len + 64);
	buf = write_buffer(LWS_PRE + room);
	if (buf == NULL)
		return -1;
	start = p = buf + LWS_PRE;

	if (!c->preamble_sent)
	{
		p += snprintf((char *) p, room, "retry: %d\n\n", RT_SSE_RETRY_MS);
		c->preamble_sent = true;
	}
	while (c->queue_len > 0)
	{
		RtStreamEvent *ev = c->queue[c->queue_head];
		size_t		need = ev->json_len + 48;

		if ((size_t) (p - start) + need > room)
			break;
		p += snprintf((char *) p, room - (p - start), "id: " INT64_FORMAT "\ndata: ",
					  ev->id);
		memcpy(p, ev->json, ev->json_len);
		p += ev->json_len;
		*p++ = '\n';
		*p++ = '\n';
		c->queue_head = (c->queue_head + 1) % c->queue_cap;
		c->queue_len--;
		c->queued_bytes -= ev->json_len;
		rt_stream_event_release(ev);
	}
	if (c->heartbeat_due && (size_t) (p - start) + 16 <= room)
	{
		memcpy(p, ": keep-alive\n\n", 14);
		p += 14;
		c->heartbeat_due = false;
	}

	n = (int) (p - start);
	if (n > 0 && lws_write(wsi, start, (size_t) n, LWS_WRITE_HTTP) != n)
		return -1;
	if (c->phase == SSE_CATCHING_UP && has_room(c))
		sse_catch_up(c);
	if (c->queue_len > 0 || c->heartbeat_due)
		lws_callback_on_writable(wsi);
	return 0;
}

/* LWS_CALLBACK_CLOSED_HTTP */
void
rt_sse_closed(void *user)
{
	SseClient  *c = user;
	SseClient **pp;

	if (c == NULL)
		return;
	for (pp = &clients; *pp != NULL; pp = &(*pp)->next)
	{
		if (*pp == c)
		{
			*pp = c->next;
			nclients--;
			break;
		}
	}
	client_free(c);
}

int
rt_sse_clients(void)
{
	return nclients;
}

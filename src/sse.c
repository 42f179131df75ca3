/*-------------------------------------------------------------------------
 *
 * sse.c
 *		GET /api/events/stream: Server-Sent Events.
 *
 * One subscription per stream, given by the query string's filter; with a
 * cursor (Last-Event-ID, else after) it first catches up, then goes live.
 * Every event is written once, in ascending id, after the client's cursor.
 *
 * The subscription, its catching up and its queue are subscription.c's;
 * this is the framing: a retry: hint first, an id: and a data: line per
 * event, as many events per write as fit, a keep-alive comment every
 * rtevents.heartbeat, and "event: gap" when cleanup has deleted events the
 * cursor still needed.  A client too slow for its queue's budget is closed
 * and resumes with Last-Event-ID.
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

typedef struct SseClient
{
	RtClient	base;			/* its one subscription and its queue */
	dlist_node	node;			/* in sse_clients */
	bool		preamble_sent;	/* retry: hint */
	bool		heartbeat_due;
} SseClient;

static dlist_head sse_clients = DLIST_STATIC_INIT(sse_clients);
static int	nclients = 0;
static lws_sorted_usec_list_t heartbeat_timer;
static bool heartbeat_scheduled = false;

/*
 * Last-Event-ID, when present, wins over after (PROTOCOL.md).  lws keeps a
 * header it does not know as sent, NUL bytes included, and its copy stops
 * at the first: a value with one is refused, not read short.
 */
static bool
last_event_id(struct lws *wsi, RtRequest *req, const char **code,
			  const char **message)
{
	char		buf[32];
	int			len;

	if (lws_hdr_custom_length(wsi, "last-event-id:", 14) <= 0)
		return true;
	len = lws_hdr_custom_copy(wsi, buf, sizeof(buf), "last-event-id:", 14);
	if (len < 0 || strlen(buf) != (size_t) len ||
		!rt_request_parse_id(buf, &req->after))
	{
		*code = "bad_cursor";
		*message = "Last-Event-ID must be an event id";
		return false;
	}
	req->has_after = true;
	return true;
}

/* A resume cursor reaching back past cleanup: an "event: gap" first. */
static void
sse_gap(RtClient *c, RtSub *s, int64 after, int64 oldest)
{
	char		msg[128];

	snprintf(msg, sizeof(msg),
			 "event: gap\ndata: {\"after\":" INT64_FORMAT ",\"oldest\":" INT64_FORMAT "}\n\n",
			 after, oldest);
	(void) rt_client_queue_message(c, msg);
}

static const RtClientOps sse_ops = {NULL, sse_gap};

static void
heartbeat(lws_sorted_usec_list_t *sul)
{
	dlist_iter	iter;

	heartbeat_scheduled = false;
	dlist_foreach(iter, &sse_clients)
	{
		SseClient  *c = dlist_container(SseClient, node, iter.cur);

		c->heartbeat_due = true;
		lws_callback_on_writable(c->base.wsi);
	}
	if (!dlist_is_empty(&sse_clients))
	{
		rt_server_schedule(&heartbeat_timer, heartbeat,
						   (lws_usec_t) rt_heartbeat * LWS_US_PER_SEC);
		heartbeat_scheduled = true;
	}
}

/*
 * LWS_CALLBACK_HTTP for GET /api/events/stream.  Returns 0 once streaming,
 * an HTTP status to refuse
 * with (400, 401, 403, 503), *code and *message set, -1 to drop the connection.
 */
int
rt_sse_open(struct lws *wsi, void **user, const char **code,
			const char **message)
{
	uint8_t		buf[LWS_PRE + 512];
	uint8_t    *start = buf + LWS_PRE,
			   *p = start,
			   *end = buf + sizeof(buf);
	RtRequest	req;
	RtAuthClaims claims;
	unsigned int status;
	int64		expires;
	SseClient  *c;

	memset(&req, 0, sizeof(req));
	if (!rt_request_parse(wsi, &req, false, code, message) ||
		!last_event_id(wsi, &req, code, message))
	{
		rt_request_free(&req);
		return HTTP_STATUS_BAD_REQUEST;
	}
	/* The stream's one filter is checked once: it cannot change. */
	if ((status = rt_http_authorize(wsi, &req, false, &claims, code, message)) != 0)
	{
		rt_request_free(&req);
		return (int) status;
	}
	expires = claims.exp;		/* 0 without a token */
	rt_auth_claims_free(&claims);
	if ((c = calloc(1, sizeof(SseClient))) == NULL)
	{
		rt_request_free(&req);
		return -1;
	}
	if (!rt_client_init(&c->base, wsi, &sse_ops, RT_CONN_SSE))
	{
		free(c);
		rt_request_free(&req);
		*code = "server_full";
		*message = "the server holds as many clients as rtevents.max_connections allows; retry later";
		return HTTP_STATUS_SERVICE_UNAVAILABLE;
	}
	c->base.expires = expires;
	if (lws_add_http_common_headers(wsi, HTTP_STATUS_OK, "text/event-stream",
									LWS_ILLEGAL_HTTP_CONTENT_LEN, &p, end) ||
		lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL,
									 (const unsigned char *) "no-store", 8,
									 &p, end) ||
		rt_http_add_cors(wsi, &p, end) ||
		lws_finalize_write_http_header(wsi, start, &p, end))
	{
		rt_client_release(&c->base);
		free(c);
		rt_request_free(&req);
		return -1;
	}
	lws_http_mark_sse(wsi);

	dlist_push_tail(&sse_clients, &c->node);
	nclients++;
	*user = c;
	if (!heartbeat_scheduled)
	{
		rt_server_schedule(&heartbeat_timer, heartbeat,
						   (lws_usec_t) rt_heartbeat * LWS_US_PER_SEC);
		heartbeat_scheduled = true;
	}
	if (rt_sub_open(&c->base, "default", &req, req.has_after, req.after) == NULL)
		rt_client_give_up(&c->base);
	lws_callback_on_writable(wsi);
	return 0;
}

/* LWS_CALLBACK_HTTP_WRITEABLE: as much of the queue as one write takes. */
int
rt_sse_writable(struct lws *wsi, void *user)
{
	SseClient  *c = user;
	const RtQueued *q;
	uint8_t    *buf,
			   *start,
			   *p;
	size_t		room = RT_SSE_WRITE_CHUNK;
	int			n;

	if (c == NULL || c->base.closing)
		return -1;

	/* The first event decides the buffer: a big one gets its own. */
	if ((q = rt_client_head(&c->base)) != NULL)
		room = Max(room, q->ev->json_len + 64);
	buf = rt_client_write_buffer(LWS_PRE + room);
	if (buf == NULL)
		return -1;
	start = p = buf + LWS_PRE;

	if (!c->preamble_sent)
	{
		p += snprintf((char *) p, room, "retry: %d\n\n", RT_SSE_RETRY_MS);
		c->preamble_sent = true;
	}
	while ((q = rt_client_head(&c->base)) != NULL)
	{
		const RtStreamEvent *ev = q->ev;

		if ((size_t) (p - start) + ev->json_len + 48 > room)
			break;
		if (!ev->message)
		{
			p += snprintf((char *) p, room - (p - start),
						  "id: " INT64_FORMAT "\ndata: ", ev->id);
			memcpy(p, ev->json, ev->json_len);
			p += ev->json_len;
			*p++ = '\n';
			*p++ = '\n';
		}
		else
		{
			/* already framed (sse_gap) */
			memcpy(p, ev->json, ev->json_len);
			p += ev->json_len;
		}
		rt_client_pop(&c->base);
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
	rt_client_wrote(&c->base);
	if (c->heartbeat_due)
		lws_callback_on_writable(wsi);
	return 0;
}

/* Main loop, after a reload: the next keep-alive at the new interval. */
void
rt_sse_heartbeat_changed(void)
{
	if (heartbeat_scheduled)
		rt_server_schedule(&heartbeat_timer, heartbeat,
						   (lws_usec_t) rt_heartbeat * LWS_US_PER_SEC);
}

/* LWS_CALLBACK_CLOSED_HTTP */
void
rt_sse_closed(void *user)
{
	SseClient  *c = user;

	if (c == NULL)
		return;
	dlist_delete(&c->node);
	nclients--;
	rt_client_release(&c->base);
	free(c);
}

int
rt_sse_clients(void)
{
	return nclients;
}

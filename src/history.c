/*-------------------------------------------------------------------------
 *
 * history.c
 *		GET /api/events: event history as JSON.
 *
 * {"events":[...],"next":<id or null>}, ascending id, with PROTOCOL.md's
 * filters and cursors (request.c).  The query runs on the feed's connection
 * like a replay page (replay.c) and only reaches as far as the live stream
 * has decided: an id that might still be overtaken by a lower one never
 * appears, so the last id of a page is a safe cursor for the next page and
 * for resuming a stream.  "next" is that id when the page is full (or was
 * cut at RT_HISTORY_MAX_BYTES), null when there is nothing more for now.
 *
 * Runs inside libwebsockets callbacks: malloc, no ereport(ERROR).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdlib.h>

#include <libwebsockets.h>

#include "rtevents.h"

/*
 * A page stops early rather than grow past this many bytes of JSON (big
 * events); "next" then says where the rest begins.
 */
#define RT_HISTORY_MAX_BYTES	(16 * 1024 * 1024)

typedef struct HistoryRequest
{
	struct lws *wsi;
	RtRequest	req;
	RtReplay   *replay;
	char	   *body;			/* the JSON reply, as it is built */
	size_t		len;
	size_t		cap;
	int			rows;			/* rows in the reply */
	int64		last_id;		/* the last of them */
	bool		cut;			/* rows left out for size: a next page */
	bool		done;
	bool		failed;
	int			conn;			/* its rtevents_connections slot */
} HistoryRequest;

static bool
append(HistoryRequest *h, const char *s, size_t n)
{
	if (h->len + n + 1 > h->cap)
	{
		size_t		cap = Max(h->cap * 2, h->len + n + 1);
		char	   *body = realloc(h->body, cap);

		if (body == NULL)
			return false;
		h->body = body;
		h->cap = cap;
	}
	memcpy(h->body + h->len, s, n);
	h->len += n;
	h->body[h->len] = '\0';
	return true;
}

static void
history_row(void *owner, RtStreamEvent *ev)
{
	HistoryRequest *h = owner;

	if (h->cut || (h->rows > 0 && h->len + ev->json_len > RT_HISTORY_MAX_BYTES))
		h->cut = true;
	else if ((h->rows > 0 && !append(h, ",", 1)) ||
			 !append(h, ev->json, ev->json_len))
		h->failed = true;
	else
	{
		h->rows++;
		h->last_id = ev->id;
	}
	rt_stream_event_release(ev);
}

static void
history_done(void *owner, bool ok, bool more)
{
	HistoryRequest *h = owner;
	char		tail[48];

	h->replay = NULL;
	if (h->rows == h->req.limit || h->cut)
		snprintf(tail, sizeof(tail), "],\"next\":" INT64_FORMAT "}", h->last_id);
	else
		snprintf(tail, sizeof(tail), "],\"next\":null}");
	if (!ok || !append(h, tail, strlen(tail)))
		h->failed = true;
	h->done = true;
	lws_callback_on_writable(h->wsi);
}

/*
 * LWS_CALLBACK_HTTP for GET /api/events.  Returns 0 when the query is under
 * way (the reply follows on writable), an HTTP status to refuse
 * with (400, 401, 403, 503), *code and *message set,
 * -1 to drop the connection.
 */
int
rt_history_open(struct lws *wsi, void **user, const char **code,
				const char **message)
{
	static const RtReplayHooks hooks = {history_row, history_done, NULL};
	HistoryRequest *h = calloc(1, sizeof(HistoryRequest));
	char		peer[64];
	RtAuthClaims claims;
	unsigned int status;

	if (h == NULL)
		return -1;
	h->wsi = wsi;
	if (!rt_request_parse(wsi, &h->req, true, code, message))
	{
		rt_request_free(&h->req);
		free(h);
		return HTTP_STATUS_BAD_REQUEST;
	}
	/* History obeys the same rule as live delivery. */
	if ((status = rt_http_authorize(wsi, &h->req, false, &claims, code, message)) != 0)
	{
		rt_request_free(&h->req);
		free(h);
		return (int) status;
	}
	rt_auth_claims_free(&claims);
	if (lws_get_peer_simple(wsi, peer, sizeof(peer)) == NULL)
		peer[0] = '\0';
	if ((h->conn = rt_conn_acquire(RT_CONN_HISTORY, peer)) < 0)
	{
		rt_request_free(&h->req);
		free(h);
		*code = "server_full";
		*message = "the server holds as many clients as rtevents.max_connections allows; retry later";
		return HTTP_STATUS_SERVICE_UNAVAILABLE;
	}
	if (!append(h, "{\"events\":[", 11) ||
		(h->replay = rt_replay_query(&h->req, h->req.has_after ? h->req.after : -1,
									 rt_stream_last_id(), h->req.limit,
									 h->req.offset, h, &hooks)) == NULL)
	{
		rt_conn_release(h->conn);
		free(h->body);
		rt_request_free(&h->req);
		free(h);
		return -1;
	}
	*user = h;
	return 0;
}

/*
 * LWS_CALLBACK_HTTP_WRITEABLE: the reply, once the query is done.  Returns
 * 1 when it is sent (the caller ends the request and the transaction), 0
 * while the query runs, -1 to drop the connection.
 */
int
rt_history_writable(struct lws *wsi, void *user)
{
	HistoryRequest *h = user;
	uint8_t		buf[LWS_PRE + 512];
	uint8_t    *start = buf + LWS_PRE,
			   *p = start,
			   *end = buf + sizeof(buf);
	static const char failed[] =
		"{\"error\":\"unavailable\",\"message\":\"the history query failed; retry\"}";
	const char *body = h->failed ? failed : h->body;
	size_t		len = h->failed ? strlen(failed) : h->len;
	uint8_t    *out;

	if (!h->done)
		return 0;
	if (lws_add_http_common_headers(wsi, h->failed ? HTTP_STATUS_SERVICE_UNAVAILABLE :
									HTTP_STATUS_OK, "application/json", len, &p, end) ||
		lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL,
									 (const unsigned char *) "no-store", 8,
									 &p, end) ||
		rt_http_add_cors(wsi, &p, end) ||
		lws_finalize_write_http_header(wsi, start, &p, end))
		return -1;

	/* lws_write wants LWS_PRE bytes of room before what it sends. */
	out = malloc(LWS_PRE + len);
	if (out == NULL)
		return -1;
	memcpy(out + LWS_PRE, body, len);
	if (lws_write(wsi, out + LWS_PRE, len, LWS_WRITE_HTTP_FINAL) != (int) len)
	{
		free(out);
		return -1;
	}
	free(out);
	return 1;
}

/* LWS_CALLBACK_CLOSED_HTTP, or the request is over. */
void
rt_history_closed(void *user)
{
	HistoryRequest *h = user;

	rt_replay_cancel(h->replay);
	rt_conn_release(h->conn);
	rt_request_free(&h->req);
	free(h->body);
	free(h);
}

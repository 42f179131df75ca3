/*-------------------------------------------------------------------------
 *
 * http.c
 *		The server worker's plain HTTP endpoints: the "http" protocol of the
 *		listening vhosts.
 *
 * A request is routed by path, then by method, through the table below.  A
 * path nobody serves is 404; a path served for other methods is 405 with an
 * Allow header.  HEAD is answered wherever GET is, without the body, as
 * HTTP requires of every server.  Error bodies are the contract's JSON,
 * {"error":"<code>","message":"<text>"}, built from constant strings only,
 * so that nothing a client sends is ever echoed back.
 *
 * This runs inside the event loop: no ereport(ERROR), no palloc.  Every size
 * is bounded: lws caps the request line and headers (the context's
 * max_http_header_data), bodies are never read, and a reply is composed in
 * a fixed buffer.
 *
 * A WebSocket upgrade is let through for /ws only, once its query string
 * has passed the same checks as any other request's; the connection then
 * belongs to the "rtevents" protocol (ws.c).  A request line lws's parser
 * gives up on, and CONNECT, come back here as raw connections and get the
 * contract's 400 (not_http()); what else lws refuses on its own, before any
 * callback, is listed in the README (Security).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>

#include <libwebsockets.h>

#include "rtevents.h"

#define REPLY_BODY_MAX			8192
#define REPLY_HEADERS_MAX		1024

typedef struct HttpReply
{
	unsigned int status;		/* 0: the route answers later (kind) */
	RtHttpKind	kind;
	const char *content_type;
	char		allow[64];		/* for 405: the methods the path takes */
	char		body[REPLY_BODY_MAX];
	size_t		body_len;
	const RtAsset *asset;		/* instead of body: a file served as it is */
	bool		preflight;		/* an OPTIONS request of CORS */
	bool		gzip;			/* the asset's gzipped bytes */
} HttpReply;

typedef void (*RouteHandler) (struct lws *wsi, HttpReply *reply);

typedef struct Route
{
	const char *path;
	int			method;			/* LWSHUMETH_* */
	RouteHandler handler;		/* NULL: answered later, by kind */
	RtHttpKind	kind;
} Route;

static void healthz(struct lws *wsi, HttpReply *reply);
static void metrics(struct lws *wsi, HttpReply *reply);
static void ws_without_upgrade(struct lws *wsi, HttpReply *reply);

/*
 * Every endpoint.  A path may appear once per method; the Allow header of a
 * 405 lists the methods of the path's rows, in this order.
 */
static const Route routes[] = {
	{"/healthz", LWSHUMETH_GET, healthz},
	{"/metrics", LWSHUMETH_GET, metrics},
	{"/ws", LWSHUMETH_GET, ws_without_upgrade},
	{"/api/events/stream", LWSHUMETH_GET, NULL, RT_HTTP_SSE},
	{"/api/events", LWSHUMETH_GET, NULL, RT_HTTP_HISTORY},
	{"/api/events", LWSHUMETH_DELETE, NULL, RT_HTTP_ADMIN},
};

static const char *const method_names[] = {
	[LWSHUMETH_GET] = "GET",
	[LWSHUMETH_POST] = "POST",
	[LWSHUMETH_OPTIONS] = "OPTIONS",
	[LWSHUMETH_PUT] = "PUT",
	[LWSHUMETH_PATCH] = "PATCH",
	[LWSHUMETH_DELETE] = "DELETE",
	[LWSHUMETH_CONNECT] = "CONNECT",
	[LWSHUMETH_HEAD] = "HEAD",
};

static void
reply_text(HttpReply *reply, unsigned int status, const char *text)
{
	reply->status = status;
	reply->content_type = "text/plain; charset=utf-8";
	reply->body_len = strlcpy(reply->body, text, sizeof(reply->body));
	Assert(reply->body_len < sizeof(reply->body));
}

/* code and message are constants without quotes or backslashes. */
static void
reply_error(HttpReply *reply, unsigned int status, const char *code,
			const char *message)
{
	int			len;

	reply->status = status;
	reply->content_type = "application/json";
	len = snprintf(reply->body, sizeof(reply->body),
				   "{\"error\":\"%s\",\"message\":\"%s\"}", code, message);
	Assert(len > 0 && len < (int) sizeof(reply->body));
	reply->body_len = (size_t) len;
}

/* 200 "ok" while the LISTEN feed is up: that is when events can flow. */
static void
healthz(struct lws *wsi, HttpReply *reply)
{
	switch (rt_feed_state())
	{
		case RT_FEED_UP:
			reply_text(reply, HTTP_STATUS_OK, "ok");
			break;
		case RT_FEED_CONNECTING:
			reply_error(reply, HTTP_STATUS_SERVICE_UNAVAILABLE, "feed_down",
						"the LISTEN feed is connecting, or waiting for CREATE EXTENSION rtevents");
			break;
		case RT_FEED_DOWN:
			reply_error(reply, HTTP_STATUS_SERVICE_UNAVAILABLE, "feed_down",
						"the LISTEN feed is disconnected; the server is retrying");
			break;
	}
}

/* An upgrade comes to /ws through rt_http_confirm_upgrade; a GET, here. */
static void
ws_without_upgrade(struct lws *wsi, HttpReply *reply)
{
	reply_error(reply, HTTP_STATUS_BAD_REQUEST, "upgrade_required",
				"/ws is the WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket)");
}

/* Prometheus text format: what the worker has received and let out. */
static void
metrics(struct lws *wsi, HttpReply *reply)
{
	int			len;

	reply->status = HTTP_STATUS_OK;
	reply->content_type = "text/plain; version=0.0.4; charset=utf-8";
	len = snprintf(reply->body, sizeof(reply->body),
				   "# HELP rtevents_feed_up Whether the LISTEN feed is connected.\n"
				   "# TYPE rtevents_feed_up gauge\n"
				   "rtevents_feed_up %d\n"
				   "# HELP rtevents_notifications_total Notifications received on the LISTEN feed.\n"
				   "# TYPE rtevents_notifications_total counter\n"
				   "rtevents_notifications_total " UINT64_FORMAT "\n"
				   "# HELP rtevents_feed_reads_total Reads of new events from the table.\n"
				   "# TYPE rtevents_feed_reads_total counter\n"
				   "rtevents_feed_reads_total " UINT64_FORMAT "\n"
				   "# HELP rtevents_feed_heard_while_writing_total Times the LISTEN feed was read between writes to clients, before the end of a turn of the loop.\n"
				   "# TYPE rtevents_feed_heard_while_writing_total counter\n"
				   "rtevents_feed_heard_while_writing_total " UINT64_FORMAT "\n"
				   "# HELP rtevents_events_in_total Events let out to the live stream, in id order.\n"
				   "# TYPE rtevents_events_in_total counter\n"
				   "rtevents_events_in_total " UINT64_FORMAT "\n"
				   "# HELP rtevents_events_dropped_total Events the worker could not hold in memory.\n"
				   "# TYPE rtevents_events_dropped_total counter\n"
				   "rtevents_events_dropped_total " UINT64_FORMAT "\n"
				   "# HELP rtevents_connections Clients connected, by transport.\n"
				   "# TYPE rtevents_connections gauge\n"
				   "rtevents_connections{transport=\"sse\"} %d\n"
				   "rtevents_connections{transport=\"websocket\"} %d\n"
				   "# HELP rtevents_connection_slots_used Slots of rtevents_connections in use, of rtevents.max_connections.\n"
				   "# TYPE rtevents_connection_slots_used gauge\n"
				   "rtevents_connection_slots_used %d\n"
				   "# HELP rtevents_connection_slots Clients the server may hold (rtevents.max_connections).\n"
				   "# TYPE rtevents_connection_slots gauge\n"
				   "rtevents_connection_slots %d\n"
				   "# HELP rtevents_subscriptions Subscriptions held by connected clients.\n"
				   "# TYPE rtevents_subscriptions gauge\n"
				   "rtevents_subscriptions %d\n"
				   "# HELP rtevents_events_out_total Events written to clients (one per client an event reaches).\n"
				   "# TYPE rtevents_events_out_total counter\n"
				   "rtevents_events_out_total " UINT64_FORMAT "\n"
				   "# HELP rtevents_clients_dropped_total Clients closed for falling too far behind.\n"
				   "# TYPE rtevents_clients_dropped_total counter\n"
				   "rtevents_clients_dropped_total " UINT64_FORMAT "\n"
				   "# HELP rtevents_replay_queries_total Pages of history read for clients catching up.\n"
				   "# TYPE rtevents_replay_queries_total counter\n"
				   "rtevents_replay_queries_total " UINT64_FORMAT "\n"
				   "# HELP rtevents_replay_replica_waits_total Pages that waited for this standby to replay the primary's WAL past what the live stream had settled.\n"
				   "# TYPE rtevents_replay_replica_waits_total counter\n"
				   "rtevents_replay_replica_waits_total " UINT64_FORMAT "\n"
				   "# HELP rtevents_stream_held_seconds How long the live stream has been waiting on an open publishing transaction (0: not waiting).\n"
				   "# TYPE rtevents_stream_held_seconds gauge\n"
				   "rtevents_stream_held_seconds %.3f\n"
				   "# HELP rtevents_stream_held_seconds_total Time the live stream has spent waiting on open publishing transactions.\n"
				   "# TYPE rtevents_stream_held_seconds_total counter\n"
				   "rtevents_stream_held_seconds_total %.3f\n"
				   "# HELP rtevents_stream_holds_total Times the live stream waited on an open publishing transaction.\n"
				   "# TYPE rtevents_stream_holds_total counter\n"
				   "rtevents_stream_holds_total " UINT64_FORMAT "\n"
				   "# HELP rtevents_last_event_id The highest id the live stream has decided.\n"
				   "# TYPE rtevents_last_event_id gauge\n"
				   "rtevents_last_event_id " INT64_FORMAT "\n",
				   rt_feed_state() == RT_FEED_UP ? 1 : 0,
				   rt_feed_notifications(),
				   rt_feed_reads(),
				   rt_feed_heard_while_writing(),
				   rt_stream_delivered(),
				   rt_stream_dropped(),
				   rt_sse_clients(),
				   rt_ws_clients(),
				   rt_conn_in_use(),
				   rt_max_connections,
				   rt_subscriptions(),
				   rt_events_out(),
				   rt_clients_dropped(),
				   rt_replay_pages(),
				   rt_replay_replica_waits(),
				   rt_feed_held_now(),
				   rt_feed_held_total(),
				   rt_feed_holds(),
				   rt_stream_last_id());
	Assert(len > 0 && len < (int) sizeof(reply->body));
	reply->body_len = (size_t) len;
}

/*
 * Origins.  A browser names the page's origin on WebSocket upgrades and on
 * cross-origin requests; a page of another site must not use a visitor's
 * access to the worker (cross-site WebSocket hijacking), so only the
 * worker's own origin and rtevents.allowed_origins are served.  Clients that
 * send no Origin are not browsers, and no page is behind them.
 */
typedef enum OriginCheck
{
	ORIGIN_NONE,				/* no Origin header */
	ORIGIN_SAME,				/* the worker's own: scheme://Host */
	ORIGIN_LISTED,				/* in rtevents.allowed_origins */
	ORIGIN_REFUSED
} OriginCheck;

static bool
origin_listed(const char *origin)
{
	const char *p = rt_allowed_origins;
	size_t		len = strlen(origin);

	while (p != NULL && *p != '\0')
	{
		const char *end = strchr(p, ',');
		size_t		n = end ? (size_t) (end - p) : strlen(p);

		while (n > 0 && (*p == ' ' || *p == '\t'))
			p++, n--;
		while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
		if ((n == 1 && *p == '*') ||
			(n == len && pg_strncasecmp(p, origin, n) == 0))
			return true;
		p = end ? end + 1 : NULL;
	}
	return false;
}

static OriginCheck
check_origin(struct lws *wsi, char *origin, size_t size)
{
	char		host[256];
	char		own[300];

	if (lws_hdr_copy(wsi, origin, (int) size, WSI_TOKEN_ORIGIN) <= 0)
		return ORIGIN_NONE;
	if (lws_hdr_copy(wsi, host, sizeof(host), WSI_TOKEN_HOST) > 0)
	{
		snprintf(own, sizeof(own), "%s://%s", lws_is_ssl(wsi) ? "https" : "http", host);
		if (pg_strcasecmp(own, origin) == 0)
			return ORIGIN_SAME;
	}
	return origin_listed(origin) ? ORIGIN_LISTED : ORIGIN_REFUSED;
}

bool
rt_http_origin_allowed(struct lws *wsi)
{
	char		origin[256];

	return check_origin(wsi, origin, sizeof(origin)) != ORIGIN_REFUSED;
}

/*
 * CORS for a listed origin: the browser lets its page read the response.
 * Returns nonzero when the headers did not fit.
 */
int
rt_http_add_cors(struct lws *wsi, unsigned char **p, unsigned char *end)
{
	char		origin[256];

	if (check_origin(wsi, origin, sizeof(origin)) != ORIGIN_LISTED)
		return 0;
	return lws_add_http_header_by_name(wsi, (const unsigned char *) "access-control-allow-origin:",
									   (const unsigned char *) origin,
									   (int) strlen(origin), p, end) ||
		lws_add_http_header_by_name(wsi, (const unsigned char *) "vary:",
									(const unsigned char *) "Origin", 6, p, end);
}

/*
 * Who is asking: the request's token, from "Authorization: Bearer", else
 * from the token query parameter (browsers cannot set headers on WebSocket
 * or EventSource; the worker logs no URLs), checked against
 * rtevents.jwt_secret, and the request's filter against the token's claims.
 * With rtevents.auth = none a request without a token may see anything;
 * deleting (admin) always needs an admin token.  Returns 0 with *claims to
 * free, or the HTTP status to refuse with, *code and *message set.
 */
unsigned int
rt_http_authorize(struct lws *wsi, const RtRequest *req, bool admin,
				  RtAuthClaims *claims, const char **code, const char **message)
{
	char		header[RT_AUTH_TOKEN_MAX + 16];
	char		arg[RT_AUTH_TOKEN_MAX + 16];
	const char *token = NULL;

	memset(claims, 0, sizeof(*claims));
	if (lws_hdr_copy(wsi, header, sizeof(header), WSI_TOKEN_HTTP_AUTHORIZATION) > 0 &&
		pg_strncasecmp(header, "Bearer ", 7) == 0)
		token = header + 7;
	else
		token = lws_get_urlarg_by_name(wsi, "token=", arg, sizeof(arg));

	if (token == NULL || *token == '\0')
	{
		if (rt_auth_mode == RT_AUTH_NONE && !admin)
			return 0;
		*code = "unauthorized";
		*message = admin ? "deleting events needs an admin token (Authorization: Bearer)" :
			"a token is required: Authorization: Bearer, or the token parameter";
		return HTTP_STATUS_UNAUTHORIZED;
	}
	if (!rt_auth_verify(token, strlen(token), rt_jwt_secret, (int64) time(NULL),
						claims, code, message))
		return strcmp(*code, "unavailable") == 0 ? HTTP_STATUS_SERVICE_UNAVAILABLE :
			HTTP_STATUS_UNAUTHORIZED;
	/* Deleting reaches every tenant: a token restricted to some cannot. */
	if (admin && claims->admin &&
		(claims->allowed[0] || claims->allowed[1] || claims->allowed[2] || claims->allowed[3]))
	{
		rt_auth_claims_free(claims);
		*code = "forbidden";
		*message = "deleting events needs an admin token without rt restrictions";
		return HTTP_STATUS_FORBIDDEN;
	}
	if (admin && !claims->admin)
	{
		rt_auth_claims_free(claims);
		*code = "forbidden";
		*message = "deleting events needs a token with \"admin\": true";
		return HTTP_STATUS_FORBIDDEN;
	}
	if (req != NULL && !rt_auth_allows(claims, req, message))
	{
		rt_auth_claims_free(claims);
		*code = "forbidden";
		return HTTP_STATUS_FORBIDDEN;
	}
	return 0;
}

/*
 * A NUL byte in a header value: HTTP says to refuse the request or read
 * the byte as a space (RFC 9110, 5.5).  lws does neither: it keeps the
 * byte, and whoever reads the header sees its value cut short there.  So
 * a request with one inside the value of any header lws parses is refused.
 * (One at the very end cuts nothing, and lws's copy cannot tell it from
 * the end.  The one header read here that lws does not know, Last-Event-ID,
 * is checked where it is read, sse.c.)
 */
static bool
header_has_nul(struct lws *wsi)
{
	char		value[RT_HTTP_HEADER_MAX];

	for (int token = 0; token < WSI_TOKEN_COUNT; token++)
	{
		int			n;

		for (int frag = 0;
			 (n = lws_hdr_copy_fragment(wsi, value, sizeof(value),
										(enum lws_token_indexes) token, frag)) >= 0;
			 frag++)
		{
			if (memchr(value, '\0', n) != NULL)
				return true;
		}
	}
	return false;
}

/* Does the client take gzip?  A plain search: "gzip;q=0" is not worth more. */
static bool
accepts_gzip(struct lws *wsi)
{
	char		buf[256];

	if (lws_hdr_copy(wsi, buf, sizeof(buf), WSI_TOKEN_HTTP_ACCEPT_ENCODING) <= 0)
		return false;
	return strstr(buf, "gzip") != NULL;
}

/*
 * The browser client and the live page (assets_data.c, from tools/embed):
 * 200 with the file, or 304 when the client's copy has the same ETag.
 */
static bool
asset(struct lws *wsi, const char *path, size_t len, HttpReply *reply)
{
	char		etag[64];

	for (const RtAsset *a = rt_assets; a->path != NULL; a++)
	{
		if (strlen(a->path) != len || memcmp(a->path, path, len) != 0)
			continue;
		reply->asset = a;
		reply->content_type = a->content_type;
		if (lws_hdr_copy(wsi, etag, sizeof(etag), WSI_TOKEN_HTTP_IF_NONE_MATCH) > 0 &&
			strcmp(etag, a->etag) == 0)
		{
			reply->status = HTTP_STATUS_NOT_MODIFIED;
			return true;
		}
		reply->status = HTTP_STATUS_OK;
		reply->gzip = accepts_gzip(wsi);
		return true;
	}
	return false;
}

static bool
path_is(const Route *r, const char *path, size_t len)
{
	return strlen(r->path) == len && memcmp(r->path, path, len) == 0;
}

/* Fill reply for a request for path (len bytes, not a C string's length). */
static void
route(struct lws *wsi, const char *path, size_t len, int method,
	  HttpReply *reply)
{
	/* HEAD is GET without the body */
	int			as_method = (method == LWSHUMETH_HEAD) ? LWSHUMETH_GET : method;
	size_t		allow_len = 0;

	for (size_t i = 0; i < lengthof(routes); i++)
	{
		/* routes answered later (a query, a stream) take GET, not HEAD */
		if (routes[i].method == as_method && path_is(&routes[i], path, len) &&
			(method != LWSHUMETH_HEAD || routes[i].handler != NULL))
		{
			if (routes[i].handler)
				routes[i].handler(wsi, reply);
			reply->kind = routes[i].kind;
			return;
		}
	}

	if (as_method == LWSHUMETH_GET && asset(wsi, path, len, reply))
		return;

	/* A CORS preflight, for a path the API serves. */
	for (size_t i = 0; method == LWSHUMETH_OPTIONS && i < lengthof(routes); i++)
	{
		if (path_is(&routes[i], path, len) && strncmp(path, "/api/", 5) == 0)
		{
			reply->status = HTTP_STATUS_NO_CONTENT;
			reply->preflight = true;
			reply->content_type = "text/plain";
			return;
		}
	}

	/* No handler: 405 if the path is served for other methods, else 404. */
	for (size_t i = 0; i < lengthof(routes); i++)
	{
		int			written;

		if (!path_is(&routes[i], path, len))
			continue;
		written = snprintf(reply->allow + allow_len,
						   sizeof(reply->allow) - allow_len,
						   "%s%s%s", allow_len ? ", " : "",
						   method_names[routes[i].method],
						   routes[i].method == LWSHUMETH_GET && routes[i].handler ?
						   ", HEAD" : "");
		if (written < 0 || (size_t) written >= sizeof(reply->allow) - allow_len)
		{
			Assert(false);		/* make allow[] bigger */
			reply->allow[allow_len] = '\0';
			break;
		}
		allow_len += (size_t) written;
	}

	for (const RtAsset *a = rt_assets; allow_len == 0 && a->path != NULL; a++)
		if (strlen(a->path) == len && memcmp(a->path, path, len) == 0)
			allow_len = strlcpy(reply->allow, "GET, HEAD", sizeof(reply->allow));

	if (allow_len == 0)
		reply_error(reply, HTTP_STATUS_NOT_FOUND, "not_found",
					"no such endpoint");
	else
		reply_error(reply, HTTP_STATUS_METHOD_NOT_ALLOWED, "method_not_allowed",
					"this endpoint does not take that method");
}

/*
 * Headers and body in one write, as lws_return_http_status() does on
 * HTTP/1 (the only HTTP this server speaks: no TLS, so no ALPN to h2).  What
 * the socket does not take now, lws keeps and sends when it can.
 */
static int
send_reply(struct lws *wsi, const HttpReply *reply, bool head_only,
		   bool keep_alive)
{
	uint8_t		stack_buf[LWS_PRE + REPLY_HEADERS_MAX + REPLY_BODY_MAX];
	uint8_t    *buf = stack_buf;
	const void *body = reply->body;
	size_t		body_len = reply->body_len;
	size_t		size = sizeof(stack_buf);
	uint8_t    *start;
	uint8_t    *p;
	uint8_t    *end;
	int			n;
	int			rc = -1;

	if (reply->asset != NULL)
	{
		/* A file: revalidated each time (no-cache), by its ETag. */
		body = reply->gzip ? reply->asset->gz : reply->asset->data;
		body_len = reply->status == HTTP_STATUS_NOT_MODIFIED ? 0 :
			reply->gzip ? reply->asset->gz_len : reply->asset->len;
		size = LWS_PRE + REPLY_HEADERS_MAX + body_len;
		if (size > sizeof(stack_buf) && (buf = malloc(size)) == NULL)
			return -1;
	}
	start = p = buf + LWS_PRE;
	end = buf + size;

	if (lws_add_http_common_headers(wsi, reply->status, reply->content_type,
									body_len, &p, end) ||
		lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL,
									 (const unsigned char *) (reply->asset ? "no-cache" : "no-store"),
									 8, &p, end))
		goto done;
	if (reply->asset != NULL &&
		(lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_ETAG,
									  (const unsigned char *) reply->asset->etag,
									  (int) strlen(reply->asset->etag), &p, end) ||
		 lws_add_http_header_by_name(wsi, (const unsigned char *) "vary:",
									 (const unsigned char *) "Accept-Encoding", 15,
									 &p, end) ||
		 lws_add_http_header_by_name(wsi, (const unsigned char *) "x-content-type-options:",
									 (const unsigned char *) "nosniff", 7, &p, end) ||
		 (reply->gzip && reply->status == HTTP_STATUS_OK &&
		  lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_ENCODING,
									   (const unsigned char *) "gzip", 4, &p, end))))
		goto done;
	if (reply->asset == NULL && rt_http_add_cors(wsi, &p, end))
		goto done;
	if (reply->preflight &&
		(lws_add_http_header_by_name(wsi, (const unsigned char *) "access-control-allow-methods:",
									 (const unsigned char *) "GET, DELETE", 11, &p, end) ||
		 lws_add_http_header_by_name(wsi, (const unsigned char *) "access-control-allow-headers:",
									 (const unsigned char *) "Authorization, Last-Event-ID", 28, &p, end) ||
		 lws_add_http_header_by_name(wsi, (const unsigned char *) "access-control-max-age:",
									 (const unsigned char *) "600", 3, &p, end)))
		goto done;
	if (reply->allow[0] != '\0' &&
		lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_ALLOW,
									 (const unsigned char *) reply->allow,
									 (int) strlen(reply->allow), &p, end))
		goto done;
	if (lws_finalize_http_header(wsi, &p, end))
		goto done;

	if (!head_only)
	{
		if ((size_t) (end - p) < body_len)
			goto done;
		memcpy(p, body, body_len);
		p += body_len;
	}

	/* lws keeps what the socket does not take now, and sends it later */
	n = (int) (p - start);
	if (lws_write(wsi, start, (size_t) n, LWS_WRITE_HTTP_FINAL) != n)
		goto done;

	/* nonzero: the connection is not kept alive */
	if (keep_alive)
		rc = lws_http_transaction_completed(wsi) ? -1 : 0;
done:
	if (buf != stack_buf)
		free(buf);
	return rc;
}

/*
 * lws binds an upgrade to the first protocol of this vhost that the
 * Sec-WebSocket-Protocol list names (lib/roles/ws/server-ws.c,
 * lws_process_ws_upgrade()), and "http" is one of them: such a connection
 * would be upgraded, then served by nobody and counted nowhere, outside
 * rtevents.max_connections.  A list naming none of them, or longer than
 * lws's 127-byte buffer, or with a name of 64 bytes or more before the one
 * it picks, is dropped by lws without an answer.  So a list, when there is
 * one, must name "rtevents" first of this vhost's protocols, as lws reads
 * it; no list gets the default, "rtevents".
 */
static bool
subprotocol_is_ours(struct lws *wsi)
{
	char		list[128];
	struct lws_tokenize ts;
	lws_tokenize_elem e;
	int			n;

	if (lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL) <= 0)
		return true;
	n = lws_hdr_copy(wsi, list, sizeof(list) - 1, WSI_TOKEN_PROTOCOL);
	if (n <= 0)
		return false;
	lws_tokenize_init(&ts, list, LWS_TOKENIZE_F_COMMA_SEP_LIST |
					  LWS_TOKENIZE_F_MINUS_NONTERM |
					  LWS_TOKENIZE_F_DOT_NONTERM |
					  LWS_TOKENIZE_F_RFC7230_DELIMS);
	ts.len = (size_t) n;
	do
	{
		e = lws_tokenize(&ts);
		if (e == LWS_TOKZE_DELIMITER)
			continue;
		if (e != LWS_TOKZE_TOKEN || ts.token_len >= 64)
			return false;
		if (ts.token_len == strlen(rt_ws_protocol.name) &&
			memcmp(ts.token, rt_ws_protocol.name, ts.token_len) == 0)
			return true;
		if (ts.token_len == strlen(rt_http_protocol.name) &&
			memcmp(ts.token, rt_http_protocol.name, ts.token_len) == 0)
			return false;
	} while (e > 0);
	return false;
}

/*
 * LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: a WebSocket upgrade of /ws with a good
 * query string goes ahead (0); anything else is answered as a plain request
 * would be, and the connection closed (nonzero), since the client was about
 * to change protocols.
 */
int
rt_http_confirm_upgrade(struct lws *wsi, const char *upgrade)
{
	HttpReply	reply;
	char		path[64];
	int			len = lws_hdr_copy(wsi, path, sizeof(path), WSI_TOKEN_GET_URI);

	memset(&reply, 0, sizeof(reply));
	if (header_has_nul(wsi))
		reply_error(&reply, HTTP_STATUS_BAD_REQUEST, "bad_request",
					"a header holds a NUL byte");
	else if (strcmp(upgrade, "websocket") != 0)
		reply_error(&reply, HTTP_STATUS_BAD_REQUEST, "bad_request",
					"only WebSocket upgrades are served");
	else if (len <= 0 || strcmp(path, "/ws") != 0)
		reply_error(&reply, HTTP_STATUS_NOT_FOUND, "not_found",
					"WebSocket is served on /ws");
	else if (!subprotocol_is_ours(wsi))
		reply_error(&reply, HTTP_STATUS_BAD_REQUEST, "bad_request",
					"the only WebSocket subprotocol served is rtevents");
	else if (!rt_http_origin_allowed(wsi))
		reply_error(&reply, HTTP_STATUS_FORBIDDEN, "origin_not_allowed",
					"pages of this origin may not use this server (rtevents.allowed_origins)");
	else if (!rt_stream_started())
		reply_error(&reply, HTTP_STATUS_SERVICE_UNAVAILABLE, "starting",
					"the server is not serving events yet; retry shortly");
	else if (rt_conn_in_use() >= rt_max_connections)
		reply_error(&reply, HTTP_STATUS_SERVICE_UNAVAILABLE, "server_full",
					"the server holds as many clients as rtevents.max_connections allows; retry later");
	else
	{
		RtRequest	req;
		const char *code;
		const char *message;

		memset(&req, 0, sizeof(req));
		if (!rt_request_parse(wsi, &req, false, &code, &message))
			reply_error(&reply, HTTP_STATUS_BAD_REQUEST, code, message);
		else
		{
			RtAuthClaims claims;
			/* the query string's filter, if it names one, is checked now */
			unsigned int status = rt_http_authorize(wsi,
													rt_request_has_filter(&req) || req.has_after ? &req : NULL,
													false, &claims, &code, &message);

			rt_auth_claims_free(&claims);
			if (status == 0)
			{
				rt_request_free(&req);
				return 0;
			}
			reply_error(&reply, status, code, message);
		}
		rt_request_free(&req);
	}
	(void) send_reply(wsi, &reply, false, false);
	return 1;
}

/*
 * The answer to a request lws could not parse has gone out: end the
 * connection.  lws closes a raw socket at once, and a close with unread
 * input sends a reset, which may cost the client the answer; so, in clear,
 * the worker stops writing (the client sees the end of the answer) and
 * discards what else comes until the client closes too, as lws does for
 * HTTP (lib/core-net/close.c), within the timeout set at adoption.  Over
 * TLS the socket is not ours to half-close: it is closed.
 */
static int
not_http_answered(struct lws *wsi)
{
	if (lws_is_ssl(wsi) || shutdown(lws_get_socket_fd(wsi), SHUT_WR) != 0)
		return -1;
	return 0;
}

/*
 * What lws's HTTP parser gives up on comes here as a raw connection
 * (LWS_SERVER_OPTION_FALLBACK_TO_APPLY_LISTEN_ACCEPT_CONFIG, server_worker.c):
 * a request line that does not start with a method lws knows
 * (lib/roles/http/parsers.c, lws_parse(): "Unknown method"), and CONNECT
 * once its head is read (lib/roles/http/server/server.c,
 * lws_handshake_server()).  in holds the bytes read so far, the request
 * line first.  Such a client gets the contract's 400, and nothing it sends
 * is read any further.
 */
static int
not_http(struct lws *wsi, RtHttpSession *session, const char *in, size_t len)
{
	uint8_t		buf[LWS_PRE + 512];
	char		body[256];
	int			body_len;
	int			n;

	if (session == NULL)
		return -1;
	if (session->kind == RT_HTTP_NOT_HTTP)
		return 0;				/* answered; waiting for it to go out */
	session->kind = RT_HTTP_NOT_HTTP;

	body_len = snprintf(body, sizeof(body),
						"{\"error\":\"bad_request\",\"message\":\"%s\"}",
						len >= 8 && memcmp(in, "CONNECT ", 8) == 0 ?
						"CONNECT is not served: this server is not a proxy" :
						"the request line is not HTTP this server can read");
	n = snprintf((char *) buf + LWS_PRE, sizeof(buf) - LWS_PRE,
				 "HTTP/1.1 400 Bad Request\r\n"
				 "server: rtevents\r\n"
				 "content-type: application/json\r\n"
				 "content-length: %d\r\n"
				 "cache-control: no-store\r\n"
				 "connection: close\r\n"
				 "\r\n%s", body_len, body);
	Assert(body_len > 0 && n > 0 && n < (int) (sizeof(buf) - LWS_PRE));
	if (lws_write(wsi, buf + LWS_PRE, (size_t) n, LWS_WRITE_RAW) != n)
		return -1;
	/* what the socket did not take, lws sends before the next writable */
	if (lws_partial_buffered(wsi))
	{
		lws_callback_on_writable(wsi);
		return 0;
	}
	return not_http_answered(wsi);
}

static int
http_callback(struct lws *wsi, enum lws_callback_reasons reason,
			  void *user, void *in, size_t len)
{
	RtHttpSession *session = user;

	switch (reason)
	{
		case LWS_CALLBACK_RAW_ADOPT:
			/* lws cleared the handshake's timeout when it let go */
			lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, RT_HTTP_TIMEOUT_S);
			return 0;
		case LWS_CALLBACK_RAW_RX:
			return not_http(wsi, session, (const char *) in, len);
		case LWS_CALLBACK_RAW_WRITEABLE:
			return not_http_answered(wsi);
		case LWS_CALLBACK_RAW_CLOSE:
			return 0;

		case LWS_CALLBACK_HTTP:
			{
				HttpReply	reply;
				char	   *uri;
				int			uri_len;
				int			method;

				memset(&reply, 0, sizeof(reply));
				method = lws_http_get_uri_and_method(wsi, &uri, &uri_len);
				if (method < 0 || method >= (int) lengthof(method_names) ||
					method_names[method] == NULL)
					reply_error(&reply, HTTP_STATUS_BAD_REQUEST, "bad_request",
								"the request has no method lws can name");
				else if (header_has_nul(wsi))
					reply_error(&reply, HTTP_STATUS_BAD_REQUEST, "bad_request",
								"a header holds a NUL byte");
				else
					route(wsi, (const char *) in, len, method, &reply);

				/*
				 * Streams are served once the stream has begun: a client that
				 * comes while the feed reconnects waits for it, as the
				 * connected ones do.  History answers from the feed's
				 * connection, so it needs the feed now.
				 */
				if (reply.status == 0 &&
					(reply.kind == RT_HTTP_SSE ? !rt_stream_started() :
					 rt_feed_state() != RT_FEED_UP))
					reply_error(&reply, HTTP_STATUS_SERVICE_UNAVAILABLE, "starting",
								"the server is not serving events yet; retry shortly");
				if (reply.status == 0 && !rt_http_origin_allowed(wsi))
					reply_error(&reply, HTTP_STATUS_FORBIDDEN, "origin_not_allowed",
								"pages of this origin may not use this server (rtevents.allowed_origins)");
				if (reply.status == 0)
				{
					const char *code;
					const char *message;
					int			rc;

					rc = reply.kind == RT_HTTP_SSE ?
						rt_sse_open(wsi, &session->state, &code, &message) :
						reply.kind == RT_HTTP_ADMIN ?
						rt_admin_open(wsi, &session->state, &code, &message) :
						rt_history_open(wsi, &session->state, &code, &message);
					if (rc == 0)
						session->kind = reply.kind;
					if (rc <= 0)
						return rc;
					reply_error(&reply, rc, code, message);
				}
				return send_reply(wsi, &reply, method == LWSHUMETH_HEAD, true);
			}

		case LWS_CALLBACK_HTTP_WRITEABLE:
			if (session == NULL || session->state == NULL)
				break;
			if (session->kind == RT_HTTP_SSE)
				return rt_sse_writable(wsi, session->state);
			if (session->kind == RT_HTTP_HISTORY || session->kind == RT_HTTP_ADMIN)
			{
				bool		history = session->kind == RT_HTTP_HISTORY;
				int			rc = history ? rt_history_writable(wsi, session->state) :
					rt_admin_writable(wsi, session->state);

				if (rc <= 0)
					return rc;
				/*
				 * Sent: end the request before the transaction, which may
				 * free this session's memory for the connection's next one.
				 */
				if (history)
					rt_history_closed(session->state);
				else
					rt_admin_closed(session->state);
				session->state = NULL;
				session->kind = RT_HTTP_NONE;
				return lws_http_transaction_completed(wsi) ? -1 : 0;
			}
			break;

		case LWS_CALLBACK_CLOSED_HTTP:
			if (session == NULL || session->state == NULL)
				break;
			if (session->kind == RT_HTTP_SSE)
				rt_sse_closed(session->state);
			else if (session->kind == RT_HTTP_HISTORY)
				rt_history_closed(session->state);
			else if (session->kind == RT_HTTP_ADMIN)
				rt_admin_closed(session->state);
			session->state = NULL;
			session->kind = RT_HTTP_NONE;
			break;

		case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
			return rt_http_confirm_upgrade(wsi, in ? (const char *) in : "");

		default:
			break;
	}
	return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* Per connection: the SSE stream or history request it carries, if any. */
const struct lws_protocols rt_http_protocol = {
	"http", http_callback, sizeof(RtHttpSession), 0, 0, NULL, RT_TX_PACKET_MAX
};

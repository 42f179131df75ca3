/*-------------------------------------------------------------------------
 *
 * ws.c
 *		GET /ws: the WebSocket protocol of PROTOCOL.md.
 *
 * A connection is greeted with {"op":"welcome"}, may hold up to 64
 * subscriptions (subscribe/unsubscribe messages, or "default" from the
 * query string, each checked against the connection's token), and gets
 * their events as {"op":"events","subs":[...],"events":[...]} frames naming
 * the subscriptions they are for: everything queued for the same ones when
 * the socket can take more goes out in one frame, so a burst costs one frame
 * per client rather than one per event.  Each subscription's replay ends
 * with {"op":"subscribed","replayed":N,"after":id}; its live events follow.
 * Errors in what the client says get {"op":"error"} (naming the
 * subscription when it is about one) and the connection stays open, except
 * for a message too big to read (closed with 1009), a client over its
 * message rate or whose token expired (1008), and a client too slow for its
 * queue's budget (dropped, to resume with "after").  At shutdown every
 * connection gets 1001, "going away".
 *
 * libwebsockets frames, unmasks (lws 4.1.6 takes an unmasked frame too,
 * and says nothing of it: README, Security), answers pings, checks UTF-8,
 * closes on most frames that break RFC 6455 (dropping() names the code for
 * those it does not) and closes a client that stays silent past
 * rtevents.client_timeout after its pings (the vhost's retry policy, see
 * server_worker.c); messages arrive here in fragments of at most the
 * protocol's rx buffer and are put together in a buffer bounded by
 * RT_WS_MESSAGE_MAX, which the length a frame declares is held to at its
 * first bytes.  Subscriptions and queues are subscription.c's.
 *
 * Everything here runs inside libwebsockets callbacks: malloc, fixed
 * buffers, no ereport(ERROR).  The JSON parser of client messages pallocs,
 * so it runs in a memory context of its own, under PG_TRY: an out-of-memory
 * error there becomes an error reply, never a longjmp through lws.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdlib.h>

#include <libwebsockets.h>

#include "utils/memutils.h"

#include "rtevents.h"

#define RT_WS_MESSAGE_MAX		(16 * 1024)
#define RT_WS_FRAME_CHUNK		(64 * 1024)
#define RT_WS_RX_BUFFER			1024
/* lws confirms a pong a moment before it tells us of it */
#define RT_WS_PONG_SLACK_US		(100 * 1000)

typedef struct WsConn
{
	RtClient	base;			/* its subscriptions and its queue */
	dlist_node	node;			/* in ws_conns */
	RtAuthClaims claims;		/* what its token lets it see */
	char	   *rx;				/* the message being received */
	size_t		rx_len;
	size_t		msg_len;		/* of it so far, kept or skipped */
	bool		rx_skip;		/* the rest of a refused message */
	lws_usec_t	pong_at;		/* lws's clock, at the upgrade or last pong */
	float		rate_tokens;	/* messages it may still send now */
	TimestampTz rate_at;		/* when rate_tokens was last topped up */
	uint16		close_status;	/* close with this once the queue is out */
	const char *close_reason;
} WsConn;

static dlist_head ws_conns = DLIST_STATIC_INIT(ws_conns);
static int	nconns = 0;
static MemoryContext message_cxt = NULL;

/*
 * code and message are constants without quotes or backslashes; sub, when
 * the error is about one, is a checked name (client_message.c).
 */
static void
send_sub_error(WsConn *c, const char *sub, const char *code,
			   const char *message)
{
	char		msg[256 + RT_SUB_NAME_MAX];

	if (sub != NULL && sub[0] != '\0')
		snprintf(msg, sizeof(msg),
				 "{\"op\":\"error\",\"sub\":\"%s\",\"code\":\"%s\",\"message\":\"%s\"}",
				 sub, code, message);
	else
		snprintf(msg, sizeof(msg),
				 "{\"op\":\"error\",\"code\":\"%s\",\"message\":\"%s\"}",
				 code, message);
	(void) rt_client_queue_message(&c->base, msg);
}

static void
send_error(WsConn *c, const char *code, const char *message)
{
	send_sub_error(c, NULL, code, message);
}

/* Say why, then close once what is queued has gone out. */
static void
close_after(WsConn *c, uint16 status, const char *code, const char *message)
{
	send_error(c, code, message);
	if (c->close_status == 0)
	{
		c->close_status = status;
		c->close_reason = code;
	}
	lws_callback_on_writable(c->base.wsi);
}

/* ---- what subscription.c tells us ---- */

static void
ws_live(RtClient *client, RtSub *s, int64 replayed)
{
	char		msg[RT_SUB_NAME_MAX + 96];

	/* sub names are plain (client_message.c): no escaping needed */
	/*
	 * after: the subscription has had every matching event up to here, so
	 * a client that has had none yet can still resume from here.
	 */
	snprintf(msg, sizeof(msg),
			 "{\"op\":\"subscribed\",\"sub\":\"%s\",\"replayed\":" INT64_FORMAT
			 ",\"after\":" INT64_FORMAT "}",
			 rt_sub_name(s), replayed, rt_sub_cursor(s));
	(void) rt_client_queue_message(client, msg);
}

static void
ws_gap(RtClient *client, RtSub *s, int64 after, int64 oldest)
{
	char		msg[RT_SUB_NAME_MAX + 128];

	snprintf(msg, sizeof(msg),
			 "{\"op\":\"gap\",\"sub\":\"%s\",\"after\":" INT64_FORMAT
			 ",\"oldest\":" INT64_FORMAT "}",
			 rt_sub_name(s), after, oldest);
	(void) rt_client_queue_message(client, msg);
}

static void
ws_expired(RtClient *client)
{
	close_after((WsConn *) client, LWS_CLOSE_STATUS_POLICY_VIOLATION,
				"token_expired", "the token has expired: reconnect with a new one");
}

static const RtClientOps ws_ops = {ws_live, ws_gap, ws_expired};

/* ---- what the client says ---- */

static void
subscribe(WsConn *c, RtClientMessage *m)
{
	const char *message;

	if (rt_client_find_sub(&c->base, m->sub) != NULL)
	{
		send_sub_error(c, m->sub, "sub_exists", "a subscription of that name is open; unsubscribe first");
		return;
	}
	if (!rt_auth_allows(&c->claims, &m->filter, &message))
	{
		send_sub_error(c, m->sub, "forbidden", message);
		return;
	}
	if (c->base.nsubs >= RT_SUB_MAX)
	{
		send_sub_error(c, m->sub, "too_many_subs", "a connection holds at most 64 subscriptions");
		return;
	}
	if (rt_sub_open(&c->base, m->sub, &m->filter, m->has_after, m->after) == NULL)
		close_after(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "unavailable",
					"out of memory");
}

static void
unsubscribe(WsConn *c, RtClientMessage *m)
{
	RtSub	   *s = rt_client_find_sub(&c->base, m->sub);
	char		msg[RT_SUB_NAME_MAX + 48];

	if (s == NULL)
	{
		send_sub_error(c, m->sub, "unknown_sub", "no subscription of that name is open");
		return;
	}
	rt_sub_close(s);
	snprintf(msg, sizeof(msg), "{\"op\":\"unsubscribed\",\"sub\":\"%s\"}",
			 m->sub);
	(void) rt_client_queue_message(&c->base, msg);
}

/*
 * rtevents.max_messages_per_second, as a token bucket holding two seconds'
 * worth: bursts are fine, a client that keeps sending faster is closed
 * rather than allowed to keep the loop busy parsing for it.
 */
static bool
within_rate(WsConn *c)
{
	TimestampTz now = GetCurrentTimestamp();
	float		rate = (float) rt_max_messages_per_second;

	if (c->rate_at == 0)
		c->rate_tokens = 2 * rate;
	else
		c->rate_tokens = Min(2 * rate, c->rate_tokens +
							 rate * (float) (now - c->rate_at) / USECS_PER_SEC);
	c->rate_at = now;
	if (c->rate_tokens < 1)
		return false;
	c->rate_tokens -= 1;
	return true;
}

/*
 * One whole text message.  The parser's memory is reset afterwards; an
 * error it throws (out of memory) is the client's error reply.
 */
static void
handle_message(WsConn *c, char *text, size_t len)
{
	RtClientMessage m;
	const char *volatile code = NULL;
	const char *volatile message = NULL;
	volatile bool parsed = false;
	MemoryContext old;

	if (!within_rate(c))
	{
		close_after(c, LWS_CLOSE_STATUS_POLICY_VIOLATION, "rate_limited",
					"more messages than rtevents.max_messages_per_second allows");
		return;
	}
	old = MemoryContextSwitchTo(message_cxt);
	memset(&m, 0, sizeof(m));
	PG_TRY();
	{
		const char *c;
		const char *msg;

		parsed = rt_client_message_parse(text, len, &m, &c, &msg);
		code = c;
		message = msg;
	}
	PG_CATCH();
	{
		FlushErrorState();
		code = "unavailable";
		message = "the message could not be parsed";
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	MemoryContextReset(message_cxt);

	if (!parsed)
		send_sub_error(c, m.sub, code, message);	/* m.sub: if it was read */
	else if (m.op == RT_OP_PING)
		(void) rt_client_queue_message(&c->base, "{\"op\":\"pong\"}");
	else if (m.op == RT_OP_SUBSCRIBE)
		subscribe(c, &m);
	else
		unsubscribe(c, &m);
	rt_request_free(&m.filter);
}

/* A fragment of a message, as lws hands them over. */
static void
receive(WsConn *c, struct lws *wsi, const char *in, size_t len)
{
	/* what the frame's header declared, less what has come of it */
	size_t		remaining = lws_remaining_packet_payload(wsi);
	bool		last = lws_is_final_fragment(wsi) && remaining == 0;

	if (c->close_status != 0)
		return;
	rt_conn_touch(c->base.conn);

	/*
	 * lws hands a frame's payload over as it comes, the first bytes with
	 * the length its header declared: a message that cannot fit is refused
	 * then, whatever its type, rather than read up to the bound.  (A header
	 * with no payload after it makes no callback at all: the client, which
	 * can send nothing else, not even a pong, until the payload is done, is
	 * hung up on by the heartbeat.)
	 */
	if (len > RT_WS_MESSAGE_MAX - c->msg_len ||
		remaining > RT_WS_MESSAGE_MAX - c->msg_len - len)
	{
		free(c->rx);
		c->rx = NULL;
		c->rx_len = 0;
		close_after(c, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, "message_too_big",
					"a message is at most 16 kB");
		return;
	}
	c->msg_len = last ? 0 : c->msg_len + len;

	if (lws_frame_is_binary(wsi) || c->rx_skip)
	{
		if (!c->rx_skip)
			send_error(c, "bad_message", "messages are JSON in text frames");
		c->rx_skip = !last;
		return;
	}
	if (!last || c->rx_len > 0)
	{
		char	   *grown = realloc(c->rx, c->rx_len + len + 1);

		if (grown == NULL)
		{
			close_after(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "unavailable",
						"out of memory");
			return;
		}
		c->rx = grown;
		memcpy(c->rx + c->rx_len, in, len);
		c->rx_len += len;
		if (!last)
			return;
		handle_message(c, c->rx, c->rx_len);
		free(c->rx);
		c->rx = NULL;
		c->rx_len = 0;
		return;
	}
	handle_message(c, (char *) in, len);	/* whole: no copy */
}

/* ---- the connection ---- */

/*
 * The connection's state is ours, not lws's per-session memory: an upgraded
 * connection may keep the memory the http protocol sized.
 */
static void
established(struct lws *wsi)
{
	WsConn	   *c = calloc(1, sizeof(WsConn));
	RtRequest	req;
	const char *code;
	const char *message;
	char		msg[128];

	if (c == NULL)
	{
		rt_server_close_soon(wsi);
		return;
	}
	if (!rt_client_init(&c->base, wsi, &ws_ops, RT_CONN_WEBSOCKET))
	{
		/* full since the upgrade was confirmed: nothing was queued yet */
		free(c);
		lws_close_reason(wsi, (enum lws_close_status) 1013,	/* try again later */
						 (unsigned char *) "server_full", 11);
		rt_server_close_soon(wsi);
		return;
	}
	lws_set_opaque_user_data(wsi, c);
	c->pong_at = lws_now_usecs();
	dlist_push_tail(&ws_conns, &c->node);
	nconns++;
	snprintf(msg, sizeof(msg),
			 "{\"op\":\"welcome\",\"connection\":\"" UINT64_FORMAT "\",\"heartbeat\":%d}",
			 rt_conn_id(c->base.conn), rt_heartbeat);
	(void) rt_client_queue_message(&c->base, msg);

	/*
	 * The token and the query string, checked before the upgrade (http.c),
	 * are read again: the claims stay with the connection, for every
	 * subscription it opens; the query string opens "default".
	 */
	memset(&req, 0, sizeof(req));
	if (!rt_request_parse(wsi, &req, false, &code, &message) ||
		rt_http_authorize(wsi, rt_request_has_filter(&req) || req.has_after ? &req : NULL,
						  false, &c->claims, &code, &message) != 0)
		close_after(c, LWS_CLOSE_STATUS_POLICY_VIOLATION, code, message);
	else
	{
		c->base.expires = c->claims.exp;	/* 0 without a token */
		if ((rt_request_has_filter(&req) || req.has_after) &&
			rt_sub_open(&c->base, "default", &req, req.has_after, req.after) == NULL)
			close_after(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "unavailable",
						"out of memory");
	}
	rt_request_free(&req);
}

/*
 * One frame: a message as it is, or the events at the head of the queue in
 * one {"op":"events"} frame (a big event may make it bigger than the chunk).
 */
/* The frame's "subs": the names of the subscriptions in mask. */
static uint8_t *
append_subs(WsConn *c, uint8_t *p, uint64 mask)
{
	bool		first = true;

	memcpy(p, "\"subs\":[", 8);
	p += 8;
	for (int bit = 0; bit < RT_SUB_MAX; bit++)
	{
		const char *name;
		size_t		len;

		if ((mask & (UINT64CONST(1) << bit)) == 0 ||
			(name = rt_client_sub_name(&c->base, bit)) == NULL)
			continue;
		/* sub names are plain (client_message.c): no escaping needed */
		len = strlen(name);
		if (!first)
			*p++ = ',';
		*p++ = '"';
		memcpy(p, name, len);
		p += len;
		*p++ = '"';
		first = false;
	}
	*p++ = ']';
	return p;
}

/*
 * One frame: a message as it is, or the events at the head of the queue
 * that are for the same subscriptions, in one {"op":"events"} frame (a big
 * event may make it bigger than the chunk).
 */
static int
writable(WsConn *c, struct lws *wsi)
{
	const RtQueued *q = rt_client_head(&c->base);
	uint8_t    *buf,
			   *start,
			   *p;
	size_t		room;
	uint64		subs;
	int			n;

	if (c->base.closing)
		return -1;
	if (q == NULL)
	{
		if (c->close_status != 0)
		{
			lws_close_reason(wsi, c->close_status,
							 (unsigned char *) c->close_reason,
							 strlen(c->close_reason));
			return -1;
		}
		return 0;
	}

	room = Max(RT_WS_FRAME_CHUNK, q->ev->json_len + 64) +
		RT_SUB_MAX * (RT_SUB_NAME_MAX + 3);
	if ((buf = rt_client_write_buffer(LWS_PRE + room)) == NULL)
	{
		lws_close_reason(wsi, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION,
						 (unsigned char *) "unavailable", 11);
		return -1;
	}
	start = p = buf + LWS_PRE;
	if (q->ev->message)
	{
		memcpy(p, q->ev->json, q->ev->json_len);
		p += q->ev->json_len;
		rt_client_pop(&c->base);
	}
	else
	{
		subs = q->subs;
		memcpy(p, "{\"op\":\"events\",", 15);
		p = append_subs(c, p + 15, subs);
		memcpy(p, ",\"events\":[", 11);
		p += 11;
		while ((q = rt_client_head(&c->base)) != NULL && !q->ev->message &&
			   q->subs == subs &&
			   (size_t) (p - start) + q->ev->json_len + 3 <= room)
		{
			if (p[-1] != '[')
				*p++ = ',';
			memcpy(p, q->ev->json, q->ev->json_len);
			p += q->ev->json_len;
			rt_client_pop(&c->base);
		}
		*p++ = ']';
		*p++ = '}';
	}
	n = (int) (p - start);
	if (lws_write(wsi, start, (size_t) n, LWS_WRITE_TEXT) != n)
		return -1;
	rt_client_wrote(&c->base);
	if (c->base.queue_len == 0 && c->close_status != 0)
		lws_callback_on_writable(wsi);
	return 0;
}

/*
 * lws is closing the connection, and calls this (its protocol unbind)
 * before it decides whether to send a close frame: it sends one when a
 * close code has been set by then (lib/core-net/close.c,
 * __lws_close_free_wsi(), then rops_close_via_role_protocol_ws() in
 * lib/roles/ws/ops-ws.c).  Most frames that break RFC 6455 get their code
 * from lws itself (1002, 1007); two do not, a control frame over 125 bytes
 * and a 64-bit length with its top bit set (lws_ws_rx_sm(),
 * "illegal_ctl_length" and "b63 of length must be zero"), and nor does a
 * client that ends the stream without a close frame.  lws would drop those
 * without a word (the client sees 1006).  So a close nobody has given a
 * code is told 1002, unless it is one of ours (a slow client given up on
 * is dropped, as it reads nothing) or lws's hang-up on a client that has
 * not answered a ping for the heartbeat's limit, which is dropped as ever.
 * (After a reload changes that limit, a connection's next pong brings its
 * reckoning up to date; until then a close at the edge may be misjudged
 * either way, as may a client that answers pings with empty pongs, which
 * lws does not pass on: that only changes whether a close frame is sent.)
 */
static void
dropping(struct lws *wsi, WsConn *c)
{
	lws_usec_t	silent_for = lws_now_usecs() - c->pong_at;

	if (lws_get_close_length(wsi) > 0 || c->base.closing)
		return;
	if (c->close_status != 0)
	{
		/* ours, with its code, though what was queued before it is lost */
		lws_close_reason(wsi, c->close_status,
						 (unsigned char *) c->close_reason,
						 strlen(c->close_reason));
		return;
	}
	if (silent_for + RT_WS_PONG_SLACK_US >=
		(lws_usec_t) rt_server_ws_silence_limit() * LWS_US_PER_SEC)
		return;
	lws_close_reason(wsi, LWS_CLOSE_STATUS_PROTOCOL_ERR,
					 (unsigned char *) "protocol error", 14);
}

static void
closed(struct lws *wsi, WsConn *c)
{
	lws_set_opaque_user_data(wsi, NULL);
	dlist_delete(&c->node);
	nconns--;
	free(c->rx);
	rt_auth_claims_free(&c->claims);
	rt_client_release(&c->base);
	free(c);
}

static int
ws_callback(struct lws *wsi, enum lws_callback_reasons reason,
			void *user, void *in, size_t len)
{
	WsConn	   *c = lws_get_opaque_user_data(wsi);

	switch (reason)
	{
		case LWS_CALLBACK_PROTOCOL_INIT:
			if (message_cxt == NULL)
				message_cxt = AllocSetContextCreate(TopMemoryContext,
													"rtevents WebSocket message",
													ALLOCSET_SMALL_SIZES);
			break;
		case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
			return rt_http_confirm_upgrade(wsi, in ? (const char *) in : "");
		case LWS_CALLBACK_ESTABLISHED:
			established(wsi);
			break;
		case LWS_CALLBACK_RECEIVE:
			if (c != NULL)
				receive(c, wsi, in, len);
			break;
		case LWS_CALLBACK_RECEIVE_PONG:
			/* what resets lws's hang-up clock (lws_ws_rx_sm()) */
			if (c != NULL)
				c->pong_at = lws_now_usecs();
			break;
		case LWS_CALLBACK_WS_SERVER_DROP_PROTOCOL:
			if (c != NULL)
				dropping(wsi, c);
			break;
		case LWS_CALLBACK_SERVER_WRITEABLE:
			if (c != NULL)
				return writable(c, wsi);
			break;
		case LWS_CALLBACK_CLOSED:
			if (c != NULL)
				closed(wsi, c);
			break;
		default:
			break;
	}
	return 0;
}

/* The server is going away: every connection gets a close frame, 1001. */
void
rt_ws_going_away(void)
{
	dlist_iter	iter;

	dlist_foreach(iter, &ws_conns)
	{
		WsConn	   *c = dlist_container(WsConn, node, iter.cur);

		if (c->close_status == 0)
		{
			c->close_status = LWS_CLOSE_STATUS_GOINGAWAY;
			c->close_reason = "server shutting down";
		}
		/* what is queued still goes first, as far as the socket takes it */
		lws_callback_on_writable(c->base.wsi);
	}
}

int
rt_ws_clients(void)
{
	return nconns;
}

/*
 * The connection's state is a WsConn of ours, but lws gives the protocol
 * unbind, which dropping() needs, only to a connection with per-session
 * memory (lib/core-net/close.c): so it has a pointer's worth, unused.
 */
const struct lws_protocols rt_ws_protocol = {
	"rtevents", ws_callback, sizeof(void *), RT_WS_RX_BUFFER, 0, NULL,
	RT_TX_PACKET_MAX
};

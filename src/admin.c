/*-------------------------------------------------------------------------
 *
 * admin.c
 *		DELETE /api/events?olderThan=<RFC 3339>: admins delete old events.
 *
 * Deleting can take long on a big table, and the worker has one database
 * connection, its LISTEN feed, which must go on reading new events.  So a
 * delete runs as rt_delete_events() calls, one stretch of ids each (the
 * primary key bounds each statement's work), queued on the feed like the
 * pages of a replay: live reads go first, then replays and deletes take
 * turns.  The client gets {"deleted":N} once the last stretch is done; the
 * stretches are separate transactions, as rt_cleanup's batches are, so a
 * delete cut short (the feed lost, the worker stopped) has deleted some of
 * what it was asked to and can simply be asked again.
 *
 * Only a token with "admin": true may delete, whatever rtevents.auth says
 * (http.c, rt_http_authorize).  Runs in the event loop: malloc, no errors.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdlib.h>

#include <libwebsockets.h>

#include "rtevents.h"

#define RT_DELETE_SPAN		10000	/* ids per rt_delete_events() call */

typedef struct AdminDelete
{
	struct AdminDelete *next;	/* waiting for the feed */
	struct lws *wsi;
	char		older_than[4100];	/* as request.c's bound on any argument */
	int64		after;			/* the next stretch starts after this id */
	int64		deleted;
	bool		running;		/* a stretch is on the feed */
	bool		done;
	bool		failed;
	bool		cancelled;		/* the client left; freed when it runs out */
} AdminDelete;

static AdminDelete *queue_head = NULL;
static AdminDelete *queue_tail = NULL;
static AdminDelete *running = NULL;

static void
enqueue(AdminDelete *d)
{
	d->next = NULL;
	if (queue_tail)
		queue_tail->next = d;
	else
		queue_head = d;
	queue_tail = d;
	rt_feed_kick();
}

/*
 * LWS_CALLBACK_HTTP for DELETE /api/events.  Returns 0 when the delete is
 * under way (the reply follows on writable), an HTTP status to refuse with
 * (*code and *message set), or -1 to drop the connection.
 */
int
rt_admin_open(struct lws *wsi, void **user, const char **code,
			  const char **message)
{
	AdminDelete *d;
	RtAuthClaims claims;
	unsigned int status;
	char		older_than[64];
	const char *value;

	if ((status = rt_http_authorize(wsi, NULL, true, &claims, code, message)) != 0)
		return (int) status;
	rt_auth_claims_free(&claims);

	if ((value = lws_get_urlarg_by_name(wsi, "olderThan=", older_than,
										sizeof(older_than))) == NULL ||
		!rt_request_timestamp((char *) value))
	{
		*code = "bad_cursor";
		*message = "olderThan must be an RFC 3339 timestamp, like 2026-11-22T10:00:00Z";
		return HTTP_STATUS_BAD_REQUEST;
	}
	if ((d = calloc(1, sizeof(AdminDelete))) == NULL)
		return -1;
	d->wsi = wsi;
	strlcpy(d->older_than, value, sizeof(d->older_than));
	enqueue(d);
	*user = d;
	return 0;
}

/*
 * The feed is idle: the parameters of the next stretch to delete, if any:
 * older_than, after_id, span.
 */
bool
rt_admin_next(const char *params[3], char buf[2][24])
{
	AdminDelete *d = queue_head;

	if (d == NULL || running != NULL)
		return false;
	queue_head = d->next;
	if (queue_head == NULL)
		queue_tail = NULL;
	params[0] = d->older_than;
	snprintf(buf[0], 24, INT64_FORMAT, d->after);
	params[1] = buf[0];
	snprintf(buf[1], 24, "%d", RT_DELETE_SPAN);
	params[2] = buf[1];
	d->running = true;
	running = d;
	return true;
}

/*
 * The stretch is done: ok with how many it deleted and, when has_next, where
 * the next one starts; or failed, or lost with the connection (run again).
 */
void
rt_admin_done(bool ok, bool lost, int64 deleted, bool has_next, int64 next_after)
{
	AdminDelete *d = running;

	if (d == NULL)
		return;
	running = NULL;
	d->running = false;
	if (d->cancelled)
	{
		free(d);
		return;
	}
	if (lost)
	{
		/* first in line again, once the feed is back */
		d->next = queue_head;
		queue_head = d;
		if (queue_tail == NULL)
			queue_tail = d;
		return;
	}
	d->deleted += ok ? deleted : 0;
	if (ok && has_next)
	{
		d->after = next_after;
		enqueue(d);
		return;
	}
	d->failed = !ok;
	d->done = true;
	lws_callback_on_writable(d->wsi);
}

bool
rt_admin_waiting(void)
{
	return queue_head != NULL;
}

/* LWS_CALLBACK_HTTP_WRITEABLE: 1 once the reply is sent, 0 before, -1 on error. */
int
rt_admin_writable(struct lws *wsi, void *user)
{
	AdminDelete *d = user;
	uint8_t		buf[LWS_PRE + 1024];
	uint8_t    *start = buf + LWS_PRE,
			   *p = start,
			   *end = buf + sizeof(buf);
	char		body[128];
	int			len;

	if (!d->done)
		return 0;
	if (d->failed)
		len = snprintf(body, sizeof(body),
					   "{\"error\":\"unavailable\",\"message\":\"the delete failed; see the server log\"}");
	else
		len = snprintf(body, sizeof(body), "{\"deleted\":" INT64_FORMAT "}", d->deleted);
	if (lws_add_http_common_headers(wsi, d->failed ? HTTP_STATUS_SERVICE_UNAVAILABLE :
									HTTP_STATUS_OK, "application/json", len, &p, end) ||
		lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL,
									 (const unsigned char *) "no-store", 8, &p, end) ||
		rt_http_add_cors(wsi, &p, end) ||
		lws_finalize_http_header(wsi, &p, end) ||
		end - p < len)
		return -1;
	memcpy(p, body, len);
	p += len;
	if (lws_write(wsi, start, p - start, LWS_WRITE_HTTP_FINAL) != p - start)
		return -1;
	return 1;
}

/* The client is gone (or the reply sent): forget it. */
void
rt_admin_closed(void *user)
{
	AdminDelete *d = user;
	AdminDelete **pp;

	if (d->running)
	{
		d->cancelled = true;	/* freed when its stretch is done */
		return;
	}
	for (pp = &queue_head; *pp != NULL; pp = &(*pp)->next)
	{
		if (*pp == d)
		{
			*pp = d->next;
			if (queue_tail == d)
			{
				queue_tail = NULL;
				for (AdminDelete *q = queue_head; q != NULL; q = q->next)
					queue_tail = q;
			}
			break;
		}
	}
	free(d);
}

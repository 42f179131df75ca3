/*-------------------------------------------------------------------------
 *
 * replay.c
 *		Catching clients up from the table, a page at a time, on a
 *		connection of the worker's own to this server.
 *
 * A client resuming from an id the live stream's ring no longer holds
 * reads the events it missed from the table, up to the ring's floor (the
 * ring covers the rest); the history API reads its pages the same way.  A
 * page is at most RT_REPLAY_PAGE events; the client asks for the next page
 * when it has sent the last one on, so pages of different clients take
 * turns, a client 100,000 events behind costs the others one page's query
 * at a time, and a client that reads slowly is not fed faster than it
 * reads.
 *
 * Pages run on the replay connection (db_conn.c, application_name
 * "rtevents replay"), not on the LISTEN feed's, so that live reads never
 * wait behind a page, and so that a worker on a standby, whose feed points
 * at the primary, replays from its own replica: that is what spreads the
 * catching up over the standbys.  A replica may lag behind what the stream
 * has settled.  Before a page runs, the replica must have replayed the WAL
 * up to where the feed's latest read stood on the primary
 * (rt_feed_settled_lsn()); until it has, the page waits, polling the
 * replay position at 2 ms doubling to 100 ms.  On a primary there is
 * nothing to wait for: the feed's reads and the pages see the same server.
 * A page cancelled by a conflict with recovery runs again.
 *
 * Everything here runs inside the event loop: malloc, no errors.  A replay
 * belongs to its client, which may cancel it at any time (it hung up); a
 * page already running then finishes and its rows are dropped.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdlib.h>

#include <libwebsockets.h>

#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "libpq-fe.h"

#include "rtevents.h"

#define RT_REPLAY_PAGE			500
#define RT_REPLAY_PARAMS		12
#define REPLICA_RETRY_MIN_MS	2
#define REPLICA_RETRY_MAX_MS	100
#define REPLICA_WAIT_LOG_S		10	/* a wait this long is logged */

struct RtReplay
{
	RtReplay   *next;			/* in the waiting queue */
	void	   *owner;
	RtReplayHooks hooks;
	const RtRequest *req;		/* the owner's filter, alive while this is */
	int64		after;			/* the last id handed to the owner */
	int64		upto;			/* the replay ends here */
	int			limit;			/* rows in the page, at most */
	int			offset;
	int			rows;			/* rows of the page so far */
	bool		running;		/* a page of it is on the connection */
	bool		cancelled;
};

typedef enum ReplayQuery
{
	REPLAY_Q_NONE,
	REPLAY_Q_POSITION,			/* how far has this replica replayed? */
	REPLAY_Q_PAGE				/* a page of the running replay */
} ReplayQuery;

/* Replays waiting for their next page, first in line first. */
static RtReplay *queue_head = NULL;
static RtReplay *queue_tail = NULL;
static RtReplay *running = NULL;
static uint64 replay_pages = 0;

/* The connection, and what it knows of its server. */
static RtDbConn *db = NULL;
static ReplayQuery query = REPLAY_Q_NONE;
static char page_sql[1024 + 8 * NAMEDATALEN];
static char page_sql_schema[2 * NAMEDATALEN + 3];	/* page_sql was built for */
static bool page_failed;		/* the page in flight failed: tell the client */
static bool page_conflict;		/* ... or was cancelled by recovery: rerun */
static bool server_is_primary;	/* not in recovery: nothing to wait for */
static XLogRecPtr replayed_lsn; /* the replica has replayed this far */
static XLogRecPtr waiting_for;	/* the position the head of the queue needs */
static TimestampTz waiting_since;
static bool wait_logged;
static bool wait_counted;
static int	retry_ms = REPLICA_RETRY_MIN_MS;
static bool retry_pending;
static lws_sorted_usec_list_t retry_timer;
static uint64 replica_waits = 0;

static void replay_next(void);

static void
replay_free(RtReplay *r)
{
	free(r);
}

static void
enqueue(RtReplay *r)
{
	r->next = NULL;
	if (queue_tail)
		queue_tail->next = r;
	else
		queue_head = r;
	queue_tail = r;
}

/*
 * Queue a page: the first RT_REPLAY_PAGE events in (after, upto] that match
 * req's filter.  on_done says whether there may be more.  Returns NULL when
 * out of memory.  req must outlive the replay (cancel it first).
 */
RtReplay *
rt_replay_start(const RtRequest *req, int64 after, int64 upto,
				void *owner, const RtReplayHooks *hooks)
{
	return rt_replay_query(req, after, upto, RT_REPLAY_PAGE, 0, owner, hooks);
}

/*
 * The general form, for the history API too: limit rows, skipping offset,
 * with req's since and until.
 */
RtReplay *
rt_replay_query(const RtRequest *req, int64 after, int64 upto, int limit,
				int offset, void *owner, const RtReplayHooks *hooks)
{
	RtReplay   *r = calloc(1, sizeof(RtReplay));

	if (r == NULL)
		return NULL;
	r->req = req;
	r->limit = limit;
	r->offset = offset;
	r->owner = owner;
	r->hooks = *hooks;
	r->after = after;
	r->upto = upto;
	enqueue(r);
	replay_next();
	return r;
}

/* The owner goes away: no more calls to it. */
void
rt_replay_cancel(RtReplay *r)
{
	RtReplay  **p;

	if (r == NULL)
		return;
	if (r->running)
	{
		r->cancelled = true;	/* freed when its page is done */
		return;
	}
	for (p = &queue_head; *p != NULL; p = &(*p)->next)
	{
		if (*p == r)
		{
			*p = r->next;
			if (queue_tail == r)
			{
				queue_tail = NULL;
				for (RtReplay *q = queue_head; q != NULL; q = q->next)
					queue_tail = q;
			}
			break;
		}
	}
	replay_free(r);
}

/* ----------------------------------------------------------------
 * Running pages
 * ----------------------------------------------------------------
 */

/*
 * One row at least, for the gap: rt_gap() when the page asks, then the
 * events (none: one row of nulls).
 */
static void
build_page_sql(const char *schema)
{
	snprintf(page_sql, sizeof(page_sql),
			 "SELECT e.id, e.type, e.execution_id, e.batch_id, e.job_id,"
			 " e.organization_id::text,"
			 " CASE WHEN e.id IS NOT NULL THEN %s.rt_event_json(e) END, g.gap"
			 " FROM (SELECT CASE WHEN $12::boolean THEN %s.rt_gap($6::bigint) END AS gap) g"
			 " LEFT JOIN LATERAL %s.rt_events(execution_id => $1, batch_id => $2, job_id => $3,"
			 " organization_id => $4::uuid, types => $5::text[], after => $6::bigint,"
			 " since => $7::timestamptz, until => $8::timestamptz,"
			 " lim => $9::integer, off => $10::integer) e ON e.id <= $11::bigint",
			 schema, schema, schema);
	strlcpy(page_sql_schema, schema, sizeof(page_sql_schema));
}

/*
 * Whether a replica that has replayed up to replayed has seen every commit
 * before needed, a WAL insert position of the primary.  An insert position
 * at the start of a page points past the page's header, where no record
 * ends: a replica that has replayed to the end of the page before has seen
 * it all.
 */
static bool
replayed_past(XLogRecPtr replayed, XLogRecPtr needed)
{
	uint32		page_offset = needed % XLOG_BLCKSZ;

	if (replayed >= needed)
		return true;
	if (XLogSegmentOffset(needed, wal_segment_size) == SizeOfXLogLongPHD)
		return replayed >= needed - SizeOfXLogLongPHD;
	if (page_offset == SizeOfXLogShortPHD)
		return replayed >= needed - SizeOfXLogShortPHD;
	return false;
}

static void
replay_retry(lws_sorted_usec_list_t *sul)
{
	retry_pending = false;
	replay_next();
}

/* Look again in a while: the replica is behind, or recovery got in the way. */
static void
schedule_retry(void)
{
	retry_pending = true;
	rt_server_schedule(&retry_timer, replay_retry,
					   (lws_usec_t) retry_ms * LWS_US_PER_MS);
	retry_ms = Min(retry_ms * 2, REPLICA_RETRY_MAX_MS);
}

/*
 * Whether the replica has replayed what the page at the head of the queue
 * needs; if not yet, ask it (or wait for the timer to).
 */
static bool
replica_ready(void)
{
	if (server_is_primary)
		return true;
	if (waiting_for == InvalidXLogRecPtr)
	{
		waiting_for = rt_feed_settled_lsn();
		waiting_since = GetCurrentTimestamp();
	}
	if (replayed_past(replayed_lsn, waiting_for))
		return true;
	if (!retry_pending)
	{
		query = REPLAY_Q_POSITION;
		(void) rt_db_send(db,
						  "SELECT pg_catalog.pg_is_in_recovery(),"
						  " pg_catalog.pg_last_wal_replay_lsn()", 0, NULL);
	}
	return false;
}

/* The connection is free: run the next page, if any and if it may. */
static void
replay_next(void)
{
	RtReplay   *r = queue_head;
	const char *schema = rt_feed_schema();
	const char *params[RT_REPLAY_PARAMS];
	char		buf[4][24];

	if (r == NULL || running != NULL || db == NULL || !rt_db_idle(db) ||
		schema == NULL)
		return;
	if (strcmp(schema, page_sql_schema) != 0)
		build_page_sql(schema);
	if (!replica_ready())
		return;
	waiting_for = InvalidXLogRecPtr;
	wait_logged = false;
	wait_counted = false;
	retry_ms = REPLICA_RETRY_MIN_MS;

	queue_head = r->next;
	if (queue_head == NULL)
		queue_tail = NULL;

	/* The parameters, in the order of page_sql. */
	for (int i = 0; i < 4; i++)
		params[i] = r->req->keys[i];
	params[4] = r->req->types_literal;
	snprintf(buf[0], 24, INT64_FORMAT, r->after);
	params[5] = (r->after >= 0) ? buf[0] : NULL;
	params[6] = r->req->since;
	params[7] = r->req->until;
	snprintf(buf[1], 24, "%d", r->limit);
	params[8] = buf[1];
	snprintf(buf[2], 24, "%d", r->offset);
	params[9] = buf[2];
	snprintf(buf[3], 24, INT64_FORMAT, r->upto);
	params[10] = buf[3];
	params[11] = r->hooks.on_gap != NULL ? "true" : "false";
	r->running = true;
	r->rows = 0;
	running = r;
	replay_pages++;
	query = REPLAY_Q_PAGE;
	(void) rt_db_send(db, page_sql, RT_REPLAY_PARAMS, params);
}

/* A row of the running page; takes over the reference to ev. */
static void
page_row(RtStreamEvent *ev)
{
	if (running == NULL || running->cancelled || ev->id <= running->after)
	{
		rt_stream_event_release(ev);
		return;
	}
	running->after = ev->id;
	running->rows++;
	running->hooks.on_row(running->owner, ev);
}

/* The rows of a page: events as rt_events() finds them. */
static void
page_result(const PGresult *res)
{
	int			nrows = PQntuples(res);

	if (PQnfields(res) != 8)
	{
		rt_db_fail(db, "a replay page returned an unexpected result");
		return;
	}
	/* Cleanup deleted events past the cursor: the owner says so first. */
	if (nrows > 0 && !PQgetisnull(res, 0, 7) && running != NULL &&
		!running->cancelled && running->hooks.on_gap != NULL)
		running->hooks.on_gap(running->owner, rt_db_value_int64(res, 0, 7));
	for (int row = 0; row < nrows; row++)
	{
		RtStreamEvent *ev;

		if (PQgetisnull(res, row, 0))
			continue;			/* no events: the row of the gap */
		ev = rt_db_event_from_row(res, row);
		if (ev == NULL)
		{
			page_failed = true;
			return;
		}
		page_row(ev);
	}
}

/* The replay position: in recovery, and how far. */
static void
position_result(const PGresult *res)
{
	if (PQntuples(res) != 1 || PQnfields(res) != 2)
		return;
	server_is_primary = (strcmp(PQgetvalue(res, 0, 0), "f") == 0);
	replayed_lsn = Max(replayed_lsn, rt_db_value_lsn(res, 0, 1));
}

static void
replay_on_result(PGresult *res)
{
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		/*
		 * On a standby, replaying WAL can cancel a query that holds back
		 * what it replays ("conflict with recovery", 40001): not the
		 * client's fault, so the page runs again.  Anything else is about
		 * the client's filter: the client hears of it.
		 */
		if (query == REPLAY_Q_PAGE && state != NULL && strncmp(state, "40", 2) == 0)
			page_conflict = true;
		else
		{
			elog(LOG, "rtevents replay: a query failed: %s",
				 PQresultErrorMessage(res));
			page_failed = true;
		}
		return;
	}
	if (query == REPLAY_Q_PAGE)
		page_result(res);
	else if (query == REPLAY_Q_POSITION)
		position_result(res);
}

/* The running page goes back to the head of the queue, to run again. */
static void
page_requeue(void)
{
	RtReplay   *r = running;

	running = NULL;
	r->running = false;
	if (r->cancelled)
	{
		replay_free(r);
		return;
	}
	r->next = queue_head;
	queue_head = r;
	if (queue_tail == NULL)
		queue_tail = r;
}

static void
replay_on_done(void)
{
	ReplayQuery done = query;

	query = REPLAY_Q_NONE;
	if (done == REPLAY_Q_POSITION)
	{
		if (!server_is_primary && !replayed_past(replayed_lsn, waiting_for))
		{
			if (!wait_counted)
				replica_waits++;
			wait_counted = true;
			if (!wait_logged &&
				GetCurrentTimestamp() - waiting_since > REPLICA_WAIT_LOG_S * USECS_PER_SEC)
			{
				elog(LOG, "rtevents replay: replays have waited %d s for this standby to replay the primary's WAL up to %X/%X (it is at %X/%X)",
					 REPLICA_WAIT_LOG_S, LSN_FORMAT_ARGS(waiting_for),
					 LSN_FORMAT_ARGS(replayed_lsn));
				wait_logged = true;
			}
			page_failed = false;
			schedule_retry();
			return;
		}
		page_failed = false;
		replay_next();
		return;
	}
	if (done == REPLAY_Q_PAGE && running != NULL)
	{
		RtReplay   *r = running;

		if (page_conflict)
		{
			page_conflict = false;
			page_failed = false;
			page_requeue();
			schedule_retry();
			return;
		}
		running = NULL;
		r->running = false;
		if (!r->cancelled)
			r->hooks.on_done(r->owner, !page_failed,
							 !page_failed && r->rows == r->limit && r->after < r->upto);
		replay_free(r);
	}
	page_failed = false;
	replay_next();
}

/* Connected: what this server is is found out at the first page. */
static void
replay_on_up(void)
{
	server_is_primary = false;
	replayed_lsn = InvalidXLogRecPtr;
	replay_next();
}

/* Closed: a page in flight runs again, first, once reconnected. */
static void
replay_on_lost(bool was_up)
{
	if (query == REPLAY_Q_PAGE && running != NULL)
		page_requeue();
	query = REPLAY_Q_NONE;
	page_failed = false;
	page_conflict = false;
}

static const RtDbHooks replay_hooks = {
	.on_up = replay_on_up,
	.on_result = replay_on_result,
	.on_done = replay_on_done,
	.on_notify = NULL,
	.on_lost = replay_on_lost
};

/* ----------------------------------------------------------------
 * Interface
 * ----------------------------------------------------------------
 */

/* Main loop: connect to this server. */
void
rt_replay_connect(void)
{
	db = rt_db_start("rtevents replay", "the replay connection", "",
					 &replay_hooks);
}

/* Main loop, at exit: end the session so a smart shutdown can go on. */
void
rt_replay_disconnect(void)
{
	lws_sul_cancel(&retry_timer);
	if (db != NULL)
		rt_db_stop(db);
}

/* The feed knows where the extension is now: replays may run. */
void
rt_replay_kick(void)
{
	replay_next();
}

uint64
rt_replay_pages(void)
{
	return replay_pages;
}

/* Pages that had to wait for this standby to replay the primary's WAL. */
uint64
rt_replay_replica_waits(void)
{
	return replica_waits;
}

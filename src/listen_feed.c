/*-------------------------------------------------------------------------
 *
 * listen_feed.c
 *		The server worker's LISTEN feed: how published events reach the
 *		worker.
 *
 * The feed is a libpq session (db_conn.c; application_name "rtevents
 * feed") that LISTENs on rtevents.channel, to this server or, for a worker
 * on a standby, to the primary named by rtevents.feed_conninfo.  It lives
 * inside the worker's event loop, so nothing here may block or
 * ereport(ERROR).
 *
 * The same connection reads the events.  A notification only names an id
 * (sequencer.c); the rows come from rt_read_events() (feed_read.c), one
 * query at a time, and whatever the sequencer lets out goes to the live
 * stream (stream.c).  After LISTEN the feed looks up the extension's schema
 * and the highest id, so that a reconnect reads what was committed while it
 * was away: nothing is lost with the connection.  While the sequencer is
 * held back by an open transaction that may roll back (which announces
 * nothing), the read is retried on a timer, 2 ms doubling to 100 ms.
 *
 * Each read also returns the primary's WAL insert position, taken after the
 * read's snapshot: every event the stream has settled committed before it.
 * Replays (replay.c) run on a connection of their own to this server; on a
 * standby they wait until it has replayed that far, so that a client
 * catching up from the local replica finds every event the stream has
 * moved past.  Writes (an admin's DELETE, admin.c) stay here, on the
 * primary's connection.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <libwebsockets.h>

#include "access/xlogdefs.h"
#include "libpq-fe.h"
#include "utils/memutils.h"

#include "rtevents.h"

#define FEED_READ_LIMIT			1000	/* rows per rt_read_events() */
#define FEED_READ_RETRY_MIN_MS	2
#define FEED_READ_RETRY_MAX_MS	100
#define FEED_SCHEMA_RETRY_MS	1000

typedef enum FeedQuery
{
	FEED_Q_NONE,
	FEED_Q_LISTEN,				/* LISTEN */
	FEED_Q_SCHEMA,				/* where is the extension? */
	FEED_Q_INIT,				/* the highest id, and the horizon */
	FEED_Q_READ,				/* rt_read_events() */
	FEED_Q_ADMIN				/* a stretch of an admin's delete (admin.c) */
} FeedQuery;

typedef struct Feed
{
	RtDbConn   *db;
	bool		listening;		/* LISTEN has succeeded */
	uint64		notifications;
	char	   *channel;		/* rtevents.channel, as LISTENed to */

	/* Reading events (see the header comment) */
	FeedQuery	query;			/* the query in flight */
	bool		schema_known;	/* schema and the queries are built */
	bool		schema_missing_logged;
	char		schema[2 * NAMEDATALEN + 3];	/* quoted */
	char		init_sql[256 + 4 * NAMEDATALEN];
	char		read_sql[256 + 2 * NAMEDATALEN];
	char		admin_sql[256 + 2 * NAMEDATALEN];
	bool		admin_failed;	/* the stretch in flight failed */
	int64		admin_deleted;	/* its result */
	bool		admin_has_next;
	int64		admin_next;
	RtSequencer seq;
	bool		seq_started;	/* the live stream's start is known */
	int64		early_announced;	/* announced before it was */
	XLogRecPtr	settled_lsn;	/* the primary's WAL position at the last read */
	int64		read_upto;		/* range of the read in flight */
	int64		read_decided;	/* seq.decided when it was sent */
	int64		read_announced; /* seq.announced when it was sent */
	int			read_retry_ms;
	bool		read_blocked;	/* held back: wait for the timer or news */
	TimestampTz held_since;		/* held back by an open transaction since */
	uint64		holds;			/* times the stream was held back */
	double		held_seconds;	/* time it was, in all (ended holds) */
	lws_sorted_usec_list_t read_timer;
	uint64		reads;
	uint64		heard_while_writing;	/* rt_feed_poll found news */
} Feed;

static Feed feed = {
	.read_retry_ms = FEED_READ_RETRY_MIN_MS
};

static void feed_send_schema_query(void);
static void hold_end(void);

/* ----------------------------------------------------------------
 * The connection's life (db_conn.c calls these; loop-safe, no ERROR)
 * ----------------------------------------------------------------
 */

static void
feed_send(FeedQuery query, const char *sql, int nparams, const char *const *params)
{
	Assert(feed.query == FEED_Q_NONE);
	feed.query = query;
	(void) rt_db_send(feed.db, sql, nparams, params);
}

/* Connected: LISTEN. */
static void
feed_on_up(void)
{
	PGconn	   *conn = rt_db_pgconn(feed.db);
	char		command[32 + 2 * NAMEDATALEN];
	char	   *channel;

	channel = PQescapeIdentifier(conn, feed.channel, strlen(feed.channel));
	if (channel == NULL)
	{
		rt_db_fail(feed.db, PQerrorMessage(conn));
		return;
	}
	snprintf(command, sizeof(command), "LISTEN %s", channel);
	PQfreemem(channel);
	feed_send(FEED_Q_LISTEN, command, 0, NULL);
}

/* Closed: what was in flight is lost; a reconnect reads what was missed. */
static void
feed_on_lost(bool was_up)
{
	lws_sul_cancel(&feed.read_timer);
	feed.read_blocked = false;
	hold_end();
	if (feed.query == FEED_Q_ADMIN)
		rt_admin_done(false, true, 0, false, 0);
	feed.query = FEED_Q_NONE;
	feed.listening = false;
	feed.schema_known = false;
}

/* ----------------------------------------------------------------
 * Reading events (loop-safe: libpq and malloc only)
 * ----------------------------------------------------------------
 */

static void
feed_send_schema_query(void)
{
	feed_send(FEED_Q_SCHEMA,
			  "SELECT quote_ident(n.nspname) FROM pg_catalog.pg_extension e"
			  " JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace"
			  " WHERE e.extname = 'rtevents'",
			  0, NULL);
}

static void
feed_schema_retry(lws_sorted_usec_list_t *sul)
{
	if (feed.listening && rt_db_idle(feed.db) && feed.query == FEED_Q_NONE &&
		!feed.schema_known)
		feed_send_schema_query();
}

/* Send the next read if the sequencer wants one and none is in flight. */
static void
feed_maybe_read(void)
{
	int64		after;
	char		after_s[24],
				upto_s[24],
				limit_s[16];
	const char *params[3] = {after_s, upto_s, limit_s};

	if (!rt_db_idle(feed.db) || !feed.schema_known || !feed.seq_started)
		return;
	/* Held back by an open transaction, and nothing new: let the timer ask. */
	if (feed.read_blocked && feed.seq.announced == feed.read_announced)
		return;
	if (!rt_sequencer_next_read(&feed.seq, &after, &feed.read_upto))
		return;
	feed.read_blocked = false;

	lws_sul_cancel(&feed.read_timer);
	feed.read_decided = feed.seq.decided;
	feed.read_announced = feed.seq.announced;
	snprintf(after_s, sizeof(after_s), INT64_FORMAT, after);
	snprintf(upto_s, sizeof(upto_s), INT64_FORMAT, feed.read_upto);
	snprintf(limit_s, sizeof(limit_s), "%d", FEED_READ_LIMIT);
	feed.reads++;
	feed_send(FEED_Q_READ, feed.read_sql, 3, params);
}

/*
 * The connection is free: new events first, then a stretch of an admin's
 * delete.
 */
static void
feed_next_query(void)
{
	const char *params[3];
	char		buf[2][24];

	feed_maybe_read();
	if (!rt_db_idle(feed.db) || !feed.schema_known)
		return;
	if (rt_admin_next(params, buf))
		feed_send(FEED_Q_ADMIN, feed.admin_sql, 3, params);
}

static void
feed_read_retry(lws_sorted_usec_list_t *sul)
{
	feed.read_blocked = false;
	feed_next_query();
}

/*
 * The WAL position the read returned, "X/X" as pg_lsn prints it: what a
 * standby must have replayed before replays from it can see what the
 * stream has settled.
 */
static void
feed_settled_at(const PGresult *res, int col)
{
	feed.settled_lsn = Max(feed.settled_lsn, rt_db_value_lsn(res, 0, col));
}

/*
 * The rows of rt_read_events: a header with the horizon and the WAL
 * position, then events.
 */
static void
feed_read_result(const PGresult *res)
{
	int			nrows = PQntuples(res);
	int64		upto = feed.read_upto;
	int64		last_row = 0;

	if (nrows < 1 || PQnfields(res) != 9)
	{
		rt_db_fail(feed.db, "rt_read_events returned an unexpected result");
		return;
	}
	rt_sequencer_read_horizon(&feed.seq, PQgetisnull(res, 0, 7) ?
							  PG_INT64_MAX : rt_db_value_int64(res, 0, 7));
	feed_settled_at(res, 8);

	for (int row = 1; row < nrows; row++)
	{
		int64		id = rt_db_value_int64(res, row, 0);
		RtStreamEvent *ev;

		last_row = id;
		if (!rt_sequencer_accept(&feed.seq, id))
			continue;
		ev = rt_db_event_from_row(res, row);
		if (ev != NULL)
			rt_stream_deliver(ev);
		else
			rt_stream_drop(id);
	}
	/* A full page may stop short of the range: done up to its last row. */
	if (nrows - 1 == FEED_READ_LIMIT)
		upto = last_row;
	rt_sequencer_read_done(&feed.seq, upto);
}

/* The highest id, the horizon and the WAL position, after (re)connecting. */
static void
feed_init_result(const PGresult *res)
{
	int64		highest;
	int64		start;

	if (PQntuples(res) != 1 || PQnfields(res) != 3)
	{
		rt_db_fail(feed.db, "the feed's first read returned no row");
		return;
	}
	highest = rt_db_value_int64(res, 0, 0);
	/* Ids below an open transaction's may still commit: start before it. */
	start = PQgetisnull(res, 0, 1) ? highest :
		Min(highest, rt_db_value_int64(res, 0, 1) - 1);
	feed_settled_at(res, 2);

	if (feed.seq_started && highest < feed.seq.decided)
	{
		elog(LOG, "rtevents feed: event ids went back from " INT64_FORMAT " to " INT64_FORMAT " (was the extension recreated?); restarting the stream",
			 feed.seq.decided, highest);
		feed.seq_started = false;
	}
	if (!feed.seq_started)
	{
		rt_sequencer_init(&feed.seq, start);
		rt_stream_start(start);
		rt_sequencer_announce(&feed.seq, feed.early_announced);
		feed.seq_started = true;
	}
	rt_sequencer_announce(&feed.seq, highest);
}

static void
feed_schema_result(const PGresult *res)
{
	const char *schema;

	if (PQntuples(res) != 1)
	{
		if (!feed.schema_missing_logged)
			elog(LOG, "rtevents feed: extension rtevents is not installed in the feed's database; waiting for CREATE EXTENSION");
		feed.schema_missing_logged = true;
		return;
	}
	feed.schema_missing_logged = false;
	schema = PQgetvalue(res, 0, 0);
	if (strlen(schema) >= sizeof(feed.schema))
	{
		rt_db_fail(feed.db, "extension schema name too long");
		return;
	}
	strlcpy(feed.schema, schema, sizeof(feed.schema));

	/*
	 * pg_current_wal_insert_lsn() is computed once the function has run, so
	 * after the snapshot that read the rows: every commit it saw is below.
	 */
	snprintf(feed.read_sql, sizeof(feed.read_sql),
			 "SELECT id, type, execution_id, batch_id, job_id, organization_id,"
			 " event, horizon,"
			 " CASE WHEN id IS NULL THEN pg_catalog.pg_current_wal_insert_lsn() END"
			 " FROM %s.rt_read_events($1, $2, $3)", schema);
	snprintf(feed.admin_sql, sizeof(feed.admin_sql),
			 "SELECT deleted, next_after FROM %s.rt_delete_events($1::timestamptz,"
			 " $2::bigint, $3::integer)", schema);
	snprintf(feed.init_sql, sizeof(feed.init_sql),
			 "SELECT coalesce((SELECT max(id) FROM %s.execution_events), 0), horizon,"
			 " pg_catalog.pg_current_wal_insert_lsn()"
			 " FROM %s.rt_read_events(0, 0, 1)", schema, schema);
	feed.schema_known = true;
}

/* One result of the query in flight. */
static void
feed_on_result(PGresult *res)
{
	ExecStatusType status = PQresultStatus(res);

	if (status != PGRES_TUPLES_OK && feed.query == FEED_Q_ADMIN)
	{
		elog(LOG, "rtevents feed: a delete failed: %s", PQresultErrorMessage(res));
		feed.admin_failed = true;
		return;
	}
	if (feed.query == FEED_Q_LISTEN)
	{
		if (status != PGRES_COMMAND_OK)
		{
			char		why[256];

			snprintf(why, sizeof(why), "LISTEN failed: %s",
					 PQresultErrorMessage(res));
			rt_db_fail(feed.db, why);
			return;
		}
		feed.listening = true;
		elog(LOG, "rtevents feed: listening on channel \"%s\"", feed.channel);
		return;
	}
	if (status != PGRES_TUPLES_OK)
	{
		char		why[256];

		snprintf(why, sizeof(why), "reading events failed: %s",
				 PQresultErrorMessage(res));
		rt_db_fail(feed.db, why);
		return;
	}
	switch (feed.query)
	{
		case FEED_Q_SCHEMA:
			feed_schema_result(res);
			break;
		case FEED_Q_INIT:
			feed_init_result(res);
			break;
		case FEED_Q_READ:
			feed_read_result(res);
			break;
		case FEED_Q_ADMIN:
			if (PQntuples(res) != 1 || PQnfields(res) != 2 || PQgetisnull(res, 0, 0))
				feed.admin_failed = true;
			else
			{
				feed.admin_deleted = rt_db_value_int64(res, 0, 0);
				feed.admin_has_next = !PQgetisnull(res, 0, 1);
				feed.admin_next = feed.admin_has_next ? rt_db_value_int64(res, 0, 1) : 0;
			}
			break;
		case FEED_Q_LISTEN:
		case FEED_Q_NONE:
			break;
	}
}

/* The query in flight has delivered all its results: what next. */
static void
feed_on_done(void)
{
	FeedQuery	done = feed.query;

	feed.query = FEED_Q_NONE;
	switch (done)
	{
		case FEED_Q_LISTEN:
			feed_send_schema_query();
			return;
		case FEED_Q_SCHEMA:
			if (feed.schema_known)
			{
				feed_send(FEED_Q_INIT, feed.init_sql, 0, NULL);
				rt_replay_kick();	/* replays wait for the schema */
			}
			else
				rt_server_schedule(&feed.read_timer,
								   feed_schema_retry,
								   (lws_usec_t) FEED_SCHEMA_RETRY_MS * LWS_US_PER_MS);
			return;
		case FEED_Q_INIT:
			feed_next_query();
			return;
		case FEED_Q_ADMIN:
			rt_admin_done(!feed.admin_failed, false, feed.admin_deleted,
						  feed.admin_has_next, feed.admin_next);
			feed.admin_failed = false;
			feed_next_query();
			return;
		case FEED_Q_READ:
			break;
		case FEED_Q_NONE:
			return;
	}

	if (!rt_sequencer_behind(&feed.seq) || feed.seq.decided > feed.read_decided)
		hold_end();
	if (!rt_sequencer_behind(&feed.seq))
	{
		feed.read_retry_ms = FEED_READ_RETRY_MIN_MS;
		feed_next_query();
		return;
	}
	/* Progress, or news since the read was sent: read again now. */
	if (feed.seq.decided > feed.read_decided ||
		feed.seq.announced > feed.read_announced)
	{
		feed.read_retry_ms = FEED_READ_RETRY_MIN_MS;
		feed_next_query();
		return;
	}
	/*
	 * Held back by an open transaction: look again soon, then less often,
	 * or at the next notification.  Deletes go on meanwhile.
	 */
	if (feed.held_since == 0)
	{
		feed.held_since = GetCurrentTimestamp();
		feed.holds++;
	}
	feed.read_blocked = true;
	rt_server_schedule(&feed.read_timer, feed_read_retry,
					   (lws_usec_t) feed.read_retry_ms * LWS_US_PER_MS);
	feed.read_retry_ms = Min(feed.read_retry_ms * 2, FEED_READ_RETRY_MAX_MS);
	feed_next_query();
}

/*
 * How long the stream waits on open publishing transactions, for /metrics:
 * the wait going on now, and those that ended.
 */
static void
hold_end(void)
{
	if (feed.held_since == 0)
		return;
	feed.held_seconds += (double) (GetCurrentTimestamp() - feed.held_since) /
		USECS_PER_SEC;
	feed.held_since = 0;
}

double
rt_feed_held_now(void)
{
	if (feed.held_since == 0)
		return 0;
	return (double) (GetCurrentTimestamp() - feed.held_since) / USECS_PER_SEC;
}

double
rt_feed_held_total(void)
{
	return feed.held_seconds + rt_feed_held_now();
}

uint64
rt_feed_holds(void)
{
	return feed.holds;
}

/*
 * One notification's payload: it names the highest id drawn so far; the
 * rows themselves are read from the table.
 */
static void
feed_on_notify(const char *payload)
{
	int64		id;

	feed.notifications++;
	if (!rt_payload_highest_id(payload, &id))
		return;					/* someone else's NOTIFY on our channel */
	if (!feed.seq_started)
	{
		feed.early_announced = Max(feed.early_announced, id);
		/* The extension has just been created, most likely: look now. */
		if (feed.listening && !feed.schema_known && rt_db_idle(feed.db) &&
			feed.query == FEED_Q_NONE)
		{
			lws_sul_cancel(&feed.read_timer);
			feed_send_schema_query();
		}
		return;
	}
	rt_sequencer_announce(&feed.seq, id);
	feed_next_query();
}

static const RtDbHooks feed_hooks = {
	.on_up = feed_on_up,
	.on_result = feed_on_result,
	.on_done = feed_on_done,
	.on_notify = feed_on_notify,
	.on_lost = feed_on_lost
};

/* ----------------------------------------------------------------
 * Interface
 * ----------------------------------------------------------------
 */

/* Main loop: connect. */
void
rt_feed_start(void)
{
	feed.channel = MemoryContextStrdup(TopMemoryContext, rt_channel);
	feed.db = rt_db_start("rtevents feed", "the LISTEN connection",
						  rt_feed_conninfo, &feed_hooks);
}

/* Main loop, after a configuration reload. */
void
rt_feed_reload(void)
{
	if (feed.db == NULL || rt_db_phase(feed.db) == RT_DB_STOPPED)
		return;
	if (strcmp(rt_channel, feed.channel) == 0 &&
		!rt_db_conninfo_changed(feed.db, rt_feed_conninfo))
		return;

	elog(LOG, "rtevents feed: settings changed; reconnecting");
	pfree(feed.channel);
	feed.channel = MemoryContextStrdup(TopMemoryContext, rt_channel);
	rt_db_restart(feed.db, rt_feed_conninfo);
}

/* Main loop, at exit: end the session so a smart shutdown can go on. */
void
rt_feed_stop(void)
{
	if (feed.db != NULL)
		rt_db_stop(feed.db);
}

RtFeedState
rt_feed_state(void)
{
	switch (feed.db ? rt_db_phase(feed.db) : RT_DB_IDLE)
	{
		case RT_DB_UP:
			/* Up means events flow: listening, the stream begun. */
			return feed.listening && feed.schema_known && feed.seq_started ?
				RT_FEED_UP : RT_FEED_CONNECTING;
		case RT_DB_CONNECTING:
			return RT_FEED_CONNECTING;
		default:
			return RT_FEED_DOWN;
	}
}

uint64
rt_feed_notifications(void)
{
	return feed.notifications;
}

/* Something was queued for the connection (a delete): run it if idle. */
void
rt_feed_kick(void)
{
	feed_next_query();
}

/*
 * Between writes to clients (rt_clients_write): hear of new events now, not
 * after the turn's writes, which to thousands of clients take milliseconds.
 * A notification heard here sends the read at once, and the read's result,
 * heard here too, goes into the frames of this turn's clients still to be
 * written; those already written get it next turn.  Without this, an event
 * would wait for the end of the turn to be heard of, and for the end of the
 * next for its read.
 */
void
rt_feed_poll(void)
{
	if (feed.db != NULL && rt_db_poll(feed.db))
		feed.heard_while_writing++;
}

uint64
rt_feed_heard_while_writing(void)
{
	return feed.heard_while_writing;
}

uint64
rt_feed_reads(void)
{
	return feed.reads;
}

/*
 * Where replays find the extension (quoted), NULL until the feed first
 * knows; the stream cannot have started before it does.
 */
const char *
rt_feed_schema(void)
{
	return feed.schema[0] != '\0' ? feed.schema : NULL;
}

/* The primary's WAL position after the stream's last read (see above). */
XLogRecPtr
rt_feed_settled_lsn(void)
{
	return feed.settled_lsn;
}

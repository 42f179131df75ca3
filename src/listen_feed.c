/*-------------------------------------------------------------------------
 *
 * listen_feed.c
 *		The server worker's LISTEN connection: how published events reach
 *		the worker.
 *
 * The feed is an ordinary libpq session (application_name "rtevents feed")
 * that LISTENs on rtevents.channel.  It lives inside the worker's event
 * loop, so nothing here may block or ereport(ERROR):
 *
 *	- connecting is PQconnectStartParams + PQconnectPoll, one step per
 *	  readiness of the socket libpq asked about;
 *	- the socket is watched as a dup(): lws closes what it watches, and the
 *	  socket is libpq's to close.  libpq may switch sockets between two
 *	  connect steps (the next address of a host, the next host), and the new
 *	  socket can reuse the old one's number, so the watch is renewed whenever
 *	  the socket's identity (inode, not number) changes;
 *	- once connected it sends LISTEN and, on every readable event, consumes
 *	  input and hands each notification's payload to rt_feed_on_notify().
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
 * A lost connection (pg_terminate_backend, a restart of the primary, a
 * network failure caught by keepalives) or a failed attempt is retried on an
 * lws_sul timer, 100 ms after the failure and doubling up to 5 s; an attempt
 * that has not reached LISTEN within connect_timeout (10 s unless the
 * conninfo says otherwise: libpq enforces it only when blocking) is given up
 * and retried the same way.
 *
 * One step cannot be made non-blocking: libpq resolves host names with
 * getaddrinfo() inside the connect calls.  The default, a Unix socket, and
 * hostaddr= in rtevents.feed_conninfo involve no lookup.
 *
 * The connection parameters are built in the main loop, where palloc and
 * the configuration may throw, and only read inside the loop.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libwebsockets.h>

#include "common/username.h"
#include "libpq-fe.h"
#include "miscadmin.h"
#include "postmaster/postmaster.h"
#include "utils/memutils.h"
#include "utils/varlena.h"

#include "rtevents.h"

#define FEED_DRAIN_ROUNDS		64		/* reads of the socket per turn of the loop, at most */
#define FEED_BACKOFF_MIN_MS		100
#define FEED_BACKOFF_MAX_MS		5000
#define FEED_CONNECT_TIMEOUT_S	10
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
	FEED_Q_REPLAY,				/* a page of a client's replay (replay.c) */
	FEED_Q_ADMIN				/* a stretch of an admin's delete (admin.c) */
} FeedQuery;

typedef enum FeedPhase
{
	FEED_IDLE,					/* no connection; a retry is scheduled */
	FEED_CONNECTING,			/* PQconnectPoll under way */
	FEED_LISTENING,				/* LISTEN sent, its result not yet in */
	FEED_UP,					/* listening */
	FEED_STOPPED				/* rt_feed_stop(): for good */
} FeedPhase;

typedef struct Feed
{
	FeedPhase	phase;
	PGconn	   *conn;
	struct lws *wsi;			/* watches a dup of PQsocket(conn) */
	dev_t		watched_dev;	/* identity of the socket the dup copies */
	ino_t		watched_ino;
	PostgresPollingStatusType polling;	/* what PQconnectPoll waits for */
	int			backoff_ms;		/* delay before the next retry */
	lws_sorted_usec_list_t retry_timer;
	lws_sorted_usec_list_t deadline_timer;
	uint64		notifications;
	char		last_error[256];	/* the last failure logged */

	/* Reading events (see the header comment) */
	FeedQuery	query;			/* the query in flight */
	bool		schema_known;	/* read_sql and init_sql are built */
	bool		schema_missing_logged;
	char		init_sql[256 + 4 * NAMEDATALEN];
	char		read_sql[256 + 2 * NAMEDATALEN];
	char		replay_sql[1024 + 8 * NAMEDATALEN];
	bool		replay_failed;	/* the replay page in flight failed */
	char		admin_sql[256 + 2 * NAMEDATALEN];
	bool		admin_failed;	/* the stretch in flight failed */
	int64		admin_deleted;	/* its result */
	bool		admin_has_next;
	int64		admin_next;
	bool		admin_turn;		/* replays and deletes take turns */
	RtSequencer seq;
	bool		seq_started;	/* the live stream's start is known */
	int64		early_announced;	/* announced before it was */
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
} Feed;

static Feed feed = {
	.phase = FEED_IDLE,
	.backoff_ms = FEED_BACKOFF_MIN_MS,
	.read_retry_ms = FEED_READ_RETRY_MIN_MS
};

/* Built by build_params() outside the loop; read-only inside it. */
static MemoryContext params_cxt = NULL;
static const char **param_keywords = NULL;
static const char **param_values = NULL;
static char *param_channel = NULL;	/* rtevents.channel they were built for */
static char *param_conninfo = NULL; /* rtevents.feed_conninfo, likewise */
static int	param_connect_timeout_s = FEED_CONNECT_TIMEOUT_S;

static int	feed_fd_event(struct lws *wsi, RtFdEvent event, void *arg);

static const RtFdWatch feed_watch = {
	"LISTEN feed socket", feed_fd_event, NULL
};

static bool feed_flush(void);
static void feed_failed(const char *why);
static void feed_send_schema_query(void);
static void feed_result(PGresult *res);
static void feed_query_done(void);

/* ----------------------------------------------------------------
 * Connection parameters (main loop only: these palloc)
 * ----------------------------------------------------------------
 */

/* The first Unix socket directory, or NULL when the server has none. */
static char *
first_socket_directory(void)
{
	char	   *raw = pstrdup(Unix_socket_directories ? Unix_socket_directories : "");
	List	   *dirs;

	if (!SplitDirectoriesString(raw, ',', &dirs) || dirs == NIL)
		return NULL;
	return (char *) linitial(dirs);
}

static void
build_params(void)
{
	PQconninfoOption *options = NULL;
	MemoryContext oldcxt;
	int			max;
	int			n = 0;

	if (params_cxt == NULL)
		params_cxt = AllocSetContextCreate(TopMemoryContext,
										   "rtevents feed parameters",
										   ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(params_cxt);
	oldcxt = MemoryContextSwitchTo(params_cxt);

	param_channel = pstrdup(rt_channel);
	param_conninfo = pstrdup(rt_feed_conninfo);
	param_connect_timeout_s = FEED_CONNECT_TIMEOUT_S;

	/* Validated by the GUC check hook; NULL here means out of memory. */
	if (param_conninfo[0] != '\0')
	{
		char	   *parse_error = NULL;

		options = PQconninfoParse(param_conninfo, &parse_error);
		if (options == NULL)
			ereport(ERROR,
					(errmsg("rtevents feed: invalid rtevents.feed_conninfo: %s",
							parse_error ? parse_error : "out of memory")));
	}

	max = 16;
	for (PQconninfoOption *o = options; o != NULL && o->keyword != NULL; o++)
		max++;
	param_keywords = palloc0(sizeof(char *) * max);
	param_values = palloc0(sizeof(char *) * max);

#define ADD_PARAM(k, v) \
	do { \
		Assert(n < max - 1); \
		param_keywords[n] = (k); \
		param_values[n] = (v); \
		n++; \
	} while (0)

	/*
	 * Defaults first: libpq takes the last nonempty value of a keyword, so
	 * the conninfo overrides these, and what follows it overrides it.
	 */
	ADD_PARAM("dbname", pstrdup(rt_database));
	/* An idle LISTEN connection notices a dead peer only by keepalives. */
	ADD_PARAM("keepalives_idle", "10");
	ADD_PARAM("keepalives_interval", "10");
	ADD_PARAM("keepalives_count", "3");

	if (options == NULL)
	{
		/* This server, as its postmaster would be reached locally. */
		char	   *socket_dir = first_socket_directory();
		char	   *user_error = NULL;
		const char *user = get_user_name(&user_error);

		ADD_PARAM("host", socket_dir ? socket_dir : "localhost");
		ADD_PARAM("port", psprintf("%d", PostPortNumber));
		if (user != NULL)
			ADD_PARAM("user", pstrdup(user));
	}
	else
	{
		for (PQconninfoOption *o = options; o->keyword != NULL; o++)
		{
			if (o->val == NULL || o->val[0] == '\0')
				continue;
			ADD_PARAM(pstrdup(o->keyword), pstrdup(o->val));
			if (strcmp(o->keyword, "connect_timeout") == 0 && atoi(o->val) > 0)
				param_connect_timeout_s = atoi(o->val);
		}
		PQconninfoFree(options);
	}

	/* Operators find the feed by its name; payloads are JSON, so UTF-8. */
	ADD_PARAM("application_name", "rtevents feed");
	ADD_PARAM("client_encoding", "UTF8");
	param_keywords[n] = NULL;
	param_values[n] = NULL;
#undef ADD_PARAM

	MemoryContextSwitchTo(oldcxt);
}

/* ----------------------------------------------------------------
 * The connection (loop-safe from here on: malloc'd by libpq, no ERROR)
 * ----------------------------------------------------------------
 */

static void feed_connect(void);
static void hold_end(void);

/* Drop the connection, if any, and its watch and deadline. */
static void
feed_close(void)
{
	lws_sul_cancel(&feed.deadline_timer);
	lws_sul_cancel(&feed.read_timer);
	feed.read_blocked = false;
	hold_end();
	if (feed.query == FEED_Q_REPLAY)
		rt_replay_page_lost();
	if (feed.query == FEED_Q_ADMIN)
		rt_admin_done(false, true, 0, false, 0);
	feed.query = FEED_Q_NONE;
	feed.schema_known = false;
	if (feed.wsi != NULL)
	{
		rt_server_unwatch_fd(feed.wsi);
		feed.wsi = NULL;
	}
	if (feed.conn != NULL)
	{
		PQfinish(feed.conn);
		feed.conn = NULL;
	}
}

static void
feed_retry(lws_sorted_usec_list_t *sul)
{
	if (feed.phase == FEED_IDLE)
		feed_connect();
}

/*
 * The connection failed or was lost: log it (once per distinct reason while
 * it keeps failing), close it, and schedule the next attempt.
 */
static void
feed_failed(const char *why)
{
	char		reason[sizeof(feed.last_error)];
	bool		was_up = (feed.phase == FEED_UP);
	char	   *p;

	/*
	 * why may point into the connection: copy it before closing that, as
	 * one line (libpq's messages span several, indented with tabs).
	 */
	p = reason;
	for (const char *q = why; *q != '\0' && p < reason + sizeof(reason) - 1; q++)
	{
		bool		space = (*q == '\n' || *q == '\t' || *q == ' ');

		if (space && (p == reason || p[-1] == ' '))
			continue;
		*p++ = space ? ' ' : *q;
	}
	while (p > reason && p[-1] == ' ')
		p--;
	*p = '\0';

	feed_close();
	feed.phase = FEED_IDLE;

	if (was_up)
		elog(LOG, "rtevents feed: lost the LISTEN connection: %s; reconnecting",
			 reason);
	else if (strcmp(reason, feed.last_error) != 0)
		elog(LOG, "rtevents feed: could not connect: %s; retrying", reason);
	strlcpy(feed.last_error, reason, sizeof(feed.last_error));

	rt_server_schedule(&feed.retry_timer, feed_retry,
					   (lws_usec_t) feed.backoff_ms * LWS_US_PER_MS);
	feed.backoff_ms = Min(feed.backoff_ms * 2, FEED_BACKOFF_MAX_MS);
}

static void
feed_deadline(lws_sorted_usec_list_t *sul)
{
	char		why[64];

	if (feed.phase != FEED_CONNECTING && feed.phase != FEED_LISTENING)
		return;
	snprintf(why, sizeof(why), "timed out after %d s", param_connect_timeout_s);
	feed_failed(why);
}

/* Server messages (the FATAL of pg_terminate_backend, say) go to the log. */
static void
feed_notice(void *arg, const PGresult *res)
{
	const char *msg = PQresultErrorMessage(res);
	size_t		len = strlen(msg);

	while (len > 0 && msg[len - 1] == '\n')
		len--;
	elog(LOG, "rtevents feed: server said: %.*s", (int) len, msg);
}

/*
 * Make the watch follow PQsocket(conn) and ask for writability when libpq
 * waits for it.  Returns false, with the reason in libpq's or errno's
 * words left to the caller, when the socket cannot be watched.
 */
static bool
feed_watch_socket(bool want_write)
{
	int			sock = PQsocket(feed.conn);
	struct stat st;

	if (sock < 0 || fstat(sock, &st) != 0)
		return false;

	if (feed.wsi == NULL ||
		st.st_dev != feed.watched_dev || st.st_ino != feed.watched_ino)
	{
		int			dupfd;

		if (feed.wsi != NULL)
		{
			rt_server_unwatch_fd(feed.wsi);
			feed.wsi = NULL;
		}
		dupfd = fcntl(sock, F_DUPFD_CLOEXEC, 0);
		if (dupfd < 0)
			return false;
		feed.wsi = rt_server_watch_fd(dupfd, &feed_watch);
		if (feed.wsi == NULL)
			return false;
		feed.watched_dev = st.st_dev;
		feed.watched_ino = st.st_ino;
	}

	if (want_write)
		rt_server_want_writable(feed.wsi);
	return true;
}

static void
feed_connect(void)
{
	Assert(feed.conn == NULL && feed.wsi == NULL);

	feed.conn = PQconnectStartParams(param_keywords, param_values, 0);
	if (feed.conn == NULL)
	{
		feed_failed("out of memory");
		return;
	}
	if (PQstatus(feed.conn) == CONNECTION_BAD)
	{
		feed_failed(PQerrorMessage(feed.conn));
		return;
	}
	PQsetNoticeReceiver(feed.conn, feed_notice, NULL);

	feed.phase = FEED_CONNECTING;
	/* as the libpq documentation says to start */
	feed.polling = PGRES_POLLING_WRITING;
	rt_server_schedule(&feed.deadline_timer,
					   feed_deadline,
					   (lws_usec_t) param_connect_timeout_s * LWS_US_PER_SEC);
	if (!feed_watch_socket(true))
		feed_failed("could not watch the connection's socket");
}

/* Send what libpq has buffered; ask for writability if it could not. */
static bool
feed_flush(void)
{
	int			rc = PQflush(feed.conn);

	if (rc < 0)
	{
		feed_failed(PQerrorMessage(feed.conn));
		return false;
	}
	if (rc > 0)
		rt_server_want_writable(feed.wsi);
	return true;
}

static void
feed_send_listen(void)
{
	char		command[32 + 2 * NAMEDATALEN];
	char	   *channel;

	channel = PQescapeIdentifier(feed.conn, param_channel, strlen(param_channel));
	if (channel == NULL)
	{
		feed_failed(PQerrorMessage(feed.conn));
		return;
	}
	snprintf(command, sizeof(command), "LISTEN %s", channel);
	PQfreemem(channel);

	if (PQsetnonblocking(feed.conn, 1) != 0 || !PQsendQuery(feed.conn, command))
	{
		feed_failed(PQerrorMessage(feed.conn));
		return;
	}
	feed.phase = FEED_LISTENING;
	feed.query = FEED_Q_LISTEN;
	if (!feed_watch_socket(false))
	{
		feed_failed("could not watch the connection's socket");
		return;
	}
	(void) feed_flush();
}

/* One step of the connection, on the readiness libpq asked for. */
static void
feed_connect_step(void)
{
	feed.polling = PQconnectPoll(feed.conn);
	switch (feed.polling)
	{
		case PGRES_POLLING_FAILED:
			feed_failed(PQerrorMessage(feed.conn));
			break;
		case PGRES_POLLING_OK:
			feed_send_listen();
			break;
		default:
			if (!feed_watch_socket(feed.polling == PGRES_POLLING_WRITING))
				feed_failed("could not watch the connection's socket");
			break;
	}
}

static void
feed_is_up(void)
{
	feed.phase = FEED_UP;
	feed.backoff_ms = FEED_BACKOFF_MIN_MS;
	feed.last_error[0] = '\0';
	lws_sul_cancel(&feed.deadline_timer);
	elog(LOG, "rtevents feed: listening on channel \"%s\"", param_channel);
}

/* Read what arrived: the LISTEN result, notifications, or the end. */
static void
feed_consume_once(void)
{
	PGnotify   *notify;

	if (!PQconsumeInput(feed.conn))
	{
		feed_failed(PQerrorMessage(feed.conn));
		return;
	}

	while (!PQisBusy(feed.conn))
	{
		PGresult   *res = PQgetResult(feed.conn);

		if (res == NULL)
			break;
		if (feed.phase == FEED_UP)
		{
			feed_result(res);
			PQclear(res);
			if (feed.conn == NULL)
				return;			/* the result failed the connection */
			continue;
		}
		if (feed.phase == FEED_LISTENING)
		{
			if (PQresultStatus(res) != PGRES_COMMAND_OK)
			{
				char		why[sizeof(feed.last_error)];

				snprintf(why, sizeof(why), "LISTEN failed: %s",
						 PQresultErrorMessage(res));
				PQclear(res);
				feed_failed(why);
				return;
			}
			feed_is_up();
		}
		PQclear(res);
	}

	while ((notify = PQnotifies(feed.conn)) != NULL)
	{
		rt_feed_on_notify(notify->extra);
		PQfreemem(notify);
	}

	/* A query is complete once libpq has nothing more for it. */
	if (feed.phase == FEED_UP && feed.query != FEED_Q_NONE && !PQisBusy(feed.conn))
	{
		PGresult   *res = PQgetResult(feed.conn);

		if (res == NULL)
			feed_query_done();
		else
		{
			feed_result(res);
			PQclear(res);
		}
	}

	if (feed.conn != NULL && PQstatus(feed.conn) == CONNECTION_BAD)
		feed_failed(PQerrorMessage(feed.conn));
}

/*
 * libpq reads at most its input buffer (16 kB) per PQconsumeInput, and the
 * loop comes back here once per turn, which with thousands of clients is a
 * poll() over all of them.  So drain what the socket already holds, a
 * bounded number of rounds, before going back: a burst of notifications or
 * a big read result costs one turn of the loop, not hundreds.
 */
static void
feed_consume(void)
{
	for (int round = 0; round < FEED_DRAIN_ROUNDS; round++)
	{
		char		byte;

		feed_consume_once();
		if (feed.conn == NULL || PQsocket(feed.conn) < 0 ||
			recv(PQsocket(feed.conn), &byte, 1, MSG_PEEK | MSG_DONTWAIT) <= 0)
			break;
	}
}

/* ----------------------------------------------------------------
 * Reading events (loop-safe: libpq and malloc only)
 * ----------------------------------------------------------------
 */

static void
feed_send(FeedQuery query, const char *sql, int nparams, const char *const *params)
{
	Assert(feed.query == FEED_Q_NONE);
	if (!PQsendQueryParams(feed.conn, sql, nparams, NULL, params, NULL, NULL, 0))
	{
		feed_failed(PQerrorMessage(feed.conn));
		return;
	}
	feed.query = query;
	(void) feed_flush();
}

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
	if (feed.phase == FEED_UP && feed.query == FEED_Q_NONE && !feed.schema_known)
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

	if (feed.phase != FEED_UP || feed.query != FEED_Q_NONE ||
		!feed.schema_known || !feed.seq_started)
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
 * The connection is free: new events first, then a page of a replay.
 */
static void
feed_next_query(void)
{
	const char *params[RT_REPLAY_PARAMS];
	char		buf[4][24];

	feed_maybe_read();
	if (feed.phase != FEED_UP || feed.query != FEED_Q_NONE || !feed.schema_known)
		return;
	feed.admin_turn = !feed.admin_turn;
	if (feed.admin_turn && rt_admin_next(params, buf))
		feed_send(FEED_Q_ADMIN, feed.admin_sql, 3, params);
	else if (rt_replay_next_page(params, buf))
		feed_send(FEED_Q_REPLAY, feed.replay_sql, RT_REPLAY_PARAMS, params);
	else if (rt_admin_next(params, buf))
		feed_send(FEED_Q_ADMIN, feed.admin_sql, 3, params);
}

static void
feed_read_retry(lws_sorted_usec_list_t *sul)
{
	feed.read_blocked = false;
	feed_next_query();
}

static int64
value_int64(const PGresult *res, int row, int col)
{
	return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

static const char *
value_or_null(const PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}

/* An event from a row of id, type, the routing keys and the JSON. */
static RtStreamEvent *
event_from_row(const PGresult *res, int row)
{
	return rt_stream_event_new(value_int64(res, row, 0),
							   value_or_null(res, row, 1),
							   value_or_null(res, row, 2),
							   value_or_null(res, row, 3),
							   value_or_null(res, row, 4),
							   value_or_null(res, row, 5),
							   value_or_null(res, row, 6));
}

/* The rows of rt_read_events: a header with the horizon, then events. */
static void
feed_read_result(const PGresult *res)
{
	int			nrows = PQntuples(res);
	int64		upto = feed.read_upto;
	int64		last_row = 0;

	if (nrows < 1 || PQnfields(res) != 8)
	{
		feed_failed("rt_read_events returned an unexpected result");
		return;
	}
	rt_sequencer_read_horizon(&feed.seq, PQgetisnull(res, 0, 7) ?
							  PG_INT64_MAX : value_int64(res, 0, 7));

	for (int row = 1; row < nrows; row++)
	{
		int64		id = value_int64(res, row, 0);
		RtStreamEvent *ev;

		last_row = id;
		if (!rt_sequencer_accept(&feed.seq, id))
			continue;
		ev = event_from_row(res, row);
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

/* A page of a replay: events as rt_events() finds them. */
static void
feed_replay_result(const PGresult *res)
{
	int			nrows = PQntuples(res);

	if (PQnfields(res) != 8)
	{
		feed_failed("a replay page returned an unexpected result");
		return;
	}
	if (nrows > 0 && !PQgetisnull(res, 0, 7))
		rt_replay_gap(value_int64(res, 0, 7));
	for (int row = 0; row < nrows; row++)
	{
		RtStreamEvent *ev;

		if (PQgetisnull(res, row, 0))
			continue;			/* no events: the row of the gap */
		ev = event_from_row(res, row);

		if (ev == NULL)
		{
			feed.replay_failed = true;
			return;
		}
		rt_replay_row(ev);
	}
}

/* The highest id and the horizon, after (re)connecting. */
static void
feed_init_result(const PGresult *res)
{
	int64		highest;
	int64		start;

	if (PQntuples(res) != 1)
	{
		feed_failed("the feed's first read returned no row");
		return;
	}
	highest = value_int64(res, 0, 0);
	/* Ids below an open transaction's may still commit: start before it. */
	start = PQgetisnull(res, 0, 1) ? highest :
		Min(highest, value_int64(res, 0, 1) - 1);

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
	if (strlen(schema) > 2 * NAMEDATALEN + 2)
	{
		feed_failed("extension schema name too long");
		return;
	}
	snprintf(feed.read_sql, sizeof(feed.read_sql),
			 "SELECT id, type, execution_id, batch_id, job_id, organization_id,"
			 " event, horizon FROM %s.rt_read_events($1, $2, $3)", schema);
	/*
	 * One row at least, for the gap: rt_gap() when the page asks, then the
	 * events (none: one row of nulls).
	 */
	snprintf(feed.replay_sql, sizeof(feed.replay_sql),
			 "SELECT e.id, e.type, e.execution_id, e.batch_id, e.job_id,"
			 " e.organization_id::text,"
			 " CASE WHEN e.id IS NOT NULL THEN %s.rt_event_json(e) END, g.gap"
			 " FROM (SELECT CASE WHEN $12::boolean THEN %s.rt_gap($6::bigint) END AS gap) g"
			 " LEFT JOIN LATERAL %s.rt_events(execution_id => $1, batch_id => $2, job_id => $3,"
			 " organization_id => $4::uuid, types => $5::text[], after => $6::bigint,"
			 " since => $7::timestamptz, until => $8::timestamptz,"
			 " lim => $9::integer, off => $10::integer) e ON e.id <= $11::bigint",
			 schema, schema, schema);
	snprintf(feed.admin_sql, sizeof(feed.admin_sql),
			 "SELECT deleted, next_after FROM %s.rt_delete_events($1::timestamptz,"
			 " $2::bigint, $3::integer)", schema);
	snprintf(feed.init_sql, sizeof(feed.init_sql),
			 "SELECT coalesce((SELECT max(id) FROM %s.execution_events), 0), horizon"
			 " FROM %s.rt_read_events(0, 0, 1)", schema, schema);
	feed.schema_known = true;
}

/* One result of the query in flight. */
static void
feed_result(PGresult *res)
{
	ExecStatusType status = PQresultStatus(res);

	if (status != PGRES_TUPLES_OK && feed.query == FEED_Q_ADMIN)
	{
		elog(LOG, "rtevents feed: a delete failed: %s", PQresultErrorMessage(res));
		feed.admin_failed = true;
		return;
	}
	if (status != PGRES_TUPLES_OK && feed.query == FEED_Q_REPLAY)
	{
		/* The client's filter, not the feed, is at fault: tell the client. */
		elog(LOG, "rtevents feed: a replay failed: %s", PQresultErrorMessage(res));
		feed.replay_failed = true;
		return;
	}
	if (status != PGRES_TUPLES_OK)
	{
		char		why[sizeof(feed.last_error)];

		snprintf(why, sizeof(why), "reading events failed: %s",
				 PQresultErrorMessage(res));
		feed_failed(why);
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
		case FEED_Q_REPLAY:
			feed_replay_result(res);
			break;
		case FEED_Q_ADMIN:
			if (PQntuples(res) != 1 || PQnfields(res) != 2 || PQgetisnull(res, 0, 0))
				feed.admin_failed = true;
			else
			{
				feed.admin_deleted = value_int64(res, 0, 0);
				feed.admin_has_next = !PQgetisnull(res, 0, 1);
				feed.admin_next = feed.admin_has_next ? value_int64(res, 0, 1) : 0;
			}
			break;
		case FEED_Q_LISTEN:
		case FEED_Q_NONE:
			break;
	}
}

/* The query in flight has delivered all its results: what next. */
static void
feed_query_done(void)
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
				feed_send(FEED_Q_INIT, feed.init_sql, 0, NULL);
			else
				rt_server_schedule(&feed.read_timer,
								   feed_schema_retry,
								   (lws_usec_t) FEED_SCHEMA_RETRY_MS * LWS_US_PER_MS);
			return;
		case FEED_Q_INIT:
			feed_next_query();
			return;
		case FEED_Q_REPLAY:
			rt_replay_page_done(!feed.replay_failed);
			feed.replay_failed = false;
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
	 * or at the next notification.  Replays go on meanwhile.
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

static int
feed_fd_event(struct lws *wsi, RtFdEvent event, void *arg)
{
	if (wsi != feed.wsi || feed.conn == NULL)
		return 1;				/* a watch left over from an older socket */

	if (event == RT_FD_CLOSED)
	{
		/*
		 * Hung up.  lws has closed our dup; let libpq find out why (it reads
		 * the error or EOF without blocking) so that the log says so.
		 */
		feed.wsi = NULL;
		if (feed.phase == FEED_CONNECTING)
			feed_connect_step();
		else
		{
			feed_consume();
			if (feed.conn != NULL && feed.wsi == NULL)
				feed_failed("connection hung up");
		}
		return 0;
	}

	switch (feed.phase)
	{
		case FEED_CONNECTING:
			/* PQconnectPoll acts as if ready: call it only when it is */
			if ((event == RT_FD_READABLE && feed.polling == PGRES_POLLING_READING) ||
				(event == RT_FD_WRITABLE && feed.polling == PGRES_POLLING_WRITING))
				feed_connect_step();
			break;
		case FEED_LISTENING:
		case FEED_UP:
			if (event == RT_FD_WRITABLE)
				(void) feed_flush();
			else
				feed_consume();
			break;
		default:
			break;
	}
	return 0;
}

/* ----------------------------------------------------------------
 * Interface
 * ----------------------------------------------------------------
 */

/* Main loop: build the parameters and make the first attempt. */
void
rt_feed_start(void)
{
	build_params();
	feed_connect();
}

/* Main loop, after a configuration reload. */
void
rt_feed_reload(void)
{
	if (feed.phase == FEED_STOPPED)
		return;
	if (strcmp(rt_channel, param_channel) == 0 &&
		strcmp(rt_feed_conninfo, param_conninfo) == 0)
		return;

	elog(LOG, "rtevents feed: settings changed; reconnecting");
	feed_close();
	lws_sul_cancel(&feed.retry_timer);
	feed.phase = FEED_IDLE;
	feed.backoff_ms = FEED_BACKOFF_MIN_MS;
	feed.last_error[0] = '\0';
	build_params();
	feed_connect();
}

/* Main loop, at exit: end the session so a smart shutdown can go on. */
void
rt_feed_stop(void)
{
	lws_sul_cancel(&feed.retry_timer);
	feed_close();
	feed.phase = FEED_STOPPED;
}

RtFeedState
rt_feed_state(void)
{
	switch (feed.phase)
	{
		case FEED_UP:
			/* Up means events flow: the extension found, the stream begun. */
			return feed.schema_known && feed.seq_started ?
				RT_FEED_UP : RT_FEED_CONNECTING;
		case FEED_CONNECTING:
		case FEED_LISTENING:
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

/*
 * One notification's payload: it names the highest id drawn so far; the
 * rows themselves are read from the table.
 */
void
rt_feed_on_notify(const char *payload)
{
	int64		id;

	feed.notifications++;
	if (!rt_payload_highest_id(payload, &id))
		return;					/* someone else's NOTIFY on our channel */
	if (!feed.seq_started)
	{
		feed.early_announced = Max(feed.early_announced, id);
		/* The extension has just been created, most likely: look now. */
		if (feed.phase == FEED_UP && !feed.schema_known &&
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

/* Something was queued for the connection (a replay): run it if idle. */
void
rt_feed_kick(void)
{
	feed_next_query();
}

uint64
rt_feed_reads(void)
{
	return feed.reads;
}

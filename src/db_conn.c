/*-------------------------------------------------------------------------
 *
 * db_conn.c
 *		A libpq connection inside the server worker's event loop.
 *
 * The worker talks to Postgres over two ordinary libpq sessions: the LISTEN
 * feed (listen_feed.c), which may point at another server, and the replay
 * connection (replay.c), which is always this one.  This file owns what
 * they share, so that nothing in either may block or ereport(ERROR):
 *
 *	- connecting is PQconnectStartParams + PQconnectPoll, one step per
 *	  readiness of the socket libpq asked about;
 *	- the socket is watched as a dup(): lws closes what it watches, and the
 *	  socket is libpq's to close.  libpq may switch sockets between two
 *	  connect steps (the next address of a host, the next host), and the new
 *	  socket can reuse the old one's number, so the watch is renewed whenever
 *	  the socket's identity (inode, not number) changes;
 *	- once connected, one query at a time: the owner sends it, and hears of
 *	  each of its results, of its end, and of notifications;
 *	- a lost connection (pg_terminate_backend, a restart of the server, a
 *	  network failure caught by keepalives) or a failed attempt is logged
 *	  once per distinct reason and retried on an lws_sul timer, 100 ms after
 *	  the failure and doubling up to 5 s; an attempt that has not connected
 *	  within connect_timeout (10 s unless the conninfo says otherwise: libpq
 *	  enforces it only when blocking) is given up and retried the same way.
 *
 * One step cannot be made non-blocking: libpq resolves host names with
 * getaddrinfo() inside the connect calls.  The default, a Unix socket, and
 * hostaddr= in a conninfo involve no lookup.
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

#define DB_DRAIN_ROUNDS			64	/* reads of the socket per turn of the loop, at most */
#define DB_BACKOFF_MIN_MS		100
#define DB_BACKOFF_MAX_MS		5000
#define DB_CONNECT_TIMEOUT_S	10

struct RtDbConn
{
	const char *name;			/* application_name, and the log's prefix */
	const char *what;			/* what it is, for the log */
	const RtDbHooks *hooks;
	RtFdWatch	watch;
	RtDbPhase	phase;
	PGconn	   *conn;
	struct lws *wsi;			/* watches a dup of PQsocket(conn) */
	dev_t		watched_dev;	/* identity of the socket the dup copies */
	ino_t		watched_ino;
	PostgresPollingStatusType polling;	/* what PQconnectPoll waits for */
	bool		busy;			/* a query is in flight */
	int			backoff_ms;		/* delay before the next retry */
	lws_sorted_usec_list_t retry_timer;
	lws_sorted_usec_list_t deadline_timer;
	char		last_error[256];	/* the last failure logged */

	/* Built by build_params() outside the loop; read-only inside it. */
	MemoryContext params_cxt;
	const char **keywords;
	const char **values;
	char	   *conninfo;		/* what they were built from */
	int			connect_timeout_s;
};

static int	db_fd_event(struct lws *wsi, RtFdEvent event, void *arg);
static void db_connect(RtDbConn *c);

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

/*
 * Build the parameters of a connection: conninfo, or when it is empty this
 * server over its Unix socket, to rtevents.database.  The GUC check hook has
 * validated conninfo; a failure to parse it here means out of memory.
 */
static void
build_params(RtDbConn *c, const char *conninfo)
{
	PQconninfoOption *options = NULL;
	MemoryContext oldcxt;
	int			max;
	int			n = 0;

	if (c->params_cxt == NULL)
		c->params_cxt = AllocSetContextCreate(TopMemoryContext,
											  "rtevents connection parameters",
											  ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(c->params_cxt);
	oldcxt = MemoryContextSwitchTo(c->params_cxt);

	c->conninfo = pstrdup(conninfo);
	c->connect_timeout_s = DB_CONNECT_TIMEOUT_S;

	if (conninfo[0] != '\0')
	{
		char	   *parse_error = NULL;

		options = PQconninfoParse(conninfo, &parse_error);
		if (options == NULL)
			ereport(ERROR,
					(errmsg("%s: invalid connection string: %s", c->name,
							parse_error ? parse_error : "out of memory")));
	}

	max = 16;
	for (PQconninfoOption *o = options; o != NULL && o->keyword != NULL; o++)
		max++;
	c->keywords = palloc0(sizeof(char *) * max);
	c->values = palloc0(sizeof(char *) * max);

#define ADD_PARAM(k, v) \
	do { \
		Assert(n < max - 1); \
		c->keywords[n] = (k); \
		c->values[n] = (v); \
		n++; \
	} while (0)

	/*
	 * Defaults first: libpq takes the last nonempty value of a keyword, so
	 * the conninfo overrides these, and what follows it overrides it.
	 */
	ADD_PARAM("dbname", pstrdup(rt_database));
	/* An idle connection notices a dead peer only by keepalives. */
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
				c->connect_timeout_s = atoi(o->val);
		}
		PQconninfoFree(options);
	}

	/* Operators find the connection by its name; payloads are JSON, UTF-8. */
	ADD_PARAM("application_name", c->name);
	ADD_PARAM("client_encoding", "UTF8");
	c->keywords[n] = NULL;
	c->values[n] = NULL;
#undef ADD_PARAM

	MemoryContextSwitchTo(oldcxt);
}

/* ----------------------------------------------------------------
 * The connection (loop-safe from here on: malloc'd by libpq, no ERROR)
 * ----------------------------------------------------------------
 */

/* Drop the connection, if any, and its watch and deadline. */
static void
db_close(RtDbConn *c)
{
	lws_sul_cancel(&c->deadline_timer);
	c->busy = false;
	if (c->wsi != NULL)
	{
		rt_server_unwatch_fd(c->wsi);
		c->wsi = NULL;
	}
	if (c->conn != NULL)
	{
		PQfinish(c->conn);
		c->conn = NULL;
	}
}

static void
db_retry(lws_sorted_usec_list_t *sul)
{
	RtDbConn   *c = lws_container_of(sul, RtDbConn, retry_timer);

	if (c->phase == RT_DB_IDLE)
		db_connect(c);
}

/*
 * The connection failed or was lost: log it (once per distinct reason while
 * it keeps failing), close it, tell the owner, and schedule the next
 * attempt.
 */
void
rt_db_fail(RtDbConn *c, const char *why)
{
	char		reason[sizeof(c->last_error)];
	bool		was_up = (c->phase == RT_DB_UP);
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

	db_close(c);
	c->phase = RT_DB_IDLE;
	c->hooks->on_lost(was_up);

	if (was_up)
		elog(LOG, "%s: lost %s: %s; reconnecting", c->name, c->what, reason);
	else if (strcmp(reason, c->last_error) != 0)
		elog(LOG, "%s: could not connect: %s; retrying", c->name, reason);
	strlcpy(c->last_error, reason, sizeof(c->last_error));

	rt_server_schedule(&c->retry_timer, db_retry,
					   (lws_usec_t) c->backoff_ms * LWS_US_PER_MS);
	c->backoff_ms = Min(c->backoff_ms * 2, DB_BACKOFF_MAX_MS);
}

static void
db_deadline(lws_sorted_usec_list_t *sul)
{
	RtDbConn   *c = lws_container_of(sul, RtDbConn, deadline_timer);
	char		why[64];

	if (c->phase != RT_DB_CONNECTING)
		return;
	snprintf(why, sizeof(why), "timed out after %d s", c->connect_timeout_s);
	rt_db_fail(c, why);
}

/* Server messages (the FATAL of pg_terminate_backend, say) go to the log. */
static void
db_notice(void *arg, const PGresult *res)
{
	RtDbConn   *c = arg;
	const char *msg = PQresultErrorMessage(res);
	size_t		len = strlen(msg);

	while (len > 0 && msg[len - 1] == '\n')
		len--;
	elog(LOG, "%s: server said: %.*s", c->name, (int) len, msg);
}

/*
 * Make the watch follow PQsocket(conn) and ask for writability when libpq
 * waits for it.  Returns false when the socket cannot be watched.
 */
static bool
db_watch_socket(RtDbConn *c, bool want_write)
{
	int			sock = PQsocket(c->conn);
	struct stat st;

	if (sock < 0 || fstat(sock, &st) != 0)
		return false;

	if (c->wsi == NULL ||
		st.st_dev != c->watched_dev || st.st_ino != c->watched_ino)
	{
		int			dupfd;

		if (c->wsi != NULL)
		{
			rt_server_unwatch_fd(c->wsi);
			c->wsi = NULL;
		}
		dupfd = fcntl(sock, F_DUPFD_CLOEXEC, 0);
		if (dupfd < 0)
			return false;
		c->wsi = rt_server_watch_fd(dupfd, &c->watch);
		if (c->wsi == NULL)
			return false;
		c->watched_dev = st.st_dev;
		c->watched_ino = st.st_ino;
	}

	if (want_write)
		rt_server_want_writable(c->wsi);
	return true;
}

static void
db_connect(RtDbConn *c)
{
	Assert(c->conn == NULL && c->wsi == NULL);

	c->conn = PQconnectStartParams(c->keywords, c->values, 0);
	if (c->conn == NULL)
	{
		rt_db_fail(c, "out of memory");
		return;
	}
	if (PQstatus(c->conn) == CONNECTION_BAD)
	{
		rt_db_fail(c, PQerrorMessage(c->conn));
		return;
	}
	PQsetNoticeReceiver(c->conn, db_notice, c);

	c->phase = RT_DB_CONNECTING;
	/* as the libpq documentation says to start */
	c->polling = PGRES_POLLING_WRITING;
	rt_server_schedule(&c->deadline_timer, db_deadline,
					   (lws_usec_t) c->connect_timeout_s * LWS_US_PER_SEC);
	if (!db_watch_socket(c, true))
		rt_db_fail(c, "could not watch the connection's socket");
}

/* Send what libpq has buffered; ask for writability if it could not. */
static bool
db_flush(RtDbConn *c)
{
	int			rc = PQflush(c->conn);

	if (rc < 0)
	{
		rt_db_fail(c, PQerrorMessage(c->conn));
		return false;
	}
	if (rc > 0)
		rt_server_want_writable(c->wsi);
	return true;
}

/* Connected: from now on queries, which the owner sends. */
static void
db_is_up(RtDbConn *c)
{
	if (PQsetnonblocking(c->conn, 1) != 0)
	{
		rt_db_fail(c, PQerrorMessage(c->conn));
		return;
	}
	if (!db_watch_socket(c, false))
	{
		rt_db_fail(c, "could not watch the connection's socket");
		return;
	}
	c->phase = RT_DB_UP;
	c->backoff_ms = DB_BACKOFF_MIN_MS;
	c->last_error[0] = '\0';
	lws_sul_cancel(&c->deadline_timer);
	c->hooks->on_up();
}

/* One step of the connection, on the readiness libpq asked for. */
static void
db_connect_step(RtDbConn *c)
{
	c->polling = PQconnectPoll(c->conn);
	switch (c->polling)
	{
		case PGRES_POLLING_FAILED:
			rt_db_fail(c, PQerrorMessage(c->conn));
			break;
		case PGRES_POLLING_OK:
			db_is_up(c);
			break;
		default:
			if (!db_watch_socket(c, c->polling == PGRES_POLLING_WRITING))
				rt_db_fail(c, "could not watch the connection's socket");
			break;
	}
}

/*
 * Read what arrived: results of the query in flight, its end,
 * notifications.  The owner's hooks may fail the connection (then
 * c->conn is NULL) or send the next query.
 */
static void
db_consume_once(RtDbConn *c)
{
	PGnotify   *notify;

	if (!PQconsumeInput(c->conn))
	{
		rt_db_fail(c, PQerrorMessage(c->conn));
		return;
	}

	while (c->conn != NULL && !PQisBusy(c->conn))
	{
		PGresult   *res = PQgetResult(c->conn);

		if (res == NULL)
		{
			if (!c->busy)
				break;
			/* The query is over: the owner may send the next one. */
			c->busy = false;
			c->hooks->on_done();
			continue;
		}
		if (c->busy)
			c->hooks->on_result(res);
		PQclear(res);
	}

	while (c->conn != NULL && (notify = PQnotifies(c->conn)) != NULL)
	{
		if (c->hooks->on_notify != NULL)
			c->hooks->on_notify(notify->extra);
		PQfreemem(notify);
	}

	if (c->conn != NULL && PQstatus(c->conn) == CONNECTION_BAD)
		rt_db_fail(c, PQerrorMessage(c->conn));
}

/*
 * libpq reads at most its input buffer (16 kB) per PQconsumeInput, and the
 * loop comes back here once per turn, which with thousands of clients is a
 * poll() over all of them.  So drain what the socket already holds, a
 * bounded number of rounds, before going back: a burst of notifications or
 * a big result costs one turn of the loop, not hundreds.
 */
static void
db_consume(RtDbConn *c)
{
	for (int round = 0; round < DB_DRAIN_ROUNDS; round++)
	{
		char		byte;

		db_consume_once(c);
		if (c->conn == NULL || PQsocket(c->conn) < 0 ||
			recv(PQsocket(c->conn), &byte, 1, MSG_PEEK | MSG_DONTWAIT) <= 0)
			break;
	}
}

static int
db_fd_event(struct lws *wsi, RtFdEvent event, void *arg)
{
	RtDbConn   *c = arg;

	if (wsi != c->wsi || c->conn == NULL)
		return 1;				/* a watch left over from an older socket */

	if (event == RT_FD_CLOSED)
	{
		/*
		 * Hung up.  lws has closed our dup; let libpq find out why (it reads
		 * the error or EOF without blocking) so that the log says so.
		 */
		c->wsi = NULL;
		if (c->phase == RT_DB_CONNECTING)
			db_connect_step(c);
		else
		{
			db_consume(c);
			if (c->conn != NULL && c->wsi == NULL)
				rt_db_fail(c, "connection hung up");
		}
		return 0;
	}

	switch (c->phase)
	{
		case RT_DB_CONNECTING:
			/* PQconnectPoll acts as if ready: call it only when it is */
			if ((event == RT_FD_READABLE && c->polling == PGRES_POLLING_READING) ||
				(event == RT_FD_WRITABLE && c->polling == PGRES_POLLING_WRITING))
				db_connect_step(c);
			break;
		case RT_DB_UP:
			if (event == RT_FD_WRITABLE)
				(void) db_flush(c);
			else
				db_consume(c);
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

/*
 * Main loop: a connection (name: its application_name and the prefix of its
 * log lines; what: what it is, for the log), and its first attempt.  It
 * lives as long as the worker.
 */
RtDbConn *
rt_db_start(const char *name, const char *what, const char *conninfo,
			const RtDbHooks *hooks)
{
	RtDbConn   *c = MemoryContextAllocZero(TopMemoryContext, sizeof(RtDbConn));

	c->name = name;
	c->what = what;
	c->hooks = hooks;
	c->watch.name = name;
	c->watch.handler = db_fd_event;
	c->watch.arg = c;
	c->phase = RT_DB_IDLE;
	c->backoff_ms = DB_BACKOFF_MIN_MS;
	build_params(c, conninfo);
	db_connect(c);
	return c;
}

/* Main loop: whether conninfo differs from the one c was started with. */
bool
rt_db_conninfo_changed(const RtDbConn *c, const char *conninfo)
{
	return c->conninfo == NULL || strcmp(c->conninfo, conninfo) != 0;
}

/* Main loop: drop the connection and start again with new settings. */
void
rt_db_restart(RtDbConn *c, const char *conninfo)
{
	bool		had_conn = (c->conn != NULL);

	db_close(c);
	lws_sul_cancel(&c->retry_timer);
	c->phase = RT_DB_IDLE;
	if (had_conn)
		c->hooks->on_lost(false);
	c->backoff_ms = DB_BACKOFF_MIN_MS;
	c->last_error[0] = '\0';
	build_params(c, conninfo);
	db_connect(c);
}

/* Main loop, at exit: end the session, for good. */
void
rt_db_stop(RtDbConn *c)
{
	lws_sul_cancel(&c->retry_timer);
	db_close(c);
	c->phase = RT_DB_STOPPED;
}

/*
 * Send a query; its results come to the owner's hooks.  The connection must
 * be up and idle.  Returns false when the connection failed instead (the
 * owner's on_lost has been called).
 */
bool
rt_db_send(RtDbConn *c, const char *sql, int nparams, const char *const *params)
{
	Assert(c->phase == RT_DB_UP && !c->busy);
	if (!PQsendQueryParams(c->conn, sql, nparams, NULL, params, NULL, NULL, 0))
	{
		rt_db_fail(c, PQerrorMessage(c->conn));
		return false;
	}
	c->busy = true;
	return db_flush(c);
}

/* A column as a bigint. */
int64
rt_db_value_int64(const PGresult *res, int row, int col)
{
	return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

/* A pg_lsn column ("X/X"), InvalidXLogRecPtr when NULL. */
XLogRecPtr
rt_db_value_lsn(const PGresult *res, int row, int col)
{
	unsigned int hi,
				lo;

	if (PQgetisnull(res, row, col) ||
		sscanf(PQgetvalue(res, row, col), "%X/%X", &hi, &lo) != 2)
		return InvalidXLogRecPtr;
	return ((uint64) hi << 32) | lo;
}

static const char *
value_or_null(const PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}

/*
 * An event from a row of id, type, the four routing keys and the JSON, the
 * columns the feed's reads and the replays' pages share.  NULL when out of
 * memory.
 */
RtStreamEvent *
rt_db_event_from_row(const PGresult *res, int row)
{
	return rt_stream_event_new(rt_db_value_int64(res, row, 0),
							   value_or_null(res, row, 1),
							   value_or_null(res, row, 2),
							   value_or_null(res, row, 3),
							   value_or_null(res, row, 4),
							   value_or_null(res, row, 5),
							   value_or_null(res, row, 6));
}

/*
 * Reads what has arrived, without waiting for the loop to say so: for an
 * owner that must not wait a whole turn of the loop (listen_feed.c, while
 * a turn's writes to thousands of clients go on).  One recv(MSG_PEEK) when
 * nothing has.  Whether something had.
 */
bool
rt_db_poll(RtDbConn *c)
{
	char		byte;

	if (c->phase != RT_DB_UP || c->conn == NULL || PQsocket(c->conn) < 0 ||
		recv(PQsocket(c->conn), &byte, 1, MSG_PEEK | MSG_DONTWAIT) <= 0)
		return false;
	db_consume(c);
	return true;
}

/* Up and no query in flight: a query may be sent. */
bool
rt_db_idle(const RtDbConn *c)
{
	return c->phase == RT_DB_UP && !c->busy;
}

RtDbPhase
rt_db_phase(const RtDbConn *c)
{
	return c->phase;
}

/* The libpq connection, while there is one (for PQescapeIdentifier). */
PGconn *
rt_db_pgconn(const RtDbConn *c)
{
	return c->conn;
}

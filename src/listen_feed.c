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

#define FEED_BACKOFF_MIN_MS		100
#define FEED_BACKOFF_MAX_MS		5000
#define FEED_CONNECT_TIMEOUT_S	10

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
} Feed;

static Feed feed = {.phase = FEED_IDLE, .backoff_ms = FEED_BACKOFF_MIN_MS};

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

/* Drop the connection, if any, and its watch and deadline. */
static void
feed_close(void)
{
	lws_sul_cancel(&feed.deadline_timer);
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

	lws_sul_schedule(rt_server_context(), 0, &feed.retry_timer, feed_retry,
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
	lws_sul_schedule(rt_server_context(), 0, &feed.deadline_timer,
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
feed_consume(void)
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

	if (PQstatus(feed.conn) == CONNECTION_BAD)
		feed_failed(PQerrorMessage(feed.conn));
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
			return RT_FEED_UP;
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
 * One notification's payload.  Delivery to clients comes in a later slice;
 * for now the feed only counts what it receives.
 */
void
rt_feed_on_notify(const char *payload)
{
	feed.notifications++;
}

/*-------------------------------------------------------------------------
 *
 * server_worker.c
 *		The background worker that serves clients: its process lifecycle and
 *		its one event loop.
 *
 * The worker owns one libwebsockets context and one event loop, and a turn
 * of that loop is the only place the process ever waits.  Everything else
 * it must hear about is a descriptor adopted into that loop as a raw file on
 * an internal vhost:
 *
 *	- an eventfd the signal handlers write to, so that SIGTERM and SIGHUP
 *	  wake the loop (a flag alone would wait for the next unrelated event);
 *	- the postmaster-death pipe, so that the worker exits at once when the
 *	  postmaster dies instead of serving clients from an orphaned process;
 *	- the libpq socket of the LISTEN feed (listen_feed.c).
 *
 * Listening sockets live on one vhost per resolved rtevents.listen_addresses
 * entry, all serving the "http" protocol (http.c).
 *
 * libwebsockets callbacks must not ereport(ERROR): a longjmp would unwind
 * through the library and leave it corrupt.  So callbacks only record what
 * happened, and the work that may throw (re-reading the configuration,
 * exiting) runs in the main loop between two turns.
 *
 * The loop.  lws 4.1's own loop is poll(): every turn hands the kernel every
 * descriptor and walks them all back, about 7 ms a turn at 10,000
 * connections however little happens.  So lws runs on libev instead, through
 * its libev event-lib plugin (Debian's libwebsockets-evlib-ev), which waits
 * with epoll: a turn costs what is ready.  The libev loop is ours ("foreign"
 * to lws), so that the main loop still runs it one turn at a time.  Without
 * the plugin the worker says so and runs lws's poll() loop.  (lws 4.1's
 * libuv plugin, the other one packaged, sends no close frame when a
 * callback closes a WebSocket connection: clients would see 1006 for every
 * close this worker explains.)
 *
 * lws 4.1's libev glue re-arms its timer with ev_timer_set() on a watcher
 * that is still running, which libev ignores: an lws_sul due earlier than
 * the timer already armed (at most a second away: two of ours run every
 * second) would wait for that one; rtevents.batch_ms = 20 made frames wait up
 * to a second.  So our timers are scheduled through rt_server_schedule(),
 * which remembers them and keeps a libev timer of ours armed for the
 * earliest; it writes the wake-up eventfd, and lws services what is due in
 * its idle pass after that.  lws's own timers (pings, timeouts) may still be
 * up to a second late; they count in seconds.  libev runs that idle pass
 * only in a turn with nothing else ready: under a flood what is due waits
 * for lws's own timer, which fires at least once a second.
 *
 * After each turn the main loop writes what the turn queued for clients
 * (subscription.c), through lws's own POLLOUT handling (rt_server_write_now),
 * and hears the LISTEN feed between those writes (rt_feed_poll): writing to
 * a thousand clients takes longer than an event takes to arrive.
 *
 * Shutdown.  A fast shutdown sends SIGTERM.  A smart shutdown sends nothing
 * to background workers until every regular session has ended, and the
 * feed's LISTEN connection is such a session: the worker would wait for the
 * postmaster and the postmaster for the worker.  So the worker reads the
 * status line the postmaster writes into postmaster.pid (the one pg_ctl
 * polls) once a second, and when it says "stopping" closes the feed, its
 * clients and its listening sockets, and exits.
 *
 * Descriptor budget.  The soft RLIMIT_NOFILE is raised to the hard limit at
 * start, and lws's descriptor table is sized to match: lws indexes that
 * table by descriptor number, and a table smaller than the limit makes lws
 * fall back to a linear search on every event.  The worker opens no
 * relation files, so fd.c's max_files_per_process budget does not apply to
 * its sockets.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <netdb.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <libwebsockets.h>

#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "postmaster/postmaster.h"
#include "storage/ipc.h"
#include "storage/pmsignal.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/pidfile.h"
#include "utils/varlena.h"

#include "rtevents.h"

PGDLLEXPORT void rt_server_worker_main(Datum main_arg);

/*
 * lws keeps a pollfd and a lookup slot per possible descriptor; cap what a
 * huge or unlimited hard limit would make it allocate (16 bytes a slot).
 */
#define RT_MAX_FDS				(1 << 20)
#define RT_WANT_FDS				10240	/* below this, say so in the log */

#define RT_PM_STATUS_CHECK_US	(1 * LWS_US_PER_SEC)
#define RT_TRIM_CHECK_US		(10 * LWS_US_PER_SEC)
#define RT_TRIM_MIN_DROP		1000	/* clients gone since the peak */
#define RT_GOING_AWAY_MS		1000

#define RT_RAW_PROTOCOL			"rtevents-fd"

static struct lws_context *context = NULL;
static struct lws_vhost *internal_vhost = NULL;

/* Written by signal handlers, read by the main loop. */
static int	wake_fd = -1;

/* Set by loop callbacks, acted on by the main loop. */
static bool postmaster_death_suspected = false;
static bool smart_stop_requested = false;
static bool exiting = false;

static lws_sorted_usec_list_t pm_status_timer;
static lws_sorted_usec_list_t trim_timer;
static lws_sorted_usec_list_t going_away_timer;

/* The libev loop lws runs on; NULL when it runs its own poll() loop. */
static struct ev_loop *evloop = NULL;
static ev_timer nudge_timer;

/* Every lws_sul the worker schedules: a handful, all static. */
#define RT_MAX_TIMERS			16
static lws_sorted_usec_list_t *timers[RT_MAX_TIMERS];
static int	ntimers = 0;

/* ----------------------------------------------------------------
 * Registration
 * ----------------------------------------------------------------
 */

void
rt_register_server_worker(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	/* No database connection: events reach the worker over libpq. */
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS;
	/* Hot standbys serve clients too. */
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "rtevents");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "rt_server_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "rtevents server");
	snprintf(worker.bgw_type, BGW_MAXLEN, "rtevents server");
	RegisterBackgroundWorker(&worker);
}

/* ----------------------------------------------------------------
 * Signals and the wake-up eventfd
 * ----------------------------------------------------------------
 */

/* Async-signal-safe: one write(2) to an eventfd. */
void
rt_server_wake(void)
{
	uint64		one = 1;
	ssize_t		rc;

	if (wake_fd < 0)
		return;
	rc = write(wake_fd, &one, sizeof(one));
	(void) rc;					/* EAGAIN: the counter is already nonzero */
}

static void
handle_sighup(SIGNAL_ARGS)
{
	int			save_errno = errno;

	ConfigReloadPending = true;
	rt_server_wake();
	errno = save_errno;
}

static void
handle_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	ShutdownRequestPending = true;
	rt_server_wake();
	errno = save_errno;
}

/* The flags are the message; reading only re-arms the eventfd. */
static int
wake_fd_event(struct lws *wsi, RtFdEvent event, void *arg)
{
	uint64		value;

	if (event == RT_FD_READABLE)
	{
		while (read(wake_fd, &value, sizeof(value)) > 0)
			;
		return 0;
	}
	if (event == RT_FD_CLOSED)
		elog(LOG, "rtevents server: wake-up eventfd hung up");
	return 0;
}

static const RtFdWatch wake_watch = {
	"wake-up eventfd", wake_fd_event, NULL
};

/*
 * The postmaster holds the write end of this pipe and never writes: it
 * becomes readable (or hangs up) only when the postmaster is gone.
 */
static int
postmaster_pipe_event(struct lws *wsi, RtFdEvent event, void *arg)
{
	postmaster_death_suspected = true;
	return 1;
}

static const RtFdWatch postmaster_watch = {
	"postmaster-death pipe", postmaster_pipe_event, NULL
};

static void
watch_postmaster(void)
{
	int			dupfd;

	dupfd = fcntl(postmaster_alive_fds[POSTMASTER_FD_WATCH], F_DUPFD_CLOEXEC, 0);
	if (dupfd < 0)
		ereport(FATAL,
				(errmsg("rtevents server: could not duplicate the postmaster-death pipe: %m")));
	if (rt_server_watch_fd(dupfd, &postmaster_watch) == NULL)
		ereport(FATAL,
				(errmsg("rtevents server: could not watch the postmaster-death pipe")));
}

/* ----------------------------------------------------------------
 * Descriptors in the event loop
 * ----------------------------------------------------------------
 */

static int
raw_fd_callback(struct lws *wsi, enum lws_callback_reasons reason,
				void *user, void *in, size_t len)
{
	const RtFdWatch *watch;
	RtFdEvent	event;

	switch (reason)
	{
		case LWS_CALLBACK_RAW_ADOPT_FILE:
			/* lws 4.1 leaks a raw-file wsi whose adoption is refused here */
			return 0;
		case LWS_CALLBACK_RAW_RX_FILE:
			event = RT_FD_READABLE;
			break;
		case LWS_CALLBACK_RAW_WRITEABLE_FILE:
			event = RT_FD_WRITABLE;
			break;
		case LWS_CALLBACK_RAW_CLOSE_FILE:
			event = RT_FD_CLOSED;
			break;
		default:
			return 0;
	}

	watch = lws_get_opaque_user_data(wsi);
	if (watch == NULL || exiting)
	{
		/* Unwatched and waiting to be closed: close it now. */
		return event == RT_FD_CLOSED ? 0 : -1;
	}

	if (event == RT_FD_CLOSED)
	{
		lws_set_opaque_user_data(wsi, NULL);
		(void) watch->handler(wsi, event, watch->arg);
		return 0;
	}
	if (watch->handler(wsi, event, watch->arg) != 0)
	{
		/* The handler let go; it hears nothing more, not even the close. */
		lws_set_opaque_user_data(wsi, NULL);
		return -1;
	}
	return 0;
}

static const struct lws_protocols internal_protocols[] = {
	{RT_RAW_PROTOCOL, raw_fd_callback, 0, 0, 0, NULL, 0},
	{NULL, NULL, 0, 0, 0, NULL, 0}	/* terminator */
};

struct lws_context *
rt_server_context(void)
{
	return context;
}

/*
 * Adopt fd into the event loop; the loop owns it from now on and closes it
 * when it is unwatched.  Returns NULL, having closed fd, on failure.
 *
 * lws closes an adopted descriptor when it lets go of it, so a descriptor
 * someone else owns (libpq's socket, the postmaster pipe) must be adopted
 * as a dup().
 */
struct lws *
rt_server_watch_fd(int fd, const RtFdWatch *watch)
{
	lws_adopt_desc_t desc;
	struct lws *wsi;

	memset(&desc, 0, sizeof(desc));
	desc.vh = internal_vhost;
	desc.type = LWS_ADOPT_RAW_FILE_DESC;
	desc.fd.filefd = fd;
	desc.vh_prot_name = RT_RAW_PROTOCOL;
	desc.opaque = (void *) watch;

	wsi = lws_adopt_descriptor_vhost_via_info(&desc);
	if (wsi == NULL)
	{
		/* lws 4.1 closes a failed socket, but not a failed file. */
		elog(LOG, "rtevents server: could not add the %s to the event loop",
			 watch->name);
		close(fd);
	}
	return wsi;
}

void
rt_server_want_writable(struct lws *wsi)
{
	lws_callback_on_writable(wsi);
}

/*
 * Stop watching: the handler hears nothing more, and the loop closes the
 * descriptor at the start of its next turn.  Safe from inside the handler.
 */
void
rt_server_unwatch_fd(struct lws *wsi)
{
	lws_set_opaque_user_data(wsi, NULL);
	rt_server_close_soon(wsi);
}

/*
 * Serve wsi's POLLOUT now, as if epoll had reported it: lws sends what it
 * still holds and its control frames first, then calls the protocol's
 * writable callback if its state allows writing (not once closing), just as
 * on a real POLLOUT, without the epoll_ctl calls and the epoll round that
 * lws_callback_on_writable() costs.  Only between two turns, never from
 * inside a callback.  With libev, lws's one-shot clearing of POLLOUT here
 * changes nothing libev has to tell the kernel.
 */
void
rt_server_write_now(struct lws *wsi)
{
	struct lws_pollfd pfd;

	pfd.fd = lws_get_socket_fd(wsi);
	if (pfd.fd < 0)
		return;
	pfd.events = LWS_POLLIN | LWS_POLLOUT;
	pfd.revents = LWS_POLLOUT;
	(void) lws_service_fd(context, &pfd);
}

/* ----------------------------------------------------------------
 * Timers
 * ----------------------------------------------------------------
 */

/*
 * With libev, make sure the loop wakes up within us from now (see the file
 * header); the earliest request wins.  The loop's clock is updated first:
 * a callback that ran long would otherwise make the nudge come early, before
 * the lws_sul is due, and leave it waiting again.
 */
static void
nudge_within(lws_usec_t us)
{
	/* lws's clock and libev's are read apart: err on the late side */
	ev_tstamp	after = (ev_tstamp) us / LWS_US_PER_SEC + 0.001;

	if (evloop == NULL)
		return;
	ev_now_update(evloop);
	if (ev_is_active(&nudge_timer))
	{
		if (ev_timer_remaining(evloop, &nudge_timer) <= after)
			return;
		ev_timer_stop(evloop, &nudge_timer);
	}
	ev_timer_set(&nudge_timer, after, 0.);
	ev_timer_start(evloop, &nudge_timer);
}

/*
 * Due: wake the loop, so that lws's idle pass services what is due, and
 * arm again for the earliest of our timers still to come.
 */
static void
nudge_due(struct ev_loop *loop, ev_timer *timer, int revents)
{
	lws_usec_t	now = lws_now_usecs();
	lws_usec_t	next = 0;

	rt_server_wake();
	for (int i = 0; i < ntimers; i++)
	{
		lws_sorted_usec_list_t *sul = timers[i];

		if (!lws_dll2_is_detached(&sul->list) && sul->us > now &&
			(next == 0 || sul->us < next))
			next = sul->us;
	}
	if (next != 0)
		nudge_within(next - now);
}

/*
 * lws_sul_schedule(), and the libev loop made to wake up for it.  Every
 * timer of the worker goes through here.
 */
void
rt_server_schedule(lws_sorted_usec_list_t *sul, sul_cb_t cb, int64 us)
{
	int			i;

	for (i = 0; i < ntimers && timers[i] != sul; i++)
		;
	if (i == ntimers)
	{
		/* a new static timer in the code wants a bigger RT_MAX_TIMERS */
		Assert(ntimers < RT_MAX_TIMERS);
		if (ntimers < RT_MAX_TIMERS)
			timers[ntimers++] = sul;
	}
	lws_sul_schedule(context, 0, sul, cb, us);
	nudge_within(us);
}

/*
 * Close a connection at the loop's next idle pass, not from inside the
 * callback at hand (lws may still use the wsi); lws does it as a timeout
 * due now, which with libev needs the nudge too when asked from outside
 * lws's callbacks.
 */
void
rt_server_close_soon(struct lws *wsi)
{
	lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
	nudge_within(0);
}

/* ----------------------------------------------------------------
 * Smart shutdown: the postmaster's status line in postmaster.pid
 * ----------------------------------------------------------------
 */

/* Plain POSIX I/O: this runs inside the loop. */
static bool
postmaster_reports_stopping(void)
{
	char		path[MAXPGPATH];
	char		buf[1024];
	ssize_t		n;
	int			fd;
	int			line = 1;
	char	   *p;

	snprintf(path, sizeof(path), "%s/postmaster.pid", DataDir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';

	for (p = buf; *p != '\0' && line < LOCK_FILE_LINE_PM_STATUS; p++)
	{
		if (*p == '\n')
			line++;
	}
	return line == LOCK_FILE_LINE_PM_STATUS &&
		strncmp(p, PM_STATUS_STOPPING, strlen(PM_STATUS_STOPPING)) == 0;
}

static void
pm_status_check(lws_sorted_usec_list_t *sul)
{
	if (postmaster_reports_stopping())
	{
		smart_stop_requested = true;
		/* sul callbacks run before the loop's wait: end that wait now */
		rt_server_wake();
		return;
	}
	rt_server_schedule(&pm_status_timer, pm_status_check,
					   RT_PM_STATUS_CHECK_US);
}

/* ----------------------------------------------------------------
 * Memory given back after a crowd leaves
 * ----------------------------------------------------------------
 */

/*
 * A client's memory, lws's and ours (~3 kB), is many small mallocs, and
 * glibc keeps what is freed in its heap for the next ones: after 10,000
 * clients had come and gone the worker stayed at its peak, 44 MB, where it
 * had started at 13 MB.  So every RT_TRIM_CHECK_US, once RT_TRIM_MIN_DROP
 * fewer clients are connected than at the most since the last look,
 * malloc_trim() gives the heap's free pages back (14 MB after those
 * 10,000).  It walks the heap, milliseconds at most, and only after such a
 * drop.
 */
static void
trim_check(lws_sorted_usec_list_t *sul)
{
#ifdef __GLIBC__
	if (rt_conn_peak() - rt_conn_in_use() >= RT_TRIM_MIN_DROP)
	{
		malloc_trim(0);
		rt_conn_peak_reset();
	}
#endif
	rt_server_schedule(&trim_timer, trim_check, RT_TRIM_CHECK_US);
}

/* ----------------------------------------------------------------
 * Start-up
 * ----------------------------------------------------------------
 */

/* Returns the descriptor limit the process now has. */
static int
raise_fd_limit(void)
{
	struct rlimit rl;
	rlim_t		want;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
	{
		elog(LOG, "rtevents server: getrlimit(RLIMIT_NOFILE) failed: %m");
		return 1024;
	}
	want = rl.rlim_max;
	if (want == RLIM_INFINITY || want > RT_MAX_FDS)
		want = RT_MAX_FDS;
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur < want)
	{
		rl.rlim_cur = want;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			elog(LOG, "rtevents server: could not raise the open file limit to %lu: %m",
				 (unsigned long) want);
		else if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
			rl.rlim_cur = 1024;
	}
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > RT_MAX_FDS)
		return RT_MAX_FDS;
	if (rl.rlim_cur < RT_WANT_FDS)
		ereport(LOG,
				(errmsg("rtevents server: open file limit is %lu",
						(unsigned long) rl.rlim_cur),
				 errhint("Raise the hard limit on open files for the server (ulimit -Hn, LimitNOFILE) to serve more clients.")));
	return (int) rl.rlim_cur;
}

/*
 * lws error lines, routed to the server log.  Some of them can be provoked
 * by clients, so at most RT_LWS_LOG_BURST of them per minute get through.
 */
#define RT_LWS_LOG_BURST		20

static void
lws_log_emit(int level, const char *line)
{
	static time_t window_start = 0;
	static int	logged = 0;
	static int	suppressed = 0;
	time_t		now = time(NULL);
	size_t		len = strlen(line);

	if (now - window_start >= 60)
	{
		if (suppressed > 0)
			elog(LOG, "libwebsockets: %d more messages suppressed", suppressed);
		window_start = now;
		logged = 0;
		suppressed = 0;
	}
	if (logged >= RT_LWS_LOG_BURST)
	{
		suppressed++;
		return;
	}
	logged++;

	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	elog(LOG, "libwebsockets: %.*s", (int) len, line);
}

typedef struct ListenAddr
{
	char	   *numeric;		/* what lws binds: it takes no host names */
	int			family;
} ListenAddr;

/*
 * Resolve rtevents.listen_addresses, Postgres-style: a comma-separated list
 * of host names and addresses, "*" for every interface, "" for none.  lws
 * binds to a numeric address or interface name only, and one address per
 * vhost, so "localhost" becomes 127.0.0.1 and ::1, each on its own vhost.
 */
static List *
resolve_listen_addresses(void)
{
	char	   *raw = pstrdup(rt_listen_addresses);
	List	   *names;
	List	   *result = NIL;
	ListCell   *lc;
	char		port[16];

	if (!SplitGUCList(raw, ',', &names))
		ereport(FATAL,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid list syntax in parameter \"%s\"",
						"rtevents.listen_addresses")));

	snprintf(port, sizeof(port), "%d", rt_port);
	foreach(lc, names)
	{
		const char *name = (const char *) lfirst(lc);
		struct addrinfo hints;
		struct addrinfo *res;
		struct addrinfo *ai;
		int			rc;

		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
		rc = getaddrinfo(strcmp(name, "*") == 0 ? NULL : name, port,
						 &hints, &res);
		if (rc != 0)
		{
			ereport(LOG,
					(errmsg("rtevents server: could not resolve \"%s\": %s",
							name, gai_strerror(rc))));
			continue;
		}
		for (ai = res; ai != NULL; ai = ai->ai_next)
		{
			char		host[NI_MAXHOST];
			ListCell   *lc2;
			bool		seen = false;
			ListenAddr *addr;

			if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
				continue;
			if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof(host),
							NULL, 0, NI_NUMERICHOST) != 0)
				continue;
			foreach(lc2, result)
			{
				if (strcmp(((ListenAddr *) lfirst(lc2))->numeric, host) == 0)
					seen = true;
			}
			if (seen)
				continue;
			addr = palloc(sizeof(ListenAddr));
			addr->numeric = pstrdup(host);
			addr->family = ai->ai_family;
			result = lappend(result, addr);
		}
		freeaddrinfo(res);
	}
	return result;
}

/* An IPv6 vhost on a kernel without IPv6 would get no socket, silently. */
static bool
ipv6_available(void)
{
	int			fd = socket(AF_INET6, SOCK_STREAM, 0);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/*
 * WebSocket heartbeats: lws pings a connection silent for rtevents.heartbeat
 * and hangs up on one silent for rtevents.client_timeout (any frame, the
 * pong included, counts).  lws reads the policy through its pointer, so a
 * reload applies to the next timers.
 */
static lws_retry_bo_t ws_idle_policy;

/* TLS: https and wss, with the certificate and key the DBA configured. */
static bool
tls_configured(void)
{
	return rt_ssl_cert_file[0] != '\0' && rt_ssl_key_file[0] != '\0';
}

void
rt_server_set_heartbeat(void)
{
	ws_idle_policy.secs_since_valid_ping = (uint16_t) rt_heartbeat;
	ws_idle_policy.secs_since_valid_hangup =
		(uint16_t) Max(rt_client_timeout, rt_heartbeat + 1);
}

/* How long lws lets a WebSocket go without a pong before it hangs up. */
int
rt_server_ws_silence_limit(void)
{
	return ws_idle_policy.secs_since_valid_hangup;
}

static void
create_listen_vhosts(void)
{
	static struct lws_protocols http_protocols[3];
	/* An upgrade that names no subprotocol gets "rtevents" (ws.c). */
	static const struct lws_protocol_vhost_options ws_default = {
		NULL, NULL, "default", ""
	};
	static const struct lws_protocol_vhost_options ws_pvo = {
		NULL, &ws_default, "rtevents", ""
	};
	List	   *addrs = resolve_listen_addresses();
	ListCell   *lc;
	int			listening = 0;

	if (addrs == NIL)
	{
		if (rt_listen_addresses[0] != '\0')
			ereport(FATAL,
					(errmsg("rtevents server: no usable address in rtevents.listen_addresses \"%s\"",
							rt_listen_addresses)));
		ereport(LOG,
				(errmsg("rtevents server: rtevents.listen_addresses is empty; not listening")));
		return;
	}

	/* lws keeps pointers to the protocols and the interface name */
	http_protocols[0] = rt_http_protocol;
	http_protocols[1] = rt_ws_protocol;
	memset(&http_protocols[2], 0, sizeof(http_protocols[2]));
	rt_server_set_heartbeat();

	foreach(lc, addrs)
	{
		ListenAddr *addr = (ListenAddr *) lfirst(lc);
		struct lws_context_creation_info info;

		if (addr->family == AF_INET6 && !ipv6_available())
		{
			ereport(LOG,
					(errmsg("rtevents server: not listening on \"%s\": IPv6 is not available",
							addr->numeric)));
			continue;
		}

		memset(&info, 0, sizeof(info));
		info.vhost_name = addr->numeric;
		info.iface = addr->numeric;
		info.port = rt_port;
		info.protocols = http_protocols;
		info.pvo = &ws_pvo;
		info.retry_and_idle_policy = &ws_idle_policy;
		info.keepalive_timeout = 30;
		info.options = LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND;
		/*
		 * A request line lws cannot parse, and CONNECT, become raw
		 * connections of the http protocol, which answers them with the
		 * contract's JSON 400 (http.c).  Without this, lws answers the
		 * first with its own HTML 403 and holds the second open, unread
		 * and unanswered, for as long as the client likes.  (Naming the
		 * protocol also makes lws bind each new connection to
		 * protocols[0], the http protocol, rather than to the WebSocket
		 * default until the request is routed: http.c answers either
		 * way.)
		 */
		info.options |= LWS_SERVER_OPTION_FALLBACK_TO_APPLY_LISTEN_ACCEPT_CONFIG;
		info.listen_accept_role = "raw-skt";
		info.listen_accept_protocol = rt_http_protocol.name;
		/*
		 * lws binds an IPv4 literal wrongly on an IPv6 socket (it lands in
		 * the wrong sockaddr field and binds ::), so IPv4 stays IPv4; and
		 * IPv6 stays IPv6-only, since IPv4 has its own vhost.
		 */
		if (addr->family == AF_INET)
			info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
		else
			info.options |= LWS_SERVER_OPTION_IPV6_V6ONLY_MODIFY |
				LWS_SERVER_OPTION_IPV6_V6ONLY_VALUE;
		if (tls_configured())
		{
			/* lws reads the option per vhost too: without it, plain HTTP */
			info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
			info.ssl_cert_filepath = rt_ssl_cert_file;
			info.ssl_private_key_filepath = rt_ssl_key_file;
			/* HTTP/1.1 only: replies are written as HTTP/1 (http.c) */
			info.alpn = "http/1.1";
		}

		if (lws_create_vhost(context, &info) == NULL)
		{
			ereport(LOG,
					(errmsg("rtevents server: could not listen on \"%s\" port %d",
							addr->numeric, rt_port)));
			continue;
		}
		ereport(LOG,
				(errmsg("rtevents server listening on \"%s\" port %d%s",
						addr->numeric, rt_port, tls_configured() ? " (TLS)" : "")));
		listening++;
	}

	/* As the postmaster does: some addresses may fail, not all of them. */
	if (listening == 0)
		ereport(FATAL,
				(errmsg("rtevents server: could not listen on any of \"%s\" port %d",
						rt_listen_addresses, rt_port)));
}

/*
 * The context on a libev loop of ours, or NULL (and a LOG line) when lws
 * cannot run on libev: its plugin is a package of its own.  epoll, and no
 * signal handling: signals are Postgres's (libev would take SIGCHLD on its
 * default loop, and touch the signal mask without EVFLAG_NOSIGMASK).
 */
static struct lws_context *
create_context_on_libev(const struct lws_context_creation_info *base)
{
	struct lws_context_creation_info info = *base;
	struct lws_context *ctx;
	void	   *loops[1];

	evloop = ev_loop_new(EVBACKEND_EPOLL | EVFLAG_NOENV | EVFLAG_NOSIGMASK);
	if (evloop == NULL)
	{
		ereport(LOG,
				(errmsg("rtevents server: could not create an epoll loop; serving with poll(), which costs more per connection")));
		return NULL;
	}
	ev_timer_init(&nudge_timer, nudge_due, 0., 0.);

	loops[0] = evloop;
	info.foreign_loops = loops;
	info.options |= LWS_SERVER_OPTION_LIBEV;
	ctx = lws_create_context(&info);
	if (ctx == NULL)
	{
		ev_loop_destroy(evloop);
		evloop = NULL;
		ereport(LOG,
				(errmsg("rtevents server: libwebsockets could not run on libev; serving with poll(), which costs more per connection"),
				 errhint("Install the libwebsockets-evlib-ev package.")));
		return NULL;
	}
	ereport(LOG,
			(errmsg("rtevents server: event loop: libev, epoll")));
	return ctx;
}

static void
create_event_loop(int fd_limit)
{
	struct lws_context_creation_info info;

	if ((rt_ssl_cert_file[0] == '\0') != (rt_ssl_key_file[0] == '\0'))
		ereport(FATAL,
				(errmsg("rtevents server: rtevents.ssl_cert_file and rtevents.ssl_key_file must be set together")));

	lws_set_log_level(LLL_ERR, lws_log_emit);

	memset(&info, 0, sizeof(info));
	info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS |
		LWS_SERVER_OPTION_VALIDATE_UTF8;
	if (tls_configured())
		info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
	info.fd_limit_per_thread = (unsigned int) fd_limit;
	info.count_threads = 1;
	info.server_string = "rtevents";
	info.max_http_header_data = RT_HTTP_HEADER_MAX;
	info.timeout_secs = RT_HTTP_TIMEOUT_S;
	info.port = CONTEXT_PORT_NO_LISTEN;
	context = create_context_on_libev(&info);
	if (context == NULL)
		context = lws_create_context(&info);
	if (context == NULL)
		ereport(FATAL,
				(errmsg("rtevents server: could not create the libwebsockets context")));

	memset(&info, 0, sizeof(info));
	info.vhost_name = "rtevents-internal";
	info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
	info.protocols = internal_protocols;
	internal_vhost = lws_create_vhost(context, &info);
	if (internal_vhost == NULL)
		ereport(FATAL,
				(errmsg("rtevents server: could not create the internal vhost")));

	wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (wake_fd < 0)
		ereport(FATAL,
				(errmsg("rtevents server: could not create an eventfd: %m")));
	if (rt_server_watch_fd(wake_fd, &wake_watch) == NULL)
	{
		wake_fd = -1;
		ereport(FATAL,
				(errmsg("rtevents server: could not watch the wake-up eventfd")));
	}

	watch_postmaster();
	create_listen_vhosts();
}

/* ----------------------------------------------------------------
 * Main
 * ----------------------------------------------------------------
 */

/*
 * One turn: wait for something (a descriptor, a timer, a signal's write to
 * the eventfd), serve it, then write what the turn queued for clients
 * (subscription.c).  No wait while clients are left to write.  Negative
 * when lws's loop failed.
 */
static int
loop_turn(void)
{
	bool		wait = !rt_clients_to_write();
	int			rc = 0;

	if (evloop == NULL)
		rc = lws_service(context, wait ? 0 : -1);
	else
		ev_run(evloop, wait ? EVRUN_ONCE : EVRUN_NOWAIT);
	if (rc >= 0)
		rt_clients_write(rt_feed_poll);
	return rc;
}

/* Only wakes the loop, so that shut_down() looks at its deadline. */
static void
going_away_due(lws_sorted_usec_list_t *sul)
{
}

/*
 * Closes the clients, the feed and the listening sockets.  WebSocket clients
 * get a close frame, 1001 "going away", so that they know to reconnect
 * elsewhere or later; the loop runs for at most RT_GOING_AWAY_MS for those
 * frames to go out.
 */
static void
shut_down(void)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   RT_GOING_AWAY_MS);

	rt_ws_going_away();
	rt_server_schedule(&going_away_timer, going_away_due,
					   (lws_usec_t) RT_GOING_AWAY_MS * LWS_US_PER_MS);
	while (rt_ws_clients() > 0 && GetCurrentTimestamp() < deadline)
	{
		if (loop_turn() < 0)
			break;
	}
	rt_feed_stop();
	rt_replay_disconnect();
	lws_sul_cancel(&pm_status_timer);
	lws_sul_cancel(&trim_timer);
	lws_sul_cancel(&going_away_timer);
	exiting = true;
	/* with libev, synchronous: every wsi is closed and freed here */
	lws_context_destroy(context);
	context = NULL;
	if (evloop != NULL)
	{
		ev_timer_stop(evloop, &nudge_timer);
		ev_loop_destroy(evloop);
		evloop = NULL;
	}
}

void
rt_server_worker_main(Datum main_arg)
{
	int			fd_limit;

	pqsignal(SIGHUP, handle_sighup);
	pqsignal(SIGTERM, handle_sigterm);
	BackgroundWorkerUnblockSignals();

	/*
	 * Connected to no database, the worker would keep the default database
	 * encoding, SQL_ASCII.  Yet everything it reads and writes is UTF-8:
	 * client messages, tokens, the feed (client_encoding UTF8).  And
	 * Postgres' JSON parser converts a \u escape to the database encoding,
	 * which from SQL_ASCII fails with an ERROR beyond ASCII: "caf\u00e9" in
	 * a subscribe message or a token would be refused.
	 */
	SetDatabaseEncoding(PG_UTF8);

	rt_conn_reset_all();
	fd_limit = raise_fd_limit();
	create_event_loop(fd_limit);

	rt_subscriptions_init();
	rt_feed_start();
	rt_replay_connect();
	pm_status_check(&pm_status_timer);
	trim_check(&trim_timer);

	for (;;)
	{
		if (loop_turn() < 0)
		{
			ereport(LOG,
					(errmsg("rtevents server: the event loop failed; restarting")));
			proc_exit(1);
		}

		if (postmaster_death_suspected)
		{
			if (!PostmasterIsAlive())
				proc_exit(1);	/* no cleanup: the cluster is gone */
			/* cannot happen; if it does, keep watching */
			postmaster_death_suspected = false;
			watch_postmaster();
		}

		if (ShutdownRequestPending)
		{
			/* pg_terminate_backend() too: exit 1 so that it is restarted */
			shut_down();
			proc_exit(1);
		}
		if (smart_stop_requested)
		{
			ereport(LOG,
					(errmsg("rtevents server: smart shutdown in progress; closing the feed and exiting")));
			shut_down();
			/* 0: the postmaster is stopping and must not restart us */
			proc_exit(0);
		}

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			rt_server_set_heartbeat();
			rt_sse_heartbeat_changed();
			rt_feed_reload();
		}
	}
}

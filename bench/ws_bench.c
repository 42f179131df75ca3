/*
 * bench/ws_bench.c: WebSocket load generator and meter for the rtevents
 * worker.  Many clients in one epoll loop, nonblocking sockets, libc only.
 *
 *   ws_bench latency    PORT PIDS N EVENTS PATH [CATCHUP_PATH DELAY_S]
 *   ws_bench throughput PORT PIDS N SECONDS PATH
 *   ws_bench idle       PORT PIDS N PATH [SUB_TEMPLATE|- [HOLD_S]]
 *   ws_bench index      PORT PIDS N EVENTS SUB_TEMPLATE
 *
 * PIDS is "worker[,feed]": the "rtevents server" process, whose CPU time
 * (utime+stime in /proc/PID/stat) and memory (VmRSS in /proc/PID/status)
 * are read around each measured window, and optionally the backend of its
 * LISTEN feed; 0 reads nothing.  N clients open PATH (e.g.
 * /ws?executionId=bench); SUB_TEMPLATE, when given, makes each client send
 * {"op":"subscribe","sub":"s1","filter":{"executionId":T}} after the
 * welcome, T being the template with "%d" replaced by the client's number.
 * A client is ready once welcomed, or, if it subscribes (query string or
 * message), once its "subscribed" arrives.  When all are, "{"ready":N}" is
 * printed for the driver (bench/ws_bench.sh) to start publishing.  With
 * WS_BENCH_READY_ON_OPEN in the environment a client is ready once
 * upgraded: for servers that are not rtevents (bench/fanout_floor.c,
 * nchan), which send no welcome.  The result is one JSON line on stdout.
 *
 * latency:    every client must receive EVENTS events, each id once and
 *             ascending ("unexpected" counts any beyond); latency is
 *             receipt (CLOCK_REALTIME, taken once per read) minus the
 *             event's "ts", which is clock_timestamp() at insert on the same
 *             machine's clock.  With CATCHUP_PATH, one
 *             more client opens it DELAY_S after the first event (e.g. a
 *             cursor 100,000 events back) and the live clients' latency is
 *             reported separately for what they received while it caught up
 *             (from its connect to its "subscribed").
 * throughput: counts deliveries to all clients for SECONDS from the first
 *             event, and the worker's CPU over the same window.
 * idle:       the worker's RSS before, with all N connected (and
 *             subscribed), and 2 s and 12 s after closing them (the worker
 *             gives memory back within 10 s); HOLD_S keeps them open
 *             that long first, answering pings (to check heartbeats).
 * index:      client 0 subscribes to T(0) and must receive EVENTS events
 *             published there, the others to executions nobody publishes
 *             to (receiving anything is "misrouted"); reports the worker's
 *             CPU per 1,000 events from ready to the last one.
 *
 * A client the server closes (or resets) is reopened at once with
 * "after=<last id>" in latency and throughput modes, as a real client
 * resumes; reconnects are counted.  Skipped ids are counted assuming the
 * ids of a stream are consecutive, which holds for these scenarios (one
 * execution per stream, no rollbacks); "lost" is EVENTS minus what arrived.
 *
 * The clients delay their ACKs (TCP_QUICKACK off after each read): a
 * client that only reads acknowledges every event at once otherwise, and on
 * loopback each ACK it sends is also received (by the server's socket) in
 * its own time slice, half of what it cost per delivery on the two cores it
 * shares with the server.  A remote browser's ACKs cost the server's machine
 * only their receipt.
 *
 * Built by bench/ws_bench.sh: cc -O2 -Wall -Wextra.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Handshakes in flight at once: more would only overflow the listen queue. */
#define CONNECT_WINDOW	256
/* No event for this long after the first one: the rest is not coming. */
#define QUIET_GIVE_UP_US	10e6
#define MAX_FRAME		(64 << 20)

/*
 * RFC 6455's sample key and its accept value: one fixed key lets the
 * handshake be checked without SHA-1.  The key only proves the server
 * speaks WebSocket; it is no secret.
 */
#define WS_KEY			"dGhlIHNhbXBsZSBub25jZQ=="
#define WS_ACCEPT		"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

typedef enum
{
	M_LATENCY, M_THROUGHPUT, M_IDLE, M_INDEX
} Mode;

typedef enum
{
	C_UNUSED, C_CONNECTING, C_HANDSHAKE, C_OPEN
} State;

typedef struct Conn
{
	int			fd;
	uint32_t	gen;			/* tells stale epoll events of an old fd */
	State		state;
	int			ready;
	int			want_out;		/* EPOLLOUT is armed */
	int			dead;			/* the frame parser closed it */
	char	   *in;				/* unparsed bytes: at most a partial frame */
	size_t		in_len,
				in_cap;
	char	   *msg;			/* a fragmented message being put together */
	size_t		msg_len,
				msg_cap;
	char	   *out;			/* frames the socket did not take yet */
	size_t		out_len,
				out_cap;
	long long	last_id;		/* highest id received (or the cursor) */
	long		received,
				disorder,		/* not above the one before: duplicates too */
				skipped;		/* holes in consecutive ids */
	long long	replayed;		/* from its "subscribed" */
	long		received_at_subscribed;
} Conn;

/* Latency histogram: 10 us buckets to 100 ms, then 1 ms buckets to 100 s. */
#define H_FINE			10000
#define H_COARSE		100000
typedef struct Hist
{
	long		n;
	double		max_us;
	long		fine[H_FINE];
	long		coarse[H_COARSE];
} Hist;

static Mode mode;
static int	port,
			n_clients,
			n_conns;			/* n_clients plus the catch-up client */
static long events_expected;
static double window_s,
			catchup_delay_s,
			hold_s;
static const char *base_path,
		   *catchup_path,
		   *sub_template;
static int	ready_on_subscribed;
static int	ready_on_open;		/* WS_BENCH_READY_ON_OPEN: another server */
static int	pid_worker,
			pid_feed;

static Conn *conns;
static int	ep;
static int	opened,
			n_ready,
			handshake_failures;
static long reconnects,
			server_closes,
			pings,
			errors,
			gaps,
			bad_messages,
			misrouted,
			frames;				/* {"op":"events"} messages to live clients */
static long long deliveries;
static double first_event_us,
			last_event_us;
static double catchup_start_us,
			catchup_end_us;
static Hist hist_live,			/* latency mode: outside the catch-up */
			hist_during;		/* while the catch-up client caught up */
static char scratch[256 * 1024];
static struct sockaddr_in server_addr;

/* ---------------- clocks and /proc ---------------- */

static double
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static double
self_cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
		(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* utime+stime of a process in seconds; -1 if it is gone. */
static double
proc_cpu_s(int pid)
{
	char		path[64],
				buf[1024],
			   *p;
	FILE	   *f;
	unsigned long utime,
				stime;
	size_t		n;

	if (pid <= 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* fields after the command name, which may hold spaces and parens */
	if ((p = strrchr(buf, ')')) == NULL ||
		sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
			   &utime, &stime) != 2)
		return -1;
	return (double) (utime + stime) / sysconf(_SC_CLK_TCK);
}

/* A "Name:   123 kB" line of /proc/PID/status, in kB; -1 if absent. */
static long
proc_status_kb(int pid, const char *name)
{
	char		path[64],
				line[256];
	FILE	   *f;
	long		kb = -1;
	size_t		len = strlen(name);

	if (pid <= 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, name, len) == 0 && line[len] == ':')
		{
			kb = atol(line + len + 1);
			break;
		}
	fclose(f);
	return kb;
}

/* ---------------- histogram ---------------- */

static void
hist_add(Hist *h, double us)
{
	if (us < 0)
		us = 0;					/* same clock: only rounding can do this */
	h->n++;
	if (us > h->max_us)
		h->max_us = us;
	if (us < H_FINE * 10.0)
		h->fine[(int) (us / 10)]++;
	else if (us < H_COARSE * 1000.0)
		h->coarse[(int) (us / 1000)]++;
	else
		h->coarse[H_COARSE - 1]++;
}

/* The q-quantile in ms, as the upper edge of its bucket. */
static double
hist_ms(const Hist *h, double q)
{
	long		want = (long) (h->n * q),
				seen = 0;

	if (h->n == 0)
		return 0;
	for (int i = 0; i < H_FINE; i++)
		if ((seen += h->fine[i]) > want)
			return (i + 1) * 0.01;
	for (int i = 0; i < H_COARSE; i++)
		if ((seen += h->coarse[i]) > want)
			return (double) (i + 1);
	return h->max_us / 1000;
}

static void
print_hist(const char *prefix, const Hist *h)
{
	printf("%s\"p50_ms\":%.2f,\"p99_ms\":%.2f,\"max_ms\":%.2f",
		   prefix, hist_ms(h, 0.5), hist_ms(h, 0.99), h->max_us / 1000);
}

/* ---------------- small JSON reading ---------------- */

/*
 * Only what the server's messages need: walk objects and arrays, read a
 * few keys, skip every other value (strings with escapes, nested data).
 * Every function is bounded by end and returns NULL when it runs off it.
 */
static const char *
skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
		p++;
	return p < end ? p : NULL;
}

/* p at the opening quote; returns just past the closing one */
static const char *
skip_string(const char *p, const char *end)
{
	for (p++; p < end; p++)
	{
		if (*p == '\\')
			p++;
		else if (*p == '"')
			return p + 1;
	}
	return NULL;
}

static const char *
skip_value(const char *p, const char *end)
{
	int			depth = 0;

	if ((p = skip_ws(p, end)) == NULL)
		return NULL;
	if (*p == '"')
		return skip_string(p, end);
	if (*p != '{' && *p != '[')
	{
		while (p < end && *p != ',' && *p != '}' && *p != ']' &&
			   *p != ' ' && *p != '\n')
			p++;
		return p < end ? p : NULL;
	}
	while (p < end)
	{
		if (*p == '"')
		{
			if ((p = skip_string(p, end)) == NULL)
				return NULL;
			continue;
		}
		if (*p == '{' || *p == '[')
			depth++;
		else if ((*p == '}' || *p == ']') && --depth == 0)
			return p + 1;
		p++;
	}
	return NULL;
}

static const char *
read_int(const char *p, const char *end, long long *v)
{
	long long	n = 0;
	int			neg = 0;

	if (p < end && *p == '-')
		neg = 1, p++;
	if (p >= end || *p < '0' || *p > '9')
		return NULL;
	while (p < end && *p >= '0' && *p <= '9')
		n = n * 10 + (*p++ - '0');
	*v = neg ? -n : n;
	return p;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's). */
static long
days_from_civil(long y, int m, int d)
{
	long		era,
				yoe,
				doy,
				doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static int
digits(const char *p, int n)
{
	int			v = 0;

	while (n-- > 0)
		v = v * 10 + (*p++ - '0');
	return v;
}

/*
 * "2026-11-29T22:00:00.123456+00:00" (p just past the opening quote) to
 * microseconds since the epoch; 0 if it is not that shape.  Hand-parsed:
 * it runs for every delivery.
 */
static double
parse_ts(const char *p, const char *end)
{
	double		us;
	double		scale = 1e5;
	int			sign;

	if (end - p < 25 || p[4] != '-' || p[10] != 'T' || p[13] != ':')
		return 0;
	us = ((double) days_from_civil(digits(p, 4), digits(p + 5, 2), digits(p + 8, 2)) * 86400 +
		  digits(p + 11, 2) * 3600 + digits(p + 14, 2) * 60 + digits(p + 17, 2)) * 1e6;
	p += 19;
	if (*p == '.')
		for (p++; p < end && *p >= '0' && *p <= '9'; p++, scale /= 10)
			us += (*p - '0') * scale;
	if (p < end && *p == 'Z')
		return us;
	if (end - p < 6 || (*p != '+' && *p != '-'))
		return 0;
	sign = *p == '-' ? -1 : 1;
	return us - sign * (digits(p + 1, 2) * 3600.0 + digits(p + 4, 2) * 60.0) * 1e6;
}

/* ---------------- what the clients receive ---------------- */

static void send_frame(Conn *c, int opcode, const char *payload, size_t len);

static int
conn_no(const Conn *c)
{
	return (int) (c - conns);
}

static int
is_catchup(const Conn *c)
{
	return catchup_path != NULL && conn_no(c) == n_clients;
}

static void
mark_ready(Conn *c)
{
	if (c->ready)
		return;
	c->ready = 1;
	if (!is_catchup(c))
		n_ready++;
}

static void
on_event(Conn *c, long long id, double ts_us, double recv_us)
{
	if (c->last_id > 0 && id <= c->last_id)
		c->disorder++;
	else
	{
		if (c->last_id > 0 && id > c->last_id + 1)
			c->skipped += id - c->last_id - 1;
		c->last_id = id;
	}
	c->received++;
	if (first_event_us == 0)
		first_event_us = recv_us;
	last_event_us = recv_us;
	if (is_catchup(c))
		return;
	deliveries++;
	if (mode == M_INDEX && conn_no(c) != 0)
		misrouted++;
	if (catchup_start_us > 0 && catchup_end_us == 0)
		hist_add(&hist_during, recv_us - ts_us);
	else
		hist_add(&hist_live, recv_us - ts_us);
}

/* {"op":"events","events":[{"id":1,...,"ts":"...",...}, ...]} */
static int
on_events(Conn *c, const char *p, const char *end, double recv_us)
{
	const char *q = memmem(p, end - p, "\"events\":[", 10);

	if (q == NULL)
		return -1;
	for (q += 10;;)
	{
		long long	id = -1;
		double		ts_us = 0;

		if ((q = skip_ws(q, end)) == NULL)
			return -1;
		if (*q == ']')
			return 0;
		if (*q == ',')
			q++;
		if ((q = skip_ws(q, end)) == NULL || *q != '{')
			return -1;
		for (q++;;)
		{
			const char *key;
			size_t		keylen;

			if ((q = skip_ws(q, end)) == NULL)
				return -1;
			if (*q == '}')
				break;
			if (*q == ',')
			{
				q++;
				continue;
			}
			if (*q != '"')
				return -1;
			key = q + 1;
			if ((q = skip_string(q, end)) == NULL)
				return -1;
			keylen = q - 1 - key;
			if ((q = skip_ws(q, end)) == NULL || *q != ':' ||
				(q = skip_ws(q + 1, end)) == NULL)
				return -1;
			if (keylen == 2 && memcmp(key, "id", 2) == 0)
				q = read_int(q, end, &id);
			else if (keylen == 2 && memcmp(key, "ts", 2) == 0 && *q == '"')
			{
				ts_us = parse_ts(q + 1, end);
				q = skip_string(q, end);
			}
			else
				q = skip_value(q, end);
			if (q == NULL)
				return -1;
		}
		q++;					/* past the event's '}' */
		if (id < 0 || ts_us == 0)
			return -1;
		on_event(c, id, ts_us, recv_us);
	}
}

static void
send_subscribe(Conn *c)
{
	const char *pct = strstr(sub_template, "%d");
	char		msg[512];
	int			n;

	/* the template is split by hand: it is no format string */
	if (pct == NULL)
		n = snprintf(msg, sizeof(msg),
					 "{\"op\":\"subscribe\",\"sub\":\"s1\",\"filter\":{\"executionId\":\"%s\"}}",
					 sub_template);
	else
		n = snprintf(msg, sizeof(msg),
					 "{\"op\":\"subscribe\",\"sub\":\"s1\",\"filter\":{\"executionId\":\"%.*s%d%s\"}}",
					 (int) (pct - sub_template), sub_template, conn_no(c), pct + 2);
	send_frame(c, 1, msg, (size_t) n);
}

static void
report_text(const char *what, const char *p, size_t len)
{
	static int	reported;

	if (reported++ < 10)
		fprintf(stderr, "ws_bench: client %s: %.*s\n", what, (int) (len > 300 ? 300 : len), p);
}

static void
on_message(Conn *c, const char *p, size_t len, double recv_us)
{
	const char *end = p + len;
	const char *op = p + 7;

	if (len < 9 || memcmp(p, "{\"op\":\"", 7) != 0)
	{
		bad_messages++;
		report_text("unexpected message", p, len);
		return;
	}
	if (strncmp(op, "events\"", 7) == 0)
	{
		if (!is_catchup(c))
			frames++;
		if (on_events(c, p, end, recv_us) != 0)
		{
			bad_messages++;
			report_text("unreadable events", p, len);
		}
	}
	else if (strncmp(op, "welcome\"", 8) == 0)
	{
		if (sub_template)
			send_subscribe(c);
		else if (!ready_on_subscribed)
			mark_ready(c);
	}
	else if (strncmp(op, "subscribed\"", 11) == 0)
	{
		const char *r = memmem(p, len, "\"replayed\":", 11);

		if (r != NULL)
			(void) read_int(r + 11, end, &c->replayed);
		c->received_at_subscribed = c->received;
		if (is_catchup(c) && catchup_end_us == 0)
			catchup_end_us = recv_us;
		mark_ready(c);
	}
	else if (strncmp(op, "error\"", 6) == 0)
	{
		errors++;
		report_text("error", p, len);
	}
	else if (strncmp(op, "gap\"", 4) == 0)
	{
		gaps++;
		report_text("gap", p, len);
	}
	else if (strncmp(op, "pong\"", 5) != 0 && strncmp(op, "unsubscribed\"", 13) != 0)
	{
		bad_messages++;
		report_text("unknown op", p, len);
	}
}

/* ---------------- framing ---------------- */

static void
grow(char **buf, size_t *cap, size_t need)
{
	if (*cap >= need)
		return;
	*cap = need < 4096 ? 4096 : need * 2;
	if ((*buf = realloc(*buf, *cap)) == NULL)
	{
		perror("ws_bench: realloc");
		exit(1);
	}
}

static void
set_events(Conn *c, int want_out)
{
	struct epoll_event ev = {
		.events = EPOLLIN | (want_out ? EPOLLOUT : 0),
		.data.u64 = (uint64_t) c->gen << 32 | (uint32_t) conn_no(c)
	};

	c->want_out = want_out;
	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void
flush_out(Conn *c)
{
	while (c->out_len > 0)
	{
		ssize_t		w = write(c->fd, c->out, c->out_len);

		if (w < 0)
		{
			if (errno != EAGAIN && errno != EINTR)
				c->dead = 1;	/* the read side will see why */
			break;
		}
		memmove(c->out, c->out + w, c->out_len - w);
		c->out_len -= w;
	}
	if ((c->out_len > 0) != c->want_out)
		set_events(c, c->out_len > 0);
}

/* A client frame: always masked (RFC 6455 5.3), so the key is random. */
static void
send_frame(Conn *c, int opcode, const char *payload, size_t len)
{
	unsigned char *h;
	uint32_t	key = (uint32_t) random();
	size_t		hdr = len < 126 ? 6 : 8;

	grow(&c->out, &c->out_cap, c->out_len + hdr + len);
	h = (unsigned char *) c->out + c->out_len;
	h[0] = 0x80 | opcode;
	if (len < 126)
		h[1] = 0x80 | len;
	else
	{
		h[1] = 0x80 | 126;
		h[2] = len >> 8;
		h[3] = len & 0xff;
	}
	memcpy(h + hdr - 4, &key, 4);
	for (size_t i = 0; i < len; i++)
		h[hdr + i] = payload[i] ^ h[hdr - 4 + i % 4];
	c->out_len += hdr + len;
	flush_out(c);
}

/*
 * Parses what arrived: the 101 response, then server frames (unmasked,
 * lengths of 7, 16 or 64 bits, possibly fragmented).  Returns the bytes
 * used; the rest is a partial frame.  Sets c->dead on close or error.
 */
static size_t
parse(Conn *c, const char *data, size_t len, double recv_us)
{
	size_t		off = 0;

	if (c->state == C_HANDSHAKE)
	{
		const char *hend = memmem(data, len, "\r\n\r\n", 4);

		if (hend == NULL)
		{
			if (len > 16384)
				c->dead = 1;
			return 0;
		}
		if (strncmp(data, "HTTP/1.1 101", 12) != 0 ||
			memmem(data, hend - data, WS_ACCEPT, strlen(WS_ACCEPT)) == NULL)
		{
			report_text("handshake refused", data, len);
			c->dead = 1;
			return len;
		}
		c->state = C_OPEN;
		off = hend + 4 - data;
		if (ready_on_open)
			mark_ready(c);
	}

	while (!c->dead && len - off >= 2)
	{
		const unsigned char *h = (const unsigned char *) data + off;
		int			fin = h[0] & 0x80,
					opcode = h[0] & 0x0f;
		size_t		hdr = 2;
		uint64_t	plen = h[1] & 0x7f;
		const char *payload;

		if (h[1] & 0x80)
		{
			report_text("masked server frame", "", 0);
			c->dead = 1;
			break;
		}
		if (plen == 126)
		{
			if (len - off < 4)
				break;
			plen = (uint64_t) h[2] << 8 | h[3];
			hdr = 4;
		}
		else if (plen == 127)
		{
			if (len - off < 10)
				break;
			plen = 0;
			for (int i = 2; i < 10; i++)
				plen = plen << 8 | h[i];
			hdr = 10;
		}
		if (plen > MAX_FRAME)
		{
			report_text("frame too big", "", 0);
			c->dead = 1;
			break;
		}
		if (len - off < hdr + plen)
			break;				/* wait for the rest */
		payload = data + off + hdr;
		off += hdr + plen;

		switch (opcode)
		{
			case 0x9:			/* ping: pong with its payload */
				pings++;
				send_frame(c, 0xA, payload, plen);
				break;
			case 0xA:
				break;
			case 0x8:			/* close: echo its status, then go */
				server_closes++;
				if (plen >= 2)
				{
					char		why[160];
					int			n = snprintf(why, sizeof(why), "%d %.*s",
											 (unsigned char) payload[0] << 8 | (unsigned char) payload[1],
											 (int) (plen > 100 ? 98 : plen - 2), payload + 2);

					report_text("closed by the server", why, (size_t) n);
					send_frame(c, 0x8, payload, 2);
				}
				c->dead = 1;
				break;
			case 0x0:
			case 0x1:
			case 0x2:
				if (fin && opcode != 0 && c->msg_len == 0)
				{
					on_message(c, payload, plen, recv_us);	/* whole: no copy */
					break;
				}
				grow(&c->msg, &c->msg_cap, c->msg_len + plen);
				memcpy(c->msg + c->msg_len, payload, plen);
				c->msg_len += plen;
				if (fin)
				{
					on_message(c, c->msg, c->msg_len, recv_us);
					c->msg_len = 0;
				}
				break;
			default:
				report_text("unknown opcode", "", 0);
				c->dead = 1;
		}
	}
	return off;
}

/* ---------------- connections ---------------- */

static void conn_lost(Conn *c);

static void
conn_open(Conn *c, const char *path)
{
	struct epoll_event ev;
	char		req[1024];
	int			n;

	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (c->fd < 0)
	{
		perror("ws_bench: socket");
		exit(1);
	}
	if (connect(c->fd, (struct sockaddr *) &server_addr, sizeof(server_addr)) != 0 &&
		errno != EINPROGRESS)
	{
		perror("ws_bench: connect");
		exit(1);
	}
	c->gen++;
	c->state = C_CONNECTING;
	c->dead = 0;
	c->in_len = c->msg_len = c->out_len = 0;
	n = snprintf(req, sizeof(req),
				 "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
				 "Connection: Upgrade\r\nSec-WebSocket-Key: " WS_KEY "\r\n"
				 "Sec-WebSocket-Version: 13\r\n\r\n", path, port);
	grow(&c->out, &c->out_cap, (size_t) n);
	memcpy(c->out, req, n);
	c->out_len = n;
	/* the request goes when the connect completes: EPOLLOUT */
	ev.events = EPOLLIN | EPOLLOUT;
	ev.data.u64 = (uint64_t) c->gen << 32 | (uint32_t) conn_no(c);
	c->want_out = 1;
	epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

/*
 * Closed without a close handshake, and with a reset rather than a FIN:
 * tens of thousands of connections closed by the client would otherwise
 * sit in TIME_WAIT on their ephemeral ports for a minute and starve the
 * next scenario of ports.
 */
static void
conn_close(Conn *c)
{
	struct linger lg = {1, 0};

	if (c->fd < 0)
		return;
	setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(c->fd);
	c->fd = -1;
	c->state = C_UNUSED;
}

/* path without any "after=" parameter, plus after=<id> when id > 0 */
static void
resume_path(char *out, size_t size, const char *path, long long id)
{
	const char *q = strchr(path, '?');
	size_t		len = q ? (size_t) (q - path) : strlen(path);
	char		sep = '?';

	snprintf(out, size, "%.*s", (int) len, path);
	while (q != NULL)
	{
		const char *param = q + 1,
				   *next = strchr(param, '&');
		int			plen = next ? (int) (next - param) : (int) strlen(param);

		if (strncmp(param, "after=", 6) != 0 && plen > 0)
		{
			len = strlen(out);
			snprintf(out + len, size - len, "%c%.*s", sep, plen, param);
			sep = '&';
		}
		q = next;
	}
	if (id > 0)
	{
		len = strlen(out);
		snprintf(out + len, size - len, "%cafter=%lld", sep, id);
	}
}

static void
conn_lost(Conn *c)
{
	int			was_open = c->state == C_OPEN;
	char		path[1100];

	conn_close(c);
	if (!was_open)
		handshake_failures++;	/* refused, or closed before the 101 */
	if (!was_open || (mode != M_LATENCY && mode != M_THROUGHPUT))
	{
		mark_ready(c);			/* nothing more to wait for from it */
		return;
	}
	/* resume where it left off, as a real client does */
	reconnects++;
	resume_path(path, sizeof(path), is_catchup(c) ? catchup_path : base_path,
				c->last_id);
	conn_open(c, path);
}

static void
on_writable(Conn *c)
{
	if (c->state == C_CONNECTING)
	{
		int			err = 0;
		socklen_t	l = sizeof(err);

		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
		if (err != 0)
		{
			fprintf(stderr, "ws_bench: connect: %s\n", strerror(err));
			exit(1);
		}
		c->state = C_HANDSHAKE;
	}
	flush_out(c);
}

/*
 * One read per readiness, so that a client with much to read (the
 * catch-up) takes turns with the others.  Bytes are parsed straight from
 * a shared buffer; only a partial frame is kept per connection, so 10,000
 * idle clients cost the client little.
 */
static void
on_readable(Conn *c)
{
	ssize_t		r = read(c->fd, scratch, sizeof(scratch));
	const char *data;
	size_t		len,
				used;
	double		t;

	if (r < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (r <= 0)
	{
		if (c->state == C_OPEN && r == 0)
			server_closes++;
		conn_lost(c);
		return;
	}
	t = now_us();
	/* not sticky: the kernel goes back to quick ACKs by itself */
	{
		int			off = 0;

		setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &off, sizeof(off));
	}
	if (c->in_len > 0)
	{
		grow(&c->in, &c->in_cap, c->in_len + r);
		memcpy(c->in + c->in_len, scratch, r);
		c->in_len += r;
		data = c->in;
		len = c->in_len;
	}
	else
	{
		data = scratch;
		len = r;
	}
	used = parse(c, data, len, t);
	if (c->dead)
	{
		conn_lost(c);
		return;
	}
	if (data == c->in)
		memmove(c->in, c->in + used, len - used);
	else if (len > used)
	{
		grow(&c->in, &c->in_cap, len - used);
		memcpy(c->in, data + used, len - used);
	}
	c->in_len = len - used;
}

static void
open_more(void)
{
	while (opened < n_clients && opened - n_ready < CONNECT_WINDOW)
	{
		conn_open(&conns[opened], base_path);
		opened++;
	}
}

/* Runs the loop for up to timeout_ms. */
static void
poll_once(int timeout_ms)
{
	struct epoll_event evs[512];
	int			k = epoll_wait(ep, evs, 512, timeout_ms);

	for (int e = 0; e < k; e++)
	{
		Conn	   *c = &conns[(uint32_t) evs[e].data.u64];

		if (c->fd < 0 || c->gen != (uint32_t) (evs[e].data.u64 >> 32))
			continue;			/* closed or reopened earlier in this batch */
		if (evs[e].events & EPOLLOUT)
			on_writable(c);
		if (c->fd >= 0 && (evs[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
			on_readable(c);
	}
	open_more();
}

static void
run_for(double seconds)
{
	double		until = now_us() + seconds * 1e6;

	while (now_us() < until)
		poll_once(100);
}

static void
connect_all(void)
{
	double		deadline = now_us() + 600e6;

	open_more();
	while (n_ready < n_clients)
	{
		if (now_us() > deadline)
		{
			fprintf(stderr, "ws_bench: only %d of %d clients ready after 600 s\n",
					n_ready, n_clients);
			exit(1);
		}
		poll_once(1000);
	}
	if (handshake_failures)
		fprintf(stderr, "ws_bench: %d clients were refused\n", handshake_failures);
}

static void
say_ready(void)
{
	printf("{\"ready\":%d}\n", n_clients);
	fflush(stdout);
}

static void
close_all(void)
{
	for (int i = 0; i < n_conns; i++)
		conn_close(&conns[i]);
}

static long
sum(size_t field_offset, int from, int to)
{
	long		s = 0;

	for (int i = from; i < to; i++)
		s += *(long *) ((char *) &conns[i] + field_offset);
	return s;
}

#define SUM_LIVE(field) sum(offsetof(Conn, field), 0, n_clients)

static void
print_common(void)
{
	printf("\"events_per_frame\":%.1f,\"reconnects\":%ld,\"server_closes\":%ld,"
		   "\"refused\":%d,\"errors\":%ld,\"gaps\":%ld,\"bad_messages\":%ld,\"pings\":%ld",
		   frames ? (double) deliveries / frames : 0.0, reconnects, server_closes,
		   handshake_failures, errors, gaps, bad_messages, pings);
}

/* ---------------- modes ---------------- */

static int
run_latency(void)
{
	double		cpu0 = -1,
				cpu1,
				self0 = 0,
				start;
	long		lost = 0,
				extra = 0;
	int			done = 0;

	connect_all();
	say_ready();
	start = now_us();
	while (!done)
	{
		double		t;

		poll_once(100);
		t = now_us();
		if (first_event_us > 0 && cpu0 < 0)
		{
			cpu0 = proc_cpu_s(pid_worker);
			self0 = self_cpu_s();
		}
		if (catchup_path && first_event_us > 0 && catchup_start_us == 0 &&
			t >= first_event_us + catchup_delay_s * 1e6)
		{
			catchup_start_us = t;
			conn_open(&conns[n_clients], catchup_path);
		}
		done = 1;
		for (int i = 0; i < n_clients && done; i++)
			if (conns[i].received < events_expected)
				done = 0;
		if (catchup_path && catchup_end_us == 0)
			done = 0;
		if (first_event_us > 0 && t - last_event_us > QUIET_GIVE_UP_US)
			done = 1;
		if (first_event_us == 0 && t - start > 600e6)
			done = 1;
	}
	cpu1 = proc_cpu_s(pid_worker);
	for (int i = 0; i < n_clients; i++)
	{
		lost += conns[i].received < events_expected ? events_expected - conns[i].received : 0;
		extra += conns[i].received > events_expected ? conns[i].received - events_expected : 0;
	}

	printf("{\"mode\":\"latency\",\"subscribers\":%d,\"events\":%ld,\"deliveries\":%lld,"
		   "\"lost\":%ld,\"unexpected\":%ld,\"out_of_order\":%ld,\"skipped\":%ld,",
		   n_clients, events_expected, deliveries, lost, extra,
		   SUM_LIVE(disorder), SUM_LIVE(skipped));
	print_hist("", &hist_live);
	if (pid_worker > 0 && cpu0 >= 0)
		printf(",\"worker_cpu_pct\":%.1f",
			   100 * (cpu1 - cpu0) / ((last_event_us - first_event_us) / 1e6));
	if (first_event_us > 0)
		printf(",\"client_cpu_pct\":%.1f",
			   100 * (self_cpu_s() - self0) / ((last_event_us - first_event_us) / 1e6));
	if (catchup_path)
	{
		Conn	   *k = &conns[n_clients];

		printf(",\"during_catchup\":{\"deliveries\":%ld,", hist_during.n);
		print_hist("", &hist_during);
		printf("},\"catchup\":{\"ms\":%.0f,\"replayed\":%lld,\"received\":%ld,"
			   "\"received_before_subscribed\":%ld,\"out_of_order\":%ld,\"skipped\":%ld}",
			   catchup_end_us > 0 ? (catchup_end_us - catchup_start_us) / 1e3 : -1.0,
			   k->replayed, k->received, k->received_at_subscribed,
			   k->disorder, k->skipped);
	}
	printf(",");
	print_common();
	printf("}\n");
	return 0;
}

static int
run_throughput(void)
{
	double		t0,
				t1,
				cpu0,
				cpu1,
				feed0,
				feed1,
				self0;
	long long	d0;
	long long	id0 = 0,
				id1 = 0;

	connect_all();
	say_ready();
	while (first_event_us == 0)
		poll_once(100);
	/* the window starts at the first event, so it is all publishing */
	t0 = now_us();
	cpu0 = proc_cpu_s(pid_worker);
	feed0 = proc_cpu_s(pid_feed);
	self0 = self_cpu_s();
	d0 = deliveries;
	for (int i = 0; i < n_clients; i++)
		id0 = conns[i].last_id > id0 ? conns[i].last_id : id0;
	while (now_us() < t0 + window_s * 1e6)
		poll_once(100);
	t1 = now_us();
	cpu1 = proc_cpu_s(pid_worker);
	feed1 = proc_cpu_s(pid_feed);
	for (int i = 0; i < n_clients; i++)
		id1 = conns[i].last_id > id1 ? conns[i].last_id : id1;

	printf("{\"mode\":\"throughput\",\"subscribers\":%d,\"seconds\":%.1f,"
		   "\"deliveries\":%lld,\"deliveries_per_s\":%.0f,"
		   "\"newest_id_advance_per_s\":%.0f,\"worker_cpu_pct\":%.1f,",
		   n_clients, (t1 - t0) / 1e6, deliveries - d0,
		   (deliveries - d0) / ((t1 - t0) / 1e6),
		   (id1 - id0) / ((t1 - t0) / 1e6),
		   pid_worker > 0 ? 100 * (cpu1 - cpu0) / ((t1 - t0) / 1e6) : -1.0);
	if (pid_feed > 0)
		printf("\"feed_backend_cpu_pct\":%.1f,", 100 * (feed1 - feed0) / ((t1 - t0) / 1e6));
	printf("\"client_cpu_pct\":%.1f,\"out_of_order\":%ld,\"skipped\":%ld,",
		   100 * (self_cpu_s() - self0) / ((t1 - t0) / 1e6),
		   SUM_LIVE(disorder), SUM_LIVE(skipped));
	print_hist("", &hist_live);
	printf(",");
	print_common();
	printf("}\n");
	return 0;
}

static int
run_idle(void)
{
	long		rss0 = proc_status_kb(pid_worker, "VmRSS"),
				anon0 = proc_status_kb(pid_worker, "RssAnon"),
				shm0 = proc_status_kb(pid_worker, "RssShmem"),
				rss1,
				anon1,
				shm1,
				rss2,
				rss3;
	double		t0 = now_us(),
				connect_s;

	connect_all();
	connect_s = (now_us() - t0) / 1e6;
	say_ready();
	run_for(1);					/* let the worker settle */
	rss1 = proc_status_kb(pid_worker, "VmRSS");
	anon1 = proc_status_kb(pid_worker, "RssAnon");
	shm1 = proc_status_kb(pid_worker, "RssShmem");
	if (hold_s > 0)
		run_for(hold_s);
	close_all();
	sleep(2);
	rss2 = proc_status_kb(pid_worker, "VmRSS");
	/* the worker gives memory back within 10 s of a crowd leaving */
	sleep(10);
	rss3 = proc_status_kb(pid_worker, "VmRSS");

	printf("{\"mode\":\"idle\",\"connections\":%d,\"subscribed\":%s,\"connect_s\":%.1f,"
		   "\"rss_before_kb\":%ld,\"rss_after_kb\":%ld,\"kb_per_connection\":%.2f,"
		   "\"anon_kb_per_connection\":%.2f,\"shmem_kb_per_connection\":%.2f,"
		   "\"rss_after_close_kb\":%ld,\"rss_12s_after_close_kb\":%ld,"
		   "\"held_s\":%.0f,\"alive_after_hold\":%d,",
		   n_clients, ready_on_subscribed ? "true" : "false", connect_s,
		   rss0, rss1, (double) (rss1 - rss0) / n_clients,
		   (double) (anon1 - anon0) / n_clients, (double) (shm1 - shm0) / n_clients,
		   rss2, rss3, hold_s, n_clients - (int) server_closes);
	print_common();
	printf("}\n");
	return 0;
}

static int
run_index(void)
{
	double		idle0,
				idle1,
				cpu0,
				cpu1,
				t0,
				t1,
				done_us = 0;

	connect_all();
	/* the idle cost of this many connections, to tell it from the events' */
	run_for(1);
	t0 = now_us();
	idle0 = proc_cpu_s(pid_worker);
	run_for(3);
	idle1 = proc_cpu_s(pid_worker);
	t1 = now_us();

	cpu0 = proc_cpu_s(pid_worker);
	say_ready();
	while (conns[0].received < events_expected)
	{
		double		t = now_us();

		if (first_event_us > 0 && t - last_event_us > QUIET_GIVE_UP_US)
			break;
		if (first_event_us == 0 && t - t1 > 600e6)
			break;
		poll_once(100);
	}
	done_us = now_us();
	cpu1 = proc_cpu_s(pid_worker);

	printf("{\"mode\":\"index\",\"subscribers\":%d,\"events\":%ld,\"received\":%ld,"
		   "\"misrouted\":%ld,\"out_of_order\":%ld,\"skipped\":%ld,"
		   "\"worker_cpu_s\":%.2f,\"cpu_ms_per_1000_events\":%.1f,"
		   "\"elapsed_s\":%.2f,\"idle_worker_cpu_pct\":%.2f,",
		   n_clients, events_expected, conns[0].received, misrouted,
		   SUM_LIVE(disorder), SUM_LIVE(skipped),
		   cpu1 - cpu0, 1000 * (cpu1 - cpu0) / (events_expected / 1000.0),
		   (done_us - t1) / 1e6, 100 * (idle1 - idle0) / ((t1 - t0) / 1e6));
	print_hist("", &hist_live);
	printf(",");
	print_common();
	printf("}\n");
	return 0;
}

static void
usage(void)
{
	fprintf(stderr,
			"usage: ws_bench latency    PORT PIDS N EVENTS PATH [CATCHUP_PATH DELAY_S]\n"
			"       ws_bench throughput PORT PIDS N SECONDS PATH\n"
			"       ws_bench idle       PORT PIDS N PATH [SUB_TEMPLATE|- [HOLD_S]]\n"
			"       ws_bench index      PORT PIDS N EVENTS SUB_TEMPLATE\n"
			"PIDS: worker[,feed] process ids to read /proc of, or 0\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	const char *m;
	char	   *comma;

	if (argc < 6)
		usage();
	m = argv[1];
	port = atoi(argv[2]);
	pid_worker = atoi(argv[3]);
	if ((comma = strchr(argv[3], ',')) != NULL)
		pid_feed = atoi(comma + 1);
	n_clients = atoi(argv[4]);
	if (n_clients <= 0)
		usage();

	if (strcmp(m, "latency") == 0 && (argc == 7 || argc == 9))
	{
		mode = M_LATENCY;
		events_expected = atol(argv[5]);
		base_path = argv[6];
		if (argc == 9)
		{
			catchup_path = argv[7];
			catchup_delay_s = atof(argv[8]);
		}
	}
	else if (strcmp(m, "throughput") == 0 && argc == 7)
	{
		mode = M_THROUGHPUT;
		window_s = atof(argv[5]);
		base_path = argv[6];
	}
	else if (strcmp(m, "idle") == 0 && argc >= 6 && argc <= 8)
	{
		mode = M_IDLE;
		base_path = argv[5];
		if (argc >= 7 && strcmp(argv[6], "-") != 0)
			sub_template = argv[6];
		if (argc == 8)
			hold_s = atof(argv[7]);
	}
	else if (strcmp(m, "index") == 0 && argc == 7)
	{
		mode = M_INDEX;
		events_expected = atol(argv[5]);
		base_path = "/ws";
		sub_template = argv[6];
	}
	else
		usage();

	ready_on_subscribed = sub_template != NULL || strchr(base_path, '?') != NULL;
	ready_on_open = getenv("WS_BENCH_READY_ON_OPEN") != NULL;
	n_conns = n_clients + (catchup_path != NULL);
	conns = calloc(n_conns, sizeof(Conn));
	for (int i = 0; i < n_conns; i++)
		conns[i].fd = -1;
	if (catchup_path)
	{
		/* resumes from its cursor: ids above it are what must arrive */
		const char *a = strstr(catchup_path, "after=");

		conns[n_clients].last_id = a ? atoll(a + 6) : 0;
	}
	ep = epoll_create1(0);
	srandom((unsigned) getpid());
	server_addr.sin_family = AF_INET;
	server_addr.sin_port = htons(port);
	inet_pton(AF_INET, "127.0.0.1", &server_addr.sin_addr);

	switch (mode)
	{
		case M_LATENCY:
			return run_latency();
		case M_THROUGHPUT:
			return run_throughput();
		case M_IDLE:
			return run_idle();
		case M_INDEX:
			return run_index();
	}
	return 1;
}

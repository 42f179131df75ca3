/*
 * bench/sse_client.c: N Server-Sent Events subscribers in one epoll loop,
 * measuring rt_publish-to-receipt latency and checking delivery.
 *
 *   sse_client <port> <subscribers> <expected-events> <path-and-query>
 *
 * Each event's "ts" (clock_timestamp() at insert, RFC 3339 in UTC) is
 * compared with the receive time on the same clock.  Every subscriber must
 * see every event once, ascending.  Prints one JSON line; gives up after
 * 120 s.  Built by bench/sse_latency.sh (cc -O2).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct Sub
{
	int			fd;
	char	   *buf;
	size_t		len,
				cap;
	long long	last_id;
	long		received;
	long		disorder;		/* ids not above the one before: duplicates too */
	int			complete;
} Sub;

static double *lat;
static long nlat,
			latcap;

static double
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* "2026-11-22T23:01:29.123456+00:00" (UTC) to microseconds since the epoch */
static double
parse_ts(const char *s)
{
	struct tm	tm = {0};
	double		frac = 0;
	const char *p;

	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
			   &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
		return 0;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	p = s + 19;
	if (*p == '.')
		frac = strtod(p, NULL);
	return (double) timegm(&tm) * 1e6 + frac * 1e6;
}

static void
on_event(Sub *s, const char *block)
{
	const char *id = strstr(block, "id: ");
	const char *ts = strstr(block, "\"ts\":\"");
	long long	n;

	if (id == NULL || ts == NULL)
		return;
	n = atoll(id + 4);
	if (n <= s->last_id)
		s->disorder++;
	s->last_id = n;
	s->received++;
	if (nlat == latcap)
	{
		latcap = latcap ? latcap * 2 : 1 << 20;
		lat = realloc(lat, latcap * sizeof(double));
	}
	lat[nlat++] = (now_us() - parse_ts(ts + 6)) / 1000.0;
}

static int
cmp(const void *a, const void *b)
{
	double		x = *(const double *) a,
				y = *(const double *) b;

	return (x > y) - (x < y);
}

static int
run(int port, int n, long expected, const char *path)
{
	Sub		   *subs = calloc(n, sizeof(Sub));
	int			ep = epoll_create1(0);
	char		req[512];
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
	double		deadline;
	long		done = 0,
				lost = 0,
				disorder = 0;

	inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
	snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
	for (int i = 0; i < n; i++)
	{
		struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};

		subs[i].fd = socket(AF_INET, SOCK_STREAM, 0);
		if (subs[i].fd < 0 || connect(subs[i].fd, (struct sockaddr *) &addr, sizeof(addr)) != 0 ||
			write(subs[i].fd, req, strlen(req)) != (ssize_t) strlen(req))
		{
			perror("connect");
			return 1;
		}
		subs[i].cap = 1 << 16;
		subs[i].buf = malloc(subs[i].cap);
		epoll_ctl(ep, EPOLL_CTL_ADD, subs[i].fd, &ev);
	}
	printf("{\"ready\":%d}\n", n);
	fflush(stdout);

	deadline = now_us() + 120e6;
	while (done < n && now_us() < deadline)
	{
		struct epoll_event evs[256];
		int			k = epoll_wait(ep, evs, 256, 1000);

		for (int e = 0; e < k; e++)
		{
			Sub		   *s = &subs[evs[e].data.u32];
			ssize_t		r;
			char	   *start,
					   *end;

			if (s->cap - s->len < 65536)
			{
				s->cap *= 2;
				s->buf = realloc(s->buf, s->cap);
			}
			r = read(s->fd, s->buf + s->len, s->cap - s->len - 1);
			if (r <= 0)
				continue;
			s->len += r;
			s->buf[s->len] = '\0';
			start = s->buf;
			while ((end = strstr(start, "\n\n")) != NULL)
			{
				*end = '\0';
				on_event(s, start);
				start = end + 2;
			}
			memmove(s->buf, start, s->buf + s->len - start);
			s->len -= start - s->buf;
			if (!s->complete && s->received >= expected)
			{
				s->complete = 1;
				done++;
			}
		}
	}
	for (int i = 0; i < n; i++)
	{
		lost += subs[i].received < expected ? expected - subs[i].received : 0;
		disorder += subs[i].disorder;
		close(subs[i].fd);
	}
	qsort(lat, nlat, sizeof(double), cmp);
	printf("{\"subscribers\":%d,\"deliveries\":%ld,\"lost\":%ld,\"out_of_order\":%ld,"
		   "\"p50_ms\":%.2f,\"p99_ms\":%.2f,\"max_ms\":%.2f}\n",
		   n, nlat, lost, disorder,
		   nlat ? lat[nlat / 2] : 0, nlat ? lat[(long) (nlat * 0.99)] : 0,
		   nlat ? lat[nlat - 1] : 0);
	return 0;
}

int
main(int argc, char **argv)
{
	if (argc != 5)
	{
		fprintf(stderr, "usage: sse_client port subscribers expected-events path\n");
		return 2;
	}
	return run(atoi(argv[1]), atoi(argv[2]), atol(argv[3]), argv[4]);
}

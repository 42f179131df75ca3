/*
 * bench/fanout_floor.c: the least any server can do for the latency goal on
 * this machine.  A WebSocket server with nothing in it but the fan-out: no
 * Postgres, no libwebsockets, no JSON, no queue, no subscription index.
 *
 *   cc -O2 -Wall -Wextra -o fanout_floor bench/fanout_floor.c
 *   ./fanout_floor PORT N EVENTS RATE
 *
 * Accepts N WebSocket clients on 127.0.0.1:PORT (any GET with an upgrade is
 * answered 101 with the accept value of bench/ws_bench.c's fixed key), then
 * makes EVENTS events at RATE a second.  Each event is stamped with
 * CLOCK_REALTIME, framed once, and written with one send() to every client
 * in the order they connected, as the rtevents worker and nchan do: an
 * events frame the size of the worker's, {"op":"events","events":[...]},
 * that bench/ws_bench.c reads and times exactly as it times the worker's.
 * A client whose socket does not take the whole frame is dropped (never
 * happens at these rates).  Prints the fan-out's CPU and wall time per
 * send() when done.
 *
 * bench/ws_bench.sh floor runs it against ws_bench latency: the p50/p99 it
 * gets is the floor under the worker's, on the same cores with the same
 * client.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WS_ACCEPT	"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

static double
clock_s(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* "2026-11-30T03:40:02.123456+00:00", as Postgres writes a timestamptz */
static void
format_now(char *out, size_t size)
{
	struct timespec ts;
	struct tm	tm;
	char		sec[32];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(sec, sizeof(sec), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, size, "%.19s.%06d+00:00", sec, (int) (ts.tv_nsec / 1000));
}

int
main(int argc, char **argv)
{
	int			port,
				n,
				rate,
				lfd,
				one = 1,
				upgraded = 0,
				dropped = 0;
	long		events;
	int		   *fds;
	struct sockaddr_in addr = {0};
	struct rlimit rl;
	double		cpu0,
				start,
				fanout_wall = 0;

	if (argc != 5)
	{
		fprintf(stderr, "usage: fanout_floor PORT N EVENTS RATE\n");
		return 2;
	}
	port = atoi(argv[1]);
	n = atoi(argv[2]);
	events = atol(argv[3]);
	rate = atoi(argv[4]);
	if (n <= 0 || events <= 0 || rate <= 0)
		return 2;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
	{
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	fds = calloc(n, sizeof(int));

	lfd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	addr.sin_family = AF_INET;
	addr.sin_port = htons(port);
	inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
	if (bind(lfd, (struct sockaddr *) &addr, sizeof(addr)) != 0 ||
		listen(lfd, 4096) != 0)
	{
		perror("fanout_floor: listen");
		return 1;
	}
	fprintf(stderr, "fanout_floor: listening on %d\n", port);

	/*
	 * Accept and upgrade everyone first (blocking: the handshake is not what
	 * is measured), then make nonblocking for the fan-out.
	 */
	while (upgraded < n)
	{
		char		buf[4096];
		ssize_t		got = 0,
					r;
		static const char answer[] =
			"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
			"Connection: Upgrade\r\nSec-WebSocket-Accept: " WS_ACCEPT "\r\n\r\n";
		int			fd = accept(lfd, NULL, NULL);

		if (fd < 0)
			continue;
		while (got < (ssize_t) sizeof(buf) - 1 &&
			   (r = recv(fd, buf + got, sizeof(buf) - 1 - got, 0)) > 0)
		{
			got += r;
			buf[got] = '\0';
			if (strstr(buf, "\r\n\r\n"))
				break;
		}
		if (strstr(buf, "\r\n\r\n") == NULL ||
			send(fd, answer, sizeof(answer) - 1, MSG_NOSIGNAL) != sizeof(answer) - 1)
		{
			close(fd);
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		fds[upgraded++] = fd;
	}
	fprintf(stderr, "fanout_floor: %d clients\n", upgraded);

	cpu0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
	start = clock_s(CLOCK_MONOTONIC);
	for (long i = 1; i <= events; i++)
	{
		double		due = start + (double) i / rate,
					t;
		char		ts[48],
					frame[512];
		int			len;
		size_t		hdr;

		while ((t = clock_s(CLOCK_MONOTONIC)) < due)
		{
			struct timespec d = {0, (long) ((due - t) * 1e9)};

			nanosleep(&d, NULL);
		}
		format_now(ts, sizeof(ts));
		/* the worker's frame for one event of the latency scenario */
		len = snprintf(frame + 4, sizeof(frame) - 4,
					   "{\"op\":\"events\",\"subs\":[\"default\"],\"events\":[{\"id\":%ld,"
					   "\"executionId\":\"bench\",\"type\":\"job_progress\","
					   "\"payload\":{\"pct\":%ld},\"ts\":\"%s\"}]}",
					   i, i % 100, ts);
		/* server frames are unmasked: FIN + text, then the length */
		if (len < 126)
		{
			hdr = 2;
			frame[2] = (char) 0x81;
			frame[3] = (char) len;
		}
		else
		{
			hdr = 4;
			frame[0] = (char) 0x81;
			frame[1] = 126;
			frame[2] = (char) (len >> 8);
			frame[3] = (char) (len & 0xff);
		}
		t = clock_s(CLOCK_MONOTONIC);
		for (int k = 0; k < upgraded; k++)
		{
			if (fds[k] < 0)
				continue;
			if (send(fds[k], frame + 4 - hdr, hdr + len,
					 MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t) (hdr + len))
			{
				close(fds[k]);
				fds[k] = -1;
				dropped++;
			}
		}
		fanout_wall += clock_s(CLOCK_MONOTONIC) - t;
	}
	printf("{\"clients\":%d,\"events\":%ld,\"rate\":%d,\"dropped\":%d,"
		   "\"cpu_us_per_send\":%.2f,\"fanout_wall_ms\":%.2f}\n",
		   upgraded, events, rate, dropped,
		   (clock_s(CLOCK_PROCESS_CPUTIME_ID) - cpu0) * 1e6 / ((double) events * upgraded),
		   fanout_wall * 1e3 / events);
	/* let the clients read the last frames before they see the close */
	sleep(1);
	return 0;
}

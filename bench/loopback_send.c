/*
 * bench/loopback_send.c: what one send() of an event costs on this machine,
 * without rtevents or libwebsockets: the floor under a delivery.
 *
 *   cc -O2 -Wall -Wextra -o loopback_send bench/loopback_send.c
 *   ./loopback_send [N [ROUNDS [GAP_US [BYTES [PORT]]]]]
 *
 * Opens N (1000) TCP connections over loopback (TCP_NODELAY on the sending
 * side, as libwebsockets sets it), forks a reader that drains them all with
 * one epoll loop, as bench/ws_bench.c does, and sends ROUNDS (100) rounds of
 * one BYTES-byte (250, an event frame's size) write to each connection,
 * GAP_US (10000, an event every 10 ms) apart.  Prints the sender's CPU time
 * and wall time per send().  On loopback the kernel also runs the receiving
 * side of each segment in the sender's time slice, and wakes the reader.
 *
 * Needs N + a few descriptors on each side (ulimit -n).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double
wall_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double
cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
		(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* The reader: drains every connection until all the bytes have come. */
static void
drain(const int *fds, int n, long want)
{
	int			ep = epoll_create1(0);
	struct epoll_event evs[512];
	static char buf[65536];
	long		got = 0;

	for (int i = 0; i < n; i++)
	{
		struct epoll_event ev = {.events = EPOLLIN,.data.fd = fds[i]};

		epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
	}
	while (got < want)
	{
		int			k = epoll_wait(ep, evs, 512, 5000);

		if (k <= 0)
			break;				/* the sender is gone */
		for (int j = 0; j < k; j++)
		{
			ssize_t		r = read(evs[j].data.fd, buf, sizeof(buf));

			if (r > 0)
				got += r;
		}
	}
}

int
main(int argc, char **argv)
{
	int			n = argc > 1 ? atoi(argv[1]) : 1000;
	int			rounds = argc > 2 ? atoi(argv[2]) : 100;
	int			gap_us = argc > 3 ? atoi(argv[3]) : 10000;
	int			bytes = argc > 4 ? atoi(argv[4]) : 250;
	int			port = argc > 5 ? atoi(argv[5]) : 8899;
	struct sockaddr_in addr = {.sin_family = AF_INET};
	int			one = 1;
	int			listener;
	int		   *readers,
			   *senders;
	char	   *msg;
	double		c0,
				c1,
				t0,
				t1;
	pid_t		pid;

	if (n <= 0 || rounds <= 0 || gap_us < 0 || bytes <= 0)
	{
		fprintf(stderr, "usage: loopback_send [N [ROUNDS [GAP_US [BYTES [PORT]]]]]\n");
		return 2;
	}
	addr.sin_port = htons(port);
	inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
	listener = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(listener, (struct sockaddr *) &addr, sizeof(addr)) != 0 ||
		listen(listener, 4096) != 0)
	{
		perror("loopback_send: bind");
		return 1;
	}
	readers = calloc(n, sizeof(int));
	senders = calloc(n, sizeof(int));
	msg = malloc(bytes);
	if (readers == NULL || senders == NULL || msg == NULL)
		return 1;
	memset(msg, 'x', bytes);
	for (int i = 0; i < n; i++)
	{
		readers[i] = socket(AF_INET, SOCK_STREAM, 0);
		if (readers[i] < 0 ||
			connect(readers[i], (struct sockaddr *) &addr, sizeof(addr)) != 0 ||
			(senders[i] = accept(listener, NULL, NULL)) < 0)
		{
			perror("loopback_send: connect (ulimit -n?)");
			return 1;
		}
		setsockopt(senders[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}

	pid = fork();
	if (pid == 0)
	{
		drain(readers, n, (long) n * rounds * bytes);
		_exit(0);
	}

	c0 = cpu_s();
	t0 = wall_s();
	for (int r = 0; r < rounds; r++)
	{
		double		start = wall_s();

		for (int i = 0; i < n; i++)
			if (send(senders[i], msg, bytes, MSG_NOSIGNAL) != bytes)
				fprintf(stderr, "loopback_send: short send\n");
		t1 = wall_s();
		if (gap_us > 0 && (t1 - start) * 1e6 < gap_us)
			usleep(gap_us - (useconds_t) ((t1 - start) * 1e6));
		t0 += wall_s() - t1;	/* the wall time counts the sends only */
	}
	c1 = cpu_s();
	t1 = wall_s();
	waitpid(pid, NULL, 0);

	printf("%d connections, %d rounds of %d bytes, %d us apart: "
		   "%.2f us of CPU and %.2f us of wall time per send()\n",
		   n, rounds, bytes, gap_us,
		   (c1 - c0) * 1e6 / ((double) n * rounds),
		   (t1 - t0) * 1e6 / ((double) n * rounds));
	return 0;
}

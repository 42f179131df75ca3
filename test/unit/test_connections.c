/*-------------------------------------------------------------------------
 *
 * test_connections.c
 *		Unit and concurrency tests of connections.c, printed as TAP.
 *
 * connections.c is linked as it is, against stubs of the few backend
 * functions it calls: shared memory is calloc'd, the clock is a variable the
 * test sets, and the materialized SRF's tuplestore collects the rows here.
 * So rt_connections() is called as SQL would call it, and what it returns
 * is checked field by field.
 *
 * The concurrency test runs the single writer (as the server worker does)
 * in a thread, updating slots as fast as it can, while this thread reads
 * them through rt_connections(): every row must be one the writer wrote
 * whole, never fields from two writes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "rtevents.h"

extern Datum rt_connections(PG_FUNCTION_ARGS);

static int	tests_run = 0;
static int	tests_failed = 0;

static void
ok(bool cond, const char *name)
{
	tests_run++;
	if (!cond)
		tests_failed++;
	printf("%sok %d - %s\n", cond ? "" : "not ", tests_run, name);
}

/* ---- stubs of what connections.c takes from the backend ---- */

int			rt_max_connections = 10000;
volatile sig_atomic_t InterruptPending = false;
MemoryContext TopMemoryContext = NULL;
static LWLockPadded lwlocks[NUM_FIXED_LWLOCKS];
LWLockPadded *MainLWLockArray = lwlocks;

static volatile TimestampTz stub_now = 0;
static pg_on_exit_callback exit_callback = NULL;
static int	exit_callbacks = 0;

void
ProcessInterrupts(void)
{
}

Size
add_size(Size s1, Size s2)
{
	return s1 + s2;
}

Size
mul_size(Size s1, Size s2)
{
	return s1 * s2;
}

void
RequestAddinShmemSpace(Size size)
{
}

void *
ShmemInitStruct(const char *name, Size size, bool *foundPtr)
{
	*foundPtr = false;
	return malloc(size);		/* not zeroed: rt_conn_init_shmem must */
}

bool
LWLockAcquire(LWLock *lock, LWLockMode mode)
{
	return true;
}

void
LWLockRelease(LWLock *lock)
{
}

void *
MemoryContextAlloc(MemoryContext context, Size size)
{
	return malloc(size);
}

void
on_shmem_exit(pg_on_exit_callback function, Datum arg)
{
	exit_callback = function;
	exit_callbacks++;
}

TimestampTz
GetCurrentTimestamp(void)
{
	return stub_now;
}

text *
cstring_to_text(const char *s)
{
	size_t		len = strlen(s);
	text	   *t = malloc(VARHDRSZ + len);

	SET_VARSIZE(t, VARHDRSZ + len);
	memcpy(VARDATA(t), s, len);
	return t;
}

/* ---- the rows rt_connections() returns ---- */

typedef struct Row
{
	int64		id;
	char		transport[16];
	bool		peer_null;
	char		peer[128];
	int32		subscriptions;
	int64		queued_bytes;
	TimestampTz connected_at;
	TimestampTz last_activity;
} Row;

static Row *rows = NULL;
static int	nrows = 0;

void
InitMaterializedSRF(FunctionCallInfo fcinfo, bits32 flags)
{
	nrows = 0;
}

static void
text_copy(char *dst, size_t size, Datum d)
{
	text	   *t = (text *) DatumGetPointer(d);
	size_t		len = VARSIZE(t) - VARHDRSZ;

	if (len >= size)
		len = size - 1;
	memcpy(dst, VARDATA(t), len);
	dst[len] = '\0';
	free(t);
}

void
tuplestore_putvalues(Tuplestorestate *state, TupleDesc tdesc,
					 Datum *values, bool *isnull)
{
	Row		   *r = &rows[nrows++];

	memset(r, 0, sizeof(*r));
	r->id = DatumGetInt64(values[0]);
	if (!isnull[1])
		text_copy(r->transport, sizeof(r->transport), values[1]);
	r->peer_null = isnull[2];
	if (!isnull[2])
		text_copy(r->peer, sizeof(r->peer), values[2]);
	r->subscriptions = DatumGetInt32(values[3]);
	r->queued_bytes = DatumGetInt64(values[4]);
	r->connected_at = DatumGetTimestampTz(values[5]);
	r->last_activity = DatumGetTimestampTz(values[6]);
}

/* rt_connections(), called as the executor would; returns the row count. */
static int
read_rows(void)
{
	ReturnSetInfo rsinfo;
	LOCAL_FCINFO(fcinfo, 0);

	memset(&rsinfo, 0, sizeof(rsinfo));
	rsinfo.type = T_ReturnSetInfo;
	InitFunctionCallInfoData(*fcinfo, NULL, 0, InvalidOid, NULL,
							 (Node *) &rsinfo);
	(void) rt_connections(fcinfo);
	return nrows;
}

static Row *
row_with_id(int64 id)
{
	for (int i = 0; i < nrows; i++)
		if (rows[i].id == id)
			return &rows[i];
	return NULL;
}

/* ---- single-threaded: the API ---- */

static void
test_api(void)
{
	int			a,
				b,
				c,
				d;
	Row		   *r;
	char		long_peer[101];
	uint64		last_id;

	ok(read_rows() == 0, "no shared memory (not preloaded): no rows");

	rt_conn_request_shmem();
	rt_conn_init_shmem();
	ok(read_rows() == 0, "fresh shared memory: no rows");
	ok(rt_conn_acquire(RT_CONN_SSE, "x") == -1,
	   "before rt_conn_reset_all the worker has no free list: acquire refuses");

	rt_conn_reset_all();
	ok(exit_callbacks == 1, "reset_all registers the exit callback");
	stub_now = 1000;
	a = rt_conn_acquire(RT_CONN_SSE, "127.0.0.1");
	stub_now = 2000;
	b = rt_conn_acquire(RT_CONN_WEBSOCKET, "::1");
	c = rt_conn_acquire(RT_CONN_HISTORY, NULL);
	ok(a == 0 && b == 1 && c == 2, "slots are taken lowest first");
	ok(rt_conn_id(a) == 1 && rt_conn_id(b) == 2 && rt_conn_id(c) == 3,
	   "ids are fresh and ascending");
	ok(rt_conn_in_use() == 3, "rt_conn_in_use counts them");

	ok(read_rows() == 3, "three clients, three rows");
	r = row_with_id(1);
	ok(r != NULL && strcmp(r->transport, "sse") == 0 &&
	   !r->peer_null && strcmp(r->peer, "127.0.0.1") == 0 &&
	   r->subscriptions == 0 && r->queued_bytes == 0 &&
	   r->connected_at == 1000 && r->last_activity == 1000,
	   "an SSE row: transport, peer, zero counts, connected_at = last_activity");
	r = row_with_id(2);
	ok(r != NULL && strcmp(r->transport, "websocket") == 0 &&
	   strcmp(r->peer, "::1") == 0, "a websocket row");
	r = row_with_id(3);
	ok(r != NULL && strcmp(r->transport, "history") == 0 && r->peer_null,
	   "a history row; an unknown peer is NULL");

	stub_now = 3000;
	rt_conn_set(a, 2, 512);
	rt_conn_touch(b);
	stub_now = 4000;
	rt_conn_set_queued(c, 99);
	read_rows();
	r = row_with_id(1);
	ok(r->subscriptions == 2 && r->queued_bytes == 512 &&
	   r->last_activity == 3000 && r->connected_at == 1000,
	   "rt_conn_set: subscriptions, queued_bytes, last_activity");
	r = row_with_id(2);
	ok(r->last_activity == 3000 && r->connected_at == 2000 &&
	   r->subscriptions == 0, "rt_conn_touch: last_activity only");
	r = row_with_id(3);
	ok(r->queued_bytes == 99 && r->last_activity == 2000,
	   "rt_conn_set_queued: queued_bytes, last_activity left alone");

	rt_conn_release(b);
	ok(read_rows() == 2 && row_with_id(2) == NULL && rt_conn_in_use() == 2,
	   "a released client's row is gone");
	rt_conn_release(b);
	rt_conn_release(-1);
	rt_conn_release(rt_max_connections);
	rt_conn_set(-1, 1, 1);
	rt_conn_touch(-1);
	rt_conn_set_queued(-1, 1);
	ok(rt_conn_in_use() == 2 && read_rows() == 2 && rt_conn_id(-1) == 0 &&
	   rt_conn_id(b) == 0,
	   "a second release, slot -1 and out-of-range slots are no-ops");
	d = rt_conn_acquire(RT_CONN_SSE, "10.0.0.1");
	ok(d == b && rt_conn_id(d) == 4,
	   "a released slot is reused, once, with a fresh id");
	ok(rt_conn_acquire(RT_CONN_SSE, NULL) == 3,
	   "then the next never-used one (the double release did not duplicate it)");

	memset(long_peer, 'p', 100);
	long_peer[100] = '\0';
	c = rt_conn_acquire(RT_CONN_SSE, long_peer);
	read_rows();
	r = row_with_id((int64) rt_conn_id(c));
	ok(r != NULL && strlen(r->peer) == 63 && strncmp(r->peer, long_peer, 63) == 0,
	   "a peer longer than the slot holds is cut to 63 bytes");

	last_id = rt_conn_id(c);
	rt_conn_reset_all();
	ok(read_rows() == 0 && rt_conn_in_use() == 0,
	   "rt_conn_reset_all (a restarted worker): every slot free");
	ok(exit_callbacks == 1, "... the exit callback registered once only");
	a = rt_conn_acquire(RT_CONN_SSE, "127.0.0.1");
	ok(a == 0 && rt_conn_id(a) == last_id + 1,
	   "ids go on ascending across a worker restart");

	exit_callback(0, (Datum) 0);
	ok(read_rows() == 0, "the exit callback frees every slot");
	rt_conn_reset_all();
}

/* 10,000 clients at once: every slot, each once, then refusal. */
static void
test_burst(void)
{
	bool	   *seen = calloc(rt_max_connections, sizeof(bool));
	int		   *slots = malloc(sizeof(int) * rt_max_connections);
	bool		distinct = true;

	for (int i = 0; i < rt_max_connections; i++)
	{
		slots[i] = rt_conn_acquire(RT_CONN_SSE, "127.0.0.1");
		if (slots[i] < 0 || slots[i] >= rt_max_connections || seen[slots[i]])
			distinct = false;
		else
			seen[slots[i]] = true;
	}
	ok(distinct, "a burst of max_connections clients: each gets its own slot");
	ok(rt_conn_acquire(RT_CONN_SSE, "127.0.0.1") == -1,
	   "one more is refused (-1)");
	ok(rt_conn_in_use() == rt_max_connections &&
	   read_rows() == rt_max_connections, "all of them are listed");
	for (int i = 0; i < rt_max_connections; i += 2)
		rt_conn_release(slots[i]);
	ok(rt_conn_in_use() == rt_max_connections / 2 &&
	   read_rows() == rt_max_connections / 2, "half of them leave");
	for (int i = 0; i < rt_max_connections; i += 2)
		slots[i] = rt_conn_acquire(RT_CONN_WEBSOCKET, "::1");
	ok(rt_conn_acquire(RT_CONN_SSE, "x") == -1 &&
	   rt_conn_in_use() == rt_max_connections,
	   "as many come back, and the server is full again");
	for (int i = 0; i < rt_max_connections; i++)
		rt_conn_release(slots[i]);
	ok(rt_conn_in_use() == 0 && read_rows() == 0, "all leave");
	free(seen);
	free(slots);
}

/* ---- concurrent: one writer thread, this thread reading ---- */

#define WRITER_ROUNDS	2000000

static volatile bool writer_done = false;

/*
 * Slot a: set(k, 1000 * k) at time k, so a whole row has queued_bytes =
 * 1000 * subscriptions = 1000 * last_activity.  Slot b: released and taken
 * again each round by a client "peer-k" connecting at time k.
 */
static void *
writer(void *arg)
{
	int			a = rt_conn_acquire(RT_CONN_SSE, "a");
	int			b = rt_conn_acquire(RT_CONN_WEBSOCKET, "peer-0");

	for (int k = 1; k <= WRITER_ROUNDS; k++)
	{
		char		peer[32];

		stub_now = k;
		rt_conn_set(a, k, (int64) k * 1000);
		rt_conn_release(b);
		snprintf(peer, sizeof(peer), "peer-%d", k);
		b = rt_conn_acquire(RT_CONN_WEBSOCKET, peer);
	}
	rt_conn_release(a);
	rt_conn_release(b);
	writer_done = true;
	return NULL;
}

static void
test_concurrent(void)
{
	pthread_t	thread;
	long		reads = 0,
				rows_checked = 0,
				torn = 0;

	rt_conn_reset_all();
	if (pthread_create(&thread, NULL, writer, NULL) != 0)
	{
		ok(false, "start the writer thread");
		return;
	}
	while (!writer_done)
	{
		/* only the first rows: the writer keeps to the start of the array */
		read_rows();
		reads++;
		for (int i = 0; i < nrows; i++)
		{
			Row		   *r = &rows[i];

			rows_checked++;
			if (strcmp(r->transport, "sse") == 0)
			{
				if (strcmp(r->peer, "a") != 0 ||
					r->queued_bytes != (int64) r->subscriptions * 1000 ||
					r->last_activity != r->subscriptions)
					torn++;
			}
			else
			{
				char		expect[32];

				snprintf(expect, sizeof(expect), "peer-" INT64_FORMAT,
						 (int64) r->connected_at);
				if (strcmp(r->transport, "websocket") != 0 ||
					strcmp(r->peer, expect) != 0 ||
					r->last_activity != r->connected_at ||
					r->subscriptions != 0 || r->queued_bytes != 0)
					torn++;
			}
		}
	}
	pthread_join(thread, NULL);
	printf("# %ld reads, %ld rows checked, %ld torn\n", reads, rows_checked, torn);
	ok(reads > 10 && rows_checked > 10,
	   "the reader read while the writer wrote");
	ok(torn == 0, "no row is ever a mix of two writes");
	ok(read_rows() == 0, "the writer's clients are gone");
}

int
main(int argc, char **argv)
{
	rows = malloc(sizeof(Row) * rt_max_connections);
	test_api();
	test_burst();
	test_concurrent();
	printf("1..%d\n", tests_run);
	return tests_failed == 0 ? 0 : 1;
}

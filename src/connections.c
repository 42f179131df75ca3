/*-------------------------------------------------------------------------
 *
 * connections.c
 *		The server worker's clients, one slot each in shared memory, and
 *		rt_connections(), which lists them for the rtevents_connections view.
 *
 * This module owns the slot array (rtevents.max_connections slots), the
 * protocol by which it is written and read, and the worker's list of free
 * slots.  Having no free slot is also how the worker knows it is full: the
 * caller refuses the client (503 server_full) rather than take on more than
 * it was sized for.
 *
 * One writer, many readers, no lock.  Only the server worker writes slots,
 * from inside its event loop, where it must never wait; any backend may read
 * them, as pg_stat_activity reads PgBackendStatus.  So the protocol is
 * PgBackendStatus's st_changecount: the writer makes a slot's change count
 * odd before it writes and even again after, with a write barrier on each
 * side; a reader notes the count, copies the slot, notes the count again
 * (with read barriers between), and keeps the copy only if the count was
 * even and did not move, else copies again.  The writer never waits for a
 * reader, and no reader keeps a half-written slot.  Each row is consistent
 * on its own; rows are not one snapshot of the whole array (no more than
 * pg_stat_activity's are of the server, but unlike it, there is no copy
 * cached for the transaction: every call reads afresh).
 *
 * The free slots are a stack of indexes in the worker's own memory, since
 * no other process needs it: taking and freeing a slot are O(1) however many
 * clients arrive at once.
 *
 * The postmaster restarts a worker that exited (SIGTERM, a failed event
 * loop) without reinitializing shared memory: rt_conn_reset_all() at the
 * worker's start frees every slot whatever the last one left, and a
 * callback at its exit does the same, so that the view does not list the
 * clients of a worker that is gone while it waits to be restarted.
 *
 * Without shared_preload_libraries there are no slots and no worker, and
 * rt_connections() returns no rows.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "rtevents.h"

/* An IPv6 address with a zone, as text, is at most 46 bytes. */
#define RT_CONN_PEER_LEN		64

#define RT_CONN_COLUMNS			7

typedef struct RtConnSlot
{
	/* Odd while the worker writes the slot; see the header comment. */
	volatile uint32 changecount;
	bool		in_use;
	RtConnTransport transport;
	uint64		id;
	int32		subscriptions;
	int64		queued_bytes;
	TimestampTz connected_at;
	TimestampTz last_activity;
	char		peer[RT_CONN_PEER_LEN];
} RtConnSlot;

typedef struct RtConnShared
{
	int			nslots;
	/*
	 * The last id handed out.  Kept here rather than in the worker, so that
	 * ids stay unique across worker restarts; only the worker reads or
	 * writes it.
	 */
	uint64		last_id;
	RtConnSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} RtConnShared;

static RtConnShared *conns = NULL;

/* The server worker's own: the free slots, as a stack, and the count in use. */
static int *free_stack = NULL;
static int	nfree = 0;
static int	nin_use = 0;
static int	peak_in_use = 0;	/* since rt_conn_peak_reset() */
static bool exit_callback_registered = false;

static const char *const transport_names[] = {
	[RT_CONN_SSE] = "sse",
	[RT_CONN_WEBSOCKET] = "websocket",
	[RT_CONN_HISTORY] = "history",
};

static Size
conn_shmem_size(void)
{
	return add_size(offsetof(RtConnShared, slots),
					mul_size(rt_max_connections, sizeof(RtConnSlot)));
}

void
rt_conn_request_shmem(void)
{
	RequestAddinShmemSpace(conn_shmem_size());
}

void
rt_conn_init_shmem(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	conns = ShmemInitStruct("rtevents connections", conn_shmem_size(), &found);
	if (!found)
	{
		/* zero: every count even, every slot free */
		memset(conns, 0, conn_shmem_size());
		conns->nslots = rt_max_connections;
	}
	LWLockRelease(AddinShmemInitLock);
}

/* ---- the writer: the server worker ---- */

/*
 * PGSTAT_BEGIN/END_WRITE_ACTIVITY, without their critical section: nothing
 * between the two can throw, and the counter stays odd only while the worker
 * is in the middle of a few stores.
 */
static inline void
begin_write(RtConnSlot *slot)
{
	slot->changecount++;
	pg_write_barrier();
}

static inline void
end_write(RtConnSlot *slot)
{
	pg_write_barrier();
	slot->changecount++;
	Assert((slot->changecount & 1) == 0);
}

/* The slot, if index names one of the worker's clients; else NULL. */
static RtConnSlot *
slot_in_use(int index)
{
	RtConnSlot *slot;

	if (conns == NULL || index < 0 || index >= conns->nslots)
		return NULL;
	slot = &conns->slots[index];
	/* a stale index (released already) must not touch a reused slot */
	Assert(slot->in_use);
	return slot->in_use ? slot : NULL;
}

/* Mark every slot free; for the worker at its start and at its exit. */
static void
free_all_slots(void)
{
	for (int i = 0; i < conns->nslots; i++)
	{
		RtConnSlot *slot = &conns->slots[i];

		/*
		 * An odd count would make readers retry forever.  Only a worker
		 * killed between two stores could leave one, and that restarts the
		 * whole server; but evening it costs nothing, and nobody else
		 * writes.
		 */
		if (slot->changecount & 1)
			slot->changecount++;
		if (!slot->in_use)
			continue;
		begin_write(slot);
		slot->in_use = false;
		end_write(slot);
	}
}

static void
conn_exit(int code, Datum arg)
{
	if (conns != NULL)
		free_all_slots();
}

/*
 * At the worker's start, before it accepts any client: every slot free,
 * whatever a previous worker left, and the free list in this process.
 */
void
rt_conn_reset_all(void)
{
	if (conns == NULL)
		return;
	free_all_slots();
	if (free_stack == NULL)
		free_stack = MemoryContextAlloc(TopMemoryContext,
										sizeof(int) * conns->nslots);
	/* lowest index on top: a quiet server keeps to the start of the array */
	nfree = 0;
	for (int i = conns->nslots - 1; i >= 0; i--)
		free_stack[nfree++] = i;
	nin_use = 0;
	peak_in_use = 0;
	if (!exit_callback_registered)
	{
		on_shmem_exit(conn_exit, (Datum) 0);
		exit_callback_registered = true;
	}
}

/*
 * A slot for a new client, with a fresh id; -1 when every slot is taken,
 * and the caller refuses the client.  peer is its address as text (NULL or
 * empty: unknown), cut to RT_CONN_PEER_LEN - 1 bytes.
 */
int
rt_conn_acquire(RtConnTransport transport, const char *peer)
{
	RtConnSlot *slot;
	TimestampTz now;
	int			index;

	if (conns == NULL || nfree == 0)
		return -1;
	index = free_stack[--nfree];
	slot = &conns->slots[index];
	now = GetCurrentTimestamp();

	begin_write(slot);
	slot->in_use = true;
	slot->transport = transport;
	slot->id = ++conns->last_id;
	slot->subscriptions = 0;
	slot->queued_bytes = 0;
	slot->connected_at = now;
	slot->last_activity = now;
	strlcpy(slot->peer, peer != NULL ? peer : "", sizeof(slot->peer));
	end_write(slot);

	nin_use++;
	peak_in_use = Max(peak_in_use, nin_use);
	return index;
}

/* The id rt_conn_acquire() gave the slot's client; 0 for no slot. */
uint64
rt_conn_id(int index)
{
	RtConnSlot *slot = slot_in_use(index);

	return slot != NULL ? slot->id : 0;
}

/*
 * What the client has: subscriptions, and bytes queued for it and not yet
 * written.  Also its last activity, now: call it when the client was written
 * to or heard from.
 */
void
rt_conn_set(int index, int subscriptions, int64 queued_bytes)
{
	RtConnSlot *slot = slot_in_use(index);
	TimestampTz now;

	if (slot == NULL)
		return;
	now = GetCurrentTimestamp();
	begin_write(slot);
	slot->subscriptions = subscriptions;
	slot->queued_bytes = queued_bytes;
	slot->last_activity = now;
	end_write(slot);
}

/*
 * The bytes queued alone, leaving last_activity: for when events are queued
 * for a client that has not been written to, so that a stalled client shows
 * a growing queue and an old last_activity, which is how it is spotted.
 */
void
rt_conn_set_queued(int index, int64 queued_bytes)
{
	RtConnSlot *slot = slot_in_use(index);

	if (slot == NULL)
		return;
	begin_write(slot);
	slot->queued_bytes = queued_bytes;
	end_write(slot);
}

/* The client was written to or heard from: last_activity only. */
void
rt_conn_touch(int index)
{
	RtConnSlot *slot = slot_in_use(index);
	TimestampTz now;

	if (slot == NULL)
		return;
	now = GetCurrentTimestamp();
	begin_write(slot);
	slot->last_activity = now;
	end_write(slot);
}

/* The client is gone.  Its index must not be used again. */
void
rt_conn_release(int index)
{
	RtConnSlot *slot = slot_in_use(index);

	/* a second release would put the slot twice on the free stack */
	if (slot == NULL)
		return;
	begin_write(slot);
	slot->in_use = false;
	end_write(slot);

	/* no room is impossible: it was taken from this stack */
	if (free_stack != NULL && nfree < conns->nslots)
		free_stack[nfree++] = index;
	nin_use--;
}

/* Clients holding a slot: for /metrics, in the worker. */
int
rt_conn_in_use(void)
{
	return nin_use;
}

/* The most clients held at once since the last rt_conn_peak_reset(). */
int
rt_conn_peak(void)
{
	return peak_in_use;
}

void
rt_conn_peak_reset(void)
{
	peak_in_use = nin_use;
}

/* ---- the readers: any backend ---- */

/*
 * A consistent copy of the slot (pgstat_read_current_status's loop); true
 * when it holds a client.
 */
static bool
read_slot(RtConnSlot *slot, RtConnSlot *copy)
{
	for (;;)
	{
		uint32		before;
		uint32		after;

		before = slot->changecount;
		pg_read_barrier();
		memcpy(copy, slot, sizeof(RtConnSlot));
		pg_read_barrier();
		after = slot->changecount;
		if (before == after && (before & 1) == 0)
			break;
		/* the worker is writing it: a few stores away; but stay cancelable */
		CHECK_FOR_INTERRUPTS();
	}
	/* the copy is whole, but a NUL costs nothing against a bug */
	copy->peer[RT_CONN_PEER_LEN - 1] = '\0';
	return copy->in_use;
}

PG_FUNCTION_INFO_V1(rt_connections);

/*
 * rt_connections() returns SETOF record: (id bigint, transport text, peer
 * text, subscriptions integer, queued_bytes bigint, connected_at
 * timestamptz, last_activity timestamptz), one row per client of the server
 * worker; peer is NULL when unknown.  No rows without preloading.
 */
Datum
rt_connections(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	if (conns == NULL)
		return (Datum) 0;

	for (int i = 0; i < conns->nslots; i++)
	{
		RtConnSlot	copy;
		Datum		values[RT_CONN_COLUMNS];
		bool		nulls[RT_CONN_COLUMNS];

		CHECK_FOR_INTERRUPTS();
		if (!read_slot(&conns->slots[i], &copy))
			continue;

		memset(nulls, 0, sizeof(nulls));
		values[0] = Int64GetDatum((int64) copy.id);
		if ((int) copy.transport >= 0 &&
			(int) copy.transport < (int) lengthof(transport_names))
			values[1] = CStringGetTextDatum(transport_names[copy.transport]);
		else
			nulls[1] = true;
		if (copy.peer[0] != '\0')
			values[2] = CStringGetTextDatum(copy.peer);
		else
			nulls[2] = true;
		values[3] = Int32GetDatum(copy.subscriptions);
		values[4] = Int64GetDatum(copy.queued_bytes);
		values[5] = TimestampTzGetDatum(copy.connected_at);
		values[6] = TimestampTzGetDatum(copy.last_activity);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

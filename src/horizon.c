/*-------------------------------------------------------------------------
 *
 * horizon.c
 *		Which event ids may still commit: one slot per backend in shared
 *		memory holding the lowest id its open transaction has taken.
 *
 * Ids come from an identity sequence before commit, so concurrent publishers
 * commit them out of order, and an id may never commit at all (rollback, ON
 * CONFLICT, a failed row).  A reader that has seen ids 10 and 12 must know
 * whether 11 may still appear.  The answer is the horizon: the lowest id held
 * by any open publishing transaction.  Every id below the horizon is decided:
 * committed (and visible to any snapshot taken after the horizon was read)
 * or never to commit.
 *
 * The slot must be claimed before the id is drawn, or a reader could look in
 * the gap between nextval() and the claim and miss the transaction.  So the
 * insert path works in two steps:
 *
 *	- a BEFORE INSERT statement trigger, which runs before any row's defaults
 *	  are evaluated, marks the slot PENDING: "this backend may be drawing ids
 *	  right now";
 *	- a BEFORE INSERT row trigger, which sees the id, replaces PENDING with the
 *	  lowest id the transaction has drawn.
 *
 * PENDING makes the horizon 0, which is always safe and lasts only while the
 * first row of a statement is built.  Ids drawn later are higher than ids
 * drawn earlier, so once the slot holds a real id nothing more needs
 * claiming.  The slot is freed at top-level commit or abort, after the
 * transaction has become visible (XACT_EVENT_COMMIT runs after
 * ProcArrayEndTransaction), so a reader that sees the slot free and then
 * takes a snapshot sees the transaction's rows.
 *
 * Statements can nest (an INSERT whose SELECT calls a function that
 * publishes), and a subtransaction can abort in the middle of one, so the
 * nesting depth is saved at each subtransaction start and restored when it
 * aborts.  Only the outermost statement's rows publish a real id: an inner
 * statement cannot know whether the outer one has already drawn a lower id.
 *
 * PREPARE TRANSACTION is refused for publishing transactions: the slot
 * belongs to the backend, and the backend moves on after PREPARE.
 *
 * Without shared_preload_libraries there are no slots; publishing still
 * works, and there is no worker that would read them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "port/atomics.h"
#include "storage/backendid.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/memutils.h"

#include "rtevents.h"

/* Slot values.  FREE sorts above every id, PENDING below every id. */
#define SLOT_FREE		((uint64) PG_INT64_MAX)
#define SLOT_PENDING	((uint64) 0)

typedef struct RtHorizonShared
{
	int			nslots;
	pg_atomic_uint64 slots[FLEXIBLE_ARRAY_MEMBER];
} RtHorizonShared;

static RtHorizonShared *horizon = NULL;

/* This backend's view of its own slot and of the statements under way. */
static uint64 my_slot_value = SLOT_FREE;
static int64 my_lowest_id = PG_INT64_MAX;	/* lowest id drawn, any depth */
static int	statement_depth = 0;
static List *saved_depths = NIL;	/* depth at each open subtransaction */

static Size
horizon_shmem_size(void)
{
	return add_size(offsetof(RtHorizonShared, slots),
					mul_size(MaxBackends, sizeof(pg_atomic_uint64)));
}

void
rt_horizon_request_shmem(void)
{
	RequestAddinShmemSpace(horizon_shmem_size());
}

void
rt_horizon_init_shmem(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	horizon = ShmemInitStruct("rtevents horizon", horizon_shmem_size(), &found);
	if (!found)
	{
		horizon->nslots = MaxBackends;
		for (int i = 0; i < horizon->nslots; i++)
			pg_atomic_init_u64(&horizon->slots[i], SLOT_FREE);
	}
	LWLockRelease(AddinShmemInitLock);
}

static pg_atomic_uint64 *
my_slot(void)
{
	if (horizon == NULL || MyBackendId == InvalidBackendId ||
		MyBackendId > horizon->nslots)
		return NULL;
	return &horizon->slots[MyBackendId - 1];
}

static void
set_my_slot(uint64 value)
{
	pg_atomic_uint64 *slot = my_slot();

	if (value == my_slot_value)
		return;
	my_slot_value = value;
	if (slot == NULL)
		return;
	pg_atomic_write_u64(slot, value);
	/* Readers must see the claim before this backend draws an id. */
	pg_memory_barrier();
}

/* What the slot should say once no statement of ours is half-way. */
static uint64
settled_value(void)
{
	return my_lowest_id == PG_INT64_MAX ? SLOT_FREE : (uint64) my_lowest_id;
}

void
rt_horizon_statement_begin(void)
{
	statement_depth++;
	if (my_slot_value == SLOT_FREE)
		set_my_slot(SLOT_PENDING);
}

void
rt_horizon_row(int64 id)
{
	if (id < my_lowest_id)
		my_lowest_id = id;
	if (statement_depth == 1 && my_slot_value == SLOT_PENDING)
		set_my_slot(settled_value());
}

/* Returns the depth left: 0 when the outermost statement has ended. */
int
rt_horizon_statement_end(void)
{
	if (statement_depth > 0)
		statement_depth--;
	if (statement_depth == 0 && my_slot_value == SLOT_PENDING)
		set_my_slot(settled_value());
	return statement_depth;
}

int
rt_horizon_statement_depth(void)
{
	return statement_depth;
}

static void
horizon_reset(void)
{
	set_my_slot(SLOT_FREE);
	my_lowest_id = PG_INT64_MAX;
	statement_depth = 0;
	saved_depths = NIL;			/* lived in TopTransactionContext */
}

static void
horizon_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			if (my_slot_value != SLOT_FREE)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that has published rtevents events")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			horizon_reset();
			break;
		default:
			break;
	}
}

static void
horizon_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						 SubTransactionId parentSubid, void *arg)
{
	MemoryContext oldcxt;

	switch (event)
	{
		case SUBXACT_EVENT_START_SUB:
			oldcxt = MemoryContextSwitchTo(TopTransactionContext);
			saved_depths = lcons_int(statement_depth, saved_depths);
			MemoryContextSwitchTo(oldcxt);
			break;
		case SUBXACT_EVENT_COMMIT_SUB:
			if (saved_depths != NIL)
				saved_depths = list_delete_first(saved_depths);
			break;
		case SUBXACT_EVENT_ABORT_SUB:
			/* Statements begun inside the subtransaction will never end. */
			if (saved_depths != NIL)
			{
				statement_depth = linitial_int(saved_depths);
				saved_depths = list_delete_first(saved_depths);
			}
			if (statement_depth == 0 && my_slot_value == SLOT_PENDING)
				set_my_slot(settled_value());
			break;
		default:
			break;
	}
}

void
rt_horizon_register_callbacks(void)
{
	RegisterXactCallback(horizon_xact_callback, NULL);
	RegisterSubXactCallback(horizon_subxact_callback, NULL);
}

/*
 * The lowest id any open publishing transaction may still commit, or
 * PG_INT64_MAX with *any_open false when none is open.  0 means some backend
 * is drawing its first id right now.
 */
int64
rt_horizon_lowest_open_id(bool *any_open)
{
	uint64		lowest = SLOT_FREE;

	Assert(horizon != NULL);
	pg_memory_barrier();
	for (int i = 0; i < horizon->nslots; i++)
	{
		uint64		value = pg_atomic_read_u64(&horizon->slots[i]);

		if (value < lowest)
			lowest = value;
	}
	pg_memory_barrier();
	*any_open = (lowest != SLOT_FREE);
	return (int64) lowest;
}

PG_FUNCTION_INFO_V1(rt_horizon);

/*
 * rt_horizon() returns bigint: the lowest id that may still commit, or NULL
 * when no publishing transaction is open.  A worker on a standby asks the
 * primary this over its LISTEN connection.
 */
Datum
rt_horizon(PG_FUNCTION_ARGS)
{
	bool		any_open;
	int64		lowest;

	if (horizon == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("rtevents is not loaded through shared_preload_libraries"),
				 errhint("Add rtevents to shared_preload_libraries and restart the server.")));

	lowest = rt_horizon_lowest_open_id(&any_open);
	if (!any_open)
		PG_RETURN_NULL();
	PG_RETURN_INT64(lowest);
}

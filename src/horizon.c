/*-------------------------------------------------------------------------
 *
 * horizon.c
 *		Which event ids may still commit: one slot per backend in shared
 *		memory holding the lowest id its open transaction has taken.
 *
 * Ids come from an identity sequence before commit, so concurrent publishers
 * commit them out of order, and an id may never commit at all (rollback, ON
 * CONFLICT, a failed row).  A reader that has seen ids 10 and 12 must know
 * whether 11 may still appear.  The answer is the horizon: the lowest id
 * that an open publishing transaction may hold.  Every id below the horizon
 * is decided: committed (and visible to any snapshot taken after the horizon
 * was read) or never to commit.
 *
 * A transaction claims its slot before it draws its first id, or a reader
 * could look in the gap between nextval() and the claim and miss it.  So a
 * BEFORE INSERT statement trigger, which runs before any row's defaults are
 * evaluated, stores a lower bound of every id the transaction will draw: the
 * sequence's last value plus one.  That needs the sequence's CACHE to be 1
 * (the identity default), since a backend's cached values could be lower
 * than the last value another backend has drawn; a larger cache is refused.
 *
 * An id may also be given explicitly, by INSERT or COPY (a restore, a
 * migration).  Below the claim it is refused: the worker may already have
 * decided it as never to commit.  Above the sequence's last value it is
 * taken, and the sequence is moved up to it before the statement ends, or
 * ids drawn after the commit would come out below an id already delivered,
 * and the worker would skip them.
 *
 * The bound is never raised to the transaction's first real id.  That would
 * release, a little sooner, ids drawn by others in the instant between the
 * claim and the draw; but statements nest (an INSERT whose SELECT calls
 * rt_publish), and an inner statement cannot know whether the outer one has
 * already drawn a lower id.  Simple and safe wins.
 *
 * The slot is freed at top-level commit or abort, after the transaction has
 * become visible (XACT_EVENT_COMMIT runs after ProcArrayEndTransaction), so
 * a reader that sees the slot free and then takes a snapshot sees the
 * transaction's rows.  PREPARE TRANSACTION is refused for publishing
 * transactions: the slot belongs to the backend, which moves on after
 * PREPARE.
 *
 * Without shared_preload_libraries there are no slots; publishing still
 * works, and there is no worker that would read them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_sequence.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/backendid.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "rtevents.h"

/* A free slot sorts above every id. */
#define SLOT_FREE		((uint64) PG_INT64_MAX)

typedef struct RtHorizonShared
{
	int			nslots;
	pg_atomic_uint64 slots[FLEXIBLE_ARRAY_MEMBER];
} RtHorizonShared;

static RtHorizonShared *horizon = NULL;

/* Whether this backend's open transaction has claimed its slot. */
static bool my_slot_claimed = false;

/* The identity sequence of the events table, looked up once per table. */
static Oid	cached_relid = InvalidOid;
static Oid	cached_seqid = InvalidOid;

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

static Oid
identity_sequence(Relation rel)
{
	AttrNumber	attno;
	HeapTuple	seqtuple;
	int64		cache;

	if (RelationGetRelid(rel) == cached_relid)
		return cached_seqid;

	attno = get_attnum(RelationGetRelid(rel), "id");
	if (attno == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("table \"%s\" has no \"id\" column",
						RelationGetRelationName(rel))));
	cached_seqid = getIdentitySequence(RelationGetRelid(rel), attno, false);

	seqtuple = SearchSysCache1(SEQRELID, ObjectIdGetDatum(cached_seqid));
	if (!HeapTupleIsValid(seqtuple))
		elog(ERROR, "cache lookup failed for sequence %u", cached_seqid);
	cache = ((Form_pg_sequence) GETSTRUCT(seqtuple))->seqcache;
	ReleaseSysCache(seqtuple);
	if (cache != 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the id sequence of \"%s\" must have CACHE 1, not " INT64_FORMAT,
						RelationGetRelationName(rel), cache),
				 errdetail("Cached ids are drawn out of order, and rtevents could not tell which ids may still commit."),
				 errhint("ALTER TABLE %s ALTER COLUMN id SET CACHE 1",
						 RelationGetRelationName(rel))));

	cached_relid = RelationGetRelid(rel);
	return cached_seqid;
}

/*
 * The lowest id this backend can draw from now on: the sequence's last value
 * plus one.  Publishers need no privilege on the sequence to insert, so it
 * is read as the bootstrap superuser.
 */
static uint64
next_id_lower_bound(Oid seqid)
{
	Oid			save_userid;
	int			save_sec_context;
	Datum		last;
	bool		isnull;
	LOCAL_FCINFO(fcinfo, 1);

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = ObjectIdGetDatum(seqid);
	fcinfo->args[0].isnull = false;
	last = pg_sequence_last_value(fcinfo);
	isnull = fcinfo->isnull;
	SetUserIdAndSecContext(save_userid, save_sec_context);

	/* A sequence never drawn from: its start value is the bound; 0 is safe. */
	if (isnull || DatumGetInt64(last) < 0)
		return 0;
	return (uint64) DatumGetInt64(last) + 1;
}

/*
 * Claim this backend's slot for the open transaction, before it draws its
 * first id from rel's identity sequence.  Called by the BEFORE INSERT
 * statement trigger.
 */
void
rt_horizon_claim(Relation rel)
{
	pg_atomic_uint64 *slot = my_slot();

	if (slot == NULL || my_slot_claimed)
		return;
	pg_atomic_write_u64(slot, next_id_lower_bound(identity_sequence(rel)));
	my_slot_claimed = true;
	/* Readers must see the claim before this backend draws an id. */
	pg_memory_barrier();
}

/*
 * A row that came by INSERT or COPY, its id drawn or given: refuse an id the
 * worker may have moved past (see the top of the file).
 */
void
rt_horizon_check_id(int64 id)
{
	pg_atomic_uint64 *slot = my_slot();
	uint64		bound;

	if (slot == NULL || !my_slot_claimed)
		return;
	bound = pg_atomic_read_u64(slot);
	if (id < 0 || (uint64) id < bound)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event id " INT64_FORMAT " is below the ids that may still be published (from " UINT64_FORMAT ")",
						id, bound),
				 errdetail("Live clients may already have moved past it and would never receive it."),
				 errhint("Leave id to its default, or give ids higher than any drawn so far.")));
}

/*
 * After a statement that inserted ids up to highest: if some were given
 * above the sequence, move the sequence up, so that ids drawn from now on
 * come after them (as the bootstrap superuser: publishers need no privilege
 * on the sequence).
 */
void
rt_horizon_follow_ids(Relation rel, int64 highest)
{
	Oid			seqid = identity_sequence(rel);
	Oid			save_userid;
	int			save_sec_context;

	if ((uint64) highest < next_id_lower_bound(seqid))
		return;
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	DirectFunctionCall2(setval_oid, ObjectIdGetDatum(seqid),
						Int64GetDatum(highest));
	SetUserIdAndSecContext(save_userid, save_sec_context);
}

static void
horizon_release(void)
{
	pg_atomic_uint64 *slot = my_slot();

	if (!my_slot_claimed)
		return;
	my_slot_claimed = false;
	if (slot != NULL)
		pg_atomic_write_u64(slot, SLOT_FREE);
	pg_memory_barrier();
}

static void
horizon_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			if (my_slot_claimed)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that has published rtevents events")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			horizon_release();
			break;
		default:
			break;
	}
}

void
rt_horizon_register_callbacks(void)
{
	RegisterXactCallback(horizon_xact_callback, NULL);
}

/*
 * The lowest id any open publishing transaction may still commit, or
 * PG_INT64_MAX with *any_open false when none is open.
 */
int64
rt_horizon_lowest_open_id(bool *any_open)
{
	uint64		lowest = SLOT_FREE;

	if (horizon == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("rtevents is not loaded through shared_preload_libraries"),
				 errhint("Add rtevents to shared_preload_libraries and restart the server.")));

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
 * when no publishing transaction is open.
 */
Datum
rt_horizon(PG_FUNCTION_ARGS)
{
	bool		any_open;
	int64		lowest = rt_horizon_lowest_open_id(&any_open);

	if (!any_open)
		PG_RETURN_NULL();
	PG_RETURN_INT64(lowest);
}

/*-------------------------------------------------------------------------
 *
 * feed_read.c
 *		rt_read_events(): how the server worker's feed reads the table.
 *
 * The sequencer (sequencer.c) needs the horizon read before the snapshot
 * that reads the rows, so that every transaction that had released its
 * slot is visible to the read.  Inside one statement the statement's own
 * snapshot comes first, so this function reads the horizon from shared
 * memory and only then runs its query, which in READ COMMITTED takes a
 * snapshot of its own.  It runs where the slots are: on the server the feed
 * is connected to, be it this one or, for a worker on a standby, the
 * primary.
 *
 * The result is one header row, id NULL and horizon set (NULL when no
 * publishing transaction is open), then the events in (after, upto] in id
 * order, at most lim of them, each with its JSON as clients receive it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/tuplestore.h"

#include "rtevents.h"

#define READ_EVENT_COLS	8

static SPIPlanPtr read_plan = NULL;

static SPIPlanPtr
get_read_plan(Oid fn_oid)
{
	const char *schema;
	char	   *sql;
	Oid			argtypes[3] = {INT8OID, INT8OID, INT4OID};
	SPIPlanPtr	plan;

	if (read_plan != NULL)
		return read_plan;

	schema = quote_identifier(get_namespace_name(get_func_namespace(fn_oid)));
	sql = psprintf("SELECT e.id, e.type, e.execution_id, e.batch_id, e.job_id,"
				   " e.organization_id::text, %s.rt_event_json(e)"
				   " FROM %s.execution_events e"
				   " WHERE e.id > $1 AND e.id <= $2 ORDER BY e.id LIMIT $3",
				   schema, schema);
	plan = SPI_prepare(sql, lengthof(argtypes), argtypes);
	if (plan == NULL)
		elog(ERROR, "rt_read_events: SPI_prepare failed: %s",
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	read_plan = plan;
	return plan;
}

PG_FUNCTION_INFO_V1(rt_read_events);

/*
 * rt_read_events(after bigint, upto bigint, lim integer)
 *	 RETURNS TABLE (id, type, execution_id, batch_id, job_id,
 *					organization_id, event, horizon)
 */
Datum
rt_read_events(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		after = PG_GETARG_INT64(0);
	int64		upto = PG_GETARG_INT64(1);
	int32		lim = PG_GETARG_INT32(2);
	Datum		values[READ_EVENT_COLS];
	bool		nulls[READ_EVENT_COLS];
	Datum		args[3];
	bool		any_open;
	int64		horizon;
	int			ret;

	if (XactIsoLevel != XACT_READ_COMMITTED)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("rt_read_events needs READ COMMITTED, to read rows with a snapshot newer than the horizon")));
	if (lim < 1 || lim > 100000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("rt_read_events: lim must be between 1 and 100000")));

	/* First the horizon ... */
	horizon = rt_horizon_lowest_open_id(&any_open);

	InitMaterializedSRF(fcinfo, 0);

	memset(nulls, true, sizeof(nulls));
	nulls[READ_EVENT_COLS - 1] = !any_open;
	values[READ_EVENT_COLS - 1] = Int64GetDatum(horizon);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);

	/* ... then the rows, with a snapshot taken now (read_only = false). */
	args[0] = Int64GetDatum(after);
	args[1] = Int64GetDatum(upto);
	args[2] = Int32GetDatum(lim);
	SPI_connect();
	ret = SPI_execute_plan(get_read_plan(fcinfo->flinfo->fn_oid), args, NULL,
						   false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "rt_read_events: query failed: %s",
			 SPI_result_code_string(ret));

	for (uint64 row = 0; row < SPI_processed; row++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[row];

		for (int col = 0; col < READ_EVENT_COLS - 1; col++)
			values[col] = SPI_getbinval(tuple, SPI_tuptable->tupdesc, col + 1,
										&nulls[col]);
		nulls[READ_EVENT_COLS - 1] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();

	return (Datum) 0;
}

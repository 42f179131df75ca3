/*-------------------------------------------------------------------------
 *
 * publish.c
 *		rt_publish() and the triggers that announce inserted events.
 *
 * Every event reaches listeners through NOTIFY on rtevents.channel, sent in
 * the inserting transaction, so that nothing is announced for a rollback and
 * everything is announced, in commit order, for a commit.  There are two
 * ways in:
 *
 *	- rt_publish() inserts one row and NOTIFYs the event's JSON itself, so a
 *	  listener needs no query to deliver it.  An event whose JSON would not
 *	  fit in a NOTIFY payload is announced by reference instead.
 *	- A plain INSERT or COPY is announced by a statement-level trigger with
 *	  one reference per statement, {"ref":{"from":F,"to":T,"count":N}}: the
 *	  listener reads ids F..T from the table.  Per-row payloads would cost a
 *	  NOTIFY per row and could announce rows that ON CONFLICT then skipped.
 *
 * The statement trigger also claims this backend's horizon slot
 * (horizon.c) for both paths, since rt_publish() inserts through it too.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "rtevents.h"

/* Ids inserted by plain INSERT/COPY and not yet announced. */
static int64 announce_from = PG_INT64_MAX;
static int64 announce_to = 0;
static int64 announce_count = 0;

/* Set while rt_publish() inserts: its row announces itself. */
static bool publishing = false;

static SPIPlanPtr publish_plan = NULL;

static void
reset_announcement(void)
{
	announce_from = PG_INT64_MAX;
	announce_to = 0;
	announce_count = 0;
}

static void
publish_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		reset_announcement();
		publishing = false;
	}
}

void
rt_publish_register_callbacks(void)
{
	RegisterXactCallback(publish_xact_callback, NULL);
}

static void
notify_reference(int64 from, int64 to, int64 count)
{
	char		payload[128];

	snprintf(payload, sizeof(payload),
			 "{\"ref\":{\"from\":" INT64_FORMAT ",\"to\":" INT64_FORMAT
			 ",\"count\":" INT64_FORMAT "}}",
			 from, to, count);
	Async_Notify(rt_channel, payload);
}

/* ---- triggers on execution_events ---- */

PG_FUNCTION_INFO_V1(rt_insert_statement_begin);
PG_FUNCTION_INFO_V1(rt_insert_row);
PG_FUNCTION_INFO_V1(rt_insert_statement_end);

static TriggerData *
check_trigger_call(FunctionCallInfo fcinfo, const char *name,
				   bool for_row, bool before)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) ||
		(TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) != 0) != for_row ||
		(TRIGGER_FIRED_BEFORE(trigdata->tg_event) != 0) != before)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s must be fired %s INSERT FOR EACH %s",
						name, before ? "BEFORE" : "AFTER",
						for_row ? "ROW" : "STATEMENT")));
	return trigdata;
}

/*
 * BEFORE INSERT FOR EACH STATEMENT: claim the horizon slot before any row's
 * id is drawn.
 */
Datum
rt_insert_statement_begin(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = check_trigger_call(fcinfo, "rt_insert_statement_begin",
											   false, true);

	rt_horizon_claim(trigdata->tg_relation);
	PG_RETURN_POINTER(NULL);
}

/*
 * BEFORE INSERT FOR EACH ROW: refuse an id live clients may already have
 * moved past (horizon.c), and add the row's id to the next announcement.
 * The row goes on unchanged.
 */
Datum
rt_insert_row(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = check_trigger_call(fcinfo, "rt_insert_row", true, true);
	TupleDesc	tupdesc = RelationGetDescr(trigdata->tg_relation);
	int			attno;
	bool		isnull;
	int64		id;

	if (publishing)
		PG_RETURN_POINTER(trigdata->tg_trigtuple);

	attno = SPI_fnumber(tupdesc, "id");
	if (attno <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("rt_insert_row needs a table with an \"id\" column")));
	id = DatumGetInt64(heap_getattr(trigdata->tg_trigtuple, attno, tupdesc, &isnull));
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("event id must not be null")));

	rt_horizon_check_id(id);

	announce_from = Min(announce_from, id);
	announce_to = Max(announce_to, id);
	announce_count++;
	PG_RETURN_POINTER(trigdata->tg_trigtuple);
}

/*
 * AFTER INSERT FOR EACH STATEMENT: announce the rows inserted since the last
 * announcement with one reference, once the sequence has caught up with any
 * id given above it (horizon.c).  Postgres may fire this once for nested
 * statements on the table, so it announces whatever has gathered rather
 * than counting statements.
 */
Datum
rt_insert_statement_end(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = check_trigger_call(fcinfo, "rt_insert_statement_end",
											   false, false);

	if (announce_count > 0)
	{
		rt_horizon_follow_ids(trigdata->tg_relation, announce_to);
		notify_reference(announce_from, announce_to, announce_count);
		reset_announcement();
	}
	PG_RETURN_POINTER(NULL);
}

/* ---- rt_publish ---- */

static void
check_text_arg(FunctionCallInfo fcinfo, int argno, const char *name,
			   int maxlen, bool required)
{
	text	   *value;
	int			len;

	if (PG_ARGISNULL(argno))
	{
		if (required)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("rt_publish: %s must not be null", name)));
		return;
	}
	value = PG_GETARG_TEXT_PP(argno);
	len = VARSIZE_ANY_EXHDR(value);
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("rt_publish: %s must not be empty", name),
				 required ? 0 : errhint("Pass NULL for an event without a %s.", name)));
	if (len > maxlen)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("rt_publish: %s is %d bytes long, the limit is %d",
						name, len, maxlen)));
}

/*
 * expires_at for a ttl: NULL ttl takes rtevents.default_ttl, a zero ttl (or
 * a zero default) keeps the event forever, a negative ttl is refused.
 */
static Datum
expires_at_for(FunctionCallInfo fcinfo, int argno, bool *isnull)
{
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	Interval   *ttl;
	TimestampTz expires;

	*isnull = false;
	if (PG_ARGISNULL(argno))
	{
		if (rt_default_ttl == 0)
		{
			*isnull = true;
			return (Datum) 0;
		}
		return TimestampTzGetDatum(now + (TimestampTz) rt_default_ttl * USECS_PER_SEC);
	}

	ttl = PG_GETARG_INTERVAL_P(argno);
	if (ttl->month == 0 && ttl->day == 0 && ttl->time == 0)
	{
		*isnull = true;
		return (Datum) 0;
	}
	expires = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
													  TimestampTzGetDatum(now),
													  IntervalPGetDatum(ttl)));
	if (expires < now)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("rt_publish: ttl must not be negative"),
				 errhint("Use a ttl of 0 to keep the event forever, or NULL for rtevents.default_ttl.")));
	return TimestampTzGetDatum(expires);
}

/*
 * The insert, planned once per backend.  The table lives in the schema of
 * the extension, which is the schema of this very function.
 */
static SPIPlanPtr
get_publish_plan(Oid fn_oid)
{
	char	   *schema;
	char	   *sql;
	Oid			argtypes[8] = {TEXTOID, JSONBOID, TEXTOID, TEXTOID, TEXTOID,
	UUIDOID, TIMESTAMPTZOID, TIMESTAMPTZOID};
	SPIPlanPtr	plan;

	if (publish_plan != NULL)
		return publish_plan;

	schema = get_namespace_name(get_func_namespace(fn_oid));
	sql = psprintf("INSERT INTO %s.execution_events"
				   " (type, data, execution_id, batch_id, job_id, organization_id,"
				   "  expires_at, ts)"
				   " VALUES ($1, $2, $3, $4, $5, $6, $7, coalesce($8, clock_timestamp()))"
				   " RETURNING id, type, ts, data, execution_id, batch_id, job_id,"
				   "  organization_id",
				   quote_identifier(schema));
	plan = SPI_prepare(sql, lengthof(argtypes), argtypes);
	if (plan == NULL)
		elog(ERROR, "rt_publish: SPI_prepare failed: %s",
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	publish_plan = plan;
	return plan;
}

PG_FUNCTION_INFO_V1(rt_publish);

/*
 * rt_publish(type, data, execution_id, batch_id, job_id, organization_id,
 *			  ttl, ts) returns bigint
 */
Datum
rt_publish(PG_FUNCTION_ARGS)
{
	Datum		values[8];
	char		nulls[8];
	bool		expires_null;
	int64		id;
	int			ret;
	RtEvent		event;
	StringInfoData json;

	check_text_arg(fcinfo, 0, "type", RT_MAX_TYPE_LEN, true);
	check_text_arg(fcinfo, 2, "execution_id", RT_MAX_KEY_LEN, false);
	check_text_arg(fcinfo, 3, "batch_id", RT_MAX_KEY_LEN, false);
	check_text_arg(fcinfo, 4, "job_id", RT_MAX_KEY_LEN, false);
	if (!PG_ARGISNULL(1) && !JB_ROOT_IS_OBJECT(PG_GETARG_JSONB_P(1)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("rt_publish: data must be a JSON object"),
				 errhint("Wrap other values, as in jsonb_build_object('value', ...).")));

	for (int i = 0; i < 6; i++)
	{
		values[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
	}
	if (PG_ARGISNULL(1))
	{
		values[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
		nulls[1] = ' ';
	}
	values[6] = expires_at_for(fcinfo, 6, &expires_null);
	nulls[6] = expires_null ? 'n' : ' ';
	values[7] = PG_ARGISNULL(7) ? (Datum) 0 : PG_GETARG_DATUM(7);
	nulls[7] = PG_ARGISNULL(7) ? 'n' : ' ';

	SPI_connect();
	publishing = true;
	PG_TRY();
	{
		ret = SPI_execute_plan(get_publish_plan(fcinfo->flinfo->fn_oid),
							   values, nulls, false, 1);
	}
	PG_FINALLY();
	{
		publishing = false;
	}
	PG_END_TRY();
	if (ret != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
		elog(ERROR, "rt_publish: insert failed: %s", SPI_result_code_string(ret));

	rt_event_from_tuple(&event, SPI_tuptable->vals[0], SPI_tuptable->tupdesc);
	id = event.id;

	initStringInfo(&json);
	rt_event_append_json(&json, &event);
	if (json.len <= RT_NOTIFY_PAYLOAD_MAX)
		Async_Notify(rt_channel, json.data);
	else
		notify_reference(id, id, 1);

	SPI_finish();
	PG_RETURN_INT64(id);
}

PG_FUNCTION_INFO_V1(rt_default_expires_at);

/*
 * rt_default_expires_at() returns timestamptz: the column default of
 * expires_at, now() + rtevents.default_ttl, or NULL when that is 0.
 */
Datum
rt_default_expires_at(PG_FUNCTION_ARGS)
{
	if (rt_default_ttl == 0)
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(GetCurrentTransactionStartTimestamp() +
						  (TimestampTz) rt_default_ttl * USECS_PER_SEC);
}

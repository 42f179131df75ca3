/*-------------------------------------------------------------------------
 *
 * event_json.c
 *		The event as JSON, exactly as clients receive it.
 *
 * One encoder serves every path an event leaves by (NOTIFY payloads, the
 * history function, the worker's WebSocket and SSE frames), so that an event
 * looks the same whichever way it arrives:
 *
 *	{"id":123,"type":"job_progress","ts":"2026-11-22T10:00:00.123456+00:00",
 *	 "executionId":"e1","jobId":"j1","data":{"pct":45}}
 *
 * Null routing keys are left out.  ts is RFC 3339 in UTC whatever the
 * session's TimeZone, so that two clients never see one event two ways.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/typcache.h"
#include "utils/uuid.h"

#include "rtevents.h"

static void
append_key(StringInfo buf, const char *key, const char *value)
{
	if (value == NULL)
		return;
	appendStringInfo(buf, ",\"%s\":", key);
	escape_json(buf, value);
}

void
rt_event_append_json(StringInfo buf, const RtEvent *event)
{
	char		tsbuf[MAXDATELEN + 1];
	const int	utc = 0;

	appendStringInfo(buf, "{\"id\":" INT64_FORMAT ",\"type\":", event->id);
	escape_json(buf, event->type);
	appendStringInfo(buf, ",\"ts\":\"%s\"",
					 JsonEncodeDateTime(tsbuf, TimestampTzGetDatum(event->ts),
										TIMESTAMPTZOID, &utc));
	append_key(buf, "executionId", event->execution_id);
	append_key(buf, "batchId", event->batch_id);
	append_key(buf, "jobId", event->job_id);
	append_key(buf, "organizationId", event->organization_id);
	appendStringInfo(buf, ",\"data\":%s}", event->data ? event->data : "{}");
}

/* Column positions of execution_events, looked up by name once per call. */
typedef enum
{
	COL_ID,
	COL_TYPE,
	COL_TS,
	COL_DATA,
	COL_EXECUTION_ID,
	COL_BATCH_ID,
	COL_JOB_ID,
	COL_ORGANIZATION_ID,
	NUM_EVENT_COLS
} EventColumn;

static const char *const event_col_names[NUM_EVENT_COLS] = {
	"id", "type", "ts", "data", "execution_id", "batch_id", "job_id",
	"organization_id"
};

static const char *
text_or_null(Datum *values, bool *nulls, const int *attnos, EventColumn col)
{
	int			i = attnos[col];

	if (nulls[i])
		return NULL;
	return TextDatumGetCString(values[i]);
}

/*
 * Fill *event from a row of execution_events.  Strings are palloc'd in the
 * current memory context.
 */
void
rt_event_from_tuple(RtEvent *event, HeapTuple tuple, TupleDesc tupdesc)
{
	int			attnos[NUM_EVENT_COLS];
	Datum	   *values = palloc(tupdesc->natts * sizeof(Datum));
	bool	   *nulls = palloc(tupdesc->natts * sizeof(bool));

	for (int c = 0; c < NUM_EVENT_COLS; c++)
	{
		attnos[c] = -1;
		for (int i = 0; i < tupdesc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(tupdesc, i);

			if (!att->attisdropped &&
				strcmp(NameStr(att->attname), event_col_names[c]) == 0)
			{
				attnos[c] = i;
				break;
			}
		}
		if (attnos[c] < 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("row is not an execution_events row: column \"%s\" is missing",
							event_col_names[c])));
	}

	heap_deform_tuple(tuple, tupdesc, values, nulls);

	if (nulls[attnos[COL_ID]] || nulls[attnos[COL_TYPE]] || nulls[attnos[COL_TS]])
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("an event needs an id, a type and a ts")));

	event->id = DatumGetInt64(values[attnos[COL_ID]]);
	event->type = TextDatumGetCString(values[attnos[COL_TYPE]]);
	event->ts = DatumGetTimestampTz(values[attnos[COL_TS]]);
	event->execution_id = text_or_null(values, nulls, attnos, COL_EXECUTION_ID);
	event->batch_id = text_or_null(values, nulls, attnos, COL_BATCH_ID);
	event->job_id = text_or_null(values, nulls, attnos, COL_JOB_ID);
	event->organization_id = nulls[attnos[COL_ORGANIZATION_ID]] ? NULL :
		DatumGetCString(DirectFunctionCall1(uuid_out,
											values[attnos[COL_ORGANIZATION_ID]]));
	if (nulls[attnos[COL_DATA]])
		event->data = NULL;
	else
	{
		Jsonb	   *jb = DatumGetJsonbP(values[attnos[COL_DATA]]);

		event->data = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
	}

	pfree(values);
	pfree(nulls);
}

PG_FUNCTION_INFO_V1(rt_event_json);

/*
 * rt_event_json(execution_events) returns text: the row as clients see it.
 */
Datum
rt_event_json(PG_FUNCTION_ARGS)
{
	HeapTupleHeader rec = PG_GETARG_HEAPTUPLEHEADER(0);
	TupleDesc	tupdesc;
	HeapTupleData tuple;
	RtEvent		event;
	StringInfoData buf;

	tupdesc = lookup_rowtype_tupdesc(HeapTupleHeaderGetTypeId(rec),
									 HeapTupleHeaderGetTypMod(rec));
	tuple.t_len = HeapTupleHeaderGetDatumLength(rec);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = rec;

	rt_event_from_tuple(&event, &tuple, tupdesc);
	ReleaseTupleDesc(tupdesc);

	initStringInfo(&buf);
	rt_event_append_json(&buf, &event);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}

/*-------------------------------------------------------------------------
 *
 * fuzz_event_json.c
 *		libFuzzer harness for event_json.c's rt_event_append_json: the event
 *		as JSON, exactly as clients receive it.
 *
 * The encoder lives in the backend: it calls escape_json() and
 * JsonEncodeDateTime() of src/backend/utils/adt/json.c, which no library
 * offers outside the server.  This harness links event_json.c alone (the
 * other functions of the file, which need tuples and the catalog, are
 * dropped by --gc-sections) with two stand-ins:
 *
 *  - escape_json: a verbatim copy of PostgreSQL 15's (REL_15_STABLE,
 *    src/backend/utils/adt/json.c), since what matters here is exactly how
 *    the server escapes type, keys and values;
 *  - JsonEncodeDateTime: a minimal stand-in for timestamptz in UTC (the
 *    format of RFC 3339 that Postgres writes, infinity included); the ts
 *    field is checked only for being a JSON string.
 *
 * Input: a flags byte (bits 0-3: executionId, batchId, jobId,
 * organizationId are NULL; bit 4: data is NULL), 8 bytes of id, 8 bytes of
 * ts, then type, the four keys and data, separated by NUL bytes.  Strings
 * are cut to their longest valid UTF-8 prefix (the table's text is valid
 * in the server encoding), and data is used only when it is a JSON object
 * (it is jsonb's output in the worker), else NULL.
 *
 * Properties checked, on every input:
 *  - what was in the buffer before is left as it was;
 *  - the output is valid UTF-8 and one JSON object, parsed back with
 *    common/jsonapi, with exactly the members id, type, ts, then the
 *    routing keys that are not NULL, then data, in that order;
 *  - id reads back as the id; type and every key read back, de-escaped,
 *    byte for byte as given; ts is a string; data is an object, and the
 *    output ends with "data": and the data text as given (or {}).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "catalog/pg_type.h"
#include "utils/datetime.h"
#include "utils/json.h"

#include "rtevents.h"

#include "support.c"

/*
 * PostgreSQL 15's escape_json (src/backend/utils/adt/json.c), verbatim:
 * "Produce a JSON string literal, properly escaping characters in the text."
 */
void
escape_json(StringInfo buf, const char *str)
{
	const char *p;

	appendStringInfoCharMacro(buf, '"');
	for (p = str; *p; p++)
	{
		switch (*p)
		{
			case '\b':
				appendStringInfoString(buf, "\\b");
				break;
			case '\f':
				appendStringInfoString(buf, "\\f");
				break;
			case '\n':
				appendStringInfoString(buf, "\\n");
				break;
			case '\r':
				appendStringInfoString(buf, "\\r");
				break;
			case '\t':
				appendStringInfoString(buf, "\\t");
				break;
			case '"':
				appendStringInfoString(buf, "\\\"");
				break;
			case '\\':
				appendStringInfoString(buf, "\\\\");
				break;
			default:
				if ((unsigned char) *p < ' ')
					appendStringInfo(buf, "\\u%04x", (int) *p);
				else
					appendStringInfoCharMacro(buf, *p);
				break;
		}
	}
	appendStringInfoCharMacro(buf, '"');
}

/* days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's method) */
static void
civil_from_days(int64 z, int64 *y, int *m, int *d)
{
	int64		era,
				yoe,
				doy,
				mp;
	int64		doe;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = (int) (doy - (153 * mp + 2) / 5 + 1);
	*m = (int) (mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

/*
 * A stand-in for JsonEncodeDateTime(buf, ts, TIMESTAMPTZOID, &0): RFC 3339
 * in UTC, fraction without trailing zeros, "infinity" for the infinities,
 * " BC" after a year before 1 (as EncodeDateTime does).  The caller keeps ts
 * within Postgres' range.
 */
char *
JsonEncodeDateTime(char *buf, Datum value, Oid typid, const int *tzp)
{
	TimestampTz ts = DatumGetTimestampTz(value);
	int64		secs,
				usecs,
				days,
				sod,
				year;
	int			month,
				day;
	char		frac[8] = "";

	if (typid != TIMESTAMPTZOID || tzp == NULL || *tzp != 0)
		abort();				/* event_json.c asks for UTC timestamptz only */
	if (ts == DT_NOBEGIN || ts == DT_NOEND)
	{
		strcpy(buf, ts == DT_NOBEGIN ? "-infinity" : "infinity");
		return buf;
	}
	secs = ts / USECS_PER_SEC;
	usecs = ts % USECS_PER_SEC;
	if (usecs < 0)
	{
		usecs += USECS_PER_SEC;
		secs--;
	}
	secs += (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
	days = secs / SECS_PER_DAY;
	sod = secs % SECS_PER_DAY;
	if (sod < 0)
	{
		sod += SECS_PER_DAY;
		days--;
	}
	civil_from_days(days, &year, &month, &day);
	if (usecs != 0)
	{
		int			n;

		snprintf(frac, sizeof(frac), ".%06d", (int) usecs);
		n = (int) strlen(frac);
		while (frac[n - 1] == '0')
			frac[--n] = '\0';
	}
	snprintf(buf, MAXDATELEN + 1, "%04lld-%02d-%02dT%02d:%02d:%02d%s+00:00%s",
			 (long long) (year > 0 ? year : 1 - year), month, day,
			 (int) (sod / 3600), (int) (sod / 60 % 60), (int) (sod % 60), frac,
			 year > 0 ? "" : " BC");
	return buf;
}

static const char *const member_names[] = {
	"id", "type", "ts", "executionId", "batchId", "jobId", "organizationId",
	"data"
};

/* The longest valid UTF-8 prefix of s, NUL-terminated, in the arena. */
static char *
utf8_prefix(const char *s, size_t len)
{
	int			ok = pg_encoding_verifymbstr(PG_UTF8, s, (int) len);
	char	   *copy = palloc(ok + 1);

	memcpy(copy, s, ok);
	copy[ok] = '\0';
	return copy;
}

static int64
read64(const uint8_t *p)
{
	uint64		v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return (int64) v;
}

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char prefix[] = "[\"kept\",";
	uint8_t		flags;
	RtEvent		ev;
	char	   *parts[6] = {NULL};
	const char **keys[4] = {&ev.execution_id, &ev.batch_id, &ev.job_id,
	&ev.organization_id};
	StringInfoData buf;
	const char *out;
	size_t		out_len;
	JNode	   *tree;
	JNode	   *m;
	int			depth;
	int			nparts = 0;
	int			expect = 0;
	const char *want_names[8];
	char	   *tail;
	const char *data_text;

	if (size < 17)
		return 0;
	flags = data[0];
	memset(&ev, 0, sizeof(ev));
	ev.id = read64(data + 1);
	ev.ts = read64(data + 9);
	/* within Postgres' range, as the table's values are; infinities too */
	if (ev.ts != DT_NOBEGIN && ev.ts != DT_NOEND &&
		(ev.ts < MIN_TIMESTAMP || ev.ts >= END_TIMESTAMP))
		ev.ts = (int64) ((uint64) MIN_TIMESTAMP + (uint64) ev.ts %
						 ((uint64) END_TIMESTAMP - (uint64) MIN_TIMESTAMP));

	/* type, the keys, data: NUL-separated */
	{
		const char *p = (const char *) data + 17;
		const char *end = (const char *) data + size;

		while (nparts < 6 && p <= end)
		{
			const char *nul = memchr(p, '\0', end - p);
			size_t		len = nul ? (size_t) (nul - p) : (size_t) (end - p);

			parts[nparts++] = utf8_prefix(p, len);
			if (nul == NULL)
				break;
			p = nul + 1;
		}
	}
	ev.type = parts[0] ? parts[0] : "";
	for (int i = 0; i < 4; i++)
		*keys[i] = (flags & (1 << i)) ? NULL : parts[1 + i] ? parts[1 + i] : "k";
	ev.data = NULL;
	if (!(flags & 0x10) && parts[5] != NULL)
	{
		JNode	   *d = json_tree(parts[5], strlen(parts[5]), &depth);

		if (d != NULL && d->kind == J_OBJECT)
			ev.data = parts[5];
	}

	/* append to a buffer that already holds something */
	initStringInfo(&buf);
	appendStringInfoString(&buf, prefix);
	rt_event_append_json(&buf, &ev);
	CHECK(strncmp(buf.data, prefix, strlen(prefix)) == 0, "the buffer's start changed");
	CHECK((size_t) buf.len == strlen(buf.data), "a NUL inside the output");
	out = buf.data + strlen(prefix);
	out_len = buf.len - strlen(prefix);

	CHECK(valid_utf8(out, out_len), "output is not valid UTF-8: %s", out);
	tree = json_tree(out, out_len, &depth);
	CHECK(tree != NULL, "output is not JSON: %s", out);
	CHECK(tree->kind == J_OBJECT, "output is not an object: %s", out);

	/* the members, in order */
	want_names[expect++] = "id";
	want_names[expect++] = "type";
	want_names[expect++] = "ts";
	for (int i = 0; i < 4; i++)
		if (*keys[i] != NULL)
			want_names[expect++] = member_names[3 + i];
	want_names[expect++] = "data";
	CHECK(tree->count == expect, "%d members, not %d: %s", tree->count, expect, out);
	m = tree->first;
	for (int i = 0; i < expect; i++, m = m->next)
		CHECK(strcmp(m->name, want_names[i]) == 0, "member %d is %s, not %s: %s",
			  i, m->name, want_names[i], out);

	m = tree->first;
	{
		char		id[32];

		snprintf(id, sizeof(id), INT64_FORMAT, ev.id);
		CHECK(m->kind == J_NUMBER && strcmp(m->text, id) == 0,
			  "id reads back as %s, not %s", m->text, id);
	}
	m = m->next;
	CHECK(m->kind == J_STRING && strcmp(m->text, ev.type) == 0,
		  "type reads back as %s: %s", m->text, out);
	m = m->next;
	CHECK(m->kind == J_STRING, "ts is not a string: %s", out);
	for (int i = 0; i < 4; i++)
	{
		if (*keys[i] == NULL)
			continue;
		m = m->next;
		CHECK(m->kind == J_STRING && strcmp(m->text, *keys[i]) == 0,
			  "%s reads back as %s: %s", member_names[3 + i], m->text, out);
	}
	m = m->next;
	CHECK(m->kind == J_OBJECT, "data is not an object: %s", out);
	data_text = ev.data ? ev.data : "{}";
	tail = psprintf(",\"data\":%s}", data_text);
	CHECK(out_len >= strlen(tail) &&
		  strcmp(out + out_len - strlen(tail), tail) == 0,
		  "data is not passed through as given: %s", out);

	fuzz_reset();
	return 0;
}

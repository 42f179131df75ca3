/*-------------------------------------------------------------------------
 *
 * client_message.c
 *		What a WebSocket client may say, parsed: subscribe, unsubscribe, ping.
 *
 *	{"op":"subscribe","sub":"s1","filter":{"executionId":"e1","type":["a"]},"after":120}
 *	{"op":"unsubscribe","sub":"s1"}
 *	{"op":"ping"}
 *
 * The text goes through Postgres' own JSON parser (common/jsonapi.h), which
 * reports bad JSON as a return code rather than an error, with semantic
 * actions that pick out the fields above.  Fields nobody knows are ignored,
 * so that newer clients can talk to older servers; a known field of the
 * wrong type is refused.  The filter's values get the same checks as a
 * query string's (request.c).  Error messages are constants: nothing the
 * client sent is echoed back.
 *
 * The parser pallocs: the caller runs it in a memory context of its own and
 * resets that afterwards.  The filter it fills is malloc'd and the caller's
 * to free (rt_request_free), whatever the result.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <stdlib.h>

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"

#include "rtevents.h"

#define RT_CLIENT_MESSAGE_DEPTH	8

typedef enum Field
{
	F_UNKNOWN,
	F_OP,
	F_SUB,
	F_AFTER,
	F_FILTER,
	F_KEY0,						/* executionId, batchId, jobId, organizationId */
	F_KEY1,
	F_KEY2,
	F_KEY3,
	F_TYPE
} Field;

typedef struct ParseState
{
	RtClientMessage *m;
	int			depth;			/* objects and arrays open */
	Field		top;			/* the field at depth 1 whose value this is */
	Field		in_filter;		/* the same, inside "filter" */
	bool		filter_open;	/* depth 2 is the filter object */
	bool		types_open;		/* depth 3 is the filter's type array */
	bool		types_given;	/* an array for type, maybe empty */
	char		op[16];
	bool		has_op;
	const char *code;			/* the first error, if any */
	const char *message;
	bool		oom;
} ParseState;

static void
fail(ParseState *st, const char *code, const char *message)
{
	if (st->code == NULL)
	{
		st->code = code;
		st->message = message;
	}
}

static Field
top_field(const char *name)
{
	if (strcmp(name, "op") == 0)
		return F_OP;
	if (strcmp(name, "sub") == 0)
		return F_SUB;
	if (strcmp(name, "after") == 0)
		return F_AFTER;
	if (strcmp(name, "filter") == 0)
		return F_FILTER;
	return F_UNKNOWN;
}

static Field
filter_field(const char *name)
{
	static const char *const keys[4] = {
		"executionId", "batchId", "jobId", "organizationId"
	};

	for (int i = 0; i < 4; i++)
		if (strcmp(name, keys[i]) == 0)
			return F_KEY0 + i;
	if (strcmp(name, "type") == 0)
		return F_TYPE;
	return F_UNKNOWN;
}

/* A sub name goes into replies unescaped: letters, digits and _ - . : only. */
static bool
is_sub_name(const char *s)
{
	size_t		len = strlen(s);

	if (len == 0 || len > RT_SUB_NAME_MAX)
		return false;
	for (const char *p = s; *p; p++)
		if (!isalnum((unsigned char) *p) && strchr("_-.:", *p) == NULL)
			return false;
	return true;
}

/* The field whose value starts now, at the current depth, if it is known. */
static Field
current_field(const ParseState *st)
{
	if (st->depth == 1)
		return st->top;
	if (st->depth == 2 && st->filter_open)
		return st->in_filter;
	return F_UNKNOWN;
}

static void
object_start(void *state)
{
	ParseState *st = state;
	Field		f = current_field(st);

	if (st->depth == 3 && st->types_open)
		fail(st, "bad_filter", "type lists event types, as strings");
	else if (st->depth == 1 && f == F_FILTER)
		st->filter_open = true;
	else if (f != F_UNKNOWN)
		fail(st, f >= F_FILTER ? "bad_filter" : "bad_message",
			 "a field of the message has the wrong type");
	st->depth++;
}

static void
object_end(void *state)
{
	ParseState *st = state;

	st->depth--;
	if (st->depth == 1)
		st->filter_open = false;
}

static void
array_start(void *state)
{
	ParseState *st = state;
	Field		f = current_field(st);

	if (st->depth == 0 || (st->depth == 3 && st->types_open))
		fail(st, st->depth ? "bad_filter" : "bad_message",
			 st->depth ? "type lists event types, as strings" :
			 "a message is one JSON object");
	else if (f == F_TYPE)
		st->types_open = st->types_given = true;
	else if (f != F_UNKNOWN)
		fail(st, f >= F_FILTER ? "bad_filter" : "bad_message",
			 "a field of the message has the wrong type");
	st->depth++;
}

static void
array_end(void *state)
{
	ParseState *st = state;

	st->depth--;
	if (st->depth == 2)
		st->types_open = false;
}

static void
field_start(void *state, char *fname, bool isnull)
{
	ParseState *st = state;

	if (st->depth == 1)
		st->top = top_field(fname);
	else if (st->depth == 2 && st->filter_open)
		st->in_filter = filter_field(fname);
}

static void
add_type(ParseState *st, const char *t)
{
	const char *message;
	bool		oom;

	if (!rt_request_add_type(&st->m->filter, t, &message, &oom))
	{
		st->oom |= oom;
		fail(st, "bad_filter", oom ? "out of memory" : message);
	}
}

static void
scalar(void *state, char *token, JsonTokenType type)
{
	ParseState *st = state;
	RtClientMessage *m = st->m;
	Field		f;

	if (st->depth == 0)
	{
		fail(st, "bad_message", "a message is one JSON object");
		return;
	}
	if (st->depth == 3 && st->types_open)
	{
		if (type != JSON_TOKEN_STRING)
			fail(st, "bad_filter", "type lists event types, as strings");
		else
			add_type(st, token);
		return;
	}
	f = current_field(st);
	if (f == F_UNKNOWN || type == JSON_TOKEN_NULL)
		return;					/* null: as if absent */

	switch (f)
	{
		case F_OP:
			if (type != JSON_TOKEN_STRING || strlen(token) >= sizeof(st->op))
				fail(st, "unknown_op", "op must be subscribe, unsubscribe or ping");
			else
			{
				strlcpy(st->op, token, sizeof(st->op));
				st->has_op = true;
			}
			break;
		case F_SUB:
			if (type != JSON_TOKEN_STRING || !is_sub_name(token))
				fail(st, "bad_sub",
					 "sub must be 1 to 64 letters, digits, or _ - . :");
			else
				strlcpy(m->sub, token, sizeof(m->sub));
			break;
		case F_AFTER:
			/* a number, or a string of digits (ids may pass 2^53) */
			if ((type != JSON_TOKEN_NUMBER && type != JSON_TOKEN_STRING) ||
				!rt_request_parse_id(token, &m->after))
				fail(st, "bad_cursor", "after must be an event id (0 or more)");
			else
				m->has_after = true;
			break;
		case F_FILTER:
			fail(st, "bad_filter", "filter must be an object");
			break;
		case F_TYPE:
			if (type != JSON_TOKEN_STRING)
				fail(st, "bad_filter", "type lists event types, as strings");
			else
				add_type(st, token);
			break;
		default:
			{
				const char *message;
				bool		oom;

				if (type != JSON_TOKEN_STRING)
					fail(st, "bad_filter", "filter values are strings");
				else if (!rt_request_set_key(&m->filter, f - F_KEY0, token,
											 &message, &oom))
				{
					st->oom |= oom;
					fail(st, "bad_filter", oom ? "out of memory" : message);
				}
			}
			break;
	}
}

/*
 * Whether the JSON text nests arrays and objects at most max deep, by a
 * scan that skips strings.  The parser recurses once per level; a message of
 * 16 kB of '[' would otherwise cost thousands of stack frames for nothing.
 * Exact for JSON; what is not JSON the parser refuses anyway.  auth.c
 * checks tokens' JSON with it too.
 */
bool
rt_json_nesting_at_most(const char *text, size_t len, int max)
{
	int			depth = 0;
	bool		in_string = false;

	for (size_t i = 0; i < len; i++)
	{
		char		ch = text[i];

		if (in_string)
		{
			if (ch == '\\')
				i++;
			else if (ch == '"')
				in_string = false;
		}
		else if (ch == '"')
			in_string = true;
		else if (ch == '[' || ch == '{')
		{
			if (++depth > max)
				return false;
		}
		else if (ch == ']' || ch == '}')
			depth--;
	}
	return true;
}

/*
 * Parse one text message of len bytes (UTF-8, checked by the caller's
 * transport).  False with *code and *message for the client's error reply.
 */
bool
rt_client_message_parse(char *text, size_t len, RtClientMessage *m,
						const char **code, const char **message)
{
	JsonLexContext *lex;
	JsonSemAction sem;
	ParseState	st;
	bool		oom;

	memset(m, 0, sizeof(*m));
	memset(&st, 0, sizeof(st));
	st.m = m;
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &st;
	sem.object_start = object_start;
	sem.object_end = object_end;
	sem.array_start = array_start;
	sem.array_end = array_end;
	sem.object_field_start = field_start;
	sem.scalar = scalar;

	if (!rt_json_nesting_at_most(text, len, RT_CLIENT_MESSAGE_DEPTH))
	{
		*code = "bad_message";
		*message = "a message nests objects and arrays at most 8 deep";
		return false;
	}
	lex = makeJsonLexContextCstringLen(text, (int) len, PG_UTF8, true);
	if (pg_parse_json(lex, &sem) != JSON_SUCCESS)
	{
		*code = "bad_json";
		*message = "a message is one JSON object";
		return false;
	}
	if (st.code == NULL && !st.has_op)
		fail(&st, "bad_message", "a message needs an op");
	if (st.code == NULL)
	{
		if (strcmp(st.op, "subscribe") == 0)
			m->op = RT_OP_SUBSCRIBE;
		else if (strcmp(st.op, "unsubscribe") == 0)
			m->op = RT_OP_UNSUBSCRIBE;
		else if (strcmp(st.op, "ping") == 0)
			m->op = RT_OP_PING;
		else
			fail(&st, "unknown_op", "op must be subscribe, unsubscribe or ping");
	}
	if (st.code == NULL && st.types_given && m->filter.ntypes == 0)
		fail(&st, "bad_filter", "type must name at least one event type");
	if (st.code == NULL && m->op != RT_OP_PING && m->sub[0] == '\0')
		fail(&st, "bad_sub", "subscribe and unsubscribe need a sub");
	if (st.code == NULL && !rt_request_end_types(&m->filter, &oom))
		fail(&st, "unavailable", "out of memory");
	if (st.code != NULL)
	{
		*code = st.oom ? "unavailable" : st.code;
		*message = st.message;
		return false;
	}
	return true;
}

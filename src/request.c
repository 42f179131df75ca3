/*-------------------------------------------------------------------------
 *
 * request.c
 *		The filter and cursor of an HTTP request, from its query string.
 *
 * PROTOCOL.md's filter parameters (executionId, batchId, jobId,
 * organizationId, type) and cursor parameters (after, since, until, and for
 * history limit and offset), the same for every endpoint.  libwebsockets
 * splits and URL-decodes the query string; this module bounds and checks
 * every value, refuses what it cannot mean with an error code and message
 * for PROTOCOL.md's 400 body, and decides whether an event matches.
 *
 * It runs inside libwebsockets callbacks: malloc, no ereport(ERROR).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <stdlib.h>

#include <libwebsockets.h>

#include "mb/pg_wchar.h"

#include "rtevents.h"

#define RT_REQ_VALUE_MAX	200		/* as the table's CHECK constraints */

/*
 * Every query argument is looked up in a buffer this big.  lws's lookup
 * gives up at the first argument longer than the caller's buffer, as if the
 * rest of the query string were not there, so a long argument placed first
 * could hide a filter: no argument may be longer than the buffers, and the
 * whole query string, whatever it holds, is bounded by it.
 */
#define RT_REQ_ARG_MAX		4096
#define RT_REQ_MAX_OFFSET	100000

/* A UUID's text form, as Postgres prints it or in upper case. */
bool
rt_request_is_uuid(const char *s)
{
	static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";

	if (strlen(s) != sizeof(shape) - 1)
		return false;
	for (int i = 0; shape[i] != '\0'; i++)
		if (shape[i] == '-' ? s[i] != '-' : !isxdigit((unsigned char) s[i]))
			return false;
	return true;
}

/* Whether an event matches: every filter given, and one of the types. */
bool
rt_request_matches(const RtRequest *c, const RtEventKeys *keys)
{
	const char *evkeys[4] = {keys->execution_id, keys->batch_id,
	keys->job_id, keys->organization_id};

	for (int i = 0; i < 4; i++)
		if (c->keys[i] != NULL &&
			(evkeys[i] == NULL ||
			 (i == 3 ? pg_strcasecmp(c->keys[i], evkeys[i]) :
			  strcmp(c->keys[i], evkeys[i])) != 0))
			return false;
	if (c->ntypes == 0)
		return true;
	for (int i = 0; i < c->ntypes; i++)
		if (keys->type != NULL && strcmp(c->types[i], keys->type) == 0)
			return true;
	return false;
}

/* Values go to Postgres as text of the database's encoding, UTF-8. */
static bool
is_utf8(const char *s)
{
	int			len = (int) strlen(s);

	return pg_encoding_verifymbstr(PG_UTF8, s, len) == len;
}

/*
 * A routing key of the filter: 0 executionId, 1 batchId, 2 jobId,
 * 3 organizationId.  The same checks for a query string and a WebSocket
 * subscribe message.  False with *message, or with *oom.
 */
bool
rt_request_set_key(RtRequest *c, int i, const char *v, const char **message,
				   bool *oom)
{
	*oom = false;
	if (*v == '\0' || strlen(v) > RT_REQ_VALUE_MAX)
	{
		*message = "filter values must be 1 to 200 bytes";
		return false;
	}
	if (!is_utf8(v))
	{
		*message = "filter values must be UTF-8";
		return false;
	}
	if (i == 3 && !rt_request_is_uuid(v))
	{
		*message = "organizationId must be a UUID";
		return false;
	}
	free(c->keys[i]);
	if ((c->keys[i] = strdup(v)) == NULL)
		*oom = true;
	return !*oom;
}

/* One more event type the filter takes; rt_request_end_types closes the list. */
bool
rt_request_add_type(RtRequest *c, const char *t, const char **message,
					bool *oom)
{
	*oom = false;
	if (c->ntypes == RT_REQ_MAX_TYPES || *t == '\0' ||
		strlen(t) > RT_REQ_VALUE_MAX)
	{
		*message = "type lists 1 to 32 types of 1 to 200 bytes";
		return false;
	}
	if (!is_utf8(t))
	{
		*message = "types must be UTF-8";
		return false;
	}
	if ((c->types[c->ntypes] = strdup(t)) == NULL)
		*oom = true;
	else
		c->ntypes++;
	return !*oom;
}

/* The types as a Postgres array literal, for the replay's types argument. */
bool
rt_request_end_types(RtRequest *c, bool *oom)
{
	size_t		lit_len = 3;
	char	   *lit;

	*oom = false;
	if (c->ntypes == 0)
		return true;
	for (int i = 0; i < c->ntypes; i++)
		lit_len += 2 * strlen(c->types[i]) + 3;
	/* {"a","b"} with " and \ escaped */
	free(c->types_literal);
	if ((lit = c->types_literal = malloc(lit_len)) == NULL)
	{
		*oom = true;
		return false;
	}
	*lit++ = '{';
	for (int i = 0; i < c->ntypes; i++)
	{
		if (i > 0)
			*lit++ = ',';
		*lit++ = '"';
		for (const char *p = c->types[i]; *p; p++)
		{
			if (*p == '"' || *p == '\\')
				*lit++ = '\\';
			*lit++ = *p;
		}
		*lit++ = '"';
	}
	*lit++ = '}';
	*lit = '\0';
	return true;
}

/* Whether the filter names anything: a key or a type. */
bool
rt_request_has_filter(const RtRequest *c)
{
	for (int i = 0; i < 4; i++)
		if (c->keys[i] != NULL)
			return true;
	return c->ntypes > 0;
}

/*
 * A query argument, URL-decoded by lws: NULL when absent, "" when given
 * empty.  *toolong when it does not fit the bound every key has.
 */
static const char *
url_arg(struct lws *wsi, const char *name_eq, char *buf, int len, bool *toolong)
{
	const char *v = lws_get_urlarg_by_name(wsi, name_eq, buf, len);

	*toolong = (v != NULL && strlen(v) > RT_REQ_VALUE_MAX);
	return v;
}

bool
rt_request_parse_id(const char *s, int64 *id)
{
	char	   *end;
	long long	v;

	if (*s == '\0' || !isdigit((unsigned char) *s))
		return false;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < 0)
		return false;
	*id = v;
	return true;
}

static int
two_digits(const char *p)
{
	return (p[0] - '0') * 10 + (p[1] - '0');
}

/*
 * The fields of a timestamp of the right shape are a real date and time
 * (Postgres would otherwise refuse the cast, and the client would see the
 * server's error rather than its own): month, day of that month, hours,
 * minutes, seconds (60 for a leap second), and an offset of at most 15:59.
 */
static bool
in_range(const char *s, const char *offset)
{
	static const int days[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int			year = two_digits(s) * 100 + two_digits(s + 2);
	int			month = two_digits(s + 5);
	int			day = two_digits(s + 8);
	bool		leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;

	if (year < 1 || month < 1 || month > 12 || day < 1 || day > days[month - 1] ||
		(month == 2 && day == 29 && !leap))
		return false;
	if (two_digits(s + 11) > 23 || two_digits(s + 14) > 59 || two_digits(s + 17) > 60)
		return false;
	return offset == NULL || (two_digits(offset) <= 15 && two_digits(offset + 3) <= 59);
}

/*
 * An RFC 3339 timestamp, as a strict shape check: Postgres casts it.
 * 2026-11-22T10:00:00Z, with optional fraction, Z or a +hh:mm offset.
 */
static bool
is_rfc3339(const char *s)
{
	static const char shape[] = "dddd-dd-ddTdd:dd:dd";
	const char *p = s;

	for (int i = 0; shape[i] != '\0'; i++, p++)
		if (shape[i] == 'd' ? !isdigit((unsigned char) *p) :
			(shape[i] == 'T' ? (*p != 'T' && *p != 't' && *p != ' ') : *p != shape[i]))
			return false;
	if (*p == '.')
	{
		if (!isdigit((unsigned char) *++p))
			return false;
		while (isdigit((unsigned char) *p))
			p++;
	}
	if (*p == 'Z' || *p == 'z')
		return p[1] == '\0' && in_range(s, NULL);
	return (*p == '+' || *p == '-') &&
		isdigit((unsigned char) p[1]) && isdigit((unsigned char) p[2]) &&
		p[3] == ':' &&
		isdigit((unsigned char) p[4]) && isdigit((unsigned char) p[5]) &&
		p[6] == '\0' && in_range(s, p + 1);
}

/*
 * A timestamp from a query string, checked and made ready for Postgres'
 * cast, in place.  An offset's '+' sent unencoded arrives as a space (lws
 * decodes '+' as one, as HTML forms mean it), where no space may be: it is
 * put back.
 */
bool
rt_request_timestamp(char *s)
{
	size_t		len = strlen(s);

	if (len > RT_REQ_VALUE_MAX)
		return false;
	if (len > 6 && s[len - 6] == ' ')
		s[len - 6] = '+';
	return is_rfc3339(s);
}

static bool
int_arg(struct lws *wsi, const char *name_eq, int lo, int hi, int *value,
		bool *bad)
{
	char		buf[RT_REQ_ARG_MAX + 1];
	const char *v = lws_get_urlarg_by_name(wsi, name_eq, buf, sizeof(buf));
	int64		n;

	*bad = false;
	if (v == NULL)
		return false;
	if (!rt_request_parse_id(v, &n) || n < lo || n > hi)
		*bad = true;
	else
		*value = (int) n;
	return true;
}

/*
 * The filter and cursor of the request; history adds since, until, limit
 * and offset.  Returns false with *code and *message set when the request
 * is refused; the caller frees with rt_request_free either way.
 */
bool
rt_request_parse(struct lws *wsi, RtRequest *c, bool history,
				 const char **code, const char **message)
{
	static const char *const key_args[4] = {
		"executionId=", "batchId=", "jobId=", "organizationId="
	};
	char		buf[RT_REQ_ARG_MAX + 1];
	char		types[RT_REQ_ARG_MAX + 1];
	const char *v;
	bool		toolong;

	bool		oom;

	if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS) > RT_REQ_ARG_MAX)
	{
		*code = "bad_request";
		*message = "the query string is at most 4096 bytes";
		return false;
	}

	*code = "bad_filter";
	for (int i = 0; i < 4; i++)
	{
		v = url_arg(wsi, key_args[i], buf, sizeof(buf), &toolong);
		if (v == NULL)
			continue;
		if (toolong)
		{
			*message = "filter values must be 1 to 200 bytes";
			return false;
		}
		if (!rt_request_set_key(c, i, v, message, &oom))
			goto fail;
	}
	v = lws_get_urlarg_by_name(wsi, "type=", types, sizeof(types));
	if (v != NULL && strlen(v) > RT_REQ_MAX_TYPES * (RT_REQ_VALUE_MAX + 1))
	{
		*message = "type lists 1 to 32 types of 1 to 200 bytes";
		return false;
	}
	if (v != NULL)
	{
		char	   *tok,
				   *save = NULL;

		for (tok = strtok_r((char *) v, ",", &save); tok != NULL;
			 tok = strtok_r(NULL, ",", &save))
			if (!rt_request_add_type(c, tok, message, &oom))
				goto fail;
		if (c->ntypes == 0)
		{
			*message = "type must name at least one event type";
			return false;
		}
		if (!rt_request_end_types(c, &oom))
			goto fail;
	}

	*code = "bad_cursor";
	if ((v = url_arg(wsi, "after=", buf, sizeof(buf), &toolong)) != NULL)
	{
		if (toolong || !rt_request_parse_id(v, &c->after))
		{
			*message = "after must be an event id (0 or more)";
			return false;
		}
		c->has_after = true;
	}
	c->limit = 100;
	if (!history)
	{
		/* Not ignored: a client would take every event for the ones it meant. */
		if (url_arg(wsi, "since=", buf, sizeof(buf), &toolong) != NULL ||
			url_arg(wsi, "until=", buf, sizeof(buf), &toolong) != NULL)
		{
			*message = "since and until are for the history API (GET /api/events); a stream resumes with after";
			return false;
		}
		return true;
	}

	for (int i = 0; i < 2; i++)
	{
		v = url_arg(wsi, i == 0 ? "since=" : "until=", buf, sizeof(buf), &toolong);
		if (v == NULL)
			continue;
		if (toolong || !rt_request_timestamp((char *) v))
		{
			*message = "since and until must be RFC 3339 timestamps, like 2026-11-22T10:00:00Z";
			return false;
		}
		if (((i == 0 ? &c->since : &c->until)[0] = strdup(v)) == NULL)
			goto oom;
	}
	{
		bool		bad;

		if (int_arg(wsi, "limit=", 1, 1000, &c->limit, &bad) && bad)
		{
			*message = "limit must be between 1 and 1000";
			return false;
		}
		if (int_arg(wsi, "offset=", 0, RT_REQ_MAX_OFFSET, &c->offset, &bad) && bad)
		{
			*message = "offset must be between 0 and 100000";
			return false;
		}
	}
	return true;

fail:
	if (!oom)
		return false;
oom:
	*code = "unavailable";
	*message = "out of memory";
	return false;
}

void
rt_request_free(RtRequest *c)
{
	for (int i = 0; i < 4; i++)
		free(c->keys[i]);
	for (int i = 0; i < c->ntypes; i++)
		free(c->types[i]);
	free(c->types_literal);
	free(c->since);
	free(c->until);
	memset(c, 0, sizeof(*c));
}

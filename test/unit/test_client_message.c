/*-------------------------------------------------------------------------
 *
 * test_client_message.c
 *		Unit tests of client_message.c, printed as TAP: what a WebSocket
 *		client may say, and every way of saying it wrong.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdio.h>
#include <stdlib.h>

#include "rtevents.h"

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

static bool
str_eq(const char *a, const char *b)
{
	return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* Parse text; the caller frees m->filter. */
static bool
parse(const char *text, RtClientMessage *m, const char **code)
{
	char	   *copy = strdup(text);
	const char *message = NULL;
	bool		parsed;

	*code = NULL;
	parsed = rt_client_message_parse(copy, strlen(copy), m, code, &message);
	if (!parsed && (message == NULL || strchr(message, '"') != NULL))
		ok(false, "an error comes with a message fit for JSON");
	free(copy);
	return parsed;
}

static void
expect_error(const char *text, const char *want)
{
	RtClientMessage m;
	const char *code;
	char		name[256];
	bool		parsed = parse(text, &m, &code);

	snprintf(name, sizeof(name), "%s -> %s", text, want);
	ok(!parsed && str_eq(code, want), name);
	rt_request_free(&m.filter);
}

static void
test_good(void)
{
	RtClientMessage m;
	const char *code;

	ok(parse("{\"op\":\"subscribe\",\"sub\":\"s1\",\"filter\":{\"executionId\":\"e1\","
			 "\"batchId\":\"b\",\"jobId\":\"j\",\"organizationId\":\"7F1C7A52-2A1E-4B9E-9D1A-0C5C2B7B6A10\","
			 "\"type\":[\"a\",\"b\\\"c\"]},\"after\":120}", &m, &code),
	   "a full subscribe parses");
	ok(m.op == RT_OP_SUBSCRIBE && str_eq(m.sub, "s1"), "op and sub");
	ok(str_eq(m.filter.keys[0], "e1") && str_eq(m.filter.keys[1], "b") &&
	   str_eq(m.filter.keys[2], "j") &&
	   str_eq(m.filter.keys[3], "7F1C7A52-2A1E-4B9E-9D1A-0C5C2B7B6A10"),
	   "the four routing keys");
	ok(m.filter.ntypes == 2 && str_eq(m.filter.types[1], "b\"c"),
	   "types, unescaped");
	ok(str_eq(m.filter.types_literal, "{\"a\",\"b\\\"c\"}"),
	   "types as an array literal, escaped for Postgres");
	ok(m.has_after && m.after == 120, "after");
	rt_request_free(&m.filter);

	ok(parse("{\"after\":\"9007199254740993\",\"sub\":\"x\",\"op\":\"subscribe\"}", &m, &code) &&
	   m.has_after && m.after == INT64CONST(9007199254740993),
	   "after as a string of digits, past 2^53, fields in any order");
	ok(!rt_request_has_filter(&m.filter), "no filter: everything");
	rt_request_free(&m.filter);

	ok(parse("{\"op\":\"subscribe\",\"sub\":\"a.b-c_d:1\",\"filter\":{\"type\":\"one\"}}", &m, &code) &&
	   m.filter.ntypes == 1 && str_eq(m.filter.types[0], "one") && !m.has_after,
	   "type as one string; punctuation in sub; no after");
	rt_request_free(&m.filter);

	ok(parse("{\"op\":\"subscribe\",\"sub\":\"n\",\"filter\":{\"executionId\":null,\"jobId\":\"j\"},\"after\":null}",
			 &m, &code) &&
	   m.filter.keys[0] == NULL && str_eq(m.filter.keys[2], "j") && !m.has_after,
	   "null is as if absent");
	rt_request_free(&m.filter);

	ok(parse("{\"op\":\"ping\",\"x\":{\"op\":\"subscribe\",\"filter\":[1,{\"a\":[]}]},\"y\":[[\"z\"]]}", &m, &code) &&
	   m.op == RT_OP_PING,
	   "unknown fields are ignored, however nested");
	rt_request_free(&m.filter);

	ok(parse("{\"op\":\"subscribe\",\"sub\":\"s\",\"filter\":{\"future\":{\"executionId\":\"no\"}}}", &m, &code) &&
	   m.filter.keys[0] == NULL,
	   "a key nested under an unknown filter field is not the filter's");
	rt_request_free(&m.filter);

	ok(parse("{\"op\":\"unsubscribe\",\"sub\":\"s1\"}", &m, &code) &&
	   m.op == RT_OP_UNSUBSCRIBE && str_eq(m.sub, "s1"), "unsubscribe");
	rt_request_free(&m.filter);
	ok(parse("  {\"op\":\"ping\"}\n", &m, &code) && m.op == RT_OP_PING,
	   "ping, with whitespace around");
	rt_request_free(&m.filter);
}

static void
test_bad(void)
{
	char		big[400];

	expect_error("", "bad_json");
	expect_error("{", "bad_json");
	expect_error("{\"op\":\"ping\"} {}", "bad_json");
	expect_error("{\"op\":\"ping\",}", "bad_json");
	expect_error("\"ping\"", "bad_message");
	expect_error("[{\"op\":\"ping\"}]", "bad_message");
	expect_error("{}", "bad_message");
	expect_error("{\"op\":7}", "unknown_op");
	expect_error("{\"op\":\"subscribeXXXXXXXXXXXXXXXX\"}", "unknown_op");
	expect_error("{\"op\":\"PING\"}", "unknown_op");
	expect_error("{\"op\":{\"a\":1}}", "bad_message");
	expect_error("{\"op\":\"subscribe\"}", "bad_sub");
	expect_error("{\"op\":\"unsubscribe\",\"sub\":\"\"}", "bad_sub");
	expect_error("{\"op\":\"subscribe\",\"sub\":\"a b\"}", "bad_sub");
	expect_error("{\"op\":\"subscribe\",\"sub\":\"a\\\"b\"}", "bad_sub");
	expect_error("{\"op\":\"subscribe\",\"sub\":5}", "bad_sub");
	expect_error("{\"op\":\"subscribe\",\"sub\":\"0123456789012345678901234567890123456789012345678901234567890123456789\"}",
				 "bad_sub");
	expect_error("{\"op\":\"subscribe\",\"sub\":\"s\",\"after\":-1}", "bad_cursor");
	expect_error("{\"op\":\"subscribe\",\"sub\":\"s\",\"after\":1.0}", "bad_cursor");
	expect_error("{\"op\":\"subscribe\",\"sub\":\"s\",\"after\":1e3}", "bad_cursor");
	expect_error("{\"op\":\"subscribe\",\"sub\":\"s\",\"after\":\"12a\"}", "bad_cursor");
	expect_error("{\"op\":\"subscribe\",\"sub\":\"s\",\"after\":99999999999999999999}", "bad_cursor");
	expect_error("{\"op\":\"subscribe\",\"sub\":\"s\",\"after\":true}", "bad_cursor");
	expect_error("{\"op\":\"subscribe\",\"sub\":\"s\",\"filter\":\"e1\"}", "bad_filter");
	expect_error("{\"op\":\"subscribe\",\"sub\":\"s\",\"filter\":[\"e1\"]}", "bad_filter");
	expect_error("{\"op\":\"subscribe\",\"sub\":\"s\",\"filter\":{\"executionId\":1}}", "bad_filter");
	expect_error("{\"op\":\"subscribe\",\"sub\":\"s\",\"filter\":{\"executionId\":\"\"}}", "bad_filter");
	expect_error("{\"op\":\"subscribe\",\"sub\":\"s\",\"filter\":{\"jobId\":{\"x\":1}}}", "bad_filter");
	expect_error("{\"op\":\"subscribe\",\"sub\":\"s\",\"filter\":{\"organizationId\":\"not-a-uuid\"}}", "bad_filter");
	expect_error("{\"op\":\"subscribe\",\"sub\":\"s\",\"filter\":{\"type\":[]}}", "bad_filter");
	expect_error("{\"op\":\"subscribe\",\"sub\":\"s\",\"filter\":{\"type\":[\"\"]}}", "bad_filter");
	expect_error("{\"op\":\"subscribe\",\"sub\":\"s\",\"filter\":{\"type\":[1]}}", "bad_filter");
	expect_error("{\"op\":\"subscribe\",\"sub\":\"s\",\"filter\":{\"type\":[[\"a\"]]}}", "bad_filter");
	expect_error("{\"op\":\"subscribe\",\"sub\":\"s\",\"filter\":{\"type\":[{\"a\":1}]}}", "bad_filter");
	expect_error("{\"op\":\"subscribe\",\"sub\":\"s\",\"filter\":{\"type\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\",\"l\",\"m\",\"n\",\"o\",\"p\",\"q\",\"r\",\"s\",\"t\",\"u\",\"v\",\"w\",\"x\",\"y\",\"z\",\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\"]}}",
				 "bad_filter");

	/* nesting: 8 levels are fine, 9 are not, and strings do not count */
	expect_error("{\"op\":\"ping\",\"x\":[[[[[[[[1]]]]]]]]}", "bad_message");
	{
		RtClientMessage m;
		const char *code;

		ok(parse("{\"op\":\"ping\",\"x\":[[[[[[1]]]]]],\"y\":\"[[[[[[[[[[[[\\\"{{{{{{{{\"}", &m, &code),
		   "nesting 7 deep, and brackets inside strings, are fine");
		rt_request_free(&m.filter);
	}
	{
		char		deep[20010];

		memset(deep, '[', 20000);
		deep[20000] = '\0';
		expect_error(deep, "bad_message");
	}

	/* a routing key one byte over the table's bound */
	snprintf(big, sizeof(big), "{\"op\":\"subscribe\",\"sub\":\"s\",\"filter\":{\"jobId\":\"%0201d\"}}", 0);
	expect_error(big, "bad_filter");
	snprintf(big, sizeof(big), "{\"op\":\"subscribe\",\"sub\":\"s\",\"filter\":{\"jobId\":\"%0200d\"}}", 0);
	{
		RtClientMessage m;
		const char *code;

		ok(parse(big, &m, &code) && strlen(m.filter.keys[2]) == 200,
		   "a routing key of exactly 200 bytes is taken");
		rt_request_free(&m.filter);
	}
}

int
main(void)
{
	test_good();
	test_bad();
	printf("1..%d\n", tests_run);
	return tests_failed > 0 ? 1 : 0;
}

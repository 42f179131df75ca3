/*-------------------------------------------------------------------------
 *
 * fuzz_client_message.c
 *		libFuzzer harness for client_message.c: what a WebSocket client
 *		says, parsed with Postgres' common/jsonapi (the frontend build in
 *		libpgcommon, as test/unit/test_client_message is built).
 *
 * The input is one text message, handed over as ws.c does: a buffer of
 * exactly its length, not NUL-terminated.  The parser's pallocs go to an
 * arena reset after each input, as ws.c resets its memory context.
 *
 * Properties checked, on every input:
 *  - the result is what an independent model computes from the same text
 *    read as a plain JSON tree: accepted or refused, with the error code
 *    of the first problem in document order; when accepted, op, sub,
 *    after, the four routing keys and the types (in order) are the
 *    model's, byte for byte;
 *  - whatever the result, what ws.c puts unescaped into a reply is safe:
 *    the sub name is empty or 1 to 64 of [A-Za-z0-9_.:-], the error code
 *    is one of PROTOCOL.md's, the message is printable ASCII without
 *    quotes or backslashes;
 *  - the filter is within bounds (keys of 1 to 200 bytes, a UUID for
 *    organizationId, at most 32 types of 1 to 200 bytes, an array literal
 *    when there are types), and after is 0 or more;
 *  - nothing leaks (LeakSanitizer: request.c's mallocs are freed by
 *    rt_request_free), nothing overflows (ASan, UBSan).
 *
 * Messages nest at most 8 deep (client_message.c refuses deeper ones before
 * parsing, so the parser's recursion is bounded); inputs are up to 16 kB
 * (RT_WS_MESSAGE_MAX), fuzz/run's -max_len.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "rtevents.h"

#include "support.c"

/*
 * How deep a message may nest arrays and objects (client_message.c's
 * RT_CLIENT_MESSAGE_DEPTH): deeper is refused as bad_message, even before
 * the JSON is checked; brackets inside strings do not count.
 */
#define MAX_DEPTH	8

/* The deepest nesting of brackets outside strings, JSON or not. */
ORACLE static int
lexical_depth(const char *text, size_t len)
{
	int			depth = 0;
	int			max = 0;
	bool		in_string = false;

	for (size_t i = 0; i < len; i++)
	{
		if (in_string)
		{
			if (text[i] == '\\')
				i++;
			else if (text[i] == '"')
				in_string = false;
		}
		else if (text[i] == '"')
			in_string = true;
		else if (text[i] == '[' || text[i] == '{')
			max = Max(max, ++depth);
		else if (text[i] == ']' || text[i] == '}')
			depth--;
	}
	return max;
}

typedef struct Model
{
	const char *code;			/* the first error, or NULL */
	bool		has_op;
	const char *op;
	const char *sub;
	bool		has_after;
	int64		after;
	const char *keys[4];
	const char *types[RT_REQ_MAX_TYPES];
	int			ntypes;
	bool		types_given;
} Model;

ORACLE static void
model_fail(Model *m, const char *code)
{
	if (m->code == NULL)
		m->code = code;
}

ORACLE static bool
container(const JNode *n)
{
	return n->kind == J_OBJECT || n->kind == J_ARRAY;
}

ORACLE static void
model_type(Model *m, const char *t)
{
	if (m->ntypes == RT_REQ_MAX_TYPES || *t == '\0' || strlen(t) > 200 || !oracle_utf8(t))
		model_fail(m, "bad_filter");
	else
		m->types[m->ntypes++] = t;
}

ORACLE static void
model_filter(Model *m, const JNode *filter)
{
	static const char *const keys[4] = {
		"executionId", "batchId", "jobId", "organizationId"
	};

	for (const JNode *f = filter->first; f; f = f->next)
	{
		int			k = -1;

		for (int i = 0; i < 4; i++)
			if (strcmp(f->name, keys[i]) == 0)
				k = i;
		if (k >= 0)
		{
			if (f->kind == J_NULL)
				continue;
			if (f->kind != J_STRING || *f->text == '\0' ||
				strlen(f->text) > 200 || !oracle_utf8(f->text) ||
				(k == 3 && !oracle_uuid(f->text)))
				model_fail(m, "bad_filter");
			else
				m->keys[k] = f->text;
		}
		else if (strcmp(f->name, "type") == 0)
		{
			if (f->kind == J_NULL)
				continue;
			if (f->kind == J_STRING)
				model_type(m, f->text);
			else if (f->kind == J_ARRAY)
			{
				m->types_given = true;
				for (const JNode *e = f->first; e; e = e->next)
				{
					if (e->kind == J_STRING)
						model_type(m, e->text);
					else
						model_fail(m, "bad_filter");
				}
			}
			else
				model_fail(m, "bad_filter");
		}
	}
}

/* What the message means, by PROTOCOL.md and the README's choices. */
ORACLE static void
model_message(Model *m, const JNode *root)
{
	memset(m, 0, sizeof(*m));
	if (root->kind != J_OBJECT)
	{
		model_fail(m, "bad_message");
		return;
	}
	for (const JNode *f = root->first; f; f = f->next)
	{
		const char *name = f->name;

		if (strcmp(name, "op") == 0)
		{
			if (container(f))
				model_fail(m, "bad_message");
			else if (f->kind == J_NULL)
				continue;
			else if (f->kind != J_STRING || strlen(f->text) >= 16)
				model_fail(m, "unknown_op");
			else
			{
				m->op = f->text;
				m->has_op = true;
			}
		}
		else if (strcmp(name, "sub") == 0)
		{
			if (container(f))
				model_fail(m, "bad_message");
			else if (f->kind == J_NULL)
				continue;
			else if (f->kind != J_STRING || !oracle_sub_name(f->text))
				model_fail(m, "bad_sub");
			else
				m->sub = f->text;
		}
		else if (strcmp(name, "after") == 0)
		{
			int64		id;

			if (container(f))
				model_fail(m, "bad_message");
			else if (f->kind == J_NULL)
				continue;
			else if ((f->kind != J_STRING && f->kind != J_NUMBER) ||
					 !oracle_id(f->text, &id))
				model_fail(m, "bad_cursor");
			else
			{
				m->after = id;
				m->has_after = true;
			}
		}
		else if (strcmp(name, "filter") == 0)
		{
			if (f->kind == J_OBJECT)
				model_filter(m, f);
			else if (f->kind != J_NULL)
				model_fail(m, "bad_filter");
		}
	}
	if (m->code == NULL && !m->has_op)
		model_fail(m, "bad_message");
	if (m->code == NULL && strcmp(m->op, "subscribe") != 0 &&
		strcmp(m->op, "unsubscribe") != 0 && strcmp(m->op, "ping") != 0)
		model_fail(m, "unknown_op");
	if (m->code == NULL && m->types_given && m->ntypes == 0)
		model_fail(m, "bad_filter");
	if (m->code == NULL && strcmp(m->op, "ping") != 0 && m->sub == NULL)
		model_fail(m, "bad_sub");
}

ORACLE static RtClientOp
model_op(const char *op)
{
	return strcmp(op, "subscribe") == 0 ? RT_OP_SUBSCRIBE :
		strcmp(op, "unsubscribe") == 0 ? RT_OP_UNSUBSCRIBE : RT_OP_PING;
}

ORACLE static void
check_bounds(const RtClientMessage *msg)
{
	const RtRequest *c = &msg->filter;

	CHECK(msg->sub[0] == '\0' || oracle_sub_name(msg->sub),
		  "sub name %s would go into a reply unescaped", msg->sub);
	for (int i = 0; i < 4; i++)
		if (c->keys[i] != NULL)
		{
			size_t		n = strlen(c->keys[i]);

			CHECK(n >= 1 && n <= 200, "key %d of %zu bytes", i, n);
			CHECK(i != 3 || oracle_uuid(c->keys[i]), "organizationId %s", c->keys[i]);
		}
	CHECK(c->ntypes >= 0 && c->ntypes <= RT_REQ_MAX_TYPES, "%d types", c->ntypes);
	for (int i = 0; i < c->ntypes; i++)
	{
		size_t		n = strlen(c->types[i]);

		CHECK(n >= 1 && n <= 200, "type %d of %zu bytes", i, n);
	}
	CHECK(!msg->has_after || msg->after >= 0, "after " INT64_FORMAT, msg->after);
}

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* exactly the message, as ws.c hands it over: no terminating NUL */
	char	   *text = malloc(size ? size : 1);
	RtClientMessage msg;
	const char *code = NULL;
	const char *message = NULL;
	bool		ok;
	JNode	   *tree;
	int			depth = 0;
	Model		m;

	memcpy(text, data, size);
	ok = rt_client_message_parse(text, size, &msg, &code, &message);
	check_bounds(&msg);
	if (!ok)
	{
		static const char *const codes[] = {
			"bad_json", "bad_message", "unknown_op", "bad_sub", "bad_filter",
			"bad_cursor"
		};
		bool		known = false;

		for (size_t i = 0; i < lengthof(codes); i++)
			known |= code != NULL && strcmp(code, codes[i]) == 0;
		CHECK(known, "error code %s", code ? code : "(null)");
		CHECK(plain_message(message), "error message %s", message ? message : "(null)");
	}
	else
	{
		CHECK(msg.op == RT_OP_SUBSCRIBE || msg.op == RT_OP_UNSUBSCRIBE ||
			  msg.op == RT_OP_PING, "op %d", (int) msg.op);
		CHECK(msg.op == RT_OP_PING || oracle_sub_name(msg.sub),
			  "a subscribe or unsubscribe without a sub");
		CHECK((msg.filter.ntypes > 0) == (msg.filter.types_literal != NULL),
			  "%d types, literal %s", msg.filter.ntypes,
			  msg.filter.types_literal ? msg.filter.types_literal : "(null)");
	}

	/* the model, from the same text read as a plain tree */
	tree = json_tree((const char *) data, size, &depth);
	if (tree == NULL)
		CHECK(!ok && (strcmp(code, "bad_json") == 0 ||
					  (strcmp(code, "bad_message") == 0 &&
					   lexical_depth((const char *) data, size) > MAX_DEPTH)),
			  "not JSON, yet %s", ok ? "accepted" : code);
	else if (depth > MAX_DEPTH)
		CHECK(!ok && strcmp(code, "bad_message") == 0,
			  "JSON nested %d deep, yet %s", depth, ok ? "accepted" : code);
	else
	{
		model_message(&m, tree);
		CHECK(ok == (m.code == NULL), "parse %s (%s), the model %s (%s)",
			  ok ? "accepted" : "refused", ok ? "" : code,
			  m.code ? "refuses" : "accepts", m.code ? m.code : "");
		if (!ok)
			CHECK(strcmp(code, m.code) == 0, "error %s, the model's %s",
				  code, m.code);
		else
		{
			CHECK(msg.op == model_op(m.op), "op %d, the model's %s",
				  (int) msg.op, m.op);
			CHECK(str_eq(m.sub ? m.sub : "", msg.sub), "sub %s, the model's %s",
				  msg.sub, m.sub ? m.sub : "");
			CHECK(msg.has_after == m.has_after &&
				  (!m.has_after || msg.after == m.after),
				  "after " INT64_FORMAT ", the model's " INT64_FORMAT,
				  msg.after, m.after);
			for (int i = 0; i < 4; i++)
				CHECK(str_eq(msg.filter.keys[i], m.keys[i]),
					  "key %d %s, the model's %s", i,
					  msg.filter.keys[i] ? msg.filter.keys[i] : "(none)",
					  m.keys[i] ? m.keys[i] : "(none)");
			CHECK(msg.filter.ntypes == m.ntypes, "%d types, the model's %d",
				  msg.filter.ntypes, m.ntypes);
			for (int i = 0; i < m.ntypes; i++)
				CHECK(strcmp(msg.filter.types[i], m.types[i]) == 0,
					  "type %d %s, the model's %s", i, msg.filter.types[i],
					  m.types[i]);
		}
	}

	rt_request_free(&msg.filter);
	free(text);
	fuzz_reset();
	return 0;
}

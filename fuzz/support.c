/*-------------------------------------------------------------------------
 *
 * support.c
 *		What the libFuzzer harnesses share; #included by each fuzz_*.c.
 *
 * 1. An arena in place of libpgcommon's frontend palloc (fe_memutils.o).
 *    In the worker, the JSON parser of client messages pallocs in a memory
 *    context that is reset after each message (ws.c); frontend palloc is
 *    plain malloc that nobody frees, which LeakSanitizer would report on
 *    every input.  Defining every symbol of fe_memutils.o here keeps the
 *    linker from pulling it out of libpgcommon.a, and fuzz_reset() frees
 *    what was palloc'd, as the context reset does.  What the code under
 *    test mallocs (request.c's filter values) is not in the arena: a leak
 *    of it is still a leak, and fails the run.
 *
 * 2. A JSON tree, built with the same parser (common/jsonapi), for the
 *    harnesses' oracles: what a message or an encoded event says, read
 *    independently of the code under test.
 *
 * 3. Small checks: an independent event id parser, the shapes of UUIDs and
 *    subscription names, valid UTF-8.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"

/* ---------------------------------------------------------------- arena */

typedef struct ArenaChunk
{
	struct ArenaChunk *prev;
	struct ArenaChunk *next;
	size_t		size;
	size_t		magic;
} ArenaChunk;

#define ARENA_MAGIC		((size_t) 0x52544655u)	/* "RTFU" */

static ArenaChunk arena_head = {&arena_head, &arena_head, 0, 0};

static void *
arena_alloc(size_t size, bool zero, bool fail_ok)
{
	ArenaChunk *c;

	/* as MaxAllocSize checks do, though nothing here asks for that much */
	if (size > ((size_t) 1 << 30))
	{
		if (fail_ok)
			return NULL;
		fprintf(stderr, "fuzz arena: request for %zu bytes\n", size);
		abort();
	}
	c = zero ? calloc(1, sizeof(ArenaChunk) + size) :
		malloc(sizeof(ArenaChunk) + size);
	if (c == NULL)
	{
		if (fail_ok)
			return NULL;
		abort();
	}
	c->size = size;
	c->magic = ARENA_MAGIC;
	c->next = arena_head.next;
	c->prev = &arena_head;
	arena_head.next->prev = c;
	arena_head.next = c;
	return c + 1;
}

static ArenaChunk *
arena_chunk(void *p)
{
	ArenaChunk *c = (ArenaChunk *) p - 1;

	if (c->magic != ARENA_MAGIC)
	{
		fprintf(stderr, "fuzz arena: pfree/repalloc of a pointer palloc did not return\n");
		abort();
	}
	return c;
}

static void
arena_free(void *p)
{
	ArenaChunk *c;

	if (p == NULL)
		return;
	c = arena_chunk(p);
	c->prev->next = c->next;
	c->next->prev = c->prev;
	c->magic = 0;
	free(c);
}

static void *
arena_realloc(void *p, size_t size)
{
	ArenaChunk *c;
	ArenaChunk *n;

	if (p == NULL)
		return arena_alloc(size, false, false);
	c = arena_chunk(p);
	c->prev->next = c->next;
	c->next->prev = c->prev;
	n = realloc(c, sizeof(ArenaChunk) + size);
	if (n == NULL)
		abort();
	n->size = size;
	n->next = arena_head.next;
	n->prev = &arena_head;
	arena_head.next->prev = n;
	arena_head.next = n;
	return n + 1;
}

/* Everything palloc'd since the last reset: gone, as with a context reset. */
pg_attribute_unused()
static void
fuzz_reset(void)
{
	while (arena_head.next != &arena_head)
		arena_free(arena_head.next + 1);
}

static char *
arena_strdup(const char *s, size_t n)
{
	char	   *d = arena_alloc(n + 1, false, false);

	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

/* fe_memutils.o's symbols, all of them (see above) */
void	   *pg_malloc(size_t size);
void	   *pg_malloc0(size_t size);
void	   *pg_malloc_extended(size_t size, int flags);
void	   *pg_realloc(void *ptr, size_t size);
char	   *pg_strdup(const char *in);
void		pg_free(void *ptr);
Size		add_size(Size s1, Size s2);
Size		mul_size(Size s1, Size s2);
void	   *palloc_mul(Size s1, Size s2);
void	   *palloc0_mul(Size s1, Size s2);
void	   *palloc_mul_extended(Size s1, Size s2, int flags);
void	   *pg_malloc_mul(Size s1, Size s2);
void	   *pg_malloc0_mul(Size s1, Size s2);
void	   *pg_malloc_mul_extended(Size s1, Size s2, int flags);
void	   *pg_realloc_mul(void *p, Size s1, Size s2);
void	   *repalloc_mul(void *p, Size s1, Size s2);

void *
pg_malloc(size_t size)
{
	return arena_alloc(size ? size : 1, false, false);
}

void *
pg_malloc0(size_t size)
{
	return arena_alloc(size ? size : 1, true, false);
}

void *
pg_malloc_extended(size_t size, int flags)
{
	return arena_alloc(size ? size : 1, (flags & MCXT_ALLOC_ZERO) != 0,
					   (flags & MCXT_ALLOC_NO_OOM) != 0);
}

void *
pg_realloc(void *ptr, size_t size)
{
	return arena_realloc(ptr, size ? size : 1);
}

char *
pg_strdup(const char *in)
{
	return arena_strdup(in, strlen(in));
}

void
pg_free(void *ptr)
{
	arena_free(ptr);
}

void *
palloc(Size size)
{
	return arena_alloc(size, false, false);
}

void *
palloc0(Size size)
{
	return arena_alloc(size, true, false);
}

void *
palloc_extended(Size size, int flags)
{
	return arena_alloc(size, (flags & MCXT_ALLOC_ZERO) != 0,
					   (flags & MCXT_ALLOC_NO_OOM) != 0);
}

void *
repalloc(void *pointer, Size size)
{
	return arena_realloc(pointer, size);
}

void
pfree(void *pointer)
{
	arena_free(pointer);
}

char *
pstrdup(const char *in)
{
	return arena_strdup(in, strlen(in));
}

char *
pnstrdup(const char *in, Size size)
{
	return arena_strdup(in, strnlen(in, size));
}

/* Debian's backported overflow-checked variants */
Size
add_size(Size s1, Size s2)
{
	Size		r = s1 + s2;

	if (r < s1)
		abort();
	return r;
}

Size
mul_size(Size s1, Size s2)
{
	if (s1 != 0 && s2 > SIZE_MAX / s1)
		abort();
	return s1 * s2;
}

void *
palloc_mul(Size s1, Size s2)
{
	return palloc(mul_size(s1, s2));
}

void *
palloc0_mul(Size s1, Size s2)
{
	return palloc0(mul_size(s1, s2));
}

void *
palloc_mul_extended(Size s1, Size s2, int flags)
{
	return palloc_extended(mul_size(s1, s2), flags);
}

void *
pg_malloc_mul(Size s1, Size s2)
{
	return pg_malloc(mul_size(s1, s2));
}

void *
pg_malloc0_mul(Size s1, Size s2)
{
	return pg_malloc0(mul_size(s1, s2));
}

void *
pg_malloc_mul_extended(Size s1, Size s2, int flags)
{
	return pg_malloc_extended(mul_size(s1, s2), flags);
}

void *
pg_realloc_mul(void *p, Size s1, Size s2)
{
	return pg_realloc(p, mul_size(s1, s2));
}

void *
repalloc_mul(void *p, Size s1, Size s2)
{
	return repalloc(p, mul_size(s1, s2));
}

/* ---------------------------------------------------------------- checks */

/*
 * The oracles are not what is being explored: no coverage feedback from
 * them (it would steer the fuzzer toward the checks), and no cost for it.
 */
#define ORACLE __attribute__((no_sanitize("coverage")))

#define CHECK(cond, ...) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "property violated: %s (%s:%d)\n", #cond, \
					__FILE__, __LINE__); \
			fprintf(stderr, __VA_ARGS__); \
			fputc('\n', stderr); \
			abort(); \
		} \
	} while (0)

ORACLE pg_attribute_unused()
static bool
str_eq(const char *a, const char *b)
{
	return (a == NULL && b == NULL) ||
		(a != NULL && b != NULL && strcmp(a, b) == 0);
}

/*
 * An event id, the independent way: one or more ASCII digits and nothing
 * else, at most INT64_MAX.
 */
ORACLE pg_attribute_unused()
static bool
oracle_id(const char *s, int64 *id)
{
	uint64		v = 0;

	if (*s == '\0')
		return false;
	for (const char *p = s; *p; p++)
	{
		if (*p < '0' || *p > '9')
			return false;
		if (v > (uint64) PG_INT64_MAX / 10 ||
			v * 10 + (uint64) (*p - '0') > (uint64) PG_INT64_MAX)
			return false;
		v = v * 10 + (uint64) (*p - '0');
	}
	*id = (int64) v;
	return true;
}

ORACLE pg_attribute_unused()
static bool
hexdigit(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
		(c >= 'A' && c <= 'F');
}

/*
 * Well-formed UTF-8 by RFC 3629's table: no overlong forms, no surrogates,
 * nothing past U+10FFFF (what Postgres takes as text).
 */
ORACLE
static bool pg_attribute_unused()
oracle_utf8(const char *s)
{
	const unsigned char *p = (const unsigned char *) s;

	while (*p)
	{
		unsigned char c = *p;
		int			n;
		unsigned char lo = 0x80,
					hi = 0xBF;

		if (c < 0x80)
		{
			p++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF)
			n = 1;
		else if (c >= 0xE0 && c <= 0xEF)
		{
			n = 2;
			if (c == 0xE0)
				lo = 0xA0;
			if (c == 0xED)
				hi = 0x9F;
		}
		else if (c >= 0xF0 && c <= 0xF4)
		{
			n = 3;
			if (c == 0xF0)
				lo = 0x90;
			if (c == 0xF4)
				hi = 0x8F;
		}
		else
			return false;
		p++;
		for (int k = 0; k < n; k++, p++)
		{
			if (*p < (k == 0 ? lo : 0x80) || *p > (k == 0 ? hi : 0xBF))
				return false;
		}
	}
	return true;
}


ORACLE pg_attribute_unused()
static bool
oracle_uuid(const char *s)
{
	if (strlen(s) != 36)
		return false;
	for (int i = 0; i < 36; i++)
		if ((i == 8 || i == 13 || i == 18 || i == 23) ? s[i] != '-' :
			!hexdigit(s[i]))
			return false;
	return true;
}

/* What a reply may carry unescaped: letters, digits, _ - . : (1 to 64). */
ORACLE pg_attribute_unused()
static bool
oracle_sub_name(const char *s)
{
	size_t		n = strlen(s);

	if (n == 0 || n > 64)
		return false;
	for (const char *p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			  (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' ||
			  *p == '.' || *p == ':'))
			return false;
	return true;
}

/* An error message goes into JSON unescaped: printable ASCII, no " or \. */
ORACLE pg_attribute_unused()
static bool
plain_message(const char *s)
{
	if (s == NULL || *s == '\0')
		return false;
	for (const char *p = s; *p; p++)
		if (*p < ' ' || *p > '~' || *p == '"' || *p == '\\')
			return false;
	return true;
}

ORACLE pg_attribute_unused()
static bool
valid_utf8(const char *s, size_t len)
{
	return pg_encoding_verifymbstr(PG_UTF8, s, (int) len) == (int) len;
}

/* ---------------------------------------------------------------- JSON tree */

typedef enum JKind
{
	J_OBJECT,
	J_ARRAY,
	J_STRING,
	J_NUMBER,
	J_TRUE,
	J_FALSE,
	J_NULL
} JKind;

typedef struct JNode
{
	JKind		kind;
	char	   *text;			/* scalars: the token, de-escaped */
	char	   *name;			/* as a member of an object: its name */
	struct JNode *first;		/* containers: members in order */
	struct JNode *last;
	struct JNode *next;
	int			count;
} JNode;

typedef struct TreeState
{
	JNode	   *root;
	JNode	  **stack;
	int			depth;
	int			max_depth;		/* of arrays and objects, the root's is 1 */
	int			cap;
	char	   *pending_name;
} TreeState;

static void
tree_attach(TreeState *ts, JNode *n)
{
	if (ts->depth == 0)
	{
		ts->root = n;
		return;
	}
	{
		JNode	   *parent = ts->stack[ts->depth - 1];

		if (parent->kind == J_OBJECT)
		{
			n->name = ts->pending_name;
			ts->pending_name = NULL;
		}
		if (parent->last)
			parent->last->next = n;
		else
			parent->first = n;
		parent->last = n;
		parent->count++;
	}
}

static void
tree_push(TreeState *ts, JKind kind)
{
	JNode	   *n = palloc0(sizeof(JNode));

	n->kind = kind;
	tree_attach(ts, n);
	if (ts->depth == ts->cap)
	{
		ts->cap = ts->cap ? ts->cap * 2 : 16;
		ts->stack = repalloc(ts->stack, ts->cap * sizeof(JNode *));
	}
	ts->stack[ts->depth++] = n;
	if (ts->depth > ts->max_depth)
		ts->max_depth = ts->depth;
}

static void
tree_object_start(void *state)
{
	tree_push(state, J_OBJECT);
}

static void
tree_array_start(void *state)
{
	tree_push(state, J_ARRAY);
}

static void
tree_end(void *state)
{
	((TreeState *) state)->depth--;
}

static void
tree_field(void *state, char *fname, bool isnull)
{
	((TreeState *) state)->pending_name = fname;
}

static void
tree_scalar(void *state, char *token, JsonTokenType type)
{
	JNode	   *n = palloc0(sizeof(JNode));

	switch (type)
	{
		case JSON_TOKEN_STRING:
			n->kind = J_STRING;
			break;
		case JSON_TOKEN_NUMBER:
			n->kind = J_NUMBER;
			break;
		case JSON_TOKEN_TRUE:
			n->kind = J_TRUE;
			break;
		case JSON_TOKEN_FALSE:
			n->kind = J_FALSE;
			break;
		default:
			n->kind = J_NULL;
			break;
	}
	n->text = token;
	tree_attach(state, n);
}

/*
 * The JSON text as a tree (palloc'd), or NULL if it is not JSON; *depth is
 * how deep arrays and objects nest (0 for a scalar).
 */
pg_attribute_unused()
static JNode *
json_tree(const char *text, size_t len, int *depth)
{
	/* the lexer wants a char * it never writes through: a copy anyway */
	char	   *copy = palloc(len + 1);
	JsonLexContext *lex;
	JsonSemAction sem;
	TreeState	ts;

	memcpy(copy, text, len);
	copy[len] = '\0';
	memset(&ts, 0, sizeof(ts));
	ts.stack = palloc(sizeof(JNode *));
	ts.cap = 1;
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &ts;
	sem.object_start = tree_object_start;
	sem.object_end = tree_end;
	sem.array_start = tree_array_start;
	sem.array_end = tree_end;
	sem.object_field_start = tree_field;
	sem.scalar = tree_scalar;
	lex = makeJsonLexContextCstringLen(copy, (int) len, PG_UTF8, true);
	if (pg_parse_json(lex, &sem) != JSON_SUCCESS)
		return NULL;
	*depth = ts.max_depth;
	return ts.root;
}

/* The last member of an object named name, or NULL. */
pg_attribute_unused()
static JNode *
json_last_member(const JNode *obj, const char *name)
{
	JNode	   *found = NULL;

	for (JNode *m = obj->first; m; m = m->next)
		if (strcmp(m->name, name) == 0)
			found = m;
	return found;
}

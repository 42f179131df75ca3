/*-------------------------------------------------------------------------
 *
 * auth.c
 *		Tokens: who may see which events.
 *
 * A client proves what it may see with a JSON Web Token (RFC 7519) in JWS
 * compact form, header.payload.signature, signed HS256 (HMAC-SHA256) with
 * rtevents.jwt_secret.  Applications mint tokens with rt_token() in SQL or
 * with any JWT library.  The claims rtevents reads:
 *
 *	{"sub":"u1","exp":1767225600,"nbf":1767222000,"admin":true,
 *	 "rt":{"organizationId":["7f1c…"],"executionId":["e1","e2"]}}
 *
 *	exp		required: a leaked token dies on its own.  nbf optional.  Both in
 *			seconds since 1970, with RT_AUTH_LEEWAY seconds for clock skew.
 *	rt		optional: each key named restricts the filter's key of the same
 *			name to the values listed (1 to RT_AUTH_MAX_VALUES).  Without rt
 *			the token restricts nothing: it may see every event.
 *	admin	optional: true allows DELETE /api/events.
 *	sub		optional: who the token is for, for the transports' logs.
 *
 * Other claims (iat, iss, aud, anything else) are ignored, but a key of rt
 * the server does not know is refused: ignoring it would widen the token.
 *
 * Postgres' own code does the work: common/base64 decodes and encodes the
 * parts (base64url is its alphabet with two characters swapped and no
 * padding), common/hmac computes the HMAC, and common/jsonapi parses the
 * header and the claims, with semantic actions that pick out the members
 * above.  The reading is strict: one spelling of each part (no padding, no
 * spare bits set), bounded length and nesting, claims named twice refused,
 * and escaped NULs and bad UTF-8 refused, so that no other JWT library can
 * read a different claim set out of the same bytes.
 *
 * The worker's half, rt_auth_verify() and rt_auth_allows(), runs inside
 * the libwebsockets event loop, where no ereport(ERROR) may escape: the
 * longjmp would unwind through the library and leave it corrupt.  But the
 * JSON parser pallocs, and in a backend it ereports when memory runs out or
 * when a \u escape cannot be converted to the database encoding (the
 * server worker declares UTF-8, see server_worker.c); pg_hmac_create()
 * ereports when its resource owner cannot grow.  So rt_auth_verify() runs
 * all of it in a memory context of its own, reset after every token, inside
 * PG_TRY: an error becomes a refusal like any other, "unavailable" when
 * memory ran out and "bad_token" otherwise.  pg_hmac_create() also
 * registers its OpenSSL context with CurrentResourceOwner, which the
 * worker, outside any transaction, does not have: HMACs computed there are
 * registered with a resource owner of this module's own.  Claims are
 * returned in malloc'd memory, which outlives the context.
 *
 * The SQL half, rt_token(), signs with the same code, then checks its own
 * token with the verifier, so that claims the worker would refuse fail at
 * mint time with the worker's reason; there, in a transaction, errors are
 * ordinary errors.  rt_token() is left out of the unit test and fuzz builds
 * (RT_AUTH_STANDALONE), which have no backend: there palloc is
 * libpgcommon's frontend one, malloc that the caller frees (the fuzz
 * harness with its arena; the unit test leaves it to its exit), nothing
 * ereports, and there is no PG_TRY.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <stdlib.h>

#include "common/base64.h"
#include "common/hmac.h"
#include "common/jsonapi.h"
#include "mb/pg_wchar.h"

#include "rtevents.h"

#ifndef RT_AUTH_STANDALONE
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"
#endif

#define RT_AUTH_MAX_DEPTH	8		/* JSON nesting, the part's object included */
#define RT_AUTH_VALUE_MAX	200		/* as request.c's filter values */
#define RT_AUTH_SIG_LEN		32		/* HMAC-SHA256 */
#define RT_AUTH_SIG_B64_LEN 43		/* 32 bytes, base64url, no padding */

/* The only header rtevents writes: {"alg":"HS256","typ":"JWT"} */
#define RT_AUTH_HEADER_B64	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"

/* Decoded parts fit in this: 3 bytes per 4 characters of the whole token. */
#define RT_AUTH_PART_MAX	(RT_AUTH_TOKEN_MAX / 4 * 3 + 3)

/* Base64 of RT_AUTH_TOKEN_MAX bytes, padded, and its NUL. */
#define RT_AUTH_B64_MAX		((RT_AUTH_TOKEN_MAX + 2) / 3 * 4 + 1)

static const char *const rt_keys[4] = {
	"executionId", "batchId", "jobId", "organizationId"
};

/* Messages are constants: nothing the client sent is echoed back. */
#define MSG_SHAPE		"a token is three base64url parts: header.payload.signature"
#define MSG_TOO_LONG	"the token is longer than 4096 bytes"
#define MSG_HEADER		"the token's header must be a JSON object with alg HS256"
#define MSG_ALG			"the token's alg must be HS256"
#define MSG_SIGNATURE	"the token's signature does not match"
#define MSG_JSON		"the token's claims must be a JSON object, nested at most 8 deep"
#define MSG_DUPLICATE	"the token names a claim twice"
#define MSG_NO_EXP		"the token has no exp"
#define MSG_TIME		"exp, nbf and iat must be seconds since 1970, like 1767225600"
#define MSG_SUB			"sub must be a string of at most 200 bytes"
#define MSG_ADMIN		"admin must be true or false"
#define MSG_RT			"rt must be an object naming some of executionId, batchId, jobId, organizationId"
#define MSG_RT_VALUES	"rt lists 1 to 100 values per key, as strings of 1 to 200 bytes"
#define MSG_RT_UUID		"rt's organizationId values must be UUIDs"
#define MSG_EXPIRED		"the token has expired"
#define MSG_NOT_YET		"the token is not valid yet"
#define MSG_NO_SECRET	"the server has no rtevents.jwt_secret"
#define MSG_SHORT_SECRET "the server's rtevents.jwt_secret is shorter than 32 bytes"
#define MSG_HMAC		"the server could not compute the token's signature"
#define MSG_UNREADABLE	"the token could not be read"
#define MSG_OOM			"out of memory"

#ifndef RT_AUTH_STANDALONE
/* rt_auth_verify's: what the parser pallocs, and whom HMACs register with */
static MemoryContext verify_cxt = NULL;
static ResourceOwner hmac_owner = NULL;
#endif

/* ---- base64url (RFC 4648 section 5), by common/base64 ---- */

/*
 * Encode len bytes into out (size bytes, room for the padded base64 and a
 * NUL): pg_b64_encode's output, its + and / turned into - and _,
 * its padding dropped.  Returns the length, or -1.
 */
static int
b64url_encode(const char *in, size_t len, char *out, size_t size)
{
	int			n = pg_b64_encode(in, (int) len, out, (int) size - 1);

	if (n < 0)
		return -1;
	while (n > 0 && out[n - 1] == '=')
		n--;
	for (int i = 0; i < n; i++)
		out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
	out[n] = '\0';
	return n;
}

/*
 * Decode len characters into out (size bytes).  JWS forbids padding, and
 * the standard alphabet's + and / are not base64url: those are refused,
 * then the part is translated and padded for pg_b64_decode (which refuses
 * anything else, whitespace included).  base64 leaves a few bits of the last
 * character spare, and a decoder that ignores them reads several spellings
 * as one token: the bytes, encoded again, must give the same characters.
 * Returns the decoded length, or -1.
 */
static int
b64url_decode(const char *in, size_t len, char *out, size_t size)
{
	char		padded[RT_AUTH_TOKEN_MAX + 4];
	char		again[RT_AUTH_B64_MAX];
	size_t		n = 0;
	int			decoded;

	if (len > RT_AUTH_TOKEN_MAX || len % 4 == 1)
		return -1;
	for (size_t i = 0; i < len; i++)
	{
		if (in[i] == '+' || in[i] == '/' || in[i] == '=')
			return -1;
		padded[n++] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
	}
	while (n % 4 != 0)
		padded[n++] = '=';
	decoded = pg_b64_decode(padded, (int) n, out, (int) size);
	if (decoded < 0 ||
		b64url_encode(out, decoded, again, sizeof(again)) != (int) len ||
		memcmp(again, in, len) != 0)
		return -1;
	return decoded;
}

/* ---- HMAC-SHA256, by common/hmac ---- */

static bool
hmac_sha256(const char *secret, const char *data, size_t len,
			uint8 mac[RT_AUTH_SIG_LEN])
{
	pg_hmac_ctx *ctx;
	bool		ok;

#ifndef RT_AUTH_STANDALONE
	ResourceOwner saved = CurrentResourceOwner;

	/*
	 * Outside a transaction, an owner of this module's own.  If
	 * pg_hmac_create() ereports (its owner could not grow), the caller's is
	 * put back by rt_auth_verify's PG_CATCH.
	 */
	if (CurrentResourceOwner == NULL)
	{
		if (hmac_owner == NULL)
			hmac_owner = ResourceOwnerCreate(NULL, "rtevents tokens");
		CurrentResourceOwner = hmac_owner;
	}
#endif
	ctx = pg_hmac_create(PG_SHA256);
	ok = ctx != NULL &&
		pg_hmac_init(ctx, (const uint8 *) secret, strlen(secret)) == 0 &&
		pg_hmac_update(ctx, (const uint8 *) data, len) == 0 &&
		pg_hmac_final(ctx, mac, RT_AUTH_SIG_LEN) == 0;
	pg_hmac_free(ctx);
#ifndef RT_AUTH_STANDALONE
	CurrentResourceOwner = saved;
#endif
	return ok;
}

/*
 * Whether two MACs are equal, in a time that does not tell where they
 * differ.  Postgres' timingsafe_bcmp() came to version 15 only with a
 * minor release (15.18): built against it, rtevents would not load into
 * an older 15 server.
 */
static bool
mac_equal(const uint8 *a, const uint8 *b)
{
	uint8		diff = 0;

	for (int i = 0; i < RT_AUTH_SIG_LEN; i++)
		diff |= a[i] ^ b[i];
	return diff == 0;
}

/* The secret, checked as verifying and signing both need it. */
static bool
secret_usable(const char *secret, const char **message)
{
	if (secret == NULL || *secret == '\0')
	{
		*message = MSG_NO_SECRET;
		return false;
	}
	/* RFC 7518 3.2: a key at least as long as the hash output */
	if (strlen(secret) < RT_AUTH_MIN_SECRET)
	{
		*message = MSG_SHORT_SECRET;
		return false;
	}
	return true;
}

/* ---- the header and the claims, by common/jsonapi ---- */

/* The members of the header and of the claims read, as bits. */
#define M_ALG		0x01
#define M_TYP		0x02
#define M_CRIT		0x04
#define M_EXP		0x08
#define M_NBF		0x10
#define M_IAT		0x20
#define M_SUB		0x40
#define M_ADMIN		0x80
#define M_RT		0x100

/*
 * The semantic actions' state.  The actions see every value as it begins,
 * at the depth of the container holding it (0 for the part itself); once a
 * reason to refuse is found they do nothing more, and the parser only
 * checks that the rest is JSON.
 */
typedef struct PartState
{
	bool		header;			/* the header, else the claims */
	RtAuthClaims *claims;		/* filled as the claims are read */
	int			depth;			/* objects and arrays open */
	int			member;			/* the part's member whose value comes */
	int			seen;			/* the part's members named so far */
	bool		any;			/* the part's object has a member */
	bool		rt_open;		/* depth 2 is rt's object */
	int			rt_key;			/* there, the key whose value comes */
	int			rt_seen;		/* its keys named so far, as bits */
	bool		values_open;	/* depth 3 is the array of rt_key's values */
	const char *message;		/* the first reason to refuse, if any */
	bool		oom;
} PartState;

static bool
refuse(PartState *st, const char *message)
{
	if (st->message == NULL)
		st->message = message;
	return false;
}

/*
 * A NumericDate as rtevents reads them, from a number's text (JSON by the
 * lexer's checks): no exponent, at most 15 integer digits (31 million
 * years).  *lo and *hi are its floor and ceiling in whole seconds.
 */
static bool
numeric_date(const char *s, int64 *lo, int64 *hi)
{
	bool		neg = (*s == '-');
	bool		frac = false;
	int			digits = 0;
	int64		v = 0;

	if (neg)
		s++;
	for (; isdigit((unsigned char) *s); s++)
	{
		if (++digits > 15)
			return false;
		v = v * 10 + (*s - '0');
	}
	if (*s == '.')
		for (s++; isdigit((unsigned char) *s); s++)
			frac |= (*s != '0');
	if (*s != '\0')
		return false;			/* an exponent */
	*lo = neg ? -v - (frac ? 1 : 0) : v;
	*hi = neg ? -v : v + (frac ? 1 : 0);
	return true;
}

/*
 * The header: alg must be exactly HS256 ("none", HS512 and RS256 are
 * refused, whatever the signature); typ, if given, JWT (RFC 7515 4.1.9: a
 * media type, "application/" optional), so that a token typed for
 * something else (at+jwt, say) signed with the same secret is not taken
 * for one of ours.  crit is refused: it names extensions the verifier must
 * understand, and this one understands none.  kid and the rest are ignored.
 */
static void
header_field(PartState *st, const char *name)
{
	int			m;

	if (st->depth != 1)
		return;
	st->any = true;
	m = strcmp(name, "alg") == 0 ? M_ALG :
		strcmp(name, "typ") == 0 ? M_TYP :
		strcmp(name, "crit") == 0 ? M_CRIT : 0;
	if ((m & M_CRIT) != 0 || (m & st->seen) != 0)
		refuse(st, MSG_HEADER);
	st->seen |= m;
	st->member = m;
}

static void
header_value(PartState *st, const char *token, JsonTokenType type)
{
	if (st->depth == 0 && type != JSON_TOKEN_OBJECT_START)
		refuse(st, MSG_HEADER);
	else if (st->depth == 1 && st->member == M_ALG &&
			 (type != JSON_TOKEN_STRING || strcmp(token, "HS256") != 0))
		refuse(st, MSG_ALG);
	else if (st->depth == 1 && st->member == M_TYP &&
			 (type != JSON_TOKEN_STRING ||
			  (pg_strcasecmp(token, "JWT") != 0 &&
			   pg_strcasecmp(token, "application/jwt") != 0)))
		refuse(st, MSG_HEADER);
}

static void
header_end(PartState *st)
{
	if (st->depth == 0 && !st->any)
		refuse(st, MSG_HEADER);
}

/* The claims: one JSON object. */
static void
claims_field(PartState *st, const char *name)
{
	if (st->depth == 1)
	{
		int			m = strcmp(name, "exp") == 0 ? M_EXP :
			strcmp(name, "nbf") == 0 ? M_NBF :
			strcmp(name, "iat") == 0 ? M_IAT :
			strcmp(name, "sub") == 0 ? M_SUB :
			strcmp(name, "admin") == 0 ? M_ADMIN :
			strcmp(name, "rt") == 0 ? M_RT : 0;

		if ((m & st->seen) != 0)
			refuse(st, MSG_DUPLICATE);
		st->seen |= m;
		st->member = m;
	}
	else if (st->depth == 2 && st->rt_open)
	{
		int			k;

		for (k = 0; k < 4; k++)
			if (strcmp(name, rt_keys[k]) == 0)
				break;
		if (k == 4)
			refuse(st, MSG_RT);
		else if ((st->rt_seen & (1 << k)) != 0)
			refuse(st, MSG_DUPLICATE);
		else
		{
			st->rt_seen |= 1 << k;
			st->rt_key = k;
		}
	}
}

/* A value of an rt key's array. */
static void
rt_value(PartState *st, const char *token, JsonTokenType type)
{
	RtAuthClaims *c = st->claims;
	int			k = st->rt_key;
	size_t		len = type == JSON_TOKEN_STRING ? strlen(token) : 0;

	if (type != JSON_TOKEN_STRING || len == 0 || len > RT_AUTH_VALUE_MAX ||
		c->nallowed[k] == RT_AUTH_MAX_VALUES)
		refuse(st, MSG_RT_VALUES);
	else if (k == 3 && !rt_request_is_uuid(token))
		refuse(st, MSG_RT_UUID);
	else if ((c->allowed[k][c->nallowed[k]] = strdup(token)) == NULL)
	{
		st->oom = true;
		refuse(st, MSG_OOM);
	}
	else
		c->nallowed[k]++;
}

static void
claims_value(PartState *st, const char *token, JsonTokenType type)
{
	RtAuthClaims *c = st->claims;
	int64		lo,
				hi;

	if (st->depth == 0)
	{
		if (type != JSON_TOKEN_OBJECT_START)
			refuse(st, MSG_JSON);
		return;
	}
	if (st->depth == 2 && st->rt_open)
	{
		/* one key of rt: an array of 1 to RT_AUTH_MAX_VALUES strings */
		if (type != JSON_TOKEN_ARRAY_START)
			refuse(st, MSG_RT_VALUES);
		else if ((c->allowed[st->rt_key] =
				  malloc(RT_AUTH_MAX_VALUES * sizeof(char *))) == NULL)
		{
			st->oom = true;
			refuse(st, MSG_OOM);
		}
		else
			st->values_open = true;
		return;
	}
	if (st->depth == 3 && st->values_open)
	{
		rt_value(st, token, type);
		return;
	}
	if (st->depth != 1)
		return;

	switch (st->member)
	{
		case M_EXP:
		case M_NBF:
		case M_IAT:
			if (type != JSON_TOKEN_NUMBER || !numeric_date(token, &lo, &hi))
				refuse(st, MSG_TIME);
			else if (st->member == M_EXP)
				c->exp = lo;	/* the floor: a fraction does not extend it */
			else if (st->member == M_NBF)
			{
				c->nbf = hi;	/* the ceiling: nor does it start early */
				c->has_nbf = true;
			}
			break;
		case M_SUB:
			if (type != JSON_TOKEN_STRING || strlen(token) >= sizeof(c->sub))
				refuse(st, MSG_SUB);
			else
			{
				strlcpy(c->sub, token, sizeof(c->sub));
				c->has_sub = true;
			}
			break;
		case M_ADMIN:
			if (type == JSON_TOKEN_TRUE)
				c->admin = true;
			else if (type != JSON_TOKEN_FALSE)
				refuse(st, MSG_ADMIN);
			break;
		case M_RT:
			if (type != JSON_TOKEN_OBJECT_START)
				refuse(st, MSG_RT);
			else
				st->rt_open = true;
			break;
		default:
			break;				/* a claim rtevents does not read */
	}
}

static void
claims_end(PartState *st)
{
	if (st->depth == 1 && st->rt_open)
	{
		/* {} restricts nothing: surely a mistake */
		if (st->rt_seen == 0)
			refuse(st, MSG_RT);
		st->rt_open = false;
	}
	else if (st->depth == 2 && st->values_open)
	{
		if (st->claims->nallowed[st->rt_key] == 0)
			refuse(st, MSG_RT_VALUES);
		st->values_open = false;
	}
}

/* The parser's actions, for either part. */

static void
on_value(PartState *st, const char *token, JsonTokenType type)
{
	if (st->message != NULL)
		return;
	if (st->header)
		header_value(st, token, type);
	else
		claims_value(st, token, type);
}

static void
on_object_start(void *state)
{
	PartState  *st = state;

	on_value(st, NULL, JSON_TOKEN_OBJECT_START);
	st->depth++;
}

static void
on_array_start(void *state)
{
	PartState  *st = state;

	on_value(st, NULL, JSON_TOKEN_ARRAY_START);
	st->depth++;
}

static void
on_end(void *state)
{
	PartState  *st = state;

	st->depth--;
	if (st->message != NULL)
		return;
	if (st->header)
		header_end(st);
	else
		claims_end(st);
}

static void
on_field(void *state, char *fname, bool isnull)
{
	PartState  *st = state;

	if (st->message != NULL)
		return;
	if (st->header)
		header_field(st, fname);
	else
		claims_field(st, fname);
}

static void
on_scalar(void *state, char *token, JsonTokenType type)
{
	on_value(state, token, type);
}

/*
 * Read one decoded part, NUL-free and UTF-8 (which the parser leaves to
 * its callers to check), nested at most RT_AUTH_MAX_DEPTH deep (checked
 * before parsing, since the parser recurses once per level).  The first
 * reason to refuse wins: a member of the wrong kind before bytes that are
 * not JSON is the reason given.  False with st->message.
 */
static bool
parse_part(PartState *st, char *text, int len)
{
	const char *not_json = st->header ? MSG_HEADER : MSG_JSON;
	JsonLexContext *lex;
	JsonSemAction sem;

	if (pg_encoding_verifymbstr(PG_UTF8, text, len) != len ||
		!rt_json_nesting_at_most(text, len, RT_AUTH_MAX_DEPTH))
		return refuse(st, not_json);

	memset(&sem, 0, sizeof(sem));
	sem.semstate = st;
	sem.object_start = on_object_start;
	sem.object_end = on_end;
	sem.array_start = on_array_start;
	sem.array_end = on_end;
	sem.object_field_start = on_field;
	sem.scalar = on_scalar;
	lex = makeJsonLexContextCstringLen(text, len, PG_UTF8, true);
	if (pg_parse_json(lex, &sem) != JSON_SUCCESS)
		return refuse(st, not_json);
	if (st->message != NULL)
		return false;
	if (st->header)
		return (st->seen & M_ALG) != 0 || refuse(st, MSG_ALG);
	return (st->seen & M_EXP) != 0 || refuse(st, MSG_NO_EXP);
}

void
rt_auth_claims_free(RtAuthClaims *claims)
{
	for (int k = 0; k < 4; k++)
	{
		for (int i = 0; i < claims->nallowed[k]; i++)
			free(claims->allowed[k][i]);
		free(claims->allowed[k]);
	}
	memset(claims, 0, sizeof(*claims));
}

/*
 * The work of rt_auth_verify; rt_token passes check_times false, to check
 * the claims of a token that may be meant for later.  It pallocs in the
 * current memory context and, in a backend, may ereport.
 */
static bool
verify(const char *token, size_t len, const char *secret, bool check_times,
	   int64 now_unix, RtAuthClaims *claims, const char **code,
	   const char **message)
{
	const char *dot1,
			   *dot2;
	char		part[RT_AUTH_PART_MAX];
	uint8		sig[RT_AUTH_SIG_LEN];
	uint8		mac[RT_AUTH_SIG_LEN];
	int			n;
	PartState	st;

	memset(claims, 0, sizeof(*claims));
	*code = "unavailable";
	if (!secret_usable(secret, message))
		return false;

	*code = "bad_token";
	if (len > RT_AUTH_TOKEN_MAX)
	{
		*message = MSG_TOO_LONG;
		return false;
	}
	dot1 = token == NULL ? NULL : memchr(token, '.', len);
	dot2 = dot1 == NULL ? NULL : memchr(dot1 + 1, '.', len - (dot1 + 1 - token));
	if (dot2 == NULL || memchr(dot2 + 1, '.', len - (dot2 + 1 - token)) != NULL ||
		dot1 == token || dot2 == dot1 + 1)
	{
		*message = MSG_SHAPE;
		return false;
	}

	/* The header first: a token for another algorithm gets that reason. */
	if ((n = b64url_decode(token, dot1 - token, part, sizeof(part))) < 0)
	{
		*message = MSG_SHAPE;
		return false;
	}
	memset(&st, 0, sizeof(st));
	st.header = true;
	if (!parse_part(&st, part, n))
	{
		*message = st.message;
		return false;
	}

	/* Then the signature, before a byte of the claims is parsed. */
	if (len - (dot2 + 1 - token) != RT_AUTH_SIG_B64_LEN ||
		b64url_decode(dot2 + 1, RT_AUTH_SIG_B64_LEN, (char *) sig,
					  sizeof(sig)) != RT_AUTH_SIG_LEN)
	{
		*message = MSG_SIGNATURE;
		return false;
	}
	if (!hmac_sha256(secret, token, dot2 - token, mac))
	{
		*code = "unavailable";
		*message = MSG_HMAC;
		return false;
	}
	if (!mac_equal(sig, mac))
	{
		*message = MSG_SIGNATURE;
		return false;
	}

	/* The claims, now known to come from a holder of the secret. */
	if ((n = b64url_decode(dot1 + 1, dot2 - (dot1 + 1), part, sizeof(part))) < 0)
	{
		*message = MSG_SHAPE;
		return false;
	}
	memset(&st, 0, sizeof(st));
	st.claims = claims;
	if (!parse_part(&st, part, n))
	{
		if (st.oom)
			*code = "unavailable";
		*message = st.message;
		rt_auth_claims_free(claims);
		return false;
	}

	if (check_times)
	{
		/* RFC 7519 4.1.4: valid only before exp; 4.1.5: from nbf on. */
		if (now_unix >= claims->exp + RT_AUTH_LEEWAY)
		{
			*code = "token_expired";
			*message = MSG_EXPIRED;
			rt_auth_claims_free(claims);
			return false;
		}
		if (claims->has_nbf && now_unix < claims->nbf - RT_AUTH_LEEWAY)
		{
			*code = "token_not_yet_valid";
			*message = MSG_NOT_YET;
			rt_auth_claims_free(claims);
			return false;
		}
	}
	*code = NULL;
	*message = NULL;
	return true;
}

/*
 * Check a token of len bytes (not NUL-terminated) against secret at
 * now_unix (seconds since 1970).  True with *claims filled: the caller
 * frees them with rt_auth_claims_free.  False with *code (bad_token,
 * token_expired, token_not_yet_valid; unavailable when the server has no
 * usable secret or runs out of memory) and a constant *message; *claims
 * then holds nothing.  Safe in the event loop: see the top of the file.
 */
bool
rt_auth_verify(const char *token, size_t len, const char *secret,
			   int64 now_unix, RtAuthClaims *claims, const char **code,
			   const char **message)
{
#ifdef RT_AUTH_STANDALONE
	return verify(token, len, secret, true, now_unix, claims, code, message);
#else
	MemoryContext old = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool ok = false;
	const char *volatile c = NULL;
	const char *volatile m = NULL;

	memset(claims, 0, sizeof(*claims));
	PG_TRY();
	{
		const char *c1;
		const char *m1;

		if (verify_cxt == NULL)
			verify_cxt = AllocSetContextCreate(TopMemoryContext,
											   "rtevents token",
											   ALLOCSET_SMALL_SIZES);
		MemoryContextSwitchTo(verify_cxt);
		ok = verify(token, len, secret, true, now_unix, claims, &c1, &m1);
		c = c1;
		m = m1;
	}
	PG_CATCH();
	{
		/*
		 * geterrcode() reads the error being handled, which FlushErrorState
		 * then drops: nothing is allocated here, where memory may have run
		 * out.  The claims read before the error are malloc'd: freed.
		 */
		bool		oom = geterrcode() == ERRCODE_OUT_OF_MEMORY;

		MemoryContextSwitchTo(old);
		CurrentResourceOwner = owner;
		FlushErrorState();
		rt_auth_claims_free(claims);
		ok = false;
		c = oom ? "unavailable" : "bad_token";
		m = oom ? MSG_OOM : MSG_UNREADABLE;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	if (verify_cxt != NULL)
		MemoryContextReset(verify_cxt);
	*code = c;
	*message = m;
	return ok;
#endif
}

/*
 * Whether a filter stays inside the claims: for every key the claims
 * restrict, the filter must name that key, with one of the values allowed
 * (organizationId without regard to case, as rt_request_matches compares
 * it).  A filter that leaves a restricted key out would match events of
 * every value, and is refused.  Claims without rt allow any filter.
 */
bool
rt_auth_allows(const RtAuthClaims *claims, const RtRequest *req,
			   const char **message)
{
	static const char *const refusals[4] = {
		"the token allows certain executionId values only: the filter must name one of them",
		"the token allows certain batchId values only: the filter must name one of them",
		"the token allows certain jobId values only: the filter must name one of them",
		"the token allows certain organizationId values only: the filter must name one of them"
	};

	for (int k = 0; k < 4; k++)
	{
		bool		found = false;

		if (claims->allowed[k] == NULL)
			continue;
		if (req->keys[k] != NULL)
			for (int i = 0; i < claims->nallowed[k] && !found; i++)
				found = (k == 3 ?
						 pg_strcasecmp(req->keys[k], claims->allowed[k][i]) :
						 strcmp(req->keys[k], claims->allowed[k][i])) == 0;
		if (!found)
		{
			*message = refusals[k];
			return false;
		}
	}
	return true;
}

/*
 * Sign a claims object (len bytes of UTF-8 JSON) as header.payload.signature
 * into token, NUL-terminated.  False when the secret is unusable, the
 * payload empty, HMAC fails, or the token would not fit in size bytes or
 * RT_AUTH_TOKEN_MAX.  The claims are not checked (rt_token checks them
 * with verify).  For rt_token and the tests: in a backend, pg_hmac_create()
 * may ereport, which the event loop could not take (rt_auth_verify's
 * PG_TRY is not here).
 */
bool
rt_auth_sign(const char *secret, const char *payload, size_t len,
			 char *token, size_t size)
{
	size_t		header_len = sizeof(RT_AUTH_HEADER_B64) - 1;
	char		encoded[RT_AUTH_B64_MAX];
	char		sig[RT_AUTH_B64_MAX];
	uint8		mac[RT_AUTH_SIG_LEN];
	int			n;
	size_t		total;
	const char *message;

	if (!secret_usable(secret, &message) || len == 0 || len > RT_AUTH_TOKEN_MAX)
		return false;
	if ((n = b64url_encode(payload, len, encoded, sizeof(encoded))) < 0)
		return false;
	total = header_len + 1 + n + 1 + RT_AUTH_SIG_B64_LEN;
	if (total > RT_AUTH_TOKEN_MAX || total + 1 > size)
		return false;
	memcpy(token, RT_AUTH_HEADER_B64 ".", header_len + 1);
	memcpy(token + header_len + 1, encoded, n);
	n += header_len + 1;
	if (!hmac_sha256(secret, token, n, mac) ||
		b64url_encode((const char *) mac, sizeof(mac), sig, sizeof(sig)) !=
		RT_AUTH_SIG_B64_LEN)
		return false;
	token[n++] = '.';
	memcpy(token + n, sig, RT_AUTH_SIG_B64_LEN + 1);
	return true;
}

#ifndef RT_AUTH_STANDALONE

PG_FUNCTION_INFO_V1(rt_token);

static bool
has_key(Jsonb *jb, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	return findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &k) != NULL;
}

/*
 * rt_token(claims jsonb, ttl interval DEFAULT '1 hour') RETURNS text
 *
 * An HS256 token for the claims, signed with rtevents.jwt_secret.  exp is
 * now + ttl and iat now (the clock, not the transaction's start), unless
 * the claims give their own: claims' exp wins over ttl, so that a token can
 * be minted for a fixed end.  Claims the worker would refuse fail here,
 * with the worker's reason.  Not granted to PUBLIC: whoever may run it may
 * mint any token, so it is for the roles that issue them.
 */
Datum
rt_token(PG_FUNCTION_ARGS)
{
	Jsonb	   *claims;
	Interval   *ttl;
	const char *secret = rt_jwt_secret;
	const char *message;
	const char *code;
	TimestampTz now,
				end;
	StringInfoData extra;
	Jsonb	   *merged;
	char	   *json;
	char	   *utf8;
	char	   *token;
	RtAuthClaims checked;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("claims must be a JSON object")));
	claims = PG_GETARG_JSONB_P(0);
	if (JB_ROOT_IS_SCALAR(claims) || !JB_ROOT_IS_OBJECT(claims))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("claims must be a JSON object")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ttl must be at least 1 second")));
	ttl = PG_GETARG_INTERVAL_P(1);

	if (!secret_usable(secret, &message))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot sign a token: %s", message),
				 errhint("Set rtevents.jwt_secret, at least 32 bytes, in postgresql.conf and reload.")));

	now = GetCurrentTimestamp();
	end = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
												  TimestampTzGetDatum(now),
												  IntervalPGetDatum(ttl)));
	if (end - now < USECS_PER_SEC)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ttl must be at least 1 second")));

	/* What the claims leave out; the claims win where both have a key. */
	initStringInfo(&extra);
	appendStringInfoChar(&extra, '{');
	if (!has_key(claims, "exp"))
		appendStringInfo(&extra, "\"exp\": " INT64_FORMAT,
						 (int64) timestamptz_to_time_t(end));
	if (!has_key(claims, "iat"))
		appendStringInfo(&extra, "%s\"iat\": " INT64_FORMAT,
						 extra.len > 1 ? ", " : "",
						 (int64) timestamptz_to_time_t(now));
	appendStringInfoChar(&extra, '}');
	merged = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat,
												DirectFunctionCall1(jsonb_in, CStringGetDatum(extra.data)),
												JsonbPGetDatum(claims)));

	/* JWT is UTF-8 whatever the server encoding. */
	json = JsonbToCString(NULL, &merged->root, VARSIZE(merged));
	utf8 = pg_server_to_any(json, strlen(json), PG_UTF8);

	token = palloc(RT_AUTH_TOKEN_MAX + 1);
	if (!rt_auth_sign(secret, utf8, strlen(utf8), token, RT_AUTH_TOKEN_MAX + 1))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("the claims make a token longer than %d bytes",
						RT_AUTH_TOKEN_MAX)));

	if (!verify(token, strlen(token), secret, false, 0, &checked, &code,
				&message))
		ereport(ERROR,
				(errcode(strcmp(code, "unavailable") == 0 ?
						 ERRCODE_OUT_OF_MEMORY : ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the rtevents worker would refuse this token"),
				 errdetail("%s", message)));
	rt_auth_claims_free(&checked);

	PG_RETURN_TEXT_P(cstring_to_text(token));
}

#endif							/* RT_AUTH_STANDALONE */

/*-------------------------------------------------------------------------
 *
 * fuzz_token.c
 *		libFuzzer harness for auth.c: tokens checked by rt_auth_verify and
 *		filters by rt_auth_allows, as the worker's event loop calls them.
 *
 * Random bytes almost never carry a valid signature, so the first byte of
 * the input picks what the rest is:
 *
 *	0	the token itself: the shape, base64url and header checks, the HMAC;
 *	1	the claims: signed by rt_auth_sign, so the claims parser is reached;
 *	2	header, a newline, then claims, signed here with any header, so the
 *		header parser is reached behind a valid signature.
 *
 * Properties checked, on every input:
 *  - a refusal has one of the codes the transports know and a constant
 *    message that can go into a JSON string unescaped (printable ASCII, no
 *    quote or backslash), and leaves no claims behind;
 *  - an accepted token: its header and claims are JSON by Postgres' own
 *    parser (common/jsonapi) too, the claims an object; exp and nbf hold
 *    at the time checked; every rt key holds 1 to 100 values of 1 to 200
 *    bytes without NUL, UUIDs for organizationId; sub fits;
 *  - an accepted token with any one byte changed, or under another secret,
 *    is refused;
 *  - rt_auth_allows agrees with a model: a filter that names every
 *    restricted key with an allowed value is allowed; leaving any one of
 *    them out, or naming a value not allowed, is refused; a filter made of
 *    input bytes gets the model's answer;
 *  - a token made by rt_auth_sign of claims rt_auth_verify accepts is never
 *    refused for its shape or signature;
 *  - nothing leaks (LeakSanitizer: rt_auth_claims_free frees every value),
 *    nothing overflows (ASan, UBSan).
 *
 * auth.c reads JSON with Postgres' common/jsonapi (the frontend build in
 * libpgcommon), which pallocs: that goes to support.c's arena, reset after
 * each input as rt_auth_verify resets its memory context in the worker.
 *
 * Tokens are bounded to 4096 bytes (RT_AUTH_TOKEN_MAX); run with
 * -max_len=5000 to cover the bound.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"

#include "rtevents.h"

#include "support.c"

/* support.c's CHECK wants a message; this harness's, below, does not */
#undef CHECK

#define SECRET		"fuzz-secret-0123456789abcdef-0123"
#define OTHER		"fuzz-secret-0123456789abcdef-0124"
#define NOW			1700000000

#define CHECK(cond) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "fuzz_token: property failed: %s (line %d)\n", \
					#cond, __LINE__); \
			abort(); \
		} \
	} while (0)

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
b64url(const uint8_t *in, size_t len, char *out)
{
	static const char chars[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t		n = 0;
	uint32		acc = 0;
	int			bits = 0;

	for (size_t i = 0; i < len; i++)
	{
		acc = (acc << 8) | in[i];
		bits += 8;
		while (bits >= 6)
		{
			bits -= 6;
			out[n++] = chars[(acc >> bits) & 63];
		}
	}
	if (bits > 0)
		out[n++] = chars[(acc << (6 - bits)) & 63];
	out[n] = '\0';
}

/* Whether Postgres' JSON parser takes these bytes as JSON. */
static bool
pg_json_ok(const char *s, size_t len)
{
	JsonLexContext *lex;
	JsonParseErrorType r;

	/* the lexer reads a NUL as the end: a NUL inside must not pass */
	if (memchr(s, '\0', len) != NULL)
		return false;
	lex = makeJsonLexContextCstringLen((char *) s, (int) len, PG_UTF8, false);
	r = pg_parse_json(lex, &nullSemAction);
	pfree(lex);
	return r == JSON_SUCCESS;
}

/* Decode one base64url part back, for pg_json_ok (already known canonical). */
static size_t
unb64url(const char *in, size_t len, char *out)
{
	uint32		acc = 0;
	int			bits = 0;
	size_t		n = 0;

	for (size_t i = 0; i < len; i++)
	{
		const char *chars =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
		const char *p = strchr(chars, in[i]);

		CHECK(p != NULL && in[i] != '\0');
		acc = (acc << 6) | (uint32) (p - chars);
		bits += 6;
		if (bits >= 8)
		{
			bits -= 8;
			out[n++] = (char) (acc >> bits);
		}
	}
	return n;
}

static bool
is_uuid(const char *s)
{
	static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";

	if (strlen(s) != sizeof(shape) - 1)
		return false;
	for (int i = 0; shape[i] != '\0'; i++)
		if (shape[i] == '-' ? s[i] != '-' :
			!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') ||
			  (s[i] >= 'A' && s[i] <= 'F')))
			return false;
	return true;
}

static bool
same(int k, const char *a, const char *b)
{
	return (k == 3 ? pg_strcasecmp(a, b) : strcmp(a, b)) == 0;
}

static bool
model_allows(const RtAuthClaims *c, const RtRequest *r)
{
	for (int k = 0; k < 4; k++)
	{
		bool		found = false;

		if (c->allowed[k] == NULL)
			continue;
		for (int i = 0; r->keys[k] != NULL && i < c->nallowed[k]; i++)
			found |= same(k, r->keys[k], c->allowed[k][i]);
		if (!found)
			return false;
	}
	return true;
}

static bool
allows(const RtAuthClaims *c, RtRequest *r)
{
	const char *message = NULL;
	bool		result = rt_auth_allows(c, r, &message);

	if (!result)
	{
		CHECK(message != NULL);
		for (const char *p = message; *p; p++)
			CHECK(*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\');
	}
	CHECK(result == model_allows(c, r));
	return result;
}

static void
check_refusal(const char *code, const char *message, const RtAuthClaims *c)
{
	CHECK(code != NULL && message != NULL);
	CHECK(strcmp(code, "bad_token") == 0 || strcmp(code, "token_expired") == 0 ||
		  strcmp(code, "token_not_yet_valid") == 0 ||
		  strcmp(code, "unavailable") == 0);
	for (const char *p = message; *p; p++)
		CHECK(*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\');
	for (int k = 0; k < 4; k++)
		CHECK(c->allowed[k] == NULL && c->nallowed[k] == 0);
}

/* What an accepted token must be, and what rt_auth_allows must do with it. */
static void
check_accepted(const char *token, size_t len, RtAuthClaims *c,
			   const uint8_t *data, size_t size)
{
	static char buf[RT_AUTH_TOKEN_MAX];
	const char *dot1 = memchr(token, '.', len);
	const char *dot2 = memchr(dot1 + 1, '.', len - (dot1 + 1 - token));
	size_t		n;
	RtRequest	r;
	char	   *copy;
	const char *code,
			   *message;
	RtAuthClaims other;

	CHECK(len <= RT_AUTH_TOKEN_MAX);
	n = unb64url(token, dot1 - token, buf);
	CHECK(pg_json_ok(buf, n));
	n = unb64url(dot1 + 1, dot2 - dot1 - 1, buf);
	CHECK(pg_json_ok(buf, n));
	CHECK(NOW < c->exp + RT_AUTH_LEEWAY);
	CHECK(!c->has_nbf || NOW >= c->nbf - RT_AUTH_LEEWAY);
	CHECK(strlen(c->sub) <= 200 && (c->has_sub || c->sub[0] == '\0'));
	for (int k = 0; k < 4; k++)
	{
		CHECK((c->allowed[k] == NULL) == (c->nallowed[k] == 0));
		CHECK(c->nallowed[k] >= 0 && c->nallowed[k] <= RT_AUTH_MAX_VALUES);
		for (int i = 0; i < c->nallowed[k]; i++)
		{
			size_t		l = strlen(c->allowed[k][i]);

			CHECK(l >= 1 && l <= 200);
			CHECK(k != 3 || is_uuid(c->allowed[k][i]));
		}
	}

	/* one byte changed anywhere: refused */
	copy = malloc(len);
	memcpy(copy, token, len);
	{
		size_t		at = (size_t) (data[size / 2] | (size > 2 ? data[size - 1] << 8 : 0)) % len;

		copy[at] ^= (char) (1 + data[size - 1] % 255);
		CHECK(!rt_auth_verify(copy, len, SECRET, NOW, &other, &code, &message));
		check_refusal(code, message, &other);
	}
	free(copy);
	/* another secret: refused */
	CHECK(!rt_auth_verify(token, len, OTHER, NOW, &other, &code, &message));
	CHECK(strcmp(code, "bad_token") == 0);

	/* every restricted key named with its first value: allowed */
	memset(&r, 0, sizeof(r));
	for (int k = 0; k < 4; k++)
		r.keys[k] = c->allowed[k] ? c->allowed[k][0] : NULL;
	CHECK(allows(c, &r));
	for (int k = 0; k < 4; k++)
	{
		char	   *keep = r.keys[k];
		char		notin[210];

		if (c->allowed[k] == NULL)
		{
			/* an unrestricted key, named or not, changes nothing */
			r.keys[k] = "anything";
			CHECK(allows(c, &r));
			r.keys[k] = NULL;
			continue;
		}
		/* the key left out: refused */
		r.keys[k] = NULL;
		CHECK(!allows(c, &r));
		/* a value not allowed: refused (the model finds one not listed) */
		snprintf(notin, sizeof(notin), "%s", keep);
		for (int tries = 0; tries < 300; tries++)
		{
			bool		listed = false;

			for (int i = 0; i < c->nallowed[k]; i++)
				listed |= same(k, notin, c->allowed[k][i]);
			if (!listed)
				break;
			notin[tries % 200] = (char) ('g' + tries / 200);
			notin[200] = '\0';
		}
		r.keys[k] = notin;
		CHECK(!allows(c, &r));
		r.keys[k] = keep;
	}

	/* a filter of input bytes: the model's answer */
	memset(&r, 0, sizeof(r));
	{
		char		vals[4][201];
		size_t		pos = 0;

		for (int k = 0; k < 4 && pos < size; k++)
		{
			size_t		l = data[pos++] % 40;

			if (l == 0)
				continue;
			if (l > size - pos)
				l = size - pos;
			memcpy(vals[k], data + pos, l);
			vals[k][l] = '\0';
			pos += l;
			r.keys[k] = vals[k];
		}
		(void) allows(c, &r);
	}
}

static void
one_input(const uint8_t *data, size_t size)
{
	static char token[2 * RT_AUTH_TOKEN_MAX + 256];
	const char *in;
	size_t		len;
	RtAuthClaims c;
	const char *code,
			   *message;
	int			mode;

	if (size < 1)
		return;
	mode = data[0] % 3;
	in = (const char *) data + 1;
	len = size - 1;

	if (mode == 0)
	{
		/* the token, in a buffer of exactly its length (not NUL-terminated) */
		char	   *t = malloc(len ? len : 1);

		memcpy(t, in, len);
		if (rt_auth_verify(t, len, SECRET, NOW, &c, &code, &message))
		{
			CHECK(code == NULL);
			check_accepted(t, len, &c, data, size);
			rt_auth_claims_free(&c);
		}
		else
			check_refusal(code, message, &c);
		free(t);
		return;
	}

	if (mode == 1)
	{
		if (!rt_auth_sign(SECRET, in, len, token, sizeof(token)))
		{
			/* only when empty or it would not fit */
			CHECK(len == 0 || len > 3000);
			return;
		}
	}
	else
	{
		/* header \n claims, signed here whatever the header says */
		const char *nl = memchr(in, '\n', len);
		size_t		hlen = nl ? (size_t) (nl - in) : len;
		size_t		n;
		unsigned char mac[32];
		unsigned int mac_len;

		if (len > RT_AUTH_TOKEN_MAX)
			return;
		b64url((const uint8_t *) in, hlen, token);
		n = strlen(token);
		token[n++] = '.';
		if (nl != NULL)
			b64url((const uint8_t *) nl + 1, len - hlen - 1, token + n);
		else
			token[n] = '\0';
		n = strlen(token);
		HMAC(EVP_sha256(), SECRET, (int) strlen(SECRET),
			 (unsigned char *) token, n, mac, &mac_len);
		token[n++] = '.';
		b64url(mac, mac_len, token + n);
	}

	len = strlen(token);
	if (rt_auth_verify(token, len, SECRET, NOW, &c, &code, &message))
	{
		CHECK(code == NULL);
		check_accepted(token, len, &c, data, size);
		rt_auth_claims_free(&c);
	}
	else
	{
		check_refusal(code, message, &c);
		/* signed properly: never refused for the signature */
		CHECK(strcmp(message, "the token's signature does not match") != 0);
		if (mode == 1)
			CHECK(strstr(message, "three base64url parts") == NULL &&
				  strstr(message, "alg") == NULL &&
				  strstr(message, "header") == NULL);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	one_input(data, size);
	fuzz_reset();
	return 0;
}

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
 * The worker's half, rt_auth_verify() and rt_auth_allows(), runs inside the
 * libwebsockets event loop, so it never ereports, never pallocs and never
 * longjmps: it decodes into fixed buffers, parses JSON with a small strict
 * parser of its own (bounded length and nesting; duplicate claims and
 * escaped NULs refused, so that no other JWT library can read a different
 * claim set out of the same bytes), and returns claims in malloc'd memory.
 *
 * The HMAC is OpenSSL's one-shot HMAC(), the same code Postgres' own
 * pg_hmac_*() wraps when built with OpenSSL.  pg_hmac_create() itself cannot
 * be used here: in a backend it allocates in TopMemoryContext (ereport on
 * out of memory) and registers with CurrentResourceOwner, which the server
 * worker, outside any transaction, does not have.
 *
 * The SQL half, rt_token(), signs with the same code, then checks its own
 * token with the verifier, so that claims the worker would refuse fail at
 * mint time with the worker's reason.  It is left out of the unit test and
 * fuzz builds (RT_AUTH_STANDALONE), which have no backend to link.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <stdlib.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "mb/pg_wchar.h"

#include "rtevents.h"

#ifndef RT_AUTH_STANDALONE
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#endif

#define RT_AUTH_MAX_DEPTH	8		/* JSON nesting, the claims object included */
#define RT_AUTH_VALUE_MAX	200		/* as request.c's filter values */
#define RT_AUTH_SIG_LEN		32		/* HMAC-SHA256 */
#define RT_AUTH_SIG_B64_LEN 43		/* 32 bytes, base64url, no padding */

/* The only header rtevents writes: {"alg":"HS256","typ":"JWT"} */
#define RT_AUTH_HEADER_B64	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"

/* Decoded parts fit in this: 3 bytes per 4 characters of the whole token. */
#define RT_AUTH_PART_MAX	(RT_AUTH_TOKEN_MAX / 4 * 3 + 3)

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
#define MSG_OOM			"out of memory"

/* ---- base64url (RFC 4648 section 5), strict ---- */

static const char b64url_chars[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int
b64url_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/*
 * Decode len characters into out (size bytes at least len / 4 * 3 + 2).
 * JWS forbids padding; a length of 1 mod 4 cannot be base64, and the bits
 * the last character carries beyond the data must be zero.  Refusing
 * everything else makes the encoding canonical: one token, one spelling.
 * Returns the decoded length, or -1.
 */
static int
b64url_decode(const char *in, size_t len, uint8 *out, size_t size)
{
	uint32		acc = 0;
	int			bits = 0;
	size_t		n = 0;

	if (len % 4 == 1 || len / 4 * 3 + 2 > size)
		return -1;
	for (size_t i = 0; i < len; i++)
	{
		int			v = b64url_value((unsigned char) in[i]);

		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32) v;
		bits += 6;
		if (bits >= 8)
		{
			bits -= 8;
			out[n++] = (uint8) (acc >> bits);
		}
	}
	if ((acc & ((1U << bits) - 1)) != 0)
		return -1;
	return (int) n;
}

/* Encode len bytes, unpadded, NUL-terminated; out has room (checked by caller). */
static size_t
b64url_encode(const uint8 *in, size_t len, char *out)
{
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
			out[n++] = b64url_chars[(acc >> bits) & 63];
		}
	}
	if (bits > 0)
		out[n++] = b64url_chars[(acc << (6 - bits)) & 63];
	out[n] = '\0';
	return n;
}

static size_t
b64url_len(size_t len)
{
	return len / 3 * 4 + (len % 3 == 0 ? 0 : len % 3 + 1);
}

/* ---- HMAC-SHA256 ---- */

static bool
hmac_sha256(const char *secret, const char *data, size_t len,
			uint8 mac[RT_AUTH_SIG_LEN])
{
	unsigned int mac_len = 0;

	if (HMAC(EVP_sha256(), secret, (int) strlen(secret),
			 (const unsigned char *) data, len, mac, &mac_len) == NULL)
		return false;
	return mac_len == RT_AUTH_SIG_LEN;
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

/* ---- JSON, strict and bounded (RFC 8259) ---- */

typedef struct JsonIn
{
	const char *p;
	const char *end;
} JsonIn;

static void
skip_ws(JsonIn *in)
{
	while (in->p < in->end &&
		   (*in->p == ' ' || *in->p == '\t' || *in->p == '\n' || *in->p == '\r'))
		in->p++;
}

/* Consume c, after any whitespace. */
static bool
take(JsonIn *in, char c)
{
	skip_ws(in);
	if (in->p < in->end && *in->p == c)
	{
		in->p++;
		return true;
	}
	return false;
}

static bool
peek(JsonIn *in, char c)
{
	skip_ws(in);
	return in->p < in->end && *in->p == c;
}

static bool
hex4(JsonIn *in, uint32 *cp)
{
	*cp = 0;
	if (in->end - in->p < 4)
		return false;
	for (int i = 0; i < 4; i++)
	{
		unsigned char c = (unsigned char) *in->p++;

		if (!isxdigit(c))
			return false;
		*cp = (*cp << 4) | (uint32) (isdigit(c) ? c - '0' : (tolower(c) - 'a' + 10));
	}
	return true;
}

/* Append a byte to out if it fits; *len counts every byte regardless. */
static void
put(char *out, size_t size, size_t *len, char c)
{
	if (out != NULL && *len + 1 < size)
		out[*len] = c;
	(*len)++;
}

/*
 * A string, after whitespace.  Its unescaped value goes to out when out is
 * not NULL, NUL-terminated if it fits in size bytes; *len is its length
 * either way, so len >= size means it did not fit.  Refuses bad UTF-8, raw
 * control characters, lone surrogates, and \u0000, which would end a C
 * string early: "e1\u0000x" must not pass for "e1".
 */
static bool
json_string(JsonIn *in, char *out, size_t size, size_t *len)
{
	*len = 0;
	if (!take(in, '"'))
		return false;
	while (in->p < in->end)
	{
		unsigned char c = (unsigned char) *in->p;

		if (c == '"')
		{
			in->p++;
			if (out != NULL && size > 0)
				out[*len < size ? *len : size - 1] = '\0';
			return true;
		}
		if (c < 0x20)
			return false;
		if (c >= 0x80)
		{
			int			l = pg_utf_mblen((const unsigned char *) in->p);

			if (l > in->end - in->p ||
				!pg_utf8_islegal((const unsigned char *) in->p, l))
				return false;
			for (int i = 0; i < l; i++)
				put(out, size, len, *in->p++);
			continue;
		}
		in->p++;
		if (c != '\\')
		{
			put(out, size, len, (char) c);
			continue;
		}
		if (in->p >= in->end)
			return false;
		c = (unsigned char) *in->p++;
		switch (c)
		{
			case '"':
			case '\\':
			case '/':
				put(out, size, len, (char) c);
				break;
			case 'b':
				put(out, size, len, '\b');
				break;
			case 'f':
				put(out, size, len, '\f');
				break;
			case 'n':
				put(out, size, len, '\n');
				break;
			case 'r':
				put(out, size, len, '\r');
				break;
			case 't':
				put(out, size, len, '\t');
				break;
			case 'u':
				{
					uint32		cp,
								lo;

					if (!hex4(in, &cp) || cp == 0 || (cp >= 0xDC00 && cp <= 0xDFFF))
						return false;
					if (cp >= 0xD800 && cp <= 0xDBFF)
					{
						if (in->end - in->p < 2 || in->p[0] != '\\' || in->p[1] != 'u')
							return false;
						in->p += 2;
						if (!hex4(in, &lo) || lo < 0xDC00 || lo > 0xDFFF)
							return false;
						cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
					}
					if (cp < 0x80)
						put(out, size, len, (char) cp);
					else if (cp < 0x800)
					{
						put(out, size, len, (char) (0xC0 | (cp >> 6)));
						put(out, size, len, (char) (0x80 | (cp & 0x3F)));
					}
					else if (cp < 0x10000)
					{
						put(out, size, len, (char) (0xE0 | (cp >> 12)));
						put(out, size, len, (char) (0x80 | ((cp >> 6) & 0x3F)));
						put(out, size, len, (char) (0x80 | (cp & 0x3F)));
					}
					else
					{
						put(out, size, len, (char) (0xF0 | (cp >> 18)));
						put(out, size, len, (char) (0x80 | ((cp >> 12) & 0x3F)));
						put(out, size, len, (char) (0x80 | ((cp >> 6) & 0x3F)));
						put(out, size, len, (char) (0x80 | (cp & 0x3F)));
					}
				}
				break;
			default:
				return false;
		}
	}
	return false;
}

/*
 * A number, after whitespace, checked against JSON's grammar.  *time says
 * whether it can be a NumericDate as rtevents reads them: no exponent, at
 * most 15 integer digits (31 million years); then *lo and *hi are its floor
 * and ceiling in whole seconds.
 */
static bool
json_number(JsonIn *in, bool *time, int64 *lo, int64 *hi)
{
	bool		neg = false,
				frac = false;
	int			digits = 0;
	int64		v = 0;

	skip_ws(in);
	*time = true;
	if (in->p < in->end && *in->p == '-')
	{
		neg = true;
		in->p++;
	}
	if (in->p >= in->end || !isdigit((unsigned char) *in->p))
		return false;
	if (*in->p == '0')
	{
		in->p++;
		digits = 1;
	}
	else
		while (in->p < in->end && isdigit((unsigned char) *in->p))
		{
			if (++digits <= 15)
				v = v * 10 + (*in->p - '0');
			in->p++;
		}
	if (digits > 15)
		*time = false;
	if (in->p < in->end && *in->p == '.')
	{
		in->p++;
		if (in->p >= in->end || !isdigit((unsigned char) *in->p))
			return false;
		while (in->p < in->end && isdigit((unsigned char) *in->p))
			frac |= (*in->p++ != '0');
	}
	if (in->p < in->end && (*in->p == 'e' || *in->p == 'E'))
	{
		*time = false;
		in->p++;
		if (in->p < in->end && (*in->p == '+' || *in->p == '-'))
			in->p++;
		if (in->p >= in->end || !isdigit((unsigned char) *in->p))
			return false;
		while (in->p < in->end && isdigit((unsigned char) *in->p))
			in->p++;
	}
	*lo = neg ? -v - (frac ? 1 : 0) : v;
	*hi = neg ? -v : v + (frac ? 1 : 0);
	return true;
}

static bool
json_literal(JsonIn *in, const char *word)
{
	size_t		n = strlen(word);

	skip_ws(in);
	if ((size_t) (in->end - in->p) < n || memcmp(in->p, word, n) != 0)
		return false;
	in->p += n;
	return true;
}

/*
 * Any value, checked and skipped.  depth is the nesting of the container
 * holding it; a container in it would be depth + 1.
 */
static bool
json_skip(JsonIn *in, int depth)
{
	size_t		len;
	bool		time;
	int64		lo,
				hi;

	skip_ws(in);
	if (in->p >= in->end)
		return false;
	switch (*in->p)
	{
		case '"':
			return json_string(in, NULL, 0, &len);
		case 't':
			return json_literal(in, "true");
		case 'f':
			return json_literal(in, "false");
		case 'n':
			return json_literal(in, "null");
		case '{':
		case '[':
			{
				bool		object = (*in->p == '{');
				char		close = object ? '}' : ']';

				if (depth + 1 > RT_AUTH_MAX_DEPTH)
					return false;
				in->p++;
				if (take(in, close))
					return true;
				do
				{
					if (object && (!json_string(in, NULL, 0, &len) || !take(in, ':')))
						return false;
					if (!json_skip(in, depth + 1))
						return false;
				} while (take(in, ','));
				return take(in, close);
			}
		default:
			return json_number(in, &time, &lo, &hi);
	}
}

/* ---- claims ---- */

typedef struct Parse
{
	JsonIn		in;
	const char *message;		/* the first reason to refuse */
	bool		oom;
} Parse;

static bool
refuse(Parse *ps, const char *message)
{
	if (ps->message == NULL)
		ps->message = message;
	return false;
}

/* One key of rt: an array of 1 to RT_AUTH_MAX_VALUES strings. */
static bool
parse_rt_values(Parse *ps, RtAuthClaims *claims, int key)
{
	char		value[RT_AUTH_VALUE_MAX + 1];
	size_t		len;
	char	  **values;

	if (!take(&ps->in, '['))
		return refuse(ps, MSG_RT_VALUES);
	if ((values = malloc(RT_AUTH_MAX_VALUES * sizeof(char *))) == NULL)
	{
		ps->oom = true;
		return refuse(ps, MSG_OOM);
	}
	claims->allowed[key] = values;
	claims->nallowed[key] = 0;
	if (peek(&ps->in, ']'))
		return refuse(ps, MSG_RT_VALUES);
	do
	{
		if (!peek(&ps->in, '"'))
			return refuse(ps, json_skip(&ps->in, 3) ? MSG_RT_VALUES : MSG_JSON);
		if (!json_string(&ps->in, value, sizeof(value), &len))
			return refuse(ps, MSG_JSON);
		if (len == 0 || len > RT_AUTH_VALUE_MAX ||
			claims->nallowed[key] == RT_AUTH_MAX_VALUES)
			return refuse(ps, MSG_RT_VALUES);
		if (key == 3 && !rt_request_is_uuid(value))
			return refuse(ps, MSG_RT_UUID);
		if ((values[claims->nallowed[key]] = strdup(value)) == NULL)
		{
			ps->oom = true;
			return refuse(ps, MSG_OOM);
		}
		claims->nallowed[key]++;
	} while (take(&ps->in, ','));
	return take(&ps->in, ']') || refuse(ps, MSG_JSON);
}

static bool
parse_rt(Parse *ps, RtAuthClaims *claims)
{
	char		key[32];
	size_t		len;

	if (!peek(&ps->in, '{'))
		return refuse(ps, json_skip(&ps->in, 1) ? MSG_RT : MSG_JSON);
	ps->in.p++;
	if (take(&ps->in, '}'))
		return refuse(ps, MSG_RT);	/* {} restricts nothing: surely a mistake */
	do
	{
		int			k;

		if (!json_string(&ps->in, key, sizeof(key), &len) || !take(&ps->in, ':'))
			return refuse(ps, MSG_JSON);
		for (k = 0; k < 4; k++)
			if (len < sizeof(key) && strcmp(key, rt_keys[k]) == 0)
				break;
		if (k == 4)
			return refuse(ps, MSG_RT);
		if (claims->allowed[k] != NULL)
			return refuse(ps, MSG_DUPLICATE);
		if (!parse_rt_values(ps, claims, k))
			return false;
	} while (take(&ps->in, ','));
	return take(&ps->in, '}') || refuse(ps, MSG_JSON);
}

/* A NumericDate claim: exp, nbf or iat. */
static bool
parse_time(Parse *ps, int64 *lo, int64 *hi)
{
	bool		time;

	skip_ws(&ps->in);
	if (ps->in.p >= ps->in.end ||
		!(*ps->in.p == '-' || isdigit((unsigned char) *ps->in.p)))
		return refuse(ps, json_skip(&ps->in, 1) ? MSG_TIME : MSG_JSON);
	if (!json_number(&ps->in, &time, lo, hi))
		return refuse(ps, MSG_JSON);
	return time || refuse(ps, MSG_TIME);
}

/* The payload: one JSON object, the claims. */
static bool
parse_claims(Parse *ps, RtAuthClaims *claims)
{
	enum
	{
		SEEN_EXP = 1, SEEN_NBF = 2, SEEN_IAT = 4, SEEN_SUB = 8,
		SEEN_ADMIN = 16, SEEN_RT = 32
	};
	int			seen = 0;
	char		name[8];
	size_t		len;
	int64		lo,
				hi;

	if (!take(&ps->in, '{'))
		return refuse(ps, MSG_JSON);
	if (!take(&ps->in, '}'))
	{
		do
		{
			int			bit = 0;

			if (!json_string(&ps->in, name, sizeof(name), &len) ||
				!take(&ps->in, ':'))
				return refuse(ps, MSG_JSON);
			if (len >= sizeof(name))
				name[0] = '\0';	/* longer than any claim read here */
			bit = strcmp(name, "exp") == 0 ? SEEN_EXP :
				strcmp(name, "nbf") == 0 ? SEEN_NBF :
				strcmp(name, "iat") == 0 ? SEEN_IAT :
				strcmp(name, "sub") == 0 ? SEEN_SUB :
				strcmp(name, "admin") == 0 ? SEEN_ADMIN :
				strcmp(name, "rt") == 0 ? SEEN_RT : 0;
			if (bit != 0 && (seen & bit) != 0)
				return refuse(ps, MSG_DUPLICATE);
			seen |= bit;
			switch (bit)
			{
				case SEEN_EXP:
					/* the floor: a fraction of a second does not extend it */
					if (!parse_time(ps, &claims->exp, &hi))
						return false;
					break;
				case SEEN_NBF:
					/* the ceiling: nor does it start early */
					if (!parse_time(ps, &lo, &claims->nbf))
						return false;
					claims->has_nbf = true;
					break;
				case SEEN_IAT:
					if (!parse_time(ps, &lo, &hi))
						return false;
					break;
				case SEEN_SUB:
					if (!peek(&ps->in, '"'))
						return refuse(ps, json_skip(&ps->in, 1) ? MSG_SUB : MSG_JSON);
					if (!json_string(&ps->in, claims->sub, sizeof(claims->sub), &len))
						return refuse(ps, MSG_JSON);
					if (len >= sizeof(claims->sub))
						return refuse(ps, MSG_SUB);
					claims->has_sub = true;
					break;
				case SEEN_ADMIN:
					if (peek(&ps->in, 't') && json_literal(&ps->in, "true"))
						claims->admin = true;
					else if (!(peek(&ps->in, 'f') && json_literal(&ps->in, "false")))
						return refuse(ps, json_skip(&ps->in, 1) ? MSG_ADMIN : MSG_JSON);
					break;
				case SEEN_RT:
					if (!parse_rt(ps, claims))
						return false;
					break;
				default:
					if (!json_skip(&ps->in, 1))
						return refuse(ps, MSG_JSON);
					break;
			}
		} while (take(&ps->in, ','));
		if (!take(&ps->in, '}'))
			return refuse(ps, MSG_JSON);
	}
	skip_ws(&ps->in);
	if (ps->in.p != ps->in.end)
		return refuse(ps, MSG_JSON);
	if ((seen & SEEN_EXP) == 0)
		return refuse(ps, MSG_NO_EXP);
	return true;
}

/*
 * The header: alg must be exactly HS256 ("none", HS512 and RS256 are
 * refused, whatever the signature); typ, if given, JWT, so that a token
 * typed for something else (at+jwt, say) signed with the same secret is
 * not taken for one of ours.  crit is refused:
 * it names extensions the verifier must understand, and this one
 * understands none.  kid and the rest are ignored.
 */
static bool
parse_header(Parse *ps)
{
	char		name[8],
				value[16];
	size_t		len,
				vlen;
	bool		has_alg = false,
				has_typ = false;

	if (!take(&ps->in, '{') || take(&ps->in, '}'))
		return refuse(ps, MSG_HEADER);
	do
	{
		if (!json_string(&ps->in, name, sizeof(name), &len) || !take(&ps->in, ':'))
			return refuse(ps, MSG_HEADER);
		if (len >= sizeof(name))
			name[0] = '\0';
		if (strcmp(name, "alg") == 0 || strcmp(name, "typ") == 0)
		{
			bool		alg = (name[0] == 'a');

			if (alg ? has_alg : has_typ)
				return refuse(ps, MSG_HEADER);
			if (!peek(&ps->in, '"') ||
				!json_string(&ps->in, value, sizeof(value), &vlen) ||
				vlen >= sizeof(value))
				return refuse(ps, alg ? MSG_ALG : MSG_HEADER);
			/* typ: RFC 7515 4.1.9, a media type, "application/" optional */
			if (alg ? strcmp(value, "HS256") != 0 :
				(pg_strcasecmp(value, "JWT") != 0 &&
				 pg_strcasecmp(value, "application/jwt") != 0))
				return refuse(ps, alg ? MSG_ALG : MSG_HEADER);
			if (alg)
				has_alg = true;
			else
				has_typ = true;
		}
		else if (strcmp(name, "crit") == 0 || !json_skip(&ps->in, 1))
			return refuse(ps, MSG_HEADER);
	} while (take(&ps->in, ','));
	if (!take(&ps->in, '}'))
		return refuse(ps, MSG_HEADER);
	skip_ws(&ps->in);
	if (ps->in.p != ps->in.end)
		return refuse(ps, MSG_HEADER);
	return has_alg || refuse(ps, MSG_ALG);
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
 * the claims of a token that may be meant for later.
 */
static bool
verify(const char *token, size_t len, const char *secret, bool check_times,
	   int64 now_unix, RtAuthClaims *claims, const char **code,
	   const char **message)
{
	const char *dot1,
			   *dot2;
	uint8		part[RT_AUTH_PART_MAX];
	uint8		sig[RT_AUTH_SIG_LEN];
	uint8		mac[RT_AUTH_SIG_LEN];
	int			n;
	Parse		ps;

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
	memset(&ps, 0, sizeof(ps));
	if ((n = b64url_decode(token, dot1 - token, part, sizeof(part))) < 0)
	{
		*message = MSG_SHAPE;
		return false;
	}
	ps.in.p = (const char *) part;
	ps.in.end = (const char *) part + n;
	if (!parse_header(&ps))
	{
		*message = ps.message;
		return false;
	}

	/* Then the signature, before a byte of the claims is parsed. */
	if (len - (dot2 + 1 - token) != RT_AUTH_SIG_B64_LEN ||
		b64url_decode(dot2 + 1, RT_AUTH_SIG_B64_LEN, sig, sizeof(sig)) != RT_AUTH_SIG_LEN)
	{
		*message = MSG_SIGNATURE;
		return false;
	}
	if (!hmac_sha256(secret, token, dot2 - token, mac))
	{
		*code = "unavailable";
		*message = MSG_OOM;
		return false;
	}
	if (CRYPTO_memcmp(sig, mac, RT_AUTH_SIG_LEN) != 0)
	{
		*message = MSG_SIGNATURE;
		return false;
	}

	/* The claims, now known to come from a holder of the secret. */
	memset(&ps, 0, sizeof(ps));
	if ((n = b64url_decode(dot1 + 1, dot2 - (dot1 + 1), part, sizeof(part))) < 0)
	{
		*message = MSG_SHAPE;
		return false;
	}
	ps.in.p = (const char *) part;
	ps.in.end = (const char *) part + n;
	if (!parse_claims(&ps, claims))
	{
		if (ps.oom)
			*code = "unavailable";
		*message = ps.message;
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
 * then holds nothing.  Safe in the event loop.
 */
bool
rt_auth_verify(const char *token, size_t len, const char *secret,
			   int64 now_unix, RtAuthClaims *claims, const char **code,
			   const char **message)
{
	return verify(token, len, secret, true, now_unix, claims, code, message);
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
 * RT_AUTH_TOKEN_MAX.
 * Safe in the event loop; the claims are not checked (rt_token checks them
 * with verify).
 */
bool
rt_auth_sign(const char *secret, const char *payload, size_t len,
			 char *token, size_t size)
{
	size_t		header_len = sizeof(RT_AUTH_HEADER_B64) - 1;
	size_t		total;
	size_t		n;
	uint8		mac[RT_AUTH_SIG_LEN];
	const char *message;

	if (!secret_usable(secret, &message) || len == 0 || len > RT_AUTH_TOKEN_MAX)
		return false;
	total = header_len + 1 + b64url_len(len) + 1 + RT_AUTH_SIG_B64_LEN;
	if (total > RT_AUTH_TOKEN_MAX || total + 1 > size)
		return false;
	memcpy(token, RT_AUTH_HEADER_B64 ".", header_len + 1);
	n = header_len + 1;
	n += b64url_encode((const uint8 *) payload, len, token + n);
	if (!hmac_sha256(secret, token, n, mac))
		return false;
	token[n++] = '.';
	b64url_encode(mac, sizeof(mac), token + n);
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

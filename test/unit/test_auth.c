/*-------------------------------------------------------------------------
 *
 * test_auth.c
 *		Unit tests of auth.c's worker half, printed as TAP.
 *
 * The fixtures were signed outside rtevents, with Perl's Digest::SHA (its
 * own SHA-2 code, not OpenSSL) and checked against `openssl dgst -sha256
 * -hmac`:
 *
 *	perl -MDigest::SHA=hmac_sha256,hmac_sha512 -MMIME::Base64 -e '
 *	  sub b64u { my $s = encode_base64($_[0], ""); $s =~ tr{+/}{-_};
 *	             $s =~ s/=+$//; $s }
 *	  my ($alg, $secret, $header, $payload) = @ARGV;
 *	  my $in = b64u($header) . "." . b64u($payload);
 *	  my $sig = $alg eq "HS256" ? b64u(hmac_sha256($in, $secret))
 *	          : $alg eq "HS512" ? b64u(hmac_sha512($in, $secret)) : "";
 *	  print "$in.$sig\n"' HS256 "$SECRET" "$HEADER" "$PAYLOAD"
 *
 * so that a verifier and signer wrong in the same way cannot agree with
 * each other and pass.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdio.h>
#include <stdlib.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "rtevents.h"

#define SECRET "unit-test-secret-0123456789abcdef"
#define NOW 1700000000

/* {"sub":"u1","exp":2000000000,"admin":true,"rt":{"organizationId":
 *	["7F1C7A52-2A1E-4B9E-9D1A-0C5C2B7B6A10"],"executionId":["e1","e2"]}} */
#define FIXTURE_PAYLOAD \
	"{\"sub\":\"u1\",\"exp\":2000000000,\"admin\":true,\"rt\":{\"organizationId\":" \
	"[\"7F1C7A52-2A1E-4B9E-9D1A-0C5C2B7B6A10\"],\"executionId\":[\"e1\",\"e2\"]}}"
#define FIXTURE_PAYLOAD_B64 \
	"eyJzdWIiOiJ1MSIsImV4cCI6MjAwMDAwMDAwMCwiYWRtaW4iOnRydWUsInJ0Ijp7Im9yZ2FuaXph" \
	"dGlvbklkIjpbIjdGMUM3QTUyLTJBMUUtNEI5RS05RDFBLTBDNUMyQjdCNkExMCJdLCJleGVjdXRp" \
	"b25JZCI6WyJlMSIsImUyIl19fQ"
#define FIXTURE \
	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." FIXTURE_PAYLOAD_B64 \
	".C0EXiw9v3TRKMbEy-8ODtJDcmB_8JTYqr1hOLgmhF3w"
/* the same, signed with "wrong-secret-0123456789abcdef0123" */
#define FIXTURE_WRONG_SECRET \
	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." FIXTURE_PAYLOAD_B64 \
	".2CCLtNrfj62g3_sn7CTe0mjsRA-6vK1oHrhpO5sYGKA"
/* header {"alg":"HS512","typ":"JWT"}, signed HMAC-SHA512 with SECRET */
#define FIXTURE_HS512 \
	"eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9." FIXTURE_PAYLOAD_B64 \
	".QIJDk3F0HBTaWpHC27sJXEshMI4c9ZgUBL0sUQzcWnAfe3VyIFs2s40HT7KjVx6U97IACTO8SGa40zslAfQcOw"
/* header {"alg":"none","typ":"JWT"}, no signature */
#define FIXTURE_NONE \
	"eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." FIXTURE_PAYLOAD_B64 "."
/* header {"alg":"HS256"}, payload {"exp":2000000000} */
#define FIXTURE_NO_TYP \
	"eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjIwMDAwMDAwMDB9.XX_Cm5CmOq0ZD1tVnkiFNob8ku0rNaGxfkBC5kyw7to"
/*
 * What rt_token('{"sub":"u1","exp":2000000000,"iat":1700000000}') returns
 * with test/regress.conf's secret (expected/auth.out shows the same).
 */
#define REGRESS_SECRET "regress-secret-0123456789abcdef-0123"
#define FIXTURE_REGRESS \
	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOiAyMDAwMDAwMDAwLCAiaWF0IjogMTcw" \
	"MDAwMDAwMCwgInN1YiI6ICJ1MSJ9.G-0SrxEfFNa5WHfjpYDBakYlNwceRDqhiW_gRJIox6A"

static int	tests_run = 0;
static int	tests_failed = 0;
static const char *last_message = "";	/* of the last refusal by check_at */

static void
ok(bool cond, const char *name)
{
	tests_run++;
	if (!cond)
		tests_failed++;
	printf("%sok %d - %s\n", cond ? "" : "not ", tests_run, name);
}

/* ---- helpers ---- */

static void
b64url(const char *in, size_t len, char *out)
{
	static const char chars[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t		n = 0;
	uint32		acc = 0;
	int			bits = 0;

	for (size_t i = 0; i < len; i++)
	{
		acc = (acc << 8) | (unsigned char) in[i];
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

/* A token with any header, signed HS256 with secret (no checks at all). */
static char *
forge(const char *header, const char *payload, const char *secret)
{
	char	   *t = malloc(3 * (strlen(header) + strlen(payload)) + 128);
	unsigned char mac[64];
	unsigned int mac_len;
	size_t		n;

	b64url(header, strlen(header), t);
	n = strlen(t);
	t[n++] = '.';
	b64url(payload, strlen(payload), t + n);
	n = strlen(t);
	HMAC(EVP_sha256(), secret, (int) strlen(secret), (unsigned char *) t, n,
		 mac, &mac_len);
	t[n++] = '.';
	b64url((char *) mac, mac_len, t + n);
	return t;
}

/* A token of two parts given in base64url as they are, signed with SECRET. */
static char *
sign_encoded(const char *header_b64, const char *payload_b64)
{
	char	   *t = malloc(strlen(header_b64) + strlen(payload_b64) + 64);
	unsigned char mac[64];
	unsigned int mac_len;
	size_t		n;

	sprintf(t, "%s.%s", header_b64, payload_b64);
	n = strlen(t);
	HMAC(EVP_sha256(), SECRET, (int) strlen(SECRET), (unsigned char *) t, n,
		 mac, &mac_len);
	t[n++] = '.';
	b64url((char *) mac, mac_len, t + n);
	return t;
}

/*
 * The base64url of s with one of the bits its last character leaves spare
 * set: the same bytes to a lax decoder, another spelling of the part.
 */
static void
b64url_spare_bit(const char *s, char *out)
{
	static const char chars[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t		n;

	b64url(s, strlen(s), out);
	n = strlen(out);
	/* 1 or 2 bytes past a multiple of 3 leave 4 or 2 bits spare */
	out[n - 1] = chars[(strchr(chars, out[n - 1]) - chars) | 1];
}

static char *
sign(const char *payload)
{
	return forge("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, SECRET);
}

/* Verify a NUL-terminated token at now; code NULL when accepted. */
static const char *
check_at(const char *token, int64 now, RtAuthClaims *claims)
{
	const char *code,
			   *message;
	RtAuthClaims local;

	if (claims == NULL)
		claims = &local;
	last_message = "";
	if (!rt_auth_verify(token, strlen(token), SECRET, now, claims, &code,
						&message))
	{
		if (message == NULL || code == NULL)
			return "(no message)";
		last_message = message;
		return code;
	}
	if (claims == &local)
		rt_auth_claims_free(&local);
	return NULL;
}

static const char *
check(const char *token)
{
	return check_at(token, NOW, NULL);
}

/* The code for a payload signed properly: claims parsing and times. */
static const char *
check_payload_at(const char *payload, int64 now)
{
	char	   *t = sign(payload);
	const char *code = check_at(t, now, NULL);

	free(t);
	return code;
}

static const char *
check_payload(const char *payload)
{
	return check_payload_at(payload, NOW);
}

/* The last refusal's message says this. */
static bool
says(const char *part)
{
	return strstr(last_message, part) != NULL;
}

static bool
is(const char *code, const char *want)
{
	if (code == NULL || want == NULL)
		return code == want;
	return strcmp(code, want) == 0;
}

static bool
refused_for(const char *payload, const char *message_part)
{
	char	   *t = sign(payload);
	RtAuthClaims claims;
	const char *code,
			   *message;
	bool		result;

	result = !rt_auth_verify(t, strlen(t), SECRET, NOW, &claims, &code, &message) &&
		strcmp(code, "bad_token") == 0 && strstr(message, message_part) != NULL;
	free(t);
	return result;
}

/* ---- fixtures from outside ---- */

static void
test_fixtures(void)
{
	RtAuthClaims c;
	char		token[RT_AUTH_TOKEN_MAX + 1];
	const char *code,
			   *message;

	ok(check_at(FIXTURE, NOW, &c) == NULL, "fixture signed by Digest::SHA accepted");
	ok(c.exp == 2000000000 && !c.has_nbf && c.admin && c.has_sub &&
	   strcmp(c.sub, "u1") == 0, "fixture: exp, admin, sub read");
	ok(c.nallowed[3] == 1 && strcmp(c.allowed[3][0], "7F1C7A52-2A1E-4B9E-9D1A-0C5C2B7B6A10") == 0 &&
	   c.nallowed[0] == 2 && strcmp(c.allowed[0][0], "e1") == 0 &&
	   strcmp(c.allowed[0][1], "e2") == 0 &&
	   c.allowed[1] == NULL && c.allowed[2] == NULL,
	   "fixture: rt read, unrestricted keys NULL");
	rt_auth_claims_free(&c);

	ok(rt_auth_sign(SECRET, FIXTURE_PAYLOAD, strlen(FIXTURE_PAYLOAD), token,
					sizeof(token)) && strcmp(token, FIXTURE) == 0,
	   "rt_auth_sign produces the fixture byte for byte");

	ok(is(check(FIXTURE_WRONG_SECRET), "bad_token") && says("signature"), "signed with another secret: refused");
	ok(is(check(FIXTURE_HS512), "bad_token") && says("alg must be HS256"), "HS512 signed with the secret: refused");
	ok(is(check(FIXTURE_NONE), "bad_token") && says("alg must be HS256"), "alg none, empty signature: refused");
	ok(check(FIXTURE_NO_TYP) == NULL, "header without typ accepted");

	ok(rt_auth_verify(FIXTURE_REGRESS, strlen(FIXTURE_REGRESS), REGRESS_SECRET,
					  NOW, &c, &code, &message) &&
	   c.exp == 2000000000 && strcmp(c.sub, "u1") == 0 && c.allowed[0] == NULL,
	   "rt_token's regress output accepted");
	rt_auth_claims_free(&c);
	ok(!rt_auth_verify(FIXTURE_REGRESS, strlen(FIXTURE_REGRESS), SECRET,
					   NOW, &c, &code, &message) && strcmp(code, "bad_token") == 0,
	   "rt_token's regress output refused under another secret");
}

/* ---- the token's shape ---- */

static void
test_shape(void)
{
	char		t[8192];
	char	   *s;

	/* a payload byte changed: "u1" becomes "u2" in the claims */
	strcpy(t, FIXTURE);
	s = strstr(t, "eyJzdWIiOiJ1MSIs");
	s[13] = 'I';				/* ...IjoidTIi... would be u2; any change will do */
	ok(is(check(t), "bad_token") && says("signature"), "tampered payload refused");

	strcpy(t, FIXTURE);
	s = strrchr(t, '.') + 1;
	s[0] = (s[0] == 'A') ? 'B' : 'A';
	ok(is(check(t), "bad_token") && says("signature"), "tampered signature refused");

	/* 43 characters carry 258 bits: the last 2 must be zero */
	strcpy(t, FIXTURE);
	s = t + strlen(t) - 1;
	ok(*s == 'w', "fixture's signature ends in w (..110000)");
	*s = 'x';
	ok(is(check(t), "bad_token") && says("signature"),
	   "signature with non-zero spare bits refused");

	strcpy(t, FIXTURE);
	strcat(t, "A");
	ok(is(check(t), "bad_token"), "signature one character too long refused");
	strcpy(t, FIXTURE);
	t[strlen(t) - 1] = '\0';
	ok(is(check(t), "bad_token"), "signature one character short refused");

	ok(is(check(""), "bad_token"), "empty token refused");
	ok(is(check("abc"), "bad_token"), "no dots refused");
	ok(is(check("a.b"), "bad_token"), "one dot refused");
	snprintf(t, sizeof(t), "%s.", FIXTURE);
	ok(is(check(t), "bad_token") && says("three base64url parts"),
	   "trailing dot (four parts) refused");
	snprintf(t, sizeof(t), "%s.%s", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9", FIXTURE);
	ok(is(check(t), "bad_token") && says("three base64url parts"), "extra part refused");
	ok(is(check(".." ), "bad_token"), "empty parts refused");
	snprintf(t, sizeof(t), ".%s", strchr(FIXTURE, '.') + 1);
	ok(is(check(t), "bad_token"), "empty header refused");

	/* base64url, strictly: no padding, no + or /, no spaces */
	strcpy(t, FIXTURE);
	s = strchr(t, '.');
	memmove(s + 2, s, strlen(s) + 1);
	s[0] = '=';
	s[1] = '=';
	ok(is(check(t), "bad_token"), "padded header refused");
	strcpy(t, FIXTURE);
	t[3] = '+';
	ok(is(check(t), "bad_token"), "base64 (not url) alphabet refused");
	strcpy(t, FIXTURE);
	t[3] = ' ';
	ok(is(check(t), "bad_token"), "space in a part refused");
	strcpy(t, FIXTURE);
	s = strchr(t, '.');
	memmove(s + 1, s, strlen(s) + 1);
	s[0] = 'A';					/* header of 37 characters: 1 mod 4 */
	ok(is(check(t), "bad_token"), "part of impossible length refused");

	/* one spelling per part, signed or not (19 and 16 bytes: 4 bits spare) */
	{
		char		header[64],
					payload[64],
				   *u;

		b64url("{\"alg\":\"HS256\"} ", 16, header);
		b64url("{\"exp\":2000000000} ", 19, payload);
		u = sign_encoded(header, payload);
		ok(is(check(u), NULL), "parts of 16 and 19 bytes, canonical: accepted");
		free(u);
		b64url_spare_bit("{\"exp\":2000000000} ", payload);
		u = sign_encoded(header, payload);
		ok(is(check(u), "bad_token") && says("three base64url parts"),
		   "payload with a spare bit set, signed so: refused");
		free(u);
		b64url("{\"exp\":2000000000} ", 19, payload);
		b64url_spare_bit("{\"alg\":\"HS256\"} ", header);
		u = sign_encoded(header, payload);
		ok(is(check(u), "bad_token") && says("three base64url parts"),
		   "header with a spare bit set, signed so: refused");
		free(u);
	}

	/* length bound */
	{
		char		payload[4096];
		char		token[RT_AUTH_TOKEN_MAX + 2];
		const char *prefix = "{\"exp\":2000000000,\"pad\":\"";
		size_t		plen;
		RtAuthClaims c;
		const char *code,
				   *message;

		/* 36 + 1 + b64(len) + 1 + 43 = 4096 for a payload of 3011 bytes */
		memset(payload, 'x', sizeof(payload));
		memcpy(payload, prefix, strlen(prefix));
		plen = 3011;
		payload[plen - 2] = '"';
		payload[plen - 1] = '}';
		payload[plen] = '\0';
		ok(rt_auth_sign(SECRET, payload, plen, token, sizeof(token)) &&
		   strlen(token) == RT_AUTH_TOKEN_MAX, "a 4096-byte token can be signed");
		ok(rt_auth_verify(token, strlen(token), SECRET, NOW, &c, &code, &message),
		   "a 4096-byte token accepted");
		rt_auth_claims_free(&c);
		payload[plen - 2] = 'x';
		payload[plen - 1] = '"';
		payload[plen] = '}';
		payload[plen + 1] = '\0';
		ok(!rt_auth_sign(SECRET, payload, plen + 1, token, sizeof(token)),
		   "a longer one cannot be signed");
		s = sign(payload);
		ok(strlen(s) == RT_AUTH_TOKEN_MAX + 1 &&
		   !rt_auth_verify(s, strlen(s), SECRET, NOW, &c, &code, &message) &&
		   strcmp(code, "bad_token") == 0 && strstr(message, "4096") != NULL,
		   "a token over 4096 bytes refused for its length");
		free(s);
		ok(!rt_auth_sign(SECRET, "{\"exp\":1}", 9, token, 50),
		   "rt_auth_sign refuses a buffer too small");
	}
}

/* ---- the header ---- */

static const char *
check_header(const char *header)
{
	char	   *t = forge(header, "{\"exp\":2000000000}", SECRET);
	const char *code = check(t);

	free(t);
	return code;
}

static void
test_header(void)
{
	ok(check_header("{\"alg\":\"HS256\",\"typ\":\"JWT\"}") == NULL, "HS256 JWT accepted");
	ok(check_header(" {\"typ\" : \"jwt\" ,\"alg\":\"HS256\", \"kid\":\"k1\"} ") == NULL,
	   "typ any case, kid ignored, whitespace accepted");
	ok(is(check_header("{\"alg\":\"none\"}"), "bad_token") && says("alg must be HS256"),
	   "alg none refused even when signed");
	ok(is(check_header("{\"alg\":\"HS512\"}"), "bad_token"), "alg HS512 refused");
	ok(is(check_header("{\"alg\":\"hs256\"}"), "bad_token"), "alg in lower case refused");
	ok(is(check_header("{\"alg\":\"HS256 \"}"), "bad_token"), "alg with a space refused");
	ok(is(check_header("{\"typ\":\"JWT\"}"), "bad_token") && says("alg must be HS256"),
	   "missing alg refused");
	ok(is(check_header("{}"), "bad_token"), "empty header refused");
	ok(is(check_header("{\"alg\":null}"), "bad_token"), "alg null refused");
	ok(is(check_header("{\"alg\":\"HS256\",\"alg\":\"none\"}"), "bad_token"),
	   "alg given twice refused");
	ok(check_header("{\"alg\":\"HS256\",\"typ\":\"application/jwt\"}") == NULL,
	   "typ application/jwt accepted");
	ok(is(check_header("{\"alg\":\"HS256\",\"typ\":\"JWE\"}"), "bad_token"),
	   "typ other than JWT refused");
	ok(is(check_header("{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}"), "bad_token"),
	   "typ at+jwt (an OAuth access token) refused");
	ok(is(check_header("{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}"), "bad_token"),
	   "crit refused");
	ok(is(check_header("[\"alg\",\"HS256\"]"), "bad_token"), "header not an object refused");
	ok(is(check_header("{\"alg\":\"HS256\"}x"), "bad_token"), "trailing bytes in header refused");
	ok(is(check_header("{\"alg\":\"HS\\u0032\\u00356\"}"), NULL),
	   "escaped alg read as HS256");
	ok(is(check_header("{\"kid\":{\"alg\":\"HS256\"}}"), "bad_token") &&
	   says("alg must be HS256"), "alg inside another member does not count");
	ok(check_header("{\"alg\":\"HS256\",\"kid\":{\"alg\":\"none\",\"crit\":[{\"typ\":1}]}}") == NULL,
	   "alg, crit and typ inside another member are not the header's");
	ok(is(check_header("{\"typ\":\"JWT\",\"alg\":\"HS256\",\"typ\":\"JWT\"}"), "bad_token"),
	   "typ given twice refused");
	ok(is(check_header("{\"alg\":\"HS256\",\"kid\":[[[[[[[1]]]]]]]}"), NULL) &&
	   is(check_header("{\"alg\":\"HS256\",\"kid\":[[[[[[[[1]]]]]]]]}"), "bad_token"),
	   "header nested 8 deep accepted, 9 refused");
}

/* ---- exp, nbf ---- */

static void
test_times(void)
{
	RtAuthClaims c;

	ok(is(check_payload("{\"sub\":\"u1\"}"), "bad_token") &&
	   refused_for("{\"sub\":\"u1\"}", "no exp"), "no exp refused");
	ok(is(check_payload_at("{\"exp\":1000}", 1029), NULL), "exp + 29 s: within leeway");
	ok(is(check_payload_at("{\"exp\":1000}", 1030), "token_expired") && says("expired"),
	   "exp + 30 s: expired");
	ok(is(check_payload_at("{\"exp\":1000}", 5000), "token_expired"), "long expired");
	ok(is(check_payload_at("{\"exp\":1000.9}", 1029), NULL) &&
	   is(check_payload_at("{\"exp\":1000.9}", 1030), "token_expired"),
	   "fractional exp: its floor counts");
	ok(is(check_payload_at("{\"exp\":9999,\"nbf\":2000}", 1970), NULL),
	   "nbf - 30 s: within leeway");
	ok(is(check_payload_at("{\"exp\":9999,\"nbf\":2000}", 1969), "token_not_yet_valid") &&
	   says("not valid yet"),
	   "nbf - 31 s: not yet valid");
	ok(is(check_payload_at("{\"exp\":9999,\"nbf\":2000.1}", 1970), "token_not_yet_valid") &&
	   is(check_payload_at("{\"exp\":9999,\"nbf\":2000.1}", 1971), NULL),
	   "fractional nbf: its ceiling counts");
	ok(is(check_payload_at("{\"exp\":-5}", 100), "token_expired"), "negative exp: expired");
	ok(is(check_payload("{\"exp\":\"2000000000\"}"), "bad_token"), "exp as a string refused");
	ok(is(check_payload("{\"exp\":2e9}"), "bad_token"), "exp with an exponent refused");
	ok(is(check_payload("{\"exp\":1234567890123456}"), "bad_token"),
	   "exp of 16 digits refused");
	ok(is(check_payload("{\"exp\":null}"), "bad_token"), "exp null refused");
	ok(is(check_payload("{\"exp\":2000000000,\"nbf\":true}"), "bad_token"),
	   "nbf not a number refused");
	ok(is(check_payload("{\"exp\":2000000000,\"iat\":\"yesterday\"}"), "bad_token"),
	   "iat not a number refused");
	ok(is(check_payload("{\"exp\":2000000000,\"iat\":1}"), NULL), "iat not checked against now");
	ok(is(check_payload("{\"exp\":2000000000,\"exp\":2000000001}"), "bad_token"),
	   "exp given twice refused");
	ok(is(check_payload("{\"exp\":1000,\"\\u0065xp\":2000000000}"), "bad_token"),
	   "exp given twice, once escaped, refused");
	ok(is(check_payload("{\"exp\":01}"), "bad_token"), "leading zero refused (not JSON)");
	ok(is(check_payload("{\"x\":{\"exp\":2000000000}}"), "bad_token") &&
	   refused_for("{\"x\":{\"exp\":2000000000}}", "no exp"),
	   "exp inside another claim does not count");
	ok(is(check_payload("{\"exp\":2000000000,\"x\":{\"exp\":\"no\",\"nbf\":9e99}}"), NULL),
	   "exp and nbf inside another claim are not read");
	ok(is(check_payload("{\"exp\":-0.5}"), "token_expired") &&
	   is(check_payload_at("{\"exp\":-0.5}", 28), NULL) &&
	   is(check_payload_at("{\"exp\":-0.5}", 29), "token_expired"),
	   "negative fractional exp: its floor, -1, counts");
	ok(refused_for("{\"exp\":\"x\"", "exp, nbf and iat") &&
	   refused_for("{\"exp\":2000000000,\"admin\":1", "admin"),
	   "the first reason wins over JSON that breaks off later");

	ok(check_at(FIXTURE, NOW, &c) == NULL && c.exp == 2000000000, "exp read");
	rt_auth_claims_free(&c);
}

/* ---- secrets ---- */

static void
test_secrets(void)
{
	RtAuthClaims c;
	const char *code,
			   *message;
	char		token[256];

	ok(!rt_auth_verify(FIXTURE, strlen(FIXTURE), "", NOW, &c, &code, &message) &&
	   strcmp(code, "unavailable") == 0 &&
	   strcmp(message, "the server has no rtevents.jwt_secret") == 0,
	   "empty secret refuses every token");
	ok(!rt_auth_verify(FIXTURE, strlen(FIXTURE), NULL, NOW, &c, &code, &message) &&
	   strcmp(code, "unavailable") == 0, "no secret refuses every token");
	ok(!rt_auth_verify(FIXTURE, strlen(FIXTURE), "0123456789abcdef0123456789abcde",
					   NOW, &c, &code, &message) &&
	   strcmp(code, "unavailable") == 0 && strstr(message, "32 bytes") != NULL,
	   "31-byte secret refuses every token");
	ok(!rt_auth_sign("", "{\"exp\":1}", 9, token, sizeof(token)) &&
	   !rt_auth_sign("short", "{\"exp\":1}", 9, token, sizeof(token)),
	   "rt_auth_sign refuses empty and short secrets");
	ok(rt_auth_sign("0123456789abcdef0123456789abcdef", "{\"exp\":2000000000}", 18,
					token, sizeof(token)) &&
	   rt_auth_verify(token, strlen(token), "0123456789abcdef0123456789abcdef",
					  NOW, &c, &code, &message), "32-byte secret works");
	rt_auth_claims_free(&c);
	ok(!rt_auth_verify(token, strlen(token), "0123456789abcdef0123456789abcdeF",
					   NOW, &c, &code, &message) && strcmp(code, "bad_token") == 0,
	   "one byte of the secret changed: refused");
}

/* ---- claims ---- */

static void
test_claims(void)
{
	RtAuthClaims c;
	char		payload[8192];
	char	   *t;
	const char *code,
			   *message;
	char	   *p;

	ok(is(check_payload("{\"exp\":2000000000,\"iss\":\"x\",\"aud\":[\"a\",{\"b\":[1,2.5e3,null,false]}]}"), NULL),
	   "unknown claims ignored");
	ok(is(check_payload("[{\"exp\":2000000000}]"), "bad_token"), "claims not an object refused");
	ok(is(check_payload("{\"exp\":2000000000} {}"), "bad_token"), "trailing JSON refused");
	ok(is(check_payload("{\"exp\":2000000000,}"), "bad_token"), "trailing comma refused");
	ok(is(check_payload("{\"exp\":2000000000"), "bad_token"), "unterminated object refused");
	ok(is(check_payload("{'exp':2000000000}"), "bad_token"), "single quotes refused");

	/* nesting: the claims object is level 1 */
	ok(is(check_payload("{\"exp\":2000000000,\"x\":[[[[[[[1]]]]]]]}"), NULL),
	   "nesting 8 deep accepted");
	ok(is(check_payload("{\"exp\":2000000000,\"x\":[[[[[[[[1]]]]]]]]}"), "bad_token") &&
	   says("nested at most 8"),
	   "nesting 9 deep refused");
	ok(is(check_payload("{\"exp\":2000000000,\"x\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{}}}}}}}}}"),
		  "bad_token"), "objects 9 deep refused");
	/* very deep nesting must not recurse without bound */
	p = payload + sprintf(payload, "{\"exp\":2000000000,\"x\":");
	for (int i = 0; i < 3000; i++)
		*p++ = '[';
	*p = '\0';
	ok(is(check_payload(payload), "bad_token"), "3000 open brackets refused");

	ok(is(check_payload("{\"exp\":2000000000,\"sub\":\"\\u00e9\\ud83d\\ude00\"}"), NULL),
	   "escaped BMP character and surrogate pair accepted");
	t = sign("{\"exp\":2000000000,\"sub\":\"\\u00e9\\ud83d\\ude00\"}");
	ok(rt_auth_verify(t, strlen(t), SECRET, NOW, &c, &code, &message) &&
	   strcmp(c.sub, "\xc3\xa9\xf0\x9f\x98\x80") == 0, "escapes decoded to UTF-8");
	rt_auth_claims_free(&c);
	free(t);
	ok(is(check_payload("{\"exp\":2000000000,\"sub\":\"\\ud83d\"}"), "bad_token"),
	   "lone high surrogate refused");
	ok(is(check_payload("{\"exp\":2000000000,\"sub\":\"\\ude00\"}"), "bad_token"),
	   "lone low surrogate refused");
	ok(is(check_payload("{\"exp\":2000000000,\"sub\":\"a\\u0000b\"}"), "bad_token"),
	   "escaped NUL refused");
	ok(is(check_payload("{\"exp\":2000000000,\"sub\":\"\xc3\x28\"}"), "bad_token"),
	   "invalid UTF-8 refused");
	ok(is(check_payload("{\"exp\":2000000000,\"sub\":\"\xed\xa0\x80\"}"), "bad_token"),
	   "UTF-8 surrogate refused");
	ok(is(check_payload("{\"exp\":2000000000,\"sub\":\"a\tb\"}"), "bad_token"),
	   "raw control character refused");
	ok(is(check_payload("{\"exp\":2000000000,\"sub\":\"\\x41\"}"), "bad_token"),
	   "unknown escape refused");

	ok(is(check_payload("{\"exp\":2000000000,\"sub\":7}"), "bad_token"), "sub not a string refused");
	p = payload + sprintf(payload, "{\"exp\":2000000000,\"sub\":\"");
	memset(p, 's', 200);
	strcpy(p + 200, "\"}");
	ok(is(check_payload(payload), NULL), "sub of 200 bytes accepted");
	strcpy(p + 200, "s\"}");
	ok(is(check_payload(payload), "bad_token"), "sub of 201 bytes refused");

	ok(is(check_payload("{\"exp\":2000000000,\"admin\":false}"), NULL), "admin false accepted");
	ok(is(check_payload("{\"exp\":2000000000,\"admin\":\"true\"}"), "bad_token"),
	   "admin as a string refused");
	ok(is(check_payload("{\"exp\":2000000000,\"admin\":1}"), "bad_token"), "admin 1 refused");
	ok(is(check_payload("{\"exp\":2000000000,\"admin\":true,\"admin\":false}"), "bad_token"),
	   "admin given twice refused");
	t = sign("{\"exp\":2000000000}");
	ok(rt_auth_verify(t, strlen(t), SECRET, NOW, &c, &code, &message) &&
	   !c.admin && !c.has_sub && c.sub[0] == '\0' && !c.has_nbf,
	   "absent claims: not admin, no sub, no nbf");
	rt_auth_claims_free(&c);
	free(t);
}

static void
test_rt(void)
{
	char		payload[16384];
	char	   *p;

	ok(is(check_payload("{\"exp\":2000000000,\"rt\":{\"jobId\":[\"j1\"],\"batchId\":[\"b\"]}}"), NULL),
	   "rt with jobId and batchId accepted");
	ok(refused_for("{\"exp\":2000000000,\"rt\":{\"tenant\":[\"t1\"]}}", "rt must be an object"),
	   "unknown rt key refused");
	ok(refused_for("{\"exp\":2000000000,\"rt\":{\"executionid\":[\"e1\"]}}", "rt must be"),
	   "rt key in the wrong case refused");
	ok(refused_for("{\"exp\":2000000000,\"rt\":{\"type\":[\"job_started\"]}}", "rt must be"),
	   "rt type (not a restriction rtevents knows) refused");
	ok(refused_for("{\"exp\":2000000000,\"rt\":{}}", "rt must be"), "empty rt refused");
	ok(refused_for("{\"exp\":2000000000,\"rt\":null}", "rt must be"), "rt null refused");
	ok(refused_for("{\"exp\":2000000000,\"rt\":[\"e1\"]}", "rt must be"), "rt an array refused");
	ok(refused_for("{\"exp\":2000000000,\"rt\":{\"executionId\":\"e1\"}}", "rt lists"),
	   "rt value a string, not an array, refused");
	ok(refused_for("{\"exp\":2000000000,\"rt\":{\"executionId\":null}}", "rt lists"),
	   "rt value null refused");
	ok(refused_for("{\"exp\":2000000000,\"rt\":{\"executionId\":[]}}", "rt lists"),
	   "rt value an empty array refused");
	ok(refused_for("{\"exp\":2000000000,\"rt\":{\"executionId\":[1]}}", "rt lists"),
	   "rt value an array of numbers refused");
	ok(refused_for("{\"exp\":2000000000,\"rt\":{\"executionId\":[[\"e1\"]]}}", "rt lists"),
	   "rt value an array of arrays refused");
	ok(refused_for("{\"exp\":2000000000,\"rt\":{\"executionId\":[\"\"]}}", "rt lists"),
	   "empty rt value refused");
	ok(refused_for("{\"exp\":2000000000,\"rt\":{\"executionId\":[\"e1\"],\"executionId\":[\"e2\"]}}",
				   "twice"), "rt key given twice refused");
	ok(refused_for("{\"exp\":2000000000,\"rt\":{\"executionId\":[\"e1\"]},\"rt\":{}}", "twice"),
	   "rt given twice refused");
	ok(refused_for("{\"exp\":2000000000,\"rt\":{\"organizationId\":[\"acme\"]}}", "UUID"),
	   "organizationId that is not a UUID refused");
	ok(is(check_payload("{\"exp\":2000000000,\"rt\":{\"executionId\":[\"e\\u0000\"]}}"), "bad_token"),
	   "rt value with an escaped NUL refused");
	ok(is(check_payload("{\"exp\":2000000000,\"x\":{\"rt\":{\"tenant\":1}},\"rt\":{\"jobId\":[\"j\"]}}"), NULL),
	   "rt inside another claim is not read");
	ok(refused_for("{\"exp\":2000000000,\"rt\":{\"jobId\":[\"j\"],\"batchId\":{\"jobId\":[\"j\"]}}}", "rt lists"),
	   "rt value an object refused");
	ok(refused_for("{\"exp\":2000000000,\"rt\":{\"jobId\":[\"j\",{\"a\":\"b\"}]}}", "rt lists"),
	   "rt value an array holding an object refused");
	ok(refused_for("{\"exp\":2000000000,\"rt\":{\"jobId\":[\"j\"],\"organizationId\":[\"7f1c7a52-2a1e-4b9e-9d1a-0c5c2b7b6a10\",\"x\"]}}", "UUID"),
	   "a UUID then something else: refused");

	/* 100 values accepted, 101 refused */
	p = payload + sprintf(payload, "{\"exp\":2000000000,\"rt\":{\"jobId\":[");
	for (int i = 0; i < 100; i++)
		p += sprintf(p, "%s\"j%d\"", i ? "," : "", i);
	strcpy(p, "]}}");
	ok(is(check_payload(payload), NULL), "100 values accepted");
	strcpy(p, ",\"j100\"]}}");
	ok(refused_for(payload, "rt lists"), "101 values refused");

	/* values of 200 bytes accepted, 201 refused */
	p = payload + sprintf(payload, "{\"exp\":2000000000,\"rt\":{\"jobId\":[\"");
	memset(p, 'v', 200);
	strcpy(p + 200, "\"]}}");
	ok(is(check_payload(payload), NULL), "value of 200 bytes accepted");
	strcpy(p + 200, "v\"]}}");
	ok(refused_for(payload, "rt lists"), "value of 201 bytes refused");
}

/* ---- rt_auth_allows ---- */

static void
set_filter(RtRequest *r, const char *e, const char *b, const char *j, const char *o)
{
	const char *v[4] = {e, b, j, o};

	memset(r, 0, sizeof(*r));
	for (int i = 0; i < 4; i++)
		r->keys[i] = v[i] ? strdup(v[i]) : NULL;
}

static bool
allows(const RtAuthClaims *c, const char *e, const char *b, const char *j,
	   const char *o, const char **message)
{
	RtRequest	r;
	const char *local;
	bool		result;

	set_filter(&r, e, b, j, o);
	result = rt_auth_allows(c, &r, message ? message : &local);
	for (int i = 0; i < 4; i++)
		free(r.keys[i]);
	return result;
}

static void
test_allows(void)
{
	RtAuthClaims c;
	RtAuthClaims all;
	char	   *t;
	const char *code,
			   *message = NULL;
	const char *org = "7f1c7a52-2a1e-4b9e-9d1a-0c5c2b7b6a10";

	/* the fixture: organizationId 7F1C..., executionId e1 or e2 */
	ok(check_at(FIXTURE, NOW, &c) == NULL, "fixture claims read");
	ok(allows(&c, "e1", NULL, NULL, org, NULL), "allowed execution and org: allowed");
	ok(allows(&c, "e2", NULL, NULL, "7F1C7A52-2A1E-4B9E-9D1A-0C5C2B7B6A10", NULL),
	   "second execution, org in upper case: allowed");
	ok(allows(&c, "e1", "b9", "j9", org, NULL), "further keys narrow it more: allowed");
	ok(!allows(&c, "e1", NULL, NULL, NULL, &message) &&
	   strstr(message, "organizationId") != NULL,
	   "restricted organizationId left out: refused, naming it");
	ok(!allows(&c, NULL, NULL, NULL, org, &message) && strstr(message, "executionId") != NULL,
	   "restricted executionId left out: refused, naming it");
	ok(!allows(&c, NULL, NULL, NULL, NULL, NULL), "no filter at all: refused");
	ok(!allows(&c, "e3", NULL, NULL, org, NULL), "execution not allowed: refused");
	ok(!allows(&c, "E1", NULL, NULL, org, NULL), "executionId compared exactly: E1 refused");
	ok(!allows(&c, "e1", NULL, NULL, "00000000-0000-0000-0000-000000000000", NULL),
	   "another org: refused");
	ok(!allows(&c, "e", NULL, NULL, org, NULL) && !allows(&c, "e12", NULL, NULL, org, NULL),
	   "prefixes and extensions of an allowed value: refused");
	rt_auth_claims_free(&c);

	t = sign("{\"exp\":2000000000,\"rt\":{\"batchId\":[\"b1\"],\"jobId\":[\"j1\",\"j2\"]}}");
	ok(rt_auth_verify(t, strlen(t), SECRET, NOW, &c, &code, &message), "two-key claims read");
	ok(allows(&c, NULL, "b1", "j2", NULL, NULL), "both restricted keys named: allowed");
	ok(!allows(&c, NULL, "b1", NULL, NULL, NULL), "one of two restricted keys: refused");
	ok(!allows(&c, NULL, NULL, "j1", NULL, NULL), "the other one alone: refused");
	ok(!allows(&c, NULL, "b2", "j1", NULL, NULL), "one value wrong: refused");
	rt_auth_claims_free(&c);
	free(t);

	t = sign("{\"exp\":2000000000}");
	ok(rt_auth_verify(t, strlen(t), SECRET, NOW, &all, &code, &message),
	   "token without rt read");
	ok(allows(&all, NULL, NULL, NULL, NULL, NULL) &&
	   allows(&all, "e1", "b1", "j1", org, NULL), "token without rt allows any filter");
	rt_auth_claims_free(&all);
	free(t);

	/* \u escapes, as Python's json.dumps writes them, read as UTF-8 */
	t = sign("{\"exp\":2000000000,\"rt\":{\"executionId\":[\"caf\\u00e9\",\"\\ud83d\\ude00\"]}}");
	ok(rt_auth_verify(t, strlen(t), SECRET, NOW, &c, &code, &message),
	   "claims with escaped non-ASCII values read");
	ok(allows(&c, "caf\xc3\xa9", NULL, NULL, NULL, NULL) &&
	   allows(&c, "\xf0\x9f\x98\x80", NULL, NULL, NULL, NULL) &&
	   !allows(&c, "caf", NULL, NULL, NULL, NULL),
	   "... and compared with the filter's UTF-8");
	rt_auth_claims_free(&c);
	free(t);
}

int
main(void)
{
	test_fixtures();
	test_shape();
	test_header();
	test_times();
	test_secrets();
	test_claims();
	test_rt();
	test_allows();
	printf("1..%d\n", tests_run);
	return tests_failed == 0 ? 0 : 1;
}

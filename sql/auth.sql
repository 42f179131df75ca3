-- rt_token(): HS256 tokens signed with rtevents.jwt_secret, which
-- test/regress.conf sets to 'regress-secret-0123456789abcdef-0123'.
CREATE EXTENSION rtevents;

-- A part of a token, decoded: base64url without padding, as JSON.
CREATE FUNCTION pg_temp.part(token text, n integer) RETURNS jsonb
LANGUAGE sql IMMUTABLE STRICT AS $$
	SELECT convert_from(decode(rpad(translate(p, '-_', '+/'),
									(length(p) + 3) / 4 * 4, '='),
							   'base64'), 'UTF8')::jsonb
	FROM split_part(token, '.', n) AS p
$$;

-- Claims with their own exp and iat make a token that depends on nothing
-- but the secret: this exact string was also computed with Perl's
-- Digest::SHA, and test/unit/test_auth.c checks it with the worker's
-- verifier.
SELECT rt_token('{"sub":"u1","exp":2000000000,"iat":1700000000}');

-- Three parts, base64url without padding; the signature is 32 bytes.
SELECT rt_token('{"sub":"u1"}') ~ '^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$'
	AS three_parts;

-- The header.
SELECT pg_temp.part(rt_token('{"sub":"u1"}'), 1) AS header;

-- The claims come back as given, with exp = iat + ttl (1 hour by default)
-- and iat the clock's now.
WITH t AS (
	SELECT pg_temp.part(rt_token(c), 2) AS claims, c
	FROM (VALUES ('{"sub":"u1","admin":true,"rt":{"organizationId":["7f1c7a52-2a1e-4b9e-9d1a-0c5c2b7b6a10"],"executionId":["e1","e2"]},"app":{"x":[1,null]}}'::jsonb)) v(c)
)
SELECT claims - 'exp' - 'iat' = c AS round_trip,
	   (claims->>'exp')::bigint - (claims->>'iat')::bigint AS ttl,
	   abs((claims->>'iat')::bigint - extract(epoch FROM clock_timestamp())) < 60 AS iat_now,
	   jsonb_typeof(claims->'exp') AS exp_type
FROM t;

SELECT (c->>'exp')::bigint - (c->>'iat')::bigint AS ttl
FROM (SELECT pg_temp.part(rt_token('{}', ttl), 2) AS c
	  FROM (VALUES (interval '5 minutes'), ('24 hours'), ('1 second')) v(ttl)) s;

-- The claims' own exp wins over ttl; their own iat is kept.
SELECT pg_temp.part(rt_token('{"exp":1900000000,"iat":5}', '5 minutes'), 2) AS claims;

-- Non-ASCII claims travel as UTF-8.
SELECT pg_temp.part(rt_token('{"sub":"Zoë ☃"}'), 2)->>'sub' AS sub;

-- What rt_token refuses.
SELECT rt_token(NULL);
SELECT rt_token('[{"sub":"u1"}]');
SELECT rt_token('"u1"');
SELECT rt_token('{}', NULL);
SELECT rt_token('{}', '0');
SELECT rt_token('{}', '-1 hour');
SELECT rt_token('{}', '0.5 seconds');
-- Claims the worker would refuse fail here, with its reason.
SELECT rt_token('{"rt":{"tenant":["t1"]}}');
SELECT rt_token('{"rt":{"executionId":"e1"}}');
SELECT rt_token('{"rt":{"organizationId":["acme"]}}');
SELECT rt_token(jsonb_build_object('rt', jsonb_build_object('jobId',
	(SELECT jsonb_agg('j' || i) FROM generate_series(1, 101) i))));
SELECT rt_token('{"exp":"tomorrow"}');
SELECT rt_token('{"admin":"yes"}');
SELECT rt_token(jsonb_build_object('pad', repeat('x', 3100)));

-- The secret: superuser only, and only from the configuration files.
SET rtevents.jwt_secret = 'x';
SHOW rtevents.auth;
SELECT count(*) AS in_show_all FROM pg_settings WHERE name = 'rtevents.jwt_secret';

CREATE ROLE regress_rt_token_user;
SET ROLE regress_rt_token_user;
SHOW rtevents.jwt_secret;
SELECT current_setting('rtevents.jwt_secret');
-- Not granted to PUBLIC: whoever runs it can mint any token.
SELECT rt_token('{"admin":true}');
RESET ROLE;
GRANT EXECUTE ON FUNCTION rt_token(jsonb, interval) TO regress_rt_token_user;
SET ROLE regress_rt_token_user;
SELECT length(rt_token('{"sub":"u1"}')) > 0 AS granted;
RESET ROLE;
REVOKE EXECUTE ON FUNCTION rt_token(jsonb, interval) FROM regress_rt_token_user;
DROP ROLE regress_rt_token_user;

-- Without a secret nothing is signed.  A new connection sees the reloaded
-- configuration: the postmaster handles the reload signal before it
-- accepts the connection.
ALTER SYSTEM SET rtevents.jwt_secret = '';
SELECT pg_reload_conf();
\c
SELECT rt_token('{"sub":"u1"}');
ALTER SYSTEM SET rtevents.jwt_secret = 'too-short';
SELECT pg_reload_conf();
\c
SELECT rt_token('{"sub":"u1"}');
ALTER SYSTEM RESET rtevents.jwt_secret;
SELECT pg_reload_conf();
\c
SELECT length(rt_token('{"sub":"u1"}')) > 0 AS signs_again;

DROP EXTENSION rtevents;

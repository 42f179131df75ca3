-- Bad input is refused with a clear error, and nothing is half-written.
CREATE EXTENSION rtevents;
\set VERBOSITY terse

SELECT rt_publish(NULL);
SELECT rt_publish('');
SELECT rt_publish(repeat('t', 201));
SELECT rt_publish(repeat('t', 200)) > 0 AS longest_type_ok;
SELECT rt_publish('x', '[1, 2]');
SELECT rt_publish('x', '"scalar"');
SELECT rt_publish('x', 'null');
SELECT rt_publish('x', execution_id => '');
SELECT rt_publish('x', batch_id => repeat('b', 201));
SELECT rt_publish('x', job_id => '');
SELECT rt_publish('x', organization_id => 'not-a-uuid');
SELECT rt_publish('x', ttl => interval '-1 second');
SELECT rt_publish('x', ttl => interval '1 month -40 days');
SELECT rt_publish('x', data => '{"unterminated": ');
SELECT rt_publish('x', ts => 'infinity');
SELECT rt_publish('x', ts => '0044-03-15 00:00:00+00 BC');
BEGIN;
SELECT rt_publish('x', ts => '9999-12-31 23:59:59+00') > 0 AS last_year_ok;
ROLLBACK;

-- The same rules hold for rows that skip rt_publish.
INSERT INTO execution_events (type) VALUES ('');
INSERT INTO execution_events (type, data) VALUES ('x', '[]');
INSERT INTO execution_events (type, execution_id) VALUES ('x', '');
INSERT INTO execution_events (type, job_id) VALUES ('x', repeat('j', 201));
INSERT INTO execution_events (type, ts) VALUES ('x', '12026-01-01 00:00:00+00');

-- History and cleanup refuse what they cannot mean.
SELECT * FROM rt_events(lim => 0);
SELECT * FROM rt_events(lim => 1001);
SELECT * FROM rt_events(lim => NULL);
SELECT * FROM rt_events(off => -1);
SELECT * FROM rt_events(after => -5);
SELECT * FROM rt_events(types => '{}');
SELECT * FROM rt_events(types => ARRAY['a', NULL]);
SELECT * FROM rt_events(types => ARRAY['']);
SELECT * FROM rt_events(since => '2026-01-02', until => '2026-01-01');
SELECT * FROM rt_events(organization_id => 'zzz');
SELECT rt_cleanup(0);
SELECT rt_cleanup(1000001);
SELECT rt_cleanup(10, 0);

-- Settings are checked too.
ALTER SYSTEM SET rtevents.channel = '';
ALTER SYSTEM SET rtevents.channel = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa';
SET rtevents.channel = 'other';
SET rtevents.default_ttl = -1;
SET rtevents.no_such_setting = 1;
SET rtevents.port = 9000;

-- Only the one valid event was stored.
SELECT count(*) AS stored, min(octet_length(type)) AS type_len FROM execution_events;

DROP EXTENSION rtevents;

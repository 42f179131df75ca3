-- rt_publish(): what it stores, what it returns, what it leaves behind.
CREATE EXTENSION rtevents;

-- The id comes back; the row holds exactly what was published.
BEGIN;
SELECT rt_publish('job_progress', '{"pct": 45}',
				  execution_id => 'e1', job_id => 'j1') AS id;
SELECT id, type, data, execution_id, batch_id, job_id, organization_id,
	   ts BETWEEN now() AND clock_timestamp() AS ts_set,
	   expires_at = now() + interval '30 days' AS default_ttl,
	   created_at = now() AS created_now
FROM execution_events;
COMMIT;

-- Every argument by name, with an explicit ts.
BEGIN;
SELECT rt_publish(type => 'job_completed', data => '{"ok": true}',
				  execution_id => 'e1', batch_id => 'b1', job_id => 'j1',
				  organization_id => '7f1c7a52-2a1e-4b9e-9d1a-0c5c2b7b6a10',
				  ttl => interval '1 hour',
				  ts => '2026-11-22 10:00:00.123456+00') AS id;
SELECT batch_id, organization_id, expires_at = now() + interval '1 hour' AS ttl_1h
FROM execution_events WHERE id = 2;
COMMIT;

-- data defaults to an empty object.
SELECT rt_publish('job_started') AS id;
SELECT data FROM execution_events WHERE id = 3;

-- The JSON clients receive: null keys left out, ts in UTC whatever the
-- session's time zone.
SET TimeZone = 'America/New_York';
SELECT rt_event_json(e) FROM execution_events e WHERE id = 2;
RESET TimeZone;

-- ttl 0 keeps an event forever; so does rtevents.default_ttl = 0, for
-- rt_publish and for plain INSERT alike.
SELECT rt_publish('x', ttl => '0') AS id \gset
SELECT expires_at IS NULL AS forever FROM execution_events WHERE id = :id;
SET rtevents.default_ttl = 0;
SELECT rt_publish('x') AS id \gset
SELECT expires_at IS NULL AS forever FROM execution_events WHERE id = :id;
INSERT INTO execution_events (type) VALUES ('plain') RETURNING expires_at IS NULL AS forever;
SET rtevents.default_ttl = '2h';
BEGIN;
SELECT rt_publish('x') AS id \gset
SELECT expires_at = now() + interval '2 hours' AS two_hours
FROM execution_events WHERE id = :id;
INSERT INTO execution_events (type) VALUES ('plain')
RETURNING expires_at = now() + interval '2 hours' AS two_hours;
COMMIT;
RESET rtevents.default_ttl;

-- A rolled-back publish leaves nothing behind.
SELECT count(*) AS before FROM execution_events;
BEGIN;
SELECT rt_publish('doomed') > 0 AS published;
ROLLBACK;
SELECT count(*) AS after, count(*) FILTER (WHERE type = 'doomed') AS doomed
FROM execution_events;

-- Payloads far over NOTIFY's 8000-byte limit are stored whole.
SELECT rt_publish('job_log', jsonb_build_object('log', repeat('x', 100000))) AS id \gset
-- (the whole JSON's length would vary with ts, whose trailing zeros go)
SELECT octet_length(data->>'log') AS log_bytes,
       octet_length(rt_event_json(e)::jsonb #>> '{data,log}') AS json_log_bytes
FROM execution_events e WHERE id = :id;

-- The horizon: an open publishing transaction holds back its lowest id,
-- and lets go at commit or rollback.
SELECT rt_horizon() AS idle;
BEGIN;
SELECT rt_publish('a') AS first_id \gset
SELECT rt_publish('b') > :first_id AS later;
SELECT rt_horizon() = :first_id AS holds_lowest;
COMMIT;
SELECT rt_horizon() AS after_commit;
BEGIN;
SELECT rt_publish('c') IS NOT NULL AS published;
ROLLBACK;
SELECT rt_horizon() AS after_rollback;

-- A publishing transaction cannot be prepared; others still can.
BEGIN;
SELECT rt_publish('two-phase') IS NOT NULL AS published;
PREPARE TRANSACTION 'rt1';
BEGIN;
SELECT count(*) > 0 AS reads FROM execution_events;
PREPARE TRANSACTION 'rt2';
COMMIT PREPARED 'rt2';
SELECT rt_horizon() AS after_prepare;

DROP EXTENSION rtevents;

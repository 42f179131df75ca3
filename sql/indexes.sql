-- Each index earns its place: the history, replay and cleanup queries, as
-- rt_events() and rt_cleanup() build them, use it on a table of some size.
-- Index names are shown rather than whole plans, which may choose between
-- an index scan and a bitmap scan of the same index on sampled statistics.
CREATE EXTENSION rtevents;

CREATE FUNCTION indexes_used(query text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	plan	text;
BEGIN
	EXECUTE 'EXPLAIN (FORMAT JSON) ' || query INTO plan;
	RETURN coalesce((SELECT string_agg(DISTINCT m[1], ', ')
					 FROM regexp_matches(plan, '"Index Name": "([^"]+)"', 'g') m),
					'(none: sequential scan)');
END $$;

INSERT INTO execution_events (type, ts, execution_id, batch_id, job_id, organization_id, expires_at)
SELECT 'job_progress',
	   timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second',
	   'e' || (g % 2000),
	   'b' || (g % 500),
	   'j' || g / 10,
	   ('00000000-0000-0000-0000-' || lpad((g % 100)::text, 12, '0'))::uuid,
	   timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second' + interval '30 days'
FROM generate_series(1, 200000) g;
VACUUM ANALYZE execution_events;

-- Replay: everything after a cursor walks the primary key.
SELECT indexes_used('SELECT e.* FROM execution_events e WHERE true AND e.id > 199000 ORDER BY e.id LIMIT 100');

-- Subscriptions by routing key, with and without a cursor.
SELECT indexes_used('SELECT e.* FROM execution_events e WHERE true AND e.execution_id = ''e7'' ORDER BY e.id LIMIT 100');
SELECT indexes_used('SELECT e.* FROM execution_events e WHERE true AND e.execution_id = ''e7'' AND e.id > 100000 ORDER BY e.id LIMIT 100');
SELECT indexes_used('SELECT e.* FROM execution_events e WHERE true AND e.batch_id = ''b7'' ORDER BY e.id LIMIT 100');
SELECT indexes_used('SELECT e.* FROM execution_events e WHERE true AND e.job_id = ''j7'' ORDER BY e.id LIMIT 100');
SELECT indexes_used('SELECT e.* FROM execution_events e WHERE true AND e.organization_id = ''00000000-0000-0000-0000-000000000007'' ORDER BY e.id LIMIT 100');

-- A time window with a routing key narrows by the key; alone, it walks the
-- primary key in id order (there is deliberately no index on ts).
SELECT indexes_used('SELECT e.* FROM execution_events e WHERE true AND e.execution_id = ''e7'' AND e.ts >= ''2026-01-02'' ORDER BY e.id LIMIT 100');
SELECT indexes_used('SELECT e.* FROM execution_events e WHERE true AND e.ts >= ''2026-01-02'' AND e.ts < ''2026-01-02 00:10'' ORDER BY e.id LIMIT 100');

-- Cleanup picks the oldest expired rows by expires_at and deletes them by id,
-- without reading the rest of the table.
SELECT indexes_used('DELETE FROM execution_events WHERE id = ANY (ARRAY(SELECT id FROM execution_events WHERE expires_at <= ''2026-01-31 01:00:00+00'' ORDER BY expires_at LIMIT 10000))');

DROP FUNCTION indexes_used(text);
DROP EXTENSION rtevents;

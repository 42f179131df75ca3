-- Rows that come by plain INSERT and COPY are events like any other, and
-- the insert path keeps the horizon (ids that may still commit) exact.
CREATE EXTENSION rtevents;

INSERT INTO execution_events (type, execution_id, data)
VALUES ('job_started', 'e1', '{"n": 1}'), ('job_progress', 'e1', '{"n": 2}');

COPY execution_events (type, execution_id, job_id, data) FROM stdin;
job_progress	e2	j1	{"pct": 10}
job_progress	e2	j1	{"pct": 20}
job_completed	e2	j1	{}
\.

SELECT id, type, execution_id, job_id, data, expires_at > now() AS expires
FROM execution_events ORDER BY id;

-- The claim comes before the draw: while the statement runs, before its row
-- has an id, the horizon already holds a bound no higher than that id.
BEGIN;
INSERT INTO execution_events (type, data)
SELECT 'probe', jsonb_build_object('horizon_during', rt_horizon())
RETURNING id AS probe_id, (data->>'horizon_during')::bigint = id AS bound_is_the_id;
SELECT rt_horizon() = max(id) AS holds_probe_id FROM execution_events;
COMMIT;
SELECT rt_horizon() AS after_commit;

-- Nested statements: the inner rt_publish draws its id before the outer row
-- does, and the horizon must hold the lower one.
BEGIN;
INSERT INTO execution_events (type, data)
SELECT 'outer', jsonb_build_object('inner_id', rt_publish('inner'))
RETURNING (data->>'inner_id')::bigint < id AS inner_drew_first;
SELECT rt_horizon() = (SELECT min(id) FROM execution_events
					   WHERE type IN ('inner', 'outer')) AS holds_lowest;
ROLLBACK;

-- A statement that fails inside a subtransaction keeps the claim (its ids
-- are decided as aborted either way) until the transaction ends.
CREATE FUNCTION insert_failing() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	BEGIN
		INSERT INTO execution_events (type) SELECT (1 / (random() * 0)::int)::text;
	EXCEPTION WHEN division_by_zero THEN
		RETURN 'caught';
	END;
	RETURN 'not reached';
END $$;
BEGIN;
SELECT insert_failing();
SELECT rt_horizon() IS NOT NULL AS still_claimed;
COMMIT;
SELECT rt_horizon() AS after_commit;

-- The same with a savepoint around a statement that fails after its rows.
\set VERBOSITY terse
BEGIN;
SAVEPOINT s;
INSERT INTO execution_events (type) VALUES ('fine'), ('');
ROLLBACK TO SAVEPOINT s;
SELECT rt_horizon() IS NOT NULL AS still_claimed;
ROLLBACK;
SELECT rt_horizon() AS after_rollback;

-- A larger sequence cache would hand out ids out of order: refused.
ALTER TABLE execution_events ALTER COLUMN id SET CACHE 10;
\c
INSERT INTO execution_events (type) VALUES ('cached');
ALTER TABLE execution_events ALTER COLUMN id SET CACHE 1;
\c
INSERT INTO execution_events (type) VALUES ('uncached') RETURNING type;

-- Ids given explicitly (a restore, a migration): above the sequence they
-- are taken, and the sequence follows them, so that ids drawn later come
-- after them; below the ids that may still commit they are refused, since
-- live clients may have moved past them.
INSERT INTO execution_events (id, type) VALUES (1000, 'explicit');
SELECT rt_publish('after_explicit') = 1001 AS drawn_after_it;
COPY execution_events (id, type) FROM stdin;
1500	copied
2000	copied
\.
INSERT INTO execution_events (type) VALUES ('after_copy') RETURNING id;
INSERT INTO execution_events (id, type) VALUES (10, 'too_low');
INSERT INTO execution_events (id, type) VALUES (2001, 'taken');
SELECT count(*) AS refused_rows FROM execution_events WHERE type IN ('too_low', 'taken');

DROP FUNCTION insert_failing();
DROP EXTENSION rtevents;

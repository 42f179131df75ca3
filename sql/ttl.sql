-- TTL cleanup deletes expired events, in batches, and nothing else.
CREATE EXTENSION rtevents;

INSERT INTO execution_events (type, expires_at, data)
SELECT 'expired', now() - g * interval '1 minute', jsonb_build_object('age', g)
FROM generate_series(1, 25) g;
INSERT INTO execution_events (type, expires_at)
SELECT 'live', now() + interval '1 day' FROM generate_series(1, 5);
INSERT INTO execution_events (type, expires_at) VALUES ('forever', NULL);
SELECT rt_publish('published', ttl => '1 minute') > 0 AS published;

-- One batch at most: the oldest ten go first.
SELECT rt_cleanup(10, 1);
SELECT count(*) AS expired_left,
	   min((data->>'age')::int) AS youngest_kept, max((data->>'age')::int) AS oldest_kept
FROM execution_events WHERE type = 'expired';

-- Batches of 4 until nothing expired is left.
SELECT rt_cleanup(4);
SELECT type, count(*) FROM execution_events GROUP BY type ORDER BY type;

-- Nothing left to do.
SELECT rt_cleanup();

-- An expiry at the transaction's start time has expired.
INSERT INTO execution_events (type, expires_at) VALUES ('edge', now());
SELECT rt_cleanup();

DROP EXTENSION rtevents;

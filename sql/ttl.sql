-- TTL cleanup deletes expired events, in batches, and nothing else; it
-- raises the retention mark to the highest id it deleted, which rt_gap()
-- compares resume cursors with.
CREATE EXTENSION rtevents;

INSERT INTO execution_events (type, expires_at, data)
SELECT 'expired', now() - g * interval '1 minute', jsonb_build_object('age', g)
FROM generate_series(1, 25) g;
INSERT INTO execution_events (type, expires_at)
SELECT 'live', now() + interval '1 day' FROM generate_series(1, 5);
INSERT INTO execution_events (type, expires_at) VALUES ('forever', NULL);
SELECT rt_publish('published', ttl => '1 minute') > 0 AS published;

-- Ids 1 to 25 are 'expired' with age = id (the higher the id, the earlier it
-- expired), 26 to 30 'live', 31 'forever', 32 'published'.  Nothing deleted
-- yet: the retention mark is 0 (no row), and no cursor has a gap.
SELECT count(*) AS mark_rows FROM rtevents_retention;
SELECT * FROM rt_retention();
SELECT rt_gap(0) AS gap_0, rt_gap(-1) AS gap_negative, rt_gap(NULL) AS gap_null;

-- One batch at most: the oldest ten go first.
CREATE TEMP TABLE before_ids AS SELECT id FROM execution_events;
SELECT rt_cleanup(10, 1);
SELECT count(*) AS expired_left,
	   min((data->>'age')::int) AS youngest_kept, max((data->>'age')::int) AS oldest_kept
FROM execution_events WHERE type = 'expired';
-- The mark is the highest id that batch deleted (25, which expired first:
-- not the last one deleted in expiry order, 16), while ids below it are kept.
SELECT min(b.id) AS min_deleted, max(b.id) AS max_deleted,
	   (SELECT deleted_upto FROM rtevents_retention) AS deleted_upto
FROM before_ids b WHERE b.id NOT IN (SELECT id FROM execution_events);
SELECT * FROM rt_retention();
-- A cursor below the mark has a gap: the lowest id above it still stored.
-- At or above the mark: no gap.  A negative cursor counts as 0.
SELECT rt_gap(0) AS gap_0, rt_gap(-1) AS gap_negative, rt_gap(10) AS gap_10,
	   rt_gap(15) AS gap_15, rt_gap(24) AS gap_24, rt_gap(25) AS gap_25,
	   rt_gap(26) AS gap_26, rt_gap(1000) AS gap_1000, rt_gap(NULL) AS gap_null;

-- Batches of 4 until nothing expired is left.  These delete ids 1 to 15,
-- below the mark: it stays at 25.
SELECT rt_cleanup(4);
SELECT type, count(*) FROM execution_events GROUP BY type ORDER BY type;
SELECT * FROM rt_retention();
SELECT rt_gap(0) AS gap_0, rt_gap(15) AS gap_15, rt_gap(25) AS gap_25;

-- Nothing left to do, and the mark's row is not even touched: the same row
-- version (not updated) with the same xmax (not locked, which would set it).
CREATE TEMP TABLE mark_before AS
	SELECT xmin::text AS row_xmin, xmax::text AS row_xmax, deleted_upto
	FROM rtevents_retention;
SELECT rt_cleanup();
SELECT r.xmin::text = b.row_xmin AS same_version, r.xmax::text = b.row_xmax AS same_xmax,
	   r.deleted_upto
FROM rtevents_retention r, mark_before b;
SELECT count(*) AS mark_rows FROM rtevents_retention;

-- The mark commits or rolls back with the deletes.
INSERT INTO execution_events (type, expires_at) VALUES ('rolled_back', now() - interval '1 hour');
BEGIN;
SELECT rt_cleanup();
SELECT deleted_upto FROM rtevents_retention;
ROLLBACK;
SELECT deleted_upto FROM rtevents_retention;
SELECT id, type FROM execution_events WHERE type = 'rolled_back';
SELECT rt_cleanup();
SELECT * FROM rt_retention();

-- An expiry at the transaction's start time has expired.
INSERT INTO execution_events (type, expires_at) VALUES ('edge', now());
SELECT rt_cleanup();
SELECT deleted_upto FROM rtevents_retention;

-- Out of order: a later id that expires earlier than the ids before it.
-- Cleanup takes it alone and the mark jumps to it over the ids still kept.
INSERT INTO execution_events (type, expires_at)
VALUES ('kept', now() + interval '1 day'), ('kept', now() + interval '1 day');
INSERT INTO execution_events (type, expires_at)
VALUES ('early', now() - interval '1 second');
SELECT id, type FROM execution_events WHERE id > 34 ORDER BY id;
SELECT rt_cleanup();
SELECT * FROM rt_retention();
-- Below the mark: the lowest id stored above the cursor (35, 36), or, with
-- nothing stored above it, the mark + 1 (38); at the mark: no gap.
SELECT rt_gap(34) AS gap_34, rt_gap(35) AS gap_35, rt_gap(36) AS gap_36,
	   rt_gap(37) AS gap_37;

-- rt_delete_events (DELETE /api/events): by ts, a stretch of ids at a time.
-- Ids 38 to 47 are old (ts a day back) but never expire, 48 and 49 are new.
INSERT INTO execution_events (type, ts, expires_at)
SELECT 'old', now() - interval '1 day', NULL FROM generate_series(1, 10);
INSERT INTO execution_events (type, expires_at) VALUES ('new', NULL), ('new', NULL);
SELECT min(id) AS first_old, max(id) FILTER (WHERE type = 'old') AS last_old,
	   max(id) AS last FROM execution_events WHERE id > 37;
-- The first stretch, (37, 42]: five old events; the next starts after 42.
SELECT * FROM rt_delete_events(now() - interval '1 hour', 37, 5);
-- Then (42, 47]: the other five; (47, 52]: nothing old, and nothing after.
SELECT * FROM rt_delete_events(now() - interval '1 hour', 42, 5);
SELECT * FROM rt_delete_events(now() - interval '1 hour', 47, 5);
SELECT type, count(*) FROM execution_events WHERE id > 37 GROUP BY type ORDER BY type;
-- The mark follows the highest id deleted.
SELECT deleted_upto FROM rtevents_retention;
-- A gap between stretches is skipped: from 0, the next stretch starts at
-- the first stored id above the first stretch.
SELECT next_after > 0 AS skips_ahead FROM rt_delete_events(now() - interval '1 hour', 0, 1);
SELECT * FROM rt_delete_events(NULL);
SELECT * FROM rt_delete_events(now(), 0, 0);

DROP EXTENSION rtevents;

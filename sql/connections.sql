-- rtevents_connections: the server worker's clients, from shared memory.
-- This cluster's worker listens nowhere (test/regress.conf), so it has none.
CREATE EXTENSION rtevents;

SELECT count(*) AS connections FROM rtevents_connections;
SELECT count(*) AS rows FROM rt_connections();

-- The columns, in order, with their types.
SELECT attname, format_type(atttypid, atttypmod)
FROM pg_attribute
WHERE attrelid = 'rtevents_connections'::regclass AND attnum > 0
ORDER BY attnum;

-- The slots are sized by rtevents.max_connections, fixed at server start.
SELECT setting, context FROM pg_settings WHERE name = 'rtevents.max_connections';

-- Peer addresses are client_addr's kin: pg_read_all_stats, not PUBLIC.
CREATE ROLE regress_rtevents_nobody;
CREATE ROLE regress_rtevents_stats IN ROLE pg_read_all_stats;
SELECT r, has_table_privilege(r, 'rtevents_connections', 'SELECT') AS view,
	   has_function_privilege(r, 'rt_connections()', 'EXECUTE') AS function
FROM unnest(ARRAY['regress_rtevents_nobody', 'regress_rtevents_stats']) r;
SET ROLE regress_rtevents_nobody;
SELECT count(*) FROM rtevents_connections;
SELECT count(*) FROM rt_connections();
SET ROLE regress_rtevents_stats;
SELECT count(*) AS connections FROM rtevents_connections;
RESET ROLE;
DROP ROLE regress_rtevents_nobody;
DROP ROLE regress_rtevents_stats;

SELECT obj_description('rtevents_connections'::regclass, 'pg_class') IS NOT NULL
	   AS view_commented,
	   obj_description('rt_connections()'::regprocedure, 'pg_proc') IS NOT NULL
	   AS function_commented;

DROP EXTENSION rtevents;

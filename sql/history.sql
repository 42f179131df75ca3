-- rt_events(): the filters and cursor of GET /api/events.
CREATE EXTENSION rtevents;

INSERT INTO execution_events (type, ts, execution_id, batch_id, job_id, organization_id, data)
SELECT CASE g % 3 WHEN 0 THEN 'job_started' WHEN 1 THEN 'job_progress' ELSE 'job_completed' END,
	   timestamptz '2026-11-22 10:00:00+00' + g * interval '1 minute',
	   'e' || (g % 2),
	   'b' || (g % 4),
	   'j' || (g % 5),
	   CASE WHEN g % 2 = 0 THEN 'aaaaaaaa-0000-0000-0000-000000000000'::uuid
			ELSE 'bbbbbbbb-0000-0000-0000-000000000000'::uuid END,
	   jsonb_build_object('g', g)
FROM generate_series(1, 30) g;

-- No filter: the first page, ascending id; the default limit is 100.
SELECT count(*), min(id), max(id) FROM rt_events();
SELECT id FROM rt_events(lim => 5);

-- Each filter alone.
SELECT id, execution_id FROM rt_events(execution_id => 'e1', lim => 4);
SELECT id, batch_id FROM rt_events(batch_id => 'b2', lim => 4);
SELECT id, job_id FROM rt_events(job_id => 'j3');
SELECT count(*) FROM rt_events(organization_id => 'aaaaaaaa-0000-0000-0000-000000000000');
SELECT id, type FROM rt_events(types => ARRAY['job_started'], lim => 3);
SELECT id, type FROM rt_events(types => ARRAY['job_started', 'job_completed'], lim => 4);

-- Combined with AND.
SELECT id FROM rt_events(execution_id => 'e0', job_id => 'j4', types => ARRAY['job_completed']);

-- The cursor: after is exclusive, pages follow on without gap or overlap.
SELECT id FROM rt_events(after => 27);
SELECT array_agg(id) AS page1 FROM rt_events(execution_id => 'e1', lim => 5);
SELECT array_agg(id) AS page2 FROM rt_events(execution_id => 'e1', after => 9, lim => 5);
SELECT id FROM rt_events(lim => 3, off => 10);

-- since is inclusive, until exclusive.
SELECT id, ts FROM rt_events(since => '2026-11-22 10:05:00+00', until => '2026-11-22 10:08:00+00');

-- No match is an empty result, not an error.
SELECT count(*) FROM rt_events(execution_id => 'nope');
SELECT count(*) FROM rt_events(after => 1000000);

-- Filter values are data, never SQL.
SELECT count(*) FROM rt_events(execution_id => $$e1' OR '1'='1$$);
SELECT count(*) FROM rt_events(types => ARRAY['x''); DROP TABLE execution_events; --']);
SELECT count(*) AS still_there FROM execution_events;

-- History rows as clients receive them.
SELECT rt_event_json(e) FROM rt_events(job_id => 'j2', lim => 2) e;

DROP EXTENSION rtevents;

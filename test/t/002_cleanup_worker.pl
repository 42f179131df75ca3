# The cleanup worker: starts with the server, deletes expired events every
# rtevents.cleanup_interval in batches, follows reloads, survives errors,
# stays off on a standby until promotion, and stops cleanly.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RtEventsTest qw(rtevents_node);

my $node = rtevents_node('cleanup',
	init => { allows_streaming => 1 },
	conf => "rtevents.cleanup_interval = 1\nrtevents.cleanup_batch_size = 1000\n");

my $worker_query =
  q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'rtevents cleanup'};
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM ($worker_query) w")
  or die 'cleanup worker did not start';
my $pid = $node->safe_psql('postgres', $worker_query);
ok($pid, 'cleanup worker runs');

# Without the extension in rtevents.database it waits quietly.
sleep 2;
is($node->safe_psql('postgres', $worker_query), $pid,
	'no extension yet: the worker keeps running');

$node->safe_psql('postgres', 'CREATE EXTENSION rtevents');
$node->safe_psql('postgres', q{
	INSERT INTO execution_events (type, expires_at)
	SELECT 'old', now() - interval '1 hour' FROM generate_series(1, 5500);
	INSERT INTO execution_events (type, expires_at)
	SELECT 'young', now() + interval '1 day' FROM generate_series(1, 10);
	INSERT INTO execution_events (type, expires_at) VALUES ('forever', NULL);
});
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM execution_events WHERE type = 'old'}),
	'expired events are deleted on the interval');
is($node->safe_psql('postgres', 'SELECT count(*) FROM execution_events'),
	'11', 'unexpired and never-expiring events are kept');
ok( $node->poll_query_until('postgres',
		q{SELECT n_tup_del FROM pg_stat_user_tables WHERE relname = 'execution_events'},
		'5500'),
	'the worker deleted exactly the expired rows');

# A reload that sets the interval to 0 pauses cleanup; setting it back resumes.
$node->append_conf('postgresql.conf', "rtevents.cleanup_interval = 0\n");
$node->reload;
$node->poll_query_until('postgres', q{SELECT current_setting('rtevents.cleanup_interval') = '0'});
$node->safe_psql('postgres',
	q{INSERT INTO execution_events (type, expires_at) VALUES ('paused', now() - interval '1 hour')});
sleep 3;
is($node->safe_psql('postgres', q{SELECT count(*) FROM execution_events WHERE type = 'paused'}),
	'1', 'cleanup_interval = 0: nothing is deleted');
$node->append_conf('postgresql.conf', "rtevents.cleanup_interval = 1\n");
$node->reload;
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM execution_events WHERE type = 'paused'}),
	'interval restored by reload: cleanup resumes');

# An error in cleanup is reported, and the worker goes on.
$node->safe_psql('postgres', q{
	ALTER FUNCTION rt_cleanup(integer, integer) RENAME TO rt_cleanup_saved;
	CREATE FUNCTION rt_cleanup(integer, integer) RETURNS bigint
		LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'cleanup sabotaged'; END$$;
});
ok($node->wait_for_log(qr/cleanup sabotaged/), 'a failing cleanup is logged');
sleep 2;
is($node->safe_psql('postgres', $worker_query), $pid, 'and the same worker carries on');
$node->safe_psql('postgres', q{
	DROP FUNCTION rt_cleanup(integer, integer);
	ALTER FUNCTION rt_cleanup_saved(integer, integer) RENAME TO rt_cleanup;
});

# A standby runs no cleanup (it cannot write); promotion starts it.
$node->backup('b1');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($node, 'b1', has_streaming => 1);
$standby->start;
$node->safe_psql('postgres',
	q{INSERT INTO execution_events (type, expires_at) VALUES ('young2', now() + interval '3 seconds')});
$node->wait_for_catchup($standby);
is($standby->safe_psql('postgres', "SELECT count(*) FROM ($worker_query) w"),
	'0', 'no cleanup worker on a standby');
$node->stop('fast');
$standby->promote;
ok( $standby->poll_query_until('postgres', "SELECT count(*) = 1 FROM ($worker_query) w"),
	'promotion starts the cleanup worker');
ok( $standby->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM execution_events WHERE type = 'young2'}),
	'and it deletes what expires on the new primary');

# Smart shutdown waits only for client sessions; the worker stops with it.
ok($standby->stop('smart', fail_ok => 1), 'smart shutdown completes');
ok($standby->log_contains(
		qr/terminating background worker "rtevents cleanup" due to administrator command/),
	'the worker stopped on the shutdown request');
ok(!$standby->log_contains(qr/terminated by signal|terminating any other active server processes/),
	'nothing crashed on the way down');

done_testing();

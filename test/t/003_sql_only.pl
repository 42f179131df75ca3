# Without shared_preload_libraries: publishing and history work from SQL,
# there is no worker, and rt_horizon() says what is missing.
use strict;
use warnings;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RtEventsTest qw(notifications_of);

my $node = PostgreSQL::Test::Cluster->new('sql_only');
$node->init;
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION rtevents');

my @n = notifications_of($node,
	q{SELECT rt_publish('job_started', execution_id => 'e1');});
is(decode_json($n[0])->{executionId}, 'e1', 'rt_publish notifies without preloading');
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM rt_events(execution_id => 'e1')}), '1', 'history works');
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'rtevents%'}),
	'0', 'no rtevents worker');
my ($ret, $stdout, $stderr) = $node->psql('postgres', 'SELECT rt_horizon()');
like($stderr, qr/rtevents is not loaded through shared_preload_libraries/,
	'rt_horizon() names what is missing');
is($node->safe_psql('postgres', q{SELECT count(*) FROM rtevents_connections}),
	'0', 'rtevents_connections: no shared memory, no worker, no rows');

$node->stop;
done_testing();

# NOTIFY payloads as a LISTENing session sees them: rt_publish sends the
# event's JSON, big events and plain INSERT/COPY send a reference, rollbacks
# send nothing, and commits arrive in commit order.
use strict;
use warnings;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RtEventsTest qw(rtevents_node notifications_of parse_notifications);

my $node = rtevents_node('notify', conf => "rtevents.cleanup_interval = 0\n");
$node->safe_psql('postgres', 'CREATE EXTENSION rtevents');
my $json = JSON::PP->new->canonical;

# rt_publish: the payload is the event exactly as clients receive it.
my @n = notifications_of($node,
	q{SELECT rt_publish('job_progress', '{"pct": 45}', execution_id => 'e1', job_id => 'j1');});
is(scalar @n, 1, 'one publish, one notification');
my $event = decode_json($n[0]);
is($event->{type}, 'job_progress', 'payload carries the type');
is($event->{executionId}, 'e1', 'payload carries executionId');
is($event->{jobId}, 'j1', 'payload carries jobId');
ok(!exists $event->{batchId}, 'null routing keys are left out');
is_deeply($event->{data}, { pct => 45 }, 'payload carries data as JSON');
like($event->{ts}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$/, 'ts is RFC 3339 in UTC');
is($n[0],
	$node->safe_psql('postgres',
		"SELECT rt_event_json(e) FROM execution_events e WHERE id = $event->{id}"),
	'payload is byte for byte the stored event as rt_event_json renders it');

# A rolled-back transaction notifies nothing, a committed one everything.
@n = notifications_of($node, q{BEGIN; SELECT rt_publish('doomed'); ROLLBACK;});
is(scalar @n, 0, 'rollback: no notification');
@n = notifications_of($node,
	q{BEGIN; SELECT rt_publish('a'); SELECT rt_publish('b'); SELECT rt_publish('c'); COMMIT;});
is_deeply([ map { decode_json($_)->{type} } @n ], [qw(a b c)],
	'one transaction: every event, in order, at commit');

# Over NOTIFY's 8000-byte limit: a reference to the row instead.
@n = notifications_of($node,
	q{SELECT rt_publish('job_log', jsonb_build_object('log', repeat('x', 20000)));});
is(scalar @n, 1, 'big event: one notification');
my $ref = decode_json($n[0])->{ref};
ok($ref, 'big event: payload is a reference');
is($ref->{count}, 1, 'reference counts one row');
is($ref->{from}, $ref->{to}, 'reference names one id');
is( $node->safe_psql('postgres',
		"SELECT octet_length(data->>'log') FROM execution_events WHERE id = $ref->{from}"),
	'20000',
	'the referenced row holds the whole payload');

# Plain INSERT: one reference per statement, covering its rows.
@n = notifications_of($node,
	q{INSERT INTO execution_events (type, execution_id) SELECT 'bulk', 'e9' FROM generate_series(1, 500);});
is(scalar @n, 1, 'INSERT of 500 rows: one notification');
$ref = decode_json($n[0])->{ref};
is($ref->{count}, 500, 'reference counts the statement\'s rows');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM execution_events WHERE type = 'bulk' AND id BETWEEN $ref->{from} AND $ref->{to}"),
	'500',
	'reference range covers every inserted row');

# COPY: likewise.
my ($stdout, $stderr);
$node->psql('postgres',
	"LISTEN rtevents;\nCOPY execution_events (type, job_id) FROM stdin;\ncopied\tj1\ncopied\tj2\ncopied\tj3\n\\.\nSELECT 'done';\n",
	stdout => \$stdout, stderr => \$stderr);
@n = parse_notifications($stdout);
is(scalar @n, 1, 'COPY of 3 rows: one notification');
is(decode_json($n[0])->{ref}{count}, 3, 'COPY reference counts 3 rows');

# A statement that inserts nothing announces nothing.
@n = notifications_of($node,
	q{INSERT INTO execution_events (type) SELECT 'none' WHERE false;});
is(scalar @n, 0, 'empty INSERT: no notification');

# Concurrent publishers: notifications come in commit order, which is not
# id order; this is why the worker needs the horizon.
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN rtevents');
my $a = $node->background_psql('postgres');
my $b = $node->background_psql('postgres');
$a->query_safe('BEGIN');
my $id_a = $a->query_safe(q{SELECT rt_publish('first_drawn')});
my $id_b = $b->query_safe(q{SELECT rt_publish('first_committed')});
ok($id_a < $id_b, 'a drew its id before b');
is($node->safe_psql('postgres', 'SELECT rt_horizon()'), $id_a,
	'while a is open, the horizon holds a\'s id');
$a->query_safe('COMMIT');
is($node->safe_psql('postgres', 'SELECT rt_horizon()'), '',
	'with every publisher committed, nothing is held back');
my @order = map { decode_json($_)->{id} }
  parse_notifications(scalar $listener->query('SELECT 1'));
is_deeply(\@order, [ $id_b, $id_a ], 'notifications arrive in commit order');
$_->quit for ($listener, $a, $b);

# The channel follows rtevents.channel after a reload.
$node->safe_psql('postgres', q{ALTER SYSTEM SET rtevents.channel = 'jobs'});
$node->reload;
$node->poll_query_until('postgres', q{SELECT current_setting('rtevents.channel') = 'jobs'})
  or die 'reload did not take';
@n = notifications_of($node, q{SELECT rt_publish('renamed');}, channel => 'jobs');
is(decode_json($n[0])->{type}, 'renamed', 'events go to the configured channel');

$node->stop;
done_testing();

# rtevents_connections: the server worker's clients, one row each, from
# shared memory; and rtevents.max_connections, past which a client is
# refused with 503 server_full while those already in keep streaming.
use strict;
use warnings;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use RtEventsTest qw(rtevents_node wait_until);
use RtWsClient;

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $node = rtevents_node('connections', conf => qq{
rtevents.listen_addresses = '127.0.0.1'
rtevents.port = $port
rtevents.cleanup_interval = 0
rtevents.max_connections = 2
# the worker learns that an SSE client left when a write to it fails: a
# keep-alive every second makes that quick
rtevents.heartbeat = 1
});
$node->safe_psql('postgres', 'CREATE EXTENSION rtevents');

sub healthz
{
	my $out = '';
	IPC::Run::run([ 'curl', '-s', '--max-time', '2', "http://127.0.0.1:$port/healthz" ],
		'>', \$out);
	return $out eq 'ok';
}
ok(wait_until(\&healthz), 'the worker serves');

# A streaming client: curl -N in the background, its ids collected.
sub sse_open
{
	my ($query) = @_;
	my $out = '';
	my $h = IPC::Run::start([ 'curl', '-sN', "http://127.0.0.1:$port/api/events/stream$query" ],
		'>', \$out, '2>', \my $err);
	return { h => $h, out => \$out };
}

sub sse_ids
{
	my ($c) = @_;
	$c->{h}->pump_nb if $c->{h}->pumpable;
	return ${ $c->{out} } =~ /^id: (\d+)$/mg;
}

sub sse_started
{
	my ($c) = @_;
	$c->{h}->pump_nb if $c->{h}->pumpable;
	return ${ $c->{out} } =~ /\Aretry: \d+\n\n/;
}

sub sse_close { $_[0]{h}->kill_kill; }

sub connections
{
	return $node->safe_psql('postgres', 'SELECT count(*) FROM rtevents_connections');
}

is(connections(), '0', 'no client connected: no rows');

# Two SSE streams: two rows, each as the worker sees its client.
my @streams = map { sse_open('?executionId=c1') } 1 .. 2;
ok(wait_until(sub { !grep { !sse_started($_) } @streams }), 'two SSE streams open');
ok(wait_until(sub { connections() eq '2' }), 'rtevents_connections shows two rows')
  or diag('rows: ' . connections());
my @rows = split /\n/, $node->safe_psql('postgres', q{
	SELECT transport, peer, subscriptions, queued_bytes >= 0,
		   connected_at <= last_activity AND last_activity <= now(), id
	FROM rtevents_connections ORDER BY id});
is_deeply([ map { s/\|\d+$//r } @rows ],
	[ ('sse|127.0.0.1|1|t|t') x 2 ],
	'each: transport sse, peer 127.0.0.1, one subscription, sane times');
my @ids = map { /\|(\d+)$/ ? $1 : () } @rows;
ok(@ids == 2 && $ids[0] > 0 && $ids[0] != $ids[1], 'each has its own id');

# rtevents.max_connections = 2: a third client is refused, with the
# contract's JSON error, and takes no slot.
my $refused = '';
IPC::Run::run([ 'curl', '-s', '--max-time', '10', '-w', '\n%{http_code}',
		"http://127.0.0.1:$port/api/events/stream?executionId=c1" ],
	'>', \$refused);
like($refused, qr/^\{"error":"server_full","message":"[^"]+"\}\n503$/,
	'a third SSE client gets 503 {"error":"server_full",...}');
is(connections(), '2', 'the refused client holds no slot');
my ($ws_refused, $ws_res) = RtWsClient->connect(port => $port, path => '/ws', timeout => 5);
ok(!$ws_refused, 'a WebSocket client is refused too, before the upgrade');
is($ws_res->{status}, 503, '... with 503');
is($ws_res->{json}{error}, 'server_full', '... {"error":"server_full",...}');
is(connections(), '2', '... and holds no slot');

# The two already in keep streaming.
my $before = $node->safe_psql('postgres',
	'SELECT max(last_activity) FROM rtevents_connections');
my $event = $node->safe_psql('postgres',
	q{SELECT rt_publish('after_refusal', execution_id => 'c1')});
ok(wait_until(sub { !grep { !grep { $_ == $event } sse_ids($_) } @streams }),
	'both streams still get events');
ok( wait_until(sub {
			$node->safe_psql('postgres', qq{
				SELECT bool_and(last_activity > '$before') FROM rtevents_connections}) eq 't';
		}),
	'a write to a client moves its last_activity');

# They disconnect: their rows go, and their slots serve the next clients.
sse_close($_) for @streams;
ok(wait_until(sub { connections() eq '0' }), 'after they disconnect: zero rows')
  or diag('rows: ' . connections());
my $next = sse_open('?executionId=c1');
ok(wait_until(sub { sse_started($next) }), 'a freed slot takes a new client');
ok(wait_until(sub { connections() eq '1' }), '... listed with a row of its own');
is($node->safe_psql('postgres', 'SELECT min(id) > ' . $ids[1] . ' FROM rtevents_connections'),
	't', '... and a fresh id');
sse_close($next);
ok(wait_until(sub { connections() eq '0' }), 'and gone again when it leaves');

# A WebSocket client: its row counts its subscriptions as they change.
my $ws = RtWsClient->connect(port => $port, path => '/ws?executionId=c1', timeout => 5);
$ws->recv_until(sub { $_->{op} eq 'subscribed' }, 5);
$ws->send_json({ op => 'subscribe', sub => 'more', filter => { jobId => 'j' } });
$ws->recv_until(sub { $_->{op} eq 'subscribed' }, 5);
ok( wait_until(sub {
			$node->safe_psql('postgres',
				q{SELECT transport || '|' || peer || '|' || subscriptions FROM rtevents_connections})
			  eq 'websocket|127.0.0.1|2';
		}),
	'a WebSocket client: transport websocket, its peer, two subscriptions');
$ws->send_json({ op => 'unsubscribe', sub => 'more' });
$ws->recv_until(sub { $_->{op} eq 'unsubscribed' }, 5);
ok( wait_until(sub {
			$node->safe_psql('postgres', 'SELECT subscriptions FROM rtevents_connections') eq '1';
		}),
	'... one after an unsubscribe');
like(`curl -s http://127.0.0.1:$port/metrics`,
	qr/^rtevents_connections\{transport="websocket"\} 1$/m,
	'/metrics counts it');
$ws->close(1000, 'bye');
ok(wait_until(sub { connections() eq '0' }), 'its row goes when it closes');

# A restarted worker starts with every slot free.
$next = sse_open('?executionId=c1');
ok(wait_until(sub { connections() eq '1' }), 'a client, before the worker restarts');
my ($worker) = slurp_file($node->logfile) =~ /\[(\d+)\] LOG:  rtevents server listening on/;
ok(defined $worker && kill('TERM', $worker), 'SIGTERM to the worker');
ok(wait_until(sub { connections() eq '0' }, 5),
	'the worker gone, before its restart: its client\'s row is gone');
sse_close($next);
ok(wait_until(\&healthz), 'the worker is back');
@streams = map { sse_open('?executionId=c1') } 1 .. 2;
ok(wait_until(sub { connections() eq '2' }),
	'the restarted worker takes max_connections clients again');
sse_close($_) for @streams;
ok(wait_until(sub { connections() eq '0' }), 'zero rows at the end');

$node->stop;
done_testing();

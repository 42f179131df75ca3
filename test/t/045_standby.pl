# A worker on a streaming standby: its LISTEN feed points at the primary, and
# it replays and serves history from its own replica, waiting for the replica
# to catch up with what the live stream has settled, so that a client
# catching up on a standby misses nothing.
use strict;
use warnings;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RtEventsTest qw(rtevents_node wait_until);
use RtWsClient;

my $primary = rtevents_node('primary', init => { allows_streaming => 1 },
	conf => "rtevents.cleanup_interval = 0\n");
$primary->safe_psql('postgres', 'CREATE EXTENSION rtevents');

sub publish_range
{
	my ($from, $to) = @_;
	$primary->safe_psql('postgres', qq{
		SELECT rt_publish('step', jsonb_build_object('n', n), execution_id => 'e1')
		FROM generate_series($from, $to) n});
}
publish_range(1, 20);

$primary->backup('b1');
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b1', has_streaming => 1);
my $feed = sprintf('host=%s port=%d dbname=postgres', $primary->host, $primary->port);
$standby->append_conf('postgresql.conf', qq{
rtevents.listen_addresses = '127.0.0.1'
rtevents.port = $port
rtevents.feed_conninfo = '$feed'
});
$standby->start;
$primary->wait_for_catchup($standby);

sub metric
{
	my ($name) = @_;
	my $out = `curl -s --max-time 2 http://127.0.0.1:$port/metrics`;
	return $out =~ /^$name (\S+)$/m ? $1 : undef;
}
ok(wait_until(sub { (`curl -s --max-time 2 http://127.0.0.1:$port/healthz` // '') eq 'ok' }),
	"the standby's worker serves");

# Where its two connections go: the feed to the primary, replays to the
# standby itself.
is( $standby->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rtevents replay'}),
	'1', "the standby's replay connection is to the standby");
ok( wait_until(sub {
			$primary->safe_psql('postgres',
				q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rtevents feed'
				  AND client_addr IS NULL AND backend_type = 'client backend'}) >= 1;
		}),
	"the standby's feed is a session on the primary");

# The replica stops replaying; the primary goes on publishing, and the
# standby's feed, reading the primary, moves the live stream past what the
# replica has.
$standby->safe_psql('postgres', 'SELECT pg_wal_replay_pause()');
ok( $standby->poll_query_until('postgres',
		q{SELECT pg_get_wal_replay_pause_state() = 'paused'}),
	'replay paused on the standby');
publish_range(21, 30);
ok(wait_until(sub { (metric('rtevents_last_event_id') // 0) >= 30 }),
	"the standby's live stream has the primary's new events");
is($standby->safe_psql('postgres', 'SELECT count(*) FROM execution_events'),
	'20', 'which its replica does not have yet');

# History up to the stream's last id waits for the replica: served now, it
# would miss 21..30.
my $waits_before = metric('rtevents_replay_replica_waits_total');
my $history = '';
my $curl = IPC::Run::start(
	[ 'curl', '-s', '--max-time', '30',
		"http://127.0.0.1:$port/api/events?executionId=e1&limit=100" ],
	'>', \$history);
ok( wait_until(sub { metric('rtevents_replay_replica_waits_total') > $waits_before }, 10),
	'the history page waits for the replica');
sleep 1;
$curl->pump_nb;
is($history, '', 'and has not answered while the replica is behind');

# A WebSocket client resuming from 0 waits the same way.
my $ws = RtWsClient->connect(port => $port, path => '/ws', timeout => 5);
$ws->recv_until(sub { $_->{op} eq 'welcome' }, 5);
$ws->send_json({ op => 'subscribe', sub => 's', filter => { executionId => 'e1' }, after => 0 });
my @early = $ws->recv_until(sub { $_->{op} eq 'events' }, 2);
is(scalar(grep { $_->{op} eq 'events' } @early), 0,
	'a resuming subscriber gets nothing from a replica that is behind');

$standby->safe_psql('postgres', 'SELECT pg_wal_replay_resume()');
$curl->finish;
my $page = decode_json($history);
is_deeply([ map { $_->{id} } @{ $page->{events} } ], [ 1 .. 30 ],
	'once the replica catches up, history has every event, in order');

publish_range(31, 31);
my @msgs = $ws->recv_until(
	sub {
		$_->{op} eq 'events' && grep { $_->{id} == 31 } @{ $_->{events} };
	},
	10);
my @ids = map { $_->{id} }
  map { @{ $_->{events} } } grep { $_->{op} eq 'events' } (@early, @msgs);
is_deeply(\@ids, [ 1 .. 31 ],
	'the subscriber gets 1..20 from the replica, 21..30 and the live 31, once each');

# The replica's own pages run on the standby, not on the primary.
my $replays = metric('rtevents_replay_queries_total');
cmp_ok($replays, '>=', 2, 'the standby ran the replay pages');

$ws->close;
$standby->stop('fast');
$primary->stop('fast');
done_testing();

# GET /api/events: history as JSON with PROTOCOL.md's filters and cursors,
# pages that chain through "next" without gap or overlap, ids the live
# stream has not decided yet kept out, and 400s for what it cannot mean.
use strict;
use warnings;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use RtEventsTest qw(rtevents_node);

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $node = rtevents_node('history', conf => qq{
rtevents.listen_addresses = '127.0.0.1'
rtevents.port = $port
rtevents.cleanup_interval = 0
});
$node->safe_psql('postgres', 'CREATE EXTENSION rtevents');

sub get
{
	my ($query) = @_;
	my $out = '';
	IPC::Run::run([ 'curl', '-s', '--max-time', '10', '-w', '\n%{http_code}',
			"http://127.0.0.1:$port/api/events$query" ], '>', \$out);
	$out =~ s/\n(\d{3})\z// or return ('000', undef, $out);
	my $status = $1;
	return ($status, eval { decode_json($out) }, $out);
}

my $deadline = time + 30;
usleep(100_000) until time > $deadline || (get('?limit=1'))[0] eq '200';

$node->safe_psql('postgres', q{
	INSERT INTO execution_events (type, ts, execution_id, job_id)
	SELECT CASE WHEN g % 3 = 0 THEN 'job_completed' ELSE 'job_progress' END,
		   timestamptz '2026-11-22 10:00:00+00' + g * interval '1 minute',
		   'e' || (g % 2), 'j' || g
	FROM generate_series(1, 50) g;
});
# The live stream decides ids as it reads them; history waits for that.
usleep(100_000) until time > $deadline + 30 || scalar(@{ (get('?limit=1000'))[1]{events} // [] }) == 50;

my ($status, $page) = get('');
is($status, '200', 'GET /api/events is 200');
is(scalar @{ $page->{events} }, 50, 'all 50 events, the default limit being 100');
is($page->{next}, undef, 'next is null when nothing more is there');
is_deeply([ map { $_->{id} } @{ $page->{events} } ], [ 1 .. 50 ], 'ascending id');
is($page->{events}[2]{type}, 'job_completed', 'events as clients receive them');

# Pages chain through next without gap or overlap.
my @all;
my $after;
for (1 .. 20)
{
	($status, $page) = get('?executionId=e1&limit=7' . (defined $after ? "&after=$after" : ''));
	push @all, map { $_->{id} } @{ $page->{events} };
	last unless defined $page->{next};
	$after = $page->{next};
}
is_deeply(\@all, [ grep { $_ % 2 == 1 } 1 .. 50 ], 'pages of 7 chained by next cover e1 exactly');

($status, $page) = get('?type=job_completed&limit=3');
is_deeply([ map { $_->{id} } @{ $page->{events} } ], [ 3, 6, 9 ], 'type filter');
is($page->{next}, 9, 'a full page names the next cursor');
($status, $page) = get('?type=job_completed,job_progress&jobId=j4');
is_deeply([ map { $_->{id} } @{ $page->{events} } ], [4], 'filters combine with AND');
($status, $page) = get('?since=2026-11-22T10:05:00Z&until=2026-11-22T10:08:00%2B00:00');
is_deeply([ map { $_->{id} } @{ $page->{events} } ], [ 5, 6, 7 ], 'since inclusive, until exclusive');
# an offset's '+' sent unencoded comes as a space: read as the '+' it was
($status, $page) = get('?since=2026-11-22T11:05:00+01:00&until=2026-11-22T10:08:00+00:00');
is_deeply([ map { $_->{id} } @{ $page->{events} } ], [ 5, 6, 7 ], "an unencoded '+' in an offset");
($status, $page) = get('?limit=2&offset=10');
is_deeply([ map { $_->{id} } @{ $page->{events} } ], [ 11, 12 ], 'limit and offset');
($status, $page) = get(q{?executionId=e1'%20OR%20'1'%3D'1});
is_deeply($page->{events}, [], 'an injection string is a value that matches nothing');

# An open transaction's id holds back the ids after it.
my $open = $node->background_psql('postgres');
$open->query_safe('BEGIN');
my $held = $open->query_safe(q{SELECT rt_publish('held')});
my $later = $node->safe_psql('postgres', q{SELECT rt_publish('later')});
usleep(300_000);
($status, $page) = get("?after=50");
is_deeply($page->{events}, [], 'while a lower id may still commit, a higher one is not listed');
my $metric = sub {
	my ($name) = @_;
	`curl -s http://127.0.0.1:$port/metrics` =~ /^$name ([\d.]+)$/m;
	return $1;
};
cmp_ok($metric->('rtevents_stream_held_seconds'), '>', 0.1,
	'/metrics: the stream is waiting on the open transaction');
cmp_ok($metric->('rtevents_stream_holds_total'), '>=', 1, '... counted as a hold');
$open->query_safe('COMMIT');
$open->quit;
usleep(100_000) until time > $deadline + 60 || scalar(@{ (get('?after=50'))[1]{events} // [] }) == 2;
($status, $page) = get("?after=50");
is_deeply([ map { $_->{id} } @{ $page->{events} } ], [ $held, $later ], 'both once it commits, in order');
is($metric->('rtevents_stream_held_seconds'), '0.000', 'after the commit, no wait');
cmp_ok($metric->('rtevents_stream_held_seconds_total'), '>=', 0.25, '... and the wait is in the total');

# Several requests on one kept-alive connection, each answered.
{
	my $out = '';
	IPC::Run::run([ 'curl', '-s', map { "http://127.0.0.1:$port/api/events?limit=1&after=$_" } 1 .. 20 ],
		'>', \$out);
	my @ids = $out =~ /\{"events":\[\{"id":(\d+),/g;
	is_deeply(\@ids, [ 2 .. 21 ], '20 requests on one connection, 20 answers');
}

# A page stops before 16 MB of JSON, and next says where the rest begins.
{
	my ($first, $second) = split /\n/, $node->safe_psql('postgres', q{
		SELECT rt_publish('huge', jsonb_build_object('pad', repeat('x', 9000000)), execution_id => 'huge')
		FROM generate_series(1, 2)});
	usleep(100_000) until time > $deadline + 90 || (get("?after=$first"))[0] eq '200'
	  && scalar(@{ (get("?executionId=huge"))[1]{events} // [] }) >= 1;
	my ($s1, $p1) = get('?executionId=huge');
	is_deeply([ map { $_->{id} } @{ $p1->{events} } ], [$first], 'two 9 MB events: the first page holds one');
	is($p1->{next}, $first, '... and next points past it');
	my ($s2, $p2) = get("?executionId=huge&after=$p1->{next}");
	is_deeply([ map { $_->{id} } @{ $p2->{events} } ], [$second], 'the next page holds the other');
}

# Refusals.
for my $bad ('?limit=0', '?limit=1001', '?offset=-1', '?after=x', '?since=yesterday',
	'?until=2026-11-22', '?organizationId=12', '?jobId=')
{
	my ($s, $body, $raw) = get($bad);
	is($s, '400', "400 for $bad");
	like($raw, qr/^\{"error":"bad_(filter|cursor)","message":"[^"]+"\}$/, '... with the JSON body');
}

$node->stop;
done_testing();

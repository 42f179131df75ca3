# GET /api/events/stream: live events by filter, resume by after and
# Last-Event-ID (from the ring and from the table), refusals, and the
# delivery guarantee under concurrent publishers with out-of-order commits
# and rollbacks while the subscriber disconnects and resumes at random and
# the LISTEN connection is killed.
use strict;
use warnings;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use RtEventsTest qw(rtevents_node wait_until publishers publishers_step publishers_finish);

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $node = rtevents_node('sse', conf => qq{
rtevents.listen_addresses = '127.0.0.1'
rtevents.port = $port
rtevents.cleanup_interval = 0
rtevents.max_client_buffer = '256kB'
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

# A streaming client: curl -N in the background, its output parsed as SSE.
sub sse_open
{
	my ($query, %opts) = @_;
	my $out = '';
	my @cmd = ('curl', '-sN', "http://127.0.0.1:$port/api/events/stream$query");
	push @cmd, '-H', "Last-Event-ID: $opts{last_event_id}"
	  if defined $opts{last_event_id};
	my $h = IPC::Run::start(\@cmd, '>', \$out, '2>', \my $err);
	return { h => $h, out => \$out, events => [], raw => '' };
}

# The events received so far: whole blocks are parsed once and taken off
# the buffer; what follows the last blank line is still arriving.
sub sse_events
{
	my ($c) = @_;
	$c->{h}->pump_nb if $c->{h}->pumpable;
	my $buf = $c->{out};
	my $end = rindex($$buf, "\n\n");
	if ($end >= 0)
	{
		my $whole = substr($$buf, 0, $end + 2, '');
		$c->{raw} .= $whole;
		for my $block (split /\n\n/, $whole)
		{
			my ($id) = $block =~ /^id: (\d+)$/m;
			my ($data) = $block =~ /^data: (.*)$/m;
			push @{ $c->{events} }, { id => $id, event => decode_json($data) }
			  if defined $id && defined $data;
		}
	}
	return @{ $c->{events} };
}

sub sse_wait_for
{
	my ($c, $count) = @_;
	my @events;
	wait_until(sub { @events = sse_events($c); @events >= $count }, 30);
	return @events;
}

sub sse_close { $_[0]{h}->kill_kill; }

sub publish
{
	my ($sql) = @_;
	return $node->safe_psql('postgres', $sql);
}

# Live, by filter: only e1's events, in order, with the PROTOCOL.md framing.
my $live = sse_open('?executionId=e1');
ok( wait_until(sub { $live->{h}->pump_nb; ${ $live->{out} } =~ /\Aretry: \d+\n\n/ }),
	'a retry: hint comes first, at once');
my @ids = map { publish("SELECT rt_publish('t$_', execution_id => 'e" . ($_ % 2 + 1) . "')") }
  1 .. 6;
my @got = sse_wait_for($live, 3);
is_deeply([ map { $_->{id} } @got ],
	[ map { $ids[$_] } grep { $_ % 2 == 1 } 0 .. 5 ],
	'live: exactly the filter\'s events, ascending');
is($got[0]{event}{executionId}, 'e1', 'data is the event JSON');
is($got[0]{id}, $got[0]{event}{id}, 'id: line matches the event id');
like($live->{raw}, qr/\Aretry: \d+\n\nid: /, 'raw stream: retry hint, then events');
unlike($live->{raw}, qr/^event:/m, 'no event: field on data events');
sse_close($live);

# Resume: after=N gives everything past N; Last-Event-ID wins over after.
my $c = sse_open("?after=$ids[2]");
@got = sse_wait_for($c, 3);
is_deeply([ map { $_->{id} } @got ], [ @ids[ 3 .. 5 ] ], 'after=N resumes past N');
sse_close($c);
$c = sse_open("?after=0", last_event_id => $ids[4]);
@got = sse_wait_for($c, 1);
usleep(300_000);
@got = sse_events($c);
is_deeply([ map { $_->{id} } @got ], [ $ids[5] ], 'Last-Event-ID wins over after');
sse_close($c);

# Far behind: 3,000 events replayed from the table in pages, then live.
publish(q{INSERT INTO execution_events (type, execution_id) SELECT 'bulk', 'big' FROM generate_series(1, 3000)});
$c = sse_open('?executionId=big&after=0');
@got = sse_wait_for($c, 3000);
is(scalar @got, 3000, 'a client 3,000 events behind gets all of them');
my @sorted = sort { $a <=> $b } map { $_->{id} } @got;
is_deeply([ map { $_->{id} } @got ], \@sorted, '... in ascending order');
my $last = publish(q{SELECT rt_publish('after_replay', execution_id => 'big')});
@got = sse_wait_for($c, 3001);
is($got[-1]{id}, $last, '... and then live, without a seam');
sse_close($c);

# Refusals: 400 with PROTOCOL.md's JSON body.
for my $bad ('?organizationId=not-a-uuid', '?after=-1', '?after=abc', '?executionId=',
	'?executionId=' . ('x' x 300), '?type=' . join(',', ('t') x 40))
{
	my $out = '';
	IPC::Run::run([ 'curl', '-s', '-w', '\n%{http_code}',
			"http://127.0.0.1:$port/api/events/stream$bad" ], '>', \$out);
	like($out, qr/^\{"error":"bad_(filter|cursor)","message":"[^"]+"\}\n400$/,
		"400 JSON for $bad" =~ s/x{300}/x.../r);
}
ok(healthz(), 'the worker still serves');

# Filter values are data: an injection string matches nothing and harms nothing.
publish(q{SELECT rt_publish('victim', execution_id => 'v1')});
$c = sse_open(q{?after=0&executionId=v1'%20OR%20'1'%3D'1&type=x');%20DROP%20TABLE%20execution_events;--});
usleep(500_000);
is(scalar(sse_events($c)), 0, 'an injection string in a filter is a value that matches nothing');
sse_close($c);
is($node->safe_psql('postgres', q{SELECT count(*) > 0 FROM execution_events}), 't',
	'... and the table is still there');

# A burst over rtevents.max_client_buffer: a client that reads catches up
# from the ring and gets everything; a client that stopped reading is closed
# once the ring has moved past it, and nobody waits for it.
{
	use IO::Socket::INET;
	use Socket qw(SOL_SOCKET SO_RCVBUF);

	my $sse_connections = sub {
		my $out = '';
		IPC::Run::run([ 'curl', '-s', "http://127.0.0.1:$port/metrics" ], '>', \$out);
		return $out =~ /^rtevents_connections\{transport="sse"\} (\d+)$/m ? $1 : -1;
	};
	my $before = $sse_connections->();
	my $fast = sse_open('?executionId=flood');
	my $slow = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port)
	  or die "connect: $!";
	setsockopt($slow, SOL_SOCKET, SO_RCVBUF, 4096);
	print $slow "GET /api/events/stream?executionId=flood HTTP/1.1\r\nHost: x\r\n\r\n";
	ok(wait_until(sub { $sse_connections->() == $before + 2 }),
		'a reader and a non-reader connected')
	  or diag('connections: ' . $sse_connections->() . ", before: $before");
	publish(q{SELECT rt_publish('big', jsonb_build_object('pad', repeat('x', 10000)),
							   execution_id => 'flood') FROM generate_series(1, 300)});
	my @flood = sse_wait_for($fast, 300);
	is(scalar @flood, 300, 'a 3 MB burst over a 256 kB budget: the reader gets all of it');
	is($sse_connections->(), $before + 2, '... and the stalled client is still held');
	publish(q{INSERT INTO execution_events (type, execution_id)
			  SELECT 'small', 'flood' FROM generate_series(1, 9000)});
	ok(wait_until(sub { $sse_connections->() == $before + 1 }),
		'the stalled client is closed once the ring has moved past it');
	@flood = sse_wait_for($fast, 9300);
	is(scalar @flood, 9300, 'the reader got all 9,300 events meanwhile');
	my @flood_ids = map { $_->{id} } @flood;
	is_deeply(\@flood_ids, [ sort { $a <=> $b } @flood_ids ], '... in order');
	sse_close($fast);
	close $slow;
}

# A cursor older than what cleanup kept: "event: gap" first, then the rest.
{
	my @gone = split /\n/, publish(q{SELECT rt_publish('old', '{}', execution_id => 'gap') FROM generate_series(1, 3)});
	my @kept = split /\n/, publish(q{SELECT rt_publish('new', '{}', execution_id => 'gap') FROM generate_series(1, 2)});
	publish(qq{UPDATE execution_events SET expires_at = now() - interval '1 day' WHERE id BETWEEN $gone[0] AND $gone[2]});
	is(publish('SELECT rt_cleanup()'), '3', 'cleanup deleted three events');
	# past the ring, so that the cursor needs the table
	my $filler = (split /\n/, publish(q{SELECT rt_publish('filler', '{}', execution_id => 'filler') FROM generate_series(1, 8200)}))[-1];
	ok(wait_until(sub {
				my $m = '';
				IPC::Run::run([ 'curl', '-s', "http://127.0.0.1:$port/metrics" ], '>', \$m);
				$m =~ /^rtevents_last_event_id (\d+)$/m && $1 >= $filler;
			}),
		'the worker has let out the filler');
	my $g = sse_open('?executionId=gap', last_event_id => $gone[0] - 1);
	my @ev = sse_wait_for($g, 2);
	is_deeply([ map { $_->{id} } @ev ], \@kept, 'then the events kept');
	like($g->{raw}, qr/\Aretry: \d+\n\nevent: gap\ndata: \{"after":@{[ $gone[0] - 1 ]},"oldest":@{[ $gone[2] + 1 ]}\}\n\nid: $kept[0]\n/,
		'a gap event, with the cursor and the oldest id kept, before them');
	sse_close($g);
	$g = sse_open('?executionId=gap', last_event_id => $gone[2]);
	@ev = sse_wait_for($g, 2);
	unlike($g->{raw}, qr/event: gap/, 'a cursor past the deleted events gets none');
	sse_close($g);
	# after=0 asks for whatever is kept: nothing was received, nothing missed
	$g = sse_open('?executionId=gap&after=0');
	@ev = sse_wait_for($g, 2);
	is_deeply([ map { $_->{id} } @ev ], \@kept, 'after=0 gets the events kept');
	unlike($g->{raw}, qr/event: gap/, 'and no gap');
	sse_close($g);
}

# since and until are the history API's: a stream refuses them rather than
# sending every event.
for my $q ('?since=2026-01-01T00:00:00Z', '?executionId=e1&until=garbage')
{
	my $out = '';
	IPC::Run::run([ 'curl', '-s', '--max-time', '5', '-w', '\n%{http_code}',
			"http://127.0.0.1:$port/api/events/stream$q" ], '>', \$out);
	like($out, qr/\A\{"error":"bad_cursor","message":"since and until are for the history API[^"]*"\}\n400\z/,
		"400 bad_cursor for a stream with $q");
}

# Ids given explicitly ahead of the sequence (a restore, a migration): the
# sequence follows, and the events published after them are not skipped.
{
	my $ex = sse_open('?executionId=explicit');
	my $ahead = publish(q{SELECT max(id) + 1000 FROM execution_events});
	publish(qq{INSERT INTO execution_events (id, type, execution_id) VALUES ($ahead, 'given', 'explicit')});
	my @after = split /\n/, publish(q{SELECT rt_publish('drawn', '{}', execution_id => 'explicit') FROM generate_series(1, 2)});
	my @ev = sse_wait_for($ex, 3);
	is_deeply([ map { $_->{id} } @ev ], [ $ahead, @after ],
		'an explicit id ahead, then the events drawn after it, all live');
	sse_close($ex);
}

# The guarantee.  Four publishers open transactions, publish, and commit or
# roll back in a random interleaving (so ids commit out of order and some
# never commit), while the subscriber drops its connection and resumes with
# Last-Event-ID at random, and the LISTEN connection is killed once.
srand(20261122);
my $pubs = publishers($node, 4);
my $start_id = $node->safe_psql('postgres', 'SELECT coalesce(max(id), 0) FROM execution_events');
my $sub = sse_open('?executionId=g');
# live from the moment the stream is open: wait for that before publishing
wait_until(sub { $sub->{h}->pump_nb; ${ $sub->{out} } =~ /\Aretry: / }) or die 'no stream';
my @seen;
my $resumes = 0;
my $killed_feed = 0;
for my $step (1 .. 400)
{
	publishers_step($pubs,
		q{SELECT rt_publish('g', jsonb_build_object('step', 1), execution_id => 'g')});
	if (rand() < 0.03)
	{
		# disconnect and resume from the last id received
		push @seen, sse_events($sub);
		sse_close($sub);
		$resumes++;
		$sub = sse_open('?executionId=g',
			last_event_id => @seen ? $seen[-1]{id} : $start_id);
	}
	if ($step == 200)
	{
		$node->safe_psql('postgres',
			q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'rtevents feed'});
		$killed_feed = 1;
	}
}
publishers_finish($pubs);
my @committed = split /\n/,
  $node->safe_psql('postgres', q{SELECT id FROM execution_events WHERE execution_id = 'g' ORDER BY id});
ok(@committed > 50, scalar(@committed) . ' events committed, with rollbacks between');
ok(wait_until(sub {
			my @now = (@seen, sse_events($sub));
			@now && $now[-1]{id} == $committed[-1];
		}, 60),
	'the subscriber reaches the last committed event');
push @seen, sse_events($sub);
sse_close($sub);
ok($resumes > 3, "the subscriber resumed $resumes times");
ok($killed_feed, 'the LISTEN connection was killed mid-stream');
is_deeply([ map { $_->{id} } @seen ], \@committed,
	'every committed event exactly once, ascending, across resumes and a lost feed');

# A keep-alive comment every rtevents.heartbeat, and the metrics that count
# what came in and went out.
{
	my $metric = sub {
		my $m = '';
		IPC::Run::run([ 'curl', '-s', "http://127.0.0.1:$port/metrics" ], '>', \$m);
		return $m =~ /^$_[0] (\S+)$/m ? $1 : undef;
	};
	$node->safe_psql('postgres', q{ALTER SYSTEM SET rtevents.heartbeat = '1s'});
	$node->reload;
	# streams killed earlier are found out by the keep-alives written to them
	ok(wait_until(sub { $metric->('rtevents_subscriptions') eq '0' }, 15),
		'rtevents_subscriptions drops to 0 once every stream is gone');
	my $quiet = sse_open('?executionId=quiet');
	ok(wait_until(sub { sse_events($quiet); ($quiet->{raw} // '') =~ /^: keep-alive$/m }, 10),
		'a quiet stream gets ": keep-alive" comments');
	is($metric->('rtevents_subscriptions'), '1', 'rtevents_subscriptions counts the open stream');
	is($metric->('rtevents_feed_up'), '1', 'rtevents_feed_up');
	my ($in, $out) = map { $metric->($_) } 'rtevents_events_in_total', 'rtevents_events_out_total';
	publish(q{SELECT rt_publish('tick', '{}', execution_id => 'quiet')});
	sse_wait_for($quiet, 1);
	ok(wait_until(sub { $metric->('rtevents_events_in_total') == $in + 1 }),
		'rtevents_events_in_total counts the event');
	ok(wait_until(sub { $metric->('rtevents_events_out_total') == $out + 1 }),
		'rtevents_events_out_total counts its one delivery');
	sse_close($quiet);
	$node->safe_psql('postgres', q{ALTER SYSTEM RESET rtevents.heartbeat});
	$node->reload;
}

$node->stop;
done_testing();

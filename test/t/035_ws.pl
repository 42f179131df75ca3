# GET /ws: the WebSocket protocol of PROTOCOL.md.  Welcome, subscriptions
# from the query string and from messages, replay then live with the
# "subscribed" marker, one copy of an event matching several subscriptions,
# unsubscribe, ping, gap after cleanup, errors that leave the connection
# serving, refusals, heartbeats and dead peers, batching, a slow client
# dropped while others go on, "going away" at shutdown, a worker killed and
# clients resuming, and the delivery guarantee under concurrent publishers
# while subscribers drop and resume, and to 160 clients at once while the
# feed is heard between writes.
use strict;
use warnings;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use RtEventsTest qw(rtevents_node wait_until publishers publishers_step publishers_finish);
use RtWsClient;

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $node = rtevents_node('ws', conf => qq{
rtevents.listen_addresses = '127.0.0.1'
rtevents.port = $port
rtevents.cleanup_interval = 0
rtevents.max_client_buffer = '256kB'
# the crash test wants the postmaster to reinitialize, as it does by
# default outside the test framework
restart_after_crash = on
});
$node->safe_psql('postgres', 'CREATE EXTENSION rtevents');

sub healthz
{
	my $out = `curl -s --max-time 2 http://127.0.0.1:$port/healthz`;
	return $out eq 'ok';
}
ok(wait_until(\&healthz), 'the worker serves');

sub ws_open
{
	my ($path, %opts) = @_;
	return RtWsClient->connect(port => $port, path => $path, timeout => 5, %opts);
}

sub publish { return $node->safe_psql('postgres', $_[0]); }

# Whether the worker has let out the stream up to id (a cursor beyond the
# stream waits for live events, and is not a replay).
sub worker_has
{
	my ($id) = @_;
	return wait_until(sub {
			`curl -s http://127.0.0.1:$port/metrics` =~ /^rtevents_last_event_id (\d+)$/m
			  && $1 >= $id;
		});
}

# The events of a list of messages, in the order received.
sub events_of { return map { $_->{op} eq 'events' ? @{ $_->{events} } : () } @_; }
sub ids_of { return map { $_->{id} } events_of(@_); }

# The ids of a list of messages that are for subscription $sub.
sub sub_ids
{
	my ($sub, @msgs) = @_;
	return map { $_->{id} }
	  map { @{ $_->{events} } }
	  grep { $_->{op} eq 'events' && grep { $_ eq $sub } @{ $_->{subs} } } @msgs;
}

# Messages until one satisfies pred (on $_), within 10 s.
sub until_msg
{
	my ($ws, $pred) = @_;
	my @msgs = $ws->recv_until($pred, 10);
	return @msgs;
}

# ------------------------------------------------------------------
# Welcome, and a subscription from the query string
# ------------------------------------------------------------------
my $a = ws_open('/ws?executionId=e1');
my $welcome = $a->recv_json(5);
is($welcome->{op}, 'welcome', 'welcome comes first');
like($welcome->{connection}, qr/^\S+$/, '... with a connection id');
is($welcome->{heartbeat}, 30, '... and the heartbeat, in seconds');
my $subscribed = $a->recv_json(5);
my $stream_at = ($node->safe_psql('postgres', 'SELECT coalesce(max(id), 0) FROM execution_events'));
is_deeply($subscribed, { op => 'subscribed', sub => 'default', replayed => 0, after => $stream_at },
	'the query string opens "default", live at once, from the stream\'s position');

my $first = publish(q{SELECT rt_publish('job_started', '{"n":1}', execution_id => 'e1', job_id => 'j1')});
publish(q{SELECT rt_publish('job_started', '{"n":2}', execution_id => 'other')});
my $second = publish(q{SELECT rt_publish('job_progress', '{"pct":45}', execution_id => 'e1')});
my @msgs = until_msg($a, sub { grep { $_->{id} == $second } events_of($_) });
is_deeply([ ids_of(@msgs) ], [ $first, $second ], 'live: e1 events only, ascending');
is_deeply([ map { $_->{subs} } grep { $_->{op} eq 'events' } @msgs ],
	[ map { ['default'] } grep { $_->{op} eq 'events' } @msgs ],
	'each events frame names the subscription it is for');
my ($ev) = grep { $_->{id} == $first } events_of(@msgs);
is_deeply($ev,
	{ id => $first, type => 'job_started', ts => $ev->{ts}, executionId => 'e1',
	  jobId => 'j1', data => { n => 1 } },
	'the event has the PROTOCOL.md shape, null keys omitted');
like($ev->{ts}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d$/, 'ts is RFC 3339');

# ------------------------------------------------------------------
# Subscribe with after: replay, "subscribed", then live; overlap once
# ------------------------------------------------------------------
my @j = split /\n/, publish(q{SELECT rt_publish('step', jsonb_build_object('i', i), execution_id => 'e2', job_id => 'jx') FROM generate_series(1, 5) i});
worker_has($j[-1]);
$a->send_json({ op => 'subscribe', sub => 'jobs', filter => { jobId => 'jx' }, after => $j[1] });
@msgs = until_msg($a, sub { $_->{op} eq 'subscribed' });
is_deeply([ ids_of(@msgs) ], [ @j[ 2 .. 4 ] ], 'after: the stored events past the cursor');
is_deeply([ sub_ids('jobs', @msgs) ], [ @j[ 2 .. 4 ] ], '... in frames for "jobs"');
is_deeply($msgs[-1], { op => 'subscribed', sub => 'jobs', replayed => 3, after => $j[4] },
	'then "subscribed" with the count replayed and where it is');
my $both = publish(q{SELECT rt_publish('step', '{}', execution_id => 'e1', job_id => 'jx')});
@msgs = until_msg($a, sub { grep { $_->{id} == $both } events_of($_) });
push @msgs, $a->messages_for(0.5);
is(scalar(grep { $_->{id} == $both } events_of(@msgs)), 1,
	'an event matching two live subscriptions comes once');
my ($both_frame) = grep { grep { $_->{id} == $both } @{ $_->{events} // [] } } @msgs;
is_deeply([ sort @{ $both_frame->{subs} } ], [ 'default', 'jobs' ], '... in a frame naming both');

$a->send_json({ op => 'subscribe', sub => 'types', filter => { executionId => 'e3', type => [ 'keep', 'also' ] } });
until_msg($a, sub { $_->{op} eq 'subscribed' && $_->{sub} eq 'types' });
my @t = split /\n/, publish(q{SELECT rt_publish(t, '{}', execution_id => 'e3') FROM unnest(ARRAY['keep', 'drop', 'also']) t});
@msgs = until_msg($a, sub { grep { $_->{id} == $t[2] } events_of($_) });
is_deeply([ ids_of(@msgs) ], [ $t[0], $t[2] ], 'a type filter takes only its types');

# Unsubscribe: the marker, then nothing more for it.
$a->send_json({ op => 'unsubscribe', sub => 'types' });
@msgs = until_msg($a, sub { $_->{op} eq 'unsubscribed' });
is_deeply($msgs[-1], { op => 'unsubscribed', sub => 'types' }, 'unsubscribe is confirmed');
publish(q{SELECT rt_publish('keep', '{}', execution_id => 'e3')});
my $marker = publish(q{SELECT rt_publish('m', '{}', execution_id => 'e1')});
@msgs = until_msg($a, sub { grep { $_->{id} == $marker } events_of($_) });
is_deeply([ ids_of(@msgs) ], [$marker], '... and its events stop');

# Ping.
$a->send_json({ op => 'ping' });
@msgs = until_msg($a, sub { $_->{op} eq 'pong' });
is_deeply($msgs[-1], { op => 'pong' }, 'ping gets pong');

# ------------------------------------------------------------------
# Errors: the connection stays open and serving
# ------------------------------------------------------------------
my @bad = (
	[ '{not json', 'bad_json' ],
	[ '[1,2]', 'bad_message' ],
	[ '{"op":"dance"}', 'unknown_op' ],
	[ '{"sub":"x"}', 'bad_message' ],
	[ '{"op":"subscribe"}', 'bad_sub' ],
	[ '{"op":"subscribe","sub":"has space"}', 'bad_sub' ],
	[ '{"op":"subscribe","sub":"s","filter":{"organizationId":"nope"}}', 'bad_filter' ],
	[ '{"op":"subscribe","sub":"s","filter":{"executionId":7}}', 'bad_filter' ],
	[ '{"op":"subscribe","sub":"s","filter":"e1"}', 'bad_filter' ],
	[ '{"op":"subscribe","sub":"s","filter":{"type":[1]}}', 'bad_filter' ],
	[ '{"op":"subscribe","sub":"s","after":-1}', 'bad_cursor' ],
	[ '{"op":"subscribe","sub":"s","after":1.5}', 'bad_cursor' ],
	[ '{"op":"subscribe","sub":"jobs"}', 'sub_exists' ],
	[ '{"op":"unsubscribe","sub":"nobody"}', 'unknown_sub' ],
);
for my $case (@bad)
{
	my ($text, $code) = @$case;
	$a->send_text($text);
	my $reply = $a->recv_json(5);
	is($reply->{op} . '/' . ($reply->{code} // ''), "error/$code", "$text: error $code");
	like($reply->{message} // '', qr/^[^"\\]+$/, '... with a message');
}
$a->send_json({ op => 'subscribe', sub => 'jobs', filter => { organizationId => 'x' } });
is_deeply($a->recv_json(5), { op => 'error', sub => 'jobs', code => 'bad_filter',
		message => 'organizationId must be a UUID' },
	'an error about a subscription names it');
$a->send_binary('{"op":"ping"}');
is($a->recv_json(5)->{code}, 'bad_message', 'a binary frame is refused');
$a->send_json({ op => 'ping', future_field => { x => [1] } });
is($a->recv_json(5)->{op}, 'pong', 'unknown fields are ignored');
my $still = publish(q{SELECT rt_publish('after_errors', '{}', execution_id => 'e1')});
@msgs = until_msg($a, sub { grep { $_->{id} == $still } events_of($_) });
ok((grep { $_->{id} == $still } events_of(@msgs)), 'after all that, events still flow');
ok(!$a->is_closed, '... on the same connection');
is_deeply([ $a->protocol_errors ], [], 'the server broke no framing rule');

# Too many subscriptions.
{
	my $m = ws_open('/ws');
	$m->recv_json(5);
	$m->send_json({ op => 'subscribe', sub => "s$_", filter => { executionId => "x$_" } }) for 1 .. 65;
	my @r = $m->recv_until(sub { $_->{op} eq 'error' }, 10);
	is($r[-1]{code}, 'too_many_subs', 'the 65th subscription is refused');
	is(scalar(grep { $_->{op} eq 'subscribed' } @r), 64, '... after 64 were opened');
	$m->close(1000, 'bye');
}

# A message over 16 kB: closed with 1009.
{
	my $big = ws_open('/ws');
	$big->recv_json(5);
	$big->send_text('{"op":"ping","pad":"' . ('x' x 20000) . '"}');
	my @r = $big->recv_until(sub { 0 }, 5);
	is($r[0]{code}, 'message_too_big', 'a message over 16 kB gets an error');
	is($big->close_code, 1009, '... and a close with 1009');
}

# Invalid UTF-8 in a text frame: lws closes with 1007.
{
	my $u = ws_open('/ws');
	$u->recv_json(5);
	$u->send_frame(opcode => 'text', payload => "{\"op\":\"\xff\"}");
	$u->recv_until(sub { 0 }, 5);
	is($u->close_code, 1007, 'invalid UTF-8 is closed with 1007');
}

# \u escapes for what is not ASCII, as Python's json.dumps writes them: the
# worker reads them as UTF-8 (connected to no database, it would have
# SQL_ASCII for an encoding, and the JSON parser fail on them).
{
	my $u = ws_open('/ws');
	$u->recv_json(5);
	$u->send_text('{"op":"subscribe","sub":"esc","filter":{"executionId":"caf\u00e9 \ud83d\ude00"}}');
	is_deeply($u->recv_json(5), { op => 'subscribed', sub => 'esc', replayed => 0,
			after => $node->safe_psql('postgres', 'SELECT coalesce(max(id), 0) FROM execution_events') },
		'a filter value written with \u escapes is taken');
	my $id = publish("SELECT rt_publish('esc', '{}', execution_id => 'caf\xc3\xa9 \xf0\x9f\x98\x80')");
	my @r = until_msg($u, sub { $_->{op} eq 'events' });
	is_deeply([ map { [ $_->{id}, $_->{executionId} ] } events_of(@r) ], [ [ $id, "caf\x{e9} \x{1f600}" ] ],
		'... and matches the value in UTF-8');
	$u->close(1000, 'bye');
}

# Refusals before the upgrade: PROTOCOL.md's JSON errors.
for my $case ([ '/ws?after=abc', 400, 'bad_cursor' ],
	[ '/ws?organizationId=nope', 400, 'bad_filter' ],
	[ '/elsewhere', 404, 'not_found' ])
{
	my ($path, $status, $code) = @$case;
	my ($ws, $res) = ws_open($path);
	ok(!$ws, "$path: no upgrade");
	is($res->{status}, $status, "$path: $status");
	is($res->{json}{error}, $code, "$path: error $code");
}
ok(healthz(), 'the worker is still serving');

# ------------------------------------------------------------------
# Gap: a cursor older than what cleanup kept
# ------------------------------------------------------------------
my @gone = split /\n/, publish(q{SELECT rt_publish('old', '{}', execution_id => 'gap') FROM generate_series(1, 3)});
my @kept = split /\n/, publish(q{SELECT rt_publish('new', '{}', execution_id => 'gap') FROM generate_series(1, 2)});
publish(qq{UPDATE execution_events SET expires_at = now() - interval '1 day' WHERE id IN ($gone[0], $gone[1], $gone[2])});
is(publish('SELECT rt_cleanup()'), 3, 'cleanup deleted three events');
# push the ring past them, so that the cursor needs the table
my $filler = (split /\n/, publish(q{SELECT rt_publish('filler', '{}', execution_id => 'filler') FROM generate_series(1, 8200)}))[-1];
ok(worker_has($filler), 'the worker has let out the filler');
{
	my $g = ws_open('/ws');
	$g->recv_json(5);
	$g->send_json({ op => 'subscribe', sub => 'g', filter => { executionId => 'gap' }, after => $gone[0] - 1 });
	my @r = until_msg($g, sub { $_->{op} eq 'subscribed' });
	is_deeply($r[0], { op => 'gap', sub => 'g', after => $gone[0] - 1, oldest => $gone[2] + 1 },
		'a cursor before deleted events gets "gap" first');
	is_deeply([ ids_of(@r) ], \@kept, '... then what is kept');
	$g->send_json({ op => 'subscribe', sub => 'g2', filter => { executionId => 'gap' }, after => $gone[2] });
	@r = until_msg($g, sub { $_->{op} eq 'subscribed' && $_->{sub} eq 'g2' });
	ok(!(grep { $_->{op} eq 'gap' } @r), 'a cursor past the deleted ones gets no gap');
	$g->close(1000, 'bye');
}

# ------------------------------------------------------------------
# Batching: a burst goes out in few frames
# ------------------------------------------------------------------
{
	my $b = ws_open('/ws?executionId=burst');
	until_msg($b, sub { $_->{op} eq 'subscribed' });
	my @ids = split /\n/, publish(q{SELECT rt_publish('b', '{}', execution_id => 'burst') FROM generate_series(1, 200)});
	my @r = until_msg($b, sub { grep { $_->{id} == $ids[-1] } events_of($_) });
	is_deeply([ ids_of(@r) ], \@ids, 'a burst of 200 arrives whole and in order');
	cmp_ok(scalar(@r), '<', 20, 'in ' . scalar(@r) . ' frames, not 200');
	$b->close(1000, 'bye');
}

# rtevents.batch_ms: events a few ms apart share a frame.
$node->append_conf('postgresql.conf', "rtevents.batch_ms = 1000\n");
$node->reload;
sleep 1;
{
	my $b = ws_open('/ws?executionId=batched');
	until_msg($b, sub { $_->{op} eq 'subscribed' });
	publish(q{SELECT rt_publish('b', '{}', execution_id => 'batched')});
	publish(q{SELECT rt_publish('b', '{}', execution_id => 'batched')});
	my $last = publish(q{SELECT rt_publish('b', '{}', execution_id => 'batched')});
	my @r = until_msg($b, sub { grep { $_->{id} == $last } events_of($_) });
	is(scalar(ids_of(@r)), 3, 'batch_ms: three events from three transactions');
	is(scalar(@r), 1, '... in one frame');
	$b->close(1000, 'bye');
}
$node->append_conf('postgresql.conf', "rtevents.batch_ms = 0\n");
$node->reload;

# ------------------------------------------------------------------
# A slow client is dropped; the others keep receiving
# ------------------------------------------------------------------
{
	my $slow = ws_open('/ws?executionId=flood');
	my $fast = ws_open('/ws?executionId=flood');
	until_msg($fast, sub { $_->{op} eq 'subscribed' });
	# The slow client stops reading: its socket, then its queue fill, and
	# it is closed once the ring (8192 events) has moved past it.
	my $dropped = sub {
		`curl -s http://127.0.0.1:$port/metrics` =~ /^rtevents_clients_dropped_total (\d+)$/m;
		return $1;
	};
	my $dropped_before = $dropped->();
	my $pad = 'x' x 500;
	my (@ids, @got);
	for (1 .. 60)
	{
		push @ids, split /\n/, publish(qq{SELECT rt_publish('f', jsonb_build_object('pad', '$pad'), execution_id => 'flood') FROM generate_series(1, 1000)});
		push @got, ids_of($fast->messages_for(0.3));
		last if $dropped->() > $dropped_before;
	}
	wait_until(sub { push @got, ids_of($fast->messages_for(0.2)); @got && $got[-1] == $ids[-1] }, 60);
	is_deeply(\@got, \@ids, 'the fast client gets all ' . scalar(@ids) . ' events, in order');
	is($dropped->(), $dropped_before + 1, 'the slow client is dropped (rtevents_clients_dropped_total)');
	my @slow_got;
	ok(wait_until(sub { push @slow_got, ids_of($slow->messages_for(0.5)); $slow->is_closed }, 60),
		'its connection is closed');
	ok(@slow_got < @ids, 'having had ' . scalar(@slow_got) . ' of ' . scalar(@ids));
	is_deeply(\@slow_got, [ @ids[ 0 .. $#slow_got ] ], '... a prefix, so it can resume from its last id');
	$fast->close(1000, 'bye');
}

# ------------------------------------------------------------------
# The guarantee: concurrent publishers, rollbacks, out-of-order commits,
# subscribers dropping and resuming with after, the feed killed once
# ------------------------------------------------------------------
srand(20261129);
my $pubs = publishers($node, 4);
my $start_id = publish('SELECT coalesce(max(id), 0) FROM execution_events');
my (@seen1, %seen2);
my $sub1 = ws_open("/ws?executionId=g&after=$start_id");
my $sub2 = ws_open('/ws');
$sub2->send_json({ op => 'subscribe', sub => 'a', filter => { executionId => 'g', type => ['ga'] }, after => $start_id });
$sub2->send_json({ op => 'subscribe', sub => 'b', filter => { executionId => 'g' }, after => $start_id });
my $resumes = 0;
for my $step (1 .. 400)
{
	my $type = rand() < 0.5 ? 'ga' : 'gb';
	publishers_step($pubs, qq{SELECT rt_publish('$type', '{}', execution_id => 'g')});
	push @seen1, ids_of($sub1->messages_for(0));
	my @m2 = $sub2->messages_for(0);
	push @{ $seen2{$_} }, sub_ids($_, @m2) for qw(a b);
	if (rand() < 0.03)
	{
		$sub1->abort;
		my $from = @seen1 ? $seen1[-1] : $start_id;
		$sub1 = ws_open("/ws?executionId=g&after=$from");
		$resumes++;
	}
	if ($step == 200)
	{
		publish(q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'rtevents feed'});
	}
}
publishers_finish($pubs);
my @committed = split /\n/, publish(q{SELECT id FROM execution_events WHERE execution_id = 'g' ORDER BY id});
ok(@committed > 50, scalar(@committed) . ' events committed, with rollbacks between');
ok(wait_until(sub {
			push @seen1, ids_of($sub1->messages_for(0.1));
			my @m2 = $sub2->messages_for(0.1);
			push @{ $seen2{$_} }, sub_ids($_, @m2) for qw(a b);
			@seen1 && $seen1[-1] == $committed[-1]
			  && $seen2{b} && $seen2{b}[-1] == $committed[-1];
		}, 60),
	'both subscribers reach the last committed event');
ok($resumes > 3, "one subscriber resumed $resumes times");
is_deeply(\@seen1, \@committed,
	'every committed event exactly once, ascending, across resumes and a lost feed');
is_deeply($seen2{b}, \@committed,
	'two overlapping subscriptions on one connection: the wider one gets every event once, ascending');
my @committed_a = split /\n/, publish(q{SELECT id FROM execution_events WHERE execution_id = 'g' AND type = 'ga' ORDER BY id});
is_deeply($seen2{a}, \@committed_a, '... and the narrower one exactly its type, once, ascending');
$sub1->close(1000, 'bye');
$sub2->close(1000, 'bye');

# ------------------------------------------------------------------
# Many clients: a round of writes long enough for the feed to be heard
# between writes (every 32 clients), while publishers commit out of order
# and roll back.  What a read heard then lets out goes into the frames of
# the clients not yet written, and the others get it in the next round:
# each client still gets exactly the committed ids, once, ascending.
# ------------------------------------------------------------------
{
	my $n = 160;
	my $from = publish('SELECT coalesce(max(id), 0) FROM execution_events');
	worker_has($from);
	my @clients = map { scalar ws_open("/ws?executionId=many&after=$from") } 1 .. $n;
	until_msg($_, sub { $_->{op} eq 'subscribed' }) for @clients;
	my $heard = sub {
		`curl -s http://127.0.0.1:$port/metrics` =~ /^rtevents_feed_heard_while_writing_total (\d+)$/m;
		return $1;
	};
	my $heard_before = $heard->();

	my $many_pubs = publishers($node, 3);
	publishers_step($many_pubs, q{SELECT rt_publish('m', '{}', execution_id => 'many')})
	  for 1 .. 300;
	publishers_finish($many_pubs);
	my @committed = split /\n/,
	  publish(q{SELECT id FROM execution_events WHERE execution_id = 'many' ORDER BY id});
	ok(@committed > 50, scalar(@committed) . " events committed to $n clients");

	my @wrong;
	for my $i (0 .. $#clients)
	{
		my @got;
		wait_until(sub {
				push @got, ids_of($clients[$i]->messages_for(0.05));
				@got && $got[-1] >= $committed[-1];
			}, 30);
		push @wrong, $i unless join(',', @got) eq join(',', @committed);
		$clients[$i]->close(1000, 'bye');
	}
	is_deeply(\@wrong, [], "each of the $n clients got every committed event once, ascending");
	my $times = $heard->() - $heard_before;
	ok($times > 0, "the feed was heard between writes to clients ($times times)");
}

# ------------------------------------------------------------------
# The worker killed: the cluster restarts, clients resume
# ------------------------------------------------------------------
{
	my @before = split /\n/, publish(q{SELECT rt_publish('k', '{}', execution_id => 'kill') FROM generate_series(1, 3)});
	worker_has($before[-1]);
	my $k = ws_open('/ws?executionId=kill&after=0');
	my @got = ids_of(until_msg($k, sub { $_->{op} eq 'subscribed' }));
	is_deeply(\@got, \@before, 'replayed before the crash');
	my ($pid) = `ps -eo pid,cmd` =~ /^\s*(\d+) postgres: ws: rtevents server/m;
	($pid) = `ps -eo pid,cmd` =~ /^\s*(\d+) postgres: rtevents server/m unless $pid;
	ok($pid, 'found the worker');
	kill 'KILL', $pid;
	$k->recv_until(sub { 0 }, 5);
	ok($k->is_closed, 'the client lost its connection');
	ok(wait_until(\&healthz, 60), 'the worker is back');
	my @after = split /\n/, publish(q{SELECT rt_publish('k', '{}', execution_id => 'kill') FROM generate_series(1, 3)});
	my $k2 = ws_open("/ws?executionId=kill&after=$got[-1]");
	my @more = ids_of(until_msg($k2, sub { grep { $_->{id} == $after[-1] } events_of($_) }));
	is_deeply(\@more, \@after, 'resuming after the restart: exactly the rest');
	$k2->close(1000, 'bye');
}

# ------------------------------------------------------------------
# Heartbeats: pings every rtevents.heartbeat, silence is closed
# ------------------------------------------------------------------
$node->append_conf('postgresql.conf', "rtevents.heartbeat = 1\nrtevents.client_timeout = 3\n");
$node->reload;
sleep 1;
{
	my $quiet = ws_open('/ws', auto_pong => 0);
	my $alive = ws_open('/ws');
	my (@frames, @alive_msgs);
	my $deadline = time + 10;
	while (time < $deadline && !$quiet->is_closed)
	{
		my @f = $quiet->recv_frame(0.2);
		push @frames, $f[0] if @f;
		push @alive_msgs, $alive->messages_for(0);	# answers its pings
	}
	ok((grep { $_ eq 'ping' } @frames), 'the server pings a silent client');
	ok($quiet->is_closed, 'a client that never answers is closed');
	# ws.c tells lws's unexplained closes 1002, but not this one
	isnt($quiet->close_code // 0, 1002, '... not as a protocol error');
	is($alive_msgs[0]{op}, 'welcome', 'a client that answers pings...');
	ok(!$alive->is_closed, '... stays connected');
	$alive->send_json({ op => 'ping' });
	is(($alive->recv_json(5) // {})->{op}, 'pong', '... and served');
	ok($alive->pings_answered > 0, '... having answered pings');
	$alive->close(1000, 'bye');
}

# ------------------------------------------------------------------
# Shutdown: "going away"
# ------------------------------------------------------------------
{
	my $g = ws_open('/ws');
	$g->recv_json(5);
	$node->stop('fast');
	$g->recv_until(sub { 0 }, 5);
	is($g->close_code, 1001, 'a fast shutdown closes clients with 1001 going away');
}

done_testing();

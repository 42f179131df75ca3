# Tokens: who may see which events.  Two organizations publish; a token for
# one never receives, replays or lists the other's events, by WebSocket, SSE
# or history, whatever the filter; a filter that leaves the restricted key
# out is refused; forged, tampered, expired, not-yet-valid and alg "none"
# tokens are refused; the token may come as a header or a query parameter;
# claims may escape what is not ASCII; expiry ends a live connection.
use strict;
use warnings;
use IPC::Run;
use JSON::PP;
use MIME::Base64 qw(encode_base64url decode_base64url);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use RtEventsTest qw(rtevents_node wait_until);
use RtWsClient;

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $secret = 'tap-secret-0123456789abcdef-0123456789';
my $node = rtevents_node('auth', conf => qq{
rtevents.listen_addresses = '127.0.0.1'
rtevents.port = $port
rtevents.cleanup_interval = 0
rtevents.auth = token
rtevents.jwt_secret = '$secret'
});
$node->safe_psql('postgres', 'CREATE EXTENSION rtevents');

sub http
{
	my ($path, @args) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'curl', '-s', '--max-time', '3', '-w', '\n%{http_code}', @args,
			"http://127.0.0.1:$port$path" ], '>', \$out, '2>', \$err);
	my ($body, $status) = $out =~ /\A(.*)\n(\d+)\z/s;
	return ($status // '000', $body // '');
}

sub token
{
	my ($claims, $ttl) = @_;
	$ttl //= '1 hour';
	return $node->safe_psql('postgres',
		"SELECT rt_token('" . encode_json($claims) . "', '$ttl')");
}

ok(wait_until(sub { (http('/healthz'))[0] eq '200' }), 'the worker serves');

my ($org_a, $org_b) = ('11111111-1111-1111-1111-111111111111', '22222222-2222-2222-2222-222222222222');
my @a = split /\n/, $node->safe_psql('postgres', qq{
	SELECT rt_publish('a', '{}', execution_id => 'ea' || i, organization_id => '$org_a') FROM generate_series(1, 3) i});
my @b = split /\n/, $node->safe_psql('postgres', qq{
	SELECT rt_publish('b', '{}', execution_id => 'eb' || i, organization_id => '$org_b') FROM generate_series(1, 3) i});

my $tok_a = token({ sub => 'alice', rt => { organizationId => [$org_a] } });
like($tok_a, qr/^[\w-]+\.[\w-]+\.[\w-]+$/, 'rt_token mints a JWT');

# ------------------------------------------------------------------
# No token, bad tokens
# ------------------------------------------------------------------
my ($status, $body) = http("/api/events?organizationId=$org_a");
is($status, '401', 'history without a token: 401');
like($body, qr/^\{"error":"unauthorized","message":"[^"]+"\}$/, '... with the JSON error');
($status) = http("/api/events/stream?organizationId=$org_a", '--max-time', '1');
is($status, '401', 'SSE without a token: 401');
my ($ws, $res) = RtWsClient->connect(port => $port, path => "/ws?organizationId=$org_a", timeout => 5);
ok(!$ws && $res->{status} == 401, 'WebSocket without a token: 401 before the upgrade');

my ($h, $p, $s) = split /\./, $tok_a;
my $claims = decode_json(decode_base64url($p));
my %forged = (
	'a tampered payload' => join('.', $h, encode_base64url(encode_json({ %$claims, rt => { organizationId => [$org_b] } })), $s),
	'a tampered signature' => join('.', $h, $p, encode_base64url('x' x 32)),
	'alg none' => join('.', encode_base64url('{"alg":"none","typ":"JWT"}'), $p, ''),
	'alg HS512' => join('.', encode_base64url('{"alg":"HS512","typ":"JWT"}'), $p, $s),
	'garbage' => 'not-a-token',
	'another secret' => do {
		# signed by hand with a secret the server does not have
		require Digest::SHA;
		my $input = "$h.$p";
		"$input." . encode_base64url(Digest::SHA::hmac_sha256($input, 'x' x 40));
	},
	'an expired token' => token({ rt => { organizationId => [$org_a] }, exp => time() - 3600 }),
	'a token not valid yet' => token({ rt => { organizationId => [$org_a] }, nbf => time() + 3600 }),
);
for my $what (sort keys %forged)
{
	my ($st, $bd) = http("/api/events?organizationId=$org_a", '-H', "Authorization: Bearer $forged{$what}");
	is($st, '401', "$what: 401");
	like($bd, qr/"error":"(bad_token|token_expired|token_not_yet_valid)"/, "... $bd");
	my ($w) = RtWsClient->connect(port => $port, path => "/ws?organizationId=$org_a&token=$forged{$what}", timeout => 5);
	ok(!$w, "$what: no WebSocket either");
}

# ------------------------------------------------------------------
# Tenant isolation: history
# ------------------------------------------------------------------
my @auth = ('-H', "Authorization: Bearer $tok_a");
($status, $body) = http("/api/events?organizationId=$org_a", @auth);
is($status, '200', 'history of its own organization: 200');
is_deeply([ map { $_->{id} } @{ decode_json($body)->{events} } ], \@a, '... its events only');
($status, $body) = http("/api/events?organizationId=$org_a&token=$tok_a");
is($status, '200', 'the token as a query parameter works too');
for my $q ("organizationId=$org_b", '', 'executionId=eb1', "organizationId=" . uc($org_b), 'type=b')
{
	($status, $body) = http("/api/events?$q", @auth);
	is($status, '403', "history ?$q: 403");
	like($body, qr/^\{"error":"forbidden","message":"[^"]+"\}$/, '... forbidden');
}
($status, $body) = http("/api/events?organizationId=" . uc($org_a) . "&executionId=ea2", @auth);
is_deeply([ map { $_->{id} } @{ decode_json($body)->{events} } ], [ $a[1] ],
	'its organization in upper case, narrowed by execution: allowed');

# ------------------------------------------------------------------
# SSE and WebSocket: live and replay obey the same rule
# ------------------------------------------------------------------
($status) = http("/api/events/stream?organizationId=$org_b", @auth, '--max-time', '1');
is($status, '403', "SSE for the other organization: 403");
($status) = http("/api/events/stream", @auth, '--max-time', '1');
is($status, '403', 'SSE leaving the organization out: 403');
{
	my $out = '';
	my $sse = IPC::Run::start([ 'curl', '-sN', '-H', "Authorization: Bearer $tok_a",
			"http://127.0.0.1:$port/api/events/stream?organizationId=$org_a&after=0" ], '>', \$out);
	ok(wait_until(sub { $sse->pump_nb; my @ids = $out =~ /^id: (\d+)$/mg; @ids == 3 }, 10),
		'SSE replay of its own organization');
	is_deeply([ $out =~ /^id: (\d+)$/mg ], \@a, '... its events only');
	$sse->kill_kill;
}

$ws = RtWsClient->connect(port => $port, path => "/ws?token=$tok_a", timeout => 5);
is($ws->recv_json(5)->{op}, 'welcome', 'a WebSocket with a token, no filter yet: welcome');
for my $f ({ organizationId => $org_b }, {}, { executionId => 'eb1' }, { type => ['b'] })
{
	$ws->send_json({ op => 'subscribe', sub => 'x', filter => $f, after => 0 });
	my $r = $ws->recv_json(5);
	is_deeply([ $r->{op}, $r->{code}, $r->{sub} ], [ 'error', 'forbidden', 'x' ],
		'subscribe ' . encode_json($f) . ': forbidden');
}
$ws->send_json({ op => 'subscribe', sub => 'mine', filter => { organizationId => $org_a }, after => 0 });
my @msgs = $ws->recv_until(sub { $_->{op} eq 'subscribed' }, 5);
is_deeply([ map { $_->{id} } map { @{ $_->{events} } } grep { $_->{op} eq 'events' } @msgs ], \@a,
	'subscribe to its own organization: its replay only');
my $live_b = $node->safe_psql('postgres', qq{SELECT rt_publish('b', '{}', organization_id => '$org_b')});
my $live_a = $node->safe_psql('postgres', qq{SELECT rt_publish('a', '{}', organization_id => '$org_a')});
@msgs = $ws->recv_until(sub { $_->{op} eq 'events' && grep { $_->{id} == $live_a } @{ $_->{events} } }, 10);
is_deeply([ map { $_->{id} } map { @{ $_->{events} } } grep { $_->{op} eq 'events' } @msgs ], [$live_a],
	'live: its own organization\'s event, not the other\'s');
$ws->close(1000, 'bye');

my ($w2, $r2) = RtWsClient->connect(port => $port, path => "/ws?organizationId=$org_b&token=$tok_a", timeout => 5);
ok(!$w2 && $r2->{status} == 403, 'a WebSocket whose query names the other organization: 403');

# An unrestricted token sees everything.
my $tok_all = token({ sub => 'ops' });
($status, $body) = http('/api/events', '-H', "Authorization: Bearer $tok_all");
is(scalar(@{ decode_json($body)->{events} }), 8, 'a token without rt claims sees every organization');

# ------------------------------------------------------------------
# DELETE /api/events: admins only
# ------------------------------------------------------------------
{
	my @old = split /\n/, $node->safe_psql('postgres', qq{
		SELECT rt_publish('old', '{}', organization_id => '$org_a', ts => now() - interval '2 days')
		FROM generate_series(1, 25000)});
	my $admin = token({ sub => 'root', admin => JSON::PP::true });
	my ($st, $bd) = http('/api/events?olderThan=2026-01-01T00:00:00Z', '-X', 'DELETE');
	is($st, '401', 'DELETE without a token: 401');
	($st, $bd) = http('/api/events?olderThan=2026-01-01T00:00:00Z', '-X', 'DELETE', '-H', "Authorization: Bearer $tok_all");
	is($st, '403', 'DELETE with a token that is not admin: 403');
	like($bd, qr/"error":"forbidden"/, '... forbidden');
	my $admin_a = token({ admin => JSON::PP::true, rt => { organizationId => [$org_a] } });
	($st, $bd) = http('/api/events?olderThan=2026-01-01T00:00:00Z', '-X', 'DELETE', '-H', "Authorization: Bearer $admin_a");
	is($st, '403', 'DELETE with an admin token restricted to one organization: 403');
	($st, $bd) = http('/api/events', '-X', 'DELETE', '-H', "Authorization: Bearer $admin");
	is($st, '400', 'DELETE without olderThan: 400');
	($st, $bd) = http('/api/events?olderThan=yesterday', '-X', 'DELETE', '-H', "Authorization: Bearer $admin");
	is($st, '400', 'DELETE with a bad olderThan: 400');
	my $cut = $node->safe_psql('postgres', q{SELECT to_char(now() - interval '1 day', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') });
	($st, $bd) = http("/api/events?olderThan=$cut", '-X', 'DELETE', '-H', "Authorization: Bearer $admin", '--max-time', '60');
	is($st, '200', 'DELETE by an admin: 200');
	is_deeply(decode_json($bd), { deleted => scalar(@old) }, "... {\"deleted\":" . scalar(@old) . "}, in stretches of 10,000 ids");
	is($node->safe_psql('postgres', q{SELECT count(*) FROM execution_events WHERE type = 'old'}), '0',
		'... the old events are gone');
	is($node->safe_psql('postgres', q{SELECT count(*) > 0 FROM execution_events WHERE type <> 'old'}), 't',
		'... the others kept');
	is($node->safe_psql('postgres', 'SELECT deleted_upto FROM rtevents_retention'), $old[-1],
		'... and the retention mark raised, for resuming clients\' gap');
}

# ------------------------------------------------------------------
# Claims with \u escapes, as Python's json.dumps writes what is not ASCII
# ------------------------------------------------------------------
{
	require Digest::SHA;
	my $cafe = $node->safe_psql('postgres',
		"SELECT rt_publish('c', '{}', execution_id => 'caf\xc3\xa9', organization_id => '$org_a')");
	my $input = encode_base64url('{"alg":"HS256","typ":"JWT"}') . '.'
	  . encode_base64url('{"exp":' . int(time() + 3600)
		  . ',"sub":"jos\u00e9","rt":{"executionId":["caf\u00e9","\ud83d\ude00"]}}');
	my $escaped = "$input." . encode_base64url(Digest::SHA::hmac_sha256($input, $secret));
	my ($st, $bd) = http('/api/events?executionId=caf%C3%A9', '-H', "Authorization: Bearer $escaped");
	is($st, '200', 'a token whose claims escape non-ASCII: accepted');
	is_deeply([ map { $_->{id} } @{ decode_json($bd)->{events} } ], [$cafe],
		'... its rt value read as UTF-8, as the filter is');
	($st) = http('/api/events?executionId=cafe', '-H', "Authorization: Bearer $escaped");
	is($st, '403', '... and another value refused');
}

# ------------------------------------------------------------------
# Expiry ends a live connection
# ------------------------------------------------------------------
{
	my $short = token({ rt => { organizationId => [$org_a] } }, '3 seconds');
	my $w = RtWsClient->connect(port => $port, path => "/ws?organizationId=$org_a&token=$short", timeout => 5);
	$w->recv_until(sub { $_->{op} eq 'subscribed' }, 5);
	my @r = $w->recv_until(sub { 0 }, 50);
	my ($err) = grep { $_->{op} eq 'error' } @r;
	is($err->{code}, 'token_expired', 'a WebSocket is told its token expired');
	is($w->close_code, 1008, '... and closed with 1008');

	$short = token({ rt => { organizationId => [$org_a] } }, '3 seconds');
	my $start = time;
	my ($st) = http("/api/events/stream?organizationId=$org_a&token=$short", '--max-time', '60');
	is($st, '200', 'an SSE stream with a short token opens');
	cmp_ok(time - $start, '<', 50, '... and ends when the token expires (3 s, and the 30 s of leeway)');
}

$node->stop;
done_testing();

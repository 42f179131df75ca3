# Who may use the worker from where: origins (WebSocket hijacking, CORS on
# the HTTP API), the per-connection message rate, and TLS (https and wss
# with the configured certificate).
use strict;
use warnings;
use Cwd ();
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use RtEventsTest qw(rtevents_node wait_until);
use RtWsClient;

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $node = rtevents_node('security', conf => qq{
rtevents.listen_addresses = '127.0.0.1'
rtevents.port = $port
rtevents.cleanup_interval = 0
rtevents.allowed_origins = 'https://app.example.com, http://localhost:3000'
rtevents.max_messages_per_second = 10
});
$node->safe_psql('postgres', 'CREATE EXTENSION rtevents');

# curl: (status, headers as one lower-cased string, body)
sub http
{
	my ($url, @args) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'curl', '-s', '-i', '--max-time', '5', @args, $url ], '>', \$out, '2>', \$err);
	my ($head, $body) = split /\r\n\r\n/, $out, 2;
	my ($status) = ($head // '') =~ /^HTTP\/\S+ (\d+)/;
	return ($status // '000', lc($head // ''), $body // '');
}

ok(wait_until(sub { (http("http://127.0.0.1:$port/healthz"))[0] eq '200' }), 'the worker serves');

# ------------------------------------------------------------------
# Origins
# ------------------------------------------------------------------
for my $case (
	[ 'no Origin (not a browser)', undef, 1 ],
	[ 'the worker\'s own origin', "http://127.0.0.1:$port", 1 ],
	[ 'a listed origin', 'https://app.example.com', 1 ],
	[ 'another listed origin, any case', 'HTTP://LOCALHOST:3000', 1 ],
	[ 'a foreign origin', 'https://evil.example.net', 0 ],
	[ 'a listed origin\'s lookalike', 'https://app.example.com.evil.net', 0 ])
{
	my ($name, $origin, $allowed) = @$case;
	my %headers = defined $origin ? (Origin => $origin) : ();
	my ($ws, $res) = RtWsClient->connect(port => $port, path => '/ws', headers => \%headers, timeout => 5);
	if ($allowed)
	{
		ok($ws, "WebSocket from $name: upgraded");
		$ws->close(1000, 'bye') if $ws;
	}
	else
	{
		ok(!$ws, "WebSocket from $name: refused");
		is($res->{status}, 403, '... with 403');
		is($res->{json}{error}, 'origin_not_allowed', '... origin_not_allowed');
	}
	my @h = defined $origin ? ('-H', "Origin: $origin") : ();
	my ($status, $head) = http("http://127.0.0.1:$port/api/events?limit=1", @h);
	is($status, $allowed ? '200' : '403', "history from $name: $status");
	my ($sse) = http("http://127.0.0.1:$port/api/events/stream", @h, '--max-time', '1');
	if ($allowed)
	{
		is($sse, '200', "SSE from $name: streams");
	}
	else
	{
		is($sse, '403', "SSE from $name: 403");
	}
}

# CORS: a listed origin's page may read the API's answers, others may not.
{
	my ($status, $head) = http("http://127.0.0.1:$port/api/events?limit=1", '-H', 'Origin: https://app.example.com');
	like($head, qr/^access-control-allow-origin: https:\/\/app\.example\.com\r?$/m,
		'a listed origin gets Access-Control-Allow-Origin: itself');
	like($head, qr/^vary: origin\r?$/m, '... and Vary: Origin');
	($status, $head) = http("http://127.0.0.1:$port/api/events?limit=1");
	unlike($head, qr/access-control-allow-origin/, 'no Origin: no CORS header');
	($status, $head) = http("http://127.0.0.1:$port/api/events", '-X', 'OPTIONS',
		'-H', 'Origin: https://app.example.com', '-H', 'Access-Control-Request-Method: GET',
		'-H', 'Access-Control-Request-Headers: authorization');
	is($status, '204', 'a CORS preflight gets 204');
	like($head, qr/^access-control-allow-headers: .*authorization/m, '... allowing the Authorization header');
	like($head, qr/^access-control-allow-methods: .*get/m, '... and GET');
	($status, $head) = http("http://127.0.0.1:$port/api/events", '-X', 'OPTIONS',
		'-H', 'Origin: https://evil.example.net');
	unlike($head, qr/access-control-allow-origin/, 'a foreign origin\'s preflight is not allowed');
}

# ------------------------------------------------------------------
# Message rate: rtevents.max_messages_per_second = 10 (bursts of 20)
# ------------------------------------------------------------------
{
	my $ws = RtWsClient->connect(port => $port, path => '/ws', timeout => 5);
	$ws->recv_json(5);
	$ws->send_json({ op => 'ping' }) for 1 .. 15;
	my @r = $ws->messages_for(1);
	is(scalar(grep { $_->{op} eq 'pong' } @r), 15, 'a burst within the bucket is answered');
	$ws->send_json({ op => 'ping' }) for 1 .. 40;
	@r = $ws->recv_until(sub { 0 }, 5);
	my ($limited) = grep { $_->{op} eq 'error' } @r;
	is($limited->{code}, 'rate_limited', 'a client that keeps sending gets rate_limited');
	is($ws->close_code, 1008, '... and is closed with 1008');
	ok((http("http://127.0.0.1:$port/healthz"))[0] eq '200', 'the worker serves on');
}

# ------------------------------------------------------------------
# TLS: https and wss with the configured certificate
# ------------------------------------------------------------------
my $dir = Cwd::abs_path($node->data_dir);
system('openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1',
	'-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', "$dir/rt.key", '-out', "$dir/rt.crt") == 0
  or die 'openssl failed';
chmod 0600, "$dir/rt.key";
$node->append_conf('postgresql.conf', qq{
rtevents.ssl_cert_file = '$dir/rt.crt'
rtevents.ssl_key_file = '$dir/rt.key'
});
$node->restart;
ok(wait_until(sub { (http("https://127.0.0.1:$port/healthz", '--cacert', "$dir/rt.crt"))[0] eq '200' }),
	'https: /healthz with the configured certificate');
is((http("http://127.0.0.1:$port/healthz"))[0], '000', 'plain http is not served on a TLS port');
my $published = $node->safe_psql('postgres', q{SELECT rt_publish('tls', '{}', execution_id => 'tls')});
{
	my ($status, $head, $body) = http("https://127.0.0.1:$port/api/events?executionId=tls", '--cacert', "$dir/rt.crt");
	is($status, '200', 'https: history');
	like($body, qr/"id":$published/, '... with the event');

	# what lws's HTTP parser gives up on is answered over TLS too (http.c)
	($status, $head, $body) = http("https://127.0.0.1:$port/healthz", '--cacert', "$dir/rt.crt",
		'-X', 'GARBAGE');
	is("$status $body", '400 {"error":"bad_request","message":"the request line is not HTTP this server can read"}',
		'https: a method lws does not know is a JSON 400');
	is((http("https://127.0.0.1:$port/healthz", '--cacert', "$dir/rt.crt"))[0], '200', '... and the worker serves on');
}
{
	my $out = '';
	my $script = qq{
		const ws = new WebSocket('wss://127.0.0.1:$port/ws?executionId=tls&after=0');
		ws.onmessage = (m) => { const o = JSON.parse(m.data); if (o.op === 'events') { console.log(o.events[0].id); process.exit(0); } };
		ws.onerror = (e) => { console.log('error', e.message); process.exit(1); };
		setTimeout(() => { console.log('timeout'); process.exit(1); }, 10000);
	};
	local $ENV{NODE_EXTRA_CA_CERTS} = "$dir/rt.crt";
	IPC::Run::run([ 'node', '--experimental-websocket', '--no-warnings', '-e', $script ], '>', \$out, '2>&1');
	is($out, "$published\n", 'wss: a replayed event over TLS');
}

$node->stop;
done_testing();

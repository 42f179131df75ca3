# Hostile input over real sockets: malformed and oversized HTTP, WebSocket
# frames that break RFC 6455, messages that are deep, fragmented or huge,
# injection strings in every filter and cursor, ids and timestamps out of
# range, a flood of 1,000 connections, and slowloris clients.  After each
# case the worker must still serve: /healthz is 200 and a WebSocket
# subscriber connected from the start still gets a freshly published event.
# The worker's resident memory is measured before and after.
#
# Where the server's answer contradicts PROTOCOL.md ("Bad requests get a 4xx
# with a JSON body, never a crash and never a hang") or RFC 6455, the test
# asserts what must hold regardless (closed, not served, still alive) and
# marks the expected answer TODO, with the reason.
use strict;
use warnings;
use IO::Select;
use IO::Socket::IP;
use JSON::PP;
use POSIX ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep sleep);
use RtEventsTest qw(rtevents_node wait_until);
use RtWsClient;

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $node = rtevents_node('hostile', conf => qq{
rtevents.listen_addresses = '127.0.0.1'
rtevents.port = $port
rtevents.auth = none
rtevents.cleanup_interval = 0
# the message rate is 080_security's; here, many messages are legitimate
rtevents.max_messages_per_second = 10000
});
$node->safe_psql('postgres', 'CREATE EXTENSION rtevents');

my $JSON = JSON::PP->new->utf8->canonical;
$SIG{PIPE} = 'IGNORE';

# ------------------------------------------------------------------
# Raw HTTP
# ------------------------------------------------------------------

# Whether buf holds a whole response: the head, and the body its
# Content-Length announces (without one, only the server's close ends it).
sub response_complete
{
	my ($buf) = @_;
	my $end = index($buf, "\r\n\r\n");
	return 0 if $end < 0;
	my $head = substr($buf, 0, $end);
	return 0 unless $head =~ /^content-length:\s*(\d+)/mi;
	return length($buf) - $end - 4 >= $1;
}

sub parse_response
{
	my ($buf) = @_;
	my %r = (status => 0, headers => {}, body => '', raw => $buf);
	my $end = index($buf, "\r\n\r\n");
	return \%r if $end < 0 || $buf !~ m{^HTTP/(\d\.\d) (\d{3})};
	($r{version}, $r{status}) = ($1, $2 + 0);
	for my $line (split /\r\n/, substr($buf, 0, $end))
	{
		$r{headers}{ lc $1 } = $2 if $line =~ /^([^:\s]+):\s*(.*)$/;
	}
	$r{body} = substr($buf, $end + 4);
	if (($r{headers}{'content-type'} // '') =~ m{application/json})
	{
		$r{json} = eval { $JSON->decode($r{body}) };
	}
	return \%r;
}

# Sends bytes on a fresh connection and reads the answer: until it is
# complete (or, with wait_close, until the server closes), or the timeout;
# for a stream, until it matches the regex until, and quiet seconds more.
# closed: the server closed the connection (FIN or RST); elapsed: seconds.
sub http_raw
{
	my ($bytes, %o) = @_;
	my $timeout = $o{timeout} // 5;
	my $t0 = time;
	my $s = IO::Socket::IP->new(
		PeerHost => '127.0.0.1',
		PeerPort => $port,
		Timeout => 5) or return { status => 0, error => "connect: $!" };
	binmode $s;
	my $off = 0;
	while ($off < length $bytes)
	{
		my $n = syswrite($s, $bytes, length($bytes) - $off, $off);
		last unless $n;    # the server closed on us
		$off += $n;
	}
	my $sel = IO::Select->new($s);
	my ($buf, $eof) = ('', 0);
	my $end = $t0 + $timeout;
	while (1)
	{
		last if !$o{wait_close} && response_complete($buf);
		# a stream: once what is wanted has come, a moment more for extras
		if ($o{until} && $buf =~ $o{until} && $end > time + ($o{quiet} // 0.25))
		{
			$end = time + ($o{quiet} // 0.25);
		}
		my $left = $end - time;
		last if $left <= 0 || !$sel->can_read($left);
		my $n = sysread($s, $buf, 65536, length $buf);
		if (!$n)
		{
			$eof = 1;
			last;
		}
	}
	close $s;
	my $r = parse_response($buf);
	$r->{closed} = $eof;
	$r->{elapsed} = time - $t0;
	$r->{sent} = $off;
	return $r;
}

sub get
{
	my ($path, %o) = @_;
	my $headers = join '', map { "$_: $o{headers}{$_}\r\n" } sort keys %{ $o{headers} // {} };
	return http_raw("GET $path HTTP/1.1\r\nHost: 127.0.0.1:$port\r\nConnection: close\r\n$headers\r\n",
		%o);
}

# URL-encode everything but the unreserved characters.
sub uri
{
	my ($s) = @_;
	utf8::encode($s);    # characters, as UTF-8
	$s =~ s/([^A-Za-z0-9\-._~])/sprintf('%%%02X', ord $1)/ge;
	return $s;
}

sub show
{
	my ($r) = @_;
	my $s = $r->{raw} // '';
	$s = substr($s, 0, 200) . '...' if length $s > 200;
	$s =~ s/([^\x20-\x7e])/sprintf('\\x%02x', ord $1)/ge;
	return sprintf('status %s, closed %s after %.1f s: "%s"',
		$r->{status}, $r->{closed} ? 'yes' : 'no', $r->{elapsed} // 0, $s);
}

# "status error-code" of an answer, for comparisons.
sub err_of
{
	my ($r) = @_;
	return sprintf('%s %s', $r->{status}, $r->{json} ? $r->{json}{error} // '?' : 'no JSON');
}

# PROTOCOL.md's refusal: the status, and {"error":code,"message":...}.
sub is_error
{
	my ($r, $status, $code, $name) = @_;
	is(err_of($r), "$status $code", $name) or diag(show($r));
	like($r->{json} ? $r->{json}{message} // '' : '', qr/^[^"\\]+$/, "$name: with a message")
	  if $r->{json};
}

# ------------------------------------------------------------------
# The worker: alive, and its memory
# ------------------------------------------------------------------

my $published = 0;
sub publish
{
	my ($type, $keys) = @_;
	my $args = join '', map { ", $_ => " . quote($keys->{$_}) } sort keys %$keys;
	my $id = $node->safe_psql('postgres', 'SELECT rt_publish(' . quote($type) . ", '{}'$args)");
	$published++;
	return $id;
}

sub quote
{
	my ($s) = @_;
	$s =~ s/'/''/g;
	return "'$s'";
}

sub events_of { return map { $_->{op} eq 'events' ? @{ $_->{events} } : () } @_; }

sub metric
{
	my ($name) = @_;
	my $m = get('/metrics');
	return $m->{body} =~ /^\Q$name\E (\S+)$/m ? $1 : undef;
}

ok(wait_until(sub { get('/healthz')->{body} eq 'ok' }), 'the worker serves');

# The subscriber that must keep getting events whatever else happens.
my $canary = RtWsClient->connect(port => $port, path => '/ws?executionId=canary', timeout => 5);
$canary->recv_until(sub { $_->{op} eq 'subscribed' }, 5);

sub alive
{
	my ($what) = @_;
	my $h = get('/healthz');
	is("$h->{status} $h->{body}", '200 ok', "after $what: /healthz is 200 ok");
	my $id = publish('canary', { execution_id => 'canary' });
	my $got = $canary->recv_until(sub { grep { $_->{id} == $id } events_of($_) }, 10);
	ok($got, "after $what: the live WebSocket subscriber gets a fresh event");
}

# The resident memory of this cluster's "rtevents server" process, in kB.
sub worker_pid
{
	open(my $fh, '<', $node->data_dir . '/postmaster.pid') or return undef;
	my $postmaster = <$fh>;
	chomp $postmaster;
	for my $dir (glob '/proc/[0-9]*')
	{
		my ($pid) = $dir =~ m{(\d+)$};
		open(my $st, '<', "$dir/stat") or next;
		my $stat = <$st>;
		next unless $stat && $stat =~ /\)\s+\S\s+(\d+)/ && $1 == $postmaster;
		open(my $cmd, '<', "$dir/cmdline") or next;
		local $/;
		my $title = <$cmd> // '';
		return $pid if $title =~ /rtevents server/;
	}
	return undef;
}

sub rss_kb
{
	my $pid = worker_pid() or return undef;
	open(my $fh, '<', "/proc/$pid/status") or return undef;
	while (<$fh>)
	{
		return $1 if /^VmRSS:\s+(\d+)\s+kB/;
	}
	return undef;
}

my $worker = worker_pid();
ok($worker, "the worker process is found (pid " . ($worker // '?') . ')');
# warm up what every connection touches, then measure
get('/metrics') for 1 .. 20;
my $rss_start = rss_kb();
diag("worker VmRSS at the start: $rss_start kB");

# ------------------------------------------------------------------
# Malformed HTTP
# ------------------------------------------------------------------
# A request line lws's parser gives up on, or CONNECT, is handed back to
# the worker as raw bytes (LWS_SERVER_OPTION_FALLBACK_TO_APPLY_LISTEN_ACCEPT_CONFIG),
# which answers it; left to lws, the first got an HTML 403 and CONNECT was
# held open, unanswered, for as long as the client liked.
{
	my $r = http_raw("GARBAGE\r\n\r\n", wait_close => 1);
	is_error($r, 400, 'bad_request', 'garbage request line');
	ok($r->{closed} && $r->{elapsed} < 2, '... and the connection closed at once') or diag(show($r));

	$r = http_raw("CONNECT 127.0.0.1:5432 HTTP/1.1\r\nHost: 127.0.0.1:5432\r\n\r\n", wait_close => 1);
	is_error($r, 400, 'bad_request', 'CONNECT');
	ok($r->{closed} && $r->{elapsed} < 2, '... and the connection closed at once') or diag(show($r));

	# after a request served on the same connection, kept alive
	$r = http_raw("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n", wait_close => 1);
	like($r->{raw}, qr{^HTTP/1\.1 200 OK\r\n.*\r\n\r\nokHTTP/1\.1 400 Bad Request\r\n.*"error":"bad_request"}s,
		'garbage after a request kept alive: 200, then 400') or diag(show($r));
	ok($r->{closed} && $r->{elapsed} < 2, '... and the connection closed at once') or diag(show($r));

	# lws refuses a path that does not start with '/' itself
	# (lib/roles/http/server/server.c, lws_http_action()), before any callback
	$r = http_raw("GET healthz HTTP/1.1\r\nHost: x\r\n\r\n", wait_close => 1);
	like($r->{status}, qr/^4\d\d$/, 'a path without a leading /: a 4xx') or diag(show($r));
	ok($r->{closed} && $r->{elapsed} < 2, '... and the connection closed at once') or diag(show($r));
	local $TODO = 'lws 4.1.6 answers a relative path with its own HTML 403 (lws_http_action()), '
	  . 'before any callback; PROTOCOL.md wants JSON';
	ok($r->{json} && $r->{json}{error}, '... with a JSON error body') or diag(show($r));
}
alive('a garbage request line and CONNECT');

{
	# HTTP/0.9 style: lws takes it as HTTP/1.0, which is lenient, not wrong
	my $r = http_raw("GET /healthz\r\n\r\n", wait_close => 1);
	is("$r->{status} $r->{body}", '200 ok', 'no HTTP version: served as HTTP/1.0') or diag(show($r));
	ok($r->{closed}, '... and closed, as HTTP/1.0 is');
	$r = http_raw("GET /api/events?after=-1\r\n\r\n", wait_close => 1);
	is_error($r, 400, 'bad_cursor', 'no HTTP version: the query string is still checked');
}
alive('requests without an HTTP version');

{
	my $r = http_raw(('A' x 5000) . " / HTTP/1.1\r\nHost: x\r\n\r\n", wait_close => 1);
	is_error($r, 400, 'bad_request', 'a 5,000-byte method');
	ok($r->{closed} && $r->{elapsed} < 2, '... and the connection closed at once') or diag(show($r));

	# more than lws reads at a time: what is left is read and discarded
	# after the answer, so that the close does not reset the connection
	# (a reset may cost a client the answer)
	my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port, Timeout => 5) or die "connect: $!";
	binmode $s;
	my $req = ('A' x 50000) . " / HTTP/1.1\r\nHost: x\r\n\r\n";
	my $sent = syswrite($s, $req) // 0;
	my ($buf, $n, $err) = ('', undef, '');
	while (IO::Select->new($s)->can_read(5))
	{
		$n = sysread($s, $buf, 65536, length $buf);
		$err = "$!" unless defined $n;
		last unless $n;
	}
	close $s;
	is(defined $n ? "sent $sent, then the end" : "error: $err", 'sent ' . length($req) . ', then the end',
		'a 50,000-byte method: all of it taken, and the connection ends cleanly, not reset');
	is(err_of(parse_response($buf)), '400 bad_request', '... after the 400');
}
alive('a huge method');

{
	# bare LF line ends: lenient parsing, answered normally
	my $r = http_raw("GET /healthz HTTP/1.1\nHost: x\nConnection: close\n\n", wait_close => 1);
	is("$r->{status} $r->{body}", '200 ok', 'bare LF line ends: served') or diag(show($r));
	$r = http_raw("GET /api/events?limit=0 HTTP/1.1\nHost: x\nConnection: close\n\n");
	is_error($r, 400, 'bad_cursor', 'bare LF line ends: the query string is still checked');
}
alive('bare LF line ends');

{
	my $r = http_raw("GET /heal\0thz HTTP/1.1\r\nHost: x\r\n\r\n", wait_close => 1);
	ok($r->{closed} && $r->{elapsed} < 2, 'a NUL in the path: closed at once') or diag(show($r));
	isnt($r->{status}, 200, '... not served');
	$r = http_raw("GET /api/events?executionId=a%00b HTTP/1.1\r\nHost: x\r\n\r\n", wait_close => 1);
	ok($r->{closed} && $r->{elapsed} < 2, 'an encoded NUL (%00) in a filter: closed at once') or diag(show($r));
	isnt($r->{status}, 200, '... not served');
	{
		local $TODO = 'lws 4.1.6 drops a URI that decodes to a NUL (lib/roles/http/parsers.c, '
		  . 'lws_parse_urldecode()) before any callback; PROTOCOL.md wants a 4xx with a JSON body';
		is($r->{status}, 400, '... with a 400') or diag(show($r));
	}

	# lws keeps a NUL in a header value, where it would cut the value short
	$r = http_raw("GET /healthz HTTP/1.1\r\nHost: x\r\nUser-Agent: a\0b\r\n\r\n");
	is_error($r, 400, 'bad_request', 'a NUL in a header value');
	ok($r->{elapsed} < 2, '... at once') or diag(show($r));
	# and in a header it does not know, read by the worker: no cursor
	$r = get('/api/events/stream?after=0', headers => { 'Last-Event-ID' => "1\0 2" }, timeout => 2);
	is_error($r, 400, 'bad_cursor', 'a NUL inside Last-Event-ID');
	my ($ws, $res) = RtWsClient->connect(port => $port, path => '/ws', headers => { Origin => "http://a\0b" });
	is(($res->{status} // 0) . ' ' . ($res->{json}{error} // ''), '400 bad_request',
		'/ws: a NUL in a header value is refused before the upgrade');

	# lws 4.1.6 reads a header whose name is the start of one it knows
	# (X-A, of X-Auth-Token) as a name that never ends, to the end of the
	# head and past it
	$r = http_raw("GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: ab\r\n\r\n", wait_close => 1, timeout => 20);
	ok($r->{closed} && $r->{elapsed} < 15, 'a header named by the start of a known name: closed within 15 s')
	  or diag(show($r));
	isnt($r->{status}, 200, '... not served');
	diag(sprintf('a header named X-A: %s', show($r)));
	local $TODO = 'lws 4.1.6 (lib/roles/http/parsers.c, lws_parse(), WSI_TOKEN_NAME_PART) looks for '
	  . 'the ":" of an unknown header before the character is matched, so a name that is the start of '
	  . 'a known one swallows the rest of the head until the 10 s handshake timeout, with no callback '
	  . 'meanwhile; PROTOCOL.md wants a prompt 4xx';
	ok($r->{status} >= 400 && $r->{elapsed} < 2, '... with a prompt 4xx');
}
alive('NUL bytes');

# ------------------------------------------------------------------
# Oversized headers and URLs (the worker allows 4 kB of request head)
# ------------------------------------------------------------------
{
	my $many = join '', map { "X-Pad-$_: " . ('v' x 100) . "\r\n" } 1 .. 60;
	my $r = http_raw("GET /healthz HTTP/1.1\r\nHost: x\r\n$many\r\n", wait_close => 1);
	ok($r->{closed} && $r->{elapsed} < 2, 'headers of 6.5 kB in total: closed at once') or diag(show($r));
	isnt($r->{status}, 200, '... not served');
	$r = http_raw("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " . ('v' x 5000) . "\r\n\r\n", wait_close => 1);
	ok($r->{closed} && $r->{elapsed} < 2, 'one header of 5 kB: closed at once') or diag(show($r));
	isnt($r->{status}, 200, '... not served');
	local $TODO = 'lws 4.1.6 drops a request whose head passes max_http_header_data '
	  . '(lib/roles/http/parsers.c, lws_pos_in_bounds(), then lws_handshake_server(): '
	  . '"lws_parse failed") without an answer or a callback; PROTOCOL.md wants a 4xx (431) with a JSON body';
	like($r->{status}, qr/^4\d\d$/, '... with a 4xx') or diag(show($r));
}
alive('oversized headers');

{
	my $r = http_raw("GET /api/events?executionId=" . ('x' x 5000) . " HTTP/1.1\r\nHost: x\r\n\r\n",
		wait_close => 1);
	ok($r->{closed} && $r->{elapsed} < 2, 'a 5 kB URL: closed at once') or diag(show($r));
	isnt($r->{status}, 200, '... not served');
	local $TODO = 'lws 4.1.6 drops a request line longer than max_http_header_data '
	  . '(lws_pos_in_bounds(), as for headers) without an answer or a callback; '
	  . 'PROTOCOL.md wants a 4xx (414) with a JSON body';
	like($r->{status}, qr/^4\d\d$/, '... with a 4xx') or diag(show($r));
}
alive('an oversized URL');

# Filter values past 200 bytes: refused, whatever their length (up to the
# 4 kB the request head may have), and wherever they are.
my $other = publish('secret', { execution_id => 'someone-else' });
{
	for my $path ('/api/events', '/api/events/stream')
	{
		my $r = get("$path?executionId=" . ('x' x 300), timeout => 2);
		is_error($r, 400, 'bad_filter', "$path: a 300-byte executionId is a 400");
	}
	my ($ws, $res) = RtWsClient->connect(port => $port, path => '/ws?jobId=' . ('x' x 300));
	ok(!$ws, '/ws: a 300-byte jobId is refused before the upgrade');
	is($res->{status} . ' ' . ($res->{json}{error} // ''), '400 bad_filter', '... with a 400 bad_filter');

	# lws 4.1.6's lws_get_urlarg_by_name() gives up at the first argument
	# that does not fit the caller's buffer (request.c: 464 bytes for keys
	# and cursors, 1600 for type, 64 for limit and offset), so a long value,
	# or any long argument before the filter, makes the filter absent.
	my $pad = 'pad=' . ('x' x 500);
	my $h = get('/api/events?executionId=' . ('x' x 500), timeout => 2);
	my $hidden = get("/api/events?$pad&executionId=e-hostile", timeout => 2);
	my $limit = get('/api/events?limit=' . ('1' x 70), timeout => 2);
	diag('GET /api/events?executionId=<500 bytes>: ' . show($h));
	diag('GET /api/events?pad=<500 bytes>&executionId=e-hostile: ' . show($hidden));
	diag('GET /api/events?limit=<70 digits>: ' . show($limit));

	# the streams: connected, then an event of another execution
	my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port) or die;
	syswrite($s, "GET /api/events/stream?$pad&executionId=e-hostile HTTP/1.1\r\nHost: x\r\n\r\n");
	my ($ws2) = RtWsClient->connect(port => $port, path => "/ws?$pad&executionId=e-hostile");
	my @ws2 = $ws2 ? $ws2->messages_for(1) : ();
	my $live = publish('secret', { execution_id => 'someone-else' });
	push @ws2, $ws2->messages_for(1) if $ws2;
	my $sse = '';
	my $sel = IO::Select->new($s);
	while ($sel->can_read(1) && sysread($s, $sse, 65536, length $sse)) { }
	close $s;
	diag("GET /api/events/stream?pad=<500 bytes>&executionId=e-hostile got: " . ($sse =~ s/\r?\n/ | /gr));
	diag('/ws?pad=<500 bytes>&executionId=e-hostile got: ' . join(' | ', map { $JSON->encode($_) } @ws2));
	$ws2->close(1000) if $ws2;
	TODO:
	{
		# fixed: every argument is looked up in a buffer as big as the query string may be
		is(err_of($h), '400 bad_filter', '/api/events?executionId=<500 bytes>: 400 bad_filter');
		ok(!grep({ $_->{id} == $other } @{ $hidden->{json}{events} // [] }),
			'/api/events?pad=<500 bytes>&executionId=e-hostile: no event of another execution');
		is(err_of($limit), '400 bad_cursor', '/api/events?limit=<70 digits>: 400 bad_cursor');
		unlike($sse, qr/^id: $live\r?$/m,
			'/api/events/stream?pad=<500 bytes>&executionId=e-hostile: no event of another execution');
		ok((grep { $_->{op} eq 'subscribed' && $_->{sub} eq 'default' } @ws2),
			'/ws?pad=<500 bytes>&executionId=e-hostile: the "default" subscription it names');
	}
}
alive('oversized filter values');

# ------------------------------------------------------------------
# WebSocket frames that break RFC 6455
# ------------------------------------------------------------------

# A connection past its welcome; then what happens after abuse() within 6 s.
sub ws_abuse
{
	my ($abuse, %o) = @_;
	my $ws = RtWsClient->connect(port => $port, path => '/ws', timeout => 5);
	$ws->recv_json(5);
	$abuse->($ws);
	my @got;
	my $deadline = time + ($o{wait} // 6);
	while (time < $deadline)
	{
		my @f = $ws->recv_frame($deadline - time);
		last unless @f;
		push @got, [@f];
		last if $f[0] eq 'close' || ($o{until} && $o{until}->(@f));
	}
	return ($ws, @got);
}

sub describe
{
	my ($ws, @got) = @_;
	return join('; ', map { join(' ', map { defined $_ ? substr($_, 0, 100) : 'undef' } @$_) } @got)
	  . ($ws->is_closed ? ' (closed ' . ($ws->close_code // '?') . ')' : ' (open)');
}

{
	my ($ws, @got) = ws_abuse(sub { $_[0]->send_frame(opcode => 'text', payload => "{\"op\":\"\xff\xfe\"}") });
	is($ws->close_code, 1007, 'invalid UTF-8 in a text frame: closed with 1007') or diag(describe($ws, @got));

	($ws, @got) = ws_abuse(sub { $_[0]->send_frame(opcode => 'text', fin => 0, payload => "{\"op\":\"\xe2\x82") ;
			$_[0]->send_frame(opcode => 0, payload => "\x28\"}") });
	is($ws->close_code, 1007, 'UTF-8 broken across fragments: closed with 1007') or diag(describe($ws, @got));

	($ws, @got) = ws_abuse(sub {
			$_[0]->send_frame(opcode => 'ping', fin => 0, payload => 'a');
			$_[0]->send_frame(opcode => 0, payload => 'b');
		});
	is($ws->close_code, 1002, 'a fragmented ping: closed with 1002') or diag(describe($ws, @got));

	# lws drops these without a close code (lws_ws_rx_sm(): illegal_ctl_length);
	# the worker names it, 1002, as lws closes (ws.c, dropping())
	for my $case ([ ping => 'x' x 126 ], [ pong => 'x' x 200 ], [ close => pack('n', 1000) . ('x' x 198) ])
	{
		my ($op, $payload) = @$case;
		($ws, @got) = ws_abuse(sub { $_[0]->send_frame(opcode => $op, payload => $payload) });
		is($ws->close_code, 1002, "a $op frame of " . length($payload) . ' bytes: closed with 1002')
		  or diag(describe($ws, @got));
	}

	($ws, @got) = ws_abuse(sub { $_[0]->send_frame(opcode => 'text', masked => 0, payload => '{"op":"ping"}') });
	diag('an unmasked client frame: ' . describe($ws, @got));
	{
		local $TODO = 'lws 4.1.6 serves unmasked client frames (lib/roles/ws/ops-ws.c, lws_ws_rx_sm(), '
		  . 'LWS_RXPS_04_FRAME_HDR_LEN keeps the mask bit in this_frame_masked, which no API reads, and '
		  . 'no callback sees a frame header); RFC 6455 5.1 says the server must close (1002)';
		is($ws->close_code, 1002, 'an unmasked client frame: closed with 1002');
	}
	$ws->abort;
}
alive('bad UTF-8, fragmented and oversized control frames, unmasked frames');

{
	# lws upgrades to the first of its vhost's protocols the list names,
	# "http" among them: such a connection was served by nobody, and
	# counted nowhere (not in rtevents.max_connections)
	for my $list ('http', 'http, rtevents', 'chat', 'x' x 200)
	{
		my ($ws, $res) = RtWsClient->connect(port => $port, path => '/ws',
			headers => { 'Sec-WebSocket-Protocol' => $list });
		is(($res->{status} // 0) . ' ' . ($res->{json}{error} // ''), '400 bad_request',
			'/ws with Sec-WebSocket-Protocol: ' . substr($list, 0, 20) . ': 400 bad_request');
	}
	my ($ws, $res) = RtWsClient->connect(port => $port, path => '/ws',
		headers => { 'Sec-WebSocket-Protocol' => 'chat, rtevents, http' });
	is(($res->{status} // 0) . ' ' . (($ws ? $ws->recv_json(5) : undef) // {})->{op}, '101 welcome',
		'/ws with Sec-WebSocket-Protocol: chat, rtevents, http: upgraded, as rtevents');
	is(lc($res->{headers}{'sec-websocket-protocol'} // ''), 'rtevents', '... which the answer names');
	$ws->close(1000) if $ws;
}
alive('WebSocket subprotocols');

{
	# A length past the message bound (16 kB) is refused at the frame's
	# first bytes, not once 16 kB have come: the connection costs nothing
	# more.  A zero mask key: the raw bytes sent afterwards are the payload.
	my $t0 = time;
	my ($ws, @got) = ws_abuse(sub {
			$_[0]->send_frame(opcode => 'text', length => (0x7fffffff << 32) | 0xffffffff,
				mask_key => "\0\0\0\0", payload => '{"op":"ping"}');
		});
	is($ws->close_code, 1009, 'a text frame declaring 2^63-1 bytes: closed with 1009 at its first bytes')
	  or diag(describe($ws, @got));
	ok(time - $t0 < 2, '... at once') or diag(describe($ws, @got));
	my ($err) = map { eval { $JSON->decode($_->[1]) } } grep { $_->[0] eq 'text' } @got;
	is(($err // {})->{code}, 'message_too_big', '... after a message_too_big error');

	for my $case ([ binary => 1_000_000_000 ], [ text => 16385 ])
	{
		my ($op, $length) = @$case;
		$t0 = time;
		($ws, @got) = ws_abuse(sub {
				$_[0]->send_frame(opcode => $op, length => $length, payload => 'x' x 100);
			});
		is($ws->close_code, 1009, "a $op frame declaring $length bytes: closed with 1009 at its first bytes")
		  or diag(describe($ws, @got));
		ok(time - $t0 < 2, '... at once') or diag(describe($ws, @got));
	}

	# the bound itself: a message of exactly 16 kB, in one frame and in two
	my $text = '{"op":"ping","pad":"' . ('y' x (16384 - 22)) . '"}';
	is(length $text, 16384, 'a message of 16,384 bytes');
	($ws, @got) = ws_abuse(sub { $_[0]->send_frame(opcode => 'text', payload => $text) },
		until => sub { $_[0] eq 'text' });
	is_deeply([ map { $_->[1] } grep { $_->[0] eq 'text' } @got ], ['{"op":"pong"}'],
		'... in one frame: served') or diag(describe($ws, @got));
	$ws->close(1000);
	($ws, @got) = ws_abuse(sub {
			$_[0]->send_frame(opcode => 'text', fin => 0, payload => substr($text, 0, 10000));
			$_[0]->send_frame(opcode => 0, payload => substr($text, 10000));
		}, until => sub { $_[0] eq 'text' });
	is_deeply([ map { $_->[1] } grep { $_->[0] eq 'text' } @got ], ['{"op":"pong"}'],
		'... in two frames: served') or diag(describe($ws, @got));
	$ws->close(1000);

	# lws drops this one without a close code too ("b63 of length must be zero")
	($ws, @got) = ws_abuse(sub {
			# the most significant bit of a 64-bit length must be 0
			$_[0]->send_raw(pack('CC', 0x81, 0xff) . ("\xff" x 8) . 'mask' . 'x' x 10);
		});
	is($ws->close_code, 1002, 'a 64-bit length with its top bit set: closed with 1002')
	  or diag(describe($ws, @got));
}
alive('absurd 64-bit lengths');

{
	for my $op (3, 7, 11, 15)
	{
		my ($ws, @got) = ws_abuse(sub { $_[0]->send_frame(opcode => $op, payload => 'x') });
		is($ws->close_code, 1002, "reserved opcode $op: closed with 1002") or diag(describe($ws, @got));
	}
	for my $rsv (1, 2, 4, 7)
	{
		my ($ws, @got) = ws_abuse(sub { $_[0]->send_frame(opcode => 'text', rsv => $rsv, payload => '{"op":"ping"}') });
		is($ws->close_code, 1002, "RSV bits $rsv (no extension agreed): closed with 1002")
		  or diag(describe($ws, @got));
	}
	my ($ws, @got) = ws_abuse(sub { $_[0]->send_frame(opcode => 0, payload => '{"op":"ping"}') });
	is($ws->close_code, 1002, 'a continuation frame with nothing to continue: closed with 1002')
	  or diag(describe($ws, @got));
	($ws, @got) = ws_abuse(sub {
			$_[0]->send_frame(opcode => 'text', fin => 0, payload => '{"op":');
			$_[0]->send_frame(opcode => 'text', payload => '{"op":"ping"}');
		});
	is($ws->close_code, 1002, 'a new text frame inside a fragmented message: closed with 1002')
	  or diag(describe($ws, @got));
}
alive('reserved opcodes and RSV bits');

{
	# 1,000 fragments of one message, a ping among them: put together
	my $text = '{"op":"ping","pad":"' . ('y' x 1975) . '"}';
	my @parts = map { substr($text, $_ * 2, 2) } 0 .. 999;
	is(length(join '', @parts), length $text, 'the message is cut into 1,000 fragments');
	my ($ws, @got) = ws_abuse(sub {
			my $w = $_[0];
			$w->send_frame(opcode => 'text', fin => 0, payload => $parts[0]);
			for my $i (1 .. 999)
			{
				$w->send_ping('mid') if $i == 500;
				$w->send_frame(opcode => 0, fin => $i == 999 ? 1 : 0, payload => $parts[$i]);
			}
		}, until => sub { $_[0] eq 'text' });
	my @texts = map { $_->[1] } grep { $_->[0] eq 'text' } @got;
	is_deeply(\@texts, ['{"op":"pong"}'], 'a message in 1,000 fragments is put together: pong')
	  or diag(describe($ws, @got));
	ok(!$ws->is_closed, '... and the connection stays open');
	ok((grep { $_->[0] eq 'pong' && $_->[1] eq 'mid' } @got), '... the ping among them answered');
	$ws->close(1000);

	# 1,000 fragments that add up to more than 16 kB: refused
	($ws, @got) = ws_abuse(sub {
			my $w = $_[0];
			$w->send_frame(opcode => 'text', fin => 0, payload => '{"op":"ping","pad":"');
			$w->send_frame(opcode => 0, fin => 0, payload => 'z' x 20) for 1 .. 998;
			$w->send_frame(opcode => 0, fin => 1, payload => '"}');
		});
	is($ws->close_code, 1009, '1,000 fragments adding up to 20 kB: closed with 1009') or diag(describe($ws, @got));
	my ($err) = map { eval { $JSON->decode($_->[1]) } } grep { $_->[0] eq 'text' } @got;
	is(($err // {})->{code}, 'message_too_big', '... after a message_too_big error');
}
alive('a message in 1,000 fragments');

{
	my $ws = RtWsClient->connect(port => $port, path => '/ws', timeout => 5);
	$ws->recv_json(5);
	for my $case ([ '10,000 [' => '[' x 10000 ],
		[ '8,000 nested arrays' => '[' x 8000 . ']' x 8000 ],
		[ '3,000 nested objects in a field' => '{"op":"ping","x":' . ('{"":' x 3000) . '1' . ('}' x 3000) . '}' ],
		[ 'deep nesting inside the filter' => '{"op":"subscribe","sub":"d","filter":{"type":' . '[' x 7000 . ']' x 7000 . '}}' ])
	{
		my ($name, $text) = @$case;
		ok(length($text) <= 16384, "$name: within the 16 kB a message may have");
		$ws->send_text($text);
		my $reply = $ws->recv_json(10);
		is(($reply // {})->{op} . '/' . (($reply // {})->{code} // ''), 'error/bad_message',
			"$name: error bad_message") or diag($ws->last_text // 'no reply');
	}
	$ws->send_json({ op => 'ping' });
	is(($ws->recv_json(5) // {})->{op}, 'pong', '... and the connection still serves');
	$ws->close(1000);
}
alive('deeply nested JSON');

# ------------------------------------------------------------------
# Injection strings: every filter and cursor, every endpoint
# ------------------------------------------------------------------
my @evil = (
	q{' OR '1'='1},
	q{'; DROP TABLE execution_events; --},
	q{" OR ""="},
	q{1) OR (1=1},
	q{x' UNION SELECT id, type FROM execution_events --},
	q{'||pg_sleep(3)||'},
	q{\\},
	q{\\'},
	q{%},
	q{_},
	q{NULL},
	q{$1},
	q{{a}},
	'"}',
	"\x{e9}' --",
);
my %evil_id;
for my $s (@evil)
{
	# an event whose keys and type are the string itself: a filter on the
	# string must find exactly it, as data
	my $b = $s;
	utf8::encode($b);
	$evil_id{$s} = publish($b, { execution_id => $b, batch_id => $b, job_id => $b });
}
# Which event a filter on key for the string must find: its own, except
# that a type list is split at commas (into types that match nothing).
sub want
{
	my ($key, $s) = @_;
	return $key eq 'type' && $s =~ /,/ ? '' : $evil_id{$s};
}

# Push the ring past them: a replay from 0 reads the table, with the
# strings as parameters of its query.
$node->safe_psql('postgres', q{SELECT count(rt_publish('filler', '{}', execution_id => 'filler')) FROM generate_series(1, 8300)});
$published += 8300;
my $rows_before = $node->safe_psql('postgres', 'SELECT count(*) FROM execution_events');

{
	my $slowest = 0;
	for my $s (@evil)
	{
		my $u = uri($s);
		for my $key (qw(executionId batchId jobId type))
		{
			my $r = get("/api/events?$key=$u");
			$slowest = $r->{elapsed} if $r->{elapsed} > $slowest;
			my @ids = map { $_->{id} } @{ $r->{json}{events} // [] };
			is("$r->{status} @ids", "200 " . want($key, $s),
				"/api/events?$key=$u: " . (want($key, $s) ? 'exactly the event that has it, as data' : 'nothing'))
			  or diag(show($r));
		}
		is_error(get("/api/events?organizationId=$u"), 400, 'bad_filter', "/api/events?organizationId=$u");
		for my $key (qw(after limit offset))
		{
			is_error(get("/api/events?$key=$u"), 400, 'bad_cursor', "/api/events?$key=$u");
		}
		for my $key (qw(since until))
		{
			is_error(get("/api/events?$key=$u"), 400, 'bad_cursor', "/api/events?$key=$u");
			is_error(get("/api/events?$key=2026-11-22T10:00:00Z$u"), 400, 'bad_cursor',
				"/api/events?$key=2026-11-22T10:00:00Z$u");
		}
		is_error(get("/api/events/stream?organizationId=$u"), 400, 'bad_filter',
			"/api/events/stream?organizationId=$u");
		is_error(get("/api/events/stream?after=$u"), 400, 'bad_cursor', "/api/events/stream?after=$u");
		is_error(get('/api/events/stream', headers => { 'Last-Event-ID' => $s =~ s/[^\x20-\x7e]//gr }),
			400, 'bad_cursor', "/api/events/stream with Last-Event-ID: $u");
	}
	ok($slowest < 2, sprintf('no history request took long (slowest %.2f s): pg_sleep ran nowhere', $slowest));
}

{
	# SSE and /ws with the strings in their query strings, replaying from 0:
	# each gets exactly its own event
	for my $s (@evil)
	{
		my $u = uri($s);
		for my $key (qw(executionId batchId jobId type))
		{
			my $r = get("/api/events/stream?$key=$u&after=0", timeout => 3, until => qr/^data: .*\n\n/m);
			my @ids = $r->{body} =~ /^id: (\d+)$/mg;
			is("$r->{status} @ids", '200 ' . want($key, $s), "/api/events/stream?$key=$u&after=0: "
				  . (want($key, $s) ? 'exactly its event' : 'nothing')) or diag(show($r));
		}
		my ($ws, $res);
		for my $key (qw(executionId batchId jobId type))
		{
			($ws, $res) = RtWsClient->connect(port => $port, path => "/ws?$key=$u&after=0", timeout => 5);
			my @msgs = $ws ? $ws->recv_until(sub { $_->{op} eq 'subscribed' }, 5) : ();
			is(join(' ', map { $_->{id} } events_of(@msgs)) . ' ' . ($msgs[-1]{op} // 'nothing'),
				want($key, $s) . ' subscribed', "/ws?$key=$u&after=0: "
				  . (want($key, $s) ? 'exactly its event' : 'nothing') . ', then subscribed')
			  or diag($res->{status_line} // '');
			$ws->close(1000) if $ws;
		}
		($ws, $res) = RtWsClient->connect(port => $port, path => "/ws?organizationId=$u");
		is(($res->{status} // 0) . ' ' . ($res->{json}{error} // ''), '400 bad_filter', "/ws?organizationId=$u: 400 bad_filter");
		($ws, $res) = RtWsClient->connect(port => $port, path => "/ws?after=$u");
		is(($res->{status} // 0) . ' ' . ($res->{json}{error} // ''), '400 bad_cursor', "/ws?after=$u: 400 bad_cursor");
	}
}

{
	# subscribe messages with the strings in every field
	my $ws = RtWsClient->connect(port => $port, path => '/ws', timeout => 5);
	$ws->recv_json(5);
	my $n = 0;
	for my $s (@evil)
	{
		for my $key (qw(executionId batchId jobId type))
		{
			my $sub = 's' . $n++;
			$ws->send_json({ op => 'subscribe', sub => $sub, filter => { $key => $s }, after => 0 });
			my @msgs = $ws->recv_until(sub { $_->{op} ne 'events' }, 5);
			my @ids = map { $_->{id} } map { @{ $_->{events} } }
			  grep { $_->{op} eq 'events' && grep { $_ eq $sub } @{ $_->{subs} } } @msgs;
			is(join(' ', @ids) . ' ' . ($msgs[-1]{op} // 'nothing'), "$evil_id{$s} subscribed",
				"subscribe with $key " . uri($s) . ': exactly its event') or diag($ws->last_text);
			$ws->send_json({ op => 'unsubscribe', sub => $sub });
			$ws->recv_until(sub { $_->{op} eq 'unsubscribed' }, 5);
		}
		$ws->send_json({ op => 'subscribe', sub => 'o', filter => { organizationId => $s } });
		is(($ws->recv_json(5) // {})->{code}, 'bad_filter', 'subscribe with organizationId ' . uri($s) . ': bad_filter');
		$ws->send_json({ op => 'subscribe', sub => 'a', after => $s });
		is(($ws->recv_json(5) // {})->{code}, 'bad_cursor', 'subscribe with after ' . uri($s) . ': bad_cursor');
		$ws->send_json({ op => 'subscribe', sub => $s, filter => { executionId => 'x' } });
		my $reply = $ws->recv_json(5) // {};
		if ($s =~ /^[A-Za-z0-9_.:-]{1,64}$/)
		{
			# a name like any other ("_", "NULL")
			is("$reply->{op} " . ($reply->{sub} // ''), "subscribed $s", 'subscribe named ' . uri($s) . ': subscribed');
			$ws->send_json({ op => 'unsubscribe', sub => $s });
			$ws->recv_until(sub { $_->{op} eq 'unsubscribed' }, 5);
			next;
		}
		is($reply->{code}, 'bad_sub', 'subscribe named ' . uri($s) . ': bad_sub');
		ok(!exists $reply->{sub}, '... and the name is not echoed back');
	}
	ok(!$ws->is_closed, 'the connection served all of them');
	$ws->close(1000);
}
is($node->safe_psql('postgres', 'SELECT count(*) FROM execution_events'), $rows_before,
	'the table is intact: no row more, no row less');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_tables WHERE tablename = 'execution_events'}),
	1, '... and still there');
alive('injection strings');

# A filter value that is not UTF-8 (%E9 alone) can match nothing stored.
{
	my $r = get('/api/events?executionId=%E9');
	diag('GET /api/events?executionId=%E9: ' . show($r));
	ok($r->{json} && $r->{status} >= 400 && $r->{status} != 500,
		'/api/events?executionId=%E9: a JSON refusal, no 500');
	my $sse = get('/api/events/stream?executionId=%E9&after=0', timeout => 3, wait_close => 1);
	diag('GET /api/events/stream?executionId=%E9&after=0: ' . show($sse));
	unlike($sse->{body}, qr/^id: /m, '/api/events/stream?executionId=%E9&after=0: no event');
	my ($ws, $res) = RtWsClient->connect(port => $port, path => '/ws?executionId=%E9&after=0');
	my @m = $ws ? $ws->messages_for(3) : ();
	diag('/ws?executionId=%E9&after=0: '
		  . ($ws ? join(' | ', map { $JSON->encode($_) } @m) . ', closed ' . ($ws->close_code // 'no')
			: "refused: $res->{status_line}"));
	ok(!grep({ $_->{op} eq 'events' } @m), '/ws?executionId=%E9&after=0: no event');
	TODO:
	{
		# fixed: filter values are checked to be UTF-8
		is(err_of($r), '400 bad_filter', '/api/events?executionId=%E9: 400 bad_filter');
		is(err_of($sse), '400 bad_filter', '/api/events/stream?executionId=%E9&after=0: 400 bad_filter');
		is(($res->{status} // 0) . ' ' . ($res->{json}{error} // ''), '400 bad_filter',
			'/ws?executionId=%E9&after=0: 400 bad_filter before the upgrade');
	}
}
alive('filter values that are not UTF-8');

# ------------------------------------------------------------------
# Ids out of range, timestamps that are not
# ------------------------------------------------------------------
{
	for my $path ('/api/events', '/api/events/stream')
	{
		for my $after ('-1', '99999999999999999999', '9223372036854775808', '1e3', '0x10', '+1', ' 1', '')
		{
			is_error(get("$path?after=" . uri($after)), 400, 'bad_cursor', "$path?after=" . uri($after));
		}
	}
	my $r = get('/api/events?after=9223372036854775807');
	is("$r->{status} " . $JSON->encode($r->{json} // {}), '200 {"events":[],"next":null}',
		'/api/events?after=9223372036854775807: nothing after the largest id');
	$r = get('/api/events/stream?after=9223372036854775807', timeout => 1);
	is($r->{status}, 200, '/api/events/stream?after=9223372036854775807: a stream, waiting');
	for my $after ('-1', '99999999999999999999')
	{
		my ($ws, $res) = RtWsClient->connect(port => $port, path => "/ws?after=$after");
		is(($res->{status} // 0) . ' ' . ($res->{json}{error} // ''), '400 bad_cursor', "/ws?after=$after: 400 bad_cursor");
	}
	for my $q ('limit=99999999999999999999', 'offset=99999999999999999999', 'limit=-1', 'offset=-1',
		'limit=1001', 'offset=100001')
	{
		is_error(get("/api/events?$q"), 400, 'bad_cursor', "/api/events?$q");
	}

	my $ws = RtWsClient->connect(port => $port, path => '/ws', timeout => 5);
	$ws->recv_json(5);
	for my $case ([ '-1' => 'bad_cursor' ], [ '"-1"' => 'bad_cursor' ],
		[ '99999999999999999999' => 'bad_cursor' ], [ '"99999999999999999999"' => 'bad_cursor' ],
		[ '9223372036854775808' => 'bad_cursor' ], [ '1.5' => 'bad_cursor' ], [ '1e3' => 'bad_cursor' ],
		[ '"1e3"' => 'bad_cursor' ], [ '""' => 'bad_cursor' ], [ '" 1"' => 'bad_cursor' ],
		[ 'true' => 'bad_cursor' ], [ '{}' => 'bad_message' ], [ '[1]' => 'bad_message' ])
	{
		my ($after, $code) = @$case;
		$ws->send_text(qq({"op":"subscribe","sub":"c","after":$after}));
		my $reply = $ws->recv_json(5) // {};
		is($reply->{code}, $code, "subscribe with after $after: $code");
	}
	$ws->send_text('{"op":"subscribe","sub":"max","after":"9223372036854775807"}');
	my $reply = $ws->recv_json(5) // {};
	is("$reply->{op} " . ($reply->{sub} // ''), 'subscribed max', 'subscribe after the largest id: subscribed, waiting');
	$ws->close(1000);

	for my $q ('since=2026-13-45T99:99:99Z', 'until=2026-02-30T00:00:00Z', 'since=0000-01-01T00:00:00Z',
		'since=9999-12-31T23:59:59%2B99:99')
	{
		$r = get("/api/events?$q");
		diag("/api/events?$q: " . show($r));
		ok($r->{json} && (("$r->{status} $r->{json}{error}" eq '400 bad_cursor')
				|| ("$r->{status} $r->{json}{error}" eq '503 unavailable')),
			"/api/events?$q: a JSON refusal, no 500");
		# fixed: the fields of a timestamp are checked to be a real date and time
		is(err_of($r), '400 bad_cursor', "/api/events?$q: 400 bad_cursor");
	}
	for my $q ('since=now()', 'until=yesterday', 'since=2026-11-22', 'since=2026-11-22T10:00:00',
		'until=2026-11-22T10:00:00%2B0100', 'since=' . uri("2026-11-22T10:00:00Z' OR 1=1"),
		'since=epoch', 'until=infinity')
	{
		is_error(get("/api/events?$q"), 400, 'bad_cursor', "/api/events?$q");
	}
}
alive('ids and timestamps out of range');

# ------------------------------------------------------------------
# A flood: 1,000 WebSocket connections at once, then closed
# ------------------------------------------------------------------
sub ws_conns { return metric('rtevents_connections{transport="websocket"}') // -1; }

# The worker's open-file limit bounds the flood (it raises its soft limit
# to the hard one; a machine with a low hard limit gets a smaller flood).
my $fd_limit = 1_000_000;
if (open(my $lim, '<', "/proc/$worker/limits"))
{
	while (<$lim>)
	{
		$fd_limit = $1 if /^Max open files\s+(\d+)/;
	}
}
my $flood = $fd_limit >= 1200 ? 1000 : $fd_limit - 200;
diag("the worker may open $fd_limit files: a flood of $flood connections") if $flood < 1000;

# $n WebSocket upgrades at once, from 4 processes (each under the usual
# 1,024 descriptors), held while check runs, then closed: half with a close
# frame, half by vanishing.
sub flood
{
	my ($n, $check) = @_;
	my $kids = 4;
	my $each = int($n / $kids);
	my @kids;
	for my $k (1 .. $kids)
	{
		pipe(my $from_kid, my $to_parent) or die "pipe: $!";
		pipe(my $from_parent, my $to_kid) or die "pipe: $!";
		my $pid = fork() // die "fork: $!";
		if ($pid == 0)
		{
			close $from_kid;
			close $to_kid;
			my @socks;
			for (1 .. $each)
			{
				my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port, Timeout => 10) or last;
				binmode $s;
				syswrite($s, "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:$port\r\nUpgrade: websocket\r\n"
					  . "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
					  . "Sec-WebSocket-Version: 13\r\n\r\n");
				push @socks, $s;
			}
			my ($upgraded, %buf) = (0);
			my $sel = IO::Select->new(@socks);
			my $deadline = time + 30;
			while ($sel->count && time < $deadline)
			{
				for my $s ($sel->can_read(1))
				{
					my $got = sysread($s, $buf{$s}, 4096, length($buf{$s} // ''));
					if (!$got || $buf{$s} =~ /\r\n\r\n/)
					{
						$upgraded++ if $got && $buf{$s} =~ m{^HTTP/1\.1 101 };
						$sel->remove($s);
					}
				}
			}
			syswrite($to_parent, "$upgraded\n");
			my $go = <$from_parent>;
			my $i = 0;
			for my $s (@socks)
			{
				syswrite($s, pack('CC', 0x88, 0x82) . "\0\0\0\0" . pack('n', 1000)) if $i++ % 2;
				close $s;
			}
			POSIX::_exit(0);
		}
		close $to_parent;
		close $from_parent;
		push @kids, { pid => $pid, from => $from_kid, to => $to_kid };
	}
	my $t0 = time;
	my $upgraded = 0;
	for my $kid (@kids)
	{
		my $sel = IO::Select->new($kid->{from});
		my $line = $sel->can_read(60) ? readline($kid->{from}) : undef;
		$upgraded += $line // 0;
	}
	my $took = time - $t0;
	$check->($upgraded, $kids * $each, $took);
	syswrite($_->{to}, "close\n") for @kids;
	waitpid($_->{pid}, 0) for @kids;
}

my ($rss_flood, $rss_after_flood);
{
	my $base = ws_conns();
	my $slots = metric('rtevents_connection_slots_used');
	flood($flood, sub {
		my ($upgraded, $n, $took) = @_;
		is($upgraded, $n, sprintf('%d WebSocket connections opened at once, all upgraded (%.1f s)', $n, $took));
		ok(wait_until(sub { ws_conns() >= $base + $n }, 10),
			'... the worker holds them all (rtevents_connections{transport="websocket"})');
		$rss_flood = rss_kb();
		diag("worker VmRSS with $n more connections: $rss_flood kB");
		alive("opening $n connections");
	});
	ok(wait_until(sub { ws_conns() == $base }, 20), '... and once they are gone, so are their connections')
	  or diag('websocket connections: ' . ws_conns() . ", before the flood: $base");
	is(metric('rtevents_connection_slots_used'), $slots, '... and their slots');
	alive("a flood of $flood connections");
	$rss_after_flood = rss_kb();
	diag("worker VmRSS after the flood closed: $rss_after_flood kB");
	ok($rss_after_flood <= $rss_start + 20 * 1024,
		"after the flood, the worker's memory is back near the start ($rss_start -> $rss_after_flood kB)");
	# ... and what the allocator kept goes back to the system: the worker
	# trims its heap within 10 s of 1,000 clients leaving
  SKIP:
	{
		skip "a flood of $flood is below the 1,000 that makes the worker trim", 1 if $flood < 1000;
		# at least a quarter of what it grew by (about half, measured: the
		# rest is pinned by what other clients hold); none without the trim
		my $back = $rss_flood - ($rss_flood - $rss_start) / 4;
		my $rss_trimmed;
		ok(wait_until(sub { ($rss_trimmed = rss_kb()) <= $back }, 20),
			"... and given back to the system ($rss_flood kB with the flood, $rss_trimmed kB 10 s after)");
	}

	# a second flood reuses what the first one left in the allocator: a leak
	# per connection would show here (1,000 connections of 1 kB each: 1 MB)
	flood($flood, sub {
		my ($upgraded, $n) = @_;
		is($upgraded, $n, "a second flood of $n connections: all upgraded");
	});
	ok(wait_until(sub { ws_conns() == $base }, 20), '... and all gone again');
	alive('a second flood');
	my $rss_second = rss_kb();
	diag("worker VmRSS after a second flood: $rss_second kB");
	ok($rss_second <= $rss_after_flood + 1024,
		"a second flood leaves no more behind ($rss_after_flood -> $rss_second kB)");
}

# ------------------------------------------------------------------
# Slowloris: clients that send their request head a byte a second
# ------------------------------------------------------------------
{
	my $head = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:$port\r\nX-Slow: " . ('s' x 100);
	my @slow;
	for (1 .. 20)
	{
		my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port, Timeout => 5) or next;
		binmode $s;
		push @slow, { sock => $s, t0 => time, sent => 0, got => '' };
	}
	is(scalar @slow, 20, '20 slowloris clients connect');
	my (@latency, $failed) = ();
	my $deadline = time + 25;
	while (time < $deadline && grep { !defined $_->{closed_at} } @slow)
	{
		my $tick = time;
		for my $c (grep { !defined $_->{closed_at} } @slow)
		{
			if (IO::Select->new($c->{sock})->can_read(0))
			{
				my $n = sysread($c->{sock}, $c->{got}, 4096, length $c->{got});
				$c->{closed_at} = time - $c->{t0} unless $n;
				next;
			}
			syswrite($c->{sock}, substr($head, $c->{sent}++, 1)) if $c->{sent} < length $head;
		}
		my $t = time;
		my $h = get('/healthz', timeout => 2);
		push @latency, time - $t;
		$failed++ unless $h->{status} == 200;
		my $rest = 1 - (time - $tick);
		sleep($rest) if $rest > 0;
	}
	my @open = grep { !defined $_->{closed_at} } @slow;
	my @closed = sort { $a <=> $b } map { $_->{closed_at} } grep { defined $_->{closed_at} } @slow;
	is(scalar @open, 0, 'every slowloris client is closed');
	diag(sprintf('slowloris: closed after %.1f to %.1f s, having sent %d to %d bytes; /healthz meanwhile: '
			  . '%d requests, slowest %.3f s', $closed[0] // -1, $closed[-1] // -1,
			(sort { $a <=> $b } map { $_->{sent} } @slow)[0], (sort { $b <=> $a } map { $_->{sent} } @slow)[0],
			scalar @latency, (sort { $b <=> $a } @latency)[0] // -1));
	ok(@closed && $closed[0] >= 8 && $closed[-1] <= 16,
		'... by the handshake timeout, 10 to 15 s after connecting, though bytes keep coming');
	ok(!grep({ $_->{got} =~ m{^HTTP/1\.\d 2} } @slow), '... and none of them was served');
	ok(!$failed && (sort { $b <=> $a } @latency)[0] < 1, 'while they hung on, /healthz was served, promptly');
	close $_->{sock} for @slow;
}
alive('20 slowloris clients');

# ------------------------------------------------------------------
# Memory
# ------------------------------------------------------------------
my $rss_end = rss_kb();
diag("worker VmRSS: $rss_start kB at the start, $rss_after_flood kB after the flood, $rss_end kB at the end");
ok($rss_end <= $rss_start + 20 * 1024,
	"the worker's memory is back near where it started (+" . ($rss_end - $rss_start) . ' kB)');
is(worker_pid(), $worker, 'the same worker process served the whole suite (no crash, no restart)');
ok(!$canary->is_closed, 'the subscriber connected at the start is still connected');
is_deeply([ $canary->protocol_errors ], [], '... and the server broke no framing rule with it');

$canary->close(1000);
$node->stop;
done_testing();

# RtWsClient against a minimal WebSocket server forked right here, with
# framing code of its own: the handshake and its refusals, 7/16/64-bit
# lengths both ways, fragmentation both ways, pings answered automatically
# or by hand, frames split across reads and many frames in one read, close
# codes both ways, and timeouts that are kept.  No PostgreSQL needed.
use strict;
use warnings;
use utf8;
use Digest::SHA qw(sha1);
use Encode ();
use Errno qw(EINTR);
use File::Temp qw(tempdir);
use IO::Socket::INET;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use POSIX ();
use Test::More;
use Time::HiRes qw(time sleep);
use RtWsClient;

binmode(Test::More->builder->$_, ':encoding(UTF-8)')
  for qw(output failure_output todo_output);

# A safety net: nothing here may hang.
alarm(180);

my $dir = tempdir(CLEANUP => 1);
my $json = JSON::PP->new->utf8->canonical;

# ------------------------------------------------------------ the server

my $listener = IO::Socket::INET->new(
	LocalAddr => '127.0.0.1',
	LocalPort => 0,
	Listen => 32,
	ReuseAddr => 1,
	Proto => 'tcp') or die "listen: $!";
my $port = $listener->sockport;

my $server_pid = fork() // die "fork: $!";
if (!$server_pid)
{
	setpgrp(0, 0);
	$SIG{CHLD} = 'IGNORE';
	alarm(170);
	while (1)
	{
		my $c = $listener->accept;
		if (!$c)
		{
			next if $! == EINTR;
			POSIX::_exit(1);
		}
		my $pid = fork();
		if (defined $pid && $pid == 0)
		{
			close $listener;
			alarm(60);
			eval { serve($c) };
			POSIX::_exit(0);
		}
		close $c;
	}
}
close $listener;

END
{
	local $?;
	if ($server_pid)
	{
		kill 'TERM', -$server_pid, $server_pid;
		waitpid($server_pid, 0);
	}
}

sub srv_write
{
	my ($c, $bytes) = @_;
	local $SIG{PIPE} = 'IGNORE';
	my $off = 0;
	while ($off < length $bytes)
	{
		my $n = syswrite($c, $bytes, length($bytes) - $off, $off);
		die "server write: $!" unless defined $n;
		$off += $n;
	}
}

# Reads until $$buf holds $n bytes; false at EOF.
sub srv_need
{
	my ($c, $buf, $n) = @_;
	while (length $$buf < $n)
	{
		my $r = sysread($c, $$buf, 65536, length $$buf);
		return 0 unless $r;
	}
	return 1;
}

sub srv_read_frame
{
	my ($c, $buf) = @_;
	srv_need($c, $buf, 2) or return;
	my ($b0, $b1) = unpack('CC', $$buf);
	my ($len, $off) = ($b1 & 0x7f, 2);
	if ($len == 126)
	{
		srv_need($c, $buf, 4) or return;
		($len, $off) = (unpack('n', substr($$buf, 2, 2)), 4);
	}
	elsif ($len == 127)
	{
		srv_need($c, $buf, 10) or return;
		($len, $off) = (unpack('Q>', substr($$buf, 2, 8)), 10);
	}
	my $masked = ($b1 & 0x80) ? 1 : 0;
	my $key;
	if ($masked)
	{
		srv_need($c, $buf, $off + 4) or return;
		$key = substr($$buf, $off, 4);
		$off += 4;
	}
	srv_need($c, $buf, $off + $len) or return;
	my $payload = substr($$buf, $off, $len);
	substr($$buf, 0, $off + $len) = '';
	if ($masked && $len)
	{
		my $stream = substr($key x (int($len / 4) + 1), 0, $len);
		$payload = "$payload" ^ "$stream";
	}
	return {
		fin => $b0 >> 7,
		rsv => ($b0 >> 4) & 7,
		op => $b0 & 0x0f,
		masked => $masked,
		payload => $payload,
	};
}

sub srv_frame
{
	my ($op, $payload, %o) = @_;
	$payload //= '';
	my $len = length $payload;
	my $fin = $o{fin} // 1;
	my $head = pack('C', ($fin ? 0x80 : 0) | $op);
	my $mbit = $o{masked} ? 0x80 : 0;
	$head .= $len < 126 ? pack('C', $mbit | $len)
	  : $len < 65536 ? pack('Cn', $mbit | 126, $len)
	  :                pack('CQ>', $mbit | 127, $len);
	if ($o{masked})
	{
		my $key = 'abcd';
		my $stream = substr($key x (int($len / 4) + 1), 0, $len);
		return $head . $key . ($len ? "$payload" ^ "$stream" : '');
	}
	return $head . $payload;
}

sub srv_report
{
	my ($tag, $text) = @_;
	return unless defined $tag && $tag =~ /^\w+$/;
	open(my $fh, '>', "$dir/$tag.tmp") or return;
	print $fh $text;
	close $fh;
	rename("$dir/$tag.tmp", "$dir/$tag");
}

sub http_answer
{
	my ($status, $headers, $body) = @_;
	return "HTTP/1.1 $status\r\n" . join('', map { "$_\r\n" } @$headers) . "\r\n" . $body;
}

# One connection: the handshake, then commands in text messages.
sub serve
{
	my ($c) = @_;
	my $buf = '';
	while (index($buf, "\r\n\r\n") < 0)
	{
		my $r = sysread($c, $buf, 65536, length $buf);
		return unless $r;
	}
	my ($head) = split /\r\n\r\n/, $buf, 2;
	$buf = substr($buf, index($buf, "\r\n\r\n") + 4);
	my ($request_line, @lines) = split /\r\n/, $head;
	my ($method, $path) = split / /, $request_line;
	my %h = map { /^([^:]+):\s*(.*)$/ ? (lc $1 => $2) : () } @lines;
	my ($tag) = $path =~ /[?&]tag=(\w+)/;

	if ($path =~ m{^/bad})
	{
		my $body = '{"error":"bad_request","message":"unknown parameter"}';
		srv_write($c, http_answer('400 Bad Request',
			[ 'Content-Type: application/json', 'Content-Length: ' . length $body ], $body));
		return;
	}
	if ($path =~ m{^/busy})
	{
		# Chunked, in two writes, the second chunk split mid-way.
		srv_write($c, http_answer('503 Service Unavailable',
			[ 'Content-Type: application/json', 'Transfer-Encoding: chunked' ],
			"10\r\n{\"error\":\"busy\",\r\n"));
		sleep(0.05);
		srv_write($c, "1d\r\n\"message\":\"too many clients\"}");
		sleep(0.05);
		srv_write($c, "\r\n0\r\n\r\n");
		return;
	}
	if ($path =~ m{^/gone})
	{
		srv_write($c, http_answer('404 Not Found', [ 'Content-Type: text/plain' ], "no such thing\n"));
		return;    # the body ends at EOF
	}
	if ($path =~ m{^/noanswer})
	{
		1 while sysread($c, my $junk, 4096);    # until the client gives up
		return;
	}
	if (!defined $h{'sec-websocket-key'} || ($h{'sec-websocket-version'} // '') ne '13'
		|| lc($h{upgrade} // '') ne 'websocket')
	{
		my $body = '{"error":"bad_upgrade","message":"not a WebSocket upgrade"}';
		srv_write($c, http_answer('400 Bad Request',
			[ 'Content-Type: application/json', 'Content-Length: ' . length $body ], $body));
		return;
	}
	my $accept = encode_base64(sha1($h{'sec-websocket-key'} . '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'), '');
	$accept = 'x' . substr($accept, 1) if $path =~ m{^/wrongaccept};
	my $welcome = $json->encode({
		op => 'welcome',
		path => $path,
		method => $method,
		x_test => $h{'x-test'},
		key_bytes => length(MIME::Base64::decode_base64($h{'sec-websocket-key'})) });
	# The first frame goes out in the same write as the 101 head.
	srv_write($c, http_answer('101 Switching Protocols',
		[ 'Upgrade: websocket', 'Connection: Upgrade', "Sec-WebSocket-Accept: $accept" ], '')
		  . srv_frame(1, $welcome));

	my ($msg_op, $msg) = (undef, '');
	while (my $f = srv_read_frame($c, \$buf))
	{
		if (!$f->{masked})
		{
			srv_write($c, srv_frame(8, pack('n', 1002) . 'unmasked frame'));
			return;
		}
		if ($f->{rsv})
		{
			srv_write($c, srv_frame(8, pack('n', 1002) . 'reserved bits'));
			return;
		}
		my $op = $f->{op};
		if ($op == 8)
		{
			my ($code, $reason) = length $f->{payload} >= 2
			  ? (unpack('n', $f->{payload}), substr($f->{payload}, 2)) : (1005, '');
			srv_write($c, srv_frame(8, $f->{payload}));
			srv_report($tag, "client-initiated $code $reason");
			return;
		}
		if ($op == 9)
		{
			srv_write($c, srv_frame(10, $f->{payload}));
			next;
		}
		next if $op == 10;    # a pong nobody asked for
		if ($op == 0)
		{
			$msg .= $f->{payload};
		}
		else
		{
			($msg_op, $msg) = ($op, $f->{payload});
		}
		next unless $f->{fin};
		if ($msg_op == 2)
		{
			srv_write($c, srv_frame(2, $msg));
			next;
		}
		command($c, \$buf, $msg, $tag) or return;
	}
}

# Runs one text command; false when the connection is over.
sub command
{
	my ($c, $buf, $text, $tag) = @_;
	if ($text =~ /^ping:(.*)$/s)
	{
		my $payload = $1;
		srv_write($c, srv_frame(9, $payload));
		my $f = srv_read_frame($c, $buf) or return 0;
		my $ok = $f->{op} == 10 && $f->{masked} && $f->{payload} eq $payload;
		srv_write($c, srv_frame(1, ($ok ? 'pong-ok:' : 'pong-bad:') . $f->{payload}));
	}
	elsif ($text =~ /^frag:(\d+)$/)
	{
		# A message in $1 frames, with a ping between the first two.
		for my $i (0 .. $1 - 1)
		{
			srv_write($c, srv_frame($i == 0 ? 1 : 0, "part$i-", fin => $i == $1 - 1));
			srv_write($c, srv_frame(9, 'mid')) if $i == 0;
		}
	}
	elsif ($text =~ /^big:(\d+)$/)
	{
		srv_write($c, srv_frame(1, substr('0123456789' x ($1 / 10 + 1), 0, $1)));
	}
	elsif ($text =~ /^split:(.*)$/s)
	{
		# Byte by byte, so every part of the frame arrives in its own read.
		for my $byte (split //, srv_frame(1, $1))
		{
			srv_write($c, $byte);
			sleep(0.002);
		}
	}
	elsif ($text =~ /^burst:(\d+)$/)
	{
		srv_write($c, join('', map { srv_frame(1, qq({"n":$_})) } 1 .. $1));
	}
	elsif ($text =~ /^close:(\d+):(.*)$/s)
	{
		srv_write($c, srv_frame(8, pack('n', $1) . $2));
		my $f = srv_read_frame($c, $buf);
		srv_report($tag,
			!$f ? 'no reply'
			: $f->{op} != 8 ? "reply opcode $f->{op}"
			: 'reply ' . (length $f->{payload} >= 2 ? unpack('n', $f->{payload}) : 'empty')
			  . ($f->{masked} ? ' masked' : ' unmasked'));
		return 0;
	}
	elsif ($text eq 'closeempty')
	{
		srv_write($c, srv_frame(8, ''));
		srv_read_frame($c, $buf);
		return 0;
	}
	elsif ($text eq 'eof')
	{
		return 0;
	}
	elsif ($text eq 'halfframe')
	{
		srv_write($c, substr(srv_frame(1, 'x' x 50), 0, 20));
		return 0;
	}
	elsif ($text eq 'silent')
	{
	}
	elsif ($text eq 'pong')
	{
		srv_write($c, srv_frame(10, 'unasked'));
	}
	elsif ($text eq 'masked')
	{
		srv_write($c, srv_frame(1, 'masked by the server', masked => 1));
	}
	elsif ($text eq 'notjson')
	{
		srv_write($c, srv_frame(1, 'this is { not json'));
	}
	else
	{
		srv_write($c, srv_frame(1, $text));
	}
	return 1;
}

# ------------------------------------------------------------ the tests

sub ws { return RtWsClient->connect(port => $port, timeout => 5, @_) }

sub wait_file
{
	my ($name) = @_;
	my $deadline = time + 5;
	sleep(0.02) while !-e "$dir/$name" && time < $deadline;
	open(my $fh, '<', "$dir/$name") or return undef;
	local $/;
	return scalar <$fh>;
}

sub elapsed(&)
{
	my ($code) = @_;
	my $t0 = time;
	my @r = $code->();
	return (time - $t0, @r);
}

# The handshake, and a first frame that came in the same packet as the 101.
{
	my ($ws, $res) = ws(path => '/ws?executionId=e1&tag=hs', headers => { 'X-Test' => 'yes' });
	ok($ws, 'upgrade succeeds') or BAIL_OUT("no upgrade: $res->{error}");
	is($res->{status}, 101, 'list context: the 101 answer comes along');
	is($res->{headers}{upgrade}, 'websocket', 'headers are there, by lower-case name');
	is($ws->response, $res, 'response() is that answer');
	my $welcome = $ws->recv_json(2);
	is($welcome->{op}, 'welcome', 'the frame sent with the 101 head is received');
	is($welcome->{path}, '/ws?executionId=e1&tag=hs', 'the path is sent as given');
	is($welcome->{x_test}, 'yes', 'extra headers are sent');
	is($welcome->{key_bytes}, 16, 'Sec-WebSocket-Key is 16 random bytes');
	is($ws->last_text, $json->encode($welcome), 'last_text is the raw text');

	ok($ws->send_text('hello'), 'send_text');
	is_deeply([ $ws->recv_frame(2) ], [ 'text', 'hello' ], 'echo comes back as (text, payload)');
	is($ws->last_fragments, 1, 'in one frame');

	ok($ws->send_text('héllo ☃'), 'send_text with wide characters');
	my ($op, $payload) = $ws->recv_frame(2);
	is($payload, Encode::encode('UTF-8', 'héllo ☃'), 'sent as UTF-8, received as bytes');

	my $doc = { op => 'subscribe', sub => 's1', filter => { executionId => 'e☃', type => [ 'a', 'b' ] }, after => 120 };
	ok($ws->send_json($doc), 'send_json');
	is_deeply($ws->recv_json(2), $doc, 'recv_json decodes what send_json encoded');

	ok($ws->send_binary("\x00\xff\x01"), 'send_binary');
	is_deeply([ $ws->recv_frame(2) ], [ 'binary', "\x00\xff\x01" ], 'binary echo');

	# Both ways across the 7-bit, 16-bit and 64-bit length encodings.
	for my $n (0, 1, 125, 126, 127, 65535, 65536, 70_000)
	{
		my $text = substr('abcdefghij' x ($n / 10 + 1), 0, $n);
		ok($ws->send_text($text), "send $n bytes");
		my ($op, $back) = $ws->recv_frame(5);
		ok(defined $back && $op eq 'text' && $back eq $text, "$n bytes echoed intact")
		  or diag('got ' . (defined $back ? length($back) . ' bytes' : 'nothing'));
	}
	ok($ws->send_text('big:70000'), 'ask for a 70 kB message');
	($op, $payload) = $ws->recv_frame(5);
	is(length $payload, 70_000, '70 kB message (64-bit length) received whole');
	is($payload, substr('0123456789' x 7001, 0, 70_000), 'and intact');

	is(scalar $ws->protocol_errors, 0, 'no protocol errors so far')
	  or diag(join "\n", $ws->protocol_errors);
	is($ws->close(1000, 'bye'), 1000, 'close(1000): the server answers 1000');
	ok($ws->is_closed, 'is_closed after close');
	is($ws->close_code, 1000, 'close_code');
	is($ws->close_reason, 'bye', 'close_reason');
	is($ws->close_sent, 1000, 'close_sent');
	is(wait_file('hs'), 'client-initiated 1000 bye', 'the server got close 1000 "bye"');
	is_deeply([ $ws->recv_frame(1) ], [], 'recv_frame on a closed connection returns at once');
	ok(!$ws->send_text('after'), 'sending on a closed connection fails, without dying');
}

# Fragmented messages, pings answered by themselves.
{
	my $ws = ws();
	$ws->recv_json;
	$ws->send_text('frag:4');
	is_deeply([ $ws->recv_frame(2) ], [ 'text', 'part0-part1-part2-part3-' ],
		'four fragments come back as one message');
	is($ws->last_fragments, 4, 'last_fragments counts them');
	is($ws->pings_answered, 1, 'the ping between the fragments was answered');

	$ws->send_text('ping:abc');
	is_deeply([ $ws->recv_frame(2) ], [ 'text', 'pong-ok:abc' ], 'auto_pong: a masked pong with the same payload');
	is($ws->pings_answered, 2, 'pings_answered counts it');

	# Fragmented by the client, and a ping of its own in between.
	ok($ws->send_frame(opcode => 'text', payload => 'ab', fin => 0), 'send_frame: first fragment');
	ok($ws->send_ping('p1'), 'send_ping between fragments');
	ok($ws->send_frame(opcode => 0, payload => 'cd', fin => 0), 'send_frame: continuation');
	ok($ws->send_frame(opcode => 'continuation', payload => 'ef'), 'send_frame: last continuation');
	is_deeply([ $ws->recv_frame(2) ], [ 'pong', 'p1' ], 'pong returned to the caller');
	is_deeply([ $ws->recv_frame(2) ], [ 'text', 'abcdef' ], 'the server reassembled the client fragments');

	# send_raw: a masked frame built by hand, written in two pieces.
	my $key = "\x01\x02\x03\x04";
	my $frame = pack('CC', 0x81, 0x80 | 3) . $key . ('raw' ^ substr($key, 0, 3));
	ok($ws->send_raw(substr($frame, 0, 3)), 'send_raw, first piece');
	sleep(0.05);
	ok($ws->send_raw(substr($frame, 3)), 'send_raw, the rest');
	is_deeply([ $ws->recv_frame(2) ], [ 'text', 'raw' ], 'hand-built frame echoed');

	# A frame arriving one byte per read (126-length header included).
	my $long = 'y' x 130;
	$ws->send_text("split:$long");
	is_deeply([ $ws->recv_frame(5) ], [ 'text', $long ], 'a frame split across 134 reads');

	# A frame split across reads, and a timeout in the middle of it.
	$ws->send_text('split:' . ('z' x 300));
	my ($t, @r) = elapsed { $ws->recv_frame(0.05) };
	is_deeply(\@r, [], 'timeout in the middle of a frame: nothing yet');
	is_deeply([ $ws->recv_frame(10) ], [ 'text', 'z' x 300 ], '... and nothing lost either');

	# Many frames in one read.
	$ws->send_text('burst:5');
	my @m = $ws->messages_for(0.5);
	is_deeply([ map { $_->{n} } @m ], [ 1 .. 5 ], 'messages_for: five frames out of one write');

	$ws->send_text('burst:6');
	my @got = $ws->recv_until(sub { $_->{n} == 3 }, 2);
	is_deeply([ map { $_->{n} } @got ], [ 1, 2, 3 ], 'recv_until (list): up to the match');
	my $match = $ws->recv_until(sub { $_[0]{n} == 5 }, 2);
	is($match->{n}, 5, 'recv_until (scalar): the match');
	is_deeply([ map { $_->{n} } @{ $ws->last_messages } ], [ 4, 5 ], 'last_messages has what came before');
	is($ws->recv_json(2)->{n}, 6, 'the rest is still there');

	# Timeouts are kept.
	$ws->send_text('silent');
	($t, @r) = elapsed { $ws->recv_frame(0.5) };
	is_deeply(\@r, [], 'recv_frame: empty list on timeout');
	ok($t >= 0.45 && $t < 1.5, "recv_frame(0.5) returned after ${\ sprintf '%.2f', $t} s");
	($t, @r) = elapsed { scalar $ws->recv_json(0.3) };
	is_deeply(\@r, [undef], 'recv_json: undef on timeout');
	ok($t >= 0.25 && $t < 1.3, "recv_json(0.3) returned after ${\ sprintf '%.2f', $t} s");
	($t, @r) = elapsed { $ws->recv_until(sub { 0 }, 0.4) };
	is_deeply(\@r, [], 'recv_until: nothing on timeout');
	ok($t >= 0.35 && $t < 1.4, "recv_until(0.4) returned after ${\ sprintf '%.2f', $t} s");
	($t, @r) = elapsed { $ws->messages_for(0.3) };
	is_deeply(\@r, [], 'messages_for: empty window');
	ok($t >= 0.25 && $t < 1.3, "messages_for(0.3) lasted ${\ sprintf '%.2f', $t} s");
	ok(!$ws->is_closed, 'timeouts do not close');

	# Nothing is skipped silently.
	$ws->send_text('pong');
	ok(!eval { $ws->recv_json(2); 1 }, 'recv_json dies on an unsolicited pong');
	like($@, qr/expected a text message, got pong/, '... saying so');
	$ws->send_text('notjson');
	ok(!eval { $ws->recv_json(2); 1 }, 'recv_json dies on text that is not JSON');
	like($@, qr/not JSON/, '... saying so');
	$ws->send_binary('bin');
	ok(!eval { $ws->recv_json(2); 1 }, 'recv_json dies on a binary message');

	is(scalar $ws->protocol_errors, 0, 'still no protocol errors')
	  or diag(join "\n", $ws->protocol_errors);
	$ws->send_text('masked');
	is_deeply([ $ws->recv_frame(2) ], [ 'text', 'masked by the server' ], 'a masked server frame is still read');
	like(join(',', $ws->protocol_errors), qr/masked/, '... and recorded as a protocol error');
	$ws->close;
}

# Pings handed to the caller with auto_pong => 0.
{
	my $ws = ws(auto_pong => 0);
	$ws->recv_json;
	$ws->send_text('ping:xyz');
	is_deeply([ $ws->recv_frame(2) ], [ 'ping', 'xyz' ], 'auto_pong => 0: the ping is returned');
	ok($ws->send_pong('xyz'), 'send_pong by hand');
	is_deeply([ $ws->recv_frame(2) ], [ 'text', 'pong-ok:xyz' ], 'the server got it');
	is($ws->pings_answered, 0, 'nothing answered automatically');
	$ws->send_text('frag:2');
	is_deeply([ $ws->recv_frame(2) ], [ 'ping', 'mid' ], 'a ping between fragments is returned first');
	is_deeply([ $ws->recv_frame(2) ], [ 'text', 'part0-part1-' ], 'then the whole message');
	$ws->close(1000);
}

# Closing, by the server: codes and the client's answer.
{
	my $ws = ws(path => '/ws?tag=goaway');
	$ws->recv_json;
	$ws->send_text('close:1001:going away');
	is_deeply([ $ws->recv_frame(2) ], [ 'close', 1001, 'going away' ], "close frame: ('close', 1001, 'going away')");
	ok($ws->is_closed, 'is_closed');
	is($ws->close_code, 1001, 'close_code 1001');
	is($ws->close_reason, 'going away', 'close_reason');
	is(wait_file('goaway'), 'reply 1001 masked', 'the client answered with a masked close 1001');
	is($ws->close, 1001, 'close() afterwards just returns the code');

	$ws = ws();
	$ws->recv_json;
	$ws->send_text('close:1001:going away');
	is($ws->recv_json(2), undef, 'recv_json: undef on close');
	ok($ws->is_closed && $ws->close_code == 1001, '... with the code recorded');

	$ws = ws();
	$ws->recv_json;
	$ws->send_text('burst:2');
	$ws->send_text('close:4000:bye');
	my @m = $ws->messages_for(3);
	is(scalar @m, 2, 'messages_for stops at close, keeping what came before');
	is($ws->close_code, 4000, 'application close code 4000');

	$ws = ws();
	$ws->recv_json;
	$ws->send_text('closeempty');
	is_deeply([ $ws->recv_frame(2) ], [ 'close', 1005, '' ], 'empty close frame: 1005');

	$ws = ws();
	$ws->recv_json;
	$ws->send_text('eof');
	is_deeply([ $ws->recv_frame(2) ], [ 'close', 1006, '' ], 'TCP closed without a close frame: 1006');
	ok($ws->is_closed, 'is_closed');

	$ws = ws();
	$ws->recv_json;
	$ws->send_text('halfframe');
	is_deeply([ $ws->recv_frame(2) ], [ 'close', 1006, '' ], 'EOF in the middle of a frame: 1006');
	like(join(',', $ws->protocol_errors), qr/incomplete frame/, '... recorded');

	# Malformed client frames, answered by the server with 1002.
	$ws = ws();
	$ws->recv_json;
	ok($ws->send_frame(opcode => 'text', payload => 'naked', masked => 0), 'send_frame masked => 0');
	is_deeply([ $ws->recv_frame(2) ], [ 'close', 1002, 'unmasked frame' ], 'the server refuses it: 1002');

	$ws = ws();
	$ws->recv_json;
	ok($ws->send_frame(opcode => 1, payload => 'x', rsv => 4), 'send_frame rsv => 4');
	is_deeply([ $ws->recv_frame(2) ], [ 'close', 1002, 'reserved bits' ], 'the server refuses it: 1002');

	# A server that goes away while the client keeps sending: no SIGPIPE death.
	$ws = ws();
	$ws->recv_json;
	$ws->send_text('eof');
	sleep(0.2);
	my $failed = 0;
	for (1 .. 20)
	{
		$failed++ unless $ws->send_text('anyone?');
		sleep(0.01);
	}
	ok($failed > 0, "writes to a vanished server fail ($failed of 20) without killing the test");
	ok(defined $ws->error, 'error() says why: ' . ($ws->error // 'undef'));

	# abort: no close frame at all.
	$ws = ws(path => '/ws?tag=aborted');
	$ws->recv_json;
	ok($ws->abort, 'abort');
	ok($ws->is_closed, 'is_closed after abort');
	sleep(0.2);
	ok(!-e "$dir/aborted", 'the server saw no close frame');
}

# Refusals.
{
	my ($ws, $res) = ws(path => '/bad?x=1');
	ok(!defined $ws, 'list context: undef client on a 400');
	is($res->{status}, 400, 'status 400');
	is($res->{status_line}, 'HTTP/1.1 400 Bad Request', 'status_line');
	is($res->{headers}{'content-type'}, 'application/json', 'headers');
	is($res->{json}{error}, 'bad_request', 'the JSON body, decoded');
	like($res->{body}, qr/unknown parameter/, 'the body as text');
	like($res->{error}, qr/400/, 'error says why');

	my $died = !eval { ws(path => '/bad?x=1'); 1 };
	ok($died, 'scalar context: dies on a 400');
	like($@, qr/HTTP 400 instead of 101.*unknown parameter/s, '... with the status and the body');

	($ws, $res) = ws(path => '/busy');
	is($res->{status}, 503, 'a 503');
	is_deeply($res->{json}, { error => 'busy', message => 'too many clients' }, 'its chunked body, put together');

	($ws, $res) = ws(path => '/gone');
	is($res->{status}, 404, 'a 404 without Content-Length');
	is($res->{body}, "no such thing\n", 'body read to EOF');

	($ws, $res) = ws(path => '/wrongaccept');
	ok(!$ws, 'a 101 with a wrong Sec-WebSocket-Accept is refused');
	like($res->{error}, qr/Sec-WebSocket-Accept/, '... saying so');

	($ws, $res) = ws(headers => { 'Sec-WebSocket-Key' => undef });
	is($res->{status}, 400, 'headers => { name => undef } leaves a default header out');
	($ws, $res) = ws(headers => { 'sec-websocket-version' => '8' });
	is($res->{status}, 400, 'headers replace defaults, whatever their case');

	my $t;
	($t, $ws, $res) = elapsed { ws(path => '/noanswer', timeout => 0.5) };
	ok(!$ws, 'no answer to the upgrade: refused');
	like($res->{error}, qr/timed out/, '... timed out');
	ok($t < 1.5, "within the timeout (${\ sprintf '%.2f', $t} s)");

	my $spare = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp', Listen => 1);
	my $dead_port = $spare->sockport;
	close $spare;
	($ws, $res) = RtWsClient->connect(port => $dead_port, timeout => 2);
	ok(!$ws, 'nothing listening: refused');
	is($res->{status}, 0, 'status 0');
	like($res->{error}, qr/connect/, '... a connect error');
	ok(!eval { RtWsClient->connect(port => $dead_port, timeout => 2); 1 }, 'scalar context: dies');
}

done_testing();

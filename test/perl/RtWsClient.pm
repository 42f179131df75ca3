# RtWsClient: a small WebSocket client (RFC 6455, client side) for the
# rtevents TAP suites, built on core Perl modules only.
package RtWsClient;

use strict;
use warnings;
use Carp qw(croak);
use Digest::SHA qw(sha1);
use Errno qw(EAGAIN EINTR EWOULDBLOCK);
use IO::Select;
use IO::Socket::IP;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use Time::HiRes qw(time);

our $VERSION = '1.0';

=pod

=head1 NAME

RtWsClient - a dependable WebSocket client for the rtevents tests

=head1 SYNOPSIS

  use RtWsClient;

  # Scalar context: the client, or die with the server's answer.
  my $ws = RtWsClient->connect(port => $port, path => '/ws?executionId=e1');
  my $welcome = $ws->recv_json(5);           # {op => 'welcome', ...}
  $ws->send_json({ op => 'subscribe', sub => 's1',
                   filter => { executionId => 'e1' } });
  my @msgs = $ws->recv_until(sub { $_->{op} eq 'subscribed' }, 5);
  my @rest = $ws->messages_for(0.5);          # whatever arrives in 0.5 s
  $ws->close(1000, 'bye');

  # List context: never dies for an HTTP refusal; look at the answer.
  my ($ws2, $res) = RtWsClient->connect(port => $port, path => '/ws?after=x');
  ok(!$ws2, 'refused');
  is($res->{status}, 400, 'bad query is a 400');
  is($res->{json}{error}, 'bad_request', 'with a JSON error body');

=head1 DESCRIPTION

Everything is non-blocking under the hood and bounded by deadlines: no call
waits longer than the timeout it was given (or the connection's default
timeout). Frames may arrive split across any number of reads, and several
frames may arrive in one read; both are buffered correctly, and a timeout in
the middle of a frame or of a fragmented message loses nothing: the next
call carries on where the last one stopped.

Payloads are byte strings on the wire. C<send_text> and C<send_json> take
Perl character strings / data and encode them as UTF-8; C<recv_frame>
returns payloads as received (bytes); C<recv_json> decodes UTF-8 JSON.

Sending never dies for an I/O problem (a server that has gone away, a full
socket buffer past the deadline): the send methods return true when the
whole frame was written and false otherwise, with the reason in
C<< $ws->error >>. SIGPIPE is ignored while writing. Wrong arguments do die.

=head1 CONSTRUCTOR

=head2 connect(%opts)

  RtWsClient->connect(
      port      => 8787,                 # required
      host      => '127.0.0.1',          # default
      path      => '/ws?executionId=e1', # default '/ws'
      headers   => { Origin => 'http://x', 'Sec-WebSocket-Version' => undef },
      method    => 'GET',                # default
      timeout   => 5,                    # default 5 s: connect, handshake,
                                         # and the default for later calls
      auto_pong => 1,                    # default: answer pings by itself
      auto_close_reply => 1,             # default: answer a close frame
  );

Opens a TCP connection and performs the HTTP/1.1 upgrade handshake with a
random 16-byte C<Sec-WebSocket-Key>. Default request headers are C<Host>,
C<Upgrade: websocket>, C<Connection: Upgrade>, C<Sec-WebSocket-Key> and
C<Sec-WebSocket-Version: 13>. Entries in C<headers> are added, or replace a
default of the same name (case-insensitively); a value of C<undef> removes
that header from the request, so malformed upgrades can be tested.

The upgrade succeeds when the answer is C<101>, has C<Upgrade: websocket>,
a C<Connection> header containing C<upgrade>, and the correct
C<Sec-WebSocket-Accept>. Any bytes the server sent right after the 101
headers (a welcome frame in the same packet) are kept as the start of the
frame stream.

The answer, successful or not, is described by a hash:

  {
    status      => 400,              # 0 when there was no HTTP answer at all
    status_line => 'HTTP/1.1 400 Bad Request',
    reason      => 'Bad Request',
    headers     => { 'content-type' => 'application/json', ... },
                                     # lower-cased names; repeats joined by ', '
    header_lines => [ 'Content-Type: application/json', ... ],
    body        => '{"error":...}',  # de-chunked; read up to Content-Length,
                                     # the last chunk, or EOF (within timeout)
    json        => { error => ... }, # body decoded, when it is JSON
    error       => 'why the upgrade failed', # absent on success
  }

B<List context>: returns C<($ws, $response)> on success and
C<(undef, $response)> on any failure: a non-101 status, a bad 101 answer,
a connection refused or timed out (status 0). It never dies for those.

B<Scalar context>: returns C<$ws> on success and dies on failure with a
message that carries the status line and the start of the body.

=head1 SENDING

All return true when the whole frame was written, false otherwise (see
C<error>). Client frames are masked with a fresh random key, as RFC 6455
requires.

=over

=item send_text($string)

One text frame; C<$string> is characters, encoded as UTF-8.

=item send_json($ref)

C<send_text> of the (canonical, UTF-8) JSON encoding of C<$ref>.

=item send_binary($bytes), send_ping($bytes), send_pong($bytes)

=item send_close($code, $reason)

A close frame without waiting for the answer (see C<close>). Without
C<$code> the payload is empty.

=item send_frame(opcode => ..., payload => ..., fin => 1, masked => 1, rsv => 0, mask_key => ..., length => ...)

One frame built exactly as asked, for malformed-frame tests. C<opcode> is
a number (0-15) or a name (C<continuation text binary close ping pong>);
C<rsv> is the 3-bit RSV1-3 value; C<mask_key> is 4 bytes (random by
default); C<length> overrides the declared payload length (the payload
written is still C<payload> as given). C<payload> is bytes (wide characters
are encoded as UTF-8).

=item send_raw($bytes)

Writes bytes to the socket as they are.

=back

=head1 RECEIVING

C<$timeout> is in seconds (fractions allowed); it defaults to the
connection's C<timeout>. It bounds the whole call, including the
reassembly of a fragmented message.

=over

=item recv_frame($timeout)

Returns the next message as C<($opcode, $payload)>, where C<$opcode> is one
of C<'text'>, C<'binary'>, C<'ping'> (only with C<< auto_pong => 0 >>),
C<'pong'>, C<'close'>, or the number of an unknown opcode. Fragmented
messages (a first frame with FIN clear, then continuation frames) come back
reassembled, as one message; control frames interleaved with the fragments
are handled (or returned) in their turn. Pings are answered with a pong
carrying the same payload, and not returned, unless C<< auto_pong => 0 >>.

On a close frame it returns C<('close', $code, $reason)> (C<$code> is 1005
if the frame carried none), records them (C<close_code>, C<close_reason>),
answers with a close frame echoing the code unless a close was already sent
or C<< auto_close_reply => 0 >>, and closes the socket. If the TCP
connection ends without a close frame it returns C<('close', 1006, '')>.

Returns the empty list (C<undef> in scalar context) on timeout, and at once
when the connection is already closed.

=item recv_json($timeout)

The next message, which must be a text message, decoded from JSON. Returns
C<undef> on timeout or when the connection closes (tell them apart with
C<is_closed>). Dies if the next message is anything else (binary, pong,
ping with C<< auto_pong => 0 >>) or is not valid JSON: nothing is skipped
silently except the pings answered automatically. The raw text is in
C<< $ws->last_text >>.

=item recv_until($predicate, $timeout)

Receives JSON messages (as C<recv_json>) until C<< $predicate->($msg) >>
is true (C<$msg> is also in C<$_>), the timeout runs out, or the connection
closes. In list context returns every message received, the matching one
last; in scalar context returns the matching message, or C<undef> if none
matched (the messages received are then in C<< $ws->last_messages >>, an
array ref, in both contexts).

=item messages_for($window)

Every JSON message that arrives within C<$window> seconds (stopping early
if the connection closes), as a list.

=back

=head1 CLOSING AND STATE

=over

=item close($code, $reason, $timeout)

Sends a close frame (empty payload without C<$code>), then waits up to
C<$timeout> (default 2 s) for the server's close frame, discarding data
messages that arrive meanwhile, and closes the socket. Returns the code the
server closed with (1005 for none, 1006 if the TCP connection ended
without a close frame), or C<undef> if it did not answer in time. Calling it
on a closed connection just returns C<close_code>.

=item abort

Drops the TCP connection without any close frame (a client that vanishes).

=item is_closed

True once a close frame was received, the TCP connection ended, or C<close>
or C<abort> was called.

=item close_code, close_reason

What the server's close frame said (1005/'' if it said nothing; 1006/'' if
the TCP connection ended without one); C<undef> until then.

=item close_sent

The code of the close frame this client sent (0 for an empty one), or
C<undef>.

=item response

The handshake answer hash (see C<connect>).

=item protocol_errors

The server-side RFC 6455 violations seen so far, as a list of strings:
masked server frames, RSV bits set, fragmented or over-long control frames,
stray continuation frames, a data frame interrupting a fragmented message,
non-minimal length encodings, bad close payloads, invalid UTF-8 in text.
Tests can assert it is empty.

=item error

The last I/O error (write failure, write timeout, read error), or C<undef>.

=item pings_answered

How many pings were answered automatically.

=item last_fragments

How many frames the last data message returned was made of.

=item socket

The underlying socket (non-blocking).

=back

=cut

my %OPCODE = (
	continuation => 0,
	text => 1,
	binary => 2,
	close => 8,
	ping => 9,
	pong => 10);
my %OPNAME = reverse %OPCODE;

my $GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
my $JSON = JSON::PP->new->utf8->canonical->allow_nonref;

my $urandom;

sub _random_bytes
{
	my ($n) = @_;
	if (!defined $urandom)
	{
		open($urandom, '<:raw', '/dev/urandom') or $urandom = 0;
	}
	my $bytes = '';
	if ($urandom)
	{
		while (length $bytes < $n)
		{
			my $got = sysread($urandom, $bytes, $n - length $bytes, length $bytes);
			last unless $got;
		}
	}
	$bytes .= chr(int rand 256) while length $bytes < $n;
	return $bytes;
}

sub _accept_for
{
	my ($key) = @_;
	return encode_base64(sha1($key . $GUID), '');
}

sub _bytes
{
	my ($s) = @_;
	$s = '' unless defined $s;
	utf8::encode($s) if utf8::is_utf8($s);
	return $s;
}

sub _remaining
{
	my ($deadline) = @_;
	my $left = $deadline - time;
	return $left > 0 ? $left : 0;
}

# ---------------------------------------------------------------- connect

sub connect
{
	my ($class, %opts) = @_;
	croak 'RtWsClient->connect: port is required' unless $opts{port};
	my $host = $opts{host} // '127.0.0.1';
	my $path = $opts{path} // '/ws';
	my $timeout = $opts{timeout} // 5;
	my $deadline = time + $timeout;

	my $self = bless {
		host => $host,
		port => $opts{port},
		path => $path,
		timeout => $timeout,
		auto_pong => $opts{auto_pong} // 1,
		auto_close_reply => $opts{auto_close_reply} // 1,
		rbuf => '',
		frag_op => undef,
		frag_buf => '',
		frag_count => 0,
		closed => 0,
		eof => 0,
		close_code => undef,
		close_reason => undef,
		close_sent => undef,
		protocol_errors => [],
		pings_answered => 0,
		error => undef,
		last_text => undef,
		last_messages => [],
		last_fragments => 0,
	}, $class;

	my $res = $self->_handshake(\%opts, $deadline);
	if (!defined $res->{error})
	{
		$self->{response} = $res;
		return wantarray ? ($self, $res) : $self;
	}
	$self->_drop;
	return (undef, $res) if wantarray;
	my $body = $res->{body} // '';
	$body = substr($body, 0, 300) . '...' if length $body > 300;
	croak "RtWsClient: WebSocket upgrade of $host:$opts{port}$path failed: $res->{error}"
	  . ($res->{status_line} ? " [$res->{status_line}]" : '')
	  . (length $body ? " body: $body" : '');
}

sub _handshake
{
	my ($self, $opts, $deadline) = @_;
	my %res = (
		status => 0,
		status_line => '',
		reason => '',
		headers => {},
		header_lines => [],
		body => '');

	my $sock = IO::Socket::IP->new(
		PeerHost => $self->{host},
		PeerPort => $self->{port},
		Proto => 'tcp',
		Timeout => _remaining($deadline) || 0.001);
	if (!$sock)
	{
		$res{error} = "connect to $self->{host}:$self->{port}: "
		  . ($@ || $! || 'failed');
		return \%res;
	}
	$sock->blocking(0);
	setsockopt($sock, IPPROTO_TCP, TCP_NODELAY, 1);
	binmode($sock);
	$self->{sock} = $sock;
	$self->{select} = IO::Select->new($sock);

	my $key = encode_base64(_random_bytes(16), '');
	my $hostport = $self->{host} =~ /:/ ? "[$self->{host}]" : $self->{host};
	my @headers = (
		[ Host => "$hostport:$self->{port}" ],
		[ Upgrade => 'websocket' ],
		[ Connection => 'Upgrade' ],
		[ 'Sec-WebSocket-Key' => $key ],
		[ 'Sec-WebSocket-Version' => '13' ]);
	my $extra = $opts->{headers} // {};
	for my $name (sort keys %$extra)
	{
		my ($slot) = grep { lc $_->[0] eq lc $name } @headers;
		if ($slot)
		{
			$slot->[1] = $extra->{$name};
		}
		else
		{
			push @headers, [ $name => $extra->{$name} ];
		}
	}
	my $request = ($opts->{method} // 'GET') . " $self->{path} HTTP/1.1\r\n";
	$request .= "$_->[0]: $_->[1]\r\n" for grep { defined $_->[1] } @headers;
	$request .= "\r\n";
	if (!$self->_write($request, $deadline))
	{
		$res{error} = "sending the upgrade request: $self->{error}";
		return \%res;
	}

	# The head: up to the blank line.
	my $head_end;
	while (1)
	{
		$head_end = index($self->{rbuf}, "\r\n\r\n");
		last if $head_end >= 0;
		if (length $self->{rbuf} > 65536)
		{
			$res{error} = 'answer head larger than 64 kB';
			return \%res;
		}
		my $r = $self->_fill($deadline);
		if ($r <= 0)
		{
			$res{error} = $r == 0
			  ? 'timed out waiting for the answer'
			  : 'connection closed before a complete answer';
			$res{body} = $self->{rbuf};
			return \%res;
		}
	}
	my $head = substr($self->{rbuf}, 0, $head_end);
	substr($self->{rbuf}, 0, $head_end + 4) = '';
	my ($status_line, @lines) = split /\r\n/, $head;
	$res{status_line} = $status_line;
	if ($status_line =~ m{^HTTP/\d\.\d\s+(\d{3})(?:\s+(.*))?$})
	{
		$res{status} = $1 + 0;
		$res{reason} = $2 // '';
	}
	else
	{
		$res{error} = "not an HTTP answer: $status_line";
		return \%res;
	}
	for my $line (@lines)
	{
		push @{ $res{header_lines} }, $line;
		next unless $line =~ /^([^:\s]+)\s*:\s*(.*?)\s*$/;
		my $name = lc $1;
		$res{headers}{$name} =
		  defined $res{headers}{$name} ? "$res{headers}{$name}, $2" : $2;
	}
	my $h = $res{headers};

	if ($res{status} == 101)
	{
		my $want = _accept_for($key);
		if (lc($h->{upgrade} // '') ne 'websocket')
		{
			$res{error} = "101 without 'Upgrade: websocket'";
		}
		elsif (($h->{connection} // '') !~ /\bupgrade\b/i)
		{
			$res{error} = "101 without 'Connection: Upgrade'";
		}
		elsif (!defined $h->{'sec-websocket-accept'})
		{
			$res{error} = '101 without Sec-WebSocket-Accept';
		}
		elsif ($h->{'sec-websocket-accept'} ne $want)
		{
			$res{error} =
			  "Sec-WebSocket-Accept is '$h->{'sec-websocket-accept'}', expected '$want'";
		}
		# What follows the head is the frame stream, already in rbuf.
		return \%res;
	}

	# Not an upgrade: read the body within the deadline.
	$res{error} = "HTTP $res{status} instead of 101";
	if (defined $h->{'content-length'} && $h->{'content-length'} =~ /^(\d+)$/)
	{
		my $len = $1;
		while (length $self->{rbuf} < $len)
		{
			last if $self->_fill($deadline) <= 0;
		}
		$res{body} = substr($self->{rbuf}, 0, $len);
		$res{incomplete} = 1 if length $res{body} < $len;
	}
	elsif (($h->{'transfer-encoding'} // '') =~ /chunked/i)
	{
		my $body = '';
		my $done = 0;
		while (!$done)
		{
			if ($self->{rbuf} =~ /^([0-9A-Fa-f]+)[^\r\n]*\r\n/)
			{
				my ($size, $skip) = (hex $1, length $&);
				if ($size == 0)
				{
					$done = 1;
					last;
				}
				if (length $self->{rbuf} >= $skip + $size + 2)
				{
					$body .= substr($self->{rbuf}, $skip, $size);
					substr($self->{rbuf}, 0, $skip + $size + 2) = '';
					next;
				}
			}
			last if $self->_fill($deadline) <= 0;
		}
		$res{body} = $body;
		$res{incomplete} = 1 unless $done;
	}
	else
	{
		1 while $self->_fill($deadline) > 0;
		$res{body} = $self->{rbuf};
		$res{incomplete} = 1 unless $self->{eof};
	}
	$self->{rbuf} = '';
	if (length $res{body})
	{
		my $json = eval { $JSON->decode($res{body}) };
		$res{json} = $json if !$@ && ref $json;
	}
	return \%res;
}

# ---------------------------------------------------------------- low-level I/O

# Reads what is available into rbuf, waiting until $deadline at most.
# Returns the number of bytes read, 0 on timeout, -1 on EOF or error.
sub _fill
{
	my ($self, $deadline) = @_;
	return -1 if $self->{eof} || !$self->{sock};
	while (1)
	{
		my $left = _remaining($deadline);
		my @ready = $self->{select}->can_read($left);
		if (!@ready)
		{
			return 0 if _remaining($deadline) <= 0;
			next;    # EINTR: try again with what is left
		}
		my $n = sysread($self->{sock}, $self->{rbuf}, 65536, length $self->{rbuf});
		if (!defined $n)
		{
			next if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
			$self->{error} = "read: $!";
			$self->{eof} = 1;
			return -1;
		}
		if ($n == 0)
		{
			$self->{eof} = 1;
			return -1;
		}
		return $n;
	}
}

# Writes all of $bytes before $deadline; true on success.
sub _write
{
	my ($self, $bytes, $deadline) = @_;
	$deadline //= time + $self->{timeout};
	if (!$self->{sock})
	{
		$self->{error} = 'write: not connected';
		return 0;
	}
	local $SIG{PIPE} = 'IGNORE';
	my $off = 0;
	my $len = length $bytes;
	while ($off < $len)
	{
		my $n = syswrite($self->{sock}, $bytes, $len - $off, $off);
		if (defined $n)
		{
			$off += $n;
			next;
		}
		if ($! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR)
		{
			my $left = _remaining($deadline);
			if ($left <= 0)
			{
				$self->{error} = "write: timed out after $off of $len bytes";
				return 0;
			}
			$self->{select}->can_write($left);
			next;
		}
		$self->{error} = "write: $!";
		return 0;
	}
	return 1;
}

sub _drop
{
	my ($self) = @_;
	if ($self->{sock})
	{
		CORE::close($self->{sock});
		$self->{sock} = undef;
	}
	$self->{closed} = 1;
}

# ---------------------------------------------------------------- sending

sub send_frame
{
	my ($self, %f) = @_;
	my $op = $f{opcode} // 'text';
	$op = $OPCODE{$op} // croak "send_frame: unknown opcode '$op'"
	  unless $op =~ /^\d+$/;
	croak "send_frame: opcode $op out of range" if $op > 15;
	my $fin = $f{fin} // 1;
	my $masked = $f{masked} // 1;
	my $rsv = $f{rsv} // 0;
	croak "send_frame: rsv $rsv out of range" if $rsv < 0 || $rsv > 7;
	my $payload = _bytes($f{payload});
	my $len = $f{length} // length $payload;

	my $frame = pack('C', ($fin ? 0x80 : 0) | ($rsv << 4) | $op);
	my $mbit = $masked ? 0x80 : 0;
	if ($len < 126)
	{
		$frame .= pack('C', $mbit | $len);
	}
	elsif ($len < 65536)
	{
		$frame .= pack('Cn', $mbit | 126, $len);
	}
	else
	{
		$frame .= pack('CQ>', $mbit | 127, $len);
	}
	if ($masked)
	{
		my $key = defined $f{mask_key} ? _bytes($f{mask_key}) : _random_bytes(4);
		croak 'send_frame: mask_key must be 4 bytes' unless length $key == 4;
		$frame .= $key . _mask($payload, $key);
	}
	else
	{
		$frame .= $payload;
	}
	return $self->_write($frame);
}

sub _mask
{
	my ($data, $key) = @_;
	my $n = length $data;
	return '' unless $n;
	my $stream = substr($key x (int($n / 4) + 1), 0, $n);
	return "$data" ^ "$stream";
}

sub send_raw
{
	my ($self, $bytes) = @_;
	return $self->_write(_bytes($bytes));
}

sub send_text
{
	my ($self, $text) = @_;
	$text = '' unless defined $text;
	utf8::encode($text);
	return $self->send_frame(opcode => 1, payload => $text);
}

sub send_json
{
	my ($self, $ref) = @_;
	return $self->send_frame(opcode => 1, payload => $JSON->encode($ref));
}

sub send_binary
{
	my ($self, $bytes) = @_;
	return $self->send_frame(opcode => 2, payload => $bytes);
}

sub send_ping
{
	my ($self, $bytes) = @_;
	return $self->send_frame(opcode => 9, payload => $bytes);
}

sub send_pong
{
	my ($self, $bytes) = @_;
	return $self->send_frame(opcode => 10, payload => $bytes);
}

sub send_close
{
	my ($self, $code, $reason) = @_;
	my $payload = '';
	$payload = pack('n', $code) . _bytes($reason) if defined $code;
	$self->{close_sent} = $code // 0;
	return $self->send_frame(opcode => 8, payload => $payload);
}

# ---------------------------------------------------------------- receiving

# Takes one complete frame off rbuf, or returns undef if it is not all there.
sub _parse_frame
{
	my ($self) = @_;
	my $avail = length $self->{rbuf};
	return undef if $avail < 2;
	my ($b0, $b1) = unpack('CC', $self->{rbuf});
	my $len = $b1 & 0x7f;
	my $off = 2;
	my $minimal = 1;
	if ($len == 126)
	{
		return undef if $avail < 4;
		$len = unpack('n', substr($self->{rbuf}, 2, 2));
		$minimal = 0 if $len < 126;
		$off = 4;
	}
	elsif ($len == 127)
	{
		return undef if $avail < 10;
		$len = unpack('Q>', substr($self->{rbuf}, 2, 8));
		$minimal = 0 if $len < 65536;
		$off = 10;
	}
	my $masked = $b1 & 0x80;
	my $key;
	if ($masked)
	{
		return undef if $avail < $off + 4;
		$key = substr($self->{rbuf}, $off, 4);
		$off += 4;
	}
	return undef if $avail < $off + $len;
	my $payload = substr($self->{rbuf}, $off, $len);
	substr($self->{rbuf}, 0, $off + $len) = '';
	my %f = (
		fin => ($b0 & 0x80) ? 1 : 0,
		rsv => ($b0 >> 4) & 7,
		opcode => $b0 & 0x0f,
		masked => $masked ? 1 : 0,
		payload => $masked ? _mask($payload, $key) : $payload);
	$self->_violation("server frame is masked") if $masked;
	$self->_violation("RSV bits $f{rsv} set") if $f{rsv};
	$self->_violation("non-minimal length encoding ($len bytes in "
		  . ($off - ($masked ? 4 : 0) - 2) . "-byte extension)")
	  unless $minimal;
	return \%f;
}

sub _violation
{
	my ($self, $what) = @_;
	push @{ $self->{protocol_errors} }, $what;
}

# What one frame means to the caller: a message to return (a list), or
# nothing yet (the empty list).
sub _handle_frame
{
	my ($self, $f) = @_;
	my $op = $f->{opcode};

	if ($op >= 8)
	{
		$self->_violation("fragmented control frame (opcode $op)") unless $f->{fin};
		$self->_violation("control frame payload of " . length($f->{payload}) . " bytes")
		  if length $f->{payload} > 125;
	}

	if ($op == 0)
	{
		if (!defined $self->{frag_op})
		{
			$self->_violation('continuation frame without a message to continue');
			$self->{last_fragments} = 1;
			return ('continuation', $f->{payload});
		}
		$self->{frag_buf} .= $f->{payload};
		$self->{frag_count}++;
		return () unless $f->{fin};
		my ($name, $payload) = ($OPNAME{ $self->{frag_op} }, $self->{frag_buf});
		$self->{last_fragments} = $self->{frag_count};
		@{$self}{qw(frag_op frag_buf frag_count)} = (undef, '', 0);
		$self->_check_text($payload) if $name eq 'text';
		return ($name, $payload);
	}
	if ($op == 1 || $op == 2)
	{
		if (defined $self->{frag_op})
		{
			$self->_violation('new data frame while a fragmented message is unfinished');
			@{$self}{qw(frag_op frag_buf frag_count)} = (undef, '', 0);
		}
		if (!$f->{fin})
		{
			@{$self}{qw(frag_op frag_buf frag_count)} = ($op, $f->{payload}, 1);
			return ();
		}
		$self->{last_fragments} = 1;
		$self->_check_text($f->{payload}) if $op == 1;
		return ($OPNAME{$op}, $f->{payload});
	}
	if ($op == 8)
	{
		my $p = $f->{payload};
		my ($code, $reason) = (1005, '');
		if (length $p == 1)
		{
			$self->_violation('close frame with a 1-byte payload');
		}
		elsif (length $p >= 2)
		{
			$code = unpack('n', $p);
			$reason = substr($p, 2);
			my $copy = $reason;
			$self->_violation('close reason is not UTF-8') unless utf8::decode($copy);
			$self->_violation("close code $code is not allowed on the wire")
			  if $code < 1000
			  || ($code >= 1004 && $code <= 1006)
			  || $code == 1015
			  || ($code >= 1016 && $code < 3000)
			  || $code >= 5000;
		}
		$self->{close_code} = $code;
		$self->{close_reason} = $reason;
		if (!defined $self->{close_sent} && $self->{auto_close_reply})
		{
			$self->send_close($code == 1005 ? undef : $code);
		}
		$self->_drop;
		return ('close', $code, $reason);
	}
	if ($op == 9)
	{
		return ('ping', $f->{payload}) unless $self->{auto_pong};
		$self->send_pong($f->{payload});
		$self->{pings_answered}++;
		return ();
	}
	if ($op == 10)
	{
		return ('pong', $f->{payload});
	}
	$self->_violation("reserved opcode $op");
	return ($op, $f->{payload});
}

sub _check_text
{
	my ($self, $payload) = @_;
	my $copy = $payload;
	$self->_violation('text message is not valid UTF-8') unless utf8::decode($copy);
}

sub recv_frame
{
	my ($self, $timeout) = @_;
	my $deadline = time + ($timeout // $self->{timeout});
	while (1)
	{
		return () if $self->{closed};
		if (my $f = $self->_parse_frame)
		{
			my @r = $self->_handle_frame($f);
			return wantarray ? @r : $r[0] if @r;
			next;
		}
		if ($self->{eof})
		{
			# The TCP connection ended without a close frame (1006).
			$self->{close_code} = 1006;
			$self->{close_reason} = '';
			$self->_violation(length($self->{rbuf}) . ' bytes of an incomplete frame at EOF')
			  if length $self->{rbuf};
			$self->_drop;
			return wantarray ? ('close', 1006, '') : 'close';
		}
		return () if $self->_fill($deadline) == 0;
	}
}

sub recv_json
{
	my ($self, $timeout) = @_;
	my ($op, $payload) = $self->recv_frame($timeout);
	return undef if !defined $op || $op eq 'close';
	if ($op ne 'text')
	{
		my $shown = defined $payload ? substr($payload, 0, 80) : '';
		croak "RtWsClient: expected a text message, got $op ($shown)";
	}
	$self->{last_text} = $payload;
	my $msg = eval { $JSON->decode($payload) };
	croak "RtWsClient: text message is not JSON ($@): " . substr($payload, 0, 300)
	  if $@;
	return $msg;
}

sub recv_until
{
	my ($self, $pred, $timeout) = @_;
	croak 'recv_until: a code ref is required' unless ref $pred eq 'CODE';
	my $deadline = time + ($timeout // $self->{timeout});
	my @got;
	my $match;
	$self->{last_messages} = \@got;
	while (!$self->{closed})
	{
		my $left = _remaining($deadline);
		my $msg = $self->recv_json($left);
		if (!defined $msg)
		{
			last if $self->{closed} || _remaining($deadline) <= 0;
			next;    # a JSON null: keep going
		}
		push @got, $msg;
		local $_ = $msg;
		if ($pred->($msg))
		{
			$match = $msg;
			last;
		}
	}
	return wantarray ? @got : $match;
}

sub messages_for
{
	my ($self, $window) = @_;
	my $deadline = time + ($window // $self->{timeout});
	my @got;
	while (!$self->{closed})
	{
		my $left = _remaining($deadline);
		my $msg = $self->recv_json($left);
		if (defined $msg)
		{
			push @got, $msg;
		}
		elsif ($self->{closed} || _remaining($deadline) <= 0)
		{
			last;
		}
	}
	$self->{last_messages} = \@got;
	return @got;
}

# ---------------------------------------------------------------- closing

sub close
{
	my ($self, $code, $reason, $timeout) = @_;
	return $self->{close_code} if $self->{closed};
	my $deadline = time + ($timeout // 2);
	$self->send_close($code, $reason) unless defined $self->{close_sent};
	my $answered;
	while (!$self->{closed})
	{
		my ($op, $c) = $self->recv_frame(_remaining($deadline));
		if (!defined $op)
		{
			last if _remaining($deadline) <= 0;
			next;
		}
		if ($op eq 'close')
		{
			$answered = $c;
			last;
		}
	}
	$self->_drop;
	return $answered;
}

sub abort
{
	my ($self) = @_;
	$self->_drop;
	return 1;
}

sub DESTROY
{
	my ($self) = @_;
	CORE::close($self->{sock}) if $self->{sock};
}

# ---------------------------------------------------------------- accessors

sub is_closed { return $_[0]{closed} ? 1 : 0 }
sub close_code { return $_[0]{close_code} }
sub close_reason { return $_[0]{close_reason} }
sub close_sent { return $_[0]{close_sent} }
sub response { return $_[0]{response} }
sub protocol_errors { return @{ $_[0]{protocol_errors} } }
sub error { return $_[0]{error} }
sub pings_answered { return $_[0]{pings_answered} }
sub last_text { return $_[0]{last_text} }
sub last_messages { return $_[0]{last_messages} }
sub last_fragments { return $_[0]{last_fragments} }
sub socket { return $_[0]{sock} }

1;

# The server worker: its event loop, its HTTP endpoints, its LISTEN feed,
# and how it lives and dies with the cluster.
#
#   PERL5LIB=/usr/lib/postgresql/15/lib/pgxs/src/test/perl \
#   PG_REGRESS=/usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress \
#   prove test/t/020_server.pl        (as an ordinary user, bin dir in PATH)

use strict;
use warnings;

use Cwd qw(realpath);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $http_port = PostgreSQL::Test::Cluster::get_free_port();

my $node = PostgreSQL::Test::Cluster->new('server');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'rtevents'
rtevents.port = $http_port
rtevents.auth = none
rtevents.cleanup_interval = 0
# the crash test below wants the postmaster to reinitialize, as it does
# by default outside the test framework
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION rtevents');

my $datadir = realpath($node->data_dir);

# ------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------

# One request; returns (status, body, headers).  Status "000": no answer.
sub http
{
	my ($method, $path) = @_;
	# headers, blank line, body, then the status on a line of its own
	my @cmd = (
		'curl', '-sS', '--max-time', '5', '-w', '\n%{http_code}',
		$method eq 'HEAD' ? ('-I') : ('-D', '-', '-X', $method),
		"http://localhost:$http_port$path");
	my ($out, $err) = ('', '');
	IPC::Run::run(\@cmd, '>', \$out, '2>', \$err);
	$out =~ s/\n(\d{3})\z// or return ('000', $err, '');
	my $status = $1;
	my ($headers, $body) = split /\r\n\r\n/, $out, 2;
	return ($status, $body // '', $headers // '');
}

sub header
{
	my ($headers, $name) = @_;
	return $headers =~ /^\Q$name\E:\s*([^\r\n]*)/mi ? $1 : undef;
}

# Poll until code returns true or $timeout seconds have passed.
sub wait_until
{
	my ($code, $timeout) = @_;
	my $deadline = time + ($timeout // $PostgreSQL::Test::Utils::timeout_default);
	while (time < $deadline)
	{
		return 1 if $code->();
		usleep(100_000);
	}
	return 0;
}

sub healthz_is_ok
{
	my ($status, $body) = http('GET', '/healthz');
	return $status eq '200' && $body eq 'ok';
}

# Live processes of this cluster: backends run with the data directory as
# their working directory (other clusters may be running on this machine).
sub cluster_processes
{
	my %procs;
	foreach my $dir (glob '/proc/[0-9]*')
	{
		my ($pid) = $dir =~ m{(\d+)$};
		my $cwd = readlink("$dir/cwd");
		next unless defined $cwd && $cwd eq $datadir;
		open my $fh, '<', "$dir/cmdline" or next;
		my $cmdline = <$fh> // '';
		close $fh;
		$cmdline =~ s/\0+$//;
		$procs{$pid} = $cmdline;
	}
	return %procs;
}

sub worker_pid
{
	my %procs = cluster_processes();
	# "postgres: <cluster_name>: rtevents server", padded
	my @pids = grep { $procs{$_} =~ /: rtevents server\s*$/ } keys %procs;
	return @pids == 1 ? $pids[0] : undef;
}

# A process that has exited, even if nobody has reaped it yet.
sub process_gone
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/stat" or return 1;
	my $stat = <$fh>;
	close $fh;
	return $stat =~ /^\d+ \(.*\) [ZX] /;
}

# "soft" or "hard" limit on open files of a process.
sub open_files_limit
{
	my ($pid, $which) = @_;
	open my $fh, '<', "/proc/$pid/limits" or die "/proc/$pid/limits: $!";
	my ($line) = grep { /^Max open files/ } <$fh>;
	close $fh;
	my ($soft, $hard) = $line =~ /^Max open files\s+(\S+)\s+(\S+)/;
	return $which eq 'soft' ? $soft : $hard;
}

sub feed_backends
{
	return $node->safe_psql('postgres',
		"SELECT pid, query FROM pg_stat_activity WHERE application_name = 'rtevents feed'"
	);
}

sub feed_pid
{
	my ($row) = split /\n/, feed_backends();
	return defined $row ? (split /\|/, $row)[0] : undef;
}

# ------------------------------------------------------------------
# Serving
# ------------------------------------------------------------------

ok(wait_until(\&healthz_is_ok), '/healthz answers 200 "ok" once the feed is up');

my ($status, $body, $headers) = http('GET', '/healthz');
like(header($headers, 'content-type'), qr{^text/plain}, '/healthz is text');

like(feed_backends(), qr/^\d+\|[^\n]*$/, 'exactly one feed backend');
ok($node->log_contains(qr/rtevents feed: listening on channel "rtevents"/),
	'... listening on rtevents.channel');
# lws's poll() loop visits every connection on every turn: tools/install
# puts lws's libev plugin in, and the worker runs on it.
ok($node->log_contains(qr/rtevents server: event loop: libev, epoll/),
	'the event loop is libev on epoll, not poll()');

($status, $body, $headers) = http('GET', '/no/such/path');
is($status, '404', 'an unknown path is 404');
like(header($headers, 'content-type'), qr{^application/json}, '404 is JSON');
like($body, qr/^\{"error":"not_found","message":"[^"]+"\}$/,
	'404 body is {"error":"not_found","message":...}');

($status, $body) = http('POST', '/no/such/path');
is($status, '404', 'an unknown path is 404 whatever the method');

foreach my $method ('POST', 'PUT', 'DELETE', 'OPTIONS')
{
	($status, $body, $headers) = http($method, '/healthz');
	is($status, '405', "$method /healthz is 405");
	like($body, qr/^\{"error":"method_not_allowed","message":"[^"]+"\}$/,
		"$method /healthz body is the JSON error");
	like(header($headers, 'allow') // '', qr/\bGET\b/,
		"$method /healthz says Allow: GET");
}

($status, $body, $headers) = http('HEAD', '/healthz');
is($status, '200', 'HEAD /healthz is 200');
is($body, '', 'HEAD /healthz has no body');
is(header($headers, 'content-length'), '2', 'HEAD /healthz gives the length of GET');

# Allow names what each path answers: HEAD only where GET is answered at once.
($status, $body, $headers) = http('POST', '/api/events');
is($status, '405', 'POST /api/events is 405');
is(header($headers, 'allow'), 'GET, DELETE', '... Allow: GET, DELETE');
($status, $body, $headers) = http('HEAD', '/api/events');
is($status, '405', 'HEAD /api/events is 405 (a history page is a query)');
is(header($headers, 'allow'), 'GET, DELETE', '... with Allow: GET, DELETE');
($status, $body, $headers) = http('HEAD', '/api/events/stream');
is(header($headers, 'allow'), 'GET', 'HEAD on the stream: Allow: GET');

# /ws without an upgrade is a client mistake, not a missing endpoint.
($status, $body) = http('GET', '/ws');
is($status, '400', 'GET /ws without Upgrade is 400');
like($body, qr/^\{"error":"upgrade_required","message":"[^"]+"\}$/, '... upgrade_required');

# ------------------------------------------------------------------
# The process
# ------------------------------------------------------------------

my $worker = worker_pid();
ok(defined $worker, 'one rtevents server process');

# ------------------------------------------------------------------
# The LISTEN feed
# ------------------------------------------------------------------

my $old_feed = feed_pid();
$node->safe_psql('postgres', "SELECT pg_terminate_backend($old_feed)");
ok( wait_until(
		sub {
			my $pid = feed_pid();
			return defined $pid && $pid != $old_feed && healthz_is_ok();
		},
		30),
	'after pg_terminate_backend of the feed, a new feed backend and 200 again');
is(worker_pid(), $worker, 'losing the feed did not restart the worker');

# A feed that cannot connect: 503 with the JSON error, and back.
$node->safe_psql('postgres',
	"ALTER SYSTEM SET rtevents.feed_conninfo = 'host=/nonexistent/rtevents'");
$node->reload;
ok( wait_until(
		sub {
			($status, $body) = http('GET', '/healthz');
			return $status eq '503';
		},
		30),
	'/healthz is 503 while the feed cannot connect');
like($body, qr/^\{"error":"feed_down","message":"[^"]+"\}$/,
	'503 body is {"error":"feed_down",...}');
is(feed_pid(), undef, 'no feed backend left behind');

my ($ret, $stdout, $stderr) = $node->psql('postgres',
	"ALTER SYSTEM SET rtevents.feed_conninfo = 'not a conninfo'");
isnt($ret, 0, 'an unparsable rtevents.feed_conninfo is refused');
like($stderr, qr/invalid value for parameter "rtevents.feed_conninfo"/,
	'... by the GUC check');

$node->safe_psql('postgres', 'ALTER SYSTEM RESET rtevents.feed_conninfo');
$node->reload;
ok(wait_until(\&healthz_is_ok, 30), 'back to 200 once the conninfo is fixed');

# SIGHUP: the worker stays, and rereads its settings.
kill 'HUP', $worker;
usleep(300_000);
is(worker_pid(), $worker, 'SIGHUP does not end the worker');
ok(healthz_is_ok(), '... which still serves');

$node->safe_psql('postgres',
	q{ALTER SYSTEM SET rtevents.channel = 'other "channel"'});
$node->reload;
ok( wait_until(
		sub { $node->log_contains(qr/listening on channel "other "channel""/) }, 30),
	'a new rtevents.channel is LISTENed to after reload');
my $heard = sub {
	my (undef, $m) = http('GET', '/metrics');
	return $m =~ /^rtevents_notifications_total (\d+)$/m ? $1 : -1;
};
my $heard_before = $heard->();
$node->safe_psql('postgres', q{NOTIFY "other ""channel""", 'hello'});
ok(wait_until(sub { $heard->() == $heard_before + 1 }, 30),
	'... quoted right: a NOTIFY on it reaches the worker');
is(worker_pid(), $worker, '... by the same worker');
ok(wait_until(\&healthz_is_ok, 30), '... which serves');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET rtevents.channel');
$node->reload;

# ------------------------------------------------------------------
# Lifecycle
# ------------------------------------------------------------------

# The worker's restart below inherits a low soft limit on open files from
# the postmaster, which it must raise itself, to the hard limit (capped at
# 2^20), so that 10,000 clients fit.
my $postmaster = $node->{_pid};
my $hard_limit = open_files_limit($postmaster, 'hard');
my $lowered = $hard_limit eq 'unlimited' || $hard_limit > 256;
system('prlimit', "--pid=$postmaster", "--nofile=256:$hard_limit") if $lowered;

# SIGTERM (what pg_terminate_backend would send): a clean exit, and the
# postmaster starts it again after bgw_restart_time without a crash cycle.
my $log_offset = -s $node->logfile;
kill 'TERM', $worker;
ok(wait_until(sub { process_gone($worker) }, 5), 'SIGTERM ends the worker');
ok( wait_until(
		sub {
			my $pid = worker_pid();
			return defined $pid && $pid != $worker && healthz_is_ok();
		},
		60),
	'the postmaster restarts it, and it serves again');
my $log = slurp_file($node->logfile, $log_offset);
like($log, qr/background worker "rtevents server" \(PID $worker\) exited with exit code 1/,
	'it exited with code 1, to be restarted');
unlike($log, qr/terminating any other active server processes/,
	'no crash cycle');

SKIP:
{
	skip 'the hard limit on open files is too low to test raising it', 2
	  unless $lowered;
	my $want = $hard_limit eq 'unlimited' || $hard_limit > 1048576 ? 1048576 : $hard_limit;
	is(open_files_limit($postmaster, 'soft'), 256,
		'the postmaster runs with a soft limit of 256 open files');
	is(open_files_limit(worker_pid(), 'soft'), $want,
		"the worker raised its own to the hard limit ($want)");
}

# Smart shutdown waits for every session, the feed's included: the worker
# must notice and let go of it.
{
	local $ENV{PGCTLTIMEOUT} = 30;
	$log_offset = -s $node->logfile;
	my $start = time;
	$node->stop('smart');
	my $took = time - $start;
	ok($took < 30, sprintf('pg_ctl stop -m smart completes (%.1f s)', $took));
	like(slurp_file($node->logfile, $log_offset),
		qr/smart shutdown in progress; closing the feed and exiting/,
		'the worker saw the smart shutdown');
}
is((http('GET', '/healthz'))[0], '000', 'nothing listens once stopped');

$node->start;
ok(wait_until(\&healthz_is_ok), 'after restart the worker serves again');

# kill -9 of a worker with shared memory access is a crash: the postmaster
# reinitializes everything, and the worker comes back.
$worker = worker_pid();
$log_offset = -s $node->logfile;
kill 'KILL', $worker;
ok( wait_until(
		sub {
			my $pid = worker_pid();
			return defined $pid && $pid != $worker && healthz_is_ok();
		}),
	'after kill -9 of the worker the cluster comes back and /healthz is 200');
like(slurp_file($node->logfile, $log_offset),
	qr/terminating any other active server processes/,
	'... through a crash cycle');
is($node->safe_psql('postgres', 'SELECT 1'), '1', 'the cluster serves SQL');

# Postmaster death: the worker must not outlive it.
$worker = worker_pid();
$node->kill9;
ok(wait_until(sub { process_gone($worker) }, 5),
	'the worker exits at once when the postmaster dies');
is((http('GET', '/healthz'))[0], '000', 'and its port is closed');

# The orphans go too.  (No restart here: where nothing reaps the killed
# postmaster, its zombie keeps postmaster.pid looking alive.)  Their SysV
# shared memory header outlives them; hand it back.
ok(wait_until(sub { my %procs = cluster_processes(); !%procs }, 30),
	'every process of the killed cluster exits');
if (open my $fh, '<', "$datadir/postmaster.pid")
{
	my @lines = <$fh>;
	close $fh;
	my (undef, $shmid) = split ' ', ($lines[6] // '');
	system('ipcrm', '-m', $shmid) if defined $shmid && $shmid =~ /^\d+$/;
}

done_testing();

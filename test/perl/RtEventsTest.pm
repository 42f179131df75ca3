# RtEventsTest: what the rtevents TAP suites share.
#
# A cluster with rtevents preloaded, and the notifications a LISTENing psql
# session sees, parsed out of psql's own output.
package RtEventsTest;

use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;
use Time::HiRes qw(time usleep);

our @EXPORT_OK = qw(rtevents_node notifications_of wait_until);

# A started cluster with rtevents in shared_preload_libraries; extra lines
# go to postgresql.conf.  The network worker listens nowhere unless the
# extra lines say where, so that suites never fight over a port; it asks
# for no token (rtevents.auth = none) unless they say otherwise, since only
# the security suites are about tokens.
sub rtevents_node
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(%{ $opts{init} // {} });
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'rtevents'\n"
		  . "rtevents.listen_addresses = ''\n"
		  . "rtevents.auth = none\n"
		  . ($opts{conf} // ''));
	$node->start unless $opts{no_start};
	return $node;
}

# Poll until $code returns true or $timeout seconds (30) have passed; true
# when it did.
sub wait_until
{
	my ($code, $timeout) = @_;
	my $deadline = time + ($timeout // 30);
	while (time < $deadline)
	{
		return 1 if $code->();
		usleep(50_000);
	}
	return 0;
}

# The payloads psql prints for notifications on the rtevents channel while
# it runs $sql after LISTEN, in the order they arrived.
sub notifications_of
{
	my ($node, $sql, %opts) = @_;
	my $channel = $opts{channel} // 'rtevents';
	my ($stdout, $stderr);
	$node->psql(
		$opts{dbname} // 'postgres',
		"LISTEN \"$channel\";\n$sql\nSELECT 'done';\n",
		stdout => \$stdout,
		stderr => \$stderr,
		on_error_stop => 1);
	die "psql failed: $stderr" if $stderr =~ /ERROR/;
	return parse_notifications($stdout, $channel);
}

sub parse_notifications
{
	my ($text, $channel) = @_;
	$channel //= 'rtevents';
	my @payloads;
	for my $line (split /\n/, $text // '')
	{
		push @payloads, $1
		  if $line =~ /^Asynchronous notification "\Q$channel\E" with payload "(.*)" received from server process with PID \d+\.$/;
	}
	return @payloads;
}

push @EXPORT_OK, 'parse_notifications';

# Publishers in a random interleaving, for the delivery guarantee: ids are
# drawn in one order and commit in another, and some never commit.  $n
# sessions of $node; each publishers_step() takes one of them at random,
# opens a transaction if it has none, then runs $sql (55%), commits (30%)
# or rolls back (15%).  publishers_finish() commits what is still open and
# ends the sessions.
sub publishers
{
	my ($node, $n) = @_;
	return {
		sessions => [ map { $node->background_psql('postgres') } 1 .. $n ],
		open => [ (0) x $n ],
	};
}

sub publishers_step
{
	my ($pubs, $sql) = @_;
	my $s = int(rand(scalar @{ $pubs->{sessions} }));
	my $r = rand();
	my $session = $pubs->{sessions}[$s];

	if (!$pubs->{open}[$s])
	{
		$session->query_safe('BEGIN');
		$pubs->{open}[$s] = 1;
	}
	if ($r < 0.55)
	{
		$session->query_safe($sql);
		return;
	}
	$session->query_safe($r < 0.85 ? 'COMMIT' : 'ROLLBACK');
	$pubs->{open}[$s] = 0;
}

sub publishers_finish
{
	my ($pubs) = @_;
	for my $s (0 .. $#{ $pubs->{sessions} })
	{
		$pubs->{sessions}[$s]->query_safe('COMMIT') if $pubs->{open}[$s];
		$pubs->{sessions}[$s]->quit;
	}
}

push @EXPORT_OK, qw(publishers publishers_step publishers_finish);

1;

# The unit tests of the browser client (clients/js/test, node's built-in
# test runner with fake sockets and timers), relayed as TAP: its state
# machine, backoff, dedup, resume and fallbacks.
use strict;
use warnings;
use File::Basename qw(dirname);
use Cwd qw(abs_path);
use Test::More;

my $dir = abs_path(dirname(__FILE__) . '/../../clients/js');
my $out = `cd '$dir' && node --test --test-reporter=tap test/ 2>&1`;
my $status = $? >> 8;

my $tests = 0;
for my $line (split /\n/, $out)
{
	# top-level results only; subtests are indented
	next unless $line =~ /^(not )?ok \d+ - (.*)$/;
	ok(!defined $1, "clients/js: $2");
	$tests++;
}
cmp_ok($tests, '>', 0, "the client's suite ran ($tests tests)");
is($status, 0, "the client's suite passed") or diag($out);
done_testing();

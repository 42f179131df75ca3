# The unit tests of the worker's pure C modules (test/unit), built by
# `make unit-tests`; each prints TAP of its own.
use strict;
use warnings;
use Test::More;

for my $program (glob 'test/unit/test_*.c')
{
	$program =~ s/\.c$//;
	ok(-x $program, "$program is built (make unit-tests)") or next;
	my $output = `$program 2>&1`;
	my $status = $? >> 8;
	my @failed = $output =~ /^(not ok .*)$/mg;
	my ($planned) = $output =~ /^1\.\.(\d+)$/m;
	my $passed = () = $output =~ /^ok /mg;
	diag($_) for @failed;
	ok($status == 0 && !@failed && defined $planned && $passed == $planned,
		"$program: $passed of " . ($planned // '?') . ' checks pass');
}

done_testing();

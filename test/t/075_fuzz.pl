# The libFuzzer targets (fuzz/run): each builds, runs for a short bound on
# its corpus, executes a fair number of inputs, and ends without a crash, a
# leak, a sanitizer report or a broken property of its harness.  libFuzzer's
# final figures are relayed with diag.  FUZZ_SECONDS sets the bound (5 s
# here; fuzz/run alone defaults to 20).
use strict;
use warnings;
use Test::More;

my $cc = $ENV{FUZZ_CC} // 'clang';
plan skip_all => "$cc is not installed (tools/install installs clang, lld and libFuzzer)"
  unless system("command -v $cc >/dev/null 2>&1") == 0;

my $seconds = $ENV{FUZZ_SECONDS} // 5;
my $min_runs = 1000;

# The targets the Makefile knows (fuzz/run runs them all).
my $pg_config = $ENV{PG_CONFIG} // '/usr/lib/postgresql/15/bin/pg_config';
my @targets = split ' ',
  `make -s --no-print-directory PG_CONFIG=$pg_config --eval='print-fuzz-targets: ; \@echo \$(FUZZ_TARGETS)' print-fuzz-targets`;
ok(scalar @targets, 'the Makefile names the fuzz targets: ' . join(' ', @targets));

my $output = `FUZZ_SECONDS=$seconds fuzz/run 2>&1`;
my $status = $? >> 8;
is($status, 0, "fuzz/run: every target ran ${seconds} s without a failure")
  or diag($output);

for my $target (@targets)
{
	my $exe = $target =~ s{^fuzz/}{}r;
	my ($line) = $output =~ /^(\Q$exe\E: (?:ok|FAILED).*)$/m;
	ok(defined $line, "$exe ran") or next;
	diag($line);
	# what the harness reports about itself (known findings, tolerated)
	diag($_) for $output =~ /^(\Q$exe\E: (?!ok|FAILED).*)$/mg;
	like($line, qr/^\Q$exe\E: ok,/, "$exe: no crash, leak, sanitizer report or broken property");
	my ($runs) = $line =~ /(\d+) runs/;
	cmp_ok($runs // 0, '>=', $min_runs, "$exe: at least $min_runs inputs executed");
}

done_testing();

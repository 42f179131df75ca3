# The live page and rtevents.js in a real browser (test/browser, node:test
# with playwright-core driving Debian's Chromium): events published from psql
# shown within a second, a refresh that loses nothing, the worker killed and
# the page catching up with no gap or duplicate, the SSE fallback with
# WebSocket blocked, two tabs, a screenshot that is not blank.
use strict;
use warnings;
use File::Basename qw(dirname);
use Cwd qw(abs_path);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RtEventsTest qw(rtevents_node);

my $browser_dir = abs_path(dirname(__FILE__) . '/../browser');
ok(-x '/usr/bin/chromium', 'Debian chromium is installed (tools/install)');
ok(-d "$browser_dir/node_modules/playwright-core", 'playwright-core is installed (tools/install)');

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $node = rtevents_node('browser', conf => qq{
rtevents.listen_addresses = '127.0.0.1'
rtevents.port = $port
rtevents.cleanup_interval = 0
# the page goes through tokens, as a deployment's would
rtevents.auth = token
rtevents.jwt_secret = 'browser-secret-0123456789abcdef-01234567'
# the kill test wants the postmaster to reinitialize, as it does by default
# outside the test framework
restart_after_crash = on
});
$node->safe_psql('postgres', 'CREATE EXTENSION rtevents');
for (1 .. 100)
{
	last if `curl -s http://127.0.0.1:$port/healthz` eq 'ok';
	select(undef, undef, undef, 0.1);
}

local $ENV{RT_URL} = "http://127.0.0.1:$port";
local $ENV{RT_TOKEN} = $node->safe_psql('postgres', q{SELECT rt_token('{"sub":"e2e"}', '2 hours')});
local $ENV{PGHOST} = $node->host;
local $ENV{PGPORT} = $node->port;
local $ENV{PGDATABASE} = 'postgres';
local $ENV{PGDATA} = abs_path($node->data_dir);
local $ENV{SCREENSHOT} = abs_path($PostgreSQL::Test::Utils::tmp_check) . '/live-page.png';
my $out = `cd '$browser_dir' && node --test --test-reporter=tap e2e.test.js 2>&1`;
my $status = $? >> 8;

# Each browser test is a test here; the rest of the output when one fails.
my $tests = 0;
for my $line (split /\n/, $out)
{
	next unless $line =~ /^(not )?ok \d+ - (.*)$/;
	ok(!defined $1, "browser: $2");
	$tests++;
}
cmp_ok($tests, '>=', 6, "the browser suite ran ($tests tests)");
is($status, 0, 'the browser suite passed') or diag($out);
ok(-s $ENV{SCREENSHOT}, "screenshot saved in $ENV{SCREENSHOT}");

$node->stop;
done_testing();

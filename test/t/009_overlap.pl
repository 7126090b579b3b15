# A cell overlaps its sessions' waiting: while some sessions wait on a slow
# step (a timer of the builtin model, a slow model provider), one cell worker
# goes on claiming, running and completing other sessions' commands.  And
# the limits on commands under way, per cell and per tenant, hold.
#
# The slow steps take far longer (tens of seconds) than anything else here,
# so the assertions are about order ("the fast command completed while the
# slow ones were still running"), never about how long something took.
use strict;
use warnings;
# test/perl, found from this file: PostgreSQL 17's PGXS no longer exports TESTDIR
use FindBin;
use lib "$FindBin::RealBin/../perl";
use NadiProvider;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# A provider that answers a message containing "slow" only after 12 s, and
# anything else at once; each request in a process of its own.
my $log = "${PostgreSQL::Test::Utils::tmp_check}/overlap-provider.log";
my ($port, $pid) = NadiProvider::start(
	$log,
	sub {
		my ($head, $body, $conn) = @_;
		my ($last) = $body =~ /.*"content"\s*:\s*"([^"]*)"/s;
		NadiProvider::wait_hangup($conn, 12) if ($last // '') =~ /slow/;
		return ('200 OK', '{"choices":[{"message":{"role":"assistant","content":"answered"}}]}');
	},
	undef, 1);

my $node = PostgreSQL::Test::Cluster->new('overlap');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'nadi'
nadi.database = 'postgres'
nadi.cell_workers = 1
nadi.lease_ttl = '3s'
nadi.proxy_tokens = off
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION nadi');

sub session
{
	my ($tenant) = @_;
	return $node->safe_psql('postgres', "SELECT session_id FROM nadi.session_create('$tenant')");
}

sub enqueue
{
	my ($sid, $text) = @_;
	return $node->safe_psql('postgres',
		"SELECT command_id FROM nadi.command_enqueue('$sid', 'message', jsonb_build_object('text', '$text'))");
}

sub status
{
	my ($cid) = @_;
	return $node->safe_psql('postgres', "SELECT status FROM nadi.command_inbox WHERE command_id = $cid");
}

sub wait_status
{
	my ($cid, $want, $what) = @_;
	$node->poll_query_until('postgres', "SELECT status = '$want' FROM nadi.command_inbox WHERE command_id = $cid")
	  or die "$what: command $cid is " . status($cid) . ", not $want";
}

# 1. Timers: three sessions sleep 12 s in the builtin model (with a lease
# TTL of 3 s: the cell renews their leases while they wait); a fourth
# session's message is answered meanwhile.
my @slow = map { session('acme') } 1 .. 3;
my @slow_cmd = map { enqueue($_, '/sleep 12000 slow') } @slow;
wait_status($_, 'running', 'a sleeping command') for @slow_cmd;
my $fast = session('acme');
my $fast_cmd = enqueue($fast, 'hello');
wait_status($fast_cmd, 'completed', 'the fast command');
is(join(',', map { status($_) } @slow_cmd), 'running,running,running',
	'timers: a fourth session\'s command completed while three others were still sleeping');
is($node->safe_psql('postgres', "SELECT result->>'text' FROM nadi.command_inbox WHERE command_id = $fast_cmd"),
	'You said: hello', 'timers: the fast command was answered');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'nadi cell' AND query LIKE '% in_flight=3/1000 % waiting_timer=3 %'"),
	'timers: the worker shows its three commands under way, waiting on timers, in pg_stat_activity');
wait_status($_, 'completed', 'a sleeping command') for @slow_cmd;
is($node->safe_psql('postgres',
	"SELECT count(*) FROM nadi.events WHERE kind = 'command.completed' AND command_id IN ("
	  . join(',', @slow_cmd) . ")"),
	'3', 'timers: each slow command completed once (leases kept through the wait)');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM nadi.session_leases WHERE session_id IN ('" . join("','", @slow) . "') AND epoch <> 1"),
	'0', 'timers: no lease was lost while the timers ran');

# 2. A slow model provider: the same with calls in flight.
$node->safe_psql('postgres', "ALTER SYSTEM SET nadi.model = 'openai'");
$node->safe_psql('postgres', "ALTER SYSTEM SET nadi.model_url = 'http://127.0.0.1:$port/v1'");
$node->reload;
$node->poll_query_until('postgres', "SELECT current_setting('nadi.model') = 'openai'") or die 'no reload';
sleep 1;    # the cell reads its settings after its next wake-up
my @calls = map { enqueue($_, 'slow please') } @slow;
wait_status($_, 'running', 'a slow model call') for @calls;
my $fast2 = enqueue($fast, 'quick');
wait_status($fast2, 'completed', 'the fast model call');
is(join(',', map { status($_) } @calls), 'running,running,running',
	'calls: a fourth session\'s model call completed while three slow ones were in flight');
wait_status($_, 'completed', 'a slow model call') for @calls;
is($node->safe_psql('postgres', "SELECT string_agg(DISTINCT result->>'text', ',') FROM nadi.command_inbox WHERE command_id IN ("
	  . join(',', @calls) . ")"),
	'answered', 'calls: the slow calls were answered');

# 3. The per-tenant limit: with at most 2 commands of one tenant under way,
# a third session of the tenant waits in its queue while another tenant's
# command runs; it runs once one of the two is done.
$node->safe_psql('postgres', "ALTER SYSTEM SET nadi.model = 'builtin'");
$node->safe_psql('postgres', "ALTER SYSTEM SET nadi.cell_max_in_flight_per_tenant = 2");
$node->reload;
$node->poll_query_until('postgres', "SELECT current_setting('nadi.cell_max_in_flight_per_tenant') = '2'")
  or die 'no reload';
sleep 1;
my @busy = map { enqueue($_, '/sleep 6000 slow') } @slow;
$node->poll_query_until('postgres', "SELECT count(*) = 2 FROM nadi.command_inbox WHERE status = 'running' AND command_id IN ("
	  . join(',', @busy) . ")") or die 'two of the tenant\'s commands did not start';
my $other = session('globex');
my $other_cmd = enqueue($other, 'hi');
wait_status($other_cmd, 'completed', 'another tenant\'s command');
is($node->safe_psql('postgres', "SELECT string_agg(status::text, ',' ORDER BY status::text) FROM nadi.command_inbox WHERE command_id IN ("
	  . join(',', @busy) . ")"),
	'queued,running,running', 'tenant limit: the tenant\'s third command waits while another tenant\'s runs');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'nadi cell' AND query ~ 'tenant_max_in_flight=2/2 deferred_cell=0 deferred_tenant=[1-9]'"),
	'tenant limit: the worker shows the claims it put off');
wait_status($_, 'completed', 'a limited command') for @busy;
pass('tenant limit: the waiting command ran once a slot was free');

unlike(slurp_file($node->logfile), qr/nadi cell: could not/,
	'the cell\'s rounds, claims and renewals never failed');

NadiProvider::stop($pid);
$node->stop;
done_testing();

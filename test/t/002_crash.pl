# Nothing is lost when a cell dies: kill -9 of a cell worker in the middle of
# a command, and an immediate-mode crash of the whole server.  Every command
# acknowledged before runs exactly once after, no event is lost or doubled,
# the workers come back by themselves, and a write from the dead epoch is
# refused.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

$PostgreSQL::Test::Utils::timeout_default = 30;

my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'nadi'
nadi.database = 'postgres'
nadi.cell_workers = 1
nadi.cell_host_id = 'crash-cell'
nadi.lease_ttl = '2s'
nadi.heartbeat_interval = '500ms'
nadi.idle_suspend = '1h'
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION nadi');

sub cell_pid
{
	my $pid = '';
	$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'nadi cell'")
	  or die 'no cell worker';
	return $node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'nadi cell'");
}

sub gapless
{
	my ($sid) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) = max(seq) AND count(DISTINCT seq) = count(*) FROM nadi.events WHERE session_id = '$sid'");
}

# --- kill -9 of the cell worker while it runs a slow model step ---
my $sid = $node->safe_psql('postgres', "SELECT session_id FROM nadi.session_create('acme')");
my $cmd = $node->safe_psql('postgres',
	"SELECT command_id FROM nadi.command_enqueue('$sid', 'message', '{\"text\": \"/sleep 3000 slow\"}')");
$node->poll_query_until('postgres', "SELECT status = 'running' FROM nadi.command_inbox WHERE command_id = $cmd")
  or die 'command never started';
my $epoch = $node->safe_psql('postgres', "SELECT epoch FROM nadi.session_leases WHERE session_id = '$sid'");
my $pid = cell_pid();
kill 'KILL', $pid;
pass("killed cell worker $pid with epoch $epoch mid-command");

# the postmaster restarts after the crash; the lease expires, the broker
# re-places the session, a new cell takes it and finishes the command
$node->poll_query_until('postgres', "SELECT status = 'completed' FROM nadi.command_inbox WHERE command_id = $cmd", 't')
  or die 'command did not complete after the crash: '
  . $node->safe_psql('postgres', "SELECT s.state || ' ' || coalesce(l.cell_host_id, '-') || ' ' || l.epoch || ' ' || coalesce(l.expires_at::text, '-') || ' ' || now() FROM nadi.sessions s JOIN nadi.session_leases l USING (session_id)")
  . "\n" . $node->safe_psql('postgres', "SELECT string_agg(seq || ' ' || kind || ' ' || payload, E'\n' ORDER BY seq) FROM nadi.events")
  . "\n" . $node->safe_psql('postgres', "SELECT string_agg(host_id || ' ' || state || ' ' || heartbeat_at, E'\n') FROM nadi.cell_hosts")
  . "\n" . $node->safe_psql('postgres', "SELECT string_agg(backend_type || ' ' || coalesce(query, ''), E'\n') FROM pg_stat_activity WHERE backend_type LIKE 'nadi%'");
isnt(cell_pid(), $pid, 'a new cell worker');
is($node->safe_psql('postgres', "SELECT count(*) FROM nadi.events WHERE command_id = $cmd AND kind = 'command.completed'"),
	'1', 'completed exactly once');
cmp_ok($node->safe_psql('postgres', "SELECT epoch FROM nadi.session_leases WHERE session_id = '$sid'"),
	'>', $epoch, 'the epoch moved on');
is($node->safe_psql('postgres', "SELECT result->>'text' FROM nadi.command_inbox WHERE command_id = $cmd"),
	'You said: /sleep 3000 slow', 'the reply is the one the model gives');

# a late write from the dead epoch is refused and changes nothing
my ($ret, $out, $err) = $node->psql('postgres',
	"SELECT nadi.event_append('$sid', $epoch, 'model.reply', '{\"text\": \"zombie\"}')");
like($err, qr/lease epoch $epoch of session .* is not current/, 'stale epoch refused (NA005)');
($ret, $out, $err) = $node->psql('postgres',
	"SELECT nadi.command_complete('$sid', $cmd, $epoch, '{\"text\": \"zombie\"}')");
like($err, qr/not current/, 'stale completion refused');
is($node->safe_psql('postgres', "SELECT count(*) FROM nadi.events WHERE payload->>'text' = 'zombie'"), '0',
	'no zombie event');
is(gapless($sid), 't', 'event sequence gapless');

# --- immediate-mode crash of the whole server ---
my @cmds;
for my $i (1 .. 5)
{
	push @cmds, $node->safe_psql('postgres',
		"SELECT command_id FROM nadi.command_enqueue('$sid', 'message', '{\"text\": \"/sleep 200 n$i\"}')");
}
$node->stop('immediate');
$node->start;
for my $c (@cmds)
{
	$node->poll_query_until('postgres', "SELECT status = 'completed' FROM nadi.command_inbox WHERE command_id = $c")
	  or die "command $c lost in the crash";
}
pass('every command acknowledged before the crash completed after it');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM nadi.events WHERE session_id = '$sid' AND kind = 'command.completed' AND command_id = ANY(ARRAY[" . join(',', @cmds) . "])"),
	'5', 'each exactly once');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM nadi.events WHERE session_id = '$sid' AND kind = 'command.received' AND command_id = ANY(ARRAY[" . join(',', @cmds) . "])"),
	'5', 'no acknowledged command lost its event');
is(gapless($sid), 't', 'event sequence still gapless');
is($node->safe_psql('postgres',
	"SELECT string_agg(payload->'result'->>'text', ',' ORDER BY seq) FROM nadi.events WHERE kind = 'command.completed' AND command_id = ANY(ARRAY[" . join(',', @cmds) . "])"),
	join(',', map { "You said: /sleep 200 n$_" } 1 .. 5), 'in order');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type IN ('nadi broker', 'nadi cell')"),
	'workers came back by themselves');

$node->stop;
done_testing();

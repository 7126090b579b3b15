# The broker and the embedded cell, end to end inside one cluster: placement,
# the agent loop, approvals, suspension and resumption by replay, a poison
# command, and a broker that goes away and comes back.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $node = PostgreSQL::Test::Cluster->new('workers');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'nadi'
nadi.database = 'postgres'
nadi.cell_workers = 2
nadi.cell_host_id = 'tap-cell'
nadi.lease_ttl = '2s'
nadi.heartbeat_interval = '500ms'
nadi.idle_suspend = '1s'
nadi.retry_backoff_base = '100ms'
nadi.max_attempts = 3
nadi.sandboxd_url = 'http://127.0.0.1:9'
nadi.tool_timeout = '2s'
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION nadi');

# workers show up with their types
$node->poll_query_until('postgres',
	"SELECT count(*) = 3 FROM pg_stat_activity WHERE backend_type IN ('nadi broker', 'nadi cell')")
  or die 'workers did not start';
$node->poll_query_until('postgres',
	"SELECT state = 'live' FROM nadi.cell_hosts WHERE host_id = 'tap-cell'")
  or die 'cell host did not register';
pass('broker and two cell workers running; the cell host registered itself');

sub events
{
	my ($sid, $after) = @_;
	$after //= 0;
	return $node->safe_psql('postgres',
		"SELECT string_agg(kind, ' ' ORDER BY seq) FROM nadi.events WHERE session_id = '$sid' AND seq > $after");
}

sub wait_status
{
	my ($sid, $cmd, $status) = @_;
	return $node->poll_query_until('postgres',
		"SELECT status = '$status' FROM nadi.command_inbox WHERE session_id = '$sid' AND command_id = $cmd");
}

# events reach listeners through the notifier, after their commit
{
	my ($stdout, $stderr) = ('', '');
	my $listener = IPC::Run::start(
		[ 'psql', '-X', '-A', '-t', '-d', $node->connstr('postgres') ],
		'<', \"LISTEN nadi_events; SELECT pg_sleep(2); SELECT 'done';\n",
		'>', \$stdout, '2>', \$stderr);
	sleep 1;
	my $s = $node->safe_psql('postgres', "SELECT session_id FROM nadi.session_create('acme')");
	$listener->finish;
	like($stdout, qr/Asynchronous notification "nadi_events" with payload "$s" received/,
		'NOTIFY nadi_events with the session id, sent by the notifier');
	is($node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'nadi notifier'"),
		'1', 'one notifier');
	$node->safe_psql('postgres', "SELECT nadi.session_terminate('$s')");
}

# a cell host with no embedded worker is woken by NOTIFY nadi_cell (its host
# id); the embedded host's work wakes its workers' latches and notifies no one
{
	my ($in, $stdout, $stderr) = ("LISTEN nadi_cell;\n", '', '');
	my $listener = IPC::Run::start(
		[ 'psql', '-X', '-A', '-t', '-d', $node->connstr('postgres') ],
		'<', \$in, '>', \$stdout, '2>', \$stderr);
	$listener->pump until $stdout =~ /LISTEN/;

	# an external host: the broker places a session there (the placing
	# commit wakes it); then it drains, so the next session goes to tap-cell
	$node->safe_psql('postgres', q{SELECT nadi.cell_host_register('tap-ext', NULL, 10, '{"pool": "ext"}')});
	my $e = $node->safe_psql('postgres',
		q{SELECT session_id FROM nadi.session_create('acme', labels => '{"pool": "ext"}')});
	$node->poll_query_until('postgres',
		"SELECT state = 'placed' AND cell_host_id = 'tap-ext' FROM nadi.sessions WHERE session_id = '$e'")
	  or die 'the session was not placed on tap-ext';
	$node->safe_psql('postgres', q{SELECT nadi.cell_host_set_state('tap-ext', 'draining')});

	# the embedded host: placed, taken, a command enqueued, run
	my $s = $node->safe_psql('postgres', "SELECT session_id FROM nadi.session_create('acme')");
	$node->poll_query_until('postgres',
		"SELECT state = 'active' AND cell_host_id = 'tap-cell' FROM nadi.sessions WHERE session_id = '$s'")
	  or die 'the session was not taken by tap-cell';
	my $c = $node->safe_psql('postgres',
		qq{SELECT command_id FROM nadi.command_enqueue('$s', 'message', '{"text": "hi"}')});
	wait_status($s, $c, 'completed') or die 'the command did not complete';

	$in .= "SELECT 'done';\n";
	$listener->finish;
	like($stdout, qr/Asynchronous notification "nadi_cell" with payload "tap-ext" received/,
		'NOTIFY nadi_cell with the host id wakes a cell host with no embedded worker');
	unlike($stdout, qr/payload "tap-cell"/, 'the embedded host is woken by its latches alone');
	$node->safe_psql('postgres', "SELECT nadi.session_terminate(x) FROM unnest(ARRAY['$e', '$s']::uuid[]) x");
}

# a message goes through the model and back, with no polling anywhere
my $sid = $node->safe_psql('postgres', "SELECT session_id FROM nadi.session_create('acme', policy => '{\"require_approval\": [\"exec\"]}')");
# (the command goes in once the cell holds the session, so that the log
# below has one order: a command enqueued earlier is as good, and is
# received before the lease)
$node->poll_query_until('postgres', "SELECT state = 'active' FROM nadi.sessions WHERE session_id = '$sid'")
  or die 'the session was not taken';
my $c1 = $node->safe_psql('postgres', "SELECT command_id FROM nadi.command_enqueue('$sid', 'message', '{\"text\": \"hello\"}')");
ok(wait_status($sid, $c1, 'completed'), 'message completed');
is($node->safe_psql('postgres', "SELECT result->>'text' FROM nadi.command_inbox WHERE command_id = $c1"),
	'You said: hello', 'builtin model reply');
like(events($sid), qr/session.created session.state session.state session.lease command.received command.started model.reply command.completed/,
	'placed, leased, started, replied, completed');

# a tool call that needs approval waits in Postgres; deny answers it
my $c2 = $node->safe_psql('postgres',
	"SELECT command_id FROM nadi.command_enqueue('$sid', 'message', '{\"text\": \"/tool exec {\\\"argv\\\": [\\\"rm\\\", \\\"-rf\\\", \\\"/\\\"]}\"}')");
ok(wait_status($sid, $c2, 'waiting'), 'tool call parked for permission');
is($node->safe_psql('postgres', "SELECT payload->>'tool' FROM nadi.events WHERE session_id = '$sid' AND kind = 'permission.requested'"),
	'exec', 'permission.requested names the tool');
$node->safe_psql('postgres', "SELECT nadi.command_enqueue('$sid', 'deny', '{\"reason\": \"not on my machine\"}')");
ok(wait_status($sid, $c2, 'completed'), 'denied command completed');
is($node->safe_psql('postgres', "SELECT result->>'text' FROM nadi.command_inbox WHERE command_id = $c2"),
	'exec was not run: permission denied.', 'the model answered the denial');
is($node->safe_psql('postgres', "SELECT count(*) FROM nadi.events WHERE session_id = '$sid' AND kind = 'tool.call'"),
	'0', 'the denied tool never ran');

# a cancel stops a running command at its next step: after a slow model step
my $slow = $node->safe_psql('postgres', "SELECT command_id FROM nadi.command_enqueue('$sid', 'message', '{\"text\": \"/sleep 1500 slow\"}')");
ok(wait_status($sid, $slow, 'running'), 'slow command running');
$node->safe_psql('postgres', "SELECT nadi.command_cancel('$sid', $slow)");
ok(wait_status($sid, $slow, 'cancelled'), 'cancelled at its next step, not completed');
is($node->safe_psql('postgres', "SELECT count(*) FROM nadi.events WHERE command_id = $slow AND kind IN ('model.reply', 'command.completed')"),
	'0', 'no reply and no completion for the cancelled command');

# idle sessions are suspended with a checkpoint of the cell's state, which
# the replay of the log reproduces (invariant 7)
$node->poll_query_until('postgres', "SELECT state = 'suspended' FROM nadi.sessions WHERE session_id = '$sid'")
  or die 'session was not suspended';
is($node->safe_psql('postgres', qq{
	SELECT (e.payload->'messages') = (nadi.session_replay('$sid', e.seq - 1)->'messages')
	FROM nadi.events e WHERE e.session_id = '$sid' AND e.kind = 'cell.checkpoint'
	ORDER BY e.seq DESC LIMIT 1}), 't', 'replay of the log equals the cell state at suspension');

# the next command resumes it: the cell rebuilds the conversation by replay
my $c3 = $node->safe_psql('postgres', "SELECT command_id FROM nadi.command_enqueue('$sid', 'message', '{\"text\": \"again\"}')");
ok(wait_status($sid, $c3, 'completed'), 'suspended session resumed for a new command');
$node->poll_query_until('postgres', "SELECT state = 'suspended' FROM nadi.sessions WHERE session_id = '$sid'")
  or die 'session was not suspended again';
is($node->safe_psql('postgres', qq{
	SELECT jsonb_array_length(e.payload->'messages') || ' ' ||
	       ((e.payload->'messages') = (nadi.session_replay('$sid', e.seq - 1)->'messages'))
	FROM nadi.events e WHERE e.session_id = '$sid' AND e.kind = 'cell.checkpoint'
	ORDER BY e.seq DESC LIMIT 1}), '9 true', 'after resumption the cell holds the whole conversation, as the replay does');

# a poison command (its sandbox host is unreachable) retries with backoff, is
# dead-lettered, and the session goes on with the next command
my $p = $node->safe_psql('postgres', "SELECT command_id FROM nadi.command_enqueue('$sid', 'tool', '{\"name\": \"uppercase\", \"args\": {\"text\": \"x\"}}')");
my $after = $node->safe_psql('postgres', "SELECT command_id FROM nadi.command_enqueue('$sid', 'message', '{\"text\": \"still here\"}')");
ok(wait_status($sid, $p, 'dead'), 'poison command dead-lettered');
is($node->safe_psql('postgres', "SELECT attempts || ' ' || (last_error->>'code') FROM nadi.command_inbox WHERE command_id = $p"),
	'3 sandbox_unavailable', 'tried max_attempts times, with the reason kept');
is($node->safe_psql('postgres', "SELECT count(*) FROM nadi.events WHERE command_id = $p AND kind = 'command.failed'"),
	'3', 'each failure is an event');
ok(wait_status($sid, $after, 'completed'), 'the next command ran after the dead letter');

# the broker goes away: cells keep working on what they hold; it comes back
# by itself and places what arrived meanwhile
my $sid2 = $node->safe_psql('postgres', "SELECT session_id FROM nadi.session_create('acme')");
my $c4 = $node->safe_psql('postgres', "SELECT command_id FROM nadi.command_enqueue('$sid2', 'message', '{\"text\": \"/sleep 1500 hold\"}')");
$node->poll_query_until('postgres', "SELECT state = 'active' FROM nadi.sessions WHERE session_id = '$sid2'")
  or die 'second session not active';
my $broker = $node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'nadi broker'");
$node->safe_psql('postgres', "SELECT pg_terminate_backend($broker)");
my $sid3 = $node->safe_psql('postgres', "SELECT session_id FROM nadi.session_create('acme')");
my $c5 = $node->safe_psql('postgres', "SELECT command_id FROM nadi.command_enqueue('$sid3', 'message', '{\"text\": \"placed later\"}')");
my $c6 = $node->safe_psql('postgres', "SELECT command_id FROM nadi.command_enqueue('$sid2', 'message', '{\"text\": \"while the broker is away\"}')");
ok(wait_status($sid2, $c6, 'completed'), 'a held session went on without the broker');
ok(wait_status($sid3, $c5, 'completed'), 'the broker came back and placed the new session');
isnt($node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'nadi broker'"),
	$broker, 'a new broker process');

$node->stop;
done_testing();

# A message that arrives while another runs, with a real embedded cell and
# a loopback sandbox host (as in 007_tool_calls.pl) whose exec answers with
# a workspace snapshot, and holds a call marked "held" until the test lets
# it go (so the new message surely arrives while the old one runs):
#   - interrupt: the running message is cancelled at its cell's next step
#     (after the held call), then the new one runs; the replayed
#     conversation keeps the interrupted turn, as the cell does
#   - rollback: the same, and the rolled-back turn leaves the replayed
#     conversation and the cell's (checked at suspension: the cell's
#     checkpoint equals the replay), the log keeps its events, and the cell
#     asks the sandbox host to restore the snapshot from before it
#     (POST /v1/sandboxes/<id>/restore {"snapshot": "ws-1"}) with the
#     session's token, before the new message runs
#   - rollback of a message waiting for permission: back to the head of the
#     queue asked to stop, its cell stops it as above
# Ordering only, never timings.
use strict;
use warnings;
# test/perl, found from this file: PostgreSQL 17's PGXS no longer exports TESTDIR
use FindBin;
use lib "$FindBin::RealBin/../perl";
use NadiProvider;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $log = "${PostgreSQL::Test::Utils::tmp_check}/busy-sandboxd.log";
my $release = "${PostgreSQL::Test::Utils::tmp_check}/busy-release";

sub answer
{
	my ($head, $body) = @_;
	my ($method, $path) = $head =~ m{^(\S+) (\S+)};
	my $ok = '"exit_status":0,"signal":null,"stderr":"","truncated":false,"timed_out":false,"oom_killed":false';

	return ('200 OK', '{"tools":[{"name":"exec","timeout_ms":120000,"side_effects":true}]}')
	  if $method eq 'GET' && $path eq '/v1/tools';
	return ('201 Created', '{"id":"sbx-1"}') if $method eq 'POST' && $path eq '/v1/sandboxes';
	return ('200 OK', '{"ok":true}') if $method eq 'POST' && $path eq '/v1/sandboxes/sbx-1/restore';
	return ('404 Not Found', '{"code":"not_found"}') unless $method eq 'POST' && $path eq '/v1/sandboxes/sbx-1/tools/exec';
	my ($n) = $body =~ /"write-(\d+)/;
	if ($body =~ /held/)
	{
		# until the test lets it go (at most 120 s)
		for (1 .. 1200)
		{
			last if -e $release;
			select(undef, undef, undef, 0.1);
		}
		unlink $release;
	}
	return ('200 OK', '{"ok":true,' . $ok . ',"stdout":"wrote ' . $n . '","result":null,'
		  . '"workspace":{"host_id":null,"sandbox_id":"sbx-1","snapshot":"ws-' . $n . '"}}');
}

my ($port, $pid) = NadiProvider::start($log, \&answer);
my $parent = $$;
END { local $?; NadiProvider::stop($pid) if $$ == $parent && $pid; }

my $node = PostgreSQL::Test::Cluster->new('busy');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'nadi'
nadi.database = 'postgres'
nadi.cell_workers = 1
nadi.sandboxd_url = 'http://127.0.0.1:$port'
nadi.tool_timeout = '500ms'
nadi.idle_suspend = '1s'
nadi.proxy_tokens = off
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION nadi');
$node->safe_psql('postgres', 'SELECT nadi.key_create()');

sub q1 { return $node->safe_psql('postgres', $_[0]); }

sub requests { return NadiProvider::requests($log); }

sub held_calls { return scalar grep { $_->[1] =~ m{/tools/exec$} && $_->[3] =~ /held/ } requests(); }

sub enqueue
{
	my ($sid, $text) = @_;
	$text =~ s/'/''/g;
	return q1("SELECT command_id FROM nadi.command_enqueue('$sid', 'message', jsonb_build_object('text', '$text'))");
}

sub wait_status
{
	my ($cmd, $status) = @_;
	return $node->poll_query_until('postgres', "SELECT status = '$status' FROM nadi.command_inbox WHERE command_id = $cmd");
}

# the command ids the replayed conversation's messages belong to, in order
sub conversation
{
	my ($sid) = @_;
	return q1("SELECT string_agg(m->>'command_id', ',' ORDER BY o) FROM "
		  . "jsonb_array_elements(nadi.session_replay('$sid')->'messages') WITH ORDINALITY AS x(m, o)");
}

# a held exec call of command $cmd is out at the sandbox host
sub wait_held
{
	my ($cmd, $n) = @_;
	$node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM nadi.events WHERE command_id = $cmd AND kind = 'tool.call'")
	  or die "command $cmd made no tool call";
	for (1 .. 1200)
	{
		return 1 if held_calls() >= $n;
		select(undef, undef, undef, 0.1);
	}
	die "the held call of command $cmd never reached the sandbox host";
}

sub let_go
{
	open(my $fh, '>', $release) or die "$release: $!";
	close $fh;
}

# ---- interrupt ------------------------------------------------------------------
my $sid = q1("SELECT session_id FROM nadi.session_create('acme', "
	  . "policy => '{\"on_message_while_running\": \"interrupt\"}')");
my $m1 = enqueue($sid, '/tool exec {"argv": ["write-1 held"]}');
wait_held($m1, 1);
my $m2 = enqueue($sid, 'instead');
is(q1("SELECT status || ' ' || cancel_requested FROM nadi.command_inbox WHERE command_id = $m1"),
	'running true', 'interrupt: the running message is asked to stop');
is(q1("SELECT status FROM nadi.command_inbox WHERE command_id = $m2"), 'queued', 'the new one waits');
let_go();
ok(wait_status($m1, 'cancelled'), 'the interrupted message stops at its next step');
ok(wait_status($m2, 'completed'), 'then the new message runs');
is(q1("SELECT count(*) FROM nadi.events WHERE command_id = $m1 AND kind = 'model.reply' "
	  . "AND payload->>'text' LIKE 'exec returned%'"), '0', 'the interrupted message got no further model step');
is(conversation($sid), "$m1,$m1,$m1,$m2,$m2",
	'the conversation keeps the interrupted turn (user, call, result), then the new one');

# ---- rollback -------------------------------------------------------------------
$sid = q1("SELECT session_id FROM nadi.session_create('acme', "
	  . "policy => '{\"on_message_while_running\": \"rollback\"}')");
my $a = enqueue($sid, '/tool exec {"argv": ["write-1"]}');
ok(wait_status($a, 'completed'), 'rollback: a first message writes (snapshot ws-1)');
my $b = enqueue($sid, '/tool exec {"argv": ["write-2 held"]}');
wait_held($b, 2);
my $c = enqueue($sid, 'after');
is(q1("SELECT payload->'workspace'->>'snapshot' FROM nadi.events WHERE command_id = $b AND kind = 'command.rolled_back'"),
	'ws-1', 'the running message is rolled back to the snapshot from before it');
let_go();
ok(wait_status($b, 'cancelled'), 'the rolled-back message stops at its next step');
ok(wait_status($c, 'completed'), 'then the new message runs');

my @restores = grep { $_->[1] eq '/v1/sandboxes/sbx-1/restore' } requests();
is(scalar @restores, 1, 'the cell asked the sandbox host to restore the workspace once');
like($restores[0][3] // '', qr/^\{"snapshot":\s*"ws-1"\}$/, '... to ws-1');
my $token = q1("SELECT nadi.token_verify('" . (($restores[0][2] // '') =~ s/^Bearer //r) . "', 'nadi-sandboxd')->>'sid'");
is($token, $sid, '... with the session\'s token');
is(q1("SELECT payload->>'ok' || ' ' || (payload->'workspace'->>'snapshot') FROM nadi.events "
	  . "WHERE command_id = $b AND kind = 'workspace.restore'"), 'true ws-1', 'workspace.restore is on record');
is(q1("SELECT count(*) FROM nadi.events WHERE command_id = $b AND kind = 'tool.result'"), '1',
	'the log keeps the rolled-back message\'s events');
is(conversation($sid), "$a,$a,$a,$a,$c,$c", 'the conversation lacks the rolled-back turn');

# the cell's own conversation is the replay's (invariant 7): at suspension
$node->poll_query_until('postgres', "SELECT state = 'suspended' FROM nadi.sessions WHERE session_id = '$sid'")
  or die 'the session was not suspended';
is(q1(qq{SELECT (e.payload->'messages') = (nadi.session_replay('$sid', e.seq - 1)->'messages')
	FROM nadi.events e WHERE e.session_id = '$sid' AND e.kind = 'cell.checkpoint' ORDER BY e.seq DESC LIMIT 1}),
	't', 'the cell dropped the rolled-back turn as the replay does');

# the restore came before the new message ran: no tool call after it, and the
# new message's completion is later than the restore's record
is(q1("SELECT (SELECT seq FROM nadi.events WHERE command_id = $b AND kind = 'workspace.restore') < "
	  . "(SELECT seq FROM nadi.events WHERE command_id = $c AND kind = 'command.started')"),
	't', 'the workspace was restored before the new message started');

# ---- rollback of a message waiting for permission ------------------------------
# No cell runs it: it goes back to the head of the queue asked to stop, and
# its cell stops it at once (its turn dropped, its workspace restored)
$sid = q1("SELECT session_id FROM nadi.session_create('acme', "
	  . "policy => '{\"on_message_while_running\": \"rollback\", \"require_approval\": [\"exec\"]}')");
my $w0 = enqueue($sid, '/tool exec {"argv": ["write-4"]}');
ok(wait_status($w0, 'waiting'), 'rollback while waiting: a first message waits for permission');
q1("SELECT nadi.command_enqueue('$sid', 'approve', jsonb_build_object('command_id', $w0))");
ok(wait_status($w0, 'completed'), '... is approved and writes (snapshot ws-4)');
my $w = enqueue($sid, '/tool exec {"argv": ["write-5"]}');
ok(wait_status($w, 'waiting'), 'a second message waits for permission');
my $after = enqueue($sid, 'never mind');
ok(wait_status($w, 'cancelled'), 'rolled back, it is stopped by its cell');
ok(wait_status($after, 'completed'), 'then the new message runs');
is(q1("SELECT payload->>'ok' || ' ' || (payload->'workspace'->>'snapshot') FROM nadi.events "
	  . "WHERE command_id = $w AND kind = 'workspace.restore'"), 'true ws-4',
	'the workspace went back to the snapshot from before it');
@restores = grep { $_->[1] eq '/v1/sandboxes/sbx-1/restore' } requests();
like($restores[-1][3] // '', qr/^\{"snapshot":\s*"ws-4"\}$/, '... at the sandbox host');
is(conversation($sid), "$w0,$w0,$w0,$w0,$after,$after", 'the conversation lacks the rolled-back turn');
$node->poll_query_until('postgres', "SELECT state = 'suspended' FROM nadi.sessions WHERE session_id = '$sid'")
  or die 'the session was not suspended';
is(q1(qq{SELECT (e.payload->'messages') = (nadi.session_replay('$sid', e.seq - 1)->'messages')
	FROM nadi.events e WHERE e.session_id = '$sid' AND e.kind = 'cell.checkpoint' ORDER BY e.seq DESC LIMIT 1}),
	't', 'and so does the cell\'s');

$node->stop;
done_testing();

# Tool calls from the cell to its sandbox host, against a loopback HTTP
# endpoint that answers like nadi-sandboxd and records every request it gets
# (the real sandboxd needs root: test/suites/40-e2e runs it):
#   - a tool name is an identifier naming a tool the host lists (GET
#     /v1/tools); anything else is a tool.error with no call to the host and
#     no way around the approval policy (x/../exec, ../export)
#   - every call carries the session's token for the sandbox host
#     (nadi.sandboxd_token), never the cluster-wide nadi.sandboxd_token
#   - a call that hits its limit is answered once (timed_out), not retried;
#     oom_killed comes through to the command's error
#   - a call sent but not answered, or cut short by the cell going away: its
#     outcome is unknown; a tool with side effects is not run again, one
#     without is; a call that could not connect is retried
use strict;
use warnings;
# test/perl, found from this file: PostgreSQL 17's PGXS no longer exports TESTDIR
use FindBin;
use lib "$FindBin::RealBin/../perl";
use NadiProvider;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $log = "${PostgreSQL::Test::Utils::tmp_check}/sandboxd.log";
my $sandboxes = 0;
my $hangups = 0;

# What the endpoint answers.  exec's limit (1.5 s) is longer than
# nadi.tool_timeout (500 ms) below: the cell must wait for the call's own
# limit, not give up at nadi.tool_timeout.
sub answer
{
	my ($head, $body, $conn) = @_;
	my ($method, $path) = $head =~ m{^(\S+) (\S+)};
	my $ok = '"exit_status":0,"signal":null,"stderr":"","truncated":false,"timed_out":false,"oom_killed":false';

	return ('200 OK',
		'{"tools":[{"name":"echo","timeout_ms":30000,"side_effects":false},'
		  . '{"name":"read_file","timeout_ms":30000,"side_effects":false},'
		  . '{"name":"exec","timeout_ms":1500,"side_effects":true},"uppercase"]}')
	  if $method eq 'GET' && $path eq '/v1/tools';
	if ($method eq 'POST' && $path eq '/v1/sandboxes')
	{
		# the first sandbox gets an id that is a path, not an id
		return ('201 Created', ++$sandboxes == 1 ? '{"id":"../../export"}' : qq{{"id":"sbx-$sandboxes"}});
	}
	return ('404 Not Found', '{"code":"not_found"}') unless $method eq 'POST' && $path =~ m{^/v1/sandboxes/[\w-]+/tools/(\w+)$};
	my $tool = $1;
	if ($body =~ /"hang-up"/)
	{
		# read_file hangs up once, then answers; exec always hangs up
		return () if $tool eq 'exec' || $hangups++ == 0;
		return ('200 OK', qq{{"ok":true,$ok,"stdout":"","result":{"content":"after a hang-up"}}});
	}
	if ($body =~ /"cut-short"/)
	{
		# no answer until the cell that sent it is gone (the test ends that
		# cell while the call is out), then hang up; at most 60 s
		NadiProvider::wait_hangup($conn, 60);
		return ();
	}
	if ($body =~ /"sleep"/)
	{
		select(undef, undef, undef, 1.5);
		return ('200 OK', '{"ok":false,"exit_status":null,"signal":9,"stdout":"","stderr":"","truncated":false,'
			  . '"timed_out":true,"oom_killed":false}');
	}
	return ('200 OK', '{"ok":false,"exit_status":null,"signal":9,"stdout":"","stderr":"","truncated":false,'
		  . '"timed_out":false,"oom_killed":true}')
	  if $body =~ /"memory-hog"/;
	return ('200 OK', qq{{"ok":true,$ok,"stdout":"ran $tool","result":null}});
}

my ($port, $pid) = NadiProvider::start($log, \&answer);
my $parent = $$;
# the endpoint goes when the test does, however it ends
END { local $?; NadiProvider::stop($pid) if $$ == $parent && $pid; }

my $node = PostgreSQL::Test::Cluster->new('tools');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'nadi'
nadi.database = 'postgres'
nadi.cell_workers = 1
nadi.sandboxd_url = 'http://127.0.0.1:$port'
nadi.sandboxd_token = 'cluster-wide-secret'
nadi.tool_timeout = '500ms'
nadi.lease_ttl = '3s'
nadi.retry_backoff_base = '200ms'
nadi.max_attempts = 10
nadi.proxy_tokens = off
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION nadi');
$node->safe_psql('postgres', 'SELECT nadi.key_create()');

# Every request the endpoint got: [method, path, authorization, body].
sub requests { return NadiProvider::requests($log); }

sub tool_posts
{
	my ($marker) = @_;
	return scalar grep { $_->[0] eq 'POST' && $_->[1] =~ m{/tools/} && $_->[3] =~ /\Q$marker\E/ } requests();
}

sub wait_status
{
	my ($cmd, $status) = @_;
	return $node->poll_query_until('postgres', "SELECT status = '$status' FROM nadi.command_inbox WHERE command_id = $cmd");
}

sub q1 { return $node->safe_psql('postgres', $_[0]); }

sub enqueue
{
	my ($sid, $type, $payload) = @_;
	$payload =~ s/'/''/g;
	return q1("SELECT command_id FROM nadi.command_enqueue('$sid', '$type', '$payload')");
}

# ---- the sandbox id the host answers is a path component, not a path -------
my $sid = q1("SELECT session_id FROM nadi.session_create('acme', policy => '{\"require_approval\": [\"exec\"]}')");
my $c = enqueue($sid, 'tool', '{"name": "echo", "args": {"text": "first"}}');
ok(wait_status($c, 'dead'), 'a sandbox id that is not an id fails the call');
is(tool_posts('first'), 0, 'and nothing was sent to a path built from it');

$c = enqueue($sid, 'tool', '{"name": "echo", "args": {"text": "second"}}');
ok(wait_status($c, 'completed'), 'the next call makes a sandbox of its own and runs');
is(tool_posts('second'), 1, 'one call');
ok((grep { $_->[1] eq '/v1/sandboxes/sbx-2/tools/echo' } requests()), 'at the tool route of that sandbox');

# ---- the session's token, on every call ----------------------------------------
my @auth = map { $_->[2] } requests();
ok(@auth >= 4, 'the host was asked for its tools, to make sandboxes and to run a tool');
is(scalar(grep { !/^Bearer \S+$/ || /cluster-wide-secret/ } @auth), 0,
	'every request carries a bearer token, never nadi.sandboxd_token');
my %tokens = map { s/^Bearer //r => 1 } @auth;
is_deeply([ map { q1("SELECT (c->>'scope') || ' ' || (c->>'sid') || ' ' || (c->>'tenant')
	FROM nadi.token_verify('$_', 'nadi-sandboxd') c") } sort keys %tokens ],
	[ map { "sandbox $sid acme" } keys %tokens ],
	'it is the session\'s token for the sandbox host (nadi.sandboxd_token)');
is(scalar(keys %tokens), 1, 'one token serves the session\'s calls until half its life is gone');

# ---- hostile tool names: no call to the host, no way around the approval ------
my $before = scalar(requests());
$c = enqueue($sid, 'message', '{"text": "/tool x/../exec {\"argv\": [\"sh\", \"-c\", \"echo MODEL-RAN\"]}"}');
ok(wait_status($c, 'completed'), 'a model\'s call of x/../exec: the command goes on');
is(q1("SELECT count(*) FROM nadi.events WHERE command_id = $c AND kind IN ('permission.requested', 'tool.call')"),
	'0', 'x/../exec is neither called nor put to the approval policy as something else');
is(q1("SELECT payload->>'code' FROM nadi.events WHERE command_id = $c AND kind = 'tool.error'"),
	'invalid_tool_name', 'a tool.error says the name is not a tool name');
like(q1("SELECT result->>'text' FROM nadi.command_inbox WHERE command_id = $c"), qr/invalid_tool_name/,
	'the model saw the error as the call\'s result');
is(scalar(requests()), $before, 'nothing at all was sent to the sandbox host');
is(scalar(grep { $_->[3] =~ /MODEL-RAN/ } requests()), 0, 'the command never reached it');

$c = enqueue($sid, 'message', '{"text": "/tool exec {\"argv\": [\"sh\", \"-c\", \"echo MODEL-RAN\"]}"}');
ok(wait_status($c, 'waiting'), 'the same call named exec waits for approval');
q1("SELECT nadi.command_enqueue('$sid', 'deny', '{}')");
ok(wait_status($c, 'completed'), 'denied');

$c = enqueue($sid, 'message', '{"text": "/tool export {}"}');
ok(wait_status($c, 'completed'), 'a model\'s call of a tool the host does not offer: the command goes on');
is(q1("SELECT payload->>'code' FROM nadi.events WHERE command_id = $c AND kind = 'tool.error'"),
	'unknown_tool', 'a tool.error says the host offers no such tool');
is(scalar(grep { $_->[1] =~ /export/ } requests()), 0, 'nothing was sent to a route named export');

# A direct tool command named ../export: refused at enqueue (NA013), or by
# the cell; either way nothing reaches the host's export route.
my ($rc, $out, $err) = $node->psql('postgres',
	"SELECT command_id FROM nadi.command_enqueue('$sid', 'tool', '{\"name\": \"../export\", \"args\": {}}')");
if ($rc != 0)
{
	like($err, qr/NA013|tool name/i, 'enqueue refuses a tool named ../export');
}
else
{
	ok(wait_status($out, 'dead'), 'a direct tool command named ../export fails');
	is(q1("SELECT attempts || ' ' || (last_error->>'code') FROM nadi.command_inbox WHERE command_id = $out"),
		'1 invalid_tool_name', 'once, for good, as an invalid tool name');
}
$c = enqueue($sid, 'tool', '{"name": "export", "args": {}}');
ok(wait_status($c, 'dead'), 'a direct tool command of a tool the host does not offer fails');
is(q1("SELECT attempts || ' ' || (last_error->>'code') FROM nadi.command_inbox WHERE command_id = $c"),
	'1 unknown_tool', 'once, for good, as an unknown tool');
is(q1("SELECT count(*) FROM nadi.events WHERE command_id = $c AND kind = 'tool.error' AND payload->>'code' = 'unknown_tool'"),
	'1', 'with a tool.error');
is(scalar(grep { $_->[1] =~ /export|\.\./ } requests()), 0, 'no request ever named export or a dot segment');

# ---- a call that hits its limit ------------------------------------------------
$c = enqueue($sid, 'tool', '{"name": "exec", "args": {"argv": ["sleep", "100000"]}}');
ok(wait_status($c, 'dead'), 'a call that hits its limit ends');
is(q1("SELECT attempts || ' ' || (last_error->>'code') || ' ' || (last_error->>'timed_out') FROM nadi.command_inbox WHERE command_id = $c"),
	'1 timed_out true', 'once, for good, as timed out (the cell waited past nadi.tool_timeout for the call\'s limit)');
is(q1("SELECT count(*) || ' ' || bool_and((payload->>'timed_out')::boolean) FROM nadi.events WHERE command_id = $c AND kind = 'tool.result'"),
	'1 true', 'one tool.result, timed_out');
is(tool_posts('sleep'), 1, 'the call was made once');

# ---- a call killed for its memory ------------------------------------------------
$c = enqueue($sid, 'tool', '{"name": "exec", "args": {"argv": ["memory-hog"]}}');
ok(wait_status($c, 'dead'), 'a call killed for its memory ends');
is(q1("SELECT (last_error->>'code') || ' ' || (last_error->>'oom_killed') FROM nadi.command_inbox WHERE command_id = $c"),
	'oom_killed true', 'the command\'s error says oom_killed');

# ---- sent, no answer: a tool with side effects is not run again --------------------
$c = enqueue($sid, 'tool', '{"name": "exec", "args": {"argv": ["hang-up"]}}');
ok(wait_status($c, 'dead'), 'exec sent but not answered ends');
is(q1("SELECT attempts || ' ' || (last_error->>'code') FROM nadi.command_inbox WHERE command_id = $c"),
	'1 outcome_unknown', 'once, for good: its outcome is unknown');
is(q1("SELECT (payload->>'ok') || ' ' || (payload->>'outcome') FROM nadi.events WHERE command_id = $c AND kind = 'tool.result'"),
	'false unknown', 'the tool.result says the outcome is unknown');
is(tool_posts('hang-up'), 1, 'exec was sent once, never again');

# the model sees it, and is not retried either
$c = enqueue($sid, 'message', '{"text": "/tool exec {\"argv\": [\"hang-up\"]}"}');
ok(wait_status($c, 'waiting'), 'the model\'s exec asks for approval');
q1("SELECT nadi.command_enqueue('$sid', 'approve', '{}')");
ok(wait_status($c, 'completed'), 'approved, sent, not answered: the command goes on');
like(q1("SELECT result->>'text' FROM nadi.command_inbox WHERE command_id = $c"), qr/outcome_unknown/,
	'the model saw that the outcome is unknown');
is(tool_posts('hang-up'), 2, 'exec was sent once more for the model, and not again');

# without side effects it is tried again, and the log says why
$c = enqueue($sid, 'tool', '{"name": "read_file", "args": {"path": "hang-up"}}');
ok(wait_status($c, 'completed'), 'read_file sent but not answered is tried again and completes');
is(q1("SELECT attempts FROM nadi.command_inbox WHERE command_id = $c"), '2', 'on its second attempt');
is(q1("SELECT (payload->>'code') || ' ' || (payload->>'outcome') FROM nadi.events WHERE command_id = $c AND kind = 'tool.error'"),
	'outcome_unknown unknown', 'the first attempt\'s tool.error says its outcome was unknown');

# ---- the cell goes away while exec is out: not run again by the next one ------------
# (the endpoint holds the call until the cell goes; with a limit of 600 s
# the cell does not give up on it first)
$c = enqueue($sid, 'tool', '{"name": "exec", "args": {"argv": ["sleep", "cut-short"], "timeout_ms": 600000}}');
my $sent = 0;
for (1 .. 600)
{
	last if ($sent = tool_posts('cut-short')) > 0;
	select(undef, undef, undef, 0.1);
}
is($sent, 1, 'exec is out');
q1("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'nadi cell'");
ok(wait_status($c, 'dead'), 'the next cell to take the command ends it');
is(q1("SELECT (attempts > 1) || ' ' || (last_error->>'code') FROM nadi.command_inbox WHERE command_id = $c"),
	'true outcome_unknown', 'on a later attempt, for good: the outcome of the cut-short call is unknown');
is(q1("SELECT (payload->>'outcome') FROM nadi.events WHERE command_id = $c AND kind = 'tool.result'"),
	'unknown', 'a tool.result says so');
is(tool_posts('cut-short'), 1, 'exec was sent once, never again');

# ---- could not connect: tried again -------------------------------------------------
# (the cell that took over knows the host's tools once it has made a call)
$c = enqueue($sid, 'tool', '{"name": "echo", "args": {"text": "warm"}}');
ok(wait_status($c, 'completed'), 'the cell that took over runs tools');
NadiProvider::stop($pid);
$pid = undef;
$c = enqueue($sid, 'tool', '{"name": "echo", "args": {"text": "refused"}}');
$node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM nadi.events WHERE command_id = $c AND kind = 'command.failed' AND (payload->>'will_retry')::boolean")
  or die 'the refused call was not failed for a retry';
is(q1("SELECT payload->>'code' FROM nadi.events WHERE command_id = $c AND kind = 'tool.error' LIMIT 1"),
	'sandbox_unavailable', 'a call that could not connect is a sandbox_unavailable tool.error');
($port, $pid) = NadiProvider::start($log, \&answer, $port);
ok(wait_status($c, 'completed'), 'and is tried again until the host is back');
is(tool_posts('refused'), 1, 'the host got it once, when it was back');

$node->stop;
done_testing();

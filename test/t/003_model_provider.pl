# The OpenAI-compatible model provider: the cell speaks chat completions with
# tool calling to nadi.model_url (in production the credentials proxy, which
# adds the API key; here a loopback endpoint that answers like a provider and
# records what it was sent), and never sends a key itself: only a short-lived
# model token (nadi.model_token) the proxy checks before it adds the key.
use strict;
use warnings;
# test/perl, found from this file: PostgreSQL 17's PGXS no longer exports TESTDIR
use FindBin;
use lib "$FindBin::RealBin/../perl";
use NadiProvider;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# A provider on loopback: the first request of a conversation gets a tool
# call, a request carrying a tool result gets a plain answer.
my $log = "${PostgreSQL::Test::Utils::tmp_check}/provider.log";
my ($port, $pid) = NadiProvider::start(
	$log,
	sub {
		my ($head, $body) = @_;
		return ('200 OK',
			$body =~ /returned|was denied/
			? '{"model":"test-model-0613","usage":{"prompt_tokens":31,"completion_tokens":7},"choices":[{"message":{"role":"assistant","content":"The provider saw the result."}}]}'
			: '{"choices":[{"message":{"role":"assistant","content":"Let me run that.","tool_calls":[{"id":"call_1","type":"function","function":{"name":"exec","arguments":"{\\"argv\\":[\\"id\\"]}"}}]}}]}');
	});

my $node = PostgreSQL::Test::Cluster->new('provider');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'nadi'
nadi.database = 'postgres'
nadi.cell_workers = 1
nadi.model = 'openai'
nadi.model_url = 'http://127.0.0.1:$port/v1'
nadi.model_name = 'test-model'
nadi.lease_ttl = '3s'
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION nadi');

# Without a signing key no model token can be minted: the command fails
# (retryably) and nothing reaches the provider.
my $nokey = $node->safe_psql('postgres', "SELECT session_id FROM nadi.session_create('acme')");
my $c0 = $node->safe_psql('postgres',
	"SELECT command_id FROM nadi.command_enqueue('$nokey', 'message', '{\"text\": \"hello\"}')");
$node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM nadi.events WHERE session_id = '$nokey' AND kind = 'command.failed'")
  or die 'the command did not fail without a signing key';
like($node->safe_psql('postgres',
	"SELECT payload::text FROM nadi.events WHERE session_id = '$nokey' AND kind = 'command.failed' LIMIT 1"),
	qr/cannot mint a model token/, 'no signing key: the command fails with the reason');
ok(!-e $log, 'no signing key: nothing was sent to the provider');
$node->safe_psql('postgres', "SELECT nadi.session_terminate('$nokey')");
$node->safe_psql('postgres', 'SELECT nadi.key_create()');

my $sid = $node->safe_psql('postgres',
	"SELECT session_id FROM nadi.session_create('acme', policy => '{\"require_approval\": [\"exec\"]}')");
my $c = $node->safe_psql('postgres',
	"SELECT command_id FROM nadi.command_enqueue('$sid', 'message', '{\"text\": \"who am I?\"}')");
$node->poll_query_until('postgres', "SELECT status = 'waiting' FROM nadi.command_inbox WHERE command_id = $c")
  or die 'the provider\'s tool call was not parked for permission';
is($node->safe_psql('postgres',
	"SELECT payload->>'tool' || ' ' || (payload->'args') FROM nadi.events WHERE kind = 'permission.requested'"),
	'exec {"argv": ["id"]}', 'the provider\'s tool call, with parsed arguments, asks for permission');
is($node->safe_psql('postgres', "SELECT payload->>'text' FROM nadi.events WHERE kind = 'model.reply'"),
	'Let me run that.', 'the provider\'s text became a model.reply');

$node->safe_psql('postgres', "SELECT nadi.command_enqueue('$sid', 'deny', '{}')");
$node->poll_query_until('postgres', "SELECT status = 'completed' FROM nadi.command_inbox WHERE command_id = $c")
  or die 'not completed after the denial';
is($node->safe_psql('postgres', "SELECT result->>'text' FROM nadi.command_inbox WHERE command_id = $c"),
	'The provider saw the result.', 'the denial went back to the provider, which answered');

# What the provider reported goes into the event, and the operator's numbers
# count it: calls, the latency the cell measured, tokens (nadi.stat_calls).
is($node->safe_psql('postgres',
	"SELECT payload->>'model' || ' ' || (payload->'usage') || ' ' || (jsonb_typeof(payload->'latency_ms')) "
	  . "FROM nadi.events WHERE kind = 'model.reply' AND payload ? 'usage'"),
	'test-model-0613 {"input_tokens": 31, "output_tokens": 7} number',
	'a model.reply carries the usage and model the provider reported, and the latency');
is($node->safe_psql('postgres',
	"SELECT calls || ' ' || errors || ' ' || latency_count || ' ' || input_tokens || ' ' || output_tokens "
	  . "FROM nadi.stat_calls WHERE tenant_id = 'acme' AND kind = 'model' AND name = 'test-model-0613'"),
	'1 0 1 31 7',
	'nadi.stat_calls counts the model calls, their latencies and tokens per model');

my $sent = slurp_file($log);
like($sent, qr{POST /v1/chat/completions}, 'chat completions endpoint');
like($sent, qr{"model":\s*"test-model"}, 'configured model name');
like($sent, qr{who am I\?}, 'the user message was sent');
my @tokens = $sent =~ m{^Authorization: Bearer (\S+)\r$}mgi;
ok(@tokens >= 2, 'every model call carries a bearer token');
my @claims = map {
	$node->safe_psql('postgres',
		"SELECT c->>'scope' || ' ' || (c->>'sub') || ' ' || (c->>'sid') FROM nadi.token_verify('$_', 'nadi-proxy') c")
} @tokens;
is_deeply(\@claims, [ map { "session model $sid" } @tokens ],
	'it is the session\'s model token for the credentials proxy (nadi.model_token)');
is(scalar(keys %{ { map { $_ => 1 } @tokens } }), 1, 'one token serves the session\'s calls until half its life is gone');
unlike($sent, qr{sk-|api[_-]?key}i, 'the cell sends no API key');

$node->stop;
NadiProvider::stop($pid);
done_testing();

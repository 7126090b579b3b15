# Model calls through the credentials proxy: the cell sends its model token
# to nadi-credproxy (nadi.model_url = http://proxy/u/model/v1), the proxy
# checks it and the tenant's allow-list in the database, injects the real
# API key and forwards to the provider.  The provider (a loopback endpoint
# that answers like a chat-completions API) accepts only that key; the cell
# never has it.  Skipped when nadi-credproxy is not built.
use strict;
use warnings;
use IO::Socket::INET;
use IPC::Run;
# test/perl, found from this file: PostgreSQL 17's PGXS no longer exports TESTDIR
use FindBin;
use lib "$FindBin::RealBin/../perl";
use NadiProvider;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $proxy_bin = "$FindBin::RealBin/../../sandboxd/credentials-proxy/nadi-credproxy";
plan skip_all => "nadi-credproxy is not built ($proxy_bin)" unless -x $proxy_bin;

my $tmp = PostgreSQL::Test::Utils::tempdir;
my $key = 'sk-test-' . join('', map { ('a' .. 'z')[ rand 26 ] } 1 .. 24);
my $log = "$tmp/provider.log";

# The provider: 401 without the key, an answer with it.
my ($provider_port, $pid) = NadiProvider::start(
	$log,
	sub {
		my ($head) = @_;
		return $head =~ /^Authorization: Bearer \Q$key\E\r$/mi
		  ? ('200 OK', '{"choices":[{"message":{"role":"assistant","content":"Done, through the proxy."}}]}')
		  : ('401 Unauthorized', '{"error":{"message":"invalid api key"}}');
	});

my $node = PostgreSQL::Test::Cluster->new('via_proxy');
$node->init;
# nadi.model_url is set below, once the proxy has a port (it takes one the
# kernel picks: a port chosen here could be taken before the proxy binds it).
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'nadi'
nadi.database = 'postgres'
nadi.cell_workers = 1
nadi.model = 'openai'
nadi.model_name = 'test-model'
nadi.sandboxd_url = 'http://127.0.0.1:1'
nadi.lease_ttl = '3s'
});
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION nadi;
SELECT nadi.key_create();
CREATE ROLE proxy_login LOGIN IN ROLE nadi_sandbox_host;
});

# The proxy holds the key in a file of its own; the database never sees it.
open(my $sf, '>', "$tmp/model.secret") or die;
print $sf "$key\n";
close $sf;
chmod 0600, "$tmp/model.secret";
mkdir "$tmp/sandboxes";
my $conninfo = 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres user=proxy_login';
my $proxy = IPC::Run::start(
	[
		$proxy_bin, "--pg-conninfo=$conninfo", "--sandbox-dir=$tmp/sandboxes",
		'--listen-tcp=127.0.0.1:0', "--ready-file=$tmp/proxy.ready", '--proxy-id=tap',
		"--upstream=model url=http://127.0.0.1:$provider_port header=Authorization format=\"Bearer %s\" secret_file=$tmp/model.secret"
	],
	'>', "$tmp/proxy.log", '2>&1');
my $proxy_port;
for (1 .. 300)
{
	if (-s "$tmp/proxy.ready" && open(my $rf, '<', "$tmp/proxy.ready"))
	{
		($proxy_port) = <$rf> =~ /^(\d+)$/;
		close $rf;
		last if $proxy_port;
	}
	select(undef, undef, undef, 0.1);
}
my $up = $proxy_port && IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $proxy_port);
ok($up, 'nadi-credproxy listens on the port of its ready file');
$node->safe_psql('postgres',
	"ALTER SYSTEM SET nadi.model_url = 'http://127.0.0.1:$proxy_port/u/model/v1'; SELECT pg_reload_conf();");

sub run_message
{
	my ($tenant) = @_;
	my $sid = $node->safe_psql('postgres', "SELECT session_id FROM nadi.session_create('$tenant')");
	my $c = $node->safe_psql('postgres',
		"SELECT command_id FROM nadi.command_enqueue('$sid', 'message', '{\"text\": \"go\"}')");
	$node->poll_query_until('postgres',
		"SELECT status IN ('completed', 'dead') OR (status = 'queued' AND attempts > 0) FROM nadi.command_inbox WHERE command_id = $c")
	  or die "command $c did not finish";
	return ($sid, $c);
}

# No rule yet: the proxy refuses (403 not_allowed) and the provider is never asked.
my ($s1, $c1) = run_message('acme');
like($node->safe_psql('postgres', "SELECT last_error::text FROM nadi.command_inbox WHERE command_id = $c1"),
	qr/403/, 'without an egress rule the model call is refused');
is($node->safe_psql('postgres',
	"SELECT detail->>'code' FROM nadi.audit_log WHERE action = 'proxy.request' AND session_id = '$s1' ORDER BY audit_id LIMIT 1"),
	'not_allowed', 'the refusal is audited with its code');
ok(!-e $log, 'nothing reached the provider');
$node->safe_psql('postgres', "SELECT nadi.session_terminate('$s1')");

# Allowed for every tenant: the conversation goes through.
$node->safe_psql('postgres', "SELECT nadi.egress_allow('*', 'model', '{POST}', '/v1/')");
my ($s2, $c2) = run_message('acme');
is($node->safe_psql('postgres', "SELECT result->>'text' FROM nadi.command_inbox WHERE command_id = $c2"),
	'Done, through the proxy.', 'the provider answered through the proxy');
my $seen = slurp_file($log);
my @keys = $seen =~ /^Authorization: Bearer \Q$key\E\r$/mg;
is(scalar(@keys), 1, 'the provider saw the real key');
unlike($seen, qr/Proxy-Authorization|eyJ/, 'and never the cell\'s token');
is($node->safe_psql('postgres',
	"SELECT string_agg(DISTINCT detail->>'kind', ',') || ' ' || count(*) FILTER (WHERE action = 'proxy.response') "
	  . "|| ' ' || string_agg(DISTINCT detail->>'status', ',') FILTER (WHERE action = 'proxy.response') "
	  . "FROM nadi.audit_log WHERE action LIKE 'proxy.%' AND session_id = '$s2'"),
	'model 1 200', 'the exchange is audited as a model call with the provider\'s status');
is($node->safe_psql('postgres', "SELECT count(*) FROM nadi.audit_log WHERE detail::text LIKE '%$key%'"),
	'0', 'the key is nowhere in the database');
unlike(slurp_file("$tmp/proxy.log"), qr/\Q$key\E/, 'nor in the proxy\'s log');

$proxy->signal('TERM');
$proxy->finish;
$node->stop;
NadiProvider::stop($pid);
done_testing();

# A rolling upgrade, the server's side: the new nadi.so is installed and
# the server restarted while the database still has the schema of the
# previous release (the newest in test/releases.txt before the current
# version), before ALTER EXTENSION nadi UPDATE.  The server starts, the broker, notifier and
# embedded cell come up and neither crash nor restart nor fill the log, the
# old release's SQL API works (its C functions are all in the new library),
# and ALTER EXTENSION nadi UPDATE then brings the schema to the current
# version, after which the embedded cell runs the commands queued before.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($current) = slurp_file('nadi.control') =~ /^default_version\s*=\s*'([^']+)'/m;
# the newest release before the current version
my ($old) = reverse grep { $_ ne $current }
  map { /^(\S+)/ } grep { !/^\s*(#|$)/ } split /\n/, slurp_file('test/releases.txt');
plan skip_all => "no release before $current in test/releases.txt" unless $old;
note("the previous release is $old, the current version $current");

my $node = PostgreSQL::Test::Cluster->new('old_schema');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'nadi'
nadi.database = 'postgres'
nadi.cell_workers = 1
nadi.cell_host_id = 'old-schema-cell'
nadi.heartbeat_interval = '200ms'
});
$node->start;

# The database as the previous release left it.
$node->safe_psql('postgres', "CREATE EXTENSION nadi VERSION '$old'");
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'nadi'"),
	$old, "the schema is $old");

# "Install the new build and restart": the library is the current one.
$node->restart;
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 3 FROM pg_stat_activity WHERE backend_type IN ('nadi broker', 'nadi notifier', 'nadi cell')"),
	'after the restart the broker, the notifier and the cell run on the old schema');
my %pid = map { split /\|/ } split /\n/, $node->safe_psql('postgres',
	"SELECT backend_type, pid FROM pg_stat_activity WHERE backend_type LIKE 'nadi %'");

# The previous release's SQL API, as its clients and cells call it.
# (an external cell host only this session's labels lead to: the broker
# places it there, and the test acts as that cell)
$node->safe_psql('postgres', q{
SELECT nadi.key_create();
SELECT nadi.cell_host_register('ext-cell', 'http://127.0.0.1:1', 10, '{"pool": "ext"}');
});
my $sid = $node->safe_psql('postgres',
	q{SELECT session_id FROM nadi.session_create('acme', '{"by": "old api"}', '{"pool": "ext"}')});
ok($node->poll_query_until('postgres',
		"SELECT state = 'placed' AND cell_host_id = 'ext-cell' FROM nadi.sessions WHERE session_id = '$sid'"),
	'the broker places a session by its labels');
my ($epoch, $cid, $tok) = split /\|/, $node->safe_psql('postgres', qq{
\\o /dev/null
CREATE TEMP TABLE l AS SELECT (nadi.lease_acquire('$sid', 'ext-cell')).epoch;
SELECT nadi.event_append('$sid', (SELECT epoch FROM l), 'agent.note', '{"text": "on the old schema"}');
CREATE TEMP TABLE c AS SELECT (nadi.command_enqueue('$sid', 'tool', '{"name": "echo", "args": {}}', 'k1')).command_id AS cid;
\\o
SELECT l.epoch, c.cid, nadi.token_mint('acme', 'alice', 'tenant', '1 hour') FROM l, c;
});
ok($epoch && $cid && $tok, "lease_acquire, event_append, command_enqueue, token_mint on the $old schema");
is($node->safe_psql('postgres', "SELECT command_id FROM nadi.command_claim('$sid', $epoch)"),
	$cid, 'command_claim');
is($node->safe_psql('postgres', "SELECT status FROM nadi.command_complete('$sid', $cid, $epoch, '{\"ok\": true}')"),
	'completed', 'command_complete');
is($node->safe_psql('postgres', "SELECT string_agg(kind, ',' ORDER BY seq) FROM nadi.events_read('$sid', 0) WHERE kind LIKE 'agent.%' OR kind LIKE 'command.%'"),
	'agent.note,command.received,command.started,command.completed', 'events_read');
is($node->safe_psql('postgres', "SELECT (nadi.token_verify('$tok'))->>'tenant'"),
	'acme', 'token_verify');
is($node->safe_psql('postgres', "SELECT count(*) FROM nadi.session_list() WHERE session_id = '$sid'"),
	'1', 'session_list');
is($node->safe_psql('postgres', "SELECT count(*) > 0 FROM nadi.jwks()"), 't', 'jwks');
# The logins of the previous release: an edge's (tokens, no host) works;
# a host login's calls, which the new library checks against the host
# bindings new in 1.1, are refused with an error naming both versions until
# the update (an administrator's and the embedded cells' are not checked).
$node->safe_psql('postgres', q{
CREATE ROLE old_edge LOGIN IN ROLE nadi_edge;
CREATE ROLE old_cell LOGIN IN ROLE nadi_cell;
});
is($node->safe_psql('postgres', "BEGIN; SELECT FROM nadi.authenticate('$tok'); SELECT tenant_id FROM nadi.session_get('$sid'); COMMIT",
		extra_params => [ '-U', 'old_edge' ]),
	"acme", "an edge login of $old authenticates a token and reads a session");
my ($hrc, $hout, $herr) = $node->psql('postgres', "SELECT nadi.cell_host_heartbeat('ext-cell')",
	extra_params => [ '-U', 'old_cell' ]);
like($herr, qr/ERROR:  the nadi extension in this database is version \Q$old\E, this nadi library \(\Q$current\E\) checks host logins against nadi.host_bindings/,
	"a host login's heartbeat is refused, naming $old and $current")
  or diag($herr);
like($herr, qr/HINT:  Run ALTER EXTENSION nadi UPDATE, then bind each host login/, '... with what to do');
$node->safe_psql('postgres', "SELECT nadi.lease_release('$sid', $epoch)");
$node->safe_psql('postgres', "SELECT nadi.cell_host_set_state('ext-cell', 'draining')");
# A session for the embedded cell, queued on the old schema.
my ($s2, $c2) = split /\|/, $node->safe_psql('postgres', q{
WITH s AS (SELECT (nadi.session_create('acme')).session_id AS sid)
SELECT sid, (nadi.command_enqueue(sid, 'message', '{"text": "queued on the old schema"}')).command_id FROM s;
});

# A few heartbeats of the workers on the old schema.
$node->poll_query_until('postgres', "SELECT now() > '" .
	  $node->safe_psql('postgres', "SELECT now() + interval '2 s'") . "'");
my %pid2 = map { split /\|/ } split /\n/, $node->safe_psql('postgres',
	"SELECT backend_type, pid FROM pg_stat_activity WHERE backend_type LIKE 'nadi %'");
is_deeply(\%pid2, \%pid, 'the same worker processes still run (none restarted)');
# since the restart (a shutdown makes every worker exit with code 1)
my ($log) = slurp_file($node->logfile) =~ /.*database system is ready to accept connections(.*)\z/s;
unlike($log, qr/PANIC|terminated by signal|background worker .* exited/,
	'no crash and no worker exit in the log');
my %seen;
my @repeated = grep { $seen{$_}++ == 1 }
  map { s/^\S+ \S+ \S+ \[\d+\] //r } grep { /\b(WARNING|ERROR|FATAL):/ && !/statement:/ } split /\n/, $log;
ok(!@repeated, 'no warning or error of the workers repeats in the log')
  or diag(join("\n", @repeated));
is(scalar(() = $log =~ /WARNING:  nadi cell: the nadi extension in database "postgres" is version \Q$old\E, this nadi library's cells run at version \Q$current\E: they wait/g),
	1, "the cell says once that it waits for the update, naming $old and $current");
note("log lines from the workers on the old schema:\n"
	  . join("\n", grep { /nadi (broker|notifier|cell)|WARNING|ERROR/ } split /\n/, $log));

# Then the update.
$node->safe_psql('postgres', 'ALTER EXTENSION nadi UPDATE');
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'nadi'"),
	$current, "ALTER EXTENSION nadi UPDATE brings it to $current with the new library loaded");
ok($node->poll_query_until('postgres',
		"SELECT status = 'completed' AND result->>'text' = 'You said: queued on the old schema' FROM nadi.command_get('$s2', $c2)"),
	'the embedded cell runs the command queued on the old schema');
$node->safe_psql('postgres', "SELECT nadi.host_bind('cell', 'ext-cell', 'old_cell')");
is($node->safe_psql('postgres', "SELECT host_id FROM nadi.cell_host_heartbeat('ext-cell')",
		extra_params => [ '-U', 'old_cell' ]),
	'ext-cell', 'after the update and nadi.host_bind the host login heartbeats');
# (stat_sessions is new in 1.1, and every later version has it)
is($node->safe_psql('postgres', "SELECT count(*) FROM nadi.stat_sessions"), '2', "the $current API answers (stat_sessions)");

$node->stop;
done_testing();

# Dump and restore keep the operator's call counts as they were.  The
# counts are made where the extension writes an event, not from
# nadi.events: a restore loads the events without counting them (no
# trigger), and the counts, folded or not, come back from the dump itself
# (nadi.call_counts and nadi.call_count_deltas are registered for it).
# Were they counted again from the loaded events as well, every number
# would come back doubled.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('stats_restore');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'nadi'
nadi.broker = off
nadi.cell_workers = 0
nadi.lease_ttl = '10min'
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE before_dump');
$node->safe_psql('before_dump', 'CREATE EXTENSION nadi');
$node->safe_psql('before_dump', q{
SELECT nadi.cell_host_register('restore-cell', 'local', 4);
SELECT nadi.place(session_id) IS NOT NULL FROM nadi.session_create('acme');
});
my $sid = $node->safe_psql('before_dump', 'SELECT session_id FROM nadi.sessions');
my $epoch = $node->safe_psql('before_dump', "SELECT epoch FROM nadi.lease_acquire('$sid', 'restore-cell')");
# some counted events folded, some not yet
$node->safe_psql('before_dump', qq{
SELECT nadi.event_append('$sid', $epoch, 'tool.call', '{"name": "exec"}');
SELECT nadi.event_append('$sid', $epoch, 'tool.result', '{"name": "exec", "ok": true}');
SELECT nadi.event_append('$sid', $epoch, 'model.reply',
    '{"model": "m1", "latency_ms": 120, "usage": {"input_tokens": 10, "output_tokens": 3}}');
SELECT nadi._call_counts_fold();
SELECT nadi.event_append('$sid', $epoch, 'tool.error', '{"name": "exec"}');
SELECT nadi.event_append('$sid', $epoch, 'model.reply', '{"model": "m1", "usage": {"input_tokens": 5}}');
});

my $counts = q{
SELECT string_agg(concat_ws(' ', tenant_id, kind, name, calls, errors, latency_count,
                            round(latency_sum_seconds::numeric, 6), input_tokens, output_tokens),
                  E'\n' ORDER BY tenant_id, kind, name)
FROM nadi.stat_calls};
my $before = $node->safe_psql('before_dump', $counts);
is($before, "acme model m1 2 0 1 0.120000 15 3\nacme tool exec 2 1 0 0.000000 0 0",
	'the counts before the dump');

my $dump = PostgreSQL::Test::Utils::tempdir() . '/nadi.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('before_dump') ],
	'pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok([ 'pg_restore', '-d', $node->connstr('restored'), $dump ], 'pg_restore');
is($node->safe_psql('restored', $counts), $before, 'the counts after the restore are the same');
$node->safe_psql('restored', 'SELECT nadi._call_counts_fold()');
is($node->safe_psql('restored', $counts), $before, 'and after a fold');
is($node->safe_psql('restored', 'SELECT count(*) FROM nadi.call_count_deltas'), '0',
	'the fold took the restored deltas');

# the restored database counts what is written after the restore
$node->safe_psql('restored', qq{
SELECT nadi.event_append('$sid', $epoch, 'tool.result', '{"name": "exec", "ok": false}');
SELECT nadi.event_append('$sid', $epoch, 'tool.call', '{"name": "exec"}');
});
is($node->safe_psql('restored', $counts),
	"acme model m1 2 0 1 0.120000 15 3\nacme tool exec 3 2 0 0.000000 0 0",
	'an append after the restore is counted once');

$node->stop;
done_testing();

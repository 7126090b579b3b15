# Retention run by the broker: with nadi.retention and nadi.audit_retention
# set, the broker purges sessions that ended longer ago than the one and
# audit rows older than the other, every nadi.retention_interval, and
# leaves live sessions, sessions that ended recently and held ones alone.
# Off (0), it purges nothing.  The server's default isolation is
# REPEATABLE READ, where a purge batch refuses to run: the broker runs its
# batches at READ COMMITTED all the same.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('retention');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'nadi'
nadi.database = 'postgres'
nadi.broker = on
nadi.broker_naptime = 100ms
nadi.cell_workers = 0
nadi.retention_interval = 200ms
default_transaction_isolation = 'repeatable read'
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION nadi');
# the test's own statements at READ COMMITTED (nadi.hold_set refuses others)
my $q = sub {
	$node->safe_psql('postgres', "SET default_transaction_isolation = 'read committed';\n" . shift);
};

is($q->('SHOW nadi.retention'), '0', 'retention is off by default');

# ended two days ago: three sessions, one of them held; ended now: one; live: one
$q->(q{
CREATE TABLE t (name text PRIMARY KEY, sid uuid NOT NULL);
INSERT INTO t SELECT n, (nadi.session_create('acme')).session_id
FROM unnest(ARRAY['old1', 'old2', 'held', 'recent', 'live']) n;
SELECT count(nadi.command_enqueue(sid, 'message', '{"text": "x"}')) FROM t;
SELECT count(nadi.session_terminate(sid)) FROM t WHERE name <> 'live';
UPDATE nadi.sessions SET updated_at = updated_at - interval '2 days'
WHERE session_id IN (SELECT sid FROM t WHERE name IN ('old1', 'old2', 'held'));
SELECT nadi.hold_set('acme', (SELECT sid FROM t WHERE name = 'held'), 'matter 9');
});
my $names = q{SELECT string_agg(t.name, ',' ORDER BY t.name) FROM t JOIN nadi.sessions s ON s.session_id = t.sid};
# several intervals go by with retention off
$node->poll_query_until('postgres',
	q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'nadi broker'})
  or die 'no broker';
sleep 1;
is($q->($names), 'held,live,old1,old2,recent', 'with retention off nothing is purged');
# a batch on the server's default isolation (REPEATABLE READ) is refused
my ($rc, $out, $err) = $node->psql('postgres', q{SELECT nadi.purge_batch('1d')});
like($err, qr/purges and legal holds run only at READ COMMITTED/,
	'a purge batch refuses a REPEATABLE READ transaction');
is($q->($names), 'held,live,old1,old2,recent', 'and purges nothing');

$node->append_conf('postgresql.conf', "nadi.retention = '1d'\n");
$node->reload;
ok($node->poll_query_until('postgres', qq{SELECT ($names) = 'held,live,recent'}),
	'the broker purges the sessions that ended more than nadi.retention ago');
is($q->(q{SELECT count(*) FROM nadi.purged_sessions p JOIN t ON t.sid = p.session_id}), '2',
	'each left a tombstone');
is($q->(q{SELECT count(*) FROM nadi.events e JOIN t ON t.sid = e.session_id
          WHERE t.name IN ('old1', 'old2')}), '0', 'their events are gone');
like($q->(q{SELECT actor || ' ' || (detail->>'sessions') FROM nadi.audit_log
            WHERE action = 'retention.purge' ORDER BY audit_id LIMIT 1}),
	qr/ 2$/, 'the broker\'s purge is audited');

# audit rows: those of old1 made 40 days old go, the held session's stay
$q->(q{UPDATE nadi.audit_log SET at = at - interval '40 days'
       WHERE session_id IN (SELECT sid FROM t WHERE name IN ('old1', 'held'))});
my $held_rows = $q->(q{SELECT count(*) FROM nadi.audit_log WHERE session_id = (SELECT sid FROM t WHERE name = 'held')});
cmp_ok($held_rows, '>', 0, 'the held session has audit rows');
$node->append_conf('postgresql.conf', "nadi.audit_retention = '30d'\n");
$node->reload;
ok($node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM nadi.audit_log WHERE session_id = (SELECT sid FROM t WHERE name = 'old1')}),
	'the broker purges audit rows older than nadi.audit_retention');
is($q->(q{SELECT count(*) FROM nadi.audit_log WHERE session_id = (SELECT sid FROM t WHERE name = 'held')}),
	$held_rows, 'the held session\'s audit rows stay');
ok($q->(q{SELECT count(*) > 0 FROM nadi.audit_log WHERE session_id = (SELECT sid FROM t WHERE name = 'old2')}),
	'younger audit rows stay');
is($q->($names), 'held,live,recent', 'the held, live and recent sessions are still there');

done_testing();

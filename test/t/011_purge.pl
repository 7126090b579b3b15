# nadi.purge under a concurrent workload loses nothing live.  While pgbench
# clients enqueue commands and append events to live sessions, read their
# event logs, and create and terminate sessions of their own, a loop purges
# the sessions that ended long ago in small batches.  Afterwards: every live
# session's events are gapless from 1 to last_seq and every command a client
# committed is there; sessions that ended during the run (younger than the
# retention) are all there; held sessions and a held tenant are whole; every
# old session is gone, with a tombstone and no row left behind.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $node = PostgreSQL::Test::Cluster->new('purge');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'nadi'
nadi.database = 'postgres'
nadi.broker = off
nadi.cell_workers = 0
max_connections = 40
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION nadi');

my $n_old = 1200;
my $n_live = 16;

# sessions that ended two days ago, each with a command and its events
$node->safe_psql('postgres', qq{
CREATE TABLE tap_old (sid uuid PRIMARY KEY);
INSERT INTO tap_old SELECT (nadi.session_create(CASE WHEN g % 100 = 0 THEN 'frozen' ELSE 'old' END)).session_id
FROM generate_series(1, $n_old) g;
SELECT count(nadi.command_enqueue(sid, 'message', '{"text": "old"}')) FROM tap_old;
SELECT count(nadi.session_terminate(sid)) FROM tap_old;
UPDATE nadi.sessions SET updated_at = updated_at - interval '2 days'
WHERE session_id IN (SELECT sid FROM tap_old);
});
# a held session, and a held tenant ("frozen": every hundredth old session)
my $held = $node->safe_psql('postgres', 'SELECT min(sid::text) FROM tap_old JOIN nadi.sessions ON session_id = sid WHERE tenant_id = \'old\'');
$node->safe_psql('postgres', qq{
SELECT nadi.hold_set('old', '$held', 'matter 7');
SELECT nadi.hold_set('frozen', NULL, 'matter 8');
});
my $n_frozen = $node->safe_psql('postgres', "SELECT count(*) FROM nadi.sessions WHERE tenant_id = 'frozen'");
cmp_ok($n_frozen, '>', 0, 'a held tenant has old sessions');

# live sessions, leased by one cell so that events can be appended
$node->safe_psql('postgres', qq{
SELECT nadi.cell_host_register('tap-cell', 'local', 1000);
CREATE TABLE tap_live (i int PRIMARY KEY, sid uuid NOT NULL, epoch bigint);
INSERT INTO tap_live SELECT g, (nadi.session_create('live')).session_id FROM generate_series(1, $n_live) g;
SELECT count(nadi.place(sid)) FROM tap_live;
UPDATE tap_live SET epoch = (nadi.lease_acquire(sid, 'tap-cell')).epoch;
CREATE TABLE tap_cmds (sid uuid NOT NULL, command_id bigint NOT NULL);
CREATE TABLE tap_churn (sid uuid PRIMARY KEY);
});

my $dir = PostgreSQL::Test::Utils::tempdir;
# a command and an event for a live session (the command's row in tap_cmds
# commits with it or not at all)
PostgreSQL::Test::Utils::append_to_file("$dir/live.sql", qq{
\\set i random(1, $n_live)
BEGIN;
SELECT sid, epoch FROM tap_live WHERE i = :i \\gset
INSERT INTO tap_cmds SELECT session_id, command_id FROM nadi.command_enqueue(':sid', 'message', '{"text": "w"}');
SELECT 1 FROM nadi.lease_renew(':sid', :epoch);
SELECT 1 FROM nadi.event_append(':sid', :epoch, 'tool.output', '{"n": 1}');
END;
});
# a reader following a live session's log, as a stream does
PostgreSQL::Test::Utils::append_to_file("$dir/read.sql", qq{
\\set i random(1, $n_live)
SELECT count(*) FROM nadi.events_read((SELECT sid FROM tap_live WHERE i = :i), 0, 1000);
});
# a session made, used and ended during the run: younger than the retention
PostgreSQL::Test::Utils::append_to_file("$dir/churn.sql", q{
BEGIN;
SELECT session_id AS c FROM nadi.session_create('churn') \gset
INSERT INTO tap_churn VALUES (':c');
END;
SELECT 1 FROM nadi.command_enqueue(':c', 'message', '{"text": "c"}');
SELECT 1 FROM nadi.session_terminate(':c');
});

my ($out, $err) = ('', '');
my $bench = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '4', '-j', '2', '-T', '8', '-f', "$dir/live.sql\@6",
	  '-f', "$dir/read.sql\@3", '-f', "$dir/churn.sql\@1", '-d', $node->connstr('postgres') ],
	'>', \$out, '2>', \$err);

my ($rounds, $purged, $during) = (0, 0, 0);
# purge in small batches while the clients run, then until nothing is left
while (1)
{
	$bench->pump_nb;
	my $running = $bench->pumpable;
	my $r = $node->safe_psql('postgres',
		"CALL nadi.purge('1 hour', batch_size => 10, max_batches => 2)");
	my ($sessions) = split /\|/, $r;
	$rounds++;
	$purged += $sessions;
	$during += $sessions if $running;
	last if !$running && $sessions == 0;
	die 'purge does not end' if $rounds > 10000;
}
ok($bench->finish, 'pgbench ran without a failed client') or diag($err);
like($out, qr/number of failed transactions: 0 /, 'no transaction of the workload failed')
  or diag($out);
cmp_ok($during, '>', 0, "sessions were purged while the workload ran ($during of $purged, $rounds rounds)");
note($out);

my $q = sub { $node->safe_psql('postgres', shift) };

is($q->(q{SELECT count(*) FROM tap_live l JOIN nadi.sessions s ON s.session_id = l.sid
          WHERE s.state = 'active'}), $n_live, 'every live session is there and active');
is($q->(q{SELECT count(*) FROM nadi.sessions s
          WHERE s.tenant_id IN ('live', 'churn')
            AND (SELECT count(*) FROM nadi.events e WHERE e.session_id = s.session_id) <> s.last_seq
             OR (SELECT coalesce(max(seq), 0) FROM nadi.events e WHERE e.session_id = s.session_id) <> s.last_seq}),
   '0', 'every live and recently ended session has its events gapless from 1 to last_seq');
my $cmds = $q->('SELECT count(*) FROM tap_cmds');
cmp_ok($cmds, '>', 0, "the workload committed $cmds commands");
is($q->(q{SELECT count(*) FROM tap_cmds t
          WHERE NOT EXISTS (SELECT 1 FROM nadi.command_inbox c
                            WHERE c.session_id = t.sid AND c.command_id = t.command_id)}),
   '0', 'every command the workload committed is there');
my $churn = $q->('SELECT count(*) FROM tap_churn');
is($q->(q{SELECT count(*) FROM tap_churn t JOIN nadi.sessions s ON s.session_id = t.sid}),
   $churn, "all $churn sessions that ended during the run (younger than the retention) are there");

is($purged, $n_old - $n_frozen - 1, 'the purges removed every old session not held');
is($q->(q{SELECT count(*) FROM tap_old o JOIN nadi.sessions s ON s.session_id = o.sid}),
   $n_frozen + 1, 'the held session and the held tenant\'s sessions are kept');
is($q->(qq{SELECT count(*) FROM nadi.events WHERE session_id = '$held'}),
   $q->(qq{SELECT last_seq FROM nadi.sessions WHERE session_id = '$held'}), 'the held session is whole');
is($q->(q{SELECT count(*) FROM tap_old o JOIN nadi.purged_sessions p ON p.session_id = o.sid}),
   $n_old - $n_frozen - 1, 'each purged session left a tombstone');
is($q->(q{SELECT (SELECT count(*) FROM nadi.events e WHERE NOT EXISTS
                    (SELECT 1 FROM nadi.sessions s WHERE s.session_id = e.session_id))
               + (SELECT count(*) FROM nadi.command_inbox c WHERE NOT EXISTS
                    (SELECT 1 FROM nadi.sessions s WHERE s.session_id = c.session_id))
               + (SELECT count(*) FROM nadi.session_leases l WHERE NOT EXISTS
                    (SELECT 1 FROM nadi.sessions s WHERE s.session_id = l.session_id))}),
   '0', 'no event, command or lease is left without its session');

# released, the holds let the next purge take the rest
$q->("SELECT nadi.hold_release('old', '$held'), nadi.hold_release('frozen', NULL)");
my ($rest) = split /\|/, $q->("CALL nadi.purge('1 hour')");
is($rest, $n_frozen + 1, 'after the holds are released the next purge takes what they kept');

done_testing();

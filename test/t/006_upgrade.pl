# The upgrade path, for every released version (test/releases.txt): a
# database created at that version (its scripts as released: checked
# against the release commit when there is a git history, against the
# digests in test/releases.txt everywhere) with sessions, commands and
# events in it is updated with ALTER EXTENSION nadi UPDATE; afterwards its
# extension objects are exactly those of a fresh CREATE EXTENSION nadi, its
# old rows are still readable, the work queued before the upgrade is still
# claimed and completed, the pg_regress suite passes on a database that was
# updated, and a real cell (the embedded cell workers, after a restart)
# finishes the commands its sessions left open at the old version.
#
# Later schema changes reuse this test as it is: the catalog comparison
# below covers every object the extension owns, whatever the version; a new
# release is one more line in test/releases.txt.
use Digest::SHA;
use strict;
use warnings;
use File::Spec;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($current) = slurp_file('nadi.control') =~ /^default_version\s*=\s*'([^']+)'/m;
my @releases;    # [version, commit, {script => sha256}]
for my $line (split /\n/, slurp_file('test/releases.txt'))
{
	next if $line =~ /^\s*(#|$)/;
	my ($v, $commit, @scripts) = split ' ', $line;
	push @releases, [ $v, $commit, { map { split /:/, $_, 2 } @scripts } ];
}
ok(@releases >= 1, 'test/releases.txt names the released versions: '
	  . join(', ', map { "$_->[0] ($_->[1])" } @releases));

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'nadi'
nadi.broker = off
nadi.cell_workers = 0
# the lease taken at the old version must outlive the checks below (reset for pg_regress)
nadi.lease_ttl = '1h'
});
$node->start;

# --- the installed scripts of each release are the released ones ---
my $sharedir = `pg_config --sharedir`;
chomp $sharedir;
my $have_git = system('git rev-parse --git-dir >/dev/null 2>&1') == 0;
for my $r (@releases)
{
	my ($v, $commit, $scripts) = @$r;
	ok(exists $scripts->{"nadi--$v.sql"} || grep(/^nadi--[0-9.]+--\Q$v\E\.sql$/, keys %$scripts),
		"release $v lists a script that installs or reaches $v");
	for my $f (sort keys %$scripts)
	{
		my $installed = slurp_file("$sharedir/extension/$f");
		# the digest, so that the check runs also where there is no git
		# history (make test as root copies the tree without .git)
		is(Digest::SHA::sha256_hex($installed), $scripts->{$f},
			"the installed $f has the digest of the one released in $v");
		is(Digest::SHA::sha256_hex(slurp_file("sql/$f")), $scripts->{$f},
			"the tree's sql/$f has that digest too (released scripts never change)");
	}
  SKIP:
	{
		skip "no git history here to read $commit from", 2 unless $have_git;
		my @at = sort grep { /^nadi--.*\.sql$/ } map { s{^sql/}{}r }
		  split /\n/, `git ls-tree --name-only $commit sql/`;
		is(join(' ', @at), join(' ', sort keys %$scripts),
			"test/releases.txt lists every script of $v as of $commit");
		my $same = 1;
		for my $f (@at)
		{
			my $released = `git show $commit:sql/$f`;
			$same = 0 unless $? == 0 && exists $scripts->{$f}
			  && $released eq slurp_file("$sharedir/extension/$f");
		}
		ok($same, "the installed scripts of $v are the ones of $commit");
	}
}

# --- database fresh: a fresh install of the current version ---
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION nadi');
is($node->safe_psql('fresh', "SELECT extversion FROM pg_extension WHERE extname = 'nadi'"),
	$current, "a fresh CREATE EXTENSION nadi is $current");

# --- the extension's objects, described from the catalogs ---
# One line per fact: every member object (pg_depend deptype 'e'), functions
# with their whole definition (body, volatility, SECURITY DEFINER,
# search_path), owner and ACL, relations with options, RLS flags, owner and
# ACL, columns (order, type, default, NOT NULL, identity, ACL), constraints,
# indexes, policies, triggers, sequences, enum labels in order, the
# configuration tables pg_dump keeps, and the schema's ACL.
my $describe = q{
WITH ext AS (SELECT oid, extconfig, extcondition, extnamespace, extrelocatable
             FROM pg_extension WHERE extname = 'nadi'),
m AS (SELECT d.classid, d.objid, d.objsubid FROM pg_depend d, ext
      WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'),
types AS (SELECT t.* FROM pg_type t JOIN m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid),
rels AS (SELECT objid AS oid FROM m WHERE classid = 'pg_class'::regclass
         UNION SELECT typrelid FROM types WHERE typrelid <> 0),
lines AS (
    SELECT 'member ' || pg_describe_object(classid, objid, objsubid) AS line FROM m
  UNION ALL
    SELECT format(E'function %s owner=%s acl=%s\n%s', p.oid::regprocedure, p.proowner::regrole,
                  p.proacl, pg_get_functiondef(p.oid))
    FROM pg_proc p JOIN m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
  UNION ALL
    SELECT format('relation %s kind=%s owner=%s acl=%s options=%s rls=%s force_rls=%s persistence=%s',
                  c.oid::regclass, c.relkind, c.relowner::regrole, c.relacl, c.reloptions,
                  c.relrowsecurity, c.relforcerowsecurity, c.relpersistence)
    FROM pg_class c JOIN rels USING (oid)
  UNION ALL
    SELECT format('column %s #%s %s %s notnull=%s default=%s identity=%s generated=%s collation=%s acl=%s',
                  a.attrelid::regclass, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
                  a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated,
                  a.attcollation, a.attacl)
    FROM pg_attribute a JOIN rels r ON r.oid = a.attrelid
    LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
    SELECT format('constraint %s on %s%s: %s deferrable=%s validated=%s', co.conname,
                  co.conrelid::regclass, co.contypid::regtype, pg_get_constraintdef(co.oid),
                  co.condeferrable, co.convalidated)
    FROM pg_constraint co
    WHERE co.conrelid IN (SELECT oid FROM rels) OR co.contypid IN (SELECT oid FROM types)
  UNION ALL
    SELECT format('index %s', pg_get_indexdef(i.indexrelid)) FROM pg_index i
    WHERE i.indrelid IN (SELECT oid FROM rels)
  UNION ALL
    SELECT format('policy %s on %s cmd=%s permissive=%s roles=%s using=%s check=%s', po.polname,
                  po.polrelid::regclass, po.polcmd, po.polpermissive,
                  ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE r::regrole::text END
                        FROM unnest(po.polroles) r ORDER BY 1),
                  pg_get_expr(po.polqual, po.polrelid), pg_get_expr(po.polwithcheck, po.polrelid))
    FROM pg_policy po WHERE po.polrelid IN (SELECT oid FROM rels)
  UNION ALL
    SELECT format('trigger %s', pg_get_triggerdef(tg.oid)) FROM pg_trigger tg
    WHERE tg.tgrelid IN (SELECT oid FROM rels) AND NOT tg.tgisinternal
  UNION ALL
    SELECT format('sequence %s type=%s start=%s inc=%s min=%s max=%s cache=%s cycle=%s',
                  s.seqrelid::regclass, s.seqtypid::regtype, s.seqstart, s.seqincrement,
                  s.seqmin, s.seqmax, s.seqcache, s.seqcycle)
    FROM pg_sequence s WHERE s.seqrelid IN (SELECT oid FROM rels)
  UNION ALL
    SELECT format('type %s type=%s owner=%s acl=%s labels=%s', t.oid::regtype, t.typtype,
                  t.typowner::regrole, t.typacl,
                  ARRAY(SELECT e.enumlabel FROM pg_enum e WHERE e.enumtypid = t.oid
                        ORDER BY e.enumsortorder))
    FROM types t
  UNION ALL
    SELECT format('extension schema=%s relocatable=%s config=%s conditions=%s',
                  ext.extnamespace::regnamespace, ext.extrelocatable,
                  ARRAY(SELECT c::regclass::text FROM unnest(ext.extconfig) c ORDER BY 1),
                  ARRAY(SELECT x FROM unnest(ext.extcondition) x ORDER BY 1))
    FROM ext
  UNION ALL
    SELECT format('schema %s owner=%s acl=%s', n.nspname, n.nspowner::regrole, n.nspacl)
    FROM pg_namespace n, ext WHERE n.oid = ext.extnamespace
)
SELECT string_agg(line, E'\n----\n' ORDER BY line) FROM lines
};

my $desc_b = $node->safe_psql('fresh', $describe);
ok(length($desc_b) > 10000, 'the catalog description covers the extension (' . length($desc_b) . ' bytes)');
# The description must notice a difference (the comparison can fail).
$node->safe_psql('fresh', 'GRANT EXECUTE ON FUNCTION nadi.reap() TO nadi_edge');
isnt($node->safe_psql('fresh', $describe), $desc_b, 'a changed grant changes the description');
$node->safe_psql('fresh', 'REVOKE EXECUTE ON FUNCTION nadi.reap() FROM nadi_edge');
is($node->safe_psql('fresh', $describe), $desc_b, 'and revoking it restores it');

my $regress = File::Spec->catfile(`pg_config --pkglibdir` =~ s/\s+$//r,
	'pgxs', 'src', 'test', 'regress', 'pg_regress');
my ($tests) = slurp_file('Makefile') =~ /^REGRESS\s*=\s*(.+)$/m;
my %open;    # database => [session, command, text] left open at the old version

for my $r (@releases)
{
	my $v = $r->[0];
	my $db = 'upgraded_' . ($v =~ tr/./_/r);
	note("--- $db: $v with data, then updated to $current ---");
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, "CREATE EXTENSION nadi VERSION '$v'");
	is($node->safe_psql($db, "SELECT extversion FROM pg_extension WHERE extname = 'nadi'"),
		$v, "$db starts at $v");

	# The 1.0 API, which every later version keeps.
	my ($sid, $epoch, $c1, $c2, $other, $oc, $held, $hc) = split /\|/, $node->safe_psql($db, qq{
\\o /dev/null
SELECT nadi.cell_host_register('up-cell', 'http://127.0.0.1:1', 10);
SELECT nadi.sandbox_host_register('up-sbx', 'http://127.0.0.1:2', 10);
CREATE TEMP TABLE t AS SELECT (nadi.session_create('acme', '{"title": "before"}',
                                                    '{}', '{"require_approval": ["exec"]}')).session_id AS sid;
SELECT nadi.place(sid) FROM t;
CREATE TEMP TABLE l AS SELECT (nadi.lease_acquire(sid, 'up-cell')).epoch FROM t;
SELECT nadi.event_append(sid, (SELECT epoch FROM l), 'agent.note', '{"text": "from $v"}') FROM t;
CREATE TEMP TABLE c AS SELECT
    (nadi.command_enqueue(sid, 'tool', '{"name": "echo", "args": {"text": "hi"}}', 'k1')).command_id AS c1,
    (nadi.command_enqueue(sid, 'message', '{"text": "second"}')).command_id AS c2
FROM t;
-- a session never placed, with a command queued
CREATE TEMP TABLE o AS SELECT (nadi.session_create('other')).session_id AS sid;
CREATE TEMP TABLE oc AS SELECT (nadi.command_enqueue(sid, 'message', '{"text": "queued before"}')).command_id AS c FROM o;
-- a session whose cell was running a command when the upgrade came
CREATE TEMP TABLE h AS SELECT (nadi.session_create('held')).session_id AS sid;
SELECT nadi.place(sid) FROM h;
CREATE TEMP TABLE hl AS SELECT (nadi.lease_acquire(sid, 'up-cell')).epoch FROM h;
CREATE TEMP TABLE hc AS SELECT (nadi.command_enqueue(sid, 'message', '{"text": "running before"}')).command_id AS c FROM h;
SELECT nadi.command_claim(sid, (SELECT epoch FROM hl)) FROM h;
\\o
SELECT t.sid, l.epoch, c.c1, c.c2, o.sid, oc.c, h.sid, hc.c FROM t, l, c, o, oc, h, hc;
});
	ok($sid && $epoch && $c1 && $c2 && $other && $oc && $held && $hc,
		"sessions, leases, commands (one running) and events made at $v");
	is($node->safe_psql($db, "SELECT status FROM nadi.command_get('$held', $hc)"),
		'running', "a command is running at $v when the upgrade comes");
	my $events = "SELECT string_agg(seq || ' ' || kind || ' ' || payload::text, E'\\n' ORDER BY seq) FROM nadi.events WHERE session_id = '$sid'";
	my $before = $node->safe_psql($db, $events);

	$node->safe_psql($db, 'ALTER EXTENSION nadi UPDATE');
	is($node->safe_psql($db, "SELECT extversion FROM pg_extension WHERE extname = 'nadi'"),
		$current, "ALTER EXTENSION nadi UPDATE brings $db from $v to $current");

	my $desc_a = $node->safe_psql($db, $describe);
	my %in_a = map { $_ => 1 } split /\n----\n/, $desc_a;
	my %in_b = map { $_ => 1 } split /\n----\n/, $desc_b;
	my @only_a = sort grep { !$in_b{$_} } keys %in_a;
	my @only_b = sort grep { !$in_a{$_} } keys %in_b;
	ok(!@only_a && !@only_b, "the database updated from $v has exactly the objects of a fresh install")
	  or diag("only in the updated database:\n" . join("\n", @only_a)
		  . "\nonly in the fresh one:\n" . join("\n", @only_b));

	# --- the old rows are still there and still work ---
	is($node->safe_psql($db, $events), $before, "the events written at $v read back the same");
	is($node->safe_psql($db,
		"SELECT tenant_id || ' ' || state || ' ' || (metadata->>'title') || ' ' || (policy->'require_approval'->>0) FROM nadi.session_get('$sid')"),
		'acme active before exec', "the session made at $v reads back");
	is($node->safe_psql($db, "SELECT command_id FROM nadi.command_claim('$sid', $epoch)"),
		$c1, "the command queued at $v is claimed after the upgrade");
	is($node->safe_psql($db,
		"SELECT status FROM nadi.command_complete('$sid', $c1, $epoch, '{\"echo\": \"hi\"}')"),
		'completed', "and completed, fenced by the epoch acquired at $v");
	is($node->safe_psql($db,
		"SELECT command_id = $c1 FROM nadi.command_enqueue('$sid', 'tool', '{\"name\": \"echo\", \"args\": {\"text\": \"hi\"}}', 'k1')"),
		't', "the idempotency key used at $v still returns the original command");
	is($node->safe_psql($db, "SELECT command_id FROM nadi.command_claim('$sid', $epoch)"),
		$c2, 'the next command follows in order');
	my ($rc, $out, $err) = $node->psql($db, "SELECT nadi.command_complete('$sid', $c2, $epoch - 1)");
	like($err, qr/not current/, 'a write with an older epoch is still fenced');
	is($node->safe_psql($db,
		"SELECT count(*) FROM nadi.command_list('$other') WHERE status = 'queued'"),
		'1', 'the other session keeps its queued command');

	# The old cell host goes away (drained; its lease on the held session
	# is given back, which requeues the running command): a real cell of
	# the current version takes over below.
	$node->safe_psql($db, "SELECT nadi.cell_host_set_state('up-cell', 'draining')");
	$node->safe_psql($db, "SELECT nadi.lease_release('$held', (SELECT epoch FROM nadi.session_leases WHERE session_id = '$held'))");
	is($node->safe_psql($db, "SELECT status FROM nadi.command_get('$held', $hc)"),
		'queued', 'the command running at the upgrade is queued again when its lease is given back');
	$open{$db} = [ [ $other, $oc, 'queued before' ], [ $held, $hc, 'running before' ] ];

	# --- the regression suite on an updated database ---
	# A database of its own, created at the old version and updated (the
	# one above holds hosts and sessions the suite's placement expectations
	# do not know about).
  SKIP:
	{
		skip 'pg_regress or the Makefile\'s REGRESS line not found', 1
		  unless -x $regress && $tests;
		my $rdb = "regress_$db";
		$node->safe_psql('postgres', "CREATE DATABASE $rdb");
		$node->safe_psql($rdb, "CREATE EXTENSION nadi VERSION '$v'");
		$node->safe_psql($rdb, 'ALTER EXTENSION nadi UPDATE');
		$node->append_conf('postgresql.conf', "nadi.lease_ttl = '10s'");
		$node->reload;
		my $outdir = PostgreSQL::Test::Utils::tempdir('regress');
		my $bindir = `pg_config --bindir` =~ s/\s+$//r;
		my $ok = PostgreSQL::Test::Utils::run_log([
				$regress, '--use-existing', "--dbname=$rdb",
				'--host=' . $node->host, '--port=' . $node->port,
				"--bindir=$bindir", '--inputdir=.', "--outputdir=$outdir",
				split(' ', $tests) ]);
		ok($ok, "pg_regress ($tests) passes on a database updated from $v")
		  or diag(-f "$outdir/regression.diffs" ? slurp_file("$outdir/regression.diffs") : 'no diffs');
	}
}

# --- a real cell finishes what the sessions of each old version left open ---
# The broker and one embedded cell worker of the current version, on each
# updated database in turn (nadi.database names one database).
for my $db (sort keys %open)
{
	$node->append_conf('postgresql.conf', qq{
nadi.database = '$db'
nadi.broker = on
nadi.cell_workers = 1
nadi.cell_host_id = 'up-real-cell'
});
	$node->restart;
	for my $o (@{ $open{$db} })
	{
		my ($s, $c, $text) = @$o;
		ok($node->poll_query_until($db,
				"SELECT status = 'completed' AND result->>'text' = 'You said: $text' FROM nadi.command_get('$s', $c)"),
			"$db: the command '$text' is completed by the real cell");
		is($node->safe_psql($db, "SELECT cell_host_id FROM nadi.sessions WHERE session_id = '$s'"),
			'up-real-cell', "$db: its session was placed on the real cell host");
	}
}
# Since the last start (a shutdown makes every worker exit with code 1).
my ($since_start) = slurp_file($node->logfile) =~ /.*database system is ready to accept connections(.*)\z/s;
unlike($since_start, qr/PANIC|terminated by signal|background worker .* exited/,
	'no crash and no worker exit in the server log since the last start');

$node->stop;
done_testing();

# The upgrade path: a database created at 1.0 (the released script, as of
# commit 3e2913f) with sessions, commands and events in it is updated with
# ALTER EXTENSION nadi UPDATE; afterwards its extension objects are exactly
# those of a fresh CREATE EXTENSION nadi, its old rows are still readable,
# the work queued before the upgrade is still claimed and completed, and the
# pg_regress suite passes on a database that was upgraded.
#
# Later schema changes reuse this test as it is: the catalog comparison
# below covers every object the extension owns, whatever the version.
use Digest::SHA;
use strict;
use warnings;
use File::Spec;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $released_commit = '3e2913f';

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'nadi'
nadi.broker = off
nadi.cell_workers = 0
# the lease taken at 1.0 must outlive the checks below (reset for pg_regress)
nadi.lease_ttl = '1h'
});
$node->start;

# --- the installed 1.0 script is the released one ---
my $sharedir = `pg_config --sharedir`;
chomp $sharedir;
my $installed = slurp_file("$sharedir/extension/nadi--1.0.sql");
# Its digest, so that the check runs also where there is no git history
# (make test as root copies the tree without .git).
is(Digest::SHA::sha256_hex($installed),
	'a7b93f08f313bc6c3d6dc3f8ae970c71fbf7da9941aeb90c93e53b5e4718814e',
	'the installed nadi--1.0.sql has the digest of the released one');
my $have_git = system("git rev-parse --verify -q $released_commit^{commit} >/dev/null 2>&1") == 0;
SKIP:
{
	skip "no git history here to read $released_commit from", 1 unless $have_git;
	my $released = `git show $released_commit:sql/nadi--1.0.sql`;
	ok($? == 0 && $installed eq $released,
		"the installed nadi--1.0.sql is the released one ($released_commit)");
}

# --- database A: 1.0 with data, then updated ---
$node->safe_psql('postgres', 'CREATE DATABASE upgraded');
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('upgraded', "CREATE EXTENSION nadi VERSION '1.0'");
is($node->safe_psql('upgraded', "SELECT extversion FROM pg_extension WHERE extname = 'nadi'"),
	'1.0', 'database A starts at 1.0');

my ($sid, $epoch, $c1, $c2, $other) = split /\|/, $node->safe_psql('upgraded', q{
\o /dev/null
SELECT nadi.cell_host_register('up-cell', 'http://127.0.0.1:1', 10);
SELECT nadi.sandbox_host_register('up-sbx', 'http://127.0.0.1:2', 10);
CREATE TEMP TABLE t AS SELECT (nadi.session_create('acme', '{"title": "before"}',
                                                    '{}', '{"require_approval": ["exec"]}')).session_id AS sid;
SELECT nadi.place(sid) FROM t;
CREATE TEMP TABLE l AS SELECT (nadi.lease_acquire(sid, 'up-cell')).epoch FROM t;
SELECT nadi.event_append(sid, (SELECT epoch FROM l), 'agent.note', '{"text": "from 1.0"}') FROM t;
CREATE TEMP TABLE c AS SELECT
    (nadi.command_enqueue(sid, 'tool', '{"name": "echo", "args": {"text": "hi"}}', 'k1')).command_id AS c1,
    (nadi.command_enqueue(sid, 'message', '{"text": "second"}')).command_id AS c2
FROM t;
CREATE TEMP TABLE o AS SELECT (nadi.session_create('other')).session_id AS sid;
SELECT nadi.command_enqueue(sid, 'message', '{"text": "queued before"}') FROM o;
\o
SELECT t.sid, l.epoch, c.c1, c.c2, o.sid FROM t, l, c, o;
});
ok($sid && $epoch && $c1 && $c2 && $other, 'sessions, a lease, commands and events made at 1.0');
my $before = $node->safe_psql('upgraded',
	"SELECT string_agg(seq || ' ' || kind || ' ' || payload::text, E'\\n' ORDER BY seq) FROM nadi.events WHERE session_id = '$sid'");

$node->safe_psql('upgraded', 'ALTER EXTENSION nadi UPDATE');
is($node->safe_psql('upgraded', "SELECT extversion FROM pg_extension WHERE extname = 'nadi'"),
	'1.1', 'ALTER EXTENSION nadi UPDATE brings A to 1.1');

# --- database B: a fresh install ---
$node->safe_psql('fresh', 'CREATE EXTENSION nadi');
is($node->safe_psql('fresh', "SELECT extversion FROM pg_extension WHERE extname = 'nadi'"),
	'1.1', 'a fresh CREATE EXTENSION nadi is 1.1');

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

my $desc_a = $node->safe_psql('upgraded', $describe);
my $desc_b = $node->safe_psql('fresh', $describe);
ok(length($desc_b) > 10000, 'the catalog description covers the extension (' . length($desc_b) . ' bytes)');
my %in_a = map { $_ => 1 } split /\n----\n/, $desc_a;
my %in_b = map { $_ => 1 } split /\n----\n/, $desc_b;
my @only_a = sort grep { !$in_b{$_} } keys %in_a;
my @only_b = sort grep { !$in_a{$_} } keys %in_b;
ok(!@only_a && !@only_b, 'the upgraded database has exactly the objects of a fresh install')
  or diag("only in the upgraded database:\n" . join("\n", @only_a)
	  . "\nonly in the fresh one:\n" . join("\n", @only_b));
# The description must notice a difference (the comparison can fail).
$node->safe_psql('fresh', 'GRANT EXECUTE ON FUNCTION nadi.reap() TO nadi_edge');
isnt($node->safe_psql('fresh', $describe), $desc_b, 'a changed grant changes the description');
$node->safe_psql('fresh', 'REVOKE EXECUTE ON FUNCTION nadi.reap() FROM nadi_edge');
is($node->safe_psql('fresh', $describe), $desc_b, 'and revoking it restores it');

# --- the old rows are still there and still work ---
is($node->safe_psql('upgraded',
	"SELECT string_agg(seq || ' ' || kind || ' ' || payload::text, E'\\n' ORDER BY seq) FROM nadi.events WHERE session_id = '$sid'"),
	$before, 'the events written at 1.0 read back the same');
is($node->safe_psql('upgraded',
	"SELECT tenant_id || ' ' || state || ' ' || (metadata->>'title') || ' ' || (policy->'require_approval'->>0) FROM nadi.session_get('$sid')"),
	'acme active before exec', 'the session made at 1.0 reads back');
is($node->safe_psql('upgraded', "SELECT command_id FROM nadi.command_claim('$sid', $epoch)"),
	$c1, 'the command queued at 1.0 is claimed after the upgrade');
is($node->safe_psql('upgraded',
	"SELECT status FROM nadi.command_complete('$sid', $c1, $epoch, '{\"echo\": \"hi\"}')"),
	'completed', 'and completed, fenced by the epoch acquired at 1.0');
is($node->safe_psql('upgraded',
	"SELECT command_id = $c1 FROM nadi.command_enqueue('$sid', 'tool', '{\"name\": \"echo\", \"args\": {\"text\": \"hi\"}}', 'k1')"),
	't', 'the idempotency key used at 1.0 still returns the original command');
is($node->safe_psql('upgraded', "SELECT command_id FROM nadi.command_claim('$sid', $epoch)"),
	$c2, 'the next command follows in order');
my ($rc, $out, $err) = $node->psql('upgraded', "SELECT nadi.command_complete('$sid', $c2, $epoch - 1)");
like($err, qr/not current/, 'a write with an older epoch is still fenced');
is($node->safe_psql('upgraded',
	"SELECT count(*) FROM nadi.command_list('$other') WHERE status = 'queued'"),
	'1', 'the other session keeps its queued command');

# --- the regression suite on an upgraded database ---
# A database of its own, created at 1.0 and updated (database A holds hosts
# and sessions the suite's placement expectations do not know about).
my $regress = File::Spec->catfile(`pg_config --pkglibdir` =~ s/\s+$//r,
	'pgxs', 'src', 'test', 'regress', 'pg_regress');
my ($tests) = slurp_file('Makefile') =~ /^REGRESS\s*=\s*(.+)$/m;
SKIP:
{
	skip 'pg_regress or the Makefile\'s REGRESS line not found', 1
	  unless -x $regress && $tests;
	$node->safe_psql('postgres', 'CREATE DATABASE regress_upgraded');
	$node->safe_psql('regress_upgraded', "CREATE EXTENSION nadi VERSION '1.0'");
	$node->safe_psql('regress_upgraded', 'ALTER EXTENSION nadi UPDATE');
	$node->append_conf('postgresql.conf', "nadi.lease_ttl = '10s'");
	$node->reload;
	my $outdir = PostgreSQL::Test::Utils::tempdir('regress');
	my $bindir = `pg_config --bindir` =~ s/\s+$//r;
	my $ok = PostgreSQL::Test::Utils::run_log([
			$regress, '--use-existing', '--dbname=regress_upgraded',
			'--host=' . $node->host, '--port=' . $node->port,
			"--bindir=$bindir", '--inputdir=.', "--outputdir=$outdir",
			split(' ', $tests) ]);
	ok($ok, "pg_regress ($tests) passes on a database updated from 1.0")
	  or diag(-f "$outdir/regression.diffs" ? slurp_file("$outdir/regression.diffs") : 'no diffs');
}

$node->stop;
done_testing();

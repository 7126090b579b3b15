# Property-based test of the SQL API: a seeded random interleaving of
# enqueue (with idempotency keys, some repeated), claim, complete, fail,
# await_permission, approve/deny, cancel, lease renew/release/expiry, reap,
# takeover, placement and termination, across several sessions and two cell
# hosts, driven through one psql connection with the embedded workers off.
# A model in Perl (test/perl/NadiModel.pm) predicts every outcome; after
# every step the database must agree with it: no command lost or applied
# twice, per-session order, one command in flight per session, gapless and
# strictly increasing event sequences, and every write under a stale epoch
# refused with NA005.
#
#   NADI_PROP_SEED=<n>   seed (printed; default fixed, so make test repeats)
#   NADI_PROP_STEPS=<n>  number of steps (default 2000)
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use NadiModel;

my $seed = $ENV{NADI_PROP_SEED} // 20261206;
my $steps = $ENV{NADI_PROP_STEPS} // 2000;
die "NADI_PROP_SEED must be a positive integer\n" unless $seed =~ /^[0-9]+$/ && $seed > 0;
die "NADI_PROP_STEPS must be a positive integer\n" unless $steps =~ /^[0-9]+$/ && $steps > 0;
diag("property test: NADI_PROP_SEED=$seed NADI_PROP_STEPS=$steps");

my $node = PostgreSQL::Test::Cluster->new('property');
$node->init;
# Time only moves when the test moves nadi.clock_offset, in steps of 20
# minutes: a lease (60 min) is expired after three steps and not before,
# a retry (10 min backoff) is due after one, whatever the real time the
# run takes (well under ten minutes).  Hosts heartbeat after every step of
# the clock, so they never die.
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'nadi'
nadi.broker = off
nadi.cell_workers = 0
nadi.notifier = off
nadi.lease_ttl = '60min'
nadi.host_ttl = '12d'
nadi.max_attempts = 3
nadi.retry_backoff_base = '10min'
nadi.retry_backoff_max = '10min'
nadi.crash_budget = 1
nadi.max_queued_commands = 6
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION nadi');

# One psql for the whole run, driven by hand: PostgreSQL::Test::BackgroundPsql
# logs every result, which here would be millions of lines.
my ($in, $out, $err) = ('', '', '');
my $timer = IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default);
my $psql = IPC::Run::start(
	[ 'psql', '-XAtq', '-v', 'VERBOSITY=verbose', '-d', $node->connstr('postgres') ],
	'<', \$in, '>', \$out, '2>', \$err, $timer);

# sql(QUERY) → (sqlstate or undef, [rows of fields], error text)
my $queries = 0;
sub sql
{
	my ($q) = @_;
	my $mark = 'nadi-prop-' . ++$queries;
	($out, $err) = ('', '');
	$in .= "$q\n;\n\\echo $mark\n\\warn $mark\n";
	$timer->start($PostgreSQL::Test::Utils::timeout_default);
	$psql->pump until ($out =~ /^$mark\n/m && $err =~ /^$mark\n/m) || $timer->is_expired;
	die "psql timed out on [$q]" if $timer->is_expired;
	(my $o = $out) =~ s/^$mark\n//m;
	(my $e = $err) =~ s/^$mark\n//m;
	return ($1, [], $e) if $e =~ /ERROR:\s+([0-9A-Z]{5}):/;
	die "unexpected psql output on stderr for [$q]: $e" if $e =~ /\S/;
	my @rows = map { [ split /\|/, $_, -1 ] } grep { length } split /\n/, $o;
	return (undef, \@rows, '');
}
sql('\\set VERBOSITY verbose');
sql('SET client_min_messages = warning');

my $model = NadiModel->new(seed => $seed, sql => \&sql, hosts => [ 'prop-a', 'prop-b' ]);
$model->setup;

my $failure;
for my $i (1 .. $steps)
{
	my $what = eval { $model->step($i) };
	if (!defined $what)
	{
		$failure = $@ || "step $i failed";
		last;
	}
	my $bad = eval { $model->check($i % 200 == 0 || $i == $steps) } // $@;
	if ($bad)
	{
		$failure = "after step $i ($what): $bad";
		last;
	}
}

if ($failure)
{
	diag("reproduce with NADI_PROP_SEED=$seed NADI_PROP_STEPS=$steps");
	diag("last steps:\n" . join("\n", $model->history(25)));
}
is($failure, undef, "$steps steps with seed $seed: the database agrees with the model after every step");

# the run must have gone through the interesting paths, or it proves little
my %n = $model->counts;
note(join(', ', map { "$_=$n{$_}" } sort keys %n));
for my $k (
	qw(enqueued idempotent_replay idempotency_conflict claimed completed
	failed_retry dead waiting approved denied cancelled cancel_requested
	stale_refused takeover reaped_lease released crash_failed terminated limit_refused))
{
	cmp_ok($n{$k} // 0, '>', 0, "the run exercised $k") if $steps >= 2000;
}

# order per session over the whole run: first starts in command_id order,
# completions in command_id order
my (undef, $rows) = sql(q{
SELECT count(*) FROM (
  SELECT session_id, command_id,
         lag(command_id) OVER (PARTITION BY session_id ORDER BY seq) AS prev
  FROM (SELECT DISTINCT ON (session_id, command_id) session_id, command_id, seq
        FROM nadi.events WHERE kind = 'command.started' ORDER BY session_id, command_id, seq) f
) x WHERE prev > command_id
});
is($rows->[0][0], '0', 'per session, commands were first started in command_id order');
(undef, $rows) = sql(q{
SELECT count(*) FROM (
  SELECT command_id, lag(command_id) OVER (PARTITION BY session_id ORDER BY seq) AS prev
  FROM nadi.events WHERE kind = 'command.completed'
) x WHERE prev > command_id
});
is($rows->[0][0], '0', 'per session, commands completed in command_id order');
note("$queries queries");

$in .= "\\q\n";
$psql->finish;
$node->stop;
done_testing();

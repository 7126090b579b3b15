# A batch enqueue that touches many sessions tells listeners about each of
# them, not "*": the list of sessions a transaction hands the notifier grows
# with the transaction (up to half the notifier's ring), so a batch of 200
# sessions is 200 session ids on nadi_events.  "*" would make every edge
# re-read every feed it serves.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $node = PostgreSQL::Test::Cluster->new('notify');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'nadi'
nadi.database = 'postgres'
nadi.broker = off
nadi.cell_workers = 0
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION nadi');
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'nadi notifier'")
  or die 'no notifier';

my @sids = split /\n/, $node->safe_psql('postgres',
	"SELECT (nadi.session_create('acme')).session_id FROM generate_series(1, 200)");
is(scalar @sids, 200, '200 sessions');

my ($stdout, $stderr) = ('', '');
my $listener = IPC::Run::start(
	[ 'psql', '-X', '-A', '-t', '-d', $node->connstr('postgres') ],
	'<', \"LISTEN nadi_events; SELECT pg_sleep(5); SELECT 'done';\n",
	'>', \$stdout, '2>', \$stderr);
# the batch only once the listener listens (IPC::Run feeds its input when pumped)
my $deadline = time + 60;
while ($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(5)%'") ne '1')
{
	die 'the listener did not start' if time > $deadline;
	$listener->pump_nb;
	select(undef, undef, undef, 0.1);
}
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM nadi.command_enqueue_many((
		SELECT jsonb_agg(jsonb_build_object('session_id', session_id, 'type', 'message',
		                                    'payload', '{"text": "hi"}'::jsonb))
		FROM nadi.sessions))}), '200', 'one batch enqueued a command in each of 200 sessions');
$listener->finish;

my %heard;
$heard{$1}++ while $stdout =~ /Asynchronous notification "nadi_events" with payload "([^"]*)" received/g;
ok(!exists $heard{'*'}, 'no "*" (re-read everything) notification')
  or diag($stdout);
is(scalar(grep { exists $heard{$_} } @sids), 200, 'each of the 200 sessions notified by id')
  or diag($stdout);

done_testing();

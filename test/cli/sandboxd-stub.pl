#!/usr/bin/perl
# sandboxd-stub.pl READY-FILE LOG — a loopback endpoint that answers the
# cells like nadi-sandboxd for test/suites/33-cli (no root, no containers):
# it lists two tools, makes sandboxes, upper-cases for "uppercase" and, for
# "exec", sleeps when argv is ["sleep", N] (N <= 20) and echoes argv on
# stdout.  Each connection is served by a process of its own, so a slow
# exec holds up nothing else.  Writes its port to READY-FILE; ends on TERM.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use JSON::PP;
use NadiProvider;

my ($ready, $log) = @ARGV;
die "usage: $0 READY-FILE LOG\n" unless $ready && $log;
my $ok = { exit_status => 0, signal => undef, stderr => '', truncated => JSON::PP::false,
	timed_out => JSON::PP::false, oom_killed => JSON::PP::false, ok => JSON::PP::true };

sub answer
{
	my ($head, $body) = @_;
	my ($method, $path) = $head =~ m{^(\S+) (\S+)};
	return ('200 OK', encode_json({ tools => [
		{ name => 'uppercase', timeout_ms => 30000, side_effects => JSON::PP::false },
		{ name => 'exec', timeout_ms => 60000, side_effects => JSON::PP::true } ] }))
	  if $method eq 'GET' && $path eq '/v1/tools';
	return ('201 Created', encode_json({ id => "sbx-$$-" . int(rand(1e9)) }))
	  if $method eq 'POST' && $path eq '/v1/sandboxes';
	return ('200 OK', '{}') unless $method eq 'POST' && $path =~ m{^/v1/sandboxes/[\w-]+/tools/(\w+)$};
	my $tool = $1;
	my $args = eval { decode_json($body)->{args} } // {};
	if ($tool eq 'uppercase')
	{
		return ('200 OK', encode_json({ %$ok, stdout => '', result => { text => uc($args->{text} // '') } }));
	}
	my @argv = @{ $args->{argv} // [] };
	sleep($argv[1]) if @argv == 2 && $argv[0] eq 'sleep' && $argv[1] =~ /^\d+$/ && $argv[1] <= 20;
	return ('200 OK', encode_json({ %$ok, stdout => "ran: @argv\n", result => undef }));
}

my ($port) = NadiProvider::start($log, \&answer, 0, 1);
open(my $fh, '>', "$ready.tmp") or die "$ready: $!";
print $fh "$port\n";
close $fh;
rename("$ready.tmp", $ready) or die "$ready: $!";
$SIG{TERM} = $SIG{INT} = sub { exit 0 };    # NadiProvider's END stops the endpoint
sleep 1 while 1;

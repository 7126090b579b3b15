# A loopback HTTP endpoint for the TAP tests that answers like a model
# provider (chat completions) or a sandbox host: it records every request
# (head and body) in a log file and answers what a callback decides.  Used by
# test/t/003_model_provider.pl, test/t/004_model_via_proxy.pl,
# test/t/007_tool_calls.pl and test/t/015_message_while_running.pl;
# test/cli/sse-count-proxy.pl relays through it.
package NadiProvider;

use strict;
use warnings;
use IO::Socket::INET;

# endpoints this process started: stopped when it exits, also when a test dies
my @started;
my $owner = $$;
END { kill 'KILL', @started if $$ == $owner && @started; }

# start($log, sub { my ($head, $body, $conn) = @_; return ($status_line, $json) }, $port, $concurrent)
# A callback that returns nothing hangs up without answering (after reading
# the whole request); $conn is the client's connection (see wait_hangup).
# $port: listen there (default: any free port).  $concurrent: each connection
# is served by a process of its own, so slow answers do not hold up others
# (by default one request at a time).
# Returns ($port, $pid); stop($pid) ends it.
sub start
{
	my ($log, $answer, $want_port, $concurrent) = @_;
	my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $want_port // 0, Listen => 64,
		ReuseAddr => 1)
	  or die "listen: $!";
	my $port = $listen->sockport;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid)
	{
		push @started, $pid;
		return ($port, $pid);
	}
	# the test harness reads the test's output to its end: the endpoint
	# (and what it forks) must not hold it open
	open(STDOUT, '>', '/dev/null');
	open(STDERR, '>', '/dev/null');
	local $SIG{CHLD} = 'IGNORE' if $concurrent;
	while (1)
	{
		my $c = $listen->accept;
		if (!$c)
		{
			next if $!{EINTR};
			last;
		}
		if ($concurrent)
		{
			my $child = fork();
			die "fork: $!" unless defined $child;
			if ($child)
			{
				close $c;
				next;
			}
			close $listen;
		}
		my ($head, $body, $len) = ('', '', 0);
		while (my $line = <$c>)
		{
			$head .= $line;
			$len = $1 if $line =~ /^Content-Length:\s*(\d+)/i;
			last if $line eq "\r\n";
		}
		read($c, $body, $len) if $len;
		open(my $fh, '>>', $log) or die "$log: $!";
		print $fh $head, $body, "\n----\n";
		close $fh;
		my ($status, $json) = $answer->($head, $body, $c);
		if (defined $status)
		{
			print $c "HTTP/1.1 $status\r\nContent-Type: application/json\r\nContent-Length: "
			  . length($json) . "\r\nConnection: close\r\n\r\n$json";
		}
		close $c;
		exit 0 if $concurrent;
	}
	exit 0;
}

# wait_hangup($conn, $seconds): from a callback, hold the request until the
# client closes the connection or $seconds pass.  Returns 1 if the client
# went away, 0 on the bound.
sub wait_hangup
{
	my ($conn, $seconds) = @_;
	my $until = time() + $seconds;
	my $left;
	while (($left = $until - time()) > 0)
	{
		my $rin = '';
		vec($rin, fileno($conn), 1) = 1;
		next if select(my $rout = $rin, undef, undef, $left) <= 0;
		my $n = sysread($conn, my $buf, 4096);
		return 1 if !$n;
	}
	return 0;
}

# requests($log): every request the endpoint logged, as
# [method, path, authorization header, body]
sub requests
{
	my ($log) = @_;
	return () unless -e $log;
	open(my $fh, '<', $log) or die "$log: $!";
	my $all = do { local $/; <$fh> };
	close $fh;
	return map {
		my ($head, $body) = /\A(.*?\r\n\r\n)(.*)\z/s;
		[ $head =~ m{^(\S+) (\S+)}, ($head =~ m{^Authorization: (.*?)\r$}mi)[0] // '', $body ]
	} grep { /\S/ } split /\n----\n/, $all;
}

sub stop
{
	my ($pid) = @_;
	kill 'TERM', $pid;
	waitpid($pid, 0);
}

# serve_until_term($ready, $port): for a helper script run by a suite: write
# $port to the file $ready (whole, through a rename), then wait for TERM or
# INT; the endpoints this process started stop with it (END above).
sub serve_until_term
{
	my ($ready, $port) = @_;
	open(my $fh, '>', "$ready.tmp") or die "$ready: $!";
	print $fh "$port\n";
	close $fh;
	rename("$ready.tmp", $ready) or die "$ready: $!";
	$SIG{TERM} = $SIG{INT} = sub { exit 0 };
	sleep 1 while 1;
}

1;

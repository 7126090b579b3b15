#!/usr/bin/perl
# sse-count-proxy.pl READY-FILE LOG UPSTREAM-PORT — a relay between a
# client and nadi-edge (127.0.0.1:UPSTREAM-PORT) for test/suites/33-cli, to
# see on the wire what `nadi tail` asks for and what the edge sends it.  It
# serves each connection in a process of its own (NadiProvider's loopback
# endpoint), reads the request, passes it on and relays the rest of the
# exchange unchanged, appending to LOG, one line each (C: the connection's
# process id):
#
#   C refused                             the edge did not take the connection
#   C request GET PATH last-event-id=V    the client's request (V: - if absent)
#   C status CODE                         the edge's answer
#   C id SEQ                              an event's "id:" line, written to LOG
#                                         before its bytes go on to the client
#   C closed                              the connection ended
#
# Chunked answers are de-chunked to find the lines.  Writes its port to
# READY-FILE; ends on TERM (connections end with their client).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use IO::Socket::INET;
use IO::Select;
use NadiProvider;

my ($ready, $log, $up_port) = @ARGV;
die "usage: $0 READY-FILE LOG UPSTREAM-PORT\n" unless $ready && $log && $up_port;

open(my $logfh, '>>', $log) or die "$log: $!";
sub note { syswrite($logfh, "$$ $_[0]\n") }

# relay($head, $body, $client): NadiProvider's callback; answers nothing itself
sub relay
{
	my ($req, $reqbody, $c) = @_;
	local $SIG{PIPE} = 'IGNORE';
	my $u = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $up_port);
	if (!$u)
	{
		note("refused");
		return;
	}
	my ($m, $p) = $req =~ /^(\S+) (\S+)/;
	my ($lei) = $req =~ /^Last-Event-ID:[ \t]*([^\r\n]*)/mi;
	note("request $m $p last-event-id=" . ($lei // '-'));
	syswrite($u, $req . $reqbody);
	my $sel = IO::Select->new($c, $u);
	# the answer: its head, then (chunked or not) the body's lines
	my ($head, $in_body, $chunked, $raw, $line) = ('', 0, 0, '', '');
	my $chunk_left = -1;    # bytes left in the current chunk; -1: a size line comes
  LOOP:
	while (1)
	{
		for my $s ($sel->can_read)
		{
			my $buf;
			last LOOP unless sysread($s, $buf, 65536);
			if ($s == $c)
			{
				syswrite($u, $buf) or last LOOP;
				next;
			}
			# the edge's bytes: note what they carry, then pass them on
			my $body = $buf;
			if (!$in_body)
			{
				$head .= $buf;
				next unless $head =~ /\r\n\r\n/;
				($head, $body) = split /\r\n\r\n/, $head, 2;
				my ($code) = $head =~ m{^HTTP/\S+ (\d+)};
				note("status " . ($code // '?'));
				$chunked = $head =~ /^Transfer-Encoding:[ \t]*chunked/mi;
				$in_body = 1;
				$buf = "$head\r\n\r\n$body";
			}
			if ($chunked)
			{
				$raw .= $body;
				$body = '';
				while (length $raw)
				{
					if ($chunk_left < 0)
					{
						last unless $raw =~ s/^\r?\n?([0-9a-fA-F]+)[^\r\n]*\r\n//;
						$chunk_left = hex($1);
						next;
					}
					my $take = substr($raw, 0, $chunk_left, '');
					$body .= $take;
					$chunk_left -= length $take;
					$chunk_left = -1 if $chunk_left == 0;
				}
			}
			$line .= $body;
			while ($line =~ s/^([^\n]*)\n//)
			{
				my $l = $1;
				note("id $1") if $l =~ /^id: ?(\d+)\r?$/;
			}
			syswrite($c, $buf) or last LOOP;
		}
	}
	note("closed");
	close $u;
	return;
}

my ($port) = NadiProvider::start('/dev/null', \&relay, 0, 1);
NadiProvider::serve_until_term($ready, $port);

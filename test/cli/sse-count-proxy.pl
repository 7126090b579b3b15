#!/usr/bin/perl
# sse-count-proxy.pl READY-FILE LOG UPSTREAM-PORT — a TCP relay between a
# client and nadi-edge (127.0.0.1:UPSTREAM-PORT) for test/suites/33-cli, to
# see on the wire what `nadi tail` asks for and what the edge sends it.
# Bytes pass through unchanged; it appends to LOG, one line each:
#
#   N refused                       the edge did not take connection N
#   N request GET PATH last-event-id=V   the client's request (V: - if absent)
#   N status CODE                   the edge's answer
#   N id SEQ                        an event's "id:" line, written to LOG
#                                   before its bytes go on to the client
#   N closed                        connection N ended
#
# (N counts the connections taken).  Chunked answers are de-chunked to find
# the lines.  Each connection is served by a process of its own.  Writes its
# port to READY-FILE; TERM ends it and its connections.
use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;

my ($ready, $log, $up_port) = @ARGV;
die "usage: $0 READY-FILE LOG UPSTREAM-PORT\n" unless $ready && $log && $up_port;

setpgrp(0, 0);
my $leader = $$;
$SIG{TERM} = $SIG{INT} = sub {
	if ($$ == $leader)
	{
		$SIG{TERM} = 'IGNORE';
		kill 'TERM', -$leader;
	}
	exit 0;
};
$SIG{CHLD} = 'IGNORE';
$SIG{PIPE} = 'IGNORE';

my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 16, ReuseAddr => 1)
  or die "listen: $!";
open(my $fh, '>', "$ready.tmp") or die "$ready: $!";
print $fh $listen->sockport, "\n";
close $fh;
rename("$ready.tmp", $ready) or die "$ready: $!";

open(my $logfh, '>>', $log) or die "$log: $!";
sub note { syswrite($logfh, "$_[0]\n") }

my $n = 0;
while (1)
{
	my $c = $listen->accept;
	if (!$c)
	{
		next if $!{EINTR};
		die "accept: $!";
	}
	$n++;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid)
	{
		close $c;
		next;
	}
	close $listen;
	relay($c, $n);
	exit 0;
}

sub relay
{
	my ($c, $n) = @_;
	my $u = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $up_port);
	if (!$u)
	{
		note("$n refused");
		close $c;
		return;
	}
	my $sel = IO::Select->new($c, $u);
	my ($req, $logged) = ('', 0);
	# the answer: its head, then (chunked or not) the body's lines
	my ($head, $in_body, $chunked, $raw, $line) = ('', 0, 0, '', '');
	my $chunk_left = -1;    # bytes left in the current chunk; -1: a size line comes
  LOOP:
	while (1)
	{
		for my $s ($sel->can_read)
		{
			my $buf;
			my $got = sysread($s, $buf, 65536);
			last LOOP unless $got;
			if ($s == $c)
			{
				if (!$logged)
				{
					$req .= $buf;
					if ($req =~ /\r\n\r\n/)
					{
						my ($m, $p) = $req =~ /^(\S+) (\S+)/;
						my ($lei) = $req =~ /^Last-Event-ID:[ \t]*([^\r\n]*)/mi;
						note("$n request $m $p last-event-id=" . ($lei // '-'));
						$logged = 1;
					}
				}
				syswrite($u, $buf) or last LOOP;
				next;
			}
			# the edge's bytes: note what they carry, then pass them on
			my $body = '';
			if (!$in_body)
			{
				$head .= $buf;
				next unless $head =~ /\r\n\r\n/;
				($head, $body) = split /\r\n\r\n/, $head, 2;
				my ($code) = $head =~ m{^HTTP/\S+ (\d+)};
				note("$n status " . ($code // '?'));
				$chunked = $head =~ /^Transfer-Encoding:[ \t]*chunked/mi;
				$in_body = 1;
			}
			else
			{
				$body = $buf;
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
				note("$n id $1") if $l =~ /^id: ?(\d+)\r?$/;
			}
			syswrite($c, $buf) or last LOOP;
		}
	}
	note("$n closed");
	close $u;
	close $c;
}

#!/usr/bin/perl
# hostile-edge.pl READY-FILE — an edge that answers `nadi` with text a
# hostile model, tool or tenant chose, for test/suites/34-cli-hostile: the
# event stream of any session (GET /v1/sessions/ID/events) is five events
# whose strings carry terminal control sequences (ESC, BEL, the C1 CSI
# U+009B: clear the screen, retitle the window, write the clipboard) and
# whose last one says the session failed; the session list
# (GET /v1/sessions) has a tenant with such a sequence.  The stream of
# session ...0002 is a line of 33 MiB.  Anything else is 404.  Writes its port to READY-FILE; ends on TERM.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../perl";
use NadiProvider;

my ($ready) = @ARGV;
die "usage: $0 READY-FILE\n" unless $ready;

# JSON text as sent: \u escapes that the client decodes to the raw bytes
my @events = (
	'{"seq":1,"kind":"model.reply","created_at":"2026-12-06T17:10:00Z",'
	  . '"payload":{"text":"hi \u001b[2J\u009b31m red \u001b]52;c;cHduZWQ=\u0007"}}',
	'{"seq":2,"kind":"tool.call","command_id":7,'
	  . '"payload":{"name":"ls\u001b]0;pwned\u0007","args":{"path":"\u009b1;1H"}}}',
	'{"seq":3,"kind":"tool.error","command_id":7,'
	  . '"payload":{"code":"E\u001b[5m","message":"no \u001b]0;pwned\u0007 here"}}',
	'{"seq":4,"kind":"x\u001b[31mkind","payload":{"a":1}}',
	'{"seq":5,"kind":"session.state","payload":{"from":"active\u009b2J","to":"failed"}}',
);
my $sessions = '{"sessions":[{"id":"00000000-0000-4000-8000-000000000001","state":"failed",'
  . '"tenant_id":"t\u001b]0;pwned\u0007","updated_at":"2026-12-06T17:10:00Z"}]}';

sub answer
{
	my ($head, $body, $c) = @_;
	my ($path) = $head =~ /^GET (\S+)/;
	$path //= '';
	if ($path =~ m{^/v1/sessions/0{8}-0{4}-4000-8000-0{11}2/events$})
	{
		# one line of 33 MiB, more than nadi takes, then nothing
		print $c "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
		  "data: ";
		my $mib = 'x' x (1 << 20);
		for (1 .. 33) { print $c $mib or last }
		return;
	}
	if ($path =~ m{^/v1/sessions/[0-9a-f-]{36}/events$})
	{
		my $sse = join('', map { "id: " . ($_ + 1) . "\ndata: $events[$_]\n\n" } 0 .. $#events);
		print $c "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
		  "retry: 100\n\n", $sse;
		return;
	}
	return ('200 OK', $sessions) if $path =~ m{^/v1/sessions(\?|$)};
	return ('404 Not Found', '{"title":"Not found","status":404}');
}

my ($port) = NadiProvider::start('/dev/null', \&answer, 0, 1);
NadiProvider::serve_until_term($ready, $port);

#!/usr/bin/perl
#
# gen-errcodes.pl — src/nadi_errcodes.h from src/errcodes.txt (see there for
# the format).  The build runs it; the output depends only on the input.
#
#   perl scripts/gen-errcodes.pl src/errcodes.txt > src/nadi_errcodes.h
#
# It refuses (exit 1, file:line on stderr) a malformed line, a SQLSTATE or
# macro listed twice, and a nadi code whose "code" is not its macro's name.

use strict;
use warnings;

die "usage: $0 errcodes.txt\n" unless @ARGV == 1;
my $file = $ARGV[0];
open(my $in, '<', $file) or die "$file: $!\n";

my (@rows, %seen_state, %seen_macro);
while (my $line = <$in>)
{
	chomp $line;
	next if $line =~ /^\s*(#|$)/ || $line =~ /^Section:/;
	my ($state, $macro, $status, $code, $title) = split(/\s+/, $line, 5);
	my $where = "$file:$.";

	die "$where: expected: sqlstate macro status code title\n"
	  unless defined $title && $title ne '';
	die "$where: \"$state\" is not a SQLSTATE (5 of [0-9A-Z], or a class like 08xxx)\n"
	  unless $state =~ /^[0-9A-Z]{5}$/ || $state =~ /^[0-9A-Z]{2}xxx$/;
	die "$where: \"$macro\" is not an ERRCODE_ name\n"
	  unless $macro =~ /^ERRCODE_[A-Z0-9_]+$/;
	die "$where: \"$status\" is not an error status (400-599)\n"
	  unless $status =~ /^[45][0-9][0-9]$/;
	die "$where: \"$code\" is not a code ([a-z][a-z0-9_]*)\n"
	  unless $code =~ /^[a-z][a-z0-9_]*$/;
	die "$where: the title may not contain \" or \\\n" if $title =~ /["\\]/;
	$title =~ s/\s+$//;
	if ($state =~ /^NA/ || $macro =~ /^ERRCODE_NADI_/)
	{
		die "$where: class NA goes with an ERRCODE_NADI_ macro and back\n"
		  unless $state =~ /^NA[0-9]{3}$/ && $macro =~ /^ERRCODE_NADI_(.+)$/;
		die "$where: the code of $macro is \"" . lc($1) . "\"\n"
		  unless $code eq lc($1);
	}
	die "$where: $state is listed twice\n" if $seen_state{$state}++;
	die "$where: $macro is listed twice\n" if $seen_macro{$macro}++;
	push @rows, [ $state, $macro, $status, $code, $title ];
}
close($in);
die "$file: no SQLSTATEs\n" unless @rows;

print <<'EOF';
/*
 * nadi_errcodes.h — generated from src/errcodes.txt by
 * scripts/gen-errcodes.pl; do not edit.
 */
#ifndef NADI_ERRCODES_H
#define NADI_ERRCODES_H

/* nadi's own SQLSTATEs, for ereport(... errcode(...)) (MAKE_SQLSTATE: postgres.h) */
EOF
for my $r (grep { $_->[1] =~ /^ERRCODE_NADI_/ } @rows)
{
	my ($state, $macro) = @$r;
	printf "#define %-40s MAKE_SQLSTATE(%s)\n", $macro,
	  join(',', map { "'$_'" } split(//, $state));
}

print "\n/* Each SQLSTATE as text, as libpq and ErrorData's unpack_sql_state() give it */\n";
for my $r (grep { $_->[0] !~ /x/ } @rows)
{
	my ($state, $macro) = @$r;
	(my $name = $macro) =~ s/^ERRCODE_/SQLSTATE_/;
	printf "#define %-40s \"%s\"\n", $name, $state;
}

print <<'EOF';

/*
 * The HTTP answer to each SQLSTATE: X(sqlstate, status, code, title), in the
 * list's order.  A sqlstate of the form "08xxx" stands for its whole class.
 */
#define NADI_ERRCODE_TABLE(X) \
EOF
for my $r (@rows)
{
	my ($state, $macro, $status, $code, $title) = @$r;
	print "\tX(\"$state\", $status, \"$code\", \"$title\") \\\n";
}
print <<'EOF';
	/* end */

#endif							/* NADI_ERRCODES_H */
EOF

# NadiModel — a model of nadi's sessions, leases and command inbox for the
# property test (test/t/005_property.pl).  It draws random operations from a
# seeded generator, predicts each outcome (the SQLSTATE, or the rows and
# state changes) from docs/SQL_API.md, runs it through the given sql()
# callback, and checks the database against the model after every step.
#
# Time is modelled in minutes of nadi.clock_offset (see the test for why
# that is deterministic): a lease renewed at T is expired from T + 60, a
# retry failed at T is due after any move of the clock.
package NadiModel;

use strict;
use warnings;

my $LEASE_MIN = 60;
my $MAX_ATTEMPTS = 3;
my $CRASH_BUDGET = 1;
my $MAX_OPEN = 6;
my $LIVE_SESSIONS = 4;
my $MAX_SESSIONS = 400;

sub new
{
	my ($class, %a) = @_;
	my $self = bless {
		rng => ($a{seed} & 0xffffffff) || 1,
		sql => $a{sql},
		hosts => $a{hosts},
		now => 0,
		sessions => {},      # sid → session model
		order => [],         # sids in creation order
		cmds => {},          # "sid/cmd" → command model
		view => {},          # host → sid → epoch it believes it holds
		counts => {},
		history => [],
		last_cmd_id => 0,
		serial => 0,
	}, $class;
	return $self;
}

# xorshift32: the same sequence on every platform for a given seed
sub rand_u32
{
	my ($self) = @_;
	my $x = $self->{rng};
	$x ^= ($x << 13) & 0xffffffff;
	$x ^= $x >> 17;
	$x ^= ($x << 5) & 0xffffffff;
	$self->{rng} = $x;
	return $x;
}
sub rnd { my ($self, $n) = @_; return $self->rand_u32 % $n; }
sub pick { my ($self, @l) = @_; return @l ? $l[ $self->rnd(scalar @l) ] : undef; }
sub chance { my ($self, $pct) = @_; return $self->rnd(100) < $pct; }

sub count { my ($self, $k) = @_; $self->{counts}{$k}++; }
sub counts { my ($self) = @_; return %{ $self->{counts} }; }
sub history
{
	my ($self, $n) = @_;
	my $h = $self->{history};
	return @$h > $n ? @$h[ -$n .. -1 ] : @$h;
}

sub run
{
	my ($self, $q) = @_;
	return $self->{sql}->($q);
}

sub must
{
	my ($self, $q) = @_;
	my ($st, $rows, $err) = $self->run($q);
	die "[$q] failed unexpectedly: $err" if defined $st;
	return $rows;
}

# ---------------------------------------------------------------------------
# Model helpers
# ---------------------------------------------------------------------------

sub is_live { my ($s) = @_; return $s->{state} !~ /^(terminated|failed)$/; }
sub accepts { my ($s) = @_; return $s->{state} =~ /^(pending|placed|active|suspended)$/; }

sub lease_ok
{
	my ($self, $s, $epoch) = @_;
	return defined $s->{holder} && $s->{epoch} == $epoch
	  && $self->{now} - $s->{renewed} < $LEASE_MIN;
}

sub expired
{
	my ($self, $s) = @_;
	return defined $s->{holder} && $self->{now} - $s->{renewed} >= $LEASE_MIN;
}

sub cmd { my ($self, $sid, $id) = @_; return $self->{cmds}{"$sid/$id"}; }
sub cmds_of { my ($self, $s) = @_; return map { $self->cmd($s->{sid}, $_) } @{ $s->{cmds} }; }
sub open_cmds { my ($self, $s) = @_; return grep { $_->{status} =~ /^(queued|running|waiting)$/ } $self->cmds_of($s); }
sub head { my ($self, $s) = @_; my @o = $self->open_cmds($s); return $o[0]; }
sub due { my ($self, $c) = @_; return $self->{now} > $c->{due_after}; }

sub cancel_one
{
	my ($self, $c) = @_;
	if ($c->{status} eq 'queued' || $c->{status} eq 'waiting')
	{
		$c->{status} = 'cancelled';
		$self->count('cancelled');
		return 'cancelled';
	}
	if ($c->{status} eq 'running')
	{
		$c->{cancel_req} = 1;
		$self->count('cancel_requested');
		return 'cancel_requested';
	}
	return undef;
}

sub cancel_open
{
	my ($self, $s) = @_;
	$self->cancel_one($_) for $self->open_cmds($s);
}

# a running command goes back to the queue; counted: the attempt stays used
# and the last one dead-letters; returns how many were running
sub requeue_running
{
	my ($self, $s, $counted) = @_;
	my $n = 0;
	for my $c (grep { $_->{status} eq 'running' } $self->cmds_of($s))
	{
		$n++;
		$c->{claimed_epoch} = undef;
		$c->{due_after} = -1;
		if (!$counted)
		{
			$c->{attempts}--;
			$c->{status} = 'queued';
		}
		elsif ($c->{attempts} >= $c->{max})
		{
			$c->{status} = 'dead';
			$self->count('dead');
		}
		else
		{
			$c->{status} = 'queued';
		}
	}
	return $n;
}

# ---------------------------------------------------------------------------
# Setup, and the operations
# ---------------------------------------------------------------------------

sub setup
{
	my ($self) = @_;
	$self->must("SELECT nadi.cell_host_register('$_', NULL, 100)") for @{ $self->{hosts} };
	$self->must("SELECT nadi.sandbox_host_register('prop-sbx', NULL, 1000)");
	$self->new_session while $self->live_count < $LIVE_SESSIONS;
}

sub live_count { my ($self) = @_; return scalar grep { is_live($_) } values %{ $self->{sessions} }; }

sub new_session
{
	my ($self) = @_;
	my $rows = $self->must("SELECT session_id, state FROM nadi.session_create('prop')");
	my ($sid, $state) = @{ $rows->[0] };
	die "new session is $state, not pending" unless $state eq 'pending';
	$self->{sessions}{$sid} = {
		sid => $sid, state => 'pending', epoch => 0, holder => undef, placed => undef,
		renewed => 0, crash => 0, cmds => [], keys => {}, n => scalar @{ $self->{order} },
	};
	push @{ $self->{order} }, $sid;
	return "session_create → " . $self->short($sid);
}

sub short { my ($self, $sid) = @_; return 's' . $self->{sessions}{$sid}{n}; }

# a session to act on: mostly live ones, sometimes any
sub any_session
{
	my ($self) = @_;
	my @live = grep { is_live($self->{sessions}{$_}) } @{ $self->{order} };
	my @recent = @{ $self->{order} };
	@recent = @recent[ -12 .. -1 ] if @recent > 12;
	my $sid = $self->chance(90) && @live ? $self->pick(@live) : $self->pick(@recent);
	$self->{touched}{$sid} = 1;
	return $self->{sessions}{$sid};
}

# Compares an outcome with what the model expects; dies on a mismatch.
sub expect
{
	my ($self, $what, $want, $got, $err) = @_;
	$want //= 'ok';
	$got //= 'ok';
	die "$what: expected $want, got $got" . ($err ? "\n$err" : '') . "\n" if $want ne $got;
}

sub payload_for
{
	my ($self, $type) = @_;
	my $n = ++$self->{serial};
	return $type eq 'message' ? qq({"text": "m$n"}) : qq({"name": "echo", "args": {"n": $n}});
}

sub op_enqueue
{
	my ($self) = @_;
	my $s = $self->any_session;
	my $sid = $s->{sid};
	my $type = $self->chance(60) ? 'message' : 'tool';
	my $payload = $self->payload_for($type);
	my $key;
	my $want;
	my $replay;
	if ($self->chance(50))
	{
		$key = 'k' . $self->rnd(6);
		if (my $k = $s->{keys}{$key})
		{
			if ($self->chance(75))
			{
				($type, $payload) = ($k->{type}, $k->{payload});
				$replay = $k->{id};
			}
			else
			{
				$want = 'NA007';
			}
		}
	}
	if (!$want && !$replay)
	{
		if (!accepts($s)) { $want = 'NA010'; }
		elsif (scalar($self->open_cmds($s)) >= $MAX_OPEN) { $want = 'NA012'; }
	}
	my $q = "SELECT command_id, status FROM nadi.command_enqueue('$sid', '$type', '$payload'"
	  . (defined $key ? ", idempotency_key => '$key')" : ')');
	my ($st, $rows, $err) = $self->run($q);
	my $what = "enqueue $type " . $self->short($sid) . ($key ? " key $key" : '');
	$self->expect($what, $want, $st, $err);
	if ($want)
	{
		$self->count($want eq 'NA007' ? 'idempotency_conflict' : $want eq 'NA012' ? 'limit_refused' : 'not_live_refused');
		return "$what → $want";
	}
	my ($id, $status) = @{ $rows->[0] };
	if ($replay)
	{
		die "$what: replay returned command $id, not $replay\n" unless $id == $replay;
		die "$what: replay shows $status, model has " . $self->cmd($sid, $id)->{status} . "\n"
		  unless $status eq $self->cmd($sid, $id)->{status};
		$self->count('idempotent_replay');
		return "$what → replay of $id";
	}
	die "$what: command id $id not above $self->{last_cmd_id}\n" unless $id > $self->{last_cmd_id};
	$self->{last_cmd_id} = $id;
	die "$what: new command is $status\n" unless $status eq 'queued';
	$self->{cmds}{"$sid/$id"} = {
		id => $id, sid => $sid, type => $type, status => 'queued', attempts => 0,
		max => $MAX_ATTEMPTS, cancel_req => 0, due_after => -1, claimed_epoch => undef,
		started => 0, completed => 0,
	};
	push @{ $s->{cmds} }, $id;
	$s->{keys}{$key} = { id => $id, type => $type, payload => $payload } if defined $key;
	if ($s->{state} eq 'suspended')
	{
		$s->{state} = 'pending';
		$s->{placed} = undef;
	}
	$self->count('enqueued');
	return "$what → $id";
}

# a control command (approve, deny or cancel) through command_enqueue
sub op_control
{
	my ($self) = @_;
	my $s = $self->any_session;
	my $sid = $s->{sid};
	my $type = $self->pick(qw(approve approve deny cancel));
	my @mine = $self->cmds_of($s);
	my $target;
	my $payload = '{}';
	if (@mine && $self->chance(60))
	{
		my @waiting = grep { $_->{status} eq 'waiting' } @mine;
		$target = $self->chance(70) && @waiting ? $self->pick(@waiting) : $self->pick(@mine);
		$payload = qq({"command_id": $target->{id}});
	}
	my $want;
	my $t = $target;
	if (!accepts($s)) { $want = 'NA010'; }
	elsif (!$t)
	{
		$t = $self->head($s);
		$want = 'NA006' if !$t || ($type ne 'cancel' && $t->{status} ne 'waiting');
	}
	if (!$want)
	{
		if ($type eq 'cancel') { $want = 'NA006' unless $t->{status} =~ /^(queued|waiting|running)$/; }
		else { $want = 'NA006' unless $t->{status} eq 'waiting'; }
	}
	my $what = "$type " . $self->short($sid) . ($target ? " of $target->{id}" : '');
	my ($st, $rows, $err) =
	  $self->run("SELECT command_id, status, result->>'command_id' FROM nadi.command_enqueue('$sid', '$type', '$payload')");
	$self->expect($what, $want, $st, $err);
	return "$what → $want" if $want;
	my ($id, $status, $acted) = @{ $rows->[0] };
	die "$what: acted on $acted, model says $t->{id}\n" unless $acted == $t->{id};
	die "$what: control command is $status\n" unless $status eq 'completed';
	$self->{last_cmd_id} = $id;
	$self->{cmds}{"$sid/$id"} = {
		id => $id, sid => $sid, type => $type, status => 'completed', attempts => 0, max => $MAX_ATTEMPTS,
		cancel_req => 0, due_after => -1, started => 0, completed => 0, control => 1,
	};
	push @{ $s->{cmds} }, $id;
	if ($type eq 'cancel')
	{
		$self->cancel_one($t);
	}
	else
	{
		$t->{status} = 'queued';
		$t->{due_after} = -1;
		$self->count($type eq 'approve' ? 'approved' : 'denied');
		if ($s->{state} eq 'suspended')
		{
			$s->{state} = 'pending';
			$s->{placed} = undef;
		}
	}
	return "$what → ok";
}

sub op_cancel
{
	my ($self) = @_;
	my $s = $self->any_session;
	my @mine = $self->cmds_of($s);
	return $self->op_enqueue unless @mine;
	my $c = $self->pick(@mine);
	my $want = $c->{status} =~ /^(queued|waiting|running)$/ ? undef : 'NA006';
	my ($st, undef, $err) = $self->run("SELECT status FROM nadi.command_cancel('$s->{sid}', $c->{id})");
	my $what = 'command_cancel ' . $self->short($s->{sid}) . " $c->{id} ($c->{status})";
	$self->expect($what, $want, $st, $err);
	$self->cancel_one($c) unless $want;
	return "$what → " . ($want // 'ok');
}

# The cell side: a host acts on a session it believes it holds (perhaps a
# lease that has moved on since: then every write must be refused).
sub cell_pick
{
	my ($self) = @_;
	my @pairs;
	for my $h (@{ $self->{hosts} })
	{
		push @pairs, [ $h, $_ ] for keys %{ $self->{view}{$h} || {} };
	}
	@pairs = sort { $a->[0] cmp $b->[0] || $self->{sessions}{ $a->[1] }{n} <=> $self->{sessions}{ $b->[1] }{n} } @pairs;
	# prefer current holders, so that work gets done
	my @cur = grep { my $s = $self->{sessions}{ $_->[1] }; $self->lease_ok($s, $self->{view}{ $_->[0] }{ $_->[1] }) } @pairs;
	my $p = $self->chance(80) && @cur ? $self->pick(@cur) : $self->pick(@pairs);
	return unless $p;
	my ($h, $sid) = @$p;
	$self->{touched}{$sid} = 1;
	return ($h, $self->{sessions}{$sid}, $self->{view}{$h}{$sid});
}

sub op_claim
{
	my ($self) = @_;
	my ($h, $s, $e) = $self->cell_pick;
	return $self->op_place unless $h;
	my $sid = $s->{sid};
	my $want;
	my $c;
	if (!$self->lease_ok($s, $e)) { $want = 'NA005'; }
	else
	{
		my $hd = $self->head($s);
		$c = $hd if $s->{state} eq 'active' && $hd && $hd->{status} eq 'queued' && $self->due($hd);
	}
	my ($st, $rows, $err) = $self->run("SELECT command_id, attempts FROM nadi.command_claim('$sid', $e)");
	my $what = "claim $h " . $self->short($sid) . " epoch $e";
	$self->expect($what, $want, $st, $err);
	if ($want)
	{
		$self->count('stale_refused');
		return "$what → $want";
	}
	my $got = @$rows ? $rows->[0][0] : 'nothing';
	my $exp = $c ? $c->{id} : 'nothing';
	die "$what: claimed $got, model says $exp\n" unless "$got" eq "$exp";
	return "$what → nothing" unless $c;
	$c->{status} = 'running';
	$c->{attempts}++;
	$c->{claimed_epoch} = $e;
	$c->{started}++;
	die "$what: attempts $rows->[0][1], model $c->{attempts}\n" unless $rows->[0][1] == $c->{attempts};
	$self->count('claimed');
	return "$what → $c->{id}";
}

# the command a cell write is about: mostly its running one, sometimes any
sub cell_target
{
	my ($self, $s) = @_;
	my @mine = grep { !$_->{control} } $self->cmds_of($s);
	my @running = grep { $_->{status} eq 'running' } @mine;
	return $self->chance(85) && @running ? $running[0] : $self->pick(@mine);
}

sub cell_write_check
{
	my ($self, $s, $c, $e) = @_;
	return 'NA005' unless $self->lease_ok($s, $e);
	return 'NA006' unless $c->{status} eq 'running';
	return 'NA005' unless $c->{claimed_epoch} == $e;
	return undef;
}

sub op_finish
{
	my ($self) = @_;
	my ($h, $s, $e) = $self->cell_pick;
	return $self->op_place unless $h;
	my $c = $self->cell_target($s);
	return $self->op_claim unless $c;
	my $sid = $s->{sid};
	my $how = $self->pick(qw(complete complete complete complete_events fail fail fail_final await await));
	my $q;
	if ($how eq 'complete') { $q = "SELECT status FROM nadi.command_complete('$sid', $c->{id}, $e, '{\"ok\": true}')"; }
	elsif ($how eq 'complete_events')
	{
		$q = "SELECT status FROM nadi.command_complete('$sid', $c->{id}, $e, '{\"ok\": true}', "
		  . "'[{\"kind\": \"model.reply\", \"payload\": {\"text\": \"hi\"}}, {\"kind\": \"prop.note\"}]')";
	}
	elsif ($how eq 'fail') { $q = "SELECT status FROM nadi.command_fail('$sid', $c->{id}, $e, '{\"code\": \"flaky\"}')"; }
	elsif ($how eq 'fail_final')
	{
		$q = "SELECT status FROM nadi.command_fail('$sid', $c->{id}, $e, '{\"code\": \"bad\"}', retryable => false)";
	}
	else { $q = "SELECT status FROM nadi.command_await_permission('$sid', $c->{id}, $e, '{\"tool\": \"echo\"}')"; }
	my $want = $self->cell_write_check($s, $c, $e);
	my ($st, $rows, $err) = $self->run($q);
	my $what = "$how $h " . $self->short($sid) . " cmd $c->{id} epoch $e";
	$self->expect($what, $want, $st, $err);
	if ($want)
	{
		$self->count('stale_refused') if $want eq 'NA005';
		return "$what → $want";
	}
	my $status;
	if ($how =~ /^complete/)
	{
		$status = 'completed';
		$c->{completed}++;
		$s->{crash} = 0;    # progress: the crash budget starts again
		$self->count('completed');
	}
	elsif ($how eq 'await')
	{
		$status = 'waiting';
		$c->{attempts}--;
		$self->count('waiting');
	}
	elsif ($c->{cancel_req}) { $status = 'cancelled'; $self->count('cancelled'); }
	elsif ($how eq 'fail' && $c->{attempts} < $c->{max})
	{
		$status = 'queued';
		$c->{due_after} = $self->{now};
		$self->count('failed_retry');
	}
	else { $status = 'dead'; $self->count('dead'); }
	$c->{status} = $status;
	$c->{claimed_epoch} = undef;
	die "$what: returned $rows->[0][0], model says $status\n" unless $rows->[0][0] eq $status;
	return "$what → $status";
}

sub op_event
{
	my ($self) = @_;
	my ($h, $s, $e) = $self->cell_pick;
	return $self->op_place unless $h;
	my $want = $self->lease_ok($s, $e) ? undef : 'NA005';
	my ($st, undef, $err) = $self->run("SELECT seq FROM nadi.event_append('$s->{sid}', $e, 'prop.note', '{}')");
	my $what = "event_append $h " . $self->short($s->{sid}) . " epoch $e";
	$self->expect($what, $want, $st, $err);
	$self->count('stale_refused') if $want;
	return "$what → " . ($want // 'ok');
}

# a write under an epoch that is not the current, held, unexpired one:
# always refused, whatever it is
sub op_stale
{
	my ($self) = @_;
	my $s = $self->any_session;
	my @stale = (0 .. $s->{epoch} - 1);
	push @stale, $s->{epoch} unless $self->lease_ok($s, $s->{epoch});
	push @stale, $s->{epoch} + 1;
	my $e = $self->pick(@stale);
	my @mine = grep { !$_->{control} } $self->cmds_of($s);
	my $c = $self->pick(@mine);
	my $sid = $s->{sid};
	my @q = ("SELECT nadi.event_append('$sid', $e, 'prop.zombie', '{}')",
		"SELECT nadi.lease_renew('$sid', $e)", "SELECT nadi.lease_release('$sid', $e)",
		"SELECT nadi.command_claim('$sid', $e)");
	push @q, "SELECT nadi.command_complete('$sid', $c->{id}, $e, '{\"zombie\": true}')",
	  "SELECT nadi.command_fail('$sid', $c->{id}, $e, '{\"zombie\": true}', false)" if $c;
	my $q = $self->pick(@q);
	my ($st, undef, $err) = $self->run($q);
	my $what = "stale write " . $self->short($sid) . " epoch $e (lease at $s->{epoch}): $q";
	$self->expect($what, 'NA005', $st, $err);
	$self->count('stale_refused');
	return "$what → NA005";
}

sub op_place
{
	my ($self) = @_;
	my @pending = grep { $self->{sessions}{$_}{state} eq 'pending' } @{ $self->{order} };
	my $s = $self->chance(85) && @pending ? $self->{sessions}{ $self->pick(@pending) } : $self->any_session;
	my $want = $s->{state} eq 'pending' ? undef : 'NA001';
	my ($st, $rows, $err) = $self->run("SELECT state, cell_host_id FROM nadi.place('$s->{sid}')");
	my $what = "place " . $self->short($s->{sid}) . " ($s->{state})";
	$self->expect($what, $want, $st, $err);
	return "$what → $want" if $want;
	my ($state, $host) = @{ $rows->[0] };
	die "$what: state $state, host $host\n" unless $state eq 'placed' && grep { $_ eq $host } @{ $self->{hosts} };
	$s->{state} = 'placed';
	$s->{placed} = $host;
	return "$what → $host";
}

sub op_acquire
{
	my ($self) = @_;
	my @placed = grep { $self->{sessions}{$_}{state} =~ /^(placed|active)$/ } @{ $self->{order} };
	my $s = $self->chance(85) && @placed ? $self->{sessions}{ $self->pick(@placed) } : $self->any_session;
	my $h = $s->{state} eq 'placed' && $self->chance(85) ? $s->{placed} : $self->pick(@{ $self->{hosts} });
	my $sid = $s->{sid};
	my $want;
	if ($s->{state} eq 'placed') { $want = 'NA004' unless $h eq $s->{placed}; }
	elsif ($s->{state} eq 'active') { $want = 'NA004' unless $self->expired($s); }
	else { $want = 'NA001'; }
	my ($st, $rows, $err) = $self->run("SELECT epoch, coalesce(cell_host_id, '-') FROM nadi.lease_acquire('$sid', '$h')");
	my $what = "lease_acquire $h " . $self->short($sid) . " ($s->{state}, epoch $s->{epoch})";
	$self->expect($what, $want, $st, $err);
	return "$what → $want" if $want;
	my $result;
	if ($s->{state} eq 'placed')
	{
		$s->{state} = 'active';
		$result = 'acquired';
	}
	else
	{
		my $n = $self->requeue_running($s, 1);
		$s->{crash}++ if $n;
		if ($s->{crash} > $CRASH_BUDGET)
		{
			$s->{epoch}++;
			$s->{holder} = undef;
			$s->{state} = 'failed';
			$self->cancel_open($s);
			$self->count('crash_failed');
			my ($ep, $holder) = @{ $rows->[0] };
			die "$what: returned epoch $ep holder $holder, model $s->{epoch} none\n"
			  unless $ep == $s->{epoch} && $holder eq '-';
			return "$what → failed (crash budget)";
		}
		$self->count('takeover');
		$result = 'taken over';
	}
	$s->{epoch}++;
	$s->{holder} = $h;
	$s->{placed} = $h;
	$s->{renewed} = $self->{now};
	$self->{view}{$h}{$sid} = $s->{epoch};
	my ($ep, $holder) = @{ $rows->[0] };
	die "$what: returned epoch $ep holder $holder, model $s->{epoch} $h\n" unless $ep == $s->{epoch} && $holder eq $h;
	return "$what → $result at epoch $s->{epoch}";
}

sub op_renew
{
	my ($self) = @_;
	my ($h, $s, $e) = $self->cell_pick;
	return $self->op_place unless $h;
	my $want = $self->lease_ok($s, $e) ? undef : 'NA005';
	my ($st, undef, $err) = $self->run("SELECT epoch FROM nadi.lease_renew('$s->{sid}', $e)");
	my $what = "lease_renew $h " . $self->short($s->{sid}) . " epoch $e";
	$self->expect($what, $want, $st, $err);
	if ($want) { $self->count('stale_refused'); }
	else { $s->{renewed} = $self->{now}; }
	return "$what → " . ($want // 'ok');
}

sub op_release
{
	my ($self) = @_;
	my ($h, $s, $e) = $self->cell_pick;
	return $self->op_place unless $h;
	my $want = $self->lease_ok($s, $e) ? undef : 'NA005';
	my ($st, undef, $err) = $self->run("SELECT epoch FROM nadi.lease_release('$s->{sid}', $e)");
	my $what = "lease_release $h " . $self->short($s->{sid}) . " epoch $e";
	$self->expect($what, $want, $st, $err);
	if ($want)
	{
		$self->count('stale_refused');
		return "$what → $want";
	}
	$self->requeue_running($s, 0);
	$s->{holder} = undef;
	if ($s->{state} eq 'terminating')
	{
		$self->cancel_open($s);
		$s->{state} = 'terminated';
		$self->count('terminated');
	}
	elsif (grep { $_->{status} eq 'queued' } $self->cmds_of($s))
	{
		$s->{state} = 'pending';
		$s->{placed} = undef;
	}
	else { $s->{state} = 'suspended'; }
	$self->count('released');
	return "$what → $s->{state}";
}

sub op_clock
{
	my ($self) = @_;
	my $by = 20 * $self->pick(1, 1, 2, 3);
	$self->{now} += $by;
	my $hb = join(', ', map { "nadi.cell_host_heartbeat('$_')" } @{ $self->{hosts} });
	$self->must("SET nadi.clock_offset = '$self->{now}min'");
	$self->must("SELECT $hb, nadi.sandbox_host_heartbeat('prop-sbx')");
	return "clock +${by}min → $self->{now}min";
}

sub op_reap
{
	my ($self) = @_;
	my ($leases, $requeued, $dead, $failed) = (0, 0, 0, 0);
	for my $sid (sort @{ $self->{order} })
	{
		my $s = $self->{sessions}{$sid};
		next unless $self->expired($s);
		$self->{touched}{$sid} = 1;
		my @run = grep { $_->{status} eq 'running' } $self->cmds_of($s);
		my $n = $self->requeue_running($s, 1);
		my $d = grep { $_->{status} eq 'dead' } @run;
		$requeued += $n - $d;
		$dead += $d;
		$leases++;
		$s->{epoch}++;
		$s->{holder} = undef;
		$s->{crash}++ if $n;
		if ($s->{state} eq 'terminating')
		{
			$self->cancel_open($s);
			$s->{state} = 'terminated';
			$self->count('terminated');
		}
		elsif ($s->{crash} > $CRASH_BUDGET)
		{
			$s->{state} = 'failed';
			$self->cancel_open($s);
			$failed++;
			$self->count('crash_failed');
		}
		else
		{
			$s->{state} = 'pending';
			$s->{placed} = undef;
		}
		$self->count('reaped_lease');
	}
	my $rows = $self->must('SELECT * FROM nadi.reap()');
	my $got = join(' ', @{ $rows->[0] });
	my $exp = "$leases $requeued $dead $failed 0 0";
	die "reap: returned $got, model says $exp\n" unless $got eq $exp;
	return "reap → $got";
}

sub op_terminate
{
	my ($self) = @_;
	my $s = $self->any_session;
	my $want = is_live($s) ? undef : 'NA001';
	my ($st, $rows, $err) = $self->run("SELECT state FROM nadi.session_terminate('$s->{sid}')");
	my $what = "terminate " . $self->short($s->{sid}) . " ($s->{state})";
	$self->expect($what, $want, $st, $err);
	return "$what → $want" if $want;
	if ($s->{state} eq 'active')
	{
		$s->{state} = 'terminating';
		$self->cancel_open($s);
	}
	elsif ($s->{state} ne 'terminating')
	{
		$self->cancel_open($s);
		$s->{state} = 'terminated';
		$self->count('terminated');
	}
	die "$what: state $rows->[0][0], model $s->{state}\n" unless $rows->[0][0] eq $s->{state};
	return "$what → $s->{state}";
}

my @OPS = (
	[ enqueue => 14 ], [ control => 6 ], [ cancel => 2 ], [ claim => 20 ], [ finish => 20 ],
	[ event => 3 ], [ stale => 4 ], [ place => 8 ], [ acquire => 8 ], [ renew => 5 ],
	[ release => 3 ], [ clock => 5 ], [ reap => 3 ], [ terminate => 1 ],
);

# One random step; returns what it did, dies on a mismatch.
sub step
{
	my ($self, $i) = @_;
	my $what;
	# whatever was live before the step is checked after it
	$self->{touched}{$_} = 1 for grep { is_live($self->{sessions}{$_}) } @{ $self->{order} };
	if ($self->live_count < $LIVE_SESSIONS && @{ $self->{order} } < $MAX_SESSIONS)
	{
		$what = $self->new_session;
	}
	else
	{
		my $total = 0;
		$total += $_->[1] for @OPS;
		my $r = $self->rnd($total);
		my $op;
		for (@OPS)
		{
			$op = $_->[0];
			last if ($r -= $_->[1]) < 0;
		}
		my $m = "op_$op";
		$what = $self->$m;
	}
	push @{ $self->{history} }, "$i: $what";
	shift @{ $self->{history} } if @{ $self->{history} } > 200;
	return $what;
}

# ---------------------------------------------------------------------------
# The check after every step
# ---------------------------------------------------------------------------

my $CHECK = q{
SELECT 'S', s.session_id::text, s.state::text, l.epoch::text, coalesce(l.cell_host_id, '-'),
       s.crash_count::text, coalesce(s.cell_host_id, '-'), s.last_seq::text
FROM nadi.sessions s JOIN nadi.session_leases l USING (session_id)
WHERE s.session_id = ANY ('%IDS%')
UNION ALL
SELECT 'C', c.session_id::text, c.command_id::text, c.status::text, c.attempts::text,
       CASE WHEN c.cancel_requested THEN 't' ELSE 'f' END, coalesce(e.started, 0)::text, coalesce(e.completed, 0)::text
FROM nadi.command_inbox c LEFT JOIN (
  SELECT session_id, command_id,
         count(*) FILTER (WHERE kind = 'command.started') AS started,
         count(*) FILTER (WHERE kind = 'command.completed') AS completed
  FROM nadi.events WHERE command_id IS NOT NULL AND session_id = ANY ('%IDS%') GROUP BY 1, 2
) e USING (session_id, command_id)
WHERE c.session_id = ANY ('%IDS%')
UNION ALL
SELECT 'E', session_id::text, count(*)::text, max(seq)::text, min(seq)::text,
       count(DISTINCT seq)::text, '', ''
FROM nadi.events WHERE session_id = ANY ('%IDS%') GROUP BY session_id
};

# Checks the sessions that may have changed in the last step (every live
# one, and those the step named), or with $full every session.
sub check
{
	my ($self, $full) = @_;
	my @sids = grep { $full || $self->{touched}{$_} || is_live($self->{sessions}{$_}) } @{ $self->{order} };
	$self->{touched} = {};
	my $ids = '{' . join(',', @sids) . '}';
	(my $q = $CHECK) =~ s/%IDS%/$ids/g;
	my $rows = $self->must($q);
	my (%dbs, %dbc, %ev);
	for my $r (@$rows)
	{
		my ($t, $sid, @f) = @$r;
		if ($t eq 'S') { $dbs{$sid} = \@f; }
		elsif ($t eq 'C') { $dbc{"$sid/$f[0]"} = \@f; }
		else { $ev{$sid} = \@f; }
	}
	for my $sid (@sids)
	{
		my $s = $self->{sessions}{$sid};
		my $n = $self->short($sid);
		my $d = $dbs{$sid} or return "session $n is missing";
		my ($state, $epoch, $holder, $crash, $placed, $last_seq) = @$d;
		my $mh = $s->{holder} // '-';
		return "session $n: state $state epoch $epoch holder $holder crash $crash, model $s->{state} $s->{epoch} $mh $s->{crash}"
		  unless $state eq $s->{state} && $epoch == $s->{epoch} && $holder eq $mh && $crash == $s->{crash};
		return "session $n: placed on $placed, model " . ($s->{placed} // '-')
		  if $state =~ /^(placed|active)$/ && $placed ne ($s->{placed} // '-');
		my ($count, $max, $min, $distinct) = @{ $ev{$sid} // [ 0, 0, 1, 0 ] };
		return "session $n: events not gapless from 1 (count $count, min $min, max $max, distinct $distinct)"
		  unless $min == 1 && $max == $count && $distinct == $count;
		return "session $n: last_seq $last_seq, max(seq) $max" unless $last_seq == $max;
		return "session $n: event count went down from $s->{events} to $count"
		  if defined $s->{events} && $count < $s->{events};
		$s->{events} = $count;
		my $inflight = 0;
		my $seen_open = 0;
		for my $c ($self->cmds_of($s))
		{
			my $k = "$sid/$c->{id}";
			my $dc = delete $dbc{$k} or return "command $c->{id} of $n is lost";
			my ($id, $status, $attempts, $cancel, $started, $completed) = @$dc;
			my $mc = $c->{cancel_req} ? 't' : 'f';
			return "command $c->{id} of $n: $status attempts $attempts cancel_requested $cancel "
			  . "started $started completed $completed; model $c->{status} $c->{attempts} $mc $c->{started} $c->{completed}"
			  unless $status eq $c->{status} && $attempts == $c->{attempts} && $cancel eq $mc
			  && $started == $c->{started} && $completed == $c->{completed};
			return "command $c->{id} of $n applied $completed times" if $completed > 1;
			return "command $c->{id} of $n is completed without its completion event"
			  if !$c->{control} && ($status eq 'completed') != ($completed == 1);
			if ($status =~ /^(running|waiting)$/)
			{
				$inflight++;
				return "command $c->{id} of $n is $status behind an open command" if $seen_open;
			}
			$seen_open = 1 if $status =~ /^(queued|running|waiting)$/;
		}
		return "session $n has $inflight commands in flight" if $inflight > 1;
	}
	return "commands the model does not know: " . join(', ', sort keys %dbc) if %dbc;
	return undef;
}

1;

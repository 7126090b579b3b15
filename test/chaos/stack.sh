#!/usr/bin/env bash
# test/chaos/stack.sh — the local stack of a chaos run, and the faults done
# to it.  test/chaos/chaos.mjs calls it; every subcommand works on the run
# directory CHAOS_DIR (state in CHAOS_DIR/state, logs in CHAOS_DIR/state/log).
#
#   setup                 start the stack: scripts/nadi-local (PostgreSQL with the
#                         broker, the notifier and CHAOS_CELL_WORKERS (2)
#                         embedded cell workers,
#                         an edge, gitd, credproxy, sandboxd), a second edge,
#                         and one nadi-celld in a network namespace of its own
#                         (reaching PostgreSQL over TCP through a veth pair)
#   kill NAME             SIGKILL a process: edge-1 edge-2 sandboxd credproxy
#                         gitd celld cell broker notifier
#   pid NAME              its pid
#   start NAME            start it again with the command line it had
#   stop NAME / cont NAME [PID]  SIGSTOP it (prints the pid) / SIGCONT it (a
#                         cell's backend has no pid file: PID names it)
#   pg-crash / pg-start   PostgreSQL stopped in immediate mode / started
#   link down|up          cut nadi-celld's namespace off the host, or heal it
#   clock celld|cells MS  nadi.clock_offset for nadi-celld's login (it
#                         reconnects) or for the embedded cells (a reload)
#   fill-store / free-store  fill the sandbox store (BTRFS) / free it
#   sql                   SQL from stdin, as the superuser; rows on stdout
#   containers            the sandbox containers: PID PPID SANDBOX per line
#   teardown              stop everything, leave nothing behind
#
# Ports come from the environment (CHAOS_PORTS="edge1 edge2 sandboxd
# credproxy pg"): fixed for the run, so a process started again listens
# where its clients expect it.
set -euo pipefail

ROOT=${NADI_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
: "${CHAOS_DIR:?CHAOS_DIR must name the run directory}"
T=$CHAOS_DIR
STATE=$CHAOS_DIR/state
export NADI_STATE=$STATE
NADI_USER=${NADI_USER:-nadi}
# shellcheck source=test/fleet/lib.sh
. "$ROOT/test/fleet/lib.sh"
FLEET_USER=$NADI_USER # nadi-celld runs as the stack's user
PGBIN=$("${PG_CONFIG:-pg_config}" --bindir)
FLEET_BINDIR=$PGBIN
CMDS=$CHAOS_DIR/cmd # the command line of each daemon, NUL-separated
NETENV=$CHAOS_DIR/net.env
# embedded cell workers (0: nadi-celld is the only cell host)
WORKERS=${CHAOS_CELL_WORKERS:-2}
[[ "$WORKERS" =~ ^[0-9]$ ]] || { echo "stack.sh: CHAOS_CELL_WORKERS must be 0-9" >&2; exit 2; }

read_ports() {
	read -r E1 E2 SBX CP PGP <<<"${CHAOS_PORTS:?CHAOS_PORTS must name five ports}"
}

as_nadi() { runuser -u "$NADI_USER" -- "$@"; }
psql_su() {
	as_nadi "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$STATE/run" -p "$PGP" -d nadi "$@"
}
pg_ctl_() { as_nadi "$PGBIN/pg_ctl" -D "$STATE/pg" -l "$STATE/log/postgres.log" -w -t 60 "$@" >/dev/null; }

load_net() {
	# (declare -p wrote local declarations: made global here)
	# shellcheck disable=SC1090
	[ -f "$NETENV" ] && . <(sed -e 's/^declare -- /declare -g /' -e 's/^declare -a /declare -ga /' "$NETENV")
	return 0
}

# pid_of NAME: the process's pid, or nothing
pid_of() {
	case "$1" in
	edge-1) cat "$STATE/edge.pid" 2>/dev/null || true ;;
	cell | broker | notifier)
		# the oldest such backend: the same choice for the same state of the server
		psql_su -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'nadi $1' ORDER BY backend_start, pid LIMIT 1" 2>/dev/null || true ;;
	*) cat "$STATE/$1.pid" 2>/dev/null || true ;;
	esac
}

# alive PID: the process runs (a killed one may linger as a zombie until
# its parent, often init, reaps it: it does not run)
alive() { [ -n "$1" ] && [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }

# save_cmd NAME: remember the command line of a running daemon
save_cmd() {
	local pid
	pid=$(pid_of "$1")
	mkdir -p "$CMDS"
	cp "/proc/$pid/cmdline" "$CMDS/$1"
}

pidfile() { if [ "$1" = edge-1 ]; then echo "$STATE/edge.pid"; else echo "$STATE/$1.pid"; fi; }

# start_saved NAME: start a daemon again with its saved command line
start_saved() {
	local name=$1 log=$STATE/log/$1.log pid
	local -a argv
	mapfile -d '' argv <"$CMDS/$name"
	pid=$(pid_of "$name")
	if alive "$pid"; then return 0; fi
	if [ "$name" = celld ]; then
		# into the namespace's network only: `ip netns exec` would also give
		# it a copy of every mount of the moment (a sandbox store among
		# them), which would keep that store's loop device after the stack
		# unmounted it
		load_net
		nsenter --net="/run/netns/${FLEET_NS[0]}" \
			setpriv --reuid="$NADI_USER" --regid="$NADI_USER" --init-groups \
			env -i PATH="$PGBIN:/usr/bin:/bin" HOME="$T" PGPASSFILE="$T/pgpass.0" LANG=C.UTF-8 \
			"${argv[@]}" >>"$log" 2>&1 </dev/null 9>&- &
		echo $! >"$STATE/celld.pid"
	else
		"${argv[@]}" >>"$log" 2>&1 </dev/null 9>&- &
		echo $! >"$(pidfile "$name")"
	fi
}

cmd_setup() {
	local pw
	read_ports
	mkdir -p "$STATE"
	chmod 755 "$CHAOS_DIR" "$STATE"
	# the namespace first: sandboxd listens on its host-side address, which
	# the embedded cells (on the host) and nadi-celld (inside) both reach
	# (what it made is written down even when it failed half way: teardown
	# removes it)
	local net_ok=0
	fleet_net_setup 1 && net_ok=1
	declare -p FLEET_TAG FLEET_NETS FLEET_NS FLEET_VETH FLEET_NSVETH >"$NETENV"
	[ "$net_ok" = 1 ] || { echo "stack.sh: could not set up the network namespace" >&2; return 1; }
	NADI_PGPORT=$PGP NADI_EDGE_PORT=$E1 NADI_SANDBOXD_PORT=$SBX NADI_CREDPROXY_PORT=$CP \
		NADI_SANDBOXD_ADDR=$(fleet_host_addr 0) "$ROOT/scripts/nadi-local" start 9>&-
	# short leases and heartbeats, so that a paused or partitioned cell loses
	# its sessions within a short run; idle sessions suspended after 2 s, so
	# that cells write checkpoints and sessions come back by replay; TCP for
	# the namespace, scram only
	pw=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
	psql_su -c "ALTER SYSTEM SET nadi.lease_ttl = '4s'" -c "ALTER SYSTEM SET nadi.host_ttl = '6s'" \
		-c "ALTER SYSTEM SET nadi.heartbeat_interval = '1s'" \
		-c "ALTER SYSTEM SET nadi.idle_suspend = '2s'" \
		-c "ALTER SYSTEM SET listen_addresses = '$(fleet_host_addr 0)'" \
		-c "ALTER SYSTEM SET password_encryption = 'scram-sha-256'" \
		-c "ALTER SYSTEM SET nadi.cell_workers = $WORKERS" >/dev/null
	psql_su -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chaos_celld') THEN CREATE ROLE chaos_celld LOGIN IN ROLE nadi_cell; END IF; END \$\$" \
		-c "SELECT nadi.host_bind('cell', 'chaos-celld', 'chaos_celld')" >/dev/null
	psql_su -c "SET password_encryption = 'scram-sha-256'" -c "ALTER ROLE chaos_celld PASSWORD '$pw'" >/dev/null
	echo "host nadi chaos_celld 10.214.0.0/16 scram-sha-256" >>"$STATE/pg/pg_hba.conf"
	printf '%s:%s:nadi:chaos_celld:%s\n' "$(fleet_host_addr 0)" "$PGP" "$pw" >"$T/pgpass.0"
	chown "$NADI_USER:" "$T/pgpass.0"
	chmod 600 "$T/pgpass.0"
	pg_ctl_ -m fast restart 9>&-
	for d in edge-1 sandboxd credproxy gitd; do [ -z "$(pid_of $d)" ] || save_cmd "$d"; done
	# a second edge on the same database
	mapfile -d '' argv <"$CMDS/edge-1"
	local -a e2=()
	local skip=0 a
	for a in "${argv[@]}"; do
		if [ $skip = 1 ]; then skip=0; continue; fi
		case "$a" in
		--port) e2+=(--port "$E2"); skip=1 ;;
		--ready-file=*) e2+=("--ready-file=$STATE/edge-2.ready") ;;
		*) e2+=("$a") ;;
		esac
	done
	printf '%s\0' "${e2[@]}" >"$CMDS/edge-2"
	start_saved edge-2
	wait_ready "$STATE/edge-2.ready" "$(cat "$STATE/edge-2.pid")" 60 >/dev/null
	# nadi-celld in the namespace
	printf '%s\0' "$ROOT/celld/nadi-celld" --conninfo \
		"host=$(fleet_host_addr 0) port=$PGP dbname=nadi user=chaos_celld connect_timeout=3" \
		--host-id chaos-celld --listen 127.0.0.1:0 --sandboxd-url "http://$(fleet_host_addr 0):$SBX" \
		--heartbeat 1s >"$CMDS/celld"
	start_saved celld
	# without embedded cells, their host takes no new sessions
	[ "$WORKERS" -gt 0 ] ||
		psql_su -c "SELECT nadi.cell_host_set_state('local-cell', 'dead') FROM nadi.cell_hosts WHERE host_id = 'local-cell'" >/dev/null
	# every host up: the embedded cells, nadi-celld
	for _ in $(seq 150); do
		[ "$(psql_su -c "SELECT count(*) FROM nadi.cell_hosts WHERE state = 'live' AND host_id IN ('local-cell', 'chaos-celld')")" = $((WORKERS > 0 ? 2 : 1)) ] &&
			[ "$(psql_su -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'nadi cell'")" = "$WORKERS" ] && return 0
		sleep 0.2
	done
	echo "stack.sh: the cell hosts did not come up" >&2
	tail -n 20 "$STATE/log/celld.log" >&2 || true
	return 1
}

cmd_kill() {
	local pid
	pid=$(pid_of "$1")
	alive "$pid" || { echo "stack.sh: $1 is not running" >&2; return 1; }
	kill -KILL "$pid"
}

cmd_signal() {
	local sig=$1 name=$2 pid
	pid=$(pid_of "$name")
	alive "$pid" || { echo "stack.sh: $name is not running" >&2; return 1; }
	kill "-$sig" "$pid"
	echo "$pid"
}

cmd_teardown() {
	set +e
	read_ports
	load_net
	local p
	# every stopped process first, or it cannot die
	for p in $(pgrep -f "$STATE" 2>/dev/null); do kill -CONT "$p" 2>/dev/null || true; done
	if [ -f "$STATE/celld.pid" ]; then kill -KILL "$(cat "$STATE/celld.pid")" 2>/dev/null || true; fi
	if [ -f "$STATE/edge-2.pid" ]; then kill -TERM "$(cat "$STATE/edge-2.pid")" 2>/dev/null || true; fi
	rm -f "$STATE/store-fill" 2>/dev/null || true
	[ ! -f "$STATE/sandboxd/store/.chaos-fill" ] || rm -f "$STATE/sandboxd/store/.chaos-fill"
	NADI_PGPORT=$PGP "$ROOT/scripts/nadi-local" stop >/dev/null 2>&1 || true
	if [ -f "$STATE/pg/postmaster.pid" ]; then pg_ctl_ -m immediate stop || true; fi
	fleet_cleanup
}

cmd="${1:-}"
shift || true
case "$cmd" in
setup) cmd_setup ;;
kill) read_ports; cmd_kill "$1" ;;
start) read_ports; start_saved "$1" ;;
stop) read_ports; cmd_signal STOP "$1" ;;
cont)
	read_ports
	# the pid that was stopped (a cell's backend has no pid file)
	if [ -n "${2:-}" ]; then kill -CONT "$2"; else cmd_signal CONT "$1" >/dev/null; fi ;;
pg-crash) read_ports; pg_ctl_ -m immediate stop ;;
pg-start) read_ports; pg_ctl_ start 9>&- ;;
link) read_ports; load_net; fleet_link 0 "$1" ;;
clock)
	read_ports
	case "$1" in
	celld)
		psql_su -c "ALTER ROLE chaos_celld SET nadi.clock_offset = '${2}ms'" \
			-c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'chaos_celld'" >/dev/null ;;
	cells)
		psql_su -c "ALTER SYSTEM SET nadi.clock_offset = '${2}ms'" -c "SELECT pg_reload_conf()" >/dev/null ;;
	*) echo "stack.sh: clock celld|cells MS" >&2; exit 2 ;;
	esac ;;
fill-store)
	# only a store that is this run's own loop-mounted image: filling the
	# state directory's file system would fill the host's
	store=$STATE/sandboxd/store
	src=$(findmnt -n -o SOURCE --target "$store" 2>/dev/null || true)
	case "$src" in
	/dev/loop*) ;;
	*) echo "stack.sh: $store is not a loop-mounted store ($src); not filling it" >&2; exit 1 ;;
	esac
	[ "$(findmnt -n -o TARGET --target "$store")" = "$store" ] || { echo "stack.sh: $store is not mounted" >&2; exit 1; }
	f=$store/.chaos-fill
	avail=$(df --output=avail -B1 "$store" | tail -n 1)
	# a file as large as the free space; what BTRFS still finds is written,
	# at most the free space again
	fallocate -l "$avail" "$f" 2>/dev/null || fallocate -l $((avail * 9 / 10)) "$f" 2>/dev/null || true
	dd if=/dev/zero of="$f" bs=1M count=$((avail / 1048576 + 1)) oflag=append conv=notrunc status=none 2>/dev/null || true
	df --output=avail -B1 "$store" | tail -n 1 ;;
free-store) rm -f "$STATE/sandboxd/store/.chaos-fill"; sync ;;
sql) read_ports; psql_su -f - ;;
containers)
	# PID PPID and the sandbox of each nspawn container of this run
	for p in $(pgrep -f "systemd-nspawn.*$STATE" 2>/dev/null); do
		m=$(tr '\0' '\n' <"/proc/$p/cmdline" 2>/dev/null | sed -n 's/^--machine=//p; s/^-M//p' | head -n 1)
		echo "$p $(awk '/^PPid:/ {print $2}' "/proc/$p/status" 2>/dev/null) ${m:-?}"
	done ;;
pid) read_ports; pid_of "$1" ;;
teardown) cmd_teardown ;;
*) echo "usage: stack.sh setup|kill|start|stop|cont|pg-crash|pg-start|link|clock|fill-store|free-store|sql|containers|pid|teardown" >&2; exit 2 ;;
esac

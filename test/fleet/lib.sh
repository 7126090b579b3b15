# shellcheck shell=bash
# Helpers for test/suites/50-celld-fleet: a fleet of cell hosts on one
# machine.  Each host gets a network namespace with a veth pair to the host
# (10.214.N.2 inside, 10.214.N.1 outside, a default route through it); a
# PostgreSQL cluster with the nadi extension listens on TCP on the outside
# addresses (scram passwords for the namespaces' subnet) and on a unix
# socket in its own directory for the test itself.  Taking a host's link
# down partitions it from the database; bringing it up heals it.
#
# Source it after setting T (a scratch directory, mode 0711 or wider); it
# defines functions and variables only.  fleet_cleanup undoes everything
# (call it from the suite's EXIT trap).

# shellcheck source=scripts/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/scripts/lib.sh"

FLEET_SRC=${NADI_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
FLEET_USER=${NADI_TEST_USER:-nadi-test}
# The addresses are the suite's own (made by fleet_net_setup), so nothing
# else listens on them: a fixed port does not race with anything.
FLEET_PG_PORT=${NADI_FLEET_PG_PORT:-18500}
FLEET_PG_DIR=""
FLEET_BINDIR=""
FLEET_TAG=""    # short random tag in every namespace and interface name
FLEET_NETS=()   # third octet of each host's /24
FLEET_NS=()     # namespace of each host
FLEET_VETH=()   # host-side veth of each host
FLEET_NSVETH=() # its peer, inside the namespace
FLEET_PIDS=()   # processes started in the namespaces (fleet_spawn)

# fleet_requirements: prints why the fleet cannot run here, or nothing.
fleet_requirements() {
	[ "$(id -u)" -eq 0 ] || { echo "not root (network namespaces and veth pairs need it)"; return; }
	command -v ip >/dev/null || { echo "no ip(8) (iproute2; scripts/bootstrap installs it)"; return; }
	command -v "${PG_CONFIG:-pg_config}" >/dev/null || { echo "no pg_config"; return; }
	[ -f "$("${PG_CONFIG:-pg_config}" --sharedir)/extension/nadi.control" ] ||
		{ echo "the nadi extension is not installed (make install)"; return; }
	id -u "$FLEET_USER" >/dev/null 2>&1 || { echo "no user $FLEET_USER to run PostgreSQL as"; return; }
}

# ---- network ----------------------------------------------------------------

# fleet_net_setup N: N namespaces, each with a veth pair to the host.
fleet_net_setup() {
	local n=$1 i base net ns hv nv
	FLEET_TAG=$(head -c 3 /dev/urandom | od -An -tx1 | tr -d ' \n')
	# a block of N /24s inside 10.214.0.0/16 that no route of this host uses
	for _ in $(seq 1 20); do
		base=$((RANDOM % (250 / n) * n + 1))
		for i in $(seq 0 $((n - 1))); do
			ip route show | grep -q "^10\.214\.$((base + i))\." && continue 2
		done
		break
	done
	for i in $(seq 0 $((n - 1))); do
		net=$((base + i))
		ns=nadi-fleet-$FLEET_TAG-$i
		hv=nf${FLEET_TAG}h$i
		nv=nf${FLEET_TAG}c$i
		FLEET_NETS+=("$net")
		FLEET_NS+=("$ns")
		FLEET_VETH+=("$hv")
		FLEET_NSVETH+=("$nv")
		ip netns add "$ns" || return 1
		ip link add "$hv" type veth peer name "$nv" || return 1
		ip link set "$nv" netns "$ns" || return 1
		ip addr add "10.214.$net.1/24" dev "$hv" || return 1
		ip link set "$hv" up || return 1
		ip -n "$ns" link set lo up || return 1
		ip -n "$ns" addr add "10.214.$net.2/24" dev "$nv" || return 1
		ip -n "$ns" link set "$nv" up || return 1
		ip -n "$ns" route add default via "10.214.$net.1" || return 1
	done
}

# fleet_host_addr I: the database's address as host I sees it
fleet_host_addr() { echo "10.214.${FLEET_NETS[$1]}.1"; }
# fleet_ns_addr I: host I's own address
fleet_ns_addr() { echo "10.214.${FLEET_NETS[$1]}.2"; }

# fleet_link I down|up: cut host I off from the database, or heal it.
fleet_link() { ip link set "${FLEET_VETH[$1]}" "$2"; }

# fleet_link_in I down|up: the same from inside the namespace (down takes
# the namespace's routes with it, up puts the default route back)
fleet_link_in() {
	ip -n "${FLEET_NS[$1]}" link set "${FLEET_NSVETH[$1]}" "$2" || return 1
	[ "$2" = down ] || ip -n "${FLEET_NS[$1]}" route replace default via "$(fleet_host_addr "$1")"
}

# fleet_in I CMD...: CMD inside host I's namespace, as the test user.
fleet_in() {
	local i=$1
	shift
	ip netns exec "${FLEET_NS[$i]}" runuser -u "$FLEET_USER" -- env -i PATH="$FLEET_BINDIR:/usr/bin:/bin" \
		HOME="$T" PGPASSFILE="$T/pgpass.$i" PGCONNECT_TIMEOUT=3 LANG=C.UTF-8 "$@"
}

# fleet_conninfo I: the libpq conninfo host I's cell uses (over TCP)
fleet_conninfo() {
	echo "host=$(fleet_host_addr "$1") port=$FLEET_PG_PORT dbname=nadi user=fleet_cell_$1 connect_timeout=3"
}

# fleet_ns_psql I SQL: SQL as host I's cell login, from inside its namespace
fleet_ns_psql() {
	fleet_in "$1" psql -X -q -At -v ON_ERROR_STOP=1 "$(fleet_conninfo "$1")" -c "$2"
}

# fleet_spawn I LOG CMD...: CMD in the background in host I's namespace;
# its pid (the command itself, after exec) goes to FLEET_SPAWNED.
FLEET_SPAWNED=""
fleet_spawn() {
	local i=$1 log=$2
	shift 2
	ip netns exec "${FLEET_NS[$i]}" setpriv --reuid="$FLEET_USER" --regid="$FLEET_USER" --init-groups \
		env -i PATH="$FLEET_BINDIR:/usr/bin:/bin" HOME="$T" PGPASSFILE="$T/pgpass.$i" LANG=C.UTF-8 \
		"$@" >>"$log" 2>&1 </dev/null &
	FLEET_SPAWNED=$!
	FLEET_PIDS+=("$FLEET_SPAWNED")
}

# ---- connections held open ----------------------------------------------------

# A psql that stays connected and answers one query at a time, each into a
# file of its own (\g FILE: psql's own output is buffered until it exits).
declare -A HELD_FD=() HELD_PID=()

# held_open NAME [I]: connect, over TCP from inside host I's namespace with
# its login, or (no I) on the unix socket as the superuser
held_open() {
	local name=$1 i=${2:-} d=$T/held-$1 fd
	mkdir -p "$d"
	chown "$FLEET_USER:" "$d"
	mkfifo "$d/in"
	chown "$FLEET_USER:" "$d/in"
	if [ -n "$i" ]; then
		fleet_spawn "$i" "$d/psql.log" psql -X -q -At "$(fleet_conninfo "$i")" -f "$d/in"
		HELD_PID[$name]=$FLEET_SPAWNED
	else
		runuser -u "$FLEET_USER" -- "$FLEET_BINDIR/psql" -X -q -At -h "$FLEET_PG_DIR" -p "$FLEET_PG_PORT" \
			-U postgres -d nadi -f "$d/in" >>"$d/psql.log" 2>&1 </dev/null &
		HELD_PID[$name]=$!
		FLEET_PIDS+=("$!")
	fi
	# read-write: the open does not wait for psql (which opens the fifo only
	# once connected, and never if it cannot connect); closing it is psql's EOF
	exec {fd}<>"$d/in"
	HELD_FD[$name]=$fd
}

# held_send NAME TAG SQL: send SQL (no semicolon); its rows go to file TAG
held_send() { echo "$3 \\g $T/held-$1/$2" >&"${HELD_FD[$1]}"; }

# held_answer NAME TAG: the rows of the query TAG, once they came ("" before)
held_answer() { cat "$T/held-$1/$2" 2>/dev/null; }

# held_is NAME TAG VALUE: the answer to TAG came and is VALUE
held_is() { [ "$(held_answer "$1" "$2")" = "$3" ]; }

# held_has NAME TAG: the answer to TAG came
held_has() { [ -s "$T/held-$1/$2" ]; }

# held_close NAME: end the session; fails when psql did not exit 0
held_close() {
	local fd=${HELD_FD[$1]}
	exec {fd}>&-
	wait "${HELD_PID[$1]}"
}

# ---- PostgreSQL ---------------------------------------------------------------

# fleet_pg_start N [CONF LINE...]: a cluster in $T/pg, run as the test user,
# with one login in nadi_cell per host (fleet_cell_I, a scram password,
# bound to cell host id fleet-I) and a password file per host.
fleet_pg_start() {
	local n=$1 i addrs="" pw line
	shift
	FLEET_BINDIR=$("${PG_CONFIG:-pg_config}" --bindir)
	FLEET_PG_DIR=$T/pg
	mkdir -p "$FLEET_PG_DIR"
	chown "$FLEET_USER:" "$FLEET_PG_DIR"
	runuser -u "$FLEET_USER" -- "$FLEET_BINDIR/initdb" -A trust -E UTF8 --no-sync -U postgres \
		-D "$FLEET_PG_DIR/data" >"$FLEET_PG_DIR/initdb.log" 2>&1 || return 1
	for i in $(seq 0 $((n - 1))); do addrs+="${addrs:+,}$(fleet_host_addr "$i")"; done
	{
		echo "listen_addresses = '$addrs'"
		echo "unix_socket_directories = '$FLEET_PG_DIR'"
		echo "port = $FLEET_PG_PORT"
		echo "fsync = off"
		echo "password_encryption = 'scram-sha-256'"
		echo "shared_preload_libraries = 'nadi'"
		echo "nadi.database = 'nadi'"
		echo "nadi.cell_workers = 0"
		echo "log_line_prefix = '%m [%p] %e %q%u@%d %r '"
		for line in "$@"; do echo "$line"; done
	} >>"$FLEET_PG_DIR/data/postgresql.conf"
	# the test's own connections: the unix socket; the hosts: TCP from the
	# namespaces' addresses, with a password, nothing else
	cat >"$FLEET_PG_DIR/data/pg_hba.conf" <<HBA
local all all trust
host nadi all 10.214.0.0/16 scram-sha-256
HBA
	fleet_pg_ctl start || return 1
	fleet_psql postgres -c "CREATE DATABASE nadi" >/dev/null || return 1
	fleet_psql nadi -c "CREATE EXTENSION nadi" >/dev/null || return 1
	for i in $(seq 0 $((n - 1))); do
		pw=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
		fleet_psql nadi -c "CREATE ROLE fleet_cell_$i LOGIN PASSWORD '$pw' IN ROLE nadi_cell" \
			-c "SELECT nadi.host_bind('cell', 'fleet-$i', 'fleet_cell_$i')" >/dev/null || return 1
		printf '%s:%s:nadi:fleet_cell_%s:%s\n' "$(fleet_host_addr "$i")" "$FLEET_PG_PORT" "$i" "$pw" >"$T/pgpass.$i"
		chown "$FLEET_USER:" "$T/pgpass.$i"
		chmod 600 "$T/pgpass.$i"
	done
}

# fleet_pg_ctl ARGS...: pg_ctl on the cluster, as the test user
fleet_pg_ctl() {
	runuser -u "$FLEET_USER" -- "$FLEET_BINDIR/pg_ctl" -D "$FLEET_PG_DIR/data" -l "$FLEET_PG_DIR/server.log" \
		-w -t 60 "$@" >>"$FLEET_PG_DIR/pg_ctl.log" 2>&1
}

# fleet_psql DB [PSQL ARGS...]: as the superuser "postgres", on the unix socket
fleet_psql() {
	local db=$1
	shift
	runuser -u "$FLEET_USER" -- "$FLEET_BINDIR/psql" -X -q -At -v ON_ERROR_STOP=1 \
		-h "$FLEET_PG_DIR" -p "$FLEET_PG_PORT" -U postgres -d "$db" "$@"
}

# sql SQL: one statement in the nadi database, its rows on stdout
sql() { fleet_psql nadi -c "$1"; }

# ---- waiting ------------------------------------------------------------------

# wait_until SECONDS CMD...: polls CMD every 0.2 s until it succeeds.
wait_until() {
	local limit=$1 t0
	shift
	t0=$(date +%s)
	while :; do
		"$@" && return 0
		[ $(($(date +%s) - t0)) -lt "$limit" ] || return 1
		sleep 0.2
	done
}

# ns_sql_is I SQL VALUE: the statement, run by host I's login over TCP, returns VALUE
ns_sql_is() { [ "$(fleet_ns_psql "$1" "$2" 2>/dev/null)" = "$3" ]; }

# sql_is SQL VALUE: the statement returns exactly VALUE
sql_is() { [ "$(sql "$1" 2>/dev/null)" = "$2" ]; }

# ---- cleanup ------------------------------------------------------------------

fleet_cleanup() {
	local p ns hv
	for p in "${FLEET_PIDS[@]}"; do
		kill -KILL "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	FLEET_PIDS=()
	if [ -n "$FLEET_PG_DIR" ] && [ -f "$FLEET_PG_DIR/data/postmaster.pid" ]; then
		fleet_pg_ctl -m immediate stop
	fi
	for hv in "${FLEET_VETH[@]}"; do
		ip link del "$hv" 2>/dev/null
	done
	for ns in "${FLEET_NS[@]}"; do
		# anything still running inside (a daemon's child) dies with it
		for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
		ip netns del "$ns" 2>/dev/null
	done
	FLEET_VETH=()
	FLEET_NS=()
}

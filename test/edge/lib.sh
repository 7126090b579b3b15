# shellcheck shell=bash
# Helpers for test/suites/30-edge and bench/edge: a throwaway PostgreSQL
# cluster with the nadi extension and its workers, nadi-edge processes, and
# tokens.  Source it; it defines functions and sets nothing else up.
#
# PostgreSQL refuses to run as root, so the cluster runs as an unprivileged
# user (EDGE_TEST_USER, else NADI_TEST_USER, else nadi-edge-test, created
# when missing) in a directory that user owns; the server listens on a Unix
# socket there only.

# shellcheck source=scripts/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/scripts/lib.sh"

EDGE_TEST_USER=${EDGE_TEST_USER:-${NADI_TEST_USER:-nadi-edge-test}}
PG_CONFIG=${PG_CONFIG:-pg_config}
PG_BINDIR=$("$PG_CONFIG" --bindir)

# as_pg CMD...: run CMD as the cluster's user
as_pg() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u "$EDGE_TEST_USER" -- env -u PGHOST -u PGPORT -u PGUSER -u PGDATABASE "$@"
	else
		"$@"
	fi
}


# cluster_start DIR: initdb, configure, start, create database "nadi" with
# the extension, a login role "edge" in nadi_edge.  Sets PGSOCK, PGPORT_T.
cluster_start() {
	local dir=$1
	if [ "$(id -u)" -eq 0 ] && ! id -u "$EDGE_TEST_USER" >/dev/null 2>&1; then
		useradd --system --no-create-home --user-group --shell /usr/sbin/nologin \
			--comment "nadi edge tests" "$EDGE_TEST_USER"
	fi
	mkdir -p "$dir"
	[ "$(id -u)" -eq 0 ] && chown "$EDGE_TEST_USER:" "$dir"
	PGSOCK=$dir
	PGPORT_T=5432   # a unix socket in the cluster's own directory only: no port to race for
	as_pg "$PG_BINDIR/initdb" -A trust -E UTF8 --no-sync -U postgres -D "$dir/data" >"$dir/initdb.log" 2>&1 || {
		cat "$dir/initdb.log"
		return 1
	}
	cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$dir'
port = $PGPORT_T
fsync = off
max_connections = 200
shared_preload_libraries = 'nadi'
nadi.database = 'nadi'
nadi.cell_workers = 1
nadi.cell_host_id = 'edge-test-cell'
nadi.sandboxd_url = 'http://127.0.0.1:9'
nadi.tool_timeout = '2s'
nadi.max_attempts = 2
nadi.retry_backoff_base = '100ms'
nadi.heartbeat_interval = '500ms'
CONF
	as_pg "$PG_BINDIR/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null || {
		tail -50 "$dir/server.log"
		return 1
	}
	psql_su postgres -c "CREATE DATABASE nadi" >/dev/null &&
		psql_su nadi -c "CREATE EXTENSION nadi" \
			-c "CREATE ROLE edge LOGIN IN ROLE nadi_edge" \
			-c "CREATE ROLE edge_admin LOGIN IN ROLE nadi_admin" \
			-c "SELECT nadi.key_create()" >/dev/null
}

cluster_stop() {
	local dir=$1
	[ -f "$dir/data/postmaster.pid" ] || return 0
	as_pg "$PG_BINDIR/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
}

# psql_su DB ARGS...: psql as the bootstrap superuser
psql_su() {
	local db=$1
	shift
	as_pg "$PG_BINDIR/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$PGSOCK" -p "$PGPORT_T" -U postgres -d "$db" "$@"
}

# mint TENANT SUBJECT [SCOPE [TTL [SESSION]]]: a token
mint() {
	local sid=${5:+"'$5'"}
	psql_su nadi -c "SELECT nadi.token_mint('$1', '$2', '${3:-tenant}', '${4:-1 hour}'${sid:+, $sid})"
}

edge_conninfo() {
	echo "host=$PGSOCK port=$PGPORT_T dbname=nadi user=${1:-edge}"
}

# edge_start LOGFILE PORT ARGS...: start nadi-edge in the background; sets
# EDGE_PID and EDGE_PORT (the port it bound: PORT 0 lets the kernel pick one,
# its --ready-file LOGFILE.ready says which).  A fixed PORT (a restart on the
# port clients know) that another process holds for a moment is tried again.
# Waits until /readyz answers.
edge_start() {
	local log=$1 port=$2 try i
	shift 2
	EDGE_PORT=""
	for try in $(seq 1 10); do
		rm -f "$log.ready"
		"$EDGE_BIN" --listen 127.0.0.1 --port "$port" --ready-file "$log.ready" --db "$(edge_conninfo)" "$@" \
			>>"$log" 2>&1 &
		EDGE_PID=$!
		EDGE_PORT=$(wait_ready "$log.ready" "$EDGE_PID" 30) && break
		if kill -0 "$EDGE_PID" 2>/dev/null || [ "$port" = 0 ] || ! tail -n 3 "$log" | grep -q "could not listen"; then
			kill -KILL "$EDGE_PID" 2>/dev/null
			tail -20 "$log"
			return 1
		fi
		wait "$EDGE_PID" 2>/dev/null
		echo "# port $port is taken (try $try); trying again" >&2
		sleep 1
	done
	[ -n "$EDGE_PORT" ] || { tail -20 "$log"; return 1; }
	for i in $(seq 1 100); do
		if curl -fsS "http://127.0.0.1:$EDGE_PORT/readyz" >/dev/null 2>&1; then
			return 0
		fi
		kill -0 "$EDGE_PID" 2>/dev/null || { tail -20 "$log"; return 1; }
		sleep 0.1
	done
	tail -20 "$log"
	return 1
}

# shellcheck shell=bash
# Helpers for test/suites/20-sandboxd and bench/sandbox: the daemon on a
# scratch state directory, HTTP calls through curl, JSON through jq, a
# throwaway PostgreSQL cluster for registration.  Source it after setting T
# (a scratch directory); it defines functions and a few variables only.

# shellcheck source=scripts/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/scripts/lib.sh"

SBX_SRC=${NADI_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
SBX_DIR=$SBX_SRC/sandboxd
SBX_BIN=${SBX_BIN:-$SBX_DIR/nadi-sandboxd}
SBX_INIT=$SBX_DIR/nadi-sbx-init
SBX_PID=""
SBX_PORT=""
SBX_TOKEN=""

# sbx_requirements: prints why the daemon cannot run here, or nothing.
sbx_requirements() {
	[ "$(id -u)" -eq 0 ] || { echo "not root"; return; }
	command -v systemd-nspawn >/dev/null || { echo "systemd-nspawn missing (systemd-container)"; return; }
	command -v btrfs >/dev/null || { echo "btrfs missing (btrfs-progs)"; return; }
	[ -x /sbin/mkfs.btrfs ] || [ -x /usr/sbin/mkfs.btrfs ] || { echo "mkfs.btrfs missing (btrfs-progs)"; return; }
	[ -x /bin/busybox ] || { echo "busybox missing (busybox-static)"; return; }
	command -v curl >/dev/null || { echo "curl missing"; return; }
	command -v jq >/dev/null || { echo "jq missing"; return; }
	[ -e /dev/loop-control ] || { echo "no /dev/loop-control (loop devices)"; return; }
	grep -qw btrfs /proc/filesystems || modprobe btrfs 2>/dev/null || { echo "kernel without btrfs"; return; }
	grep -qw btrfs /proc/filesystems || echo "kernel without btrfs"
}


# sbx_setup: token, image (once per scratch directory).
sbx_setup() {
	mkdir -p "$T/images"
	head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$T/token"
	chmod 600 "$T/token"
	SBX_TOKEN=$(cat "$T/token")
	[ -d "$T/images/busybox" ] || "$SBX_DIR/images/build-busybox" "$T/images/busybox" >/dev/null
}

# sbx_start [FLAGS...]: start the daemon (SBX_BIN) on a port the kernel
# picks and wait until it serves; SBX_PORT is that port.
# SBX_DISK_MAX (default 40M) is its disk_max; empty: the daemon's default.
sbx_start() {
	local disk=${SBX_DISK_MAX-40M}
	rm -f "$T/sbx.ready"
	"$SBX_BIN" --state-dir="$T/state" --image-dir="$T/images" --token-file="$T/token" \
		--listen-tcp=127.0.0.1:0 --ready-file="$T/sbx.ready" --listen-unix="$T/sbx.sock" --agent-path="$SBX_INIT" \
		--loop-size=2G --memory-max=64M --pids-max=32 --call-timeout=10s --output-limit=64K \
		--fsize-max=8M --max-request-bytes=256K --max-file-bytes=1M --idle-timeout=30s \
		--tmp-size=16M ${disk:+"--disk-max=$disk"} "$@" >>"$T/daemon.log" 2>&1 &
	SBX_PID=$!
	# start-up imports images first: a large one takes a while (SBX_START_WAIT seconds)
	SBX_PORT=$(wait_ready "$T/sbx.ready" "$SBX_PID" "${SBX_START_WAIT:-60}") && return 0
	echo "daemon did not come up; log:" >&2
	tail -n 30 "$T/daemon.log" >&2
	return 1
}

# sbx_kill_wait PID [SIGNAL]: send SIGNAL (TERM) to PID, KILL it after 5 s,
# and wait for it; returns its exit status.
sbx_kill_wait() {
	local pid=$1 sig=${2:-TERM}
	kill -"$sig" "$pid" 2>/dev/null
	for _ in $(seq 1 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
}

# sbx_stop [SIGNAL]: stop the daemon we started and wait for it (5 s, then KILL).
sbx_stop() {
	[ -n "$SBX_PID" ] || return 0
	sbx_kill_wait "$SBX_PID" "${1:-TERM}"
	SBX_RC=$?
	SBX_PID=""
}

# api METHOD PATH [BODY [CURL ARGS...]]: prints the status; the body is in $T/body.
api() {
	local m=$1 p=$2 data=()
	shift 2
	if [ $# -gt 0 ]; then
		data=(--data-binary "$1")
		shift
	fi
	curl -s -m 60 -o "$T/body" -w '%{http_code}' -X "$m" -H "Authorization: Bearer $SBX_TOKEN" \
		-H 'Content-Type: application/json' "${data[@]}" "$@" "http://127.0.0.1:$SBX_PORT$p"
}

# tool SANDBOX NAME ARGS_JSON: a tool call; prints the status.
tool() {
	api POST "/v1/sandboxes/$1/tools/$2" "{\"args\":$3}"
}

# j FILTER: a jq filter over the last body (raw output).
j() {
	jq -r "$1" <"$T/body" 2>/dev/null
}

# sbx_container_pids [DIR]: pids of the nspawn processes running this scratch
# directory's sandboxes (from /proc, so that procps is not needed); DIR: a
# prefix of their --directory other than $T/state/store/sandboxes/.
sbx_container_pids() {
	local f pid dir=${1:-$T/state/store/sandboxes/}
	for f in /proc/[0-9]*/cmdline; do
		pid=${f#/proc/}
		pid=${pid%/cmdline}
		[ "$pid" = "$$" ] && continue
		grep -qa -- "--directory=$dir" "$f" 2>/dev/null && echo "$pid"
	done
}

# sbx_cleanup: kill our daemon, unmount and detach its store, remove cgroups.
sbx_cleanup() {
	local dev p
	sbx_proxy_stub_stop
	if [ -n "$SBX_PID" ]; then
		kill -KILL "$SBX_PID" 2>/dev/null
		wait "$SBX_PID" 2>/dev/null
		SBX_PID=""
	fi
	# containers die with the daemon (their stdin closes); give them a moment
	for _ in $(seq 1 30); do
		[ -n "$(sbx_container_pids)" ] || break
		sleep 0.1
	done
	# by pid, and only processes running one of this scratch directory's sandboxes
	for p in $(sbx_container_pids); do
		kill -KILL "$p" 2>/dev/null
	done
	if mountpoint -q "$T/state/store" 2>/dev/null; then
		umount "$T/state/store" 2>/dev/null || umount -l "$T/state/store"
	fi
	for dev in $(losetup -j "$T/state/store.img" 2>/dev/null | cut -d: -f1); do
		losetup -d "$dev" 2>/dev/null
	done
	# control groups of a daemon that could not clean up (its parents are per state dir)
	local d g
	for d in $(sed -n -e 's/.*limits: cgroup v1 below \(.*\) and \(.*\) (memory.*/\1 \2/p' \
		-e 's/.*limits: cgroup v2 below \(.*\/nadi-sandboxd-[0-9a-f]*\) (.*/\1/p' "$T/daemon.log" 2>/dev/null | sort -u); do
		[ -d "$d" ] || continue
		for g in "$d"/sbx-*; do
			[ -d "$g" ] && rmdir "$g" 2>/dev/null
		done
		rmdir "$d" 2>/dev/null
	done
}

# ---- egress: git mirrors and the proxy socket ---------------------------------

# sbx_git_image: the busybox image with the host's git ($T/images/busybox-git).
sbx_git_image() {
	[ -d "$T/images/busybox-git" ] || "$SBX_DIR/images/build-busybox" --with-git "$T/images/busybox-git" >/dev/null
}

# sbx_mirror MIRROR_DIR NAME [TENANT]: a scratch upstream ($T/up-NAME[-TENANT]:
# README "hello from NAME[ of TENANT]" on main, a second commit on branch dev)
# mirrored as nadi-gitd lays mirrors out (git clone --mirror into
# MIRROR_DIR/shared/NAME.git, or MIRROR_DIR/tenants/<sha256 of TENANT>/NAME.git;
# world-readable).
sbx_mirror() {
	local dir=$1/shared name=$2 up=$T/up-$2${3:+-$3}
	if [ -n "${3:-}" ]; then
		mkdir -p -m 711 "$1/tenants"
		dir=$1/tenants/$(printf %s "$3" | sha256sum | cut -c1-64)
	fi
	mkdir -p -m 755 "$dir"
	local g=(git -C "$up" -c user.name=nadi-test -c user.email=test@nadi.invalid -c commit.gpgsign=false)
	git init -q -b main "$up" &&
		echo "hello from $name${3:+ of $3}" >"$up/README" && "${g[@]}" add README && "${g[@]}" commit -q -m one &&
		"${g[@]}" checkout -q -b dev && echo dev >"$up/DEV" && "${g[@]}" add DEV && "${g[@]}" commit -q -m two &&
		"${g[@]}" checkout -q main &&
		git clone -q --mirror "$up" "$dir/$name.git" && chmod -R a+rX "$dir/$name.git"
}

# sbx_proxy_stub SOCKET: stand in for nadi-credproxy on a sandbox's socket:
# every request is answered 200 with the request line and headers it had.
# Sets STUB_PID; sbx_proxy_stub_stop ends it.
STUB_PID=""
sbx_proxy_stub() {
	local sock=$1 i
	node -e '
const net = require("net"), fs = require("fs"), path = process.argv[1];
try { fs.unlinkSync(path); } catch (e) {}
net.createServer(s => {
	let buf = "";
	s.on("error", () => {});
	s.on("data", d => {
		buf += d.toString("latin1");
		const end = buf.indexOf("\r\n\r\n");
		if (end < 0) return;
		const body = "proxy saw:\n" + buf.slice(0, end) + "\n";
		s.end("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: " +
			Buffer.byteLength(body) + "\r\n\r\n" + body);
	});
}).listen(path, () => fs.chmodSync(path, 0o666));
' "$sock" >>"$T/stub.log" 2>&1 &
	STUB_PID=$!
	for i in $(seq 1 50); do
		[ -S "$sock" ] && return 0
		sleep 0.1
	done
	return 1
}

sbx_proxy_stub_stop() {
	[ -n "$STUB_PID" ] || return 0
	kill "$STUB_PID" 2>/dev/null
	wait "$STUB_PID" 2>/dev/null
	STUB_PID=""
}

# ---- PostgreSQL (registration test) -----------------------------------------

PG_T_DIR=""
PG_T_USER=""

# pg_t_start DIR USER: cluster with the nadi extension in DIR run as USER.
pg_t_start() {
	local bindir
	PG_T_DIR=$1
	PG_T_USER=$2
	bindir=$("${PG_CONFIG:-pg_config}" --bindir)
	mkdir -p "$PG_T_DIR"
	chown "$PG_T_USER:" "$PG_T_DIR"
	PG_T_PORT=5432   # a unix socket in the cluster's own directory only: no port to race for
	runuser -u "$PG_T_USER" -- "$bindir/initdb" -A trust -E UTF8 --no-sync -U postgres \
		-D "$PG_T_DIR/data" >"$PG_T_DIR/initdb.log" 2>&1 || return 1
	cat >>"$PG_T_DIR/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$PG_T_DIR'
port = $PG_T_PORT
fsync = off
shared_preload_libraries = 'nadi'
nadi.broker = off
nadi.cell_workers = 0
CONF
	runuser -u "$PG_T_USER" -- "$bindir/pg_ctl" -D "$PG_T_DIR/data" -l "$PG_T_DIR/server.log" -w -t 60 \
		start >/dev/null || return 1
	pg_t_psql postgres -c "CREATE DATABASE nadi" >/dev/null &&
		pg_t_psql nadi -c "CREATE EXTENSION nadi" \
			-c "CREATE ROLE sbx_host LOGIN IN ROLE nadi_sandbox_host" \
			-c "SELECT nadi.host_bind('sandbox', 'sbx-test-host', 'sbx_host')" >/dev/null
}

# pg_t_psql DB [PSQL ARGS...] (as the superuser "postgres")
pg_t_psql() {
	local db=$1
	shift
	runuser -u "$PG_T_USER" -- "$("${PG_CONFIG:-pg_config}" --bindir)/psql" -X -q -At -v ON_ERROR_STOP=1 \
		-h "$PG_T_DIR" -p "$PG_T_PORT" -U postgres -d "$db" "$@"
}

pg_t_stop() {
	[ -n "$PG_T_DIR" ] && [ -f "$PG_T_DIR/data/postmaster.pid" ] || return 0
	runuser -u "$PG_T_USER" -- "$("${PG_CONFIG:-pg_config}" --bindir)/pg_ctl" -D "$PG_T_DIR/data" \
		-m immediate -w stop >/dev/null 2>&1
}

# ---- several daemons at once (forks across hosts) ---------------------------

declare -A SBX_NODE_PID SBX_NODE_PORT

# sbx_node_start NAME HOST_ID PG_USER [FLAGS...]: a daemon of its own on
# $T/NAME/state (its own loop-mounted store), registered as HOST_ID in the
# cluster of pg_t_start as PG_USER, advertising the port it bound; its log
# is $T/NAME.log.  SBX_DISK_MAX (default 40M) as for sbx_start.
sbx_node_start() {
	local name=$1 host=$2 user=$3 disk=${SBX_DISK_MAX-40M}
	shift 3
	mkdir -p "$T/$name"
	rm -f "$T/$name.ready"
	"$SBX_BIN" --state-dir="$T/$name/state" --image-dir="$T/images" --token-file="$T/token" \
		--listen-tcp=127.0.0.1:0 --ready-file="$T/$name.ready" --agent-path="$SBX_INIT" \
		--loop-size="${SBX_LOOP_SIZE:-1G}" --memory-max=64M --pids-max=32 --call-timeout=10s \
		--idle-timeout=30s --tmp-size=16M ${disk:+"--disk-max=$disk"} --host-id="$host" \
		--advertise=http://127.0.0.1:0 --reap-interval=0 \
		--pg-conninfo="host=$PG_T_DIR port=$PG_T_PORT dbname=nadi user=$user" \
		"$@" >>"$T/$name.log" 2>&1 &
	SBX_NODE_PID[$name]=$!
	SBX_NODE_PORT[$name]=$(wait_ready "$T/$name.ready" "${SBX_NODE_PID[$name]}" 60) && return 0
	echo "daemon $name did not come up; log:" >&2
	tail -n 20 "$T/$name.log" >&2
	return 1
}

# on NAME METHOD PATH [BODY [CURL ARGS...]]: api against daemon NAME.
on() {
	local name=$1
	shift
	SBX_PORT=${SBX_NODE_PORT[$name]} api "$@"
}

# sbx_node_stop NAME: SIGTERM (drain), then KILL after 5 s.
sbx_node_stop() {
	[ -n "${SBX_NODE_PID[$1]:-}" ] || return 0
	sbx_kill_wait "${SBX_NODE_PID[$1]}"
	SBX_NODE_PID[$1]=""
}

# sbx_node_cleanup NAME...: kill those daemons and their containers, unmount their stores.
sbx_node_cleanup() {
	local name dev p
	for name in "$@"; do
		if [ -n "${SBX_NODE_PID[$name]:-}" ]; then
			kill -KILL "${SBX_NODE_PID[$name]}" 2>/dev/null
			wait "${SBX_NODE_PID[$name]}" 2>/dev/null
			SBX_NODE_PID[$name]=""
		fi
	done
	for _ in $(seq 1 30); do
		[ -n "$(sbx_container_pids "$T/")" ] || break
		sleep 0.1
	done
	for p in $(sbx_container_pids "$T/"); do
		kill -KILL "$p" 2>/dev/null
	done
	for name in "$@"; do
		if mountpoint -q "$T/$name/state/store" 2>/dev/null; then
			umount "$T/$name/state/store" 2>/dev/null || umount -l "$T/$name/state/store"
		fi
		for dev in $(losetup -j "$T/$name/state/store.img" 2>/dev/null | cut -d: -f1); do
			losetup -d "$dev" 2>/dev/null
		done
	done
}

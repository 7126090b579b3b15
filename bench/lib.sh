# bench/lib.sh — what bench/inbox and bench/compare share: who runs the
# cluster, building and installing the extension, one throwaway cluster in a
# temporary directory, and cleaning up whatever happens.  Sourced, not run.
#
# The caller sets `repo` and calls, in order:
#   bench_prepare            checks, user, temporary directory, trap, build
#   bench_initdb CONF...     initdb; CONF lines are appended to postgresql.conf
#   bench_start              start the cluster (bench_stop, bench_restart too)
# and uses psql_c [-d DB] ..., as_user CMD..., $tmp, $port, $dsn, $PGBIN.
# bench_on_exit CMD registers more cleanup (run before the cluster stops).

BENCH_USER=${NADI_BENCH_USER:-nadi-bench}  # as root: the user that runs the cluster

say() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

bench_exit_hooks=()
bench_on_exit() { bench_exit_hooks+=("$1"); }

started=0
tmp=
bench_cleanup() {
	local rc=$? hook
	trap - EXIT INT TERM
	for hook in "${bench_exit_hooks[@]}"; do
		eval "$hook" >/dev/null 2>&1 || true
	done
	if [ "$started" = 1 ]; then
		say "stopping the cluster"
		(cd "$tmp" && as_user "$PGBIN/pg_ctl" -D "$tmp/data" -m fast -w -t 60 stop >/dev/null 2>&1) ||
			(cd "$tmp" && as_user "$PGBIN/pg_ctl" -D "$tmp/data" -m immediate -w stop >/dev/null 2>&1) || true
	fi
	[ -n "$tmp" ] && rm -rf "$tmp"
	exit $rc
}

# Checks, the user, the temporary directory, the traps, the build of the
# extension (installed when we can) and of bench/inbox.c.
bench_prepare() {
	command -v pg_config >/dev/null || die "pg_config not found: install the PostgreSQL server development files"
	command -v cc >/dev/null || die "cc not found"
	command -v pkg-config >/dev/null || die "pkg-config not found"
	pkg-config --exists libpq || die "libpq not found by pkg-config: install libpq-dev"
	PGBIN=$(pg_config --bindir)
	local tool
	for tool in initdb pg_ctl psql pgbench; do
		[ -x "$PGBIN/$tool" ] || die "$PGBIN/$tool not found"
	done

	if [ "$(id -u)" -eq 0 ]; then
		if ! id "$BENCH_USER" >/dev/null 2>&1; then
			say "creating user $BENCH_USER"
			useradd --system --user-group --no-create-home --home-dir /nonexistent \
				--shell /usr/sbin/nologin "$BENCH_USER" || die "cannot create user $BENCH_USER"
		fi
		as_user() { runuser -u "$BENCH_USER" -- "$@"; }
	else
		BENCH_USER=$(id -un)
		as_user() { "$@"; }
	fi

	tmp=$(mktemp -d "${TMPDIR:-/tmp}/nadi-bench.XXXXXX")
	chmod 0755 "$tmp"
	trap bench_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM

	# The bench needs only the extension, so the daemons (edge/, sandboxd/) stay out.
	say "building the extension"
	if ! make -C "$repo" DAEMON_DIRS= >"$tmp/build.log" 2>&1; then
		tail -n 30 "$tmp/build.log" >&2
		die "make -C $repo failed (log above)"
	fi
	installed=0
	if [ -w "$(pg_config --pkglibdir)" ] && [ -w "$(pg_config --sharedir)/extension" ]; then
		if ! make -C "$repo" DAEMON_DIRS= install >>"$tmp/build.log" 2>&1; then
			tail -n 30 "$tmp/build.log" >&2
			die "make -C $repo install failed (log above)"
		fi
		installed=1
	else
		[ -f "$(pg_config --sharedir)/extension/nadi.control" ] ||
			die "cannot install the extension as $(id -un), and it is not installed: run as root"
		say "not root: using the installed extension ($(pg_config --pkglibdir)/nadi.so)"
	fi
	# shellcheck disable=SC2046  # pkg-config output is meant to be split
	cc -O2 -Wall -Wextra -Werror $(pkg-config --cflags libpq) -o "$tmp/inbox-load" \
		"$repo/bench/inbox.c" $(pkg-config --libs libpq) -lpthread ||
		die "cannot build bench/inbox.c"
	cp "$repo/bench/sql/setup.sql" "$repo/bench/sql/insert.sql" "$tmp/"
	chmod 0644 "$tmp/setup.sql" "$tmp/insert.sql"
	[ "$(id -u)" -eq 0 ] && chown "$BENCH_USER:" "$tmp"

	# A port nobody listens on (the cluster itself only has a socket in $tmp).
	port=$((20000 + RANDOM % 30000))
	while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
		port=$((port + 1))
	done
	dsn="host=$tmp port=$port user=postgres dbname=postgres"
}

# initdb, with the common settings and then each argument as a line of
# postgresql.conf.
bench_initdb() {
	say "initdb in $tmp/data (port $port)"
	(cd "$tmp" && as_user "$PGBIN/initdb" -D "$tmp/data" -U postgres -A trust -E UTF8 \
		--no-instructions >"$tmp/initdb.log" 2>&1) || { cat "$tmp/initdb.log" >&2; die "initdb failed"; }
	{
		printf '\n# bench\n'
		printf '%s\n' "port = $port" "listen_addresses = ''" "unix_socket_directories = '$tmp'" \
			"shared_buffers = 256MB" "max_connections = 200" \
			"synchronous_commit = on" "fsync = on"
		printf '%s\n' "$@"
	} >>"$tmp/data/postgresql.conf"
}

bench_start() {
	(cd "$tmp" && as_user "$PGBIN/pg_ctl" -D "$tmp/data" -l "$tmp/server.log" -w -t 60 start >/dev/null) ||
		{ tail -n 30 "$tmp/server.log" >&2 || true; die "the cluster did not start (log above)"; }
	started=1
}

bench_stop() {
	(cd "$tmp" && as_user "$PGBIN/pg_ctl" -D "$tmp/data" -m fast -w -t 60 stop >/dev/null) ||
		die "the cluster did not stop"
	started=0
}

bench_restart() { bench_stop; bench_start; }

# psql as the cluster's owner: psql_c [-d DBNAME] psql-args...
psql_c() {
	local db=postgres
	if [ "${1:-}" = -d ]; then db=$2; shift 2; fi
	(cd "$tmp" && as_user "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 \
		-d "host=$tmp port=$port user=postgres dbname=$db" "$@")
}

# CREATE EXTENSION nadi in DB, and make sure it is this tree's build (the
# install directories are shared by every build on the machine).
bench_create_extension() {
	local db=${1:-postgres}
	psql_c -d "$db" -c "CREATE EXTENSION nadi" || die "CREATE EXTENSION nadi failed"
	if [ "$installed" = 1 ] &&
		! { cmp -s "$repo/nadi.so" "$(pg_config --pkglibdir)/nadi.so" &&
			cmp -s "$repo/sql/nadi--1.0.sql" "$(pg_config --sharedir)/extension/nadi--1.0.sql"; }; then
		die "another build of nadi was installed over this one while the bench started; run it again"
	fi
	[ "$(psql_c -d "$db" -c "SELECT to_regprocedure('nadi.command_claim(uuid,bigint)') IS NOT NULL")" = t ] ||
		die "the nadi in the server lacks nadi.command_claim: not this tree's build?"
}

# Machine facts for a report.
bench_machine() {
	local mem_gib cpu fs
	mem_gib=$(awk '/^MemTotal:/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
	cpu=$(sed -n -E 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n 1)
	fs=$(df -PT "$tmp" | awk 'NR == 2 { print $2 }')
	printf '%s CPU(s)%s, %s GiB memory, %s, data directory on %s' \
		"$(nproc)" "${cpu:+ ($cpu)}" "$mem_gib" "$(uname -sr)" "$fs"
}

setting() { psql_c -c "SELECT current_setting('$1')"; }

# The value of key=value in a line of the load generator's output.
kv_of() { printf '%s\n' " $1" | sed -n -E "s/.* $2=([^ ]+).*/\1/p"; }

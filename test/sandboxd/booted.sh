# shellcheck shell=bash
# Helpers for test/suites/72-sandboxd-systemd: a Debian root booted with
# systemd as its PID 1 (systemd-nspawn -b), in which nadi-sandboxd runs as a
# service and its containers as transient scope units.  Source it after
# setting T (a scratch directory); it defines functions and variables only.
#
# What the booted container gets from the host beyond nspawn's defaults is
# the smallest set nested containers on a loop-mounted BTRFS store need (see
# docs/SANDBOXD.md, "Under systemd"): --bind=/dev/loop-control and
# --bind=/dev/loopN for every loop node of the host (LOOP_CTL_GET_FREE names
# a node that must exist in the container's private /dev; nspawn's has none).
# It shares the host's network (the tests listen on 127.0.0.1, ports the
# kernel picks); NSPAWN options given to boot_start add to this.
# test/systemd/booted-units.sh (70-packages, 71-systemd-units) boots with it too, with
# BOOT_MINUS=loop (they need no loop device) and --private-network.

BOOT_NSPAWN="" # pid of the outer systemd-nspawn
BOOT_LEADER="" # pid of the container's systemd (PID 1 inside)
BOOT_STATUS="" # nspawn's exit status, after boot_stop (0: powered off cleanly)

# (BOOT_MINUS=loop boots without the loop nodes, to show what they are for.)
BOOT_MINUS=${BOOT_MINUS:-}

# boot_loop_binds: --bind options for /dev/loop-control and the loop nodes.
boot_loop_binds() {
	local d
	[ "$BOOT_MINUS" != loop ] || return 0
	echo "--bind=/dev/loop-control"
	for d in /dev/loop[0-9]*; do
		[ -b "$d" ] && echo "--bind=$d"
	done
}

# boot_start ROOT LOG [NSPAWN OPTIONS...]: boot ROOT, wait until its systemd
# reached multi-user (is-system-running: running or degraded).  Environment
# for nspawn itself (SYSTEMD_NSPAWN_UNIFIED_HIERARCHY) is passed through.
boot_start() {
	local root=$1 log=$2 i state
	shift 2
	# Where the host runs systemd, nspawn runs in a scope of its own with
	# Delegate=yes, so that the container's systemd gets the controllers
	# (systemd-run --scope execs nspawn: $! stays nspawn's pid).
	local wrap=()
	[ ! -d /run/systemd/system ] || wrap=(systemd-run --scope --quiet --collect -p Delegate=yes --)
	# The global lock the caller may hold is not passed on to the container
	# (it must not outlive the caller holding it); the subshell execs, so
	# $! is nspawn's pid.
	# shellcheck disable=SC2046
	(
		for fd in /proc/self/fd/*; do
			fd=${fd##*/}
			[ "$fd" -gt 2 ] 2>/dev/null || continue
			case $(readlink "/proc/self/fd/$fd" 2>/dev/null) in *.lock) eval "exec $fd>&-" ;; esac
		done
		exec setsid "${wrap[@]}" systemd-nspawn -q -b --register=no --keep-unit --console=pipe -D "$root" \
			$(boot_loop_binds) "$@" </dev/null >"$log" 2>&1
	) &
	BOOT_NSPAWN=$!
	for i in $(seq 1 100); do
		BOOT_LEADER=$(boot_leader_pid "$BOOT_NSPAWN")
		[ -n "$BOOT_LEADER" ] && break
		kill -0 "$BOOT_NSPAWN" 2>/dev/null || break
		sleep 0.1
	done
	[ -n "$BOOT_LEADER" ] || { echo "# the container did not start; its log:" >&2; tail -n 30 "$log" >&2; return 1; }
	for i in $(seq 1 600); do
		state=$(boot_in systemctl is-system-running 2>/dev/null) || true
		case $state in
			running | degraded) return 0 ;;
		esac
		kill -0 "$BOOT_NSPAWN" 2>/dev/null || break
		sleep 0.1
	done
	echo "# the container did not reach multi-user (state: ${state:-none}); its log:" >&2
	tail -n 30 "$log" >&2
	return 1
}

# boot_leader_pid NSPAWN_PID: the container's PID 1 as the host sees it.
boot_leader_pid() {
	local c
	for c in $(cat "/proc/$1/task/$1/children" 2>/dev/null); do
		[ "$(cat "/proc/$c/comm" 2>/dev/null)" = systemd ] && { echo "$c"; return 0; }
	done
	return 0
}

# boot_in CMD...: CMD in every namespace of the container, as root, with a
# clean environment (BOOT_ENV: more VAR=VALUE words).
boot_in() {
	# shellcheck disable=SC2086
	nsenter -t "$BOOT_LEADER" -a env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		SYSTEMD_PAGER=cat LANG=C.UTF-8 ${BOOT_ENV:-} "$@"
}

# boot_stop: power the container off (systemctl poweroff, then SIGTERM and
# SIGKILL to nspawn) and wait for nspawn to exit.
boot_stop() {
	local i
	[ -n "$BOOT_NSPAWN" ] || return 0
	if kill -0 "$BOOT_NSPAWN" 2>/dev/null && [ -n "$BOOT_LEADER" ]; then
		boot_in systemctl poweroff --no-block >/dev/null 2>&1
	fi
	for i in $(seq 1 150); do
		kill -0 "$BOOT_NSPAWN" 2>/dev/null || break
		[ "$i" = 100 ] && kill -TERM "$BOOT_NSPAWN" 2>/dev/null
		sleep 0.1
	done
	kill -KILL "$BOOT_NSPAWN" 2>/dev/null
	wait "$BOOT_NSPAWN" 2>/dev/null
	# shellcheck disable=SC2034 # (read by the caller)
	BOOT_STATUS=$?
	BOOT_NSPAWN=""
	BOOT_LEADER=""
}

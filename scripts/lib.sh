# shellcheck shell=bash
# Shared helpers for scripts/bootstrap and scripts/test.  Source it; it sets
# nothing up by itself apart from NADI_ROOT (the repository root).

NADI_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
export NADI_ROOT

# Messages go to stderr so they never mix with a command's captured output.
say()  { printf '%s\n' "$*" >&2; }
warn() { printf '%s: warning: %s\n' "${0##*/}" "$*" >&2; }
die()  { printf '%s: error: %s\n' "${0##*/}" "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# True when sudo exists and works without asking for a password.
have_sudo() { command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; }

# Runs a command as root: directly when we are root, else through a
# non-interactive sudo.  Fails (status 1) when neither is possible.
as_root() {
	if is_root; then
		"$@"
	elif have_sudo; then
		sudo -n "$@"
	else
		return 1
	fi
}

# True when the Debian package is installed (not merely known or half-removed).
pkg_installed() {
	[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

# True when apt knows a candidate version of the package.
pkg_available() {
	local cand
	cand=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { print $2; exit }')
	[ -n "$cand" ] && [ "$cand" != "(none)" ]
}

# Seconds since the epoch, for timing.
now() { date +%s; }

# 75 -> "1m15s", 9 -> "9s"
fmt_duration() {
	local s=$1
	if [ "$s" -ge 60 ]; then
		printf '%dm%02ds' $((s / 60)) $((s % 60))
	else
		printf '%ds' "$s"
	fi
}

# A banner line: "==== text ====", wide enough to find in a long log.
banner() {
	printf '\n======== %s ========\n' "$*"
}

# wait_ready FILE PID [SECONDS]: wait until the daemon PID, started with port
# 0 and --ready-file FILE (remove FILE before starting it), has written the
# port it bound; prints that port.  Fails when the process ends first or
# SECONDS (default 60) pass.  Daemons are never handed a port picked in
# advance: another process could take it before they bind it.
wait_ready() {
	local file=$1 pid=$2 i port
	for i in $(seq 1 $((${3:-60} * 10))); do
		if [ -s "$file" ] && read -r port <"$file" && [ -n "$port" ]; then
			echo "$port"
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	return 1
}

# promtool_check FILE: `promtool check metrics` of a /metrics answer saved in
# FILE; its complaints are printed as "#" comments.  Fails when promtool is
# missing (scripts/bootstrap installs Debian's prometheus package, which has it).
promtool_check() {
	local out
	command -v promtool >/dev/null 2>&1 ||
		{ echo "# promtool missing (scripts/bootstrap installs the prometheus package)"; return 1; }
	out=$(promtool check metrics <"$1" 2>&1) && return 0
	printf '%s\n' "$out" | sed 's/^/#   /'
	return 1
}

# A TCP port on 127.0.0.1 that nothing listens on now, below the kernel's
# ephemeral range (outgoing connections take those).  Racy by nature: use it
# only for what cannot bind port 0 itself (benchmarks' fixed layouts); the
# daemons take port 0 and report theirs (wait_ready).
free_port() {
	local p i lo=32768
	read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || lo=32768
	[ "$lo" -gt 20100 ] || lo=32768
	for i in $(seq 0 199); do
		p=$((20000 + (RANDOM + i * 7919) % (lo - 20000)))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

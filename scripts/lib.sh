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

# A TCP port on 127.0.0.1 that nothing listens on now (for tests and the
# local stack's scratch instances).
free_port() {
	local p i
	for i in $(seq 0 199); do
		p=$((20000 + (RANDOM + i * 7919) % 30000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

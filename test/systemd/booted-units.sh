# shellcheck shell=bash
# booted_check_units ROOT LABEL [NSPAWN OPTIONS...]: test/systemd/check-units
# in ROOT booted with systemd as its PID 1, for test/suites/70-packages (the
# Debian 13 packages) and 71-systemd-units (Debian 12, make install).  ROOT
# is a throwaway overlay with the daemons, their units and users installed;
# it is booted (test/sandboxd/booted.sh, without loop nodes, on a private
# network, as the machine LABEL), check-units runs there and the container
# powers off.  Each check-units line becomes one of the caller's checks
# (its ok, bad and check functions; names prefixed by UNITS_PREFIX), plus
# three here: the boot, check-units' end, the power-off.  Needs T (scratch)
# and SRC.  The caller's trap calls boot_stop (and unmounts ROOT after it).

# shellcheck source=test/sandboxd/booted.sh
. "$SRC/test/sandboxd/booted.sh"
BOOT_MINUS=loop
UNITS_PREFIX=${UNITS_PREFIX:-}

booted_check_units() {
	local root=$1 label=$2 t0 state rc line
	shift 2
	install -D -m 755 "$SRC/test/systemd/check-units" "$root/usr/local/libexec/nadi/check-units" || return 1
	t0=$EPOCHREALTIME
	boot_start "$root" "$T/boot-$label.log" --private-network -M "$label" "$@"
	state=""
	[ -z "$BOOT_LEADER" ] || state=$(boot_in systemctl is-system-running 2>/dev/null)
	check "${UNITS_PREFIX}the container boots to multi-user with systemd as PID 1 (system state ${state:-none})" \
		'[ "$state" = running ]' ||
		{
			tail -n 20 "$T/boot-$label.log" | sed 's/^/#   /'
			[ -z "$BOOT_LEADER" ] || boot_in systemctl --failed --no-legend | sed 's/^/#   /'
		}
	echo "# booted in $(booted_elapsed "$t0") s"
	[ -n "$BOOT_LEADER" ] || return 1
	t0=$EPOCHREALTIME
	boot_in /usr/local/libexec/nadi/check-units --throwaway >"$T/units-$label.log" 2>&1
	rc=$?
	while IFS= read -r line; do
		case $line in
			"ok "[0-9]*) ok "$UNITS_PREFIX${line#ok [0-9]* - }" ;;
			"not ok "[0-9]*) bad "$UNITS_PREFIX${line#not ok [0-9]* - }" ;;
			[0-9]*" passed, "[0-9]*" failed") ;;
			*) echo "#   $line" ;;
		esac
	done <"$T/units-$label.log"
	check "${UNITS_PREFIX}check-units ran to its end in the container, exit status $rc" \
		'[ "$rc" -eq 0 ] && tail -n 1 "$T/units-$label.log" | grep -q "^[0-9]* passed, 0 failed$"'
	echo "# check-units took $(booted_elapsed "$t0") s"
	boot_stop
	check "${UNITS_PREFIX}the container powers off cleanly (nspawn exit status $BOOT_STATUS)" '[ "$BOOT_STATUS" = 0 ]'
}

booted_elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

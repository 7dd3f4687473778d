#!/bin/bash
# mistakes.sh - what an operator types wrong gets a prompt, clear answer (issue "operator
# mistakes"): no input makes a command loop, every refusal is one line naming the argument and
# the cause, nothing is mounted on a refusal, and a rerun of an interrupted command completes.
# - qcowctl: every subcommand (and snapshot list/create/apply/delete, create --external) with
#   an unknown option, an unknown short option (`snapshot list -l`, as `qemu-img snapshot -l`
#   users type it), a value given to a flag and a missing value: exit 64 within 10 s, one line.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$WORK" || exit 1
setup qemu-img create -q -f qcow2 img.qcow2 1M

# refused_fast WANT_NAME COMMAND...: exits 64 (the usage error) within 10 s with exactly one
# line on stderr, which names WANT_NAME, and prints nothing on stdout
refused_fast()
{
	local want=$1 rc
	shift
	timeout -k 2 10 "$@" >"$WORK/out" 2>"$WORK/err"
	rc=$?
	case $rc in
	124 | 137) echo "still running after 10 s: $*"; return 1 ;;
	64) ;;
	*) echo "exit $rc, not 64: $*"; cat "$WORK/err"; return 1 ;;
	esac
	[ "$(wc -l <"$WORK/err")" = 1 ] || { echo "stderr is not one line:"; cat "$WORK/err"; return 1; }
	grep -qF -- "'$want'" "$WORK/err" || { echo "stderr does not name '$want':"; cat "$WORK/err"; return 1; }
	[ ! -s "$WORK/out" ] || { echo "stdout is not empty:"; cat "$WORK/out"; return 1; }
}

# ---- qcowctl: unknown and misused options ----
cmds=(info commit pull rebase copy create resize check map checksum tree
	"snapshot list" "snapshot create" "snapshot apply" "snapshot delete"
	"snapshot create --external")
for c in "${cmds[@]}"; do
	read -ra words <<<"$c"
	check "qcowctl $c --no-such-option" refused_fast --no-such-option \
		"$QCOWCTL" "${words[@]}" --no-such-option img.qcow2 x
	check "qcowctl $c -l" refused_fast -l "$QCOWCTL" "${words[@]}" -l img.qcow2 x
	check "qcowctl $c --help=x (a value to a flag)" refused_fast --help \
		"$QCOWCTL" "${words[@]}" --help=x img.qcow2 x
	check "qcowctl $c img -Z (an option after the image)" refused_fast -Z \
		"$QCOWCTL" "${words[@]}" img.qcow2 -Z
done
check "qcowctl snapshot list -l IMAGE (qemu-img's spelling)" refused_fast -l \
	"$QCOWCTL" snapshot list -l img.qcow2
check "an unknown letter inside a cluster after a long option is named" refused_fast -Z \
	"$QCOWCTL" check --json -qZ img.qcow2
check "a missing value is named (long)" refused_fast --top "$QCOWCTL" commit img.qcow2 --top
check "a missing value is named (short)" refused_fast -b "$QCOWCTL" create img.qcow2 -b
check "an ambiguous abbreviation is named" refused_fast --d "$QCOWCTL" commit --d img.qcow2
check "the image is unchanged by all of it" image_clean img.qcow2
check "qcowctl snapshot list still lists" bash -c "'$QCOWCTL' snapshot list --json img.qcow2 | grep -qx '\[\]'"

finish

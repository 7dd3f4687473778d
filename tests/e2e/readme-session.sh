#!/bin/bash
# readme-session.sh - the README's session ("Working on a mounted chain", between the
# session:begin and session:end marks) runs as written: every line in order in one shell,
# with the built qcowfs and qcowctl first on the PATH and mktemp's directory under $WORK; a
# line ending in "#=> TEXT" must print exactly TEXT, every other line must succeed. So the
# README's account of live snapshots, a live commit, revert and delete --external stays true.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_cmd getfattr xargs

README=$(dirname "${BASH_SOURCE[0]}")/../../README.md
BIN=$WORK/bin
mkdir -p "$BIN"
ln -s "$QCOWFS" "$BIN/qcowfs"
ln -s "$QCOWCTL" "$BIN/qcowctl"

# every FUSE mount below $WORK, and every daemon serving one, goes with the test
session_cleanup()
{
	local m p
	exec 3>&- 2>/dev/null
	for m in $(awk -v w="$WORK" 'index($2, w) == 1 { print $2 }' /proc/mounts); do
		fusermount3 -u -z "$m" 2>/dev/null
	done
	for p in /proc/[0-9]*; do
		tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q "^$BIN/qcowfs " &&
			kill -KILL "${p#/proc/}" 2>/dev/null
	done
	return 0
}
on_cleanup session_cleanup

mapfile -t LINES < <(sed -n '/^<!-- session:begin -->$/,/^<!-- session:end -->$/p' "$README" |
	sed '1,2d;$d' | sed '$d')
[ "${#LINES[@]}" -gt 10 ] || bail "no session found in the README (${#LINES[@]} lines)"

export PATH="$BIN:$PATH" TMPDIR=$WORK
for line in "${LINES[@]}"; do
	case $line in
	*'#=> '*)
		cmd=${line%%  *#=> *}
		want=${line##*#=> }
		got=$(eval "$cmd" 2>&1)
		check "$cmd  prints: $want" eval '[ "$got" = "$want" ] || { echo "got: $got"; false; }'
		;;
	*)
		check "$line" eval "$line"
		;;
	esac
done
cd "$WORK" || bail "cd $WORK"
finish

#!/bin/bash
# mistakes.sh - what an operator types wrong gets a prompt, clear answer (issue "operator
# mistakes"): no input makes a command loop, every refusal is one line naming the argument and
# the cause, nothing is mounted on a refusal, and a rerun of an interrupted command completes.
# - qcowctl: every subcommand (and snapshot list/create/apply/delete, create --external) with
#   an unknown option, an unknown short option (`snapshot list -l`, as `qemu-img snapshot -l`
#   users type it), a value given to a flag and a missing value: exit 64 within 10 s, one line.
# - qcowfs: a SOURCE that is a text file, a broken image, an image whose backing file is
#   missing, or neither a directory nor a file; a MOUNTPOINT that is a regular file; -o
#   readahead_kb=-5, =abc, too large; -o max_read=abc; an -o option libfuse does not know; an
#   empty --backing-dir:
#   each refused before mounting, one line naming the argument, non-zero exit, nothing mounted. -o max_read=N (which libfuse failed at
#   INIT) and -o readahead_kb=N work (the view equals qemu-img convert, the bdi's read_ahead_kb
#   is N). An image the daemon cannot open (mode 000, the daemon without CAP_DAC_OVERRIDE) is
#   not shown and gets one log line.
# - qcowctl snapshot delete killed (SIGKILL, injected by strace) before each of its writes, then
#   run again: the rerun exits 0 every time; after a kill that landed after the header switch it
#   says the snapshot is already deleted and that it finished its cleanup, and a mistyped name
#   there (an image with leaks, no journal naming it) still exits 1. qemu-img is the oracle of
#   the state after every kill (the snapshot listed or not; no refcount lower than its
#   references); a --dry-run then says what the rerun will do and changes nothing; after the
#   rerun alone (no repair) `qemu-img check` finds the image clean,
#   the active disk and the kept snapshot unchanged, and no journal is left.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_cmd strace
[ "$(id -u)" != 0 ] || require_cmd setpriv

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
	l=-l # an unknown short option; copy takes qemu-img convert's -l (a snapshot), not -j
	[ "$c" = copy ] && l=-j
	check "qcowctl $c $l" refused_fast $l "$QCOWCTL" "${words[@]}" $l img.qcow2 x
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
check "qcowctl snapshot list still lists" bash -c "set -o pipefail; '$QCOWCTL' snapshot list --json img.qcow2 |
	grep -x '\[\]' >/dev/null"

# ---- qcowfs: refused before mounting ----
MNT=$WORK/mnt
mkdir -p "$MNT" "$WORK/src"
track_mount "$MNT" # unmounted by the trap should a refused mount happen after all
setup cp img.qcow2 "$WORK/src/ok.qcow2"
echo "just some text" >"$WORK/notes.txt"
setup qemu-img create -q -f qcow2 "$WORK/broken.qcow2" 1M
printf '\0\0\0\0' | dd of="$WORK/broken.qcow2" bs=1 seek=100 conv=notrunc status=none # header_length 0
setup qemu-img create -q -f qcow2 -u -b gone.qcow2 -F qcow2 "$WORK/orphan.qcow2" 1M
touch "$WORK/file-mnt"
track_mount "$WORK/file-mnt"

# mount_refused WANT ARGS...: qcowfs exits non-zero within 10 s, one line on stderr naming
# WANT, and nothing is mounted on $MNT (or on a file mount point)
mount_refused()
{
	local want=$1 rc
	shift
	timeout -k 2 10 "$QCOWFS" -f "$@" >"$WORK/out" 2>"$WORK/err"
	rc=$?
	case $rc in
	0) echo "exit 0: $*"; return 1 ;;
	124 | 137) echo "still running after 10 s (mounted): $*"; return 1 ;;
	esac
	if mountpoint -q "$MNT" || grep -qF " $WORK/file-mnt " /proc/self/mountinfo; then
		echo "something is mounted"
		return 1
	fi
	[ "$(wc -l <"$WORK/err")" = 1 ] || { echo "stderr is not one line:"; cat "$WORK/err"; return 1; }
	grep -qF -- "$want" "$WORK/err" || { echo "stderr does not name '$want':"; cat "$WORK/err"; return 1; }
}

check "qcowfs: a text file as SOURCE is refused" mount_refused "'$WORK/notes.txt': not a qcow2 image" \
	"$WORK/notes.txt" "$MNT"
check "qcowfs: a broken image as SOURCE is refused with the header's fault" \
	mount_refused "header length" "$WORK/broken.qcow2" "$MNT"
check "qcowfs: an image whose backing file is missing is refused" \
	mount_refused "gone.qcow2" "$WORK/orphan.qcow2" "$MNT"
check "qcowfs: a SOURCE that is a device is refused" \
	mount_refused "'/dev/null': not a directory or an image file" /dev/null "$MNT"
check "qcowfs: a MOUNTPOINT that is a regular file is refused" \
	mount_refused "'$WORK/file-mnt': Not a directory" "$WORK/src" "$WORK/file-mnt"
for v in -5 abc "" 99999999999999999999 1048577 4k; do
	check "qcowfs: -o readahead_kb='$v' is refused" \
		mount_refused "readahead_kb='$v'" -o "ro,readahead_kb=$v" "$WORK/src" "$MNT"
done
check "qcowfs: -o max_read=abc is refused" mount_refused "max_read='abc'" -o max_read=abc "$WORK/src" "$MNT"
check "qcowfs: an -o option libfuse does not know is refused" \
	mount_refused "no_such_option" -o ro,no_such_option "$WORK/src" "$MNT"

# ---- qcowfs: --backing-dir values ----
# an empty directory name (it once allowed nothing, silently)
check "qcowfs: an empty --backing-dir is refused" \
	mount_refused "--backing-dir ''" --backing-dir= "$WORK/src" "$MNT"
check "qcowfs: an empty --backing-dir (separate argument) is refused" \
	mount_refused "--backing-dir ''" --backing-dir "" "$WORK/src" "$MNT"

# ---- qcowfs: max_read and readahead_kb work ----
setup qemu-io -c "write -P 0x5a 0 1M" "$WORK/src/ok.qcow2"
setup qemu-img convert -O raw "$WORK/src/ok.qcow2" "$WORK/ok.raw"
if check "qcowfs -o max_read=4096,readahead_kb=512 mounts" \
	mount_qcowfs "$WORK/src" "$MNT" -o max_read=4096,readahead_kb=512; then
	check "max_read=4096: the view equals qemu-img convert" fs cmp "$MNT/ok.raw" "$WORK/ok.raw"
	ra_is()
	{
		local dev f i
		dev=$(mountpoint -d "$MNT") || return 1
		f=/sys/class/bdi/$dev/read_ahead_kb
		for ((i = 0; i < 100; i++)); do
			[ "$(cat "$f" 2>/dev/null)" = "$1" ] && return 0
			sleep 0.1
		done
		echo "$f is $(cat "$f" 2>/dev/null), not $1"
		return 1
	}
	check "readahead_kb=512: the mount's read-ahead is 512 KiB" ra_is 512
	check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
fi

# ---- qcowfs: an image the daemon cannot open is logged ----
setup cp img.qcow2 "$WORK/src/secret.qcow2"
chmod 000 "$WORK/src/secret.qcow2"
NOCAP=$QCOWFS
if [ "$(id -u)" = 0 ]; then
	# root reads a mode 000 file: run the daemon without the capabilities that allow it
	NOCAP=$WORK/qcowfs-nocap
	printf '#!/bin/sh\nexec setpriv --inh-caps=-dac_override,-dac_read_search --bounding-set=-dac_override,-dac_read_search "%s" "$@"\n' \
		"$QCOWFS" >"$NOCAP"
	chmod +x "$NOCAP"
fi
mount_nocap()
{
	local real=$QCOWFS r
	QCOWFS=$NOCAP
	mount_qcowfs "$@"
	r=$?
	QCOWFS=$real
	return $r
}
if check "qcowfs mounts a directory holding an unreadable image" mount_nocap "$WORK/src" "$MNT"; then
	check "the readable image is shown" fs test -f "$MNT/ok.raw"
	check_not "the unreadable image is not shown" fs test -e "$MNT/secret.raw"
	check "the unreadable image has a log line" log_names "$QCOWFS_LOG" "secret.qcow2"
	check "the log line gives the cause" grep -q "secret.qcow2.*Permission denied" "$QCOWFS_LOG"
	check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
fi
chmod 644 "$WORK/src/secret.qcow2"
mkdir -p "$WORK/closed"
chmod 000 "$WORK/closed"
nocap_refused()
{
	local real=$QCOWFS r
	QCOWFS=$NOCAP
	mount_refused "$@"
	r=$?
	QCOWFS=$real
	return $r
}
check "qcowfs: a SOURCE directory the daemon cannot list is refused" \
	nocap_refused "'$WORK/closed': Permission denied" "$WORK/closed" "$MNT"
chmod 755 "$WORK/closed"

# ---- snapshot delete: killed before each write, then run again ----
setup qemu-img create -q -f qcow2 "$WORK/orig.qcow2" 8M
setup qemu-io -c "write -P 1 0 2M" "$WORK/orig.qcow2"
setup qemu-img snapshot -c keep "$WORK/orig.qcow2"
setup qemu-io -c "write -P 2 1M 2M" "$WORK/orig.qcow2"
setup qemu-img snapshot -c doomed "$WORK/orig.qcow2"
setup qemu-io -c "write -P 3 2M 2M" "$WORK/orig.qcow2"
setup qemu-img convert -O raw "$WORK/orig.qcow2" "$WORK/active.raw"
setup qemu-img convert -O raw -l snapshot.name=keep "$WORK/orig.qcow2" "$WORK/keep.raw"
# the number of writes a whole delete makes (LeakSanitizer cannot run under ptrace: off for
# the traced runs only)
NOLSAN=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
setup cp "$WORK/orig.qcow2" "$WORK/s.qcow2"
ASAN_OPTIONS=$NOLSAN strace -f -qq -e trace=pwrite64,pwritev,pwritev2,write -o "$WORK/writes" \
	"$QCOWCTL" snapshot delete -q "$WORK/s.qcow2" doomed || bail "the delete failed"
NWRITES=$(grep -c "^[0-9]* *pwrite" "$WORK/writes")
[ "$NWRITES" -ge 3 ] || bail "the delete made only $NWRITES writes"

snap_listed()
{
	qemu-img snapshot -l "$1" | awk -v n="$2" '$2 == n { f = 1 } END { exit !f }'
}

# killed_then_rerun N: kill the delete before its Nth write, check the state, run it again
killed_then_rerun()
{
	local n=$1 rc out dry sum
	cp "$WORK/orig.qcow2" "$WORK/s.qcow2" || return 1
	ASAN_OPTIONS=$NOLSAN strace -f -qq -o /dev/null -e trace=pwrite64 -e inject=pwrite64:signal=KILL:when="$n" \
		"$QCOWCTL" snapshot delete -q "$WORK/s.qcow2" doomed 2>/dev/null
	qemu-img check "$WORK/s.qcow2" >"$WORK/chk" 2>&1
	rc=$?
	# after a kill: leaks, and (as QEMU leaves them too) COPIED flags not yet set where a
	# refcount fell to 1, but never a refcount lower than its references
	if grep -E "^ERROR" "$WORK/chk" | grep -vqE "^ERROR OFLAG_COPIED .* refcount=1$"; then
		echo "killed before write $n: qemu-img check exited $rc:"
		head -n 20 "$WORK/chk"
		return 1
	fi
	# the dry run says what the rerun will do, and changes nothing
	sum=$(cat "$WORK/s.qcow2" "$WORK/.s.qcow2.qcowctl-snapshot-delete" | md5sum)
	dry=$("$QCOWCTL" snapshot delete --dry-run "$WORK/s.qcow2" doomed 2>&1) ||
		{ echo "killed before write $n: the dry run failed: $dry"; return 1; }
	[ "$sum" = "$(cat "$WORK/s.qcow2" "$WORK/.s.qcow2.qcowctl-snapshot-delete" | md5sum)" ] ||
		{ echo "killed before write $n: the dry run changed something"; return 1; }
	if snap_listed "$WORK/s.qcow2" doomed; then
		before_switch=$((before_switch + 1))
		[[ $dry == *"first, the cleanup of an interrupted delete:"* ]] ||
			{ echo "killed before write $n (before the switch): the dry run said: $dry"; return 1; }
		out=$("$QCOWCTL" snapshot delete "$WORK/s.qcow2" doomed) ||
			{ echo "killed before write $n (before the switch): the rerun failed"; return 1; }
		[[ $out == "deleted snapshot 'doomed'"* ]] || { echo "rerun said: $out"; return 1; }
	else
		after_switch=$((after_switch + 1))
		out=$("$QCOWCTL" snapshot delete "$WORK/s.qcow2" doomd 2>&1)
		rc=$?
		[ $rc = 1 ] || { echo "killed before write $n (after the switch): a mistyped name: exit $rc: $out"; return 1; }
		[[ $out == *"no snapshot 'doomd'"* ]] || { echo "mistyped name, said: $out"; return 1; }
		[[ $dry == "dry run: snapshot 'doomed' of '$WORK/s.qcow2' already deleted; would finish"* ]] ||
			{ echo "dry run said: $dry"; return 1; }
		out=$("$QCOWCTL" snapshot delete "$WORK/s.qcow2" doomed 2>&1)
		rc=$?
		[ $rc = 0 ] || { echo "killed before write $n (after the switch): rerun exit $rc: $out"; return 1; }
		[[ $out == "snapshot 'doomed' of '$WORK/s.qcow2' already deleted; finished its cleanup"* ]] ||
			{ echo "rerun said: $out"; return 1; }
	fi
	! snap_listed "$WORK/s.qcow2" doomed || { echo "doomed is still there"; return 1; }
	snap_listed "$WORK/s.qcow2" keep || { echo "keep is gone"; return 1; }
	qemu-img check "$WORK/s.qcow2" >"$WORK/chk" 2>&1 || { echo "not clean after the rerun:"; head "$WORK/chk"; return 1; }
	[ ! -e "$WORK/.s.qcow2.qcowctl-snapshot-delete" ] || { echo "the journal is left"; return 1; }
	qemu-img compare -q -f qcow2 -F raw "$WORK/s.qcow2" "$WORK/active.raw" || { echo "the active disk changed"; return 1; }
	qemu-img convert -O raw -l snapshot.name=keep "$WORK/s.qcow2" "$WORK/k.raw" && cmp "$WORK/k.raw" "$WORK/keep.raw" ||
		{ echo "snapshot keep changed"; return 1; }
}
before_switch=0 after_switch=0
for ((n = 1; n <= NWRITES; n++)); do
	check "snapshot delete killed before write $n of $NWRITES, then run again" killed_then_rerun "$n"
done
check "some kills landed before the header switch, some after" \
	test "$before_switch" -gt 0 -a "$after_switch" -gt 0
check_not "a delete of a name that never existed, on a clean image, still fails" \
	"$QCOWCTL" snapshot delete "$WORK/orig.qcow2" never
# an image with leaks and missing COPIED flags (a delete killed after its switch) but no journal
leaky_mistyped()
{
	local out rc
	cp "$WORK/orig.qcow2" "$WORK/s.qcow2" || return 1
	rm -f "$WORK/.s.qcow2.qcowctl-snapshot-delete"
	ASAN_OPTIONS=$NOLSAN strace -f -qq -o /dev/null -e trace=pwrite64 -e inject=pwrite64:signal=KILL:when="$NWRITES" \
		"$QCOWCTL" snapshot delete -q "$WORK/s.qcow2" doomed 2>/dev/null
	rm -f "$WORK/.s.qcow2.qcowctl-snapshot-delete"
	! snap_listed "$WORK/s.qcow2" doomed || { echo "the kill landed before the switch"; return 1; }
	qemu-img check "$WORK/s.qcow2" >/dev/null 2>&1 && { echo "the kill left no leak"; return 1; }
	out=$("$QCOWCTL" snapshot delete "$WORK/s.qcow2" doomed 2>&1)
	rc=$?
	[ $rc = 1 ] && [[ $out == *"no snapshot 'doomed'"* ]] || { echo "exit $rc: $out"; return 1; }
}
check "a delete of a missing name on an image with leaks but no journal fails" leaky_mistyped

finish

#!/bin/bash
# live-frozen.sh - a live external snapshot of an image whose view is being written shows the
# frozen point at once (issue 14 B): while a writer keeps a.raw open for writing across
# `qcowctl snapshot create --external a.qcow2 b.qcow2` (forwarded to the daemon):
# - a new open of a.raw succeeds, read-only (saying why), and is exactly what qemu-img convert
#   makes of a.qcow2 (the frozen point), and stays so while the writer goes on;
# - b.raw opens for writing and shows the writer's disk: a block written through it is there,
#   and, once the writer stopped, every write the writer made (the same disk as its handle);
# - after the writer closed, both views are as before (b.raw writable, a.raw the frozen
#   point), and once every handle closed the daemon holds no write lock (qemu-io writes
#   b.qcow2, and b.raw shows it); after the unmount qemu-img check is clean on both images, and qemu-img convert of
#   b.qcow2 holds every write, the one made through b.raw too.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_cmd qemu-io python3
SRC=$WORK/src
MNT=$WORK/mnt
BLOCKS=2048 # the writer's 8 MiB
mkdir -p "$SRC"
cd "$SRC" || exit 1

# lf_block_is FILE OFFSET PATTERN_FILE: the 4 KiB at OFFSET of FILE are PATTERN_FILE's.
lf_block_is()
{
	fs cmp -n 4096 -i "$2:0" "$1" "$3"
}

setup mk_qcow2 a.qcow2 64M
setup qemu-io -f qcow2 -c "write -P 0x5a 16M 4M" a.qcow2
setup mount_qcowfs "$SRC" "$MNT"
LOG=$WORK/writes.log
setup stamp_writer "$MNT/a.raw" "$LOG" 11 0 $BLOCKS

check "snapshot --external a.qcow2 b.qcow2 runs live" \
	ctl snapshot create --external -q a.qcow2 b.qcow2
check "the writer goes on (into b.qcow2)" stamp_goes_on "$LOG"

# (1) a.raw, opened again while the writer still has it open: the frozen point, read-only
check "a.raw opens again while the writer has it open for writing" \
	fs sh -c 'exec 3<"$1"' sh "$MNT/a.raw" || bail "a.raw cannot be opened again"
exec {AFD}<"$MNT/a.raw"
on_cleanup eval "exec $AFD<&-"
check "... and shows what qemu-img shows of a.qcow2 (the frozen point)" \
	expect_same_as_qemu a.qcow2 "$MNT/a.raw"
msg=$(getfattr -n user.qcowfs.mode --only-values "$MNT/a.raw" 2>/dev/null)
check "... read-only, saying why ($msg)" eval '[[ "$msg" == "ro: "*"b.qcow2"* ]]'
check_not "... and refuses writing" fs dd if=/dev/zero of="$MNT/a.raw" bs=4096 count=1 \
	conv=notrunc status=none
check "the writer goes on" stamp_goes_on "$LOG"
check "a.raw stays the frozen point while the writer goes on" \
	expect_same_as_qemu a.qcow2 "$MNT/a.raw"

# (2) b.raw opens for writing: the writer's disk
head -c 4096 /dev/urandom >"$WORK/pat"
check "b.raw opens for writing while the writer writes" \
	fs sh -c 'exec 3<>"$1"' sh "$MNT/b.raw" || bail "b.raw cannot be opened for writing"
exec {BFD}<>"$MNT/b.raw"
on_cleanup eval "exec $BFD<&-"
check "a block written through b.raw" \
	fs dd if="$WORK/pat" of="$MNT/b.raw" bs=4096 seek=$((32 * 256)) conv=notrunc,fsync \
	status=none
check "... reads back through b.raw" lf_block_is "$MNT/b.raw" $((32 << 20)) "$WORK/pat"
check "... and not through a.raw (the frozen point)" \
	fs cmp -n 4096 -i $((32 << 20)):0 "$MNT/a.raw" /dev/zero
check "the writer goes on" stamp_goes_on "$LOG"
touch "$WORK/stop"
wait "$WRITER_PID"
rc=$?
check "the writer saw no error (exit $rc)" test $rc = 0
n1=$(stamp_lines "$LOG")
check "b.raw (still open) holds all $n1 writes of the writer" \
	fs python3 "$E2E_HELPER" stamp-check "$MNT/b.raw" "$LOG" "$n1" "$n1" $BLOCKS
check "a.raw (still open) is still the frozen point" expect_same_as_qemu a.qcow2 "$MNT/a.raw"
exec {AFD}<&- {BFD}<&-

# (3) after the writer closed: as before
check "a.raw, opened again, is the frozen point" expect_same_as_qemu a.qcow2 "$MNT/a.raw"
check "b.raw opens for writing again" \
	fs dd if="$WORK/pat" of="$MNT/b.raw" bs=4096 seek=$((40 * 256)) conv=notrunc,fsync \
	status=none
check "b.raw holds all $n1 writes" \
	fs python3 "$E2E_HELPER" stamp-check "$MNT/b.raw" "$LOG" "$n1" "$n1" $BLOCKS
check "every handle closed, the daemon gave back b.qcow2's write lock (qemu-io writes it)" \
	eventually qemu-io -f qcow2 -c "write -P 0x77 48M 4k" b.qcow2
check "... and b.raw shows that write" \
	eval 'head -c 4096 /dev/zero | tr "\0" "\167" >"$WORK/pat77" &&
		lf_block_is "$MNT/b.raw" $((48 << 20)) "$WORK/pat77"'
check "umount" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
check "qemu-img check a.qcow2 is clean" qemu-img check -q a.qcow2
check "qemu-img check b.qcow2 is clean" qemu-img check -q b.qcow2
setup qemu-img convert -O raw b.qcow2 "$WORK/conv.raw"
check "qemu-img convert of b.qcow2 holds all $n1 writes" \
	python3 "$E2E_HELPER" stamp-check "$WORK/conv.raw" "$LOG" "$n1" "$n1" $BLOCKS
check "... the blocks written through b.raw" \
	eval 'cmp -n 4096 -i $((32 << 20)):0 "$WORK/conv.raw" "$WORK/pat" &&
		cmp -n 4096 -i $((40 << 20)):0 "$WORK/conv.raw" "$WORK/pat"'
check "... and a.qcow2's own data below" \
	cmp -n $((4 << 20)) -i $((16 << 20)):0 "$WORK/conv.raw" <(head -c $((4 << 20)) /dev/zero | tr '\0' '\132')
rm -f "$WORK/conv.raw"
finish

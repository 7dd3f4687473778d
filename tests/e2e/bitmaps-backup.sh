#!/bin/bash
# bitmaps-backup.sh - a libvirt-style incremental backup across a read-write mount: a bitmap is
# added (qemu-img bitmap --add), a full backup taken (qemu-img convert), the disk mounted and
# written through its flat view, unmounted; the bitmap's dirty ranges (qemu-nbd -B + qemu-img
# map x-dirty-bitmap) are exactly the written ranges at its granularity, and copying just those
# ranges from the view onto the full backup gives an image equal to the new state (qemu-img
# compare).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_cmd qemu-nbd fallocate

SRC=$WORK/src
MNT=$WORK/mnt
mkdir -p "$SRC"
cd "$SRC" || exit 1

SIZE=$((32 << 20))
setup qcreate vm.qcow2 $SIZE
setup qio vm.qcow2 "write -P 0x5a 0 4M" "write -P 0x5b 10M 2M" "write -P 0x5c 30M 1M"
# checkpoint: the bitmap, then the full backup it is relative to
setup qemu-img bitmap --add vm.qcow2 checkpoint1
setup qemu-img convert -O qcow2 vm.qcow2 "$WORK/full.qcow2"

# the guest's changes: START:LENGTH
CHANGES=($((1 << 20)):4096 $(((4 << 20) - 4096)):8192 $((20 << 20)):$((192 << 10))
	$((10 << 20)):$((1 << 20)) $((30 << 20)):4096)

mount_qcowfs "$SRC" "$MNT" || bail "no mount"
V=$MNT/vm.raw
dd_write "$V" $((1 << 20)) || fail "dd at 1 MiB"
dd_write "$V" $(((4 << 20) - 4096)) && dd_write "$V" $((4 << 20)) || fail "dd across 4 MiB"
fs dd if=/dev/urandom of="$V" bs=64k count=3 seek=320 conv=notrunc,fsync status=none ||
	fail "dd at 20 MiB"
fs fallocate --punch-hole -o $((10 << 20)) -l $((1 << 20)) "$V" || fail "punch hole"
fs dd if=/dev/zero of="$V" bs=4096 count=1 seek=$((30 << 8)) conv=notrunc,fsync status=none ||
	fail "zeros at 30 MiB"
check "unmount" umount_qcowfs "$MNT"

check "qemu-img check: no error, no leak" image_clean vm.qcow2
check "the full backup no longer equals the disk" \
	eval '! qemu-img compare -q "$WORK/full.qcow2" vm.qcow2'
granule_ranges $((64 << 10)) $SIZE "${CHANGES[@]}" >"$WORK/want"
dirty_ranges vm.qcow2 checkpoint1 >"$WORK/got" || fail "qemu-nbd export of checkpoint1"
check "the bitmap's dirty ranges are the written ranges at its granularity" \
	diff -u "$WORK/want" "$WORK/got"

# the incremental backup: only the dirty ranges, read from the view, onto the full backup
setup qemu-img convert -O raw "$WORK/full.qcow2" "$WORK/backup.raw"
mount_qcowfs "$SRC" "$MNT" -o ro || bail "no read-only mount"
while read -r start len; do
	fs dd if="$V" of="$WORK/backup.raw" bs=64k skip=$((start >> 16)) seek=$((start >> 16)) \
		count=$((len >> 16)) conv=notrunc status=none || fail "copying $start+$len"
done <"$WORK/got"
check "unmount the read-only view" umount_qcowfs "$MNT"
check "full backup + the dirty ranges == the new disk (qemu-img compare)" \
	qemu-img compare -q -f raw -F qcow2 "$WORK/backup.raw" vm.qcow2
check "the bitmap is not in use after the mounts" eval '! qemu-img info vm.qcow2 | grep -q in-use'

finish

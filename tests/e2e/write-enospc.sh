#!/bin/bash
# write-enospc.sh - the file system holding SOURCE fills up under writes through a flat view:
# SOURCE is on a 32 MiB ext4 file system, the overlay's virtual size is larger. The
# writes (each fsynced) must eventually fail with ENOSPC; the daemon stays up and keeps serving
# reads; after unmounting, `qemu-img check` finds no corruption (leaks are acceptable) and every
# byte written and fsynced before the failure reads back. Freeing space makes writes work again.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_cmd mkfs.ext4 losetup mount umount
require_root "loop devices and mount"
if ! losetup -f >/dev/null 2>&1; then
	echo "SKIP: no free loop device" >&2
	exit 77
fi

FSIMG=$WORK/small.ext4
SMALL=$WORK/small
SRC=$SMALL/src
MNT=$WORK/mnt
MODEL=$WORK/model.raw
CHUNK=$((1024 * 1024))

setup truncate -s 32M "$FSIMG"
setup mkfs.ext4 -q -F -m 0 "$FSIMG"
DEV=$(losetup -f --show "$FSIMG") || bail "losetup $FSIMG failed"
track_loop "$DEV"
mkdir -p "$SMALL"
setup mount -t ext4 "$DEV" "$SMALL"
track_kmount "$SMALL"
mkdir -p "$SRC"
cd "$SRC" || exit 1

# a small base with data, a 64 MiB overlay on it, and 2 MiB of filler we can delete later
setup qemu-img create -q -f qcow2 base.qcow2 64M
setup qio base.qcow2 "write -P 0x11 0 1M" "write -P 0x12 40M 1M"
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
setup qio top.qcow2 "write -P 0x13 8M 64k"
setup dd if=/dev/zero of=filler bs=1M count=2 status=none
setup make_model top.qcow2 "$MODEL"
sha_of base.qcow2 >"$WORK/backing.sha"

mount_qcowfs "$SRC" "$MNT" || bail "mount failed"
VIEW=$MNT/top.raw

# fill: 1 MiB writes of random data from offset 0, each fsynced, until one fails
OUT=$WORK/fill.out
fs python3 "$E2E_HELPER" fill "$VIEW" "$CHUNK" 7 64M >"$OUT" 2>&1
DURABLE=$(awk '$1 == "durable" { print $2 }' "$OUT")
ERR=$(awk '$1 == "error" { print $2 }' "$OUT")
echo "# $DURABLE bytes written and fsynced before the error: ${ERR:-?}"
check "writes through the view fail with ENOSPC once the file system is full" test "$ERR" = ENOSPC ||
	sed 's/^/#   /' "$OUT"
check "some writes succeeded first (at least 8 MiB)" test "${DURABLE:-0}" -ge $((8 * 1024 * 1024))
check "the daemon is still alive" daemon_alive "$MNT"
setup python3 "$E2E_HELPER" pattern "$MODEL" "$DURABLE" "$CHUNK" 7

# reads still work: what was fsynced, and the backing data past it
cmp_prefix() { fs cmp -n "$DURABLE" "$MODEL" "$VIEW"; }
check "reads still work: the fsynced bytes read back through the view" cmp_prefix
check "reads still work: backing data past the written part" \
	fs cmp -n 1048576 -i $((40 * 1048576)) "$MODEL" "$VIEW"
check "st_size has not changed" expect_size "$VIEW" $((64 * 1048576))
check "another write still fails with ENOSPC (or an I/O error), without harm" \
	expect_op_fails "$VIEW" "w:$((50 * 1048576)):$CHUNK:99"

# freeing space on the file system makes writes possible again
setup rm -f filler
check "after freeing space, a small write and fsync succeed" \
	write_both "$VIEW" "$MODEL" "w:$((8 * 1048576 + 1000)):5000:100" f
check "the view holds what was fsynced and the last write" \
	fs cmp -n "$DURABLE" "$MODEL" "$VIEW"

# the daemon may report the failed write-back on its way out; it must not crash
umount_rc=0
umount_qcowfs "$MNT" || umount_rc=$?
check "the daemon unmounts without crashing (exit status $umount_rc)" test "$umount_rc" -lt 128
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
check "qemu-img check finds no corruption (leaks allowed)" image_not_corrupt top.qcow2
CONV=$WORK/conv.raw
check "qemu-img convert of the image works" qemu-img convert -O raw top.qcow2 "$CONV"
check "every byte written and fsynced before ENOSPC reads back" cmp -n "$DURABLE" "$MODEL" "$CONV"
check "the last write after freeing space reads back" \
	cmp -n 5000 -i $((8 * 1048576 + 1000)) "$MODEL" "$CONV"
check "the backing data past the written part reads back" \
	cmp -n 1048576 -i $((40 * 1048576)) "$MODEL" "$CONV"
check "the backing file is unchanged (SHA-256)" sha_unchanged "$WORK/backing.sha"
finish

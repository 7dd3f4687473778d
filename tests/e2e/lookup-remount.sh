#!/bin/bash
# lookup-remount.sh - the daemon keeps its own write access to an unchanged image between
# lookups (lookup-cost.sh), and a change of the mount table that concerns SOURCE forgets it:
# SOURCE on a small ext4 file system, the view writable (mode 600), the file system remounted
# read-only: the view has no write bit at the next lookup, and an open for writing fails;
# remounted read-write: writable again.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_cmd mkfs.ext4 losetup mount umount qemu-img
require_root "loop devices and mount"
if ! losetup -f >/dev/null 2>&1; then
	echo "SKIP: no free loop device" >&2
	exit 77
fi

FSIMG=$WORK/small.ext4
SMALL=$WORK/small
SRC=$SMALL/src
MNT=$WORK/mnt

setup truncate -s 16M "$FSIMG"
setup mkfs.ext4 -q -F -m 0 "$FSIMG"
DEV=$(losetup -f --show "$FSIMG") || bail "losetup $FSIMG failed"
track_loop "$DEV"
mkdir -p "$SMALL"
setup mount -t ext4 "$DEV" "$SMALL"
track_kmount "$SMALL"
mkdir -p "$SRC"
setup mk_qcow2 "$SRC/r.qcow2" 1M
chmod 0644 "$SRC/r.qcow2"
sleep 3 # a ctime of the last two seconds is never kept: let it settle

mount_qcowfs "$SRC" "$MNT" || bail "mount failed"
check "r.raw is writable (600: only root reaches the work directory)" \
	view_mode_is "$MNT/r.raw" 600
check "and again (its write access kept)" view_mode_is "$MNT/r.raw" 600
setup mount -o remount,ro "$SMALL"
check "SOURCE's file system remounted read-only: r.raw has no write bit at the next lookup" \
	expect_readonly_mode "$MNT/r.raw"
check "an open for writing fails (EROFS)" expect_open_fails "$MNT/r.raw" EROFS rw
setup mount -o remount,rw "$SMALL"
check "remounted read-write: r.raw is writable again" view_mode_is "$MNT/r.raw" 600
check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
finish

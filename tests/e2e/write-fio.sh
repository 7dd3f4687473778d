#!/bin/bash
# write-fio.sh - fio with data verification through a writable flat view: concurrent
# jobs on separate regions of one overlay over a backing file (random 4 KiB writes, sequential
# 64 KiB writes, random unaligned 3 KiB writes with 512 B clusters in another image), each
# verifying with crc32c what it wrote, with fsyncs along the way. fio must exit 0. Then the
# bytes the view served are the bytes the daemon stored: after unmounting, `qemu-img check` is
# clean and `qemu-img convert` equals a copy of the view taken before unmounting; and after a
# remount (nothing left in the page cache) fio verifies every block again.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_cmd fio

SRC=$WORK/src
MNT=$WORK/mnt
mkdir -p "$SRC"
cd "$SRC" || exit 1

setup qemu-img create -q -f qcow2 base.qcow2 64M
setup qio base.qcow2 "write -P 0x11 0 20M" "write -P 0x12 50M 8M"
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 disk.qcow2
setup qio disk.qcow2 "write -P 0x13 1M 1M"
setup qemu-img create -q -f qcow2 -o cluster_size=512 -b base.qcow2 -F qcow2 small.qcow2 16M
sha_of base.qcow2 >"$WORK/backing.sha"

mount_qcowfs "$SRC" "$MNT" || bail "mount failed"

# show_fio_errors OUTPUT: fio's error and verify lines
show_fio_errors()
{
	grep -iE 'err|verify|bad|fail' "$1" | head -n 20 | sed 's/^/#   /'
}

JOB=$WORK/verify.fio
cat >"$JOB" <<EOF
[global]
ioengine=psync
direct=0
fallocate=none
verify=crc32c
do_verify=1
verify_fatal=1
fsync=64
end_fsync=1
randseed=4242

[rand4k]
filename=$MNT/disk.raw
rw=randwrite
bs=4k
offset=0
size=32M

[seq64k]
filename=$MNT/disk.raw
rw=write
bs=64k
offset=32M
size=16M

[unaligned3k]
filename=$MNT/small.raw
rw=randwrite
bs=3k
offset=0
size=6M
EOF

check "fio writes and verifies through the views (exit 0)" \
	fs_t 300 fio --output="$WORK/fio.out" "$JOB" || show_fio_errors "$WORK/fio.out"

# what the views serve now must be what the images hold after unmounting
setup fs cp "$MNT/disk.raw" "$WORK/disk.view"
setup fs cp "$MNT/small.raw" "$WORK/small.view"
check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
for name in disk small; do
	check "$name.qcow2: qemu-img check finds no error and no leak" image_clean "$name.qcow2"
	check "$name.qcow2: qemu-img convert equals what the view served" image_is_model "$name.qcow2" "$WORK/$name.view"
done
check "the regions fio did not touch still show the backing and overlay data" \
	bash -c "qemu-img convert -O raw base.qcow2 '$WORK/base.raw' && cmp -n 16M -i 48M '$WORK/base.raw' '$WORK/disk.view'"
check "the backing file is unchanged (SHA-256)" sha_unchanged "$WORK/backing.sha"

# a fresh mount (no page cache left) serves what fio wrote: fio verifies it again, reading only
mount_qcowfs "$SRC" "$MNT" || bail "second mount failed"
check "after a remount, fio --verify_only finds every block it wrote (exit 0)" \
	fs_t 300 fio --verify_only --output="$WORK/fio2.out" "$JOB" || show_fio_errors "$WORK/fio2.out"
check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
finish

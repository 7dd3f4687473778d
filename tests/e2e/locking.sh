#!/bin/bash
# locking.sh - QEMU-compatible image locks: while a flat view is open, QEMU cannot
# open its image (or a backing file of the chain) for writing, while QEMU readers still can;
# the locks go away when the last handle of the view closes (images are opened lazily, so an
# image nobody reads through the mount stays free for QEMU, and the view follows its changes).
# While QEMU holds an image open for writing, the daemon serves its view read-only (no write
# bits, opens for writing fail) and says so in its log; chains reading through it as a backing
# file are not served; everything else is served as usual.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC=$WORK/src
MNT=$WORK/mnt
mkdir -p "$SRC"
cd "$SRC" || exit 1

setup qemu-img create -q -f qcow2 img.qcow2 4M
setup qio img.qcow2 "write -P 0x11 0 1M"
setup qemu-img create -q -f qcow2 base.qcow2 4M
setup qio base.qcow2 "write -P 0x12 0 4M"
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
setup qio top.qcow2 "write -P 0x13 1M 64k"
setup qemu-img create -q -f qcow2 other.qcow2 2M
setup qio other.qcow2 "write -P 0x14 0 2M"

unchanged() { qemu-img compare -U "$1" "$2"; }

mount_qcowfs "$SRC" "$MNT" || bail "mount failed"
check "img.raw reads correctly" expect_same_as_qemu "$SRC/img.qcow2" "$MNT/img.raw"

# mounted, no flat view open: the image is not in use, QEMU may write it, the view follows
check "while mounted but not open, qemu-io can write img.qcow2" qio img.qcow2 "write -P 0x17 512k 4k"
check "img.raw shows what qemu-io wrote" expect_same_as_qemu "$SRC/img.qcow2" "$MNT/img.raw"

# a flat view held open
cp img.qcow2 "$WORK/img-before.qcow2"
cp base.qcow2 "$WORK/base-before.qcow2"
exec 8<"$MNT/img.raw" || bail "cannot open img.raw"
exec 7<"$MNT/top.raw" || bail "cannot open top.raw"
head -c 4096 <&8 >/dev/null
head -c 4096 <&7 >/dev/null
check "while img.raw is open, qemu-io cannot write img.qcow2 (write lock)" qemu_write_refused img.qcow2
check "while top.raw is open, qemu-io cannot write top.qcow2 (write lock)" qemu_write_refused top.qcow2
check "while top.raw is open, qemu-io cannot write its backing file base.qcow2" qemu_write_refused base.qcow2
check "QEMU readers still can open img.qcow2 (qemu-img info without -U)" qemu-img info img.qcow2
check "QEMU readers still can open top.qcow2 and its backing file" qemu-img info --backing-chain top.qcow2
check "img.qcow2 unchanged while its view was open" unchanged "$WORK/img-before.qcow2" img.qcow2
check "base.qcow2 unchanged while top.raw was open" unchanged "$WORK/base-before.qcow2" base.qcow2
check "img.raw still reads correctly" expect_same_as_qemu "$SRC/img.qcow2" "$MNT/img.raw"
exec 8<&- 7<&-
check "after the views close, qemu-io can write img.qcow2 while mounted" \
	qio img.qcow2 "write -P 0x18 1536k 4k"
check "img.raw shows that write too" expect_same_as_qemu "$SRC/img.qcow2" "$MNT/img.raw"

check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
check "after unmount, qemu-io can write img.qcow2 again" qio img.qcow2 "write -P 0x15 2M 4k"
check "after unmount, qemu-io can write base.qcow2 again" qio base.qcow2 "write -P 0x16 3M 4k"

# ---- QEMU writing an image while we mount ----
# A qemu-io writer (lib.sh: qemu_writer_start/stop) holds an image open read-write.
setup qemu-img create -q -f qcow2 busy.qcow2 4M
setup qio busy.qcow2 "write -P 0x21 0 64k"
qemu_writer_start "$SRC/busy.qcow2" || bail "cannot start the writer"
MNT2=$WORK/mnt2
mount_qcowfs "$SRC" "$MNT2" || bail "mount while QEMU writes busy.qcow2 failed"
check "busy.qcow2 (held for writing by qemu-io) is served (lookup)" expect_exists "$MNT2/busy.raw"
check "busy.qcow2 is listed (readdir)" expect_listing "$MNT2" img.raw base.raw top.raw other.raw busy.raw
check "busy.raw is read-only (mode)" expect_readonly_mode "$MNT2/busy.raw"
check "busy.raw: every open for writing fails with EROFS" \
	expect_open_fails "$MNT2/busy.raw" EROFS w rw
check "busy.raw reads what QEMU shows" expect_same_as_qemu "$SRC/busy.qcow2" "$MNT2/busy.raw"
check "the log names busy.qcow2" log_names "$QCOWFS_LOG" busy.qcow2
check "other images are served: other.raw reads correctly" \
	expect_same_as_qemu "$SRC/other.qcow2" "$MNT2/other.raw"
check "other images are served: top.raw reads correctly" \
	expect_same_as_qemu "$SRC/top.qcow2" "$MNT2/top.raw"
qemu_writer_stop
check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT2"

# QEMU writing a backing file: chains reading through it are not served either
qemu_writer_start "$SRC/base.qcow2" || bail "cannot start the writer"
MNT3=$WORK/mnt3
mount_qcowfs "$SRC" "$MNT3" || bail "mount while QEMU writes base.qcow2 failed"
check "a chain whose backing file QEMU writes is not served (top.raw)" \
	expect_absent "$MNT3/top.raw"
check "the busy backing file's own view is served read-only (base.raw)" \
	expect_readonly_mode "$MNT3/base.raw"
check "the log names base.qcow2" log_names "$QCOWFS_LOG" base.qcow2
check "other images are served: img.raw reads correctly" \
	expect_same_as_qemu "$SRC/img.qcow2" "$MNT3/img.raw"
qemu_writer_stop
check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT3"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"

# Naming the holder of a busy image must not hang the daemon on files of its own mount: with one
# thread (-s), stat()ing /proc/PID/fd/N of a process that has a flat view open would wait for
# the daemon itself. This shell (older than qemu-io, so met first in /proc) holds a view open.
qemu_writer_start "$SRC/busy.qcow2" || bail "cannot start the writer"
MNT4=$WORK/mnt4
mount_qcowfs "$SRC" "$MNT4" -s || bail "mount -s while QEMU writes busy.qcow2 failed"
exec 8<"$MNT4/other.raw" || bail "cannot open other.raw"
sleep 2 # past the kernel's attribute cache of other.raw
setup qemu-img create -q -f qcow2 "$SRC/new.qcow2" 1M # a change: the next readdir rescans
check "-s: readdir with a busy image and an open view does not hang" fs_t 20 ls -A "$MNT4"
check "-s: lookup of the busy image does not hang and finds it" fs_t 20 test -e "$MNT4/busy.raw"
exec 8<&-
qemu_writer_stop
check "-s: the daemon unmounts and exits cleanly" umount_qcowfs "$MNT4"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
finish

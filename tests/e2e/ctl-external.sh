#!/bin/bash
# ctl-external.sh - qcowctl snapshot create --external IMAGE NEW (virsh snapshot-create
# --disk-only): NEW is an overlay on IMAGE that QEMU opens and reads as IMAGE's content, the
# backing name stored relative in one directory and absolute across directories; --dry-run
# and an existing NEW change nothing; a writer holding IMAGE (qemu-io, or the mounted daemon
# with the view open for writing) makes it refuse, naming the holder. While mounted, the new
# overlay appears as a writable view and the image that became its backing file turns
# read-only; an internal snapshot made meanwhile appears as NAME@SNAP.raw.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC=$WORK/src
MNT=$WORK/mnt
mkdir -p "$SRC/other"
cd "$SRC" || exit 1

setup qemu-img create -q -f qcow2 vm.qcow2 8M
setup qio vm.qcow2 "write -P 0x11 0 2M" "write -z 3M 64k" "write -P 0x12 5M 1M"
setup qemu-img convert -O raw vm.qcow2 "$WORK/vm0.raw"
sha_of vm.qcow2 >"$WORK/vm.sha"

# --dry-run: the plan, nothing created
out=$("$QCOWCTL" snapshot create --external --dry-run vm.qcow2 vm-s1.qcow2 2>&1)
check "dry run prints the overlay to create" grep -q "create.*vm-s1.qcow2" <<<"$out"
check "dry run names the backing file it would store" grep -q "backing file 'vm.qcow2'" <<<"$out"
check_not "dry run creates nothing" test -e vm-s1.qcow2

# the snapshot
check "external snapshot made" "$QCOWCTL" snapshot create --external -q vm.qcow2 vm-s1.qcow2
check "the overlay passes qemu-img check" image_clean vm-s1.qcow2
check "the overlay stores its backing name relative" \
	bash -c "qemu-img info --output=json vm-s1.qcow2 | grep -q '\"backing-filename\": \"vm.qcow2\"'"
check "the overlay names the backing format" \
	bash -c "qemu-img info --output=json vm-s1.qcow2 | grep -q '\"backing-filename-format\": \"qcow2\"'"
check "the overlay has the image's virtual size" \
	eval 'want=$(virtual_size vm.qcow2) && got=$(virtual_size vm-s1.qcow2) && [ "$got" = "$want" ]'
check "the overlay reads as the image" expect_same_as_qemu vm-s1.qcow2 "$WORK/vm0.raw"
check "the image itself is unchanged" sha_unchanged "$WORK/vm.sha"

# an existing NEW is never replaced
sha_of vm-s1.qcow2 >"$WORK/s1.sha"
check "an existing NEW is refused" expect_fail_msg "already exists" \
	"$QCOWCTL" snapshot create --external vm.qcow2 vm-s1.qcow2
check "the existing NEW is untouched" sha_unchanged "$WORK/s1.sha"

# across directories: the absolute path is stored
check "an overlay in another directory" \
	"$QCOWCTL" snapshot create --external -q vm-s1.qcow2 other/far.qcow2
check "it stores the absolute path" bash -c "qemu-img info --output=json other/far.qcow2 |
	grep -q '\"backing-filename\": \"$SRC/vm-s1.qcow2\"'"
check "it reads as the image" expect_same_as_qemu other/far.qcow2 "$WORK/vm0.raw"
rm -f other/far.qcow2

# a QEMU writer holding the image: refused, naming it
if qemu_writer_start vm-s1.qcow2; then
	check "refused while qemu-io writes the image, naming it" expect_fail_msg \
		"qemu-io|$QEMU_WRITER_PID" "$QCOWCTL" snapshot create --external vm-s1.qcow2 vm-s2.qcow2
	check_not "nothing created" test -e vm-s2.qcow2
	qemu_writer_stop
else
	fail "qemu-io holds vm-s1.qcow2"
fi

# mounted: the new overlay is the writable leaf, the image under it read-only
mount_qcowfs "$SRC" "$MNT" || bail "mount failed"
check "vm-s1.raw is the writable leaf" expect_writable_mode "$MNT/vm-s1.raw"
check "vm.raw, a backing file now, is read-only" expect_not_writable "$MNT/vm.raw"
exec 7<>"$MNT/vm-s1.raw"
check "refused with --offline while the daemon writes the image, naming qcowfs" expect_fail_msg \
	"qcowfs" "$QCOWCTL" snapshot create --external --offline vm-s1.qcow2 vm-s2.qcow2
exec 7>&-
check "an external snapshot of the mounted leaf" \
	"$QCOWCTL" snapshot create --external -q vm-s1.qcow2 vm-s2.qcow2
check "vm-s2.raw appears, writable" eventually expect_writable_mode "$MNT/vm-s2.raw"
check "vm-s1.raw turns read-only" eventually expect_not_writable "$MNT/vm-s1.raw"
check "vm-s2.raw shows the image's content" eventually cmp "$MNT/vm-s2.raw" "$WORK/vm0.raw"
check "an internal snapshot of the new leaf" "$QCOWCTL" snapshot create -q vm-s2.qcow2 s1
check "vm-s2@s1.raw appears with that content" eventually cmp "$MNT/vm-s2@s1.raw" "$WORK/vm0.raw"
check "unmounted cleanly" umount_qcowfs "$MNT"
for f in vm.qcow2 vm-s1.qcow2 vm-s2.qcow2; do
	check "$f passes qemu-img check" image_clean "$f"
done
finish

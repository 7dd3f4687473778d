#!/bin/bash
# write-partition.sh - the operator's real case, read-write: disks with an ext4
# partition (GPT, and MBR with the partition second and the base image compressed as cloud
# images are), each a qcow2 base image with an overlay. Through qcowfs the overlay's writable
# view has its partition attached with `losetup -o OFFSET --sizelimit SIZE` and mounted
# read-write; files are written, changed and deleted; then ext4, the loop device and qcowfs are
# unmounted. The overlay then checks clean, and in `qemu-img convert` of it the partition holds a
# clean ext4 with the new files (read with debugfs, no mount), while the base image is unchanged.
# The kernel has no partition-table support here, so never losetup -P.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_cmd sfdisk mkfs.ext4 debugfs e2fsck losetup blockdev mount umount sha256sum
require_root "loop devices and mount"
if ! losetup -f >/dev/null 2>&1; then
	echo "SKIP: no free loop device" >&2
	exit 77
fi

SRC=$WORK/src
MNT=$WORK/mnt
FILES=$WORK/files
mkdir -p "$SRC" "$FILES/etc"
echo "before" >"$FILES/etc/motd"
head -c 200k /dev/urandom >"$FILES/old.bin"
echo "to be deleted" >"$FILES/gone.txt"

# what the guest writes
NEW=$WORK/new
mkdir -p "$NEW"
head -c 3M /dev/urandom >"$NEW/big.bin"
head -c 12345 /dev/urandom >"$NEW/small.bin"
seq 1 20000 >"$NEW/numbers.txt"
echo "after" >"$WORK/motd.want"

# GPT disk, 40 MiB: partition 1 at 1 MiB, 32 MiB, ext4 with 4 KiB blocks
setup truncate -s 40M "$WORK/gpt.raw"
setup sfdisk -q "$WORK/gpt.raw" <<<$'label: gpt\nstart=2048, size=65536, type=linux'
setup mkfs.ext4 -q -F -b 4096 -d "$FILES" -E offset=$((2048 * 512)) "$WORK/gpt.raw" 8192
setup qemu-img convert -O qcow2 "$WORK/gpt.raw" "$SRC/gpt-base.qcow2"
setup qemu-img create -q -f qcow2 -b gpt-base.qcow2 -F qcow2 "$SRC/gpt.qcow2"
# MBR disk, 32 MiB: a small partition 1, partition 2 at 6 MiB, 20 MiB, ext4; base compressed
setup truncate -s 32M "$WORK/mbr.raw"
setup sfdisk -q "$WORK/mbr.raw" <<<$'label: dos\nstart=2048, size=8192, type=83\nstart=12288, size=40960, type=83'
setup mkfs.ext4 -q -F -b 4096 -d "$FILES" -E offset=$((12288 * 512)) "$WORK/mbr.raw" 5120
setup qemu-img convert -c -O qcow2 "$WORK/mbr.raw" "$SRC/mbr-base.qcow2"
setup qemu-img create -q -f qcow2 -b mbr-base.qcow2 -F qcow2 "$SRC/mbr.qcow2"
sha_of "$SRC/gpt-base.qcow2" "$SRC/mbr-base.qcow2" >"$WORK/backing.sha"

declare -A PART=([gpt]=1 [mbr]=2)
declare -A START=() SIZE=()
for d in gpt mbr; do
	sfdisk -J "$WORK/$d.raw" >"$WORK/$d.json" || bail "sfdisk -J $d.raw"
	read -r START[$d] SIZE[$d] < <(python3 "$E2E_HELPER" sfdisk-part "$WORK/$d.json" "${PART[$d]}")
	[ -n "${SIZE[$d]:-}" ] || bail "no partition ${PART[$d]} in $d.raw"
done

# guest_writes DIR: what the guest does with its file system
guest_writes()
{
	mkdir -p "$1/data/sub" &&
		cp "$NEW/big.bin" "$NEW/small.bin" "$1/data/" &&
		cp "$NEW/numbers.txt" "$1/data/sub/" &&
		echo "after" >"$1/etc/motd" &&
		rm "$1/gone.txt" &&
		sync -f "$1"
}

mount_qcowfs "$SRC" "$MNT" || bail "mount failed"
for d in gpt mbr; do
	view=$MNT/$d.raw guest=$WORK/guest-$d
	mkdir -p "$guest"
	check "$d: $d.raw is writable" expect_writable_mode "$view"
	if ! dev=$(losetup -o "${START[$d]}" --sizelimit "${SIZE[$d]}" -f --show "$view"); then
		fail "$d: losetup -o ${START[$d]} --sizelimit ${SIZE[$d]} on $view"
		continue
	fi
	track_loop "$dev"
	check "$d: the partition attaches read-write" test "$(blockdev --getro "$dev")" = 0
	if check "$d: the partition's ext4 mounts read-write" mount -t ext4 -o rw "$dev" "$guest"; then
		track_kmount "$guest"
		check "$d: files are written, changed and deleted in the guest's file system" \
			fs guest_writes "$guest"
		check "$d: they read back through the mounted file system" \
			fs cmp "$NEW/big.bin" "$guest/data/big.bin"
		check "$d: ext4 unmounts" umount "$guest"
	fi
	check "$d: the loop device detaches" losetup -d "$dev"
done
check "no loop device left on the flat views" bash -c "! losetup -a | grep -F '$MNT/'"
check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
check "the base images are unchanged (SHA-256)" sha_unchanged "$WORK/backing.sha"

# debugfs_is IMAGE PATH FILE: debugfs reads PATH in the file system image with FILE's bytes
debugfs_is()
{
	local got
	got=$(tmpfile .got)
	debugfs -R "cat $2" "$1" >"$got" 2>/dev/null || { echo "debugfs cat $2 failed"; return 1; }
	cmp "$3" "$got"
}

for d in gpt mbr; do
	conv=$WORK/$d-converted.raw part=$WORK/$d-part.img
	check "$d: $d.qcow2: qemu-img check finds no error and no leak" image_clean "$SRC/$d.qcow2"
	setup qemu-img convert -O raw "$SRC/$d.qcow2" "$conv"
	setup dd if="$conv" of="$part" bs=512 skip=$((START[$d] / 512)) count=$((SIZE[$d] / 512)) status=none
	check "$d: the partition table is intact" same_table "$WORK/$d.raw" "$conv"
	check "$d: the guest's ext4 is clean (e2fsck -fn)" e2fsck -fn "$part"
	check "$d: debugfs finds /data/big.bin with the bytes written" debugfs_is "$part" /data/big.bin "$NEW/big.bin"
	check "$d: debugfs finds /data/small.bin" debugfs_is "$part" /data/small.bin "$NEW/small.bin"
	check "$d: debugfs finds /data/sub/numbers.txt" debugfs_is "$part" /data/sub/numbers.txt "$NEW/numbers.txt"
	check "$d: debugfs finds the changed /etc/motd" debugfs_is "$part" /etc/motd "$WORK/motd.want"
	check "$d: debugfs finds the base image's file unchanged" debugfs_is "$part" /old.bin "$FILES/old.bin"
	check "$d: the deleted file is gone" \
		bash -c "debugfs -R 'stat /gone.txt' '$part' 2>&1 | grep -q 'File not found by ext2_lookup'"
	check "$d: outside the partition the disk is as it was" \
		cmp -n "${START[$d]}" "$WORK/$d.raw" "$conv"
	check "$d: $d-base.qcow2 still holds the original disk" \
		qemu-img compare -q -f qcow2 -F raw "$SRC/$d-base.qcow2" "$WORK/$d.raw"
done
finish

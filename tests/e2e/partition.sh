#!/bin/bash
# partition.sh - the operator's real case: a disk with a partition table and an ext4
# file system, converted to qcow2 (plain, and compressed as cloud images are), with an overlay
# written outside the partition. Through qcowfs: sfdisk reads the same partition table from the
# flat view, the partition attached read-only with losetup at its offset mounts, and every file
# has the original's SHA-256. The kernel has no partition-table support here, so partitions are
# attached with `losetup -o OFFSET --sizelimit SIZE`, never -P.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_cmd sfdisk mkfs.ext4 losetup mount umount sha256sum findmnt
require_root "loop devices and mount"
if ! losetup -f >/dev/null 2>&1; then
	echo "SKIP: no free loop device" >&2
	exit 77
fi

SRC=$WORK/src
MNT=$WORK/mnt
FILES=$WORK/files
mkdir -p "$SRC" "$FILES/sub/deeper"
echo "hello from the guest" >"$FILES/hello.txt"
head -c 300k /dev/urandom >"$FILES/random.bin"
head -c 1500k /dev/urandom >"$FILES/sub/big.bin"
seq 1 100000 >"$FILES/sub/deeper/numbers.txt"
: >"$FILES/empty"

# GPT disk, 40 MiB: partition 1 at 1 MiB, 32 MiB, ext4
GPT=$WORK/gpt.raw
truncate -s 40M "$GPT"
setup sfdisk -q "$GPT" <<<$'label: gpt\nstart=2048, size=65536, type=linux'
setup mkfs.ext4 -q -F -b 4096 -d "$FILES" -E offset=$((2048 * 512)) "$GPT" 8192
# MBR disk, 32 MiB: a small partition 1, then partition 2 at 6 MiB, 20 MiB, ext4
MBR=$WORK/mbr.raw
truncate -s 32M "$MBR"
setup sfdisk -q "$MBR" <<<$'label: dos\nstart=2048, size=8192, type=83\nstart=12288, size=40960, type=83'
setup mkfs.ext4 -q -F -b 4096 -d "$FILES" -E offset=$((12288 * 512)) "$MBR" 5120

# qcow2 base + overlay with writes outside the partitions (the gap before 1 MiB, and after
# the partition's end but before GPT's backup header)
setup qemu-img convert -O qcow2 "$GPT" "$SRC/gpt-base.qcow2"
setup qemu-img create -q -f qcow2 -b gpt-base.qcow2 -F qcow2 "$SRC/gpt.qcow2"
setup qio "$SRC/gpt.qcow2" "write -P 0xaa 512k 64k" "write -P 0xbb 34M 4k"
# the MBR disk compressed (as distributed cloud images are), 4k writes after the partitions
setup qemu-img convert -c -O qcow2 "$MBR" "$SRC/mbr-base.qcow2"
setup qemu-img create -q -f qcow2 -b mbr-base.qcow2 -F qcow2 "$SRC/mbr.qcow2"
setup qio "$SRC/mbr.qcow2" "write -P 0xcc 4M 4k" "write -P 0xdd 1M 512"

mount_qcowfs "$SRC" "$MNT" || bail "mount failed"

# same_table_via_view RAW FLAT: sfdisk reads a table from RAW and, through the mount, the same
# one from FLAT (both statuses tested: two failed reads print the same nothing)
same_table_via_view()
{
	local a b
	a=$(tmpfile .table)
	b=$(tmpfile .table)
	table_of "$1" >"$a" || { echo "sfdisk -d $1 failed"; return 1; }
	fs bash -c "set -o pipefail; $(declare -f table_of); table_of '$2'" >"$b" ||
		{ echo "sfdisk -d $2 failed"; return 1; }
	diff -u --label "sfdisk -d $1" --label "sfdisk -d $2" "$a" "$b"
}

SHA_WANT=$WORK/sha.want
(cd "$FILES" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$SHA_WANT"

# files_match DEV: the file system on DEV holds exactly the original files
files_match()
{
	local dev=$1 km=$2 got
	got=$(tmpfile .sha)
	mkdir -p "$km"
	mount -o ro,noload -t ext4 "$dev" "$km" || { echo "mount of $dev failed"; return 1; }
	track_kmount "$km"
	(cd "$km" && find . -path ./lost+found -prune -o -type f -print0 | sort -z |
		fs xargs -0 sha256sum) >"$got"
	umount "$km" || { echo "umount $km failed"; return 1; }
	diff -u --label originals --label "files on $dev" "$SHA_WANT" "$got"
}

# check_disk NAME PARTNO: partition table, partition contents, flat view
check_disk()
{
	local name=$1 part=$2 raw=$3 flat json start size want_start="" want_size="" dev
	flat=$MNT/$name.raw
	check "$name: flat view exists" expect_exists "$flat" || return
	check "$name: sfdisk reads the same partition table from the flat view" same_table_via_view "$raw" "$flat"
	json=$(tmpfile .json)
	sfdisk -J "$raw" >"$json.raw" && read -r want_start want_size < <(python3 "$E2E_HELPER" sfdisk-part "$json.raw" "$part")
	[ -n "${want_start:-}" ] || bail "cannot read the partition table of $raw"
	start="" size=""
	if fs sfdisk -J "$flat" >"$json"; then
		read -r start size < <(python3 "$E2E_HELPER" sfdisk-part "$json" "$part")
	fi
	check "$name: sfdisk -J finds partition $part at $want_start+$want_size on the flat view" \
		test "$start:$size" = "$want_start:$want_size"
	# go on with the offsets the table should hold, to test the contents all the same
	start=$want_start size=$want_size
	if dev=$(losetup -r -o "$start" --sizelimit "$size" -f --show "$flat"); then
		track_loop "$dev"
		check "$name: the partition's ext4 mounts read-only and its files match" \
			files_match "$dev" "$WORK/k-$name"
		check "$name: the partition is byte-identical to the original disk's" \
			cmp -n "$size" -i "$start:0" "$raw" "$dev"
		check "$name: loop device detaches" losetup -d "$dev"
	else
		fail "$name: losetup -r -o $start --sizelimit $size on the flat view"
	fi
	check "$name: flat view equals qemu-img convert" expect_same_as_qemu "$SRC/$name.qcow2" "$flat"
	check "$name: SEEK_DATA/SEEK_HOLE agree with qemu-img map" \
		check_seek_matches_map "$SRC/$name.qcow2" "$flat"
}

check_disk gpt 1 "$GPT"
check_disk mbr 2 "$MBR"

check "no loop device left on the flat views" output_lacks "$MNT/" losetup -a
check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
finish

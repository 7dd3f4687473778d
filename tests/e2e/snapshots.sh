#!/bin/bash
# snapshots.sh - internal snapshots: every snapshot S of NAME.qcow2 is NAME@S.raw, equal
# to `qemu-img convert -l snapshot.name=S`, sized as the disk was when S was taken, read-only;
# '/' and '%' in snapshot names are written %2F and %25; snapshots of an overlay include its
# backing data; the tree follows SOURCE: snapshots created or deleted, images created, written
# or deleted while mounted show up on the next lookup/readdir.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC=$WORK/src
MNT=$WORK/mnt
mkdir -p "$SRC/sub"
cd "$SRC" || exit 1

snap() { qemu-img snapshot -c "$2" "$1"; }

# vm.qcow2: data changed after every snapshot, grown after s2
setup qemu-img create -q -f qcow2 vm.qcow2 4M
setup qio vm.qcow2 "write -P 0x11 0 1M"
setup snap vm.qcow2 s1
setup qio vm.qcow2 "write -P 0x22 512k 1M" "write -P 0x23 3M 4k"
setup snap vm.qcow2 s2
setup qemu-img resize -q vm.qcow2 6M
setup qio vm.qcow2 "write -z 0 64k" "write -P 0x24 5M 64k"
setup snap vm.qcow2 'a/b%c'
setup qio vm.qcow2 "write -P 0x25 1M 128k"
setup snap vm.qcow2 '100%'
setup snap vm.qcow2 'with space'
setup qio vm.qcow2 "write -P 0x26 2M 1M" "discard 5M 64k"

# a snapshot of an overlay: its view includes the backing file's data
setup qemu-img create -q -f qcow2 base.qcow2 4M
setup qio base.qcow2 "write -P 0x31 0 4M"
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 ov.qcow2
setup qio ov.qcow2 "write -P 0x32 1M 64k"
setup snap ov.qcow2 before
setup qio ov.qcow2 "write -P 0x33 1M 1M" "write -z 0 512k"

# an image in a subdirectory, with extended L2 entries and 2M clusters for variety
setup qemu-img create -q -f qcow2 -o extended_l2=on sub/disk.qcow2 4M
setup qio sub/disk.qcow2 "write -P 0x41 4k 4k"
setup snap sub/disk.qcow2 daily
setup qio sub/disk.qcow2 "write -P 0x42 0 8k"
setup qemu-img create -q -f qcow2 -o cluster_size=2M sub/big.qcow2 4M
setup qio sub/big.qcow2 "write -P 0x43 1M 4k"
setup snap sub/big.qcow2 one
setup qio sub/big.qcow2 "write -P 0x44 1M 1M"

# encode a snapshot name as qcowfs shows it
enc()
{
	local s=$1
	s=${s//%/%25}
	s=${s//\//%2F}
	printf '%s' "$s"
}

# check_snapshot IMAGE FLATDIR NAME SNAP
check_snapshot()
{
	local img=$1 dir=$2 base=$3 s=$4 flat copy
	flat=$dir/$base@$(enc "$s").raw
	check "$base@$s: shown as $(basename "$flat")" expect_exists "$flat" || return
	check "$base@$s: equals qemu-img convert -l snapshot.name=$s" expect_same_as_qemu "$img" "$flat" "$s"
	# the snapshot's own size: qemu-img convert writes exactly that many bytes
	copy=$(snapshot_copy "$img" "$s")
	check "$base@$s: st_size is the disk size at the snapshot" expect_size_as_qemu "$copy" "$flat"
	check "$base@$s: SEEK_DATA/SEEK_HOLE agree with qemu-img map of the reverted image" \
		check_seek_matches_map "$copy" "$flat"
	rm -f "$copy"
	check "$base@$s: read-only (mode)" expect_readonly_mode "$flat"
	check "$base@$s: opens for writing fail with EROFS" expect_open_fails "$flat" EROFS w rw wtrunc
}

mount_qcowfs "$SRC" "$MNT" || bail "mount failed"

check "root lists images, snapshots (encoded) and the subdirectory" expect_listing "$MNT" \
	vm.raw vm@s1.raw vm@s2.raw 'vm@a%2Fb%25c.raw' 'vm@100%25.raw' 'vm@with space.raw' \
	base.raw ov.raw ov@before.raw sub
check "sub lists its images and snapshots" expect_listing "$MNT/sub" \
	disk.raw disk@daily.raw big.raw big@one.raw
check "vm.raw equals qemu-img convert" expect_same_as_qemu "$SRC/vm.qcow2" "$MNT/vm.raw"
for s in s1 s2 'a/b%c' '100%' 'with space'; do
	check_snapshot "$SRC/vm.qcow2" "$MNT" vm "$s"
done
check_snapshot "$SRC/ov.qcow2" "$MNT" ov before
check_snapshot "$SRC/sub/disk.qcow2" "$MNT/sub" disk daily
check_snapshot "$SRC/sub/big.qcow2" "$MNT/sub" big one
check "the raw name of a snapshot is not shown unencoded" expect_absent "$MNT/vm@a"
check "no view for a snapshot id" expect_absent "$MNT/vm@1.raw"

# ---- changes while mounted ----

# modify IMAGE COMMAND...: run a modifying qemu-img command on IMAGE. If the daemon holds the
# image locked against writers, do what an operator would then do: change a copy and rename it
# over the image (a new inode; the tree must follow it all the same).
modify()
{
	local img=$1 out tmp
	shift
	if out=$("$@" "$img" 2>&1); then
		return 0
	fi
	if ! grep -q 'lock' <<<"$out"; then
		echo "$out"
		return 1
	fi
	tmp=$(dirname "$img")/.$(basename "$img").tmp
	cp --sparse=always "$img" "$tmp" && "$@" "$tmp" && mv -f "$tmp" "$img"
}

in_listing()
{
	local l
	l=$(fs ls -A "$1") || return 1
	grep -qxF -- "$2" <<<"$l"
}
not_in_listing() { ! in_listing "$@"; }

# look at the entries first, so the kernel has them cached when they change
fs stat "$MNT/vm@s1.raw" "$MNT/vm.raw" >/dev/null
fs ls -A "$MNT" >/dev/null

setup modify "$SRC/vm.qcow2" qemu-img snapshot -c live
check "a snapshot created while mounted appears (lookup)" eventually fs test -e "$MNT/vm@live.raw"
check "a snapshot created while mounted appears (readdir)" eventually in_listing "$MNT" vm@live.raw
check "the new snapshot's view equals qemu-img convert" \
	expect_same_as_qemu "$SRC/vm.qcow2" "$MNT/vm@live.raw" live

setup modify "$SRC/vm.qcow2" qemu-img snapshot -d s1
check "a snapshot deleted while mounted disappears (lookup)" \
	eventually _e2e_negate fs test -e "$MNT/vm@s1.raw"
check "a snapshot deleted while mounted disappears (readdir)" eventually not_in_listing "$MNT" vm@s1.raw
check "the remaining snapshot s2 still reads correctly" \
	expect_same_as_qemu "$SRC/vm.qcow2" "$MNT/vm@s2.raw" s2

setup modify "$SRC/vm.qcow2" qemu-io -c "write -P 0x27 0 256k"
check "vm.raw shows data written while mounted (new open)" \
	expect_same_as_qemu "$SRC/vm.qcow2" "$MNT/vm.raw"

setup qemu-img create -q -f qcow2 "$SRC/sub/new.qcow2" 2M
setup qio "$SRC/sub/new.qcow2" "write -P 0x51 64k 64k"
setup qemu-img snapshot -c first "$SRC/sub/new.qcow2"
check "an image created while mounted appears (lookup)" eventually fs test -e "$MNT/sub/new.raw"
check "an image created while mounted appears (readdir)" eventually in_listing "$MNT/sub" new.raw
check "the new image's view equals qemu-img convert" \
	expect_same_as_qemu "$SRC/sub/new.qcow2" "$MNT/sub/new.raw"
check "the new image's snapshot appears" \
	expect_same_as_qemu "$SRC/sub/new.qcow2" "$MNT/sub/new@first.raw" first

fs stat "$MNT/sub/big.raw" "$MNT/sub/big@one.raw" >/dev/null
rm -f "$SRC/sub/big.qcow2"
check "an image deleted while mounted disappears with its snapshots (lookup)" \
	eventually _e2e_negate fs test -e "$MNT/sub/big.raw" -o -e "$MNT/sub/big@one.raw"
check "an image deleted while mounted disappears (readdir)" eventually not_in_listing "$MNT/sub" big.raw

check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
finish

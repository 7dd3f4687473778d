#!/bin/bash
# write-modes.sh - which flat views are writable: the view of a leaf image (no image in
# SOURCE uses it as backing) has its owner's write bit and opens for writing, when the mount is
# not `-o ro` and the image file is writable (who else may write: permissions.sh). The views of backing images, snapshot views, raw backing
# files, images on a read-only file system and everything under `-o ro` have no write bit and
# refuse to open for writing (EROFS). The tree follows SOURCE: an image that gets an overlay while
# mounted becomes read-only, and writable again when the overlay goes. Writing the active state
# of an image never changes its internal snapshots, nor the backing files.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC=$WORK/src
MNT=$WORK/mnt
MODELS=$WORK/models
mkdir -p "$SRC/sub" "$MODELS"
cd "$SRC" || exit 1

setup qemu-img create -q -f qcow2 base.qcow2 4M
setup qio base.qcow2 "write -P 0x11 0 4M"
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
setup qio top.qcow2 "write -P 0x12 1M 64k"
# an image with internal snapshots: the active state shares its clusters with them
setup qemu-img create -q -f qcow2 sub/snap.qcow2 4M
setup qio sub/snap.qcow2 "write -P 0x21 0 2M" "write -z 2M 64k"
setup qemu-img snapshot -c s1 sub/snap.qcow2
setup qio sub/snap.qcow2 "write -P 0x22 1M 64k"
setup qemu-img snapshot -c s2 sub/snap.qcow2
# a raw backing file
setup qemu-img create -q -f raw rawbase.img 4M
setup qio_raw rawbase.img "write -P 0x31 0 3M"
setup qemu-img create -q -f qcow2 -b rawbase.img -F raw over.qcow2

for name in top sub/snap over; do
	setup make_model "$name.qcow2" "$MODELS/${name//\//-}.raw"
done
setup qemu-img convert -O raw -l snapshot.name=s1 sub/snap.qcow2 "$MODELS/s1.raw"
setup qemu-img convert -O raw -l snapshot.name=s2 sub/snap.qcow2 "$MODELS/s2.raw"
sha_of base.qcow2 rawbase.img >"$WORK/backing.sha"

# an image on a read-only file system (a read-only bind mount of a directory of SOURCE): it
# cannot be opened for writing, so its view is read-only
RODIR=""
if [ "$(id -u)" = 0 ]; then
	RODIR=$SRC/rodir
	mkdir -p "$RODIR"
	setup qemu-img create -q -f qcow2 "$RODIR/frozen.qcow2" 1M
	setup qio "$RODIR/frozen.qcow2" "write -P 0x41 0 64k"
	if mount --bind "$RODIR" "$RODIR"; then
		track_kmount "$RODIR"
		setup mount -o remount,bind,ro "$RODIR"
	else
		echo "# cannot bind-mount $RODIR: its case is left out"
		RODIR=""
	fi
fi

mount_qcowfs "$SRC" "$MNT" || bail "mount failed"

check "top.raw (a leaf) is writable (owner write bit)" expect_writable_mode "$MNT/top.raw"
check "sub/snap.raw (a leaf with snapshots) is writable (owner write bit)" expect_writable_mode "$MNT/sub/snap.raw"
check "over.raw (a leaf over a raw file) is writable (owner write bit)" expect_writable_mode "$MNT/over.raw"
check "top.raw opens read-only, write-only and read-write" expect_open_fails "$MNT/top.raw" ok r w rw
check "base.raw (backs top.qcow2) is read-only and refuses writers (EROFS)" \
	expect_not_writable "$MNT/base.raw"
check "snapshot view sub/snap@s1.raw is read-only and refuses writers (EROFS)" \
	expect_not_writable "$MNT/sub/snap@s1.raw"
check "raw backing file rawbase.img is read-only and refuses writers (EROFS)" \
	expect_not_writable "$MNT/rawbase.img"
if [ -n "$RODIR" ]; then
	check "an image on a read-only file system is shown read-only" \
		expect_not_writable "$MNT/rodir/frozen.raw"
	check "and still reads" expect_same_as_qemu "$RODIR/frozen.qcow2" "$MNT/rodir/frozen.raw"
fi

# writing the active state of an image with snapshots: clusters shared with a snapshot are
# copied, never written in place
SNAP_OPS=(w:1000:3000:1 w:$((1024 * 1024 + 5)):70000:2 p:$((512 * 1024)):64k z:$((64 * 1024 - 10)):20
	w:$((2 * 1024 * 1024 - 100)):200:3 f)
check "sub/snap.raw: writes over clusters its snapshots share succeed" \
	write_both "$MNT/sub/snap.raw" "$MODELS/sub-snap.raw" "${SNAP_OPS[@]}"
check "sub/snap.raw holds the expected bytes" view_is_model "$MNT/sub/snap.raw" "$MODELS/sub-snap.raw"
check "snapshot view s1 is unchanged by writes to the active state" \
	view_is_model "$MNT/sub/snap@s1.raw" "$MODELS/s1.raw"
check "snapshot view s2 is unchanged by writes to the active state" \
	view_is_model "$MNT/sub/snap@s2.raw" "$MODELS/s2.raw"
check "over.raw: writes over the raw backing file succeed" \
	write_both "$MNT/over.raw" "$MODELS/over.raw" w:12345:100000:4 w:$((3 * 1024 * 1024 - 10)):20:5 f
check "over.raw holds the expected bytes" view_is_model "$MNT/over.raw" "$MODELS/over.raw"
check "rawbase.img still reads the raw file" expect_same_bytes "$SRC/rawbase.img" "$MNT/rawbase.img"

# the tree follows SOURCE: an overlay created on top.qcow2 makes top.raw a backing view
check "top.raw: a write before top.qcow2 gets an overlay" write_both "$MNT/top.raw" "$MODELS/top.raw" w:777:7777:6
setup qemu-img create -q -f qcow2 -b top.qcow2 -F qcow2 newtop.qcow2
check "once top.qcow2 has an overlay, top.raw is read-only and refuses writers" \
	expect_not_writable "$MNT/top.raw"
check "the new overlay newtop.raw is writable (owner write bit)" expect_writable_mode "$MNT/newtop.raw"
setup cp "$MODELS/top.raw" "$MODELS/newtop.raw"
check "newtop.raw: writes succeed" write_both "$MNT/newtop.raw" "$MODELS/newtop.raw" w:0:100k:7 f
check "newtop.raw holds the expected bytes" view_is_model "$MNT/newtop.raw" "$MODELS/newtop.raw"
check "top.raw is unchanged by writes to its overlay" view_is_model "$MNT/top.raw" "$MODELS/top.raw"
setup rm -f newtop.qcow2
check "with the overlay gone, top.raw is writable again" expect_writable_mode "$MNT/top.raw"
check "top.raw: writes succeed again" write_both "$MNT/top.raw" "$MODELS/top.raw" w:2M:5000:8 f
check "top.raw holds the expected bytes" view_is_model "$MNT/top.raw" "$MODELS/top.raw"

check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
for name in top sub/snap over; do
	check "$name.qcow2: qemu-img check finds no error and no leak" image_clean "$name.qcow2"
	check "$name.qcow2: qemu-img convert equals the model" \
		image_is_model "$name.qcow2" "$MODELS/${name//\//-}.raw"
done
for s in s1 s2; do
	check "sub/snap.qcow2: snapshot $s still holds what it held" \
		bash -c "qemu-img convert -O raw -l snapshot.name=$s sub/snap.qcow2 '$WORK/$s.got' && cmp '$MODELS/$s.raw' '$WORK/$s.got'"
done
check "the backing files are unchanged (SHA-256)" sha_unchanged "$WORK/backing.sha"

# -o ro: nothing is writable
MNT2=$WORK/mnt-ro
mount_qcowfs "$SRC" "$MNT2" -o ro || bail "mount -o ro failed"
for f in top.raw sub/snap.raw over.raw base.raw sub/snap@s1.raw rawbase.img; do
	check "-o ro: $f is read-only and refuses writers (EROFS)" expect_not_writable "$MNT2/$f"
done
check "-o ro: top.raw reads correctly" view_is_model "$MNT2/top.raw" "$MODELS/top.raw"
check "-o ro: the daemon unmounts and exits cleanly" umount_qcowfs "$MNT2"
check "-o ro: top.qcow2 is still clean" image_clean top.qcow2
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
finish

#!/bin/bash
# bitmaps.sh - persistent dirty bitmaps made by qemu-img stay valid across writes through a
# flat view: enabled bitmaps of 64 KiB, 4 KiB, 512 KiB (on 64 KiB clusters) and 1 MiB
# granularity get exactly the written, zeroed and discarded ranges (rounded to their granularity)
# marked dirty, as qemu-nbd -B and qemu-img map x-dirty-bitmap show them; a disabled bitmap
# keeps its dirty ranges; qemu-img check and qcowctl check find no error and no leak. A daemon
# killed with SIGKILL while the view is open leaves the bitmaps in use (qemu-img info: "in-use"),
# which QEMU then treats as inconsistent, with the fsynced data in place; writes afterwards
# leave those bitmaps in use.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_cmd qemu-nbd fallocate

SRC=$WORK/src
MNT=$WORK/mnt
mkdir -p "$SRC"
cd "$SRC" || exit 1

SIZE=$((64 << 20))
# qemu-io writes data first; the tracking bitmaps are added after it (empty); "off" is enabled
# during one write of its own, then disabled
setup qcreate -o cluster_size=64k d.qcow2 $SIZE
setup qio d.qcow2 "write -P 0x11 0 8M" "write -P 0x12 40M 1M"
setup qemu-img bitmap --add d.qcow2 off
setup qio d.qcow2 "write -P 0x13 50M 192k"
setup qemu-img bitmap --disable d.qcow2 off
setup qemu-img bitmap --add d.qcow2 b64k
setup qemu-img bitmap --add -g 4k d.qcow2 b4k
setup qemu-img bitmap --add -g 512k d.qcow2 b512k
setup qemu-img bitmap --add -g 1M d.qcow2 b1m
dirty_ranges d.qcow2 off >"$WORK/off.before" || bail "qemu-nbd cannot export bitmap off"
[ -s "$WORK/off.before" ] || bail "bitmap off has no dirty range to keep"
for b in b64k b4k b512k b1m; do
	[ -z "$(dirty_ranges d.qcow2 $b)" ] || bail "bitmap $b is not empty before the mount"
done

# the guest changes: START:LENGTH
CHANGES=(
	$((1 << 20)):4096                    # inside written data, 4 KiB
	$(((2 << 20) - 4096)):8192           # across a 64 KiB, 512 KiB, 1 MiB boundary
	$((12 << 20)):4096                   # unallocated: copy-on-write allocation
	$((30 << 20)):$((1 << 20))           # zeros written (dd from /dev/zero)
	$((20 << 20)):$((2 << 20))           # discard (punch hole)
	$(((44 << 20) + 4096)):$((64 << 10)) # zero range (fallocate -z), not granule-aligned
)

mount_qcowfs "$SRC" "$MNT" || bail "no mount"
V=$MNT/d.raw
dd_write "$V" $((1 << 20)) || fail "dd at 1 MiB"
dd_write "$V" $(((2 << 20) - 4096)) && dd_write "$V" $((2 << 20)) || fail "dd across 2 MiB"
dd_write "$V" $((12 << 20)) || fail "dd at 12 MiB"
fs dd if=/dev/zero of="$V" bs=1M count=1 seek=30 conv=notrunc,fsync status=none ||
	fail "dd of zeros at 30 MiB"
fs fallocate --punch-hole -o $((20 << 20)) -l $((2 << 20)) "$V" || fail "punch hole"
fs fallocate -z -o $(((44 << 20) + 4096)) -l $((64 << 10)) "$V" || fail "zero range"
# the model of the new view, before unmounting
fs cat "$V" >"$WORK/view.raw" || fail "reading the view"
check "the daemon exits cleanly at unmount" umount_qcowfs "$MNT"

check "qemu-img check: no error, no leak" image_clean d.qcow2
check "qcowctl check: no error, no leak" ctl check d.qcow2
check "the image holds what the view showed" image_is_model d.qcow2 "$WORK/view.raw"

# same_ranges BITMAP GRANULARITY: the bitmap's dirty ranges are the changes at its granularity
same_ranges()
{
	granule_ranges "$2" $SIZE "${CHANGES[@]}" >"$WORK/$1.want"
	dirty_ranges d.qcow2 "$1" >"$WORK/$1.got" || return 1
	diff -u "$WORK/$1.want" "$WORK/$1.got"
}
check "enabled 64 KiB bitmap: exactly the changed granules dirty" same_ranges b64k $((64 << 10))
check "enabled 4 KiB bitmap: exactly the changed granules dirty" same_ranges b4k 4096
check "enabled 512 KiB bitmap on 64 KiB clusters: the changed granules" \
	same_ranges b512k $((512 << 10))
check "enabled 1 MiB bitmap: the changed granules" same_ranges b1m $((1 << 20))
check "disabled bitmap: its dirty ranges unchanged" \
	eval 'dirty_ranges d.qcow2 off | diff -u "$WORK/off.before" -'
check "qemu-img info lists no bitmap in use" \
	eval '! qemu-img info d.qcow2 | grep -q in-use'

# ---- a crash while the view is open ----

# in_use_flags IMAGE: one "NAME in-use" line per bitmap qemu-img info says is in use
in_use_flags()
{
	qemu-img info -U --output=json "$1" | python3 -c 'import json, sys
for b in json.load(sys.stdin)["format-specific"]["data"].get("bitmaps", []):
    if "in-use" in b["flags"]:
        print(b["name"], "in-use")' | sort
}

mount_qcowfs "$SRC" "$MNT" || bail "no second mount"
exec {fd}<>"$V" || bail "cannot open the view"
head -c 4096 /dev/urandom >"$WORK/crash.block"
fs dd if="$WORK/crash.block" of="$V" bs=4096 seek=$((16 << 8)) conv=notrunc,fsync status=none ||
	fail "dd at 16 MiB"
check "while written, qemu-img info shows every bitmap in use" \
	eval '[ "$(in_use_flags d.qcow2 | wc -l)" = 5 ]'
kill -KILL "$QCOWFS_PID"
wait "$QCOWFS_PID" 2>/dev/null
exec {fd}>&-
fusermount3 -u -z "$MNT" 2>/dev/null
printf '%s in-use\n' b1m b4k b512k b64k off >"$WORK/inuse.want"
check "after SIGKILL: qemu-img info shows the bitmaps in use" \
	eval 'in_use_flags d.qcow2 | diff -u "$WORK/inuse.want" -'
check "after SIGKILL: qemu-img check finds no corruption" image_not_corrupt d.qcow2
check "after SIGKILL: qcowctl check finds no corruption either (in-use bitmaps are referenced)" \
	eval 'ctl check d.qcow2 >/dev/null; rc=$?; [ $rc = 0 ] || [ $rc = 3 ]'
check "after SIGKILL: the fsynced write is in the image" \
	eval 'qemu-img convert -O raw d.qcow2 "$WORK/after.raw" &&
		cmp -n 4096 -i 0:$((16 << 20)) "$WORK/crash.block" "$WORK/after.raw"'
check "after SIGKILL: qemu-nbd refuses to export an in-use bitmap, as for QEMU's own crash" \
	eval '! dirty_ranges d.qcow2 b64k >/dev/null 2>&1'

# writes after the crash: the bitmaps in use are left alone, the image checks clean
mount_qcowfs "$SRC" "$MNT" || bail "no third mount"
dd_write "$V" $((17 << 20)) || fail "dd at 17 MiB"
check "a later mount unmounts cleanly" umount_qcowfs "$MNT"
check "bitmaps in use stay in use" eval 'in_use_flags d.qcow2 | diff -u "$WORK/inuse.want" -'
check "qemu-img check after the later write: no corruption" image_not_corrupt d.qcow2

# ---- growing the disk: the bitmaps grow with it, the new range clean, as qemu-img resize ----

G=$WORK/grow
mkdir -p "$G/src" "$G/qemu"
setup qcreate "$G/src/g.qcow2" 8M
setup qemu-img bitmap --add "$G/src/g.qcow2" be
setup qio "$G/src/g.qcow2" "write -P 0x21 1M 64k"
setup qemu-img bitmap --add "$G/src/g.qcow2" bd
setup qio "$G/src/g.qcow2" "write -P 0x22 2M 64k"
setup qemu-img bitmap --disable "$G/src/g.qcow2" bd
setup cp "$G/src/g.qcow2" "$G/qemu/g.qcow2"
mount_qcowfs "$G/src" "$G/mnt" || bail "no mount of the image to grow"
fs truncate -s 16M "$G/mnt/g.raw" || fail "truncate -s 16M"
dd_write "$G/mnt/g.raw" $((12 << 20)) || fail "dd at 12 MiB"
fs cat "$G/mnt/g.raw" >"$WORK/g.raw" || fail "reading the grown view"
check "the grown view unmounts cleanly" umount_qcowfs "$G/mnt"
setup qemu-img resize -q "$G/qemu/g.qcow2" 16M
setup dd if="$WORK/g.raw" of="$WORK/g.block" bs=4096 skip=$((12 << 8)) count=1 status=none
setup qio "$G/qemu/g.qcow2" "write -s $WORK/g.block $((12 << 20)) 4k"
check "grown: qemu-img check finds no error, no leak" image_clean "$G/src/g.qcow2"
check "grown: the same disk as QEMU's" qemu-img compare -q "$G/src/g.qcow2" "$G/qemu/g.qcow2"
for b in be bd; do
	check "grown: bitmap $b has QEMU's dirty ranges" \
		eval 'dirty_ranges "$G/qemu/g.qcow2" '$b' >"$WORK/gq" &&
			dirty_ranges "$G/src/g.qcow2" '$b' | diff -u "$WORK/gq" -'
done

finish

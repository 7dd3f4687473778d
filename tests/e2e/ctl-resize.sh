#!/bin/bash
# ctl-resize.sh - `qcowctl resize` against `qemu-img resize` on a copy: the same bytes and size,
# for absolute and relative sizes, 512 B clusters (the L1 table moves), v2 images, overlays over
# a longer backing file (the new range reads zeros), images with internal snapshots (kept, with
# their content); shrinking without --shrink and bad sizes are refused with one line and change
# no byte; --shrink gives what qemu-img resize --shrink gives (to cluster boundaries and into a
# cluster, relative, 512-byte clusters, extended L2, an overlay, compressed clusters, internal
# snapshots whose content stays; a v2 image with snapshots refused as QEMU refuses it), and a
# grow afterwards reads zeros past the cut (QEMU's shows the old bytes there); an
# image another process writes is not resized.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

D=$WORK/d
mkdir -p "$D"
cd "$D" || exit 1

# the backing file of the overlays
setup qemu-img create -q -f qcow2 "$D/base.qcow2" 6M
setup qio "$D/base.qcow2" "write -P 0x31 0 1M" "write -P 0x32 5M 64k"

# grows IMAGE SIZE: qcowctl resize IMAGE SIZE gives what qemu-img resize gives a copy.
grows()
{
	local img=$1 size=$2 copy=$D/copy-$1
	cp "$img" "$copy" || return 1
	qemu-img resize -q "$copy" "$size" || return 1
	"$QCOWCTL" resize -q "$img" "$size" || return 1
	image_clean "$img" || return 1
	[ "$(virtual_size "$img")" = "$(virtual_size "$copy")" ] ||
		{ echo "size $(virtual_size "$img"), qemu-img: $(virtual_size "$copy")"; return 1; }
	same_content "$img" "$copy"
}

setup qemu-img create -q -f qcow2 r1.qcow2 1M
setup qio r1.qcow2 "write -P 0x61 0 1M"
check "resize to an absolute size" grows r1.qcow2 3M
check "resize by a relative size" grows r1.qcow2 +1536K
setup qemu-img create -q -f qcow2 -o cluster_size=512 r2.qcow2 64K
setup qio r2.qcow2 "write -P 0x62 1000 30k"
check "resize that moves the L1 table (512-byte clusters)" grows r2.qcow2 40M
setup qemu-img create -q -f qcow2 -o compat=0.10,refcount_bits=16 r3.qcow2 1M
check "resize of a v2 image" grows r3.qcow2 9M
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 r4.qcow2 1M
setup qio r4.qcow2 "write -P 0x63 512k 4k"
check "resize of an overlay over a longer backing file: the new range reads zeros" grows r4.qcow2 7M
setup qemu-img create -q -f qcow2 -o compat=0.10 -b base.qcow2 -F qcow2 r5.qcow2 1M
check "a v2 overlay grown over a longer backing file (qemu-img refuses this one)" \
	ctl resize -q r5.qcow2 6M
check "... reads zeros past its old end" qio r5.qcow2 "read -P 0 1M 5M"
check "... and is clean" image_clean r5.qcow2

setup qemu-img create -q -f qcow2 snap.qcow2 2M
setup qio snap.qcow2 "write -P 0x71 0 2M"
setup qemu-img snapshot -c s1 snap.qcow2
setup qio snap.qcow2 "write -P 0x72 0 64k"
setup qemu-img snapshot -c s2 snap.qcow2
setup qemu-img convert -O raw -l snapshot.name=s1 snap.qcow2 "$WORK/s1.raw"
check "resize of an image with internal snapshots" grows snap.qcow2 +5M
check "... keeps them" bash -c "qemu-img snapshot -l snap.qcow2 | grep -q ' s1 ' &&
	qemu-img snapshot -l snap.qcow2 | grep -q ' s2 '"
check "... with their content" bash -c "qemu-img convert -O raw -l snapshot.name=s1 snap.qcow2 \
	'$WORK/s1.after' && cmp -n 2097152 '$WORK/s1.raw' '$WORK/s1.after'"

sha_of r1.qcow2 >"$WORK/r1.sha"
for s in 1M -1M +100 3000; do
	check "resize to $s is refused with one line" bash -c "! '$QCOWCTL' resize r1.qcow2 -- $s \
		2>'$WORK/err' && [ \$(wc -l <'$WORK/err') = 1 ]"
done
check "shrinking without --shrink is refused, naming the flag" grep -q 'without --shrink' <(
	"$QCOWCTL" resize r1.qcow2 1M 2>&1)
check "resize --dry-run prints the plan" bash -c "set -o pipefail; '$QCOWCTL' resize --dry-run r1.qcow2 +1G |
	grep 'would grow' >/dev/null"
check "refused and dry resizes leave the image unchanged" sha_unchanged "$WORK/r1.sha"

# ---- --shrink, against qemu-img resize --shrink on a copy ----

# shrinks IMAGE SIZE: qcowctl resize --shrink IMAGE SIZE gives what qemu-img resize --shrink
# gives a copy (size, content, a clean image), and a grow back reads zeros past SIZE
shrinks()
{
	local img=$1 size=$2 copy=$D/copy-$1 n
	cp "$img" "$copy" || return 1
	qemu-img resize -q --shrink "$copy" -- "$size" || return 1
	"$QCOWCTL" resize -q --shrink "$img" -- "$size" || return 1
	image_clean "$img" || return 1
	n=$(virtual_size "$img")
	[ "$n" = "$(virtual_size "$copy")" ] ||
		{ echo "size $n, qemu-img: $(virtual_size "$copy")"; return 1; }
	same_content "$img" "$copy" || return 1
	"$QCOWCTL" resize -q "$img" $((n + 3 * 65536 + 512)) || return 1
	qio "$img" "read -P 0 $n $((3 * 65536 + 512))" || { echo "the grown range is not zeros"; return 1; }
	image_clean "$img"
}
setup qemu-img create -q -f qcow2 k1.qcow2 8M
setup qio k1.qcow2 "write -P 0x81 0 8M"
check "shrink to a cluster boundary" shrinks k1.qcow2 6M
check "shrink into a cluster (its tail zeroed)" shrinks k1.qcow2 5000k
check "shrink by a relative size" shrinks k1.qcow2 -1M
setup qemu-img create -q -f qcow2 -o cluster_size=512 k2.qcow2 4M
setup qio k2.qcow2 "write -P 0x82 0 4M"
check "shrink with 512-byte clusters" shrinks k2.qcow2 1000k
setup qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=64k k3.qcow2 4M
setup qio k3.qcow2 "write -P 0x83 4k 3M"
check "shrink with extended L2 (into a subcluster)" shrinks k3.qcow2 1030k
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 k4.qcow2 6M
setup qio k4.qcow2 "write -P 0x84 512k 1M"
check "shrink an overlay over a longer backing file" shrinks k4.qcow2 1M
setup qemu-img convert -c -O qcow2 k1.qcow2 k5.qcow2
check "shrink a compressed image" shrinks k5.qcow2 2500k
setup qemu-img create -q -f qcow2 k6.qcow2 4M
setup qio k6.qcow2 "write -P 0x86 0 4M"
setup qemu-img snapshot -c s1 k6.qcow2
setup qemu-img convert -O raw -l snapshot.name=s1 k6.qcow2 "$WORK/k6s1.raw"
check "shrink an image with an internal snapshot" shrinks k6.qcow2 1M
check "... the snapshot keeps its size and content (qemu-img snapshot -a on a copy)" bash -c "
	cp '$D/k6.qcow2' '$WORK/k6a.qcow2' && qemu-img snapshot -a s1 '$WORK/k6a.qcow2' &&
	qemu-img convert -O raw '$WORK/k6a.qcow2' '$WORK/k6s1.after' &&
	cmp '$WORK/k6s1.raw' '$WORK/k6s1.after'"
setup qemu-img create -q -f qcow2 -o compat=0.10 k7.qcow2 4M
setup qemu-img snapshot -c s1 k7.qcow2
sha_of k7.qcow2 >"$WORK/k7.sha"
check "a v2 image with snapshots: refused, as qemu-img refuses it" bash -c "
	cp k7.qcow2 k7.ref.qcow2 && ! qemu-img resize -q --shrink k7.ref.qcow2 1M 2>/dev/null &&
	! '$QCOWCTL' resize --shrink k7.qcow2 1M 2>'$WORK/err' && [ \$(wc -l <'$WORK/err') = 1 ]"
check "... and unchanged" sha_unchanged "$WORK/k7.sha"

# ---- images other processes use ----

setup qemu-img create -q -f qcow2 busy.qcow2 10M
sha_of busy.qcow2 >"$WORK/busy.sha"
setup qemu_writer_start busy.qcow2
check "resize refuses an image qemu-io writes, naming it" holder_named resize -q busy.qcow2 +1M
qemu_writer_stop
check "... and the image is unchanged" sha_unchanged "$WORK/busy.sha"

finish

#!/bin/bash
# ctl-measure.sh - `qcowctl measure` against `qemu-img measure`: the same text and JSON, byte for
# byte, and the same exit status, for --size and for source images (an image with data, zero
# clusters and discarded ranges, a chain whose layers each hold part of the data, a compressed
# image, an image with 512-byte clusters, one with extended L2, a sparse raw file, an empty
# image, images with persistent bitmaps: their "bitmaps size"), into raw and qcow2 with -o cluster_size, compat, refcount_bits, extended_l2,
# preallocation and backing_file; the refusals (both --size and an image, neither, an
# unsupported format) exit as qemu-img's.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$WORK" || exit 1
Q=$QCOWCTL

setup mk_qcow2 data.qcow2 64M
setup qio data.qcow2 "write -P 0x11 0 1M" "write -P 0x12 5M 4k" "write -z 8M 2M" \
	"write -P 0x13 20M 100k" "discard 20M 64k" "write -P 0x14 63M 3k"
setup mk_qcow2 base.qcow2 64M
setup qio base.qcow2 "write -P 0x21 0 8M" "write -P 0x22 40M 1M"
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
setup qio mid.qcow2 "write -P 0x23 4M 8M" "write -z 40M 512k"
setup qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2
setup qio top.qcow2 "write -P 0x24 30M 3M" "write -P 0x25 63M 1k"
setup qemu-img convert -c -O qcow2 top.qcow2 comp.qcow2
setup mk_qcow2 c512.qcow2 4M -o cluster_size=512
setup qio c512.qcow2 "write -P 0x31 1000 7000" "write -P 0x32 3M 1k"
setup mk_qcow2 ext.qcow2 16M -o extended_l2=on,cluster_size=128k
setup qio ext.qcow2 "write -P 0x41 4k 4k" "write -P 0x42 9M 200k"
setup truncate -s 32M sparse.raw
setup qio_raw sparse.raw "write -P 0x51 1M 64k" "write -P 0x52 17M 1M"
setup mk_qcow2 empty.qcow2 10G
# persistent bitmaps: enabled, 512-byte and 1 MiB granularity (disabled), on a disk whose size
# is no multiple of a cluster, one written so its data clusters exist
setup mk_qcow2 bm.qcow2 100M
setup qemu-img bitmap --add bm.qcow2 bm1
setup qemu-img bitmap --add -g 512 bm.qcow2 a-longer-bitmap-name
setup qemu-img bitmap --add --disable -g 1M bm.qcow2 b3
setup qemu-img create -q -f qcow2 bm2.qcow2 100000k
setup qemu-img bitmap --add bm2.qcow2 x
setup qio bm2.qcow2 "write -P 0x61 0 1M"

# measure_as_qemu ARGS...: `qcowctl measure ARGS` prints what `qemu-img measure ARGS` prints and
# exits as it does
measure_as_qemu()
{
	local qrc orc
	qemu-img measure "$@" >q.out 2>/dev/null
	qrc=$?
	"$Q" measure "$@" >o.out 2>o.err
	orc=$?
	[ "$qrc" = "$orc" ] || { echo "qemu-img exit $qrc, qcowctl exit $orc"; cat o.err; return 1; }
	diff -u --label qemu-img --label qcowctl q.out o.out
}

for s in 0 1 512 1M 1G 1000G 3T; do
	for o in "" "-O qcow2" "-O qcow2 -o cluster_size=2M" "-O qcow2 -o cluster_size=4k,refcount_bits=1" \
		"-O qcow2 -o extended_l2=on,cluster_size=16k" "-O qcow2 -o preallocation=full" \
		"-O qcow2 -o compat=0.10"; do
		read -ra w <<<"$o"
		check "measure --size $s $o" measure_as_qemu --size "$s" "${w[@]}"
	done
done
check "measure --size 1G --output=json" measure_as_qemu --size 1G -O qcow2 --output=json
for img in data.qcow2 top.qcow2 mid.qcow2 comp.qcow2 c512.qcow2 ext.qcow2 sparse.raw empty.qcow2 \
	bm.qcow2 bm2.qcow2; do
	for o in "" "-O qcow2" "-O qcow2 -o cluster_size=512" "-O qcow2 -o cluster_size=2M" \
		"-O qcow2 -o cluster_size=16k,extended_l2=on" "-O qcow2 -o preallocation=metadata" \
		"-O qcow2 -o preallocation=falloc" "-O qcow2 -o compat=0.10" \
		"-O qcow2 -o backing_file=base.qcow2,backing_fmt=qcow2" "-O qcow2 --output=json"; do
		read -ra w <<<"$o"
		check "measure $o $img" measure_as_qemu "${w[@]}" "$img"
	done
done
# refused_as_qemu ARGS...: qemu-img measure refuses ARGS; qcowctl too, as a usage error (one
# line, exit 64)
refused_as_qemu()
{
	local rc
	! qemu-img measure "$@" >/dev/null 2>&1 || { echo "qemu-img measure $* succeeds"; return 1; }
	"$Q" measure "$@" >o.out 2>o.err
	rc=$?
	[ "$rc" = 64 ] && [ "$(wc -l <o.err)" = 1 ] && [ ! -s o.out ] ||
		{ echo "exit $rc:"; cat o.out o.err; return 1; }
}
check "measure --size and an image: refused as by qemu-img" refused_as_qemu --size 1G data.qcow2
check "measure with neither: refused as by qemu-img" refused_as_qemu -O qcow2
check "measure -O vmdk: refused as by qemu-img" refused_as_qemu -O vmdk --size 1M
check "measure -o cluster_size=3k: refused as by qemu-img" bash -c \
	"! qemu-img measure -O qcow2 -o cluster_size=3k --size 1M 2>/dev/null &&
	! '$Q' measure -O qcow2 -o cluster_size=3k --size 1M"

finish

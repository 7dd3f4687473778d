#!/bin/bash
# formats.sh - every on-disk variant the reader must handle: v2 and v3 headers, cluster
# sizes 512 B to 2 MiB, refcount widths 1/16/64, zlib and zstd compressed clusters, extended L2
# entries with partly written subclusters over a backing file, zero clusters over backing data,
# preallocated images, persistent bitmaps, lazy refcounts with the dirty bit, external data
# files (plain and data_file_raw). For each image the flat view must equal `qemu-img convert`
# byte for byte, st_size the virtual size, and SEEK_DATA/SEEK_HOLE agree with `qemu-img map`.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC=$WORK/src
MNT=$WORK/mnt
mkdir -p "$SRC"
cd "$SRC" || exit 1

# The same mix of writes for most images: partial clusters, a long run, data at the very end,
# a zero write inside data, and unallocated gaps between them.
fill()
{
	qio "$1" \
		"write -P 0xa1 0 3k" \
		"write -P 0xa2 100k 200k" \
		"write -P 0xa3 1M 64k" \
		"write -z 1040k 8k" \
		"write -P 0xa4 3089k 5k" \
		"write -P 0xa5 4095k 1k"
}

IMAGES=()

# -- header versions, cluster sizes, refcount widths
setup mk_qcow2 v2.qcow2 4M -o compat=0.10
setup fill v2.qcow2
setup mk_qcow2 v3.qcow2 4M -o compat=1.1
setup fill v3.qcow2
IMAGES+=(v2 v3)
for cs in 512 4096 65536 2097152; do
	setup mk_qcow2 "c$cs.qcow2" 4M -o "cluster_size=$cs"
	setup fill "c$cs.qcow2"
	IMAGES+=("c$cs")
done
setup mk_qcow2 c2m-odd.qcow2 5000k -o cluster_size=2M # virtual size not a multiple of the cluster
setup qio c2m-odd.qcow2 "write -P 0xb1 4M 904k" "write -P 0xb2 1M 4k"
IMAGES+=(c2m-odd)
for rb in 1 16 64; do
	setup mk_qcow2 "rc$rb.qcow2" 4M -o "refcount_bits=$rb"
	setup fill "rc$rb.qcow2"
	IMAGES+=("rc$rb")
done

# -- compressed clusters: zlib and zstd, from a raw disk with compressible, semi-compressible,
#    incompressible (stored uncompressed by qemu-img) data and holes
RAWSRC=$WORK/compress-source.raw
setup qemu-img create -q -f raw "$RAWSRC" 4M
setup qio_raw "$RAWSRC" "write -P 0x5c 0 640k" "write -P 0x00 1M 64k" "write -P 0x77 3M 1M"
seq 1 60000 | dd of="$RAWSRC" bs=64k seek=12 conv=notrunc status=none || bail "seq | dd"
head -c 256k /dev/urandom | dd of="$RAWSRC" bs=64k seek=40 conv=notrunc status=none || bail "dd"
setup qemu-img convert -c -O qcow2 "$RAWSRC" zlib.qcow2
setup qemu-img convert -c -O qcow2 -o compression_type=zstd "$RAWSRC" zstd.qcow2
setup qemu-img convert -c -O qcow2 -o cluster_size=4096 "$RAWSRC" zlib4k.qcow2
setup qemu-img convert -c -O qcow2 -o cluster_size=2M,compression_type=zstd "$RAWSRC" zstd2m.qcow2
# compressed writes into an image with ordinary clusters, and overwrites of compressed clusters
setup mk_qcow2 mixed-zlib.qcow2 4M
setup qio mixed-zlib.qcow2 "write -c -P 0x61 0 64k" "write -c -P 0x62 1M 64k" \
	"write -P 0x63 1M 4k" "write -P 0x64 2M 64k" "write -z 64k 64k"
IMAGES+=(zlib zstd zlib4k zstd2m mixed-zlib)

# -- extended L2 entries: small writes into 64k clusters (2k subclusters) over a backing file,
#    partial subclusters, zero subclusters, a whole zero cluster, a discarded cluster
setup mk_qcow2 xbase.qcow2 4M
setup qio xbase.qcow2 "write -P 0x11 0 4M"
setup mk_qcow2 extl2.qcow2 4M -o extended_l2=on -b xbase.qcow2 -F qcow2
setup qio extl2.qcow2 \
	"write -P 0x22 4k 2k" \
	"write -P 0x23 6656 512" \
	"write -P 0x24 130k 10k" \
	"write -z 200k 4k" \
	"write -z 1M 64k" \
	"write -P 0x25 2M 64k" \
	"write -P 0x26 3M 1k" \
	"discard 3M 64k" \
	"write -P 0x27 4094k 2k"
setup mk_qcow2 extl2-solo.qcow2 4M -o extended_l2=on,cluster_size=128k
setup qio extl2-solo.qcow2 "write -P 0x28 0 1k" "write -P 0x29 9k 3k" "write -z 12k 4k" \
	"write -P 0x2a 1M 128k" "write -z 1M 4k"
IMAGES+=(xbase extl2 extl2-solo)

# -- zero clusters over backing data, v3 (zero flag) and v2 (no zero flag: qemu writes zeros)
setup mk_qcow2 zbase.qcow2 4M
setup qio zbase.qcow2 "write -P 0x31 0 4M"
setup mk_qcow2 zover.qcow2 4M -b zbase.qcow2 -F qcow2
setup qio zover.qcow2 "write -z 0 64k" "write -z 1M 512k" "write -z 2052k 4k" "write -P 0x32 3M 64k"
setup mk_qcow2 v2base.qcow2 4M -o compat=0.10
setup qio v2base.qcow2 "write -P 0x33 0 4M"
setup mk_qcow2 v2over.qcow2 4M -o compat=0.10 -b v2base.qcow2 -F qcow2
setup qio v2over.qcow2 "write -z 0 64k" "write -P 0x34 2M 8k"
IMAGES+=(zbase zover v2base v2over)

# -- preallocation
for p in metadata falloc full; do
	setup mk_qcow2 "prealloc-$p.qcow2" 4M -o "preallocation=$p"
	setup fill "prealloc-$p.qcow2"
	IMAGES+=("prealloc-$p")
done

# -- persistent bitmaps (the autoclear bit and the bitmap directory must not disturb reads)
setup mk_qcow2 bitmaps.qcow2 4M
setup qemu-img bitmap --add bitmaps.qcow2 b0
setup qemu-img bitmap --add --granularity 128k bitmaps.qcow2 b1
setup fill bitmaps.qcow2
setup qemu-img bitmap --disable bitmaps.qcow2 b1
IMAGES+=(bitmaps)

# -- lazy refcounts left dirty by a crash (qemu-io's abort)
setup mk_qcow2 lazy.qcow2 4M -o lazy_refcounts=on
setup fill lazy.qcow2
(ulimit -c 0; qemu-io -c "write -P 0x41 2M 128k" -c abort lazy.qcow2; true) >/dev/null 2>&1
IMAGES+=(lazy)

# -- external data files
setup mk_qcow2 datafile.qcow2 4M -o data_file=datafile.data
setup fill datafile.qcow2
setup mk_qcow2 datafile-raw.qcow2 4M -o data_file=datafile-raw.data,data_file_raw=on
setup fill datafile-raw.qcow2
IMAGES+=(datafile datafile-raw)

# The oracle itself must see what we meant to build: the dirty bit is set, bitmaps exist, the
# compressed images hold compressed clusters.
check "qemu-img sees the lazy image as dirty" \
	bash -c "qemu-img info --output=json -U lazy.qcow2 | grep -q '\"dirty-flag\": true'"
check "qemu-img sees compressed clusters in zlib.qcow2 and zstd.qcow2" \
	bash -c "qemu-img check zlib.qcow2 | grep -q '[1-9][0-9.]*% compressed' &&
		 qemu-img check zstd.qcow2 | grep -q '[1-9][0-9.]*% compressed' &&
		 qemu-img info zstd.qcow2 | grep -q 'compression type: zstd'"
check "qemu-img lists the persistent bitmaps" \
	bash -c "qemu-img info bitmaps.qcow2 | grep -q 'name: b1'"

mount_qcowfs "$SRC" "$MNT" || bail "mount failed"

for n in "${IMAGES[@]}"; do
	flat=$MNT/$n.raw
	if ! check "$n: $n.raw exists" expect_exists "$flat"; then
		continue
	fi
	check "$n: flat view equals qemu-img convert" expect_same_as_qemu "$SRC/$n.qcow2" "$flat"
	check "$n: st_size is the virtual size" expect_size_as_qemu "$SRC/$n.qcow2" "$flat"
	check "$n: SEEK_DATA/SEEK_HOLE agree with qemu-img map" \
		check_seek_matches_map "$SRC/$n.qcow2" "$flat"
done

# Reads at odd offsets and lengths that start and end inside clusters, subclusters and
# compressed clusters. O_DIRECT, so each read reaches the daemon as issued (not page-aligned by
# the page cache) - as QEMU with cache=none would read a flat view.
odd_reads()
{
	local img=$1 flat=$2 exp
	exp=$(tmpfile .raw)
	qemu-img convert -U -O raw "$img" "$exp" || return 1
	fs python3 "$E2E_HELPER" odd-reads "$flat" "$exp"
}
for n in c512 extl2 extl2-solo zlib zstd zlib4k zstd2m mixed-zlib datafile-raw v2over; do
	[ -e "$MNT/$n.raw" ] && check "$n: unaligned O_DIRECT reads match" odd_reads "$SRC/$n.qcow2" "$MNT/$n.raw"
done

check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
finish

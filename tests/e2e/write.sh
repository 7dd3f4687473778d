#!/bin/bash
# write.sh - writes through writable flat views: pwrite at unaligned offsets and
# lengths, across cluster and L2-table boundaries, over compressed (zlib and zstd), zero,
# unallocated, allocated and backing-provided clusters; fallocate punch-hole, zero-range and
# preallocation; fsync and fdatasync; truncate growing the disk, refused shrinking and writes
# past the end; on every image variant: v2 and v3, clusters of 512 B, 64 KiB and 2 MiB,
# refcount widths 1 and 64, extended L2 entries, external data files (plain and raw), lazy
# refcounts (clean, and left dirty by a crash), a raw backing file, persistent bitmaps.
# The test keeps a model of each disk (qemu-img convert of the chain before mounting, then the
# same operations applied to it). While mounted the view equals the model; after unmounting,
# `qemu-img check` of each image is clean (no error, no leak), `qemu-img convert` equals the
# model and no backing file changed. A second mount writes again over what the first wrote.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC=$WORK/src
MNT=$WORK/mnt
MODELS=$WORK/models
mkdir -p "$SRC" "$MODELS"
cd "$SRC" || exit 1

has_bitmaps_ext() { python3 "$E2E_HELPER" qcow2-fields "$1" | grep -q '^exts .*0x23852875'; }
# ---- backing files: 3 MiB of random data with a hole, as qcow2 (4 KiB clusters) and raw, so
# the 4 MiB overlays have backing data, a hole and an area past the backing file's end
setup qemu-img create -q -f raw "$WORK/base.src" 3M
setup python3 "$E2E_HELPER" apply "$WORK/base.src" w:0:1M:1 w:1280k:1792k:2
setup qemu-img convert -O qcow2 -o cluster_size=4096 "$WORK/base.src" base.qcow2
setup cp "$WORK/base.src" base.img

# ---- the image variants: NAME, cluster size, options, backing (qcow2, raw or none), and
# whether qemu-io can write compressed clusters into it (not with an external data file)
VARIANTS=(
	"v2         65536   compat=0.10                      qcow2 yes"
	"v3         65536   compat=1.1                       qcow2 yes"
	"c512       512     cluster_size=512                 qcow2 yes"
	"c512v2     512     cluster_size=512,compat=0.10     qcow2 yes"
	"c2m        2097152 cluster_size=2M                  qcow2 yes"
	"rc1        65536   refcount_bits=1                  qcow2 yes"
	"rc64       512     refcount_bits=64,cluster_size=512 qcow2 yes"
	"extl2      65536   extended_l2=on                   qcow2 yes"
	"extl2-16k  16384   extended_l2=on,cluster_size=16k  qcow2 yes"
	"zstd       65536   compression_type=zstd            qcow2 yes"
	"datafile   65536   data_file=datafile.data          qcow2 no"
	"datafile-raw 65536 data_file=datafile-raw.data,data_file_raw=on none no"
	"lazy       65536   lazy_refcounts=on                qcow2 yes"
	"lazy-dirty 65536   lazy_refcounts=on                qcow2 yes"
	"rawback    65536   compat=1.1                       raw   yes"
	"bitmap     65536   compat=1.1                       qcow2 yes"
)

declare -A CS=() SIZE=() EXT=()
NAMES=()

# layout NAME C COMPRESS: what qemu-io writes into the overlay before mounting, in clusters:
# 2-3 compressed (two different patterns), 5 a zero cluster, 7 allocated data, 9 one allocated
# subcluster, 10 one zero subcluster (plain data and zero writes without extended L2), the rest
# unallocated (backing data below 3 MiB, a backing hole at 1-1.25 MiB, nothing past 3 MiB).
layout()
{
	local img=$1 c=$2 comp=$3 cflag=""
	[ "$comp" = yes ] && cflag="-c "
	qio "$img" \
		"write ${cflag}-P 0x33 $((2 * c)) $c" \
		"write ${cflag}-P 0x34 $((3 * c)) $c" \
		"write -z $((5 * c)) $c" \
		"write -P 0x44 $((7 * c)) $c" \
		"write -P 0x55 $((9 * c + 3 * c / 32)) $((c / 32))" \
		"write -z $((10 * c + c / 32)) $((c / 32))"
}

for v in "${VARIANTS[@]}"; do
	read -r name c opts backing comp <<<"$v"
	size=4M
	[ "$c" = 2097152 ] && size=48M # room for 24 clusters
	case $backing in
	qcow2) setup qemu-img create -q -f qcow2 -o "$opts" -b base.qcow2 -F qcow2 "$name.qcow2" "$size" ;;
	raw) setup qemu-img create -q -f qcow2 -o "$opts" -b base.img -F raw "$name.qcow2" "$size" ;;
	none) setup qemu-img create -q -f qcow2 -o "$opts" "$name.qcow2" "$size" ;;
	esac
	setup layout "$name.qcow2" "$c" "$comp"
	NAMES+=("$name")
	CS[$name]=$c
	SIZE[$name]=$(virtual_size "$name.qcow2") || bail "qemu-img info $name.qcow2"
	EXT[$name]=0
	case $opts in *extended_l2=on*) EXT[$name]=1 ;; esac
done

# a lazy-refcounts image left dirty by a crash (qemu-io's abort): the writer must repair or
# otherwise cope with refcounts that lag behind
(ulimit -c 0; qemu-io -c "write -P 0x66 $((12 * 65536)) 100k" -c abort lazy-dirty.qcow2; true) >/dev/null 2>&1
# persistent bitmaps: writes keep them valid (in use while written, stored at close)
setup qemu-img bitmap --add bitmap.qcow2 b0
setup qemu-img bitmap --add --granularity 128k bitmap.qcow2 b1
# the same, for an image that is only read through the mount
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 bitmap-read.qcow2 4M
setup qio bitmap-read.qcow2 "write -P 0x77 64k 64k"
setup qemu-img bitmap --add bitmap-read.qcow2 b0

# the oracle sees what we meant to build
for name in v3 c512 c2m zstd extl2-16k; do
	check "fixtures: $name.qcow2 has compressed clusters" has_compressed "$name.qcow2"
done
check "fixtures: lazy-dirty.qcow2 is dirty" \
	bash -c "qemu-img info --output=json -U lazy-dirty.qcow2 | grep -q '\"dirty-flag\": true'"
check "fixtures: bitmap.qcow2 has the autoclear bit for bitmaps" \
	test "$(($(qcow2_field bitmap.qcow2 autoclear) & 1))" = 1
check "fixtures: bitmap.qcow2 has the bitmaps header extension" has_bitmaps_ext bitmap.qcow2

# models: the bytes of each chain before any write through the mount
for name in "${NAMES[@]}" bitmap-read; do
	setup make_model "$name.qcow2" "$MODELS/$name.raw"
done
# backing files (and only those) must never change
sha_of base.qcow2 base.img >"$WORK/backing.sha"

# ops NAME SEEDBASE: the first round of operations for an image, in its cluster size C and
# virtual size S (seeds make every write's bytes distinct)
ops()
{
	local name=$1 s=$2 c=${CS[$1]} size=${SIZE[$1]} l2
	if [ "${EXT[$name]}" = 1 ]; then l2=$((c * c / 16)); else l2=$((c * c / 8)); fi
	echo "w:$((2 * c + c / 3 + 1)):100:$((s + 1))"     # inside a compressed cluster
	echo "w:$((3 * c - 7)):$((c / 2 + 13)):$((s + 2))" # across two compressed clusters
	echo "w:$((5 * c + 5)):$((c / 4)):$((s + 3))"      # part of a zero cluster
	echo "w:$((7 * c + c / 2)):$c:$((s + 4))"          # allocated cluster into an unallocated one
	echo "f"
	echo "w:$((9 * c + 1)):$((c / 16)):$((s + 5))"     # partly allocated (subclusters)
	echo "w:$((10 * c + c / 64)):$((c / 16)):$((s + 6))"
	echo "w:$((11 * c + 333)):$((3 * c + 100)):$((s + 7))" # over backing data, several clusters
	echo "w:$((11 * c + 200)):$c:$((s + 8))"           # again, into clusters it just allocated
	echo "d"
	echo "w:0:1:$((s + 9))"                            # the first byte
	echo "w:$((size - 1000)):1000:$((s + 10))"         # the end of the disk
	echo "w:$((20 * c - 1)):2:$((s + 11))"             # two bytes across a cluster boundary
	echo "w:$((19 * c + 3)):$((3 * c + 1234)):$((s + 12))"
	if [ "$l2" -lt "$size" ]; then                     # across L2 tables
		echo "w:$((l2 - 1000)):3000:$((s + 13))"
		echo "w:$((2 * l2 - c / 2 - 3)):$((l2 + c + 6)):$((s + 14))"
	fi
	echo "w:$((1024 * 1024 + 4096 + 7)):5000:$((s + 15))" # over the backing file's hole
	echo "w:$((3 * 1024 * 1024 - 2000)):4000:$((s + 16))" # across the backing file's end
	echo "p:$((13 * c)):$((2 * c))"                    # discard over backing data, aligned
	echo "p:$((2 * c + 10)):$c"                        # discard across compressed clusters
	echo "p:$((21 * c + 1)):5"                         # a few bytes inside a cluster
	echo "z:$((5 * c + c / 2)):$((c + 17))"            # zero range, unaligned
	echo "z:$((16 * c)):$((2 * c))"                    # zero range, aligned
	echo "a:$((18 * c)):$((c + 100))"                  # preallocation (content unchanged)
	echo "a:$((c + 7)):100"
	[ "$c" -lt 524288 ] && echo "p:$((1024 * 1024 - c)):$((2 * c))" # ending in the backing hole
	echo "f"
}

# ops2 NAME SEEDBASE: the second round, after a remount: writes over what the first round
# wrote, discarded and zeroed, and over the rest again
ops2()
{
	local name=$1 s=$2 c=${CS[$1]} size=${SIZE[$1]}
	echo "w:$((13 * c + 100)):$((c / 2)):$((s + 1))"   # into a discarded range
	echo "w:$((16 * c + c - 1)):2:$((s + 2))"          # into a zeroed range
	echo "w:$((2 * c)):$((2 * c)):$((s + 3))"          # whole compressed clusters, aligned
	echo "p:$((7 * c + 3)):$((c * 3))"                 # discard data the first round wrote
	echo "w:$((11 * c + 123)):4567:$((s + 4))"         # rewrite in place
	echo "w:$((size / 2 - 77)):$((c + 200)):$((s + 5))"
	# 512 B clusters with 64-bit refcounts: a refcount table of one cluster covers 2 MiB of
	# image file, so 2 MiB more data makes the table itself grow
	[ "$name" = rc64 ] && echo "w:$((1024 * 1024 + 3)):$((2 * 1024 * 1024)):$((s + 6))"
	echo "f"
}

mount_qcowfs "$SRC" "$MNT" || bail "mount failed"

for name in "${NAMES[@]}"; do
	view=$MNT/$name.raw model=$MODELS/$name.raw
	check "$name: view is writable (owner write bit)" expect_writable_mode "$view"
	check "$name: view reads the chain before any write" view_is_model "$view" "$model"
	mapfile -t OPS < <(ops "$name" 1000)
	check "$name: ${#OPS[@]} writes, discards and zeroings through the view succeed" \
		write_both "$view" "$model" "${OPS[@]}"
	check "$name: view holds the expected bytes" view_is_model "$view" "$model"
	check "$name: st_size is still the virtual size" expect_size "$view" "${SIZE[$name]}"
	check "$name: after the writes (and fsync), SEEK_DATA/SEEK_HOLE agree with qemu-img map" \
		check_seek_matches_map "$SRC/$name.qcow2" "$view"
done
check "the backing file's view base.raw stays read-only" expect_not_writable "$MNT/base.raw"
check "base.raw still reads the backing file" expect_same_as_qemu "$SRC/base.qcow2" "$MNT/base.raw"
check "bitmap-read: the view reads correctly (read only, never written)" \
	view_is_model "$MNT/bitmap-read.raw" "$MODELS/bitmap-read.raw"

# past the end, shrinking: refused, the size stays, nothing is corrupted
v3=$MNT/v3.raw
S=${SIZE[v3]}
check "v3: pwrite at the virtual size fails" expect_op_fails "$v3" "w:$S:10:1"
check "v3: pwrite 1 MiB past the end fails" expect_op_fails "$v3" "w:$((S + 1048576)):4096:2"
check "v3: pwrite across the end does not write past it" expect_op_fails "$v3" "w:$((S - 100)):200:3"
# whatever the write across the end did inside the disk, write those 100 bytes again
check "v3: the last 100 bytes are written again" write_both "$v3" "$MODELS/v3.raw" "w:$((S - 100)):100:4"
check "v3: truncate to a smaller size fails with EINVAL" expect_op_errno "$v3" "t:$((S - 65536))" EINVAL
check "v3: the size has not changed" expect_size "$v3" "$S"
check "v3: the view still holds the expected bytes" view_is_model "$v3" "$MODELS/v3.raw"

check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"

# after_unmount ROUND: every image checks clean and holds its model
after_unmount()
{
	local round=$1 name
	for name in "${NAMES[@]}"; do
		check "$round: $name: qemu-img check finds no error and no leak" image_clean "$SRC/$name.qcow2"
		check "$round: $name: qemu-img convert equals the model" \
			image_is_model "$SRC/$name.qcow2" "$MODELS/$name.raw"
	done
	check "$round: the backing files are unchanged (SHA-256)" sha_unchanged "$WORK/backing.sha"
	check "$round: lazy refcounts: the dirty bit is clear after unmounting" \
		test "$(($(qcow2_field lazy.qcow2 incompat) & 1)):$(($(qcow2_field lazy-dirty.qcow2 incompat) & 1))" = 0:0
}
after_unmount "first mount"

# bitmaps: kept in force (bitmaps.sh checks their contents), none left in use
check "bitmap: the autoclear bit for bitmaps is still set after writing" \
	test "$(($(qcow2_field bitmap.qcow2 autoclear) & 1))" = 1
check "bitmap: the bitmaps header extension is still there" has_bitmaps_ext bitmap.qcow2
check "bitmap: both bitmaps listed" eval 'lists_bitmap bitmap.qcow2 b0 && lists_bitmap bitmap.qcow2 b1'
check "bitmap: no bitmap left in use" eval '! qemu-img info bitmap.qcow2 | grep -q in-use'
check "bitmap-read: an image only read keeps its autoclear bit" \
	test "$(($(qcow2_field bitmap-read.qcow2 autoclear) & 1))" = 1
check "bitmap-read: qemu-img check is clean" image_clean bitmap-read.qcow2
check "bitmap-read: unchanged" image_is_model bitmap-read.qcow2 "$MODELS/bitmap-read.raw"

# ---- second mount: write over what the first mount wrote, grow some disks
GROW=(v2 c512 extl2 c2m)
declare -A NEWSIZE=([v2]=$((7 * 1048576)) [c512]=$((12 * 1048576)) [extl2]=$((5 * 1048576 + 65536)) [c2m]=$((50 * 1048576)))
mount_qcowfs "$SRC" "$MNT" || bail "second mount failed"
for name in "${NAMES[@]}"; do
	view=$MNT/$name.raw model=$MODELS/$name.raw
	check "second mount: $name: the view reads what the first mount wrote" view_is_model "$view" "$model"
	mapfile -t OPS < <(ops2 "$name" 2000)
	check "second mount: $name: more writes succeed" write_both "$view" "$model" "${OPS[@]}"
	check "second mount: $name: view holds the expected bytes" view_is_model "$view" "$model"
done
for name in "${GROW[@]}"; do
	view=$MNT/$name.raw model=$MODELS/$name.raw old=${SIZE[$name]} new=${NEWSIZE[$name]}
	check "second mount: $name: truncate grows the disk to $new" write_both "$view" "$model" "t:$new"
	check "second mount: $name: st_size is the new size" expect_size "$view" "$new"
	check "second mount: $name: writes across the old end and at the new end" \
		write_both "$view" "$model" "w:$((old - 100)):5000:3001" "w:$((new - 777)):777:3002" f
	check "second mount: $name: the grown view holds the expected bytes (zeros in the new part)" \
		view_is_model "$view" "$model"
	SIZE[$name]=$new
done
check "second mount: the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
after_unmount "second mount"
for name in "${GROW[@]}"; do
	check "$name: qemu-img info shows the grown virtual size" \
		test "$(virtual_size "$SRC/$name.qcow2")" = "${NEWSIZE[$name]}"
done
finish

#!/bin/bash
# ctl-convert.sh - qcowctl convert (copy's qemu-img name) against qemu-img convert 7.2 on twin
# inputs: each qemu-img option gives the same guest bytes (qemu-img compare), the same header
# facts (qemu-img info --output=json), the same allocation (qemu-img map, host offsets aside)
# and a clean qemu-img check: -o cluster_size/compat/refcount_bits/lazy_refcounts/extended_l2/
# compression_type/preallocation, -c with zlib and zstd, -B/-F (only what differs from BACKING
# is written), -S SIZE and -S 0 (qcow2 and raw), -n (an existing destination), snapshots as
# source (SRC@SNAP, -l, -s), -W/-m (compressing on several threads writes the same file);
# the source's compat level is kept unless asked; bad options are refused in one line; the
# source never changes.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC=$WORK/src
mkdir -p "$SRC" "$WORK/us" "$WORK/ref"
cd "$SRC" || exit 1
US=$WORK/us
REF=$WORK/ref

# cv_layout IMAGE: its qemu-img map, one extent a line, host offsets left out (and extents
# that differ only by them merged)
cv_layout()
{
	qemu-img map --output=json "$1" | python3 -c 'import json, sys
out = []
for e in json.load(sys.stdin):
	e.pop("offset", None)
	p = out[-1] if out else None
	if p and p["start"] + p["length"] == e["start"] and \
			dict(p, start=0, length=0) == dict(e, start=0, length=0):
		p["length"] += e["length"]
	else:
		out.append(e)
for e in out:
	print(json.dumps(e, sort_keys=True))'
}

# cv_same US REF: same bytes, same header facts, both clean (allocation may differ)
cv_same()
{
	qemu-img compare -q "$1" "$2" || { echo "$1 and $2 differ"; return 1; }
	diff <(cv_facts "$1") <(cv_facts "$2") || { echo "header facts differ"; return 1; }
	image_clean "$1"
}

# cv_facts IMAGE: qemu-img info's header facts (format-specific data, cluster size, virtual
# size, backing file and format), one a line
cv_facts()
{
	qemu-img info --output=json "$1" | python3 -c 'import json, sys
d = json.load(sys.stdin)
for k in ("virtual-size", "cluster-size", "backing-filename", "backing-filename-format"):
	print(k, d.get(k))
for k, v in sorted(d.get("format-specific", {}).get("data", {}).items()):
	print(k, v)'
}

# cv_twins US REF: same bytes, same header facts, same allocation, both clean
cv_twins()
{
	qemu-img compare -q "$1" "$2" || { echo "$1 and $2 differ"; return 1; }
	diff <(cv_facts "$1") <(cv_facts "$2") || { echo "header facts differ"; return 1; }
	diff <(cv_layout "$1") <(cv_layout "$2") || { echo "allocation differs"; return 1; }
	image_clean "$1"
}

# cv_compressed IMAGE: its count of compressed clusters (qemu-img check)
cv_compressed()
{
	qemu-img check --output=json "$1" | python3 -c \
		'import json, sys; print(json.load(sys.stdin).get("compressed-clusters", 0))'
}

# cv_extents FILE: the data extents of a sparse file (SEEK_DATA/SEEK_HOLE), one a line
cv_extents()
{
	python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size, off = os.fstat(fd).st_size, 0
while off < size:
	try:
		d = os.lseek(fd, off, os.SEEK_DATA)
	except OSError:
		break
	off = os.lseek(fd, d, os.SEEK_HOLE)
	print(d, off)' "$1"
}

# cv_depth0 IMAGE: bytes of data its own layer holds (qemu-img map, depth 0)
cv_depth0()
{
	qemu-img map --output=json "$1" | python3 -c 'import json, sys
print(sum(e["length"] for e in json.load(sys.stdin) if e["depth"] == 0 and e["data"]))'
}

# v3: data, zero runs inside data (shorter and longer than a cluster, and an allocated
# all-zero cluster), a zeroed range, data further on; v2: the same at compat=0.10
setup qemu-img create -q -f qcow2 v3.qcow2 8M
setup qio v3.qcow2 "write -P 0x11 0 64k" "write -P 0x22 64k 4k" "write -P 0 68k 60k" \
	"write -P 0 128k 64k" "write -P 0x33 192k 8k" "write -P 0 200k 16k" \
	"write -P 0x33 216k 8k" "write -P 0 224k 160k" "write -P 0x34 384k 4k" \
	"write -P 0x44 1M 1M" "write -z 3M 64k" "write -P 0x45 5M 300k"
setup qemu-img convert -q -O qcow2 -o compat=0.10 v3.qcow2 v2.qcow2
# a chain: base <- ov (a cluster equal to base's, zeros over base's data, new data)
setup qemu-img create -q -f qcow2 base.qcow2 8M
setup qio base.qcow2 "write -P 0xaa 0 1M" "write -P 0xbb 2M 1M"
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 ov.qcow2
setup qio ov.qcow2 "write -P 0xaa 0 64k" "write -z 2M 64k" "write -P 0xcc 1M 64k" \
	"write -P 0xcd 6M 128k"
setup qemu-img create -q -f qcow2 other.qcow2 8M
setup qio other.qcow2 "write -P 0x55 0 8M"
# internal snapshot s1 (id 1), then the active state moves on
setup cp v3.qcow2 snap.qcow2
setup qemu-img snapshot -c s1 snap.qcow2
setup qio snap.qcow2 "write -P 0x99 0 2M" "write -z 5M 64k"
sha_of ./*.qcow2 >"$WORK/src.sha"

# ---- the name, formats ----
check "convert -f qcow2 -O qcow2 makes the copy" "$QCOWCTL" convert -q -f qcow2 -O qcow2 \
	v3.qcow2 "$US/plain.qcow2"
setup qemu-img convert -O qcow2 v3.qcow2 "$REF/plain.qcow2"
check "it is qemu-img convert's twin" cv_twins "$US/plain.qcow2" "$REF/plain.qcow2"
check "-O vmdk is refused in one line" expect_fail_msg "vmdk" "$QCOWCTL" convert -O vmdk \
	v3.qcow2 "$US/x.vmdk"
check "-f raw is refused in one line" expect_fail_msg "raw" "$QCOWCTL" convert -f raw \
	v3.qcow2 "$US/x.qcow2"
check_not "nothing is created by a refusal" test -e "$US/x.qcow2"

# ---- compat: the source's kept unless asked ----
check "a compat=0.10 source" "$QCOWCTL" convert -q v2.qcow2 "$US/v2.qcow2"
setup qemu-img convert -O qcow2 -o compat=0.10 v2.qcow2 "$REF/v2.qcow2"
check "keeps compat=0.10 (qemu-img convert -o compat=0.10's twin)" cv_twins "$US/v2.qcow2" \
	"$REF/v2.qcow2"
check "-o compat=1.1 upgrades it" "$QCOWCTL" convert -q -o compat=1.1 v2.qcow2 "$US/v2-3.qcow2"
setup qemu-img convert -O qcow2 -o compat=1.1 v2.qcow2 "$REF/v2-3.qcow2"
check "as qemu-img convert -o compat=1.1" cv_twins "$US/v2-3.qcow2" "$REF/v2-3.qcow2"
check "-o lazy_refcounts=on alone needs and gets compat=1.1" "$QCOWCTL" convert -q \
	-o lazy_refcounts=on v2.qcow2 "$US/v2-lazy.qcow2"
setup qemu-img convert -O qcow2 -o lazy_refcounts=on v2.qcow2 "$REF/v2-lazy.qcow2"
check "as qemu-img convert -o lazy_refcounts=on" cv_twins "$US/v2-lazy.qcow2" \
	"$REF/v2-lazy.qcow2"

# ---- -o: each option as qemu-img's ----
i=0
for o in cluster_size=4k cluster_size=2M compat=1.1,lazy_refcounts=on refcount_bits=1 \
	refcount_bits=64 extended_l2=on,cluster_size=128k compression_type=zstd \
	preallocation=metadata preallocation=falloc preallocation=full \
	cluster_size=16k,extended_l2=on,refcount_bits=8; do
	i=$((i + 1))
	check "-o $o" "$QCOWCTL" convert -q -o "$o" v3.qcow2 "$US/o$i.qcow2"
	setup qemu-img convert -O qcow2 -o "$o" v3.qcow2 "$REF/o$i.qcow2"
	check "-o $o: qemu-img convert's twin" cv_twins "$US/o$i.qcow2" "$REF/o$i.qcow2"
done
check "-o with two -o lists merged" "$QCOWCTL" convert -q -o cluster_size=32k -o \
	lazy_refcounts=on v3.qcow2 "$US/o2lists.qcow2"
setup qemu-img convert -O qcow2 -o cluster_size=32k -o lazy_refcounts=on v3.qcow2 \
	"$REF/o2lists.qcow2"
check "as qemu-img's" cv_twins "$US/o2lists.qcow2" "$REF/o2lists.qcow2"
check "-o size= is refused in one line" expect_fail_msg "size" "$QCOWCTL" convert -o size=1G \
	v3.qcow2 "$US/x.qcow2"
check "-o bad_option is refused in one line" expect_fail_msg "bad_option" "$QCOWCTL" convert \
	-o bad_option=1 v3.qcow2 "$US/x.qcow2"
check "-o cluster_size=3k is refused in one line naming DEST" expect_fail_msg \
	"x.qcow2.*cluster_size" "$QCOWCTL" convert -o cluster_size=3k v3.qcow2 "$US/x.qcow2"
check "zstd on a compat=0.10 source without compat=1.1 is refused in one line" \
	expect_fail_msg "compat=1.1" "$QCOWCTL" convert -o compression_type=zstd,compat=0.10 \
	v3.qcow2 "$US/x.qcow2"
check_not "nothing is left of a refused copy" compgen -G "$US/*x.qcow2*"
check "-o compression_type=lz4 is refused in one line" expect_fail_msg "lz4" "$QCOWCTL" \
	convert -o compression_type=lz4 v3.qcow2 "$US/x.qcow2"

# ---- -c with zlib and zstd ----
for ct in zlib zstd; do
	for img in v3 ov; do
		check "-c $ct ($img)" "$QCOWCTL" convert -q -c -o compression_type=$ct $img.qcow2 \
			"$US/c-$ct-$img.qcow2"
		setup qemu-img convert -c -O qcow2 -o compression_type=$ct $img.qcow2 \
			"$REF/c-$ct-$img.qcow2"
		check "-c $ct ($img): qemu-img convert -c's twin" cv_twins "$US/c-$ct-$img.qcow2" \
			"$REF/c-$ct-$img.qcow2"
		check "-c $ct ($img): as many compressed clusters as qemu-img's" test \
			"$(cv_compressed "$US/c-$ct-$img.qcow2")" = \
			"$(cv_compressed "$REF/c-$ct-$img.qcow2")"
		check "-c $ct ($img): qemu-io reads the clusters back" qemu-img compare -q \
			"$US/c-$ct-$img.qcow2" $img.qcow2
	done
done
check "-c with zstd holds compressed clusters" test "$(cv_compressed "$US/c-zstd-v3.qcow2")" -gt 0

# ---- -B BACKING [-F FMT] ----
check "-B base -F qcow2 of the overlay" "$QCOWCTL" convert -q -B "$SRC/base.qcow2" -F qcow2 \
	ov.qcow2 "$US/b1.qcow2"
setup qemu-img convert -O qcow2 -B "$SRC/base.qcow2" -F qcow2 ov.qcow2 "$REF/b1.qcow2"
check "the same view, backing file and format as qemu-img's" qemu-img compare -q \
	"$US/b1.qcow2" "$REF/b1.qcow2"
check "the same header facts as qemu-img's" diff <(cv_facts "$US/b1.qcow2") \
	<(cv_facts "$REF/b1.qcow2")
check "it passes qemu-img check" image_clean "$US/b1.qcow2"
check "it holds only what differs from the backing file (1 cluster + 128k)" test \
	"$(cv_depth0 "$US/b1.qcow2")" = $((64 * 1024 + 128 * 1024))
check "-B with the format probed" "$QCOWCTL" convert -q -B base.qcow2 ov.qcow2 \
	"$SRC/b2.qcow2"
check "it stores the name as given" diff <(cv_facts "$SRC/b2.qcow2") \
	<(cv_facts "$REF/b1.qcow2" | sed "s|$SRC/base.qcow2|base.qcow2|")
check "and shows the overlay's view" qemu-img compare -q "$SRC/b2.qcow2" ov.qcow2
rm -f "$SRC/b2.qcow2"
check "-B of a standalone source" "$QCOWCTL" convert -q -B "$SRC/base.qcow2" v3.qcow2 \
	"$US/b3.qcow2"
check "shows the source's view" qemu-img compare -q "$US/b3.qcow2" v3.qcow2
check "passes qemu-img check" image_clean "$US/b3.qcow2"
check "-B a backing file foreign to the source" "$QCOWCTL" convert -q -B "$SRC/other.qcow2" \
	ov.qcow2 "$US/b4.qcow2"
check "still shows the source's view" qemu-img compare -q "$US/b4.qcow2" ov.qcow2
check "-B with -c" "$QCOWCTL" convert -q -c -B "$SRC/other.qcow2" ov.qcow2 "$US/b5.qcow2"
check "shows the source's view" qemu-img compare -q "$US/b5.qcow2" ov.qcow2
check "passes qemu-img check" image_clean "$US/b5.qcow2"
check "-o backing_file=,backing_fmt= is -B -F" "$QCOWCTL" convert -q \
	-o "backing_file=$SRC/base.qcow2,backing_fmt=qcow2" ov.qcow2 "$US/b6.qcow2"
check "the same image as -B -F's" cv_twins "$US/b6.qcow2" "$US/b1.qcow2"
check "-B with preallocation (no extended_l2) is refused in one line naming DEST" \
	expect_fail_msg "x.qcow2.*extended_l2" "$QCOWCTL" convert -B base.qcow2 \
	-o preallocation=metadata ov.qcow2 "$US/x.qcow2"
check "-c with preallocation is refused in one line, as qemu-img refuses it" \
	expect_fail_msg "compression and preallocation" "$QCOWCTL" convert -c \
	-o preallocation=metadata ov.qcow2 "$US/x.qcow2"
check_not "qemu-img refuses it too" qemu-img convert -c -O qcow2 -o preallocation=metadata \
	ov.qcow2 "$US/x.qcow2"
check "-F without -B is refused in one line" expect_fail_msg "needs -B" "$QCOWCTL" convert -F qcow2 \
	ov.qcow2 "$US/x.qcow2"
check "-B with -O raw is refused in one line" expect_fail_msg "raw" "$QCOWCTL" convert -O raw \
	-B base.qcow2 ov.qcow2 "$US/x.raw"

# ---- -S ----
for s in 0 512 3k 4k 8k 64k 128k 1M; do
	check "-S $s (qcow2)" "$QCOWCTL" convert -q -S $s v3.qcow2 "$US/s$s.qcow2"
	setup qemu-img convert -O qcow2 -S $s v3.qcow2 "$REF/s$s.qcow2"
	check "-S $s (qcow2): qemu-img convert -S's twin" cv_twins "$US/s$s.qcow2" \
		"$REF/s$s.qcow2"
	check "-S $s (raw)" "$QCOWCTL" convert -q -O raw -S $s v3.qcow2 "$US/s$s.raw"
	setup qemu-img convert -O raw -S $s v3.qcow2 "$REF/s$s.raw"
	check "-S $s (raw): the same bytes" cmp "$US/s$s.raw" "$REF/s$s.raw"
	check "-S $s (raw): the same holes" diff <(cv_extents "$US/s$s.raw") \
		<(cv_extents "$REF/s$s.raw")
done
check "-S 1000 is refused in one line" expect_fail_msg "512" "$QCOWCTL" convert -S 1000 \
	v3.qcow2 "$US/x.qcow2"
check "-S 32M is refused in one line" expect_fail_msg "16M" "$QCOWCTL" convert -S 32M v3.qcow2 \
	"$US/x.qcow2"

# ---- -n: an existing destination ----
setup qemu-img create -q -f qcow2 "$US/n.qcow2" 12M
setup qio "$US/n.qcow2" "write -P 0x77 64k 11M"
setup cp "$US/n.qcow2" "$REF/n.qcow2"
check "-n writes into an existing larger image" "$QCOWCTL" convert -q -n v3.qcow2 \
	"$US/n.qcow2"
setup qemu-img convert -n -O qcow2 v3.qcow2 "$REF/n.qcow2"
# qemu-img marks the source's zeros as zero clusters even where the image read zeros already;
# they are left as they are here (the same bytes)
check "-n: the same bytes as qemu-img convert -n's" cv_same "$US/n.qcow2" "$REF/n.qcow2"
setup qemu-img create -q -f qcow2 "$US/small.qcow2" 1M
check "-n into a smaller image is refused in one line naming it" expect_fail_msg \
	"small.qcow2.*smaller" "$QCOWCTL" convert -n v3.qcow2 "$US/small.qcow2"
check "-n with -o is refused in one line" expect_fail_msg "skipping image creation" "$QCOWCTL" convert -n \
	-o compat=1.1 v3.qcow2 "$US/n.qcow2"
if qemu_writer_start "$US/n.qcow2"; then
	check "-n into an image qemu-io writes is refused in one line naming it" \
		expect_fail_msg "qemu-io|$QEMU_WRITER_PID" "$QCOWCTL" convert -n v3.qcow2 "$US/n.qcow2"
	qemu_writer_stop
else
	fail "qemu-io holds n.qcow2"
fi
check "and the image is as the first -n left it" qemu-img compare -q "$US/n.qcow2" "$REF/n.qcow2"
setup qemu-img create -q -f qcow2 "$US/corrupt.qcow2" 12M
setup python3 -c 'import struct, sys
with open(sys.argv[1], "r+b") as f:
	f.seek(72)
	v = struct.unpack(">Q", f.read(8))[0]
	f.seek(72)
	f.write(struct.pack(">Q", v | 2))' "$US/corrupt.qcow2"
sha_of "$US/corrupt.qcow2" >"$WORK/corrupt.sha"
check "-n into an image marked corrupt is refused in one line, as qemu-img refuses it" \
	expect_fail_msg "corrupt" "$QCOWCTL" convert -n v3.qcow2 "$US/corrupt.qcow2"
check "and it is not touched" sha_unchanged "$WORK/corrupt.sha"
setup truncate -s 16M "$US/n.raw"
check "-n into a raw file is refused in one line" expect_fail_msg "not a qcow2" "$QCOWCTL" \
	convert -n v3.qcow2 "$US/n.raw"
check "-n of a missing image is refused in one line" expect_fail_msg "missing.qcow2" \
	"$QCOWCTL" convert -n v3.qcow2 "$US/missing.qcow2"
check_not "and creates nothing" test -e "$US/missing.qcow2"

# ---- an internal snapshot as source ----
setup qemu-img convert -O qcow2 -l snapshot.name=s1 snap.qcow2 "$REF/snap.qcow2"
i=0
for form in "snap.qcow2@s1" "-l snapshot.name=s1 snap.qcow2" "-l snapshot.id=1 snap.qcow2" \
	"-l s1 snap.qcow2" "-s s1 snap.qcow2"; do
	i=$((i + 1))
	# shellcheck disable=SC2086 # the form is split into its words on purpose
	check "snapshot as source: $form" "$QCOWCTL" convert -q $form "$US/snap$i.qcow2"
	check "$form: qemu-img convert -l's twin" cv_twins "$US/snap$i.qcow2" "$REF/snap.qcow2"
done
check_not "the snapshot is not the active state" qemu-img compare -q "$US/snap1.qcow2" \
	snap.qcow2
check "a missing snapshot is refused in one line" expect_fail_msg "nosuch" "$QCOWCTL" convert \
	snap.qcow2@nosuch "$US/x.qcow2"
check "SRC@SNAP with -l is refused in one line" expect_fail_msg "snapshot" "$QCOWCTL" convert \
	-l s1 snap.qcow2@s1 "$US/x.qcow2"

# ---- -W, -m ----
check "-W -m 8 are accepted" "$QCOWCTL" convert -q -W -m 8 ov.qcow2 "$US/w.qcow2"
setup qemu-img convert -O qcow2 -W -m 8 ov.qcow2 "$REF/w.qcow2"
check "and give qemu-img convert -W -m 8's twin" cv_twins "$US/w.qcow2" "$REF/w.qcow2"
for m in 1 3; do
	check "-c -m $m (compressing on $m threads)" "$QCOWCTL" convert -q -c -m $m v3.qcow2 \
		"$US/m$m.qcow2"
done
check "-c -m 1 and -c -m 3 write the same file" cmp "$US/m1.qcow2" "$US/m3.qcow2"
check "-c -m 3 is qemu-img convert -c's twin" cv_twins "$US/m3.qcow2" "$REF/c-zlib-v3.qcow2"
check "-m 17 is refused in one line" expect_fail_msg "17" "$QCOWCTL" convert -m 17 ov.qcow2 \
	"$US/x.qcow2"

# ---- --help names every option ----
help=$("$QCOWCTL" convert --help)
for opt in --shallow -f -O -o -c -B -F -S -n -l -s -W -m --dry-run --json -p -q; do
	check "--help describes $opt" grep -qE -- "^ +$opt[ ,]" <<<"$help"
done

check "no source image changed" sha_unchanged "$WORK/src.sha"
finish

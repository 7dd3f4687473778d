#!/bin/bash
# backing.sh - backing chains: raw backing files shown under their own name,
# backing files without a backing format (probed), relative, ../ and absolute backing paths,
# images in subdirectories, backing files shorter than their overlay (zeros past their end),
# chains of depth 2, 32 and 1000. Every layer that backs another is shown read-only and its
# flat view is that layer's own chain.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC=$WORK/src
MNT=$WORK/mnt
mkdir -p "$SRC"/{raw,nofmt,paths/sub/deeper,short,d2,d32}

# -- a raw backing file with data and holes, under a qcow2 overlay
cd "$SRC/raw" || exit 1
setup qemu-img create -q -f raw base.img 2M
setup qio_raw base.img "write -P 0x55 0 64k" "write -P 0x56 1M 4k" "write -P 0x57 2040k 8k"
setup mk_qcow2 top.qcow2 4M -b base.img -F raw
setup qio top.qcow2 "write -P 0x58 32k 64k" "write -z 1M 512" "write -P 0x59 3M 4k"

# -- no backing format: qcow2 and raw backing files, probed
cd "$SRC/nofmt" || exit 1
setup mk_qcow2 base.qcow2 4M
setup qio base.qcow2 "write -P 0x61 0 1M" "write -P 0x62 2M 1M"
setup mk_qcow2 top.qcow2 4M -b base.qcow2 -F qcow2
setup qio top.qcow2 "write -P 0x63 512k 1M"
setup python3 "$E2E_HELPER" drop-backing-fmt top.qcow2
setup qemu-img create -q -f raw rawbase.img 1M
setup qio_raw rawbase.img "write -P 0x64 0 1M"
setup mk_qcow2 rawtop.qcow2 1M -b rawbase.img -F raw
setup qio rawtop.qcow2 "write -P 0x65 4k 4k"
setup python3 "$E2E_HELPER" drop-backing-fmt rawtop.qcow2
check "nofmt: qemu-img sees no backing format on top.qcow2 and rawtop.qcow2" \
	eval "output_lacks 'backing file format' qemu-img info -U top.qcow2 &&
		output_lacks 'backing file format' qemu-img info -U rawtop.qcow2"

# -- backing paths: relative, ../, ../../, into a subdirectory, absolute
cd "$SRC/paths" || exit 1
setup mk_qcow2 base.qcow2 4M
setup qio base.qcow2 "write -P 0x71 0 4M"
setup mk_qcow2 rel.qcow2 4M -b base.qcow2 -F qcow2
setup qio rel.qcow2 "write -P 0x72 0 64k"
setup mk_qcow2 abs.qcow2 4M -b "$SRC/paths/base.qcow2" -F qcow2
setup qio abs.qcow2 "write -P 0x73 64k 64k"
setup mk_qcow2 sub/up.qcow2 4M -b ../base.qcow2 -F qcow2
setup qio sub/up.qcow2 "write -P 0x74 128k 64k"
setup mk_qcow2 sub/deeper/upup.qcow2 4M -b ../../rel.qcow2 -F qcow2
setup qio sub/deeper/upup.qcow2 "write -P 0x75 192k 64k"
setup mk_qcow2 sub/inner.qcow2 4M
setup qio sub/inner.qcow2 "write -P 0x76 1M 1M"
setup mk_qcow2 down.qcow2 4M -b sub/inner.qcow2 -F qcow2
setup qio down.qcow2 "write -P 0x77 1M 4k"
check "paths: qemu-img resolves ../../rel.qcow2 from the image's own directory" \
	bash -c "qemu-img info -U --backing-chain sub/deeper/upup.qcow2 | grep -q 'actual path: sub/deeper/../../base.qcow2'"

# -- backing files shorter than the overlay
cd "$SRC/short" || exit 1
setup mk_qcow2 base.qcow2 1M
setup qio base.qcow2 "write -P 0x81 0 1M"
setup mk_qcow2 top.qcow2 4M -b base.qcow2 -F qcow2
setup qio top.qcow2 "write -P 0x82 3M 4k" "write -P 0x83 1020k 8k"
head -c 1000000 /dev/urandom >rawshort.img || bail "head"
setup mk_qcow2 rawtop.qcow2 2M -b rawshort.img -F raw
setup qio rawtop.qcow2 "write -P 0x84 1M 4k"

# -- depth 2 and 32: every layer writes a pattern overlapping the next one's, some zero writes
cd "$SRC/d2" || exit 1
setup mk_qcow2 l0.qcow2 4M
setup qio l0.qcow2 "write -P 0x91 0 3M"
setup mk_qcow2 l1.qcow2 4M -b l0.qcow2 -F qcow2
setup qio l1.qcow2 "write -P 0x92 1M 1M" "write -z 2560k 64k"

cd "$SRC/d32" || exit 1
D32=()
prev=""
for i in $(seq 0 31); do
	n=$(printf 'l%02d.qcow2' "$i")
	if [ -z "$prev" ]; then
		setup mk_qcow2 "$n" 4M
	else
		setup mk_qcow2 "$n" 4M -b "$prev" -F qcow2
	fi
	cmds=("write -P $((i + 1)) $((i * 96))k 128k")
	((i % 5 == 4)) && cmds+=("write -z $(((i - 2) * 96))k 32k")
	((i % 7 == 6)) && cmds+=("write -P $((0xe0 + i)) $((4096 - i * 8))k 4k")
	setup qio "$n" "${cmds[@]}"
	D32+=("$n")
	prev=$n
done

mount_qcowfs "$SRC" "$MNT" || bail "mount failed"

# raw backing file: shown under its own name, read-only, the file's bytes
check "raw: base.img shown under its own name" expect_exists "$MNT/raw/base.img"
check "raw: base.img equals the raw file" expect_same_bytes "$SRC/raw/base.img" "$MNT/raw/base.img"
check "raw: base.img has st_size of the file" expect_size "$MNT/raw/base.img" "$(stat -c %s "$SRC/raw/base.img")"
check "raw: base.img is read-only (mode)" expect_readonly_mode "$MNT/raw/base.img"
check "raw: base.img refuses opens for writing with EROFS" \
	expect_open_fails "$MNT/raw/base.img" EROFS w rw wtrunc append
check "raw: top.raw equals qemu-img convert" expect_same_as_qemu "$SRC/raw/top.qcow2" "$MNT/raw/top.raw"
check "raw: top.raw SEEK_DATA/SEEK_HOLE agree with qemu-img map (sparse raw backing)" \
	check_seek_matches_map "$SRC/raw/top.qcow2" "$MNT/raw/top.raw"
check "raw: no base.raw for the raw backing file" expect_absent "$MNT/raw/base.raw"

# without backing format
for n in top rawtop base; do
	check "nofmt: $n.raw equals qemu-img convert" \
		expect_same_as_qemu "$SRC/nofmt/$n.qcow2" "$MNT/nofmt/$n.raw"
done
check "nofmt: rawbase.img shown (probed raw backing file)" \
	expect_same_bytes "$SRC/nofmt/rawbase.img" "$MNT/nofmt/rawbase.img"
check "nofmt: top.raw SEEK_DATA/SEEK_HOLE agree with qemu-img map" \
	check_seek_matches_map "$SRC/nofmt/top.qcow2" "$MNT/nofmt/top.raw"

# backing paths
for n in base rel abs sub/up sub/deeper/upup sub/inner down; do
	check "paths: $n.raw equals qemu-img convert" \
		expect_same_as_qemu "$SRC/paths/$n.qcow2" "$MNT/paths/$n.raw"
done
for n in base rel sub/inner; do
	check "paths: $n.raw (a backing layer) is read-only" expect_readonly_mode "$MNT/paths/$n.raw"
done
check "paths: sub/deeper/upup.raw SEEK_DATA/SEEK_HOLE agree with qemu-img map" \
	check_seek_matches_map "$SRC/paths/sub/deeper/upup.qcow2" "$MNT/paths/sub/deeper/upup.raw"

# short backing files
for n in top rawtop base; do
	check "short: $n.raw equals qemu-img convert" \
		expect_same_as_qemu "$SRC/short/$n.qcow2" "$MNT/short/$n.raw"
	check "short: $n.raw st_size is the overlay's virtual size" \
		expect_size_as_qemu "$SRC/short/$n.qcow2" "$MNT/short/$n.raw"
done
zeros_past_backing()
{
	# base.qcow2 ends at 1M; top.qcow2 has data at 1020k+8k and 3M+4k only
	cmp <(fs dd if="$MNT/short/top.raw" bs=64k skip=17 count=15 status=none) <(head -c 960k /dev/zero)
}
check "short: top.raw reads zeros past the end of its backing file" zeros_past_backing
check "short: top.raw SEEK_DATA/SEEK_HOLE agree with qemu-img map" \
	check_seek_matches_map "$SRC/short/top.qcow2" "$MNT/short/top.raw"
check "short: rawtop.raw SEEK_DATA/SEEK_HOLE agree with qemu-img map" \
	check_seek_matches_map "$SRC/short/rawtop.qcow2" "$MNT/short/rawtop.raw"

# depth 2 and 32: every layer's view is its own chain
for n in l0 l1; do
	check "d2: $n.raw equals qemu-img convert" expect_same_as_qemu "$SRC/d2/$n.qcow2" "$MNT/d2/$n.raw"
done
check "d2: l0.raw (backing layer) is read-only" expect_readonly_mode "$MNT/d2/l0.raw"
check "d2: l0.raw refuses opens for writing with EROFS" expect_open_fails "$MNT/d2/l0.raw" EROFS w rw
check "d2: l1.raw SEEK_DATA/SEEK_HOLE agree with qemu-img map" \
	check_seek_matches_map "$SRC/d2/l1.qcow2" "$MNT/d2/l1.raw"
for n in "${D32[@]}"; do
	b=${n%.qcow2}
	check "d32: $b.raw equals qemu-img convert" expect_same_as_qemu "$SRC/d32/$n" "$MNT/d32/$b.raw"
done
check "d32: l31.raw SEEK_DATA/SEEK_HOLE agree with qemu-img map" \
	check_seek_matches_map "$SRC/d32/l31.qcow2" "$MNT/d32/l31.raw"
check "d32: l15.raw (intermediate layer) is read-only" expect_readonly_mode "$MNT/d32/l15.raw"
check "d32: l15.raw refuses opens for writing with EROFS" expect_open_fails "$MNT/d32/l15.raw" EROFS w rw

check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"

# -- depth 1000, in its own SOURCE. Layers are created with -u (qemu-img would otherwise open
#    the whole chain below each new layer: quadratic); every 50th layer gets a 64k write made
#    with the backing detached, so the expected bytes are also known without qemu-img.
DEEP=$WORK/deep
DMNT=$WORK/dmnt
mkdir -p "$DEEP"
cd "$DEEP" || exit 1
MODEL=$WORK/deep-model.raw
setup qemu-img create -q -f qcow2 l0000.qcow2 1M
setup qio l0000.qcow2 "write -P 0x01 0 1M"
head -c 1M /dev/zero | tr '\0' '\001' >"$MODEL" || bail "model"
# Every layer is qemu-img's empty overlay: made once, then copied with the backing name (all
# names have the same length) replaced - 999 qemu-img runs would take most of this test's time.
setup qemu-img create -q -f qcow2 -u -b l0000.qcow2 -F qcow2 "$WORK/overlay.tmpl" 1M
setup python3 -c '
import sys
t = open(sys.argv[1], "rb").read()
assert t.count(b"l0000.qcow2") == 1
for i in range(1, 1000):
    with open("l%04d.qcow2" % i, "wb") as f:
        f.write(t.replace(b"l0000.qcow2", b"l%04d.qcow2" % (i - 1)))
' "$WORK/overlay.tmpl"
for i in $(seq 1 999); do
	n=$(printf 'l%04d.qcow2' "$i")
	if ((i % 50 == 0 || i == 999)); then
		pat=$((i % 250 + 2))
		cl=$(((i / 50) % 16))
		setup qemu-io -c "write -P $pat $((cl * 64))k 64k" \
			"json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\",\"filename\":\"$DEEP/$n\"},\"backing\":null}"
		head -c 64k /dev/zero | tr '\0' "\\$(printf '%03o' "$pat")" |
			dd of="$MODEL" bs=64k seek="$cl" conv=notrunc status=none || bail "model"
	fi
done
check "d1000: qemu-img sees a chain of 1000 layers" \
	bash -c "[ \$(qemu-img info -U --backing-chain --output=json l0999.qcow2 | grep -c '\"filename\"') = 1000 ]"

mount_qcowfs "$DEEP" "$DMNT" || bail "mount of the 1000-layer chain failed"
check "d1000: every layer is listed" bash -c "[ \$(ls '$DMNT' | grep -c '^l[0-9]*\.raw\$') = 1000 ]"
check "d1000: l0999.raw equals the model of the bytes written" expect_same_bytes "$MODEL" "$DMNT/l0999.raw"
EXP=$WORK/deep-qemu.raw
if timeout 300 qemu-img convert -U -O raw l0999.qcow2 "$EXP" 2>"$WORK/deep-convert.err"; then
	check "d1000: qemu-img agrees with the model" cmp "$MODEL" "$EXP"
	check "d1000: l0999.raw equals qemu-img convert" expect_same_bytes "$EXP" "$DMNT/l0999.raw"
else
	echo "# qemu-img convert of the 1000-layer chain failed; checked against the model only:"
	sed 's/^/#   /' "$WORK/deep-convert.err"
fi
rm -f "$EXP"
check "d1000: l0500.raw (intermediate) equals qemu-img convert" \
	expect_same_as_qemu "$DEEP/l0500.qcow2" "$DMNT/l0500.raw"
check "d1000: l0000.raw equals qemu-img convert" expect_same_as_qemu "$DEEP/l0000.qcow2" "$DMNT/l0000.raw"
check "d1000: l0500.raw is read-only" expect_readonly_mode "$DMNT/l0500.raw"
check "d1000: the daemon unmounts and exits cleanly" umount_qcowfs "$DMNT"
check "d1000: no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
finish

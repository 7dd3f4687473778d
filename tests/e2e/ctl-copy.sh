#!/bin/bash
# ctl-copy.sh - qcowctl copy (virsh blockcopy, qemu-img convert) against qemu-img convert on the
# same chains: a full copy is a standalone image with the chain's flat view (byte for byte as
# qemu-img convert's), a shallow copy holds the top layer only and keeps its backing file (the
# same bytes as qemu-img convert -B), -O raw is a sparse raw file, --compress writes compressed
# clusters that QEMU reads; qemu-img check is clean on every copy; the source is never
# changed; --dry-run creates nothing; DEST in the source's chain is refused; a copy killed
# midway leaves an existing DEST untouched and running it again makes the copy; a copy refused
# while qemu-io writes the source names it.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC=$WORK/src
mkdir -p "$SRC/out" "$WORK/ref"
cd "$SRC" || exit 1

# base (compressed clusters, zeros) <- mid (shorter) <- top (discard, zeros, data past mid)
setup qemu-img create -q -f qcow2 b0.qcow2 16M
setup qio b0.qcow2 "write -P 0x11 0 6M" "write -P 0x12 10M 2M" "write -P 0x13 14M 1M"
setup qemu-img convert -q -c -O qcow2 b0.qcow2 base.qcow2
rm -f b0.qcow2
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2 12M
setup qio mid.qcow2 "write -P 0x21 1M 2M" "write -z 5M 512k" "write -P 0x22 7M 100k"
setup qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 16M
setup qio top.qcow2 "write -P 0x31 2M 64k" "discard 4M 128k" "write -z 10M 64k" \
	"write -P 0x32 15M 300k"
# a 512-byte-cluster chain and an extended-L2 overlay written in subclusters
setup qemu-img create -q -f qcow2 -o cluster_size=512 s0.qcow2 2M
setup qio s0.qcow2 "write -P 0x41 0 1M"
setup qemu-img create -q -f qcow2 -o cluster_size=512 -b s0.qcow2 -F qcow2 s1.qcow2
setup qio s1.qcow2 "write -P 0x42 4k 3k" "write -z 600k 2k"
setup qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=64k -b base.qcow2 -F qcow2 x.qcow2
setup qio x.qcow2 "write -P 0x51 4k 8k" "write -z 40k 4k" "write -P 0x52 1M 100k"
sha_of ./*.qcow2 >"$WORK/src.sha"

no_backing() { # IMAGE: qemu-img opens it and names no backing file (a `! qemu-img info | grep`
	# passed on a copy qemu-img cannot open, or one that was never written)
	local out
	out=$(qemu-img info --output=json "$1") || { echo "qemu-img info $1 failed"; return 1; }
	[[ $out != *'"backing-filename"'* ]] || { echo "$out"; return 1; }
}
backing_is() { qemu-img info --output=json "$1" | grep -q "\"backing-filename\": \"$2\""; }
compressed() { # IMAGE: it holds compressed clusters
	qemu-img check --output=json "$1" | python3 -c \
		'import json,sys; sys.exit(0 if json.load(sys.stdin).get("compressed-clusters",0) > 0 else 1)'
}
mostly_holes() { # FILE: allocated less than half its size
	[ $(($(stat -c %b "$1") * 512)) -lt $(($(stat -c %s "$1") / 2)) ] ||
		{ echo "$1: $(stat -c %b "$1") blocks for $(stat -c %s "$1") bytes"; return 1; }
}

for img in top s1 x; do
	# full copy: standalone, the flat view
	check "$img: full copy" "$QCOWCTL" copy -q $img.qcow2 out/$img-full.qcow2
	check "$img: full copy is standalone" no_backing out/$img-full.qcow2
	check "$img: full copy passes qemu-img check" image_clean out/$img-full.qcow2
	setup qemu-img convert -O qcow2 $img.qcow2 "$WORK/ref/$img-full.qcow2"
	check "$img: full copy reads as qemu-img convert's" \
		qemu-img compare -q out/$img-full.qcow2 "$WORK/ref/$img-full.qcow2"
	# shallow copy: the top layer, same backing file
	check "$img: shallow copy" "$QCOWCTL" copy -q --shallow $img.qcow2 $img-sh.qcow2
	check "$img: shallow copy keeps the backing name" backing_is $img-sh.qcow2 \
		"$(qemu-img info --output=json $img.qcow2 | python3 -c \
			'import json,sys; print(json.load(sys.stdin)["backing-filename"])')"
	check "$img: shallow copy passes qemu-img check" image_clean $img-sh.qcow2
	check "$img: shallow copy reads as the source" qemu-img compare -q $img-sh.qcow2 $img.qcow2
	setup qemu-img convert -O raw $img-sh.qcow2 "$WORK/sh.raw"
	qemu-img map --output=json $img-sh.qcow2 |
		python3 -c 'import json,sys; print(sum(e["length"] for e in json.load(sys.stdin)
			if e["depth"] == 0 and e["data"]))' >"$WORK/sh.alloc"
	qemu-img map --output=json $img.qcow2 |
		python3 -c 'import json,sys; print(sum(e["length"] for e in json.load(sys.stdin)
			if e["depth"] == 0 and e["data"]))' >"$WORK/src.alloc"
	check "$img: shallow copy holds as much data as the top layer" \
		cmp "$WORK/sh.alloc" "$WORK/src.alloc"
	rm -f $img-sh.qcow2
	# raw: sparse, the flat view
	check "$img: raw copy" "$QCOWCTL" copy -q -O raw $img.qcow2 out/$img.raw
	setup qemu-img convert -O raw $img.qcow2 "$WORK/ref/$img.raw"
	check "$img: raw copy has the flat view's bytes" cmp out/$img.raw "$WORK/ref/$img.raw"
	# compressed
	check "$img: compressed copy" "$QCOWCTL" copy -q --compress $img.qcow2 out/$img-c.qcow2
	check "$img: compressed copy passes qemu-img check" image_clean out/$img-c.qcow2
	check "$img: compressed copy reads as the source" \
		qemu-img compare -q out/$img-c.qcow2 $img.qcow2
done
check "the raw copies are sparse" mostly_holes out/top.raw
check "a compressed copy holds compressed clusters" compressed out/top-c.qcow2
check "a compressed copy with 512-byte clusters (stored plain) reads as the source" \
	qemu-img compare -q out/s1-c.qcow2 s1.qcow2

# dry run, refusals
out=$("$QCOWCTL" copy --dry-run --json top.qcow2 out/dry.qcow2 2>&1)
check "dry run plans the copy" python3 -c 'import json,sys; d=json.loads(sys.argv[1]);
sys.exit(0 if d["dry-run"] and any(s["step"] == "copy" and s["bytes"] > 0 for s in d["steps"])
	else 1)' "$out"
check_not "dry run creates nothing" test -e out/dry.qcow2
check "a DEST in the source's chain is refused" expect_fail_msg "part of the chain" \
	"$QCOWCTL" copy top.qcow2 mid.qcow2
check "-O raw --shallow is refused" expect_fail_msg "raw" "$QCOWCTL" copy -O raw --shallow \
	top.qcow2 out/x.raw
if qemu_writer_start top.qcow2; then
	check "refused while qemu-io writes the source, naming it" expect_fail_msg \
		"qemu-io|$QEMU_WRITER_PID" "$QCOWCTL" copy top.qcow2 out/busy.qcow2
	qemu_writer_stop
else
	fail "qemu-io holds top.qcow2"
fi

# killed midway: an existing DEST stays as it was, the part file is replaced by the next run
setup qemu-img create -q -f qcow2 big.qcow2 256M
setup qio big.qcow2 "write -P 0x61 0 192M"
sha_of out/top-full.qcow2 >"$WORK/dest.sha"
hit=0
for delay in 0.3 0.15 0.08 0.04; do
	"$QCOWCTL" copy -q big.qcow2 out/top-full.qcow2 &
	pid=$!
	sleep $delay
	if kill -KILL $pid 2>/dev/null; then
		wait $pid 2>/dev/null
		if sha_unchanged "$WORK/dest.sha" >/dev/null 2>&1; then
			hit=1
			break
		fi
	fi
	wait $pid 2>/dev/null
	setup "$QCOWCTL" copy -q top.qcow2 out/top-full.qcow2
done
check "a copy was killed midway" test $hit = 1
check "the killed copy left DEST untouched" sha_unchanged "$WORK/dest.sha"
check "running it again makes the copy" "$QCOWCTL" copy -q big.qcow2 out/top-full.qcow2
check "the copy reads as the source" qemu-img compare -q out/top-full.qcow2 big.qcow2
check "no part file is left" output_lacks qcowctl-part ls -a out
rm -f big.qcow2

# libvirt's blockcopy: shallow onto the same backing, then full, both compared with QEMU's
check "blockcopy --shallow of the active layer" "$QCOWCTL" copy -q --shallow top.qcow2 top-copy.qcow2
setup qemu-img convert -O qcow2 -B "$SRC/mid.qcow2" -F qcow2 top.qcow2 "$WORK/ref/top-B.qcow2"
check "its view equals qemu-img convert -B's" qemu-img compare -q top-copy.qcow2 \
	"$WORK/ref/top-B.qcow2"
check "blockcopy (full) of the copy" "$QCOWCTL" copy -q top-copy.qcow2 out/top-flat.qcow2
check "the full copy equals qemu-img convert's" qemu-img compare -q out/top-flat.qcow2 \
	"$WORK/ref/top-full.qcow2"
rm -f top-copy.qcow2
check "no source image changed" sha_unchanged "$WORK/src.sha"
finish

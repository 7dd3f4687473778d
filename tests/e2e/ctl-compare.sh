#!/bin/bash
# ctl-compare.sh - `qcowctl compare` against `qemu-img compare` on the same pairs: the same
# stdout ("Images are identical.", "Content mismatch at offset N!", qemu-img's size warning and
# strict-mode lines) and exit status (0 same, 1 different, 2 error), for an image and its
# overlay (with and without writes), its raw copy, a compressed copy, a copy with other cluster
# sizes, images of different sizes (the tail of the longer zeros, or not), zero clusters against
# holes and data (-s), a missing file; and an image compared with a fresh overlay of it reads
# no data: the bytes qcowctl reads (strace) stay a small part of what the image holds.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_cmd strace

cd "$WORK" || exit 1
Q=$QCOWCTL

setup mk_qcow2 base.qcow2 16M
setup qio base.qcow2 "write -P 0x11 0 4M" "write -P 0x12 6M 64k" "write -z 8M 1M" \
	"write -P 0x13 12M 1M"
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 fresh.qcow2
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 same.qcow2
setup qio same.qcow2 "write -P 0x11 64k 64k" "write -z 8M 64k"
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 diff.qcow2
setup qio diff.qcow2 "write -P 0x11 64k 64k" "write -P 0x14 13M 1"
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 zeroed.qcow2
setup qio zeroed.qcow2 "write -z 6M 64k"
setup qemu-img convert -O raw base.qcow2 base.raw
setup qemu-img convert -c -O qcow2 base.qcow2 comp.qcow2
setup qemu-img convert -O qcow2 -o cluster_size=4k base.qcow2 c4k.qcow2
setup qemu-img convert -O qcow2 base.qcow2 long.qcow2
setup qemu-img resize -q long.qcow2 24M
setup cp long.qcow2 longdata.qcow2
setup qio longdata.qcow2 "write -P 0x15 20M 512"
setup cp long.qcow2 longzero.qcow2
setup qio longzero.qcow2 "write -z 20M 1M"
setup mk_qcow2 z1.qcow2 4M
setup qio z1.qcow2 "write -z 0 1M"
setup mk_qcow2 z2.qcow2 4M
setup mk_qcow2 z3.qcow2 4M
setup qio z3.qcow2 "write -P 0 0 1M"
setup mk_qcow2 full1.qcow2 4M
setup qio full1.qcow2 "write -P 0x21 0 4M"
setup qemu-img convert -O qcow2 full1.qcow2 full2.qcow2

# compare_as_qemu ARGS...: qcowctl compare prints and exits as qemu-img compare
compare_as_qemu()
{
	local qrc orc
	qemu-img compare "$@" >q.out 2>/dev/null
	qrc=$?
	"$Q" compare "$@" >o.out 2>o.err
	orc=$?
	[ "$qrc" = "$orc" ] || { echo "qemu-img exit $qrc, qcowctl exit $orc"; cat o.out o.err; return 1; }
	diff -u --label qemu-img --label qcowctl q.out o.out
}

for pair in "base.qcow2 fresh.qcow2" "fresh.qcow2 base.qcow2" "base.qcow2 same.qcow2" \
	"base.qcow2 diff.qcow2" "same.qcow2 diff.qcow2" "base.qcow2 zeroed.qcow2" \
	"base.qcow2 base.raw" "base.raw diff.qcow2" "comp.qcow2 base.qcow2" "comp.qcow2 diff.qcow2" \
	"c4k.qcow2 base.qcow2" "c4k.qcow2 diff.qcow2" "base.qcow2 long.qcow2" \
	"long.qcow2 base.qcow2" "base.qcow2 longdata.qcow2" "longdata.qcow2 base.raw" \
	"diff.qcow2 longdata.qcow2" "base.qcow2 longzero.qcow2" "z1.qcow2 z2.qcow2" \
	"z1.qcow2 z3.qcow2" "full1.qcow2 full2.qcow2"; do
	read -ra w <<<"$pair"
	check "compare $pair" compare_as_qemu "${w[@]}"
	check "compare -q $pair" compare_as_qemu -q "${w[@]}"
done
for pair in "base.qcow2 long.qcow2" "long.qcow2 base.qcow2" "z1.qcow2 z2.qcow2" \
	"z2.qcow2 z1.qcow2" "z1.qcow2 z3.qcow2" "z2.qcow2 z3.qcow2" "full1.qcow2 full2.qcow2" \
	"base.qcow2 diff.qcow2" "base.qcow2 fresh.qcow2"; do
	read -ra w <<<"$pair"
	check "compare -s $pair" compare_as_qemu -s "${w[@]}"
done
check "compare with a missing file: exit 2 as qemu-img" compare_as_qemu base.qcow2 missing.qcow2

# reads_little MAX ARGS...: qcowctl compare ARGS exits 0 having read at most MAX bytes of the
# images (the sum of what its read system calls on them return)
reads_little()
{
	local max=$1 got
	shift
	# LeakSanitizer cannot run under ptrace; only reads of the images count (-y names the
	# file of each descriptor)
	ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" strace -f -qq -y \
		-e trace=pread64,read,preadv,preadv2 -o trace.txt "$Q" compare -q "$@" ||
		{ echo "compare $* failed"; return 1; }
	got=$(awk -F'= ' '/\.qcow2>/ && /= [0-9]+$/ { s += $NF } END { print s + 0 }' trace.txt)
	[ "$got" -le "$max" ] || { echo "read $got bytes, more than $max"; return 1; }
}
setup mk_qcow2 big.qcow2 256M
setup qio big.qcow2 "write -P 0x31 0 64M" "write -P 0x32 128M 32M"
setup qemu-img create -q -f qcow2 -b big.qcow2 -F qcow2 bigover.qcow2
check "an image and its fresh overlay: identical, their 96 MiB of data not read" \
	reads_little $((4 << 20)) big.qcow2 bigover.qcow2
check "... the other way round" reads_little $((4 << 20)) bigover.qcow2 big.qcow2

finish

#!/bin/bash
# ctl-jobs-sparse.sh - a 100 GiB overlay with 16 MiB written, in 4 places, over a base with
# 1 MiB: qcowctl commit copies only the data (the base grows by about 16 MiB), then qcowctl pull
# (the overlay grows by about 17 MiB), the view never changes and `qemu-img check` is clean.
# Each command runs under a generous `timeout` (a hang fails the test); how fast they are,
# against qemu-img, is measured by bench/bench-jobs.sh.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$WORK" || exit 1

S=$WORK/sparse
mkdir -p "$S"
setup qemu-img create -q -f qcow2 "$S/base.qcow2" 100G
setup qio "$S/base.qcow2" "write -P 0x11 1G 1M"
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$S/top.qcow2"
setup qio "$S/top.qcow2" "write -P 0x21 0 4M" "write -P 0x22 33G 4M" "write -P 0x23 66G 4M" \
	"write -P 0x24 $((100 * 1024 - 4))M 4M"
setup cp -a "$S" "$WORK/sparse.orig"

before=$(alloc_bytes "$S/base.qcow2")
run_to "$S/out" timeout 120 "$QCOWCTL" commit -q "$S/top.qcow2"
check "sparse: commit of the 100 GiB overlay: exit status 0" ran_ok "$S/out"
grown=$(($(alloc_bytes "$S/base.qcow2") - before))
echo "# sparse: the base grew by $grown bytes"
check "sparse: the base grew by 16 to 18 MiB" \
	test "$grown" -ge $((16 << 20)) -a "$grown" -le $((18 << 20))
check "sparse: the view unchanged" same_content "$S/top.qcow2" "$WORK/sparse.orig/top.qcow2"
check "sparse: top is emptied" emptied "$S/top.qcow2"
check "sparse: qemu-img check clean" images_clean "$S/base.qcow2" "$S/top.qcow2"

before=$(alloc_bytes "$S/top.qcow2")
run_to "$S/out" timeout 120 "$QCOWCTL" pull -q "$S/top.qcow2"
check "sparse: pull into the 100 GiB overlay: exit status 0" ran_ok "$S/out"
grown=$(($(alloc_bytes "$S/top.qcow2") - before))
echo "# sparse: the overlay grew by $grown bytes"
check "sparse: the overlay grew by 17 to 19 MiB (16 MiB, and the base's 1 MiB)" \
	test "$grown" -ge $((17 << 20)) -a "$grown" -le $((19 << 20))
check "sparse: the view unchanged" same_content "$S/top.qcow2" "$WORK/sparse.orig/top.qcow2"
check "sparse: top stands alone" expect_backing "$S/top.qcow2" ""
check "sparse: qemu-img check clean" images_clean "$S/top.qcow2"

finish

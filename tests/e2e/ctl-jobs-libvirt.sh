#!/bin/bash
# ctl-jobs-libvirt.sh - libvirt's external snapshots: base <- snap1 <- snap2 with absolute
# backing names, as virsh snapshot-create --disk-only makes them; blockcommit of snap1 into base
# (qcowctl commit --top snap1 --base base), then blockpull into snap2 (qcowctl pull), against
# qemu-img commit snap1 + rebase -u, then rebase -b "" on copies: QEMU's bytes, the view never
# changes, the backing names stay absolute, `qemu-img check` is clean.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$WORK" || exit 1

d="libvirt"
mkdir -p "$WORK/lv/ours" "$WORK/lv/ref"
o=$WORK/lv/ours r=$WORK/lv/ref
setup qemu-img create -q -f qcow2 "$o/base.qcow2" 4M
setup qio "$o/base.qcow2" "write -P 0x11 0 2M" "write -P 0x12 3M 512k"
setup qemu-img create -q -f qcow2 -b "$o/base.qcow2" -F qcow2 "$o/snap1.qcow2"
setup qio "$o/snap1.qcow2" "write -P 0x21 1M 1M" "write -z 0 64k" "discard 3M 64k"
setup qemu-img create -q -f qcow2 -b "$o/snap1.qcow2" -F qcow2 "$o/snap2.qcow2"
setup qio "$o/snap2.qcow2" "write -P 0x31 1536k 1M" "write -P 0x32 4000k 96k"
setup qemu-img convert -O raw "$o/snap2.qcow2" "$WORK/lv/view"
# the reference chain names its own files, by absolute path too
setup cp -a "$o/base.qcow2" "$o/snap1.qcow2" "$o/snap2.qcow2" "$r/"
setup qemu-img rebase -u -b "$r/base.qcow2" -F qcow2 "$r/snap1.qcow2"
setup qemu-img rebase -u -b "$r/snap1.qcow2" -F qcow2 "$r/snap2.qcow2"

run_to "$WORK/lv/out" ctl commit -q --top "$o/snap1.qcow2" --base "$o/base.qcow2" "$o/snap2.qcow2"
qemu-img commit -q "$r/snap1.qcow2" &&
	qemu-img rebase -u -b "$r/base.qcow2" -F qcow2 "$r/snap2.qcow2" ||
	fail "$d: qemu-img commit snap1"
check "$d: blockcommit snap1 into base: exit status 0" ran_ok "$WORK/lv/out"
check "$d: blockcommit: base.qcow2 holds QEMU's bytes" \
	same_content "$o/base.qcow2" "$r/base.qcow2"
check "$d: blockcommit: snap2's view unchanged" \
	same_content "$o/snap2.qcow2" "$WORK/lv/view" raw
check "$d: blockcommit: snap2's view is QEMU's" same_content "$o/snap2.qcow2" "$r/snap2.qcow2"
check "$d: blockcommit: snap2 backs onto base.qcow2 by absolute path (as it was)" \
	expect_backing "$o/snap2.qcow2" "$o/base.qcow2"
check "$d: blockcommit: qemu-img check clean" images_clean "$o"/*.qcow2

run_to "$WORK/lv/out2" ctl pull -q "$o/snap2.qcow2"
qemu-img rebase -b "" "$r/snap2.qcow2" || fail "$d: qemu-img rebase -b ''"
check "$d: blockpull into snap2: exit status 0" ran_ok "$WORK/lv/out2"
check "$d: blockpull: snap2's view unchanged" same_content "$o/snap2.qcow2" "$WORK/lv/view" raw
check "$d: blockpull: snap2's view is QEMU's" same_content "$o/snap2.qcow2" "$r/snap2.qcow2"
check "$d: blockpull: snap2 stands alone" expect_backing "$o/snap2.qcow2" ""
check "$d: blockpull: qemu-img check clean" images_clean "$o/snap2.qcow2"

finish

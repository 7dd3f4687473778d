#!/bin/bash
# ctl-jobs-bitmaps.sh - internal snapshots and persistent bitmaps that QEMU wrote survive
# qcowctl pull --base and commit (intermediate and active), against qemu-img rebase and commit.
# The chain: base (snapshot s1, bitmap b0) <- mid (bitmap bm) <- top (snapshot ts, bitmap bt).
# mid's data is zeros where base has none, or covered by top when ts was taken: so ts reads the
# same through base as through mid, and pull --base base must keep it.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$WORK" || exit 1
V=$WORK/variants
mkdir -p "$V" "$WORK/c"

sb_build()
{
	local d=$V/sb
	mkdir -p "$d" && cd "$d" || return 1
	qemu-img create -q -f qcow2 base.qcow2 4M && qio base.qcow2 "write -P 0x11 0 1M" &&
		qemu-img snapshot -c s1 base.qcow2 && qio base.qcow2 "write -P 0x12 512k 1M" &&
		qemu-img bitmap --add base.qcow2 b0 || return 1
	qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2 &&
		qio mid.qcow2 "write -P 0x21 1536k 128k" "write -P 0 2M 512k" &&
		qemu-img bitmap --add mid.qcow2 bm || return 1
	qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 &&
		qio top.qcow2 "write -P 0x31 1536k 256k" && qemu-img snapshot -c ts top.qcow2 &&
		qio top.qcow2 "write -P 0x32 1M 256k" "write -P 0x33 3M 64k" &&
		qemu-img bitmap --add top.qcow2 bt || return 1
	cd "$WORK" || return 1
	qemu-img convert -O raw "$d/top.qcow2" "$V/sb.view" &&
		qemu-img convert -l snapshot.name=s1 -O raw "$d/base.qcow2" "$V/sb.s1" &&
		qemu-img convert -l snapshot.name=ts -O raw "$d/top.qcow2" "$V/sb.ts" || return 1
	qemu-img snapshot -l "$d/base.qcow2" >"$V/sb.base.snaps" &&
		qemu-img snapshot -l "$d/top.qcow2" >"$V/sb.top.snaps" || return 1
}

setup sb_build
lb=$(bitmap_leaks "$V/sb/base.qcow2") && lm=$(bitmap_leaks "$V/sb/mid.qcow2") &&
	lt=$(bitmap_leaks "$V/sb/top.qcow2") || bail "qemu-img check of a copy with stale bitmaps"
check "fixtures: sb: base lists bitmap b0" lists_bitmap "$V/sb/base.qcow2" b0
check "fixtures: sb: mid lists bitmap bm" lists_bitmap "$V/sb/mid.qcow2" bm
check "fixtures: sb: top lists bitmap bt" lists_bitmap "$V/sb/top.qcow2" bt

d="snapshots, bitmaps: pull --base base.qcow2"
job_fresh sb-pull sb
run_to "$C.out" ctl pull -q --base base.qcow2 "$O/top.qcow2"
(cd "$R" && qemu-img rebase -b base.qcow2 -F qcow2 top.qcow2) || fail "$d: qemu-img rebase"
check "$d: exit status 0" ran_ok "$C.out"
check "$d: top's view unchanged" same_content "$O/top.qcow2" "$V/sb.view" raw
check "$d: the same view as QEMU's" same_content "$O/top.qcow2" "$R/top.qcow2"
check "$d: top's snapshot list unchanged" snapshots_listed "$O/top.qcow2" "$V/sb.top.snaps"
check "$d: snapshot ts reads as before, as QEMU's" \
	snapshot_same "$O/top.qcow2" ts "$V/sb.ts" "$R/top.qcow2"
check "$d: top's bitmap bt kept" bitmaps_kept "$O/top.qcow2" bt "$lt" 1
check "$d: the backing file is base.qcow2" expect_backing "$O/top.qcow2" base.qcow2

d="snapshots, bitmaps: commit --top mid"
job_fresh sb-mid sb
run_to "$C.out" ctl commit -q --top "$O/mid.qcow2" "$O/top.qcow2"
(cd "$R" && qemu-img commit -q mid.qcow2 && qemu-img rebase -u -b base.qcow2 -F qcow2 top.qcow2) ||
	fail "$d: qemu-img commit"
check "$d: exit status 0" ran_ok "$C.out"
check "$d: base.qcow2 holds QEMU's bytes" same_content "$O/base.qcow2" "$R/base.qcow2"
check "$d: top's view unchanged" same_content "$O/top.qcow2" "$V/sb.view" raw
check "$d: base's snapshot list unchanged" snapshots_listed "$O/base.qcow2" "$V/sb.base.snaps"
check "$d: base's snapshot s1 reads as before" snapshot_same "$O/base.qcow2" s1 "$V/sb.s1"
check "$d: top's snapshot list unchanged" snapshots_listed "$O/top.qcow2" "$V/sb.top.snaps"
check "$d: top's snapshot ts reads as before, as QEMU's" \
	snapshot_same "$O/top.qcow2" ts "$V/sb.ts" "$R/top.qcow2"
check "$d: base's bitmap b0 kept" bitmaps_kept "$O/base.qcow2" b0 "$lb" 1
check "$d: top (only re-pointed) still lists bt, checks clean" bitmaps_kept "$O/top.qcow2" bt 0 0

d="snapshots, bitmaps: commit top (into mid)"
job_fresh sb-active sb
run_to "$C.out" ctl commit -q "$O/top.qcow2"
(cd "$R" && qemu-img commit -q top.qcow2) || fail "$d: qemu-img commit"
check "$d: exit status 0" ran_ok "$C.out"
check "$d: mid.qcow2 holds QEMU's bytes" same_content "$O/mid.qcow2" "$R/mid.qcow2"
check "$d: top's view unchanged" same_content "$O/top.qcow2" "$V/sb.view" raw
check "$d: top is emptied" emptied "$O/top.qcow2"
check "$d: top's snapshot list unchanged" snapshots_listed "$O/top.qcow2" "$V/sb.top.snaps"
# ts reads its own clusters over mid, which took in top's data: what QEMU's ts reads
check "$d: top's snapshot ts reads what QEMU's does" \
	snapshot_same "$O/top.qcow2" ts "" "$R/top.qcow2"
check "$d: mid's bitmap bm kept" bitmaps_kept "$O/mid.qcow2" bm "$lm" 1
check "$d: top's bitmap bt kept" bitmaps_kept "$O/top.qcow2" bt "$lt" 1

finish

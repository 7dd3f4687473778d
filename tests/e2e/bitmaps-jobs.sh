#!/bin/bash
# bitmaps-jobs.sh - qcowctl jobs keep persistent bitmaps valid as QEMU does, on twin copies:
# commit marks the committed ranges dirty in the base's enabled bitmaps (QEMU writes the base
# through the block layer) and leaves the emptied top's bitmaps as they were (bdrv_make_empty
# marks nothing); pull and rebase mark the ranges they copy into the image, as qemu-img rebase
# does (pull's QEMU equivalent offline); a disabled bitmap changes in none of them. Every image
# then checks clean with no leak.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_cmd qemu-nbd

cd "$WORK" || exit 1

# build DIR: base (data, enabled bitmap bb, disabled bd with one dirty range) <- top (data, a
# zeroed range, enabled bitmap bt); other.qcow2 a second base for rebase
build()
{
	mkdir -p "$1" && cd "$1" || return 1
	qcreate base.qcow2 8M && qio base.qcow2 "write -P 1 0 1M" "write -P 2 4M 512k" &&
		qemu-img bitmap --add base.qcow2 bd && qio base.qcow2 "write -P 5 6M 64k" &&
		qemu-img bitmap --disable base.qcow2 bd && qemu-img bitmap --add base.qcow2 bb &&
		qcreate -b base.qcow2 -F qcow2 top.qcow2 &&
		qio top.qcow2 "write -P 3 256k 64k" "write -P 4 2M 128k" "write -z 4M 64k" &&
		qemu-img bitmap --add -g 128k top.qcow2 bt &&
		qcreate other.qcow2 8M && qio other.qcow2 "write -P 1 512k 64k" || return 1
	cd "$WORK" || return 1
}

# twins NAME: fresh copies ours/NAME and qemu/NAME of the chain
twins()
{
	rm -rf "ours/$1" "qemu/$1"
	mkdir -p ours qemu && cp -a "fresh" "ours/$1" && cp -a "fresh" "qemu/$1"
}

# ranges_as_qemu IMAGE BITMAP: the bitmap's dirty ranges in ours/IMAGE are those of qemu/IMAGE
ranges_as_qemu()
{
	dirty_ranges "qemu/$1" "$2" >"$WORK/q.ranges" || return 1
	dirty_ranges "ours/$1" "$2" >"$WORK/o.ranges" || return 1
	diff -u --label "QEMU" --label "qcowctl" "$WORK/q.ranges" "$WORK/o.ranges"
}

setup build fresh
dirty_ranges fresh/base.qcow2 bd >"$WORK/bd.before" || bail "qemu-nbd export of bd"
[ -s "$WORK/bd.before" ] || bail "bitmap bd has no dirty range"

d="commit"
twins commit
check "$d: the plan says which bitmaps of base get the committed ranges" \
	eval 'ctl commit --dry-run ours/commit/top.qcow2 | grep -qx "  bitmaps  .*/base.qcow2.: the ranges copied are marked dirty in bb"'
ctl commit -q ours/commit/top.qcow2 >/dev/null || fail "$d: qcowctl commit"
qemu-img commit -q qemu/commit/top.qcow2 || fail "$d: qemu-img commit"
check "$d: base's enabled bitmap marks the committed ranges, as QEMU's" \
	ranges_as_qemu commit/base.qcow2 bb
check "$d: base's bitmap is not empty" eval '[ -s "$WORK/o.ranges" ]'
check "$d: the emptied top's bitmap as QEMU leaves it" ranges_as_qemu commit/top.qcow2 bt
check "$d: base's disabled bitmap unchanged" \
	eval 'dirty_ranges ours/commit/base.qcow2 bd | diff -u "$WORK/bd.before" -'
check "$d: base checks clean" image_clean ours/commit/base.qcow2
check "$d: top checks clean" image_clean ours/commit/top.qcow2

d="pull"
twins pull
check "$d: the plan says top's bitmap gets the pulled ranges" \
	eval 'ctl pull --dry-run --json ours/pull/top.qcow2 | grep -q "\"bitmaps\": \"bt\""'
ctl pull -q ours/pull/top.qcow2 >/dev/null || fail "$d: qcowctl pull"
qemu-img rebase -q -b "" qemu/pull/top.qcow2 || fail "$d: qemu-img rebase -b ''"
check "$d: top's bitmap marks the pulled ranges, as qemu-img rebase's" \
	ranges_as_qemu pull/top.qcow2 bt
check "$d: top's bitmap is not empty" eval '[ -s "$WORK/o.ranges" ]'
check "$d: top checks clean" image_clean ours/pull/top.qcow2

d="rebase"
twins rebase
ctl rebase -q -b other.qcow2 -F qcow2 ours/rebase/top.qcow2 >/dev/null || fail "$d: qcowctl rebase"
qemu-img rebase -q -b other.qcow2 -F qcow2 qemu/rebase/top.qcow2 || fail "$d: qemu-img rebase"
check "$d: top's bitmap marks the copied ranges, as qemu-img rebase's" \
	ranges_as_qemu rebase/top.qcow2 bt
check "$d: top checks clean" image_clean ours/rebase/top.qcow2

d="snapshot apply"
twins snap
qemu-img snapshot -c s1 ours/snap/base.qcow2 || fail "$d: qemu-img snapshot -c"
cp ours/snap/base.qcow2 qemu/snap/base.qcow2
sha_of ours/snap/base.qcow2 >"$WORK/snap.sha"
check "$d: QEMU refuses it while bitmaps exist" \
	eval '! qemu-img snapshot -a s1 qemu/snap/base.qcow2 2>/dev/null'
check "$d: refused as QEMU refuses it" \
	eval '! ctl snapshot apply ours/snap/base.qcow2 s1 >/dev/null 2>&1'
check "$d: the image is unchanged" sha_unchanged "$WORK/snap.sha"

finish

#!/bin/bash
# tree.sh - the mounted tree and its attributes: names by magic for .qcow2, .qcow,
# .img and no suffix; non-images not shown; the collision rule; subdirectories; a single image
# as SOURCE; the views of leaf images open for writing, every other open for writing fails
# with EROFS; -o ro, -o allow_other,
# -d; st_size, st_blocks, du and mtime; `qcowctl info --json` (and --chain) against
# `qemu-img info --output=json`; --help and --version of both programs.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC=$WORK/src
MNT=$WORK/mnt
mkdir -p "$SRC/sub/dir"
cd "$SRC" || exit 1

setup mk_qcow2 a.qcow2 4M
setup qio a.qcow2 "write -P 0x11 0 1M"
setup qemu-img snapshot -c s1 a.qcow2
setup qio a.qcow2 "write -P 0x12 2M 64k"
setup mk_qcow2 b.qcow 3M -o compat=0.10
setup qio b.qcow "write -P 0x13 0 64k"
setup mk_qcow2 c.img 5M -o extended_l2=on,compression_type=zstd
setup qio c.img "write -P 0x14 64k 4k"
setup mk_qcow2 d 1M -o lazy_refcounts=on,refcount_bits=64
setup qio d "write -P 0x15 0 4k"
setup mk_qcow2 x.qcow2 1M
setup qio x.qcow2 "write -P 0x16 0 4k"
setup mk_qcow2 x.img 2M
setup qio x.img "write -P 0x17 0 4k"
setup mk_qcow2 sub/dir/deep.qcow2 1M -o cluster_size=4096
setup qio sub/dir/deep.qcow2 "write -P 0x18 4k 4k"
setup mk_qcow2 base.qcow2 4M
setup qio base.qcow2 "write -P 0x19 0 4M"
setup mk_qcow2 sub/top.qcow2 4M -b ../base.qcow2 -F qcow2
setup qio sub/top.qcow2 "write -P 0x1a 1M 4k"
setup mk_qcow2 empty.qcow2 8M # no data at all
# things that are not shown
setup qemu-img create -q -f raw e.img 1M # a raw image nobody uses as a backing file
echo "just some notes" >notes.txt
echo "not an image" >fake.qcow2
: >zero-length.qcow2
head -c 3 a.qcow2 >short-magic.qcow2 # the magic alone is no image
mkfifo fifo.qcow2

# ---- the tree ----
mount_qcowfs "$SRC" "$MNT" || bail "mount failed"

check "root: images by magic (.qcow2 .qcow .img none), collisions by full name, no others" \
	expect_listing "$MNT" a.raw a@s1.raw b.raw c.raw d.raw x.qcow2.raw x.img.raw base.raw \
	empty.raw sub
check "no x.raw when x.qcow2 and x.img collide" expect_absent "$MNT/x.raw"
check "sub: subdirectories and their images" expect_listing "$MNT/sub" dir top.raw
check "sub/dir: deep image" expect_listing "$MNT/sub/dir" deep.raw
check "non-images are not shown" expect_absent "$MNT/e.img" "$MNT/e.raw" "$MNT/notes.txt" \
	"$MNT/fake.raw" "$MNT/fake.qcow2" "$MNT/zero-length.raw" "$MNT/short-magic.raw" "$MNT/fifo.raw"

declare -A FLAT=([a.qcow2]=a.raw [b.qcow]=b.raw [c.img]=c.raw [d]=d.raw [x.qcow2]=x.qcow2.raw
	[x.img]=x.img.raw [sub/dir/deep.qcow2]=sub/dir/deep.raw [base.qcow2]=base.raw
	[sub/top.qcow2]=sub/top.raw [empty.qcow2]=empty.raw)
for img in "${!FLAT[@]}"; do
	flat=$MNT/${FLAT[$img]}
	check "$img: ${FLAT[$img]} equals qemu-img convert" expect_same_as_qemu "$SRC/$img" "$flat"
	check "$img: st_size is the virtual size" expect_size_as_qemu "$SRC/$img" "$flat"
	if [ "$img" = base.qcow2 ]; then # a backing file: read-only
		check "$img: every open for writing fails with EROFS" \
			expect_open_fails "$flat" EROFS w rw wtrunc append
		check "$img: read-only (mode)" expect_readonly_mode "$flat"
	else # a leaf: writable, but O_TRUNC would shrink the disk
		check "$img: opens for writing succeed" expect_open_fails "$flat" ok w rw append
		check "$img: O_TRUNC is refused (EINVAL)" expect_open_fails "$flat" EINVAL wtrunc
		check "$img: opening for writing changed nothing" \
			expect_same_as_qemu "$SRC/$img" "$flat"
	fi
done
check "a@s1.raw equals qemu-img convert -l" expect_same_as_qemu "$SRC/a.qcow2" "$MNT/a@s1.raw" s1
check "a@s1.raw: every open for writing fails with EROFS" \
	expect_open_fails "$MNT/a@s1.raw" EROFS w rw wtrunc append
check "creating a file in the mount fails with EROFS" expect_open_fails "$MNT/new.raw" EROFS creat
check "creating a file in a subdirectory fails with EROFS" expect_open_fails "$MNT/sub/new.raw" EROFS creat
check_not "truncate of a flat view to a smaller size fails" fs truncate -s 1M "$MNT/a.raw"
check "st_size unchanged after the refused truncate" expect_size "$MNT/a.raw" 4194304
check_not "unlink of a flat view fails" fs rm -f "$MNT/a.raw"
check_not "mkdir in the mount fails" fs mkdir "$MNT/newdir"
check "a.qcow2 unchanged by all this" bash -c "qemu-img compare -U '$SRC/a.qcow2' '$MNT/a.raw'"

# st_blocks, du, mtime
blocks_positive()
{
	local b
	b=$(fs stat -c %b "$1") || return 1
	[ "$b" -gt 0 ] || { echo "st_blocks of $1 is $b"; return 1; }
}
du_positive()
{
	local k
	k=$(fs du -k "$1" | cut -f1) || return 1
	[ "$k" -gt 0 ] || { echo "du -k $1 says $k"; return 1; }
}
# st_blocks counts what the chain's files allocate: at least the data written, at most all of
# the files' blocks (plus one cluster of slack per file)
blocks_bounded()
{
	local flat=$1 min=$2 b max=0 f
	shift 2
	b=$(fs stat -c %b "$flat") || return 1
	for f in "$@"; do
		max=$((max + $(stat -c %b "$f") + 128))
	done
	if [ $((b * 512)) -lt "$min" ] || [ "$b" -gt "$max" ]; then
		echo "st_blocks of $flat is $b, want between $((min / 512)) and $max"
		return 1
	fi
}
same_mtime()
{
	local a b
	a=$(stat -c %Y "$1") && b=$(fs stat -c %Y "$2") || return 1
	[ "$a" = "$b" ] || { echo "mtime of $2 is $b, of $1 is $a"; return 1; }
}
check "a.raw: st_blocks > 0" blocks_positive "$MNT/a.raw"
check "a.raw: du reports its allocation" du_positive "$MNT/a.raw"
check "a.raw: st_blocks between the data written and the file's allocation" \
	blocks_bounded "$MNT/a.raw" $((1024 * 1024 + 65536)) "$SRC/a.qcow2"
check "sub/top.raw: st_blocks count the backing file's data too" \
	blocks_bounded "$MNT/sub/top.raw" $((4 * 1024 * 1024)) "$SRC/sub/top.qcow2" "$SRC/base.qcow2"
check "du -s over the whole mount works" fs du -sk "$MNT"
check "a.raw: mtime follows a.qcow2" same_mtime "$SRC/a.qcow2" "$MNT/a.raw"
check "sub/top.raw: mtime follows the top image" same_mtime "$SRC/sub/top.qcow2" "$MNT/sub/top.raw"

check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"

# ---- a single image as SOURCE ----
MNT1=$WORK/mnt-single
mount_qcowfs "$SRC/a.qcow2" "$MNT1" || bail "mount of a single image failed"
check "single image: the mount holds its flat file and its snapshots" \
	expect_listing "$MNT1" a.raw a@s1.raw
check "single image: a.raw equals qemu-img convert" expect_same_as_qemu "$SRC/a.qcow2" "$MNT1/a.raw"
check "single image: a@s1.raw equals qemu-img convert -l" \
	expect_same_as_qemu "$SRC/a.qcow2" "$MNT1/a@s1.raw" s1
check "single image: a.raw is writable" expect_open_fails "$MNT1/a.raw" ok w rw
check "single image: a@s1.raw is not" expect_open_fails "$MNT1/a@s1.raw" EROFS w rw
check "single image: the daemon unmounts and exits cleanly" umount_qcowfs "$MNT1"
MNT1=$WORK/mnt-single-nosuffix
mount_qcowfs "$SRC/d" "$MNT1" || bail "mount of a single image without suffix failed"
check "single image without suffix: shown as d.raw" expect_listing "$MNT1" d.raw
check "single image without suffix: d.raw equals qemu-img convert" \
	expect_same_as_qemu "$SRC/d" "$MNT1/d.raw"
check "single image without suffix: the daemon exits cleanly" umount_qcowfs "$MNT1"

# ---- mount options ----
MNTRO=$WORK/mnt-ro
mount_qcowfs "$SRC" "$MNTRO" -o ro || bail "mount -o ro failed"
check "-o ro: the mount is read-only" bash -c "findmnt -no OPTIONS '$MNTRO' | tr , '\\n' | grep -qx ro"
check "-o ro: opens for writing fail with EROFS" expect_open_fails "$MNTRO/a.raw" EROFS w rw
check "-o ro: reads work" expect_same_as_qemu "$SRC/a.qcow2" "$MNTRO/a.raw"
check "-o ro: the daemon exits cleanly" umount_qcowfs "$MNTRO"
if [ "$(id -u)" = 0 ] || grep -qx user_allow_other /etc/fuse.conf 2>/dev/null; then
	MNTAO=$WORK/mnt-ao
	mount_qcowfs "$SRC" "$MNTAO" -o allow_other || bail "mount -o allow_other failed"
	check "-o allow_other: passed to the mount" \
		bash -c "findmnt -no OPTIONS '$MNTAO' | tr , '\\n' | grep -qx allow_other"
	check "-o allow_other: reads work" expect_same_as_qemu "$SRC/a.qcow2" "$MNTAO/a.raw"
	check "-o allow_other: the daemon exits cleanly" umount_qcowfs "$MNTAO"
fi
MNTD=$WORK/mnt-debug
mount_qcowfs "$SRC" "$MNTD" -d || bail "mount -d failed"
check "-d: reads work" expect_same_as_qemu "$SRC/x.img" "$MNTD/x.img.raw"
check "-d: the daemon exits cleanly" umount_qcowfs "$MNTD"
check "-d: debug output in the log" test -s "$QCOWFS_LOG"
check "no sanitizer report in the last daemon's log" log_clean "$QCOWFS_LOG"

# ---- command line ----
check "qcowfs --help exits 0 and prints usage" bash -c "set -o pipefail; '$QCOWFS' --help | grep -i usage >/dev/null"
check "qcowfs --version exits 0 and prints a version" \
	bash -c "set -o pipefail; '$QCOWFS' --version | grep -E '[0-9]+\\.[0-9]+' >/dev/null"
check "qcowctl --version exits 0 and prints a version" \
	bash -c "set -o pipefail; '$QCOWCTL' --version | grep -E '[0-9]+\\.[0-9]+' >/dev/null"
# fails_quickly COMMAND...: exits non-zero within 10 s (a daemon that wrongly mounts would stay)
fails_quickly()
{
	local rc
	timeout -k 2 10 "$@"
	rc=$?
	case $rc in
	0) echo "succeeded: $*"; return 1 ;;
	124 | 137) echo "still running after 10 s: $*"; return 1 ;;
	esac
	return 0
}
mkdir -p "$WORK/mnt-bad"
track_mount "$WORK/mnt-bad" # unmounted by the trap should it mount after all
check "qcowfs without arguments fails" fails_quickly "$QCOWFS"
check "qcowfs with a missing SOURCE fails" fails_quickly "$QCOWFS" -f "$WORK/nonexistent" "$WORK/mnt-bad"
check "qcowfs with an unknown option fails" fails_quickly "$QCOWFS" -f --no-such-option "$SRC" "$WORK/mnt-bad"

# ---- qcowctl info against qemu-img info ----
info_matches()
{
	local img=$1 ours theirs
	ours=$(tmpfile .json)
	theirs=$(tmpfile .json)
	"$QCOWCTL" info --json "$img" >"$ours" || { echo "qcowctl info --json $img failed"; return 1; }
	qemu-img info -U --output=json "$img" >"$theirs" || return 1
	python3 "$E2E_HELPER" info-compare "$ours" "$theirs"
}
# info_text_matches FILE: qcowctl info and qemu-img info both succeed and print the same text
# (a diff of two process substitutions passed when both failed)
info_text_matches()
{
	local ours theirs
	ours=$(tmpfile .txt)
	theirs=$(tmpfile .txt)
	"$QCOWCTL" info "$1" >"$ours" || { echo "qcowctl info $1 failed"; return 1; }
	qemu-img info -U "$1" >"$theirs" || { echo "qemu-img info $1 failed"; return 1; }
	diff -u --label "qcowctl info" --label "qemu-img info" "$ours" "$theirs"
}
chain_matches()
{
	local img=$1 ours theirs
	ours=$(tmpfile .json)
	theirs=$(tmpfile .json)
	"$QCOWCTL" info --chain --json "$img" >"$ours" || { echo "qcowctl info --chain --json $img failed"; return 1; }
	qemu-img info -U --backing-chain --output=json "$img" >"$theirs" || return 1
	python3 "$E2E_HELPER" chain-compare "$ours" "$theirs"
}
setup qemu-img snapshot -c 'two/2%' a.qcow2
setup qemu-img create -q -f raw rawbase.img 1M
setup mk_qcow2 rawtop.qcow2 2M -b rawbase.img -F raw
setup mk_qcow2 bm.qcow2 1M
setup qemu-img bitmap --add bm.qcow2 b0
for img in a.qcow2 b.qcow c.img d x.img sub/dir/deep.qcow2 base.qcow2 sub/top.qcow2 empty.qcow2 \
	rawtop.qcow2 bm.qcow2; do
	check "qcowctl info --json $img matches qemu-img info" info_matches "$img"
done
check "qcowctl info --json with an absolute path matches qemu-img info" info_matches "$SRC/sub/top.qcow2"
# files that are not qcow2 are raw to qemu-img, whatever their length (sized in whole sectors)
mkdir -p "$WORK/rawinfo"
printf 'hello' >"$WORK/rawinfo/five-bytes"
yes "not an image" | head -c 100000 >"$WORK/rawinfo/odd-size"
: >"$WORK/rawinfo/empty"
for f in five-bytes odd-size empty; do
	check "qcowctl info --json of a raw file ($f) matches qemu-img info" info_matches \
		"$WORK/rawinfo/$f"
	check "qcowctl info of a raw file ($f) prints what qemu-img info prints" \
		info_text_matches "$WORK/rawinfo/$f"
done
check "qcowctl info --chain --json sub/top.qcow2 matches qemu-img info --backing-chain" \
	chain_matches sub/top.qcow2
check "qcowctl info --chain --json rawtop.qcow2 (raw backing) matches" chain_matches rawtop.qcow2
check "qcowctl info --chain --json a.qcow2 (no backing) is a one-element array" chain_matches a.qcow2
check "qcowctl info (text) works" bash -c "set -o pipefail; '$QCOWCTL' info a.qcow2 | grep . >/dev/null"
# info_fails_naming ARGS... FILE: `qcowctl info ARGS FILE` fails with one line naming FILE
info_fails_naming()
{
	local err
	err=$(tmpfile .err)
	if "$QCOWCTL" info "$@" >/dev/null 2>"$err"; then
		echo "qcowctl info $* succeeded"
		return 1
	fi
	[ "$(wc -l <"$err")" = 1 ] || { echo "stderr is not one line:"; cat "$err"; return 1; }
	grep -qF -- "${!#}" "$err" || { echo "error does not name the file:"; cat "$err"; return 1; }
}
check "qcowctl info on a text file: raw, as qemu-img info says" info_matches notes.txt
head -c 40 a.qcow2 >"$WORK/rawinfo/cut.qcow2"
check "qcowctl info on a qcow2 file cut short: one-line error naming it, non-zero exit" \
	info_fails_naming "$WORK/rawinfo/cut.qcow2"
check "qcowctl info on a missing file: one-line error naming it, non-zero exit" info_fails_naming missing.qcow2

# Symlinks in SOURCE: one to an image elsewhere is followed only where --backing-dir allows its
# directory; one that leads into the mount point (itself inside SOURCE) is skipped
# without resolving it, which would wait on the daemon itself.
SRC5=$WORK/src5
mkdir -p "$SRC5/mnt" "$SRC5/sub" "$WORK/elsewhere"
setup qemu-img create -q -f qcow2 "$WORK/elsewhere/real.qcow2" 1M
setup qio "$WORK/elsewhere/real.qcow2" "write -P 0x5a 0 64k"
ln -s ../../elsewhere/real.qcow2 "$SRC5/sub/link.qcow2"
ln -s mnt/sub/link.raw "$SRC5/evil.qcow2"
ln -s ./mnt/../mnt/sub "$SRC5/evil2"
mount_qcowfs "$SRC5" "$SRC5/mnt" || bail "mount with the mount point inside SOURCE failed"
check "a symlink into the mount point does not hang a listing" fs_t 20 ls -A "$SRC5/mnt"
check "only the real directory shows" expect_listing "$SRC5/mnt" sub
check "a symlink to an image outside SOURCE is not followed" \
	expect_listing "$SRC5/mnt/sub"
check "the daemon unmounts and exits cleanly" umount_qcowfs "$SRC5/mnt"
mount_qcowfs "$SRC5" "$SRC5/mnt" --backing-dir "$WORK/elsewhere" ||
	bail "mount with --backing-dir failed"
check "--backing-dir: a symlink to an image in that directory is followed" \
	expect_same_as_qemu "$WORK/elsewhere/real.qcow2" "$SRC5/mnt/sub/link.raw"
check "--backing-dir: the daemon unmounts and exits cleanly" umount_qcowfs "$SRC5/mnt"
finish

#!/bin/bash
# many-images.sh - a directory of 2,000 images mounts and lists every view with the names and
# modes of the naming contract (collisions resolved as view-names.sh shows them), and a lookup
# of an unchanged image does not open it again (its lock state is settled when it was probed,
# and again before an open: write-locking.sh checks that side):
# - img-NNNN.qcow2 -> img-NNNN.raw, mode 600 (writable; the files are 0644 but only their
#   owner may reach them: the work directory is 0700);
# - c.qcow2 and c.img -> c.qcow2.raw and c.img.raw; d.qcow2 beside a plain file d.raw ->
#   d.qcow2.raw (d.raw, no image, is not shown); x@y.qcow2 -> x%40y.raw;
# - a qcow2 backing file is listed read-only (base.raw, 400), a raw backing file under its own
#   name (rawb.img, 400).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC=$WORK/src
MNT=$WORK/mnt
PLAIN=1992
mkdir -p "$SRC"
cd "$SRC" || exit 1

setup mk_qcow2 "$WORK/one.qcow2" 1M
for ((i = 1; i <= PLAIN; i++)); do
	printf -v name 'img-%04d.qcow2' "$i"
	cp "$WORK/one.qcow2" "$name" || bail "cannot copy $name"
done
setup mk_qcow2 c.qcow2 1M
setup mk_qcow2 c.img 1M
setup mk_qcow2 d.qcow2 1M
echo "not an image" >d.raw
setup mk_qcow2 x@y.qcow2 1M
setup mk_qcow2 base.qcow2 1M
setup mk_qcow2 top.qcow2 1M -b base.qcow2 -F qcow2
setup qemu-img create -q -f raw rawb.img 1M
setup mk_qcow2 rtop.qcow2 1M -b rawb.img -F raw
chmod 0644 ./*
[ "$(find . -name '*.qcow2' -o -name '*.img' | wc -l)" = 2000 ] || bail "not 2,000 images"

# the model: "MODE SIZE NAME" of every view, sorted
want=$WORK/want
{
	for ((i = 1; i <= PLAIN; i++)); do
		printf '600 1048576 img-%04d.raw\n' "$i"
	done
	printf '%s\n' "600 1048576 c.qcow2.raw" "600 1048576 c.img.raw" "600 1048576 d.qcow2.raw" \
		"600 1048576 x%40y.raw" "400 1048576 base.raw" "600 1048576 top.raw" \
		"400 1048576 rawb.img" "600 1048576 rtop.raw"
} | sort >"$want"
size=$(qemu-img info --output=json "$WORK/one.qcow2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
check "qemu-img says the images are 1 MiB" test "$size" = 1048576

mount_qcowfs "$SRC" "$MNT" || bail "mount failed"

# every view, with its mode and size as stat(2) of the listed name shows it
listing_is_model()
{
	local got=$WORK/got
	fs ls -A "$MNT" >"$WORK/names" || return 1
	(cd "$MNT" && fs xargs -d '\n' stat -c '%a %s %n' <"$WORK/names") | sort >"$got" || return 1
	if ! cmp -s "$want" "$got"; then
		diff -u --label want --label got "$want" "$got" | head -n 20
		return 1
	fi
}
check "the 2,000 images list with the contract's names, modes and sizes" listing_is_model
check "listed again (all cached), the same" listing_is_model

# A lookup of an unchanged image costs a stat, not an open of the image: the daemon opens no
# image file for reading or writing while three lookups of one view are answered (entry
# timeout 0: each stat(2) of the path is a lookup).
lookup_opens_nothing()
{
	local trace=$WORK/trace i
	: >"$trace"
	strace -f -qq -e trace=open,openat,openat2 -o "$trace" -p "$QCOWFS_PID" 2>/dev/null &
	local spid=$!
	for ((i = 0; i < 100; i++)); do
		awk '$1 == "TracerPid:" && $2 != 0 { ok = 1 } END { exit !ok }' \
			"/proc/$QCOWFS_PID/status" && break
		sleep 0.1
	done
	fs stat "$MNT/img-0007.raw" >/dev/null
	fs stat "$MNT/img-0007.raw" >/dev/null
	fs stat "$MNT/img-0007.raw" >/dev/null
	kill -INT "$spid" 2>/dev/null
	wait "$spid" 2>/dev/null
	grep -q 'img-0007.raw\|img-0007.qcow2' "$trace" || {
		echo "the trace saw no lookup of img-0007 at all:"
		head -n 5 "$trace"
		return 1
	}
	if grep 'img-0007.qcow2' "$trace" | grep -v 'O_PATH'; then
		echo "the daemon opened the image on a lookup (above)"
		return 1
	fi
}
if command -v strace >/dev/null 2>&1; then
	check "a lookup of an unchanged image does not open the image file" lookup_opens_nothing
fi
# A file's ACL is asked once per change of the file (its ctime): an ACL set since shows at the
# next lookup. The work directory opened to others, the modes keep their group and other bits
# (644); after a pause (a change of the last two seconds is never kept) the view is looked
# up (its ACL kept), then an ACL denies a named user: group and other read go.
chmod 0755 "$WORK"
sleep 3
check "c.qcow2.raw: 644 once others may reach the image" view_mode_is "$MNT/c.qcow2.raw" 644
check "c.qcow2.raw: 644 again (its ACL kept)" view_mode_is "$MNT/c.qcow2.raw" 644
setup set_acl "$SRC/c.qcow2" 6 4 4 65534 0
check "c.qcow2.raw: an ACL set since shows at once (600)" view_mode_is "$MNT/c.qcow2.raw" 600
chmod 0700 "$WORK"
check "the daemon is still alive" daemon_alive "$MNT"
check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
finish

#!/bin/bash
# view-names.sh - no view is lost to a name collision: every image, snapshot and raw
# backing file gets a name of its own, the same whatever order the directory lists them in, and
# the log says once why a name is not the usual one:
# - an image whose name holds '@' (a@x.qcow2) is shown with '@' and '%' written %40 and %25
#   (a%40x.raw), so it cannot take the name of snapshot x of a.qcow2 (a@x.raw);
# - the full-name fallback of colliding images (m.qcow2 and m.img: m.qcow2.raw) colliding
#   again, with another image's name (m.qcow2.img) or a raw backing file's (n.qcow2.raw): the
#   file name keeps it, and the image takes FILE%#2.raw;
# - a raw backing file or a subdirectory keeps its own name; a snapshot view whose name it
#   holds (s@y.raw) is shown with the snapshot's id (s@y%#1.raw).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC=$WORK/src
MNT=$WORK/mnt
mkdir -p "$SRC/enc"
cd "$SRC" || exit 1

# an image and its snapshot view against another image's flat view
setup mk_qcow2 a.qcow2 1M
setup qio a.qcow2 "write -P 0x21 0 64k"
setup qemu-img snapshot -c x a.qcow2
setup qio a.qcow2 "write -P 0x22 0 64k"
setup mk_qcow2 a@x.qcow2 2M
setup qio a@x.qcow2 "write -P 0x23 0 64k"
# the full-name fallback taken by another image's first name...
setup mk_qcow2 m.qcow2 1M
setup qio m.qcow2 "write -P 0x31 0 4k"
setup mk_qcow2 m.img 1M
setup qio m.img "write -P 0x32 0 4k"
setup mk_qcow2 m.qcow2.img 1M
setup qio m.qcow2.img "write -P 0x33 0 4k"
# ... and by a raw backing file's name
setup mk_qcow2 n.qcow2 1M
setup qio n.qcow2 "write -P 0x41 0 4k"
setup mk_qcow2 n.img 1M
setup qio n.img "write -P 0x42 0 4k"
setup qemu-img create -q -f raw n.qcow2.raw 1M
setup qio_raw n.qcow2.raw "write -P 0x43 0 4k"
setup mk_qcow2 over.qcow2 1M -b n.qcow2.raw -F raw
setup qio over.qcow2 "write -P 0x44 64k 4k"
# a raw backing file next to its overlay: the file keeps its name
setup qemu-img create -q -f raw b.raw 1M
setup qio_raw b.raw "write -P 0x51 0 8k"
setup mk_qcow2 b.qcow2 1M -b b.raw -F raw
setup qio b.qcow2 "write -P 0x52 4k 4k"
# snapshot views whose names a raw backing file and a subdirectory hold
setup mk_qcow2 s.qcow2 1M
setup qio s.qcow2 "write -P 0x61 0 4k"
setup qemu-img snapshot -c y s.qcow2
setup qio s.qcow2 "write -P 0x62 0 4k"
setup qemu-img snapshot -c z s.qcow2
setup qio s.qcow2 "write -P 0x63 0 4k"
setup qemu-img create -q -f raw s@y.raw 1M
setup qio_raw s@y.raw "write -P 0x64 0 4k"
setup mk_qcow2 t.qcow2 1M -b s@y.raw -F raw
mkdir 's@z.raw'
# '%' and '@' together, an image literally named like an encoded one, no suffix
cd enc || exit 1
setup mk_qcow2 'p%@q.qcow2' 1M
setup qio 'p%@q.qcow2' "write -P 0x71 0 4k"
setup qemu-img snapshot -c v 'p%@q.qcow2'
setup qio 'p%@q.qcow2' "write -P 0x72 0 4k"
setup mk_qcow2 c@d.qcow2 1M
setup qio c@d.qcow2 "write -P 0x73 0 4k"
setup mk_qcow2 c%40d.qcow2 1M
setup qio c%40d.qcow2 "write -P 0x74 0 4k"
setup mk_qcow2 e@f 1M
setup qio e@f "write -P 0x75 0 4k"
cd "$SRC" || exit 1

mount_qcowfs "$SRC" "$MNT" || bail "mount failed"

check "root: every image, snapshot and raw backing file has a view" \
	expect_listing "$MNT" a.raw a@x.raw a%40x.raw m.qcow2.raw m.img.raw m.qcow2.img.raw \
	n.qcow2%#2.raw n.img.raw n.qcow2.raw over.raw b.raw b.qcow2.raw s.raw s@y%#1.raw \
	s@z%#2.raw s@y.raw s@z.raw t.raw enc
check "enc: '%' and '@' in image names are written %25 and %40" \
	expect_listing "$MNT/enc" p%25%40q.raw p%25%40q@v.raw c%40d.qcow2.raw \
	c%40d.qcow2%#2.raw e%40f.raw

# view -> "IMAGE" (flat view) or "IMAGE SNAPSHOT" (snapshot view)
declare -A VIEW=([a.raw]=a.qcow2 [a@x.raw]="a.qcow2 x" [a%40x.raw]=a@x.qcow2
	[m.qcow2.raw]=m.qcow2 [m.img.raw]=m.img [m.qcow2.img.raw]=m.qcow2.img
	[n.qcow2%#2.raw]=n.qcow2 [n.img.raw]=n.img [over.raw]=over.qcow2 [b.qcow2.raw]=b.qcow2
	[s.raw]=s.qcow2 [s@y%#1.raw]="s.qcow2 y" [s@z%#2.raw]="s.qcow2 z" [t.raw]=t.qcow2
	[enc/p%25%40q.raw]=enc/p%@q.qcow2 [enc/p%25%40q@v.raw]="enc/p%@q.qcow2 v"
	[enc/c%40d.qcow2.raw]=enc/c%40d.qcow2 [enc/c%40d.qcow2%#2.raw]=enc/c@d.qcow2
	[enc/e%40f.raw]=enc/e@f)
for v in "${!VIEW[@]}"; do
	read -r img snap <<<"${VIEW[$v]}"
	check "$v is ${VIEW[$v]}: the bytes of qemu-img convert" \
		expect_same_as_qemu "$SRC/$img" "$MNT/$v" $snap
done
for raw in n.qcow2.raw b.raw s@y.raw; do
	check "$raw: the raw backing file under its own name" cmp "$SRC/$raw" "$MNT/$raw"
done
check "s@z.raw: the subdirectory keeps its name" test -d "$MNT/s@z.raw"

# every name is looked up (not only listed) as what it shows: a fresh lookup after a change
touch "$SRC/enc/new-file" "$SRC/new-file"
check "a@x.raw, looked up by name, is snapshot x of a.qcow2" \
	expect_same_as_qemu "$SRC/a.qcow2" "$MNT/a@x.raw" x
check "a%40x.raw, looked up by name, is a@x.qcow2" \
	expect_same_as_qemu "$SRC/a@x.qcow2" "$MNT/a%40x.raw"

renamed()
{
	local n
	n=$(grep -cF -- "$1" "$QCOWFS_LOG")
	[ "$n" = 1 ] || { echo "'$1' logged $n times, not once; log:"; cat "$QCOWFS_LOG"; return 1; }
}
fs ls -A "$MNT" "$MNT/enc" >/dev/null
check "the log says once why a@x.qcow2 is a%40x.raw" \
	renamed "a@x.qcow2' is shown as 'a%40x.raw'"
check "the log says once why m.qcow2 is m.qcow2.raw" \
	renamed "m.qcow2' is shown as 'm.qcow2.raw': 'm.raw'"
check "the log says once why n.qcow2 is n.qcow2%#2.raw" \
	renamed "n.qcow2' is shown as 'n.qcow2%#2.raw'"
check "the log says once why snapshot y of s.qcow2 is s@y%#1.raw" \
	renamed "snapshot 'y' (id 1) is shown as 's@y%#1.raw': 's@y.raw'"
check "the log says once why c@d.qcow2 is c%40d.qcow2%#2.raw" \
	renamed "c@d.qcow2' is shown as 'c%40d.qcow2%#2.raw'"
check "names that did not change (a, over, t, s) are not logged" \
	eval "! grep -E \"/(a|over|t|s)\\.qcow2' is shown\" \"$QCOWFS_LOG\""
check "the daemon log is clean" log_clean "$QCOWFS_LOG"

# ---- the same names whatever order a directory lists its files in ----
# tmpfs lists a directory's files newest first: two directories of the same files created in
# opposite orders list them in opposite orders (ext4 lists them in an order of their names).
if [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ] &&
	SHM=$(mktemp -d /dev/shm/qcowfs-e2e-view-names.XXXXXX); then
	on_cleanup rm -rf "$SHM"
	ORDER=(a.qcow2 a@x.qcow2 m.qcow2 m.img m.qcow2.img c@d.qcow2 c%40d.qcow2)
	mkdir "$SHM/one" "$SHM/two"
	for img in "${ORDER[@]}"; do
		from=$SRC/$img
		[ -e "$from" ] || from=$SRC/enc/$img
		setup cp --sparse=always "$from" "$SHM/one/"
	done
	for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do
		setup cp --sparse=always "$SHM/one/${ORDER[i]}" "$SHM/two/"
	done
	if [ "$(ls -f "$SHM/one" | grep -v '^\.')" != "$(ls -f "$SHM/two" | grep -v '^\.' | tac)" ]; then
		echo "# tmpfs does not list in creation order here: the orders are not opposite"
	fi
	mount_qcowfs "$SHM" "$WORK/mnt2" || bail "mount of tmpfs source failed"
	WANT=(a.raw a@x.raw a%40x.raw m.qcow2.raw m.img.raw m.qcow2.img.raw c%40d.qcow2.raw
		c%40d.qcow2%#2.raw)
	for d in one two; do
		check "$d: the same names" expect_listing "$WORK/mnt2/$d" "${WANT[@]}"
		check "$d: a@x.raw is snapshot x of a.qcow2" \
			expect_same_as_qemu "$SHM/$d/a.qcow2" "$WORK/mnt2/$d/a@x.raw" x
		check "$d: a%40x.raw is a@x.qcow2" \
			expect_same_as_qemu "$SHM/$d/a@x.qcow2" "$WORK/mnt2/$d/a%40x.raw"
		check "$d: m.qcow2.raw is m.qcow2" \
			expect_same_as_qemu "$SHM/$d/m.qcow2" "$WORK/mnt2/$d/m.qcow2.raw"
		check "$d: c%40d.qcow2%#2.raw is c@d.qcow2" \
			expect_same_as_qemu "$SHM/$d/c@d.qcow2" "$WORK/mnt2/$d/c%40d.qcow2%#2.raw"
	done
	check "tmpfs mount: the daemon log is clean" log_clean "$QCOWFS_LOG"
fi

finish

#!/bin/bash
# damaged-writes.sh - changing an image with damaged metadata never makes it worse,
# with qemu-img as the oracle (its error count: corruptions + leaks + check errors, and the
# bytes it reads of the disk and of each snapshot):
#   - guest data lying in metadata (an L2 entry, with COPIED, pointing at the active L2 table,
#     the snapshot table, a snapshot's L1 table; a compressed cluster whose bytes run into a
#     refcount block and the L1 table; an L1 entry pointing at a refcount block): qcowctl
#     snapshot create, apply and delete refuse, saying where in one line, and change no byte
#     (each would rewrite metadata that the guest reads as data there, and count the
#     metadata's own refcount up or down).
#   - an image left dirty by lazy refcounts whose guest data lies in metadata is not written
#     (rebuilding its refcounts would rewrite what the guest reads there): qcowctl refuses,
#     saying where, and changes nothing.
#   - a snapshot delete that would take a cluster's refcount below the references the active
#     state keeps (and free it) refuses, changing nothing.
#   - an L2 table with one bad entry: its data cluster has refcount 0 (the allocator would hand
#     it out again), COPIED on a cluster shared with a snapshot (a write in place changes the
#     snapshot), guest data in the L2 table itself or in a refcount block (every change of the
#     table or of the refcounts changes what the guest reads there): a 4 KiB dd through a
#     qcowfs view into another cluster of that table fails, the log says why in one line, the
#     view is then read-only; qcowctl pull refuses the same way; qemu-img counts no more
#     errors, and reads the disk and the snapshot as before.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$WORK" || exit 1
H=$E2E_HELPER
SRC=$WORK/src
mkdir -p "$SRC"

# mk IMAGE: a 8 MiB image with data, a compressed cluster, a snapshot, then more data
mk_damaged()
{
	qemu-img create -q -f qcow2 "$1" 8M && mk_data "$1"
}

mk_data()
{
	qio "$1" "write -P 0x11 0 1M" "write -c -P 0x33 2M 64k" "write -P 0x22 3M 256k" &&
		qemu-img snapshot -c s1 "$1" &&
		qio "$1" "write -P 0x44 64k 64k" "write -P 0x55 4M 64k"
}

# refuses_in_one_line WHY CMD...: CMD fails, printing one line that holds WHY
refuses_in_one_line()
{
	local why=$1 out
	shift
	if out=$("$@" 2>&1); then
		echo "succeeded: $*"
		return 1
	fi
	[ "$(wc -l <<<"$out")" = 1 ] || { echo "more than one line: $out"; return 1; }
	grep -q -- "$why" <<<"$out" || { echo "no '$why' in: $out"; return 1; }
}

# ---- snapshot operations on guest data lying in metadata ----

for kind in at-l2:0 at-snaptable:0 at-snapl1:0 zip-l1:0 l1-refblock; do
	name=${kind%%:*}
	img=$SRC/snap-$name.qcow2
	setup mk_damaged "$img"
	setup python3 "$H" qcow2-break "$img:$kind"
	# counts now, or "as many errors as before" below compares two empty strings
	before=$(check_errors "$img") || bail "qemu-img check gives no counts for $img"
	sha_of "$img" >"snap-$name.sha"
	check "$name: qcowctl snapshot create refuses, saying where" \
		refuses_in_one_line "lies in the" "$QCOWCTL" snapshot create -q "$img" s2
	check "$name: qcowctl snapshot apply refuses, saying where" \
		refuses_in_one_line "lies in the" "$QCOWCTL" snapshot apply -q "$img" s1
	check "$name: qcowctl snapshot delete refuses, saying where" \
		refuses_in_one_line "lies in the" "$QCOWCTL" snapshot delete -q "$img" s1
	check "$name: not one byte changed" sha_unchanged "snap-$name.sha"
	check "$name: qemu-img counts as many errors as before" \
		eval '[ "$(check_errors "$img")" = "$before" ]'
done

# ---- an image left dirty by lazy refcounts, its guest data in metadata ----
# (the open would rebuild the refcounts and COPIED flags, rewriting the refcount block or the
# L2 table that the guest reads there)

for kind in at-l2 at-refblock; do
	img=$SRC/dirty-$kind.qcow2
	setup qemu-img create -q -f qcow2 -o lazy_refcounts=on "$img" 8M
	setup mk_data "$img"
	setup python3 "$H" qcow2-break "$img:$kind:0" "$img:dirty"
	sha_of "$img" >"dirty-$kind.sha"
	check "dirty, $kind: qcowctl resize refuses before rebuilding, saying where" \
		refuses_in_one_line "lies in the" "$QCOWCTL" resize -q "$img" 16M
	check "dirty, $kind: not one byte changed" sha_unchanged "dirty-$kind.sha"
done

# ---- a delete that would free a cluster the active state still uses ----
# (the active L2 table, shared with the snapshot, names guest 0's cluster twice: its refcount
# 2 counts two references of four, and the delete takes two away)

img=$SRC/shared.qcow2
setup qemu-img create -q -f qcow2 "$img" 8M
setup qio "$img" "write -P 0x11 0 1M"
setup qemu-img snapshot -c s1 "$img"
setup python3 "$H" qcow2-break "$img:share:0:3145728"
setup qemu-img convert -U -O raw "$img" shared.disk
sha_of "$img" >shared.sha
check "a delete that would free a cluster still in use refuses, saying why" \
	refuses_in_one_line "refcount lower than its references" \
	"$QCOWCTL" snapshot delete -q "$img" s1
check "and changes not one byte" sha_unchanged shared.sha
check "qemu-img reads the disk as before" \
	eval 'qemu-img convert -U -O raw "$img" after.raw && cmp shared.disk after.raw'

# ---- writes through a table with a bad entry ----

MNT=$WORK/mnt
TAB=$WORK/tab
mkdir -p "$TAB"
# same_but_dd A B: A and B are the same but maybe for the 4 KiB the dd wrote (at 7 MiB)
same_but_dd()
{
	python3 - "$1" "$2" <<'PY'
import sys
a, b = (open(p, "rb").read() for p in sys.argv[1:3])
d = 7 << 20
if len(a) != len(b) or a[:d] != b[:d] or a[d + 4096:] != b[d + 4096:]:
    sys.exit("%s and %s differ outside the 4 KiB written" % tuple(sys.argv[1:3]))
PY
}
kinds="free-data:0 copied-shared:0 at-l2:0 at-refblock:0"
setup qemu-img create -q -f qcow2 "$TAB/base.qcow2" 8M
setup qio "$TAB/base.qcow2" "write -P 0x66 0 8M"
for kind in $kinds; do
	name=${kind%%:*}
	img=$TAB/$name.qcow2
	setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$img" 8M
	setup mk_data "$img"
	if [ "$name" = copied-shared ]; then
		# guest 0 is shared with the snapshot: COPIED set on its entry
		setup python3 - "$img" <<'PY'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    h = f.read(104)
    l1 = struct.unpack(">Q", h[40:48])[0]
    f.seek(l1)
    l2 = struct.unpack(">Q", f.read(8))[0] & 0x00fffffffffffe00
    f.seek(l2)
    e = struct.unpack(">Q", f.read(8))[0]
    f.seek(l2)
    f.write(struct.pack(">Q", e | (1 << 63)))
PY
	else
		setup python3 "$H" qcow2-break "$img:$kind"
	fi
	cp "$img" "$TAB/pull-$name.qcow2"
	setup flat_of "$img" "$name.disk"
	setup flat_of "$img" "$name.snap" 1
	echo "$(check_errors "$img")" >"$name.errors"
done
mount_qcowfs "$TAB" "$MNT" || bail "mount failed"
for kind in $kinds; do
	name=${kind%%:*}
	check_not "$name: a dd into another cluster of the table fails" dd_write "$MNT/$name.raw" 7340032
	check "$name: the log says why, in one line" \
		eval '[ "$(grep -c "$name.qcow2.*L2 table at 0x.*entry" "$QCOWFS_LOG")" = 1 ]'
	check "$name: the view is then read-only" expect_not_writable "$MNT/$name.raw"
done
check "unmount" umount_qcowfs "$MNT"
for kind in $kinds; do
	name=${kind%%:*}
	img=$TAB/$name.qcow2
	check "$name: qemu-img counts no more errors" \
		eval '[ "$(check_errors "$img")" -le "$(cat "$name.errors")" ]'
	check "$name: qemu-img reads the disk as before (but what the dd wrote)" \
		eval 'flat_of "$img" after.raw && same_but_dd "$name.disk" after.raw'
	check "$name: and the snapshot" \
		eval 'flat_of "$img" after.raw 1 && cmp "$name.snap" after.raw'
	img=$TAB/pull-$name.qcow2
	check "$name: qcowctl pull refuses, saying why in one line" \
		refuses_in_one_line "L2 table at 0x.*entry" "$QCOWCTL" pull -q "$img"
	check "$name: after the pull, qemu-img counts no more errors" \
		eval '[ "$(check_errors "$img")" -le "$(cat "$name.errors")" ]'
	check "$name: and reads the disk and the snapshot as before" \
		eval 'flat_of "$img" after.raw && cmp "$name.disk" after.raw &&
			flat_of "$img" after.raw 1 && cmp "$name.snap" after.raw'
done

finish

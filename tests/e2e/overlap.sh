#!/bin/bash
# overlap.sh - writes never make a damaged image worse, with qemu-img as the oracle:
#   - an image whose L2 entry (with COPIED) points at its own L1 table: a 4 KiB dd through the
#     view into that cluster fails; `qemu-img info` then says "corrupt: true"; qemu-img reads
#     every byte of the disk as before (the L1 table was not overwritten); the daemon's log
#     names the image and the offset; the view is then read-only; qcowctl jobs refuse the image
#     as qemu-img does; a hole punched over that cluster drops the entry but leaves the L1
#     table its reference (QEMU would count it down to 0), so qemu-img check finds it clean;
#   - images whose L1 table or L2 table has refcount 0 (which QEMU's allocator would hand out
#     for new data): the view is served read-only with the reason in the log, a write through it
#     fails, qcowctl refuses to write them, and no byte of them changes.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$WORK" || exit 1
H=$E2E_HELPER
SRC=$WORK/src
MNT=$WORK/mnt
mkdir -p "$SRC"

# mk NAME: a 64 MiB image with data in a few places
mk_src()
{
	qemu-img create -q -f qcow2 "$SRC/$1" 64M &&
		qio "$SRC/$1" "write -P 0x11 0 1M" "write -P 0x22 4M 256k" "write -P 0x33 40M 64k"
}

corrupt_in_info()
{
	qemu-img info -U "$1" | grep -q "corrupt: true" ||
		{ echo "qemu-img info does not say corrupt:"; qemu-img info -U "$1"; return 1; }
}

# not_corrupt_in_info IMAGE: qemu-img info reads IMAGE and does not say corrupt (a failed
# qemu-img info is no answer either way)
not_corrupt_in_info()
{
	output_lacks "corrupt: true" qemu-img info -U "$1"
}

# qcowctl_refuses IMAGE WHY: qcowctl refuses to resize IMAGE or snapshot it (as qemu-img does
# on a corrupt image), saying why; the file does not change
qcowctl_refuses()
{
	local img=$1 why=$2 sum out
	sum=$(sha256sum <"$img")
	if out=$("$QCOWCTL" resize "$img" 128M 2>&1); then
		echo "qcowctl resize succeeded"
		return 1
	fi
	grep -q -- "$why" <<<"$out" || { echo "resize: no '$why' in: $out"; return 1; }
	if out=$("$QCOWCTL" snapshot create "$img" s1 2>&1); then
		echo "qcowctl snapshot create succeeded"
		return 1
	fi
	grep -q -- "$why" <<<"$out" || { echo "snapshot: no '$why' in: $out"; return 1; }
	[ "$(sha256sum <"$img")" = "$sum" ] || { echo "$img changed"; return 1; }
}

# logged_once LOG TEXT: exactly one line of LOG holds TEXT
logged_once()
{
	local n
	n=$(grep -cF -- "$2" "$1")
	[ "$n" = 1 ] || { echo "$n lines with '$2' in the log:"; sed 's/^/  /' "$1"; return 1; }
}

# held_writes VIEW: three 4 KiB writes into guest cluster 1 through one handle; prints the
# errno names
held_writes()
{
	fs python3 -c '
import errno, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
out = []
for i in range(3):
    try:
        os.pwrite(fd, b"x" * 4096, 65536)
        out.append("ok")
    except OSError as e:
        out.append(errno.errorcode[e.errno])
os.close(fd)
print(" ".join(out))' "$1"
}

# ---- an L2 entry with COPIED pointing at the L1 table ----

setup mk_src l1.qcow2
setup python3 "$H" qcow2-break "$SRC/l1.qcow2:l1:64k"
setup mk_src held.qcow2
setup python3 "$H" qcow2-break "$SRC/held.qcow2:l1:64k"
setup mk_src punch.qcow2
setup python3 "$H" qcow2-break "$SRC/punch.qcow2:l1:64k"
setup make_model "$SRC/punch.qcow2" punch.model
setup dd if=/dev/zero of=punch.model bs=64k seek=1 count=1 conv=notrunc status=none
setup flat_of "$SRC/l1.qcow2" before.raw
check "qemu-img does not see the damage as corruption yet" not_corrupt_in_info "$SRC/l1.qcow2"

mount_qcowfs "$SRC" "$MNT" || bail "mount failed"
check "the view of the damaged image is offered writable" expect_writable_mode "$MNT/l1.raw"
check_not "a 4 KiB dd into the cluster that is the L1 table fails" dd_write "$MNT/l1.raw" 65536
check "qemu-img info says corrupt: true" corrupt_in_info "$SRC/l1.qcow2"
check "qemu-img reads every byte as before (the L1 table is intact)" \
	eval 'flat_of "$SRC/l1.qcow2" after.raw && cmp before.raw after.raw'
check "the log names the image and the offset" \
	log_names "$QCOWFS_LOG" "l1.qcow2" "preventing write on metadata at 0x"
check "the view is read-only now" eventually expect_not_writable "$MNT/l1.raw"
check_not "a second dd fails too" dd_write "$MNT/l1.raw" 65536
check "the view still reads what qemu-img reads" expect_same_bytes before.raw "$MNT/l1.raw"
check "the daemon survives" daemon_alive "$MNT"
check "the refused write is logged once" logged_once "$QCOWFS_LOG" "preventing write on metadata"
check "through a handle kept open: EIO, then EROFS" \
	eval '[ "$(held_writes "$MNT/held.raw")" = "EIO EROFS EROFS" ]'
check "through a handle kept open: logged once" \
	logged_once "$QCOWFS_LOG" "held.qcow2': preventing write on metadata"
check "through a handle kept open: one line about it in all" logged_once "$QCOWFS_LOG" "held.raw"
check "qemu-img info says corrupt: true for it too" corrupt_in_info "$SRC/held.qcow2"
check "a hole punched where the entry into the L1 table was: the entry goes" \
	eval '[ "$(try_op "$MNT/punch.raw" p:65536:65536)" = ok ]'
check "the hole reads zeros, the rest as before" view_is_model "$MNT/punch.raw" punch.model
check "unmount" umount_qcowfs "$MNT"
check "qemu-img still reads every byte as before" \
	eval 'flat_of "$SRC/l1.qcow2" after2.raw && cmp before.raw after2.raw'
check "qemu-img itself refuses to write it" \
	_e2e_negate qemu-img resize -q "$SRC/l1.qcow2" 128M
check "qcowctl refuses its jobs on it, saying corrupt" \
	qcowctl_refuses "$SRC/l1.qcow2" corrupt
check "the L1 table kept its own reference: qemu-img check finds the image clean" \
	image_not_corrupt "$SRC/punch.qcow2"
check "and reads the hole as zeros, the rest as before" image_is_model "$SRC/punch.qcow2" punch.model

# ---- live L1 / L2 tables whose refcount is 0 ----

for kind in l1 l2; do
	img=free-$kind.qcow2
	setup mk_src "$img"
	setup python3 "$H" qcow2-break "$SRC/$img:free-$kind:0"
	setup flat_of "$SRC/$img" "free-$kind.raw"
	sha_of "$SRC/$img" >"free-$kind.sha"
done
mount_qcowfs "$SRC" "$MNT" || bail "mount failed"
for kind in l1 l2; do
	check_not "refcount 0 on the $kind table: a dd through the view fails" \
		dd_write "$MNT/free-$kind.raw" 65536
	check "refcount 0 on the $kind table: the log says why it is read-only" \
		log_names "$QCOWFS_LOG" "free-$kind" "refcount 0"
	check "refcount 0 on the $kind table: the view reads what qemu-img reads" \
		expect_same_bytes "free-$kind.raw" "$MNT/free-$kind.raw"
	check "refcount 0 on the $kind table: the view is then read-only" \
		expect_not_writable "$MNT/free-$kind.raw"
	check_not "refcount 0 on the $kind table: a second dd fails" dd_write "$MNT/free-$kind.raw" 65536
	check "refcount 0 on the $kind table: the reason is logged once" \
		logged_once "$QCOWFS_LOG" "free-$kind.qcow2': the"
done
check "unmount" umount_qcowfs "$MNT"
for kind in l1 l2; do
	check "refcount 0 on the $kind table: not one byte changed" sha_unchanged "free-$kind.sha"
	check "refcount 0 on the $kind table: qcowctl refuses to write it, saying why" \
		qcowctl_refuses "$SRC/free-$kind.qcow2" "refcount 0"
done

finish

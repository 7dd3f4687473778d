#!/bin/bash
# write-writeback.sh - writes through the kernel's writeback cache (-o writeback): small and
# unaligned writes through a write-only descriptor (the kernel reads the rest of each page
# through it first) land in the image once fsync returns: the daemon is killed with SIGKILL right
# after, and qemu-img finds no corruption and every byte as a model of the disk says. Appending
# writes are refused by write(2) (EFBIG) as without the cache, and the view's size stays the
# image's virtual size; a positional write past the end is refused by write(2) or at the latest
# by fsync, the image unchanged; growing by truncate still shows the new size. O_DIRECT writes go
# straight to the image. Another user (as root, with a test user) writes part of a page through a
# write-only descriptor: the kernel reads the rest through that handle, and the write-back runs
# as limited as that user's own writes. (A view has no write bit for whoever may not read it:
# permissions.sh.)
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC=$WORK/src
MNT=$WORK/mnt
mkdir -p "$SRC"
cd "$SRC" || exit 1

setup qemu-img create -q -f qcow2 base.qcow2 4M
setup qio base.qcow2 "write -P 0x11 0 4M"
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
setup make_model top.qcow2 "$WORK/model.raw"
VSIZE=$(virtual_size top.qcow2) || bail "qemu-img info failed"

# writes NEWSIZE: the same writes to the view and the model, through a write-only descriptor,
# unaligned and smaller than a page, then one fsync; then an O_DIRECT write of one aligned block
writes()
{
	python3 - "$MNT/top.raw" "$WORK/model.raw" <<'PY'
import mmap, os, random, sys
view, model = sys.argv[1], sys.argv[2]
rng = random.Random(15)
size = os.path.getsize(model)
v = os.open(view, os.O_WRONLY)
m = os.open(model, os.O_WRONLY)
for i in range(200):
    n = rng.randrange(1, 3000)
    off = rng.randrange(0, size - n)
    data = bytes([rng.randrange(256)]) * n
    assert os.pwrite(v, data, off) == n
    os.pwrite(m, data, off)
os.fsync(v)
os.close(v)
buf = mmap.mmap(-1, 4096)
buf.write(b"\x5a" * 4096)
d = os.open(view, os.O_WRONLY | os.O_DIRECT)
assert os.pwrite(d, buf, 3 * 1024 * 1024) == 4096
os.pwrite(m, b"\x5a" * 4096, 3 * 1024 * 1024)
os.fsync(d)
os.close(d)
os.close(m)
PY
}

# append VIEW: an O_APPEND write past the end must fail with EFBIG, the size unchanged
append()
{
	python3 - "$1" <<'PY'
import errno, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
size = os.fstat(fd).st_size
try:
    os.write(fd, b"x" * 4096)
    print("append succeeded")
    sys.exit(1)
except OSError as e:
    if e.errno != errno.EFBIG:
        print("append failed with", e)
        sys.exit(1)
try:
    os.fsync(fd)
finally:
    os.close(fd)
if os.stat(sys.argv[1]).st_size != size:
    print("size changed from", size, "to", os.stat(sys.argv[1]).st_size)
    sys.exit(1)
PY
}

# past_end VIEW: a positional write at the end, without O_APPEND: through the cache the kernel
# takes it, and the daemon refuses it when it is written back; one of pwrite and fsync must
# fail with EFBIG (the size the kernel then shows is the documented limit of -o writeback)
past_end()
{
	python3 - "$1" <<'PY'
import errno, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
size = os.fstat(fd).st_size
try:
    os.pwrite(fd, b"y" * 4096, size)
    os.fsync(fd)
except OSError as e:
    if e.errno == errno.EFBIG:
        sys.exit(0)
    raise
print("a write past the end and fsync both succeeded")
sys.exit(1)
PY
}

# kill_daemon: SIGKILL, as soon as the writer is done; then detach the dead mount
kill_daemon()
{
	kill -KILL "$QCOWFS_PID"
	wait "$QCOWFS_PID" 2>/dev/null
	fusermount3 -u -z -q "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null
}

mount_qcowfs "$SRC" "$MNT" -o writeback || bail "mount -o writeback failed"
check "the writes through the cache and the fsync return" fs writes
kill_daemon
check "after kill -9 right after fsync: no corruption" image_not_corrupt top.qcow2
setup qemu-img convert -U -O raw top.qcow2 "$WORK/got.raw"
check "after kill -9 right after fsync: every fsynced byte is in the image" \
	cmp "$WORK/got.raw" "$WORK/model.raw"

mount_qcowfs "$SRC" "$MNT" -o writeback || bail "mount -o writeback failed"
check "the view's size is the virtual size" expect_size "$MNT/top.raw" "$VSIZE"
check "an O_APPEND write is refused (EFBIG), the size unchanged" fs append "$MNT/top.raw"
check_not "a shell append is refused" fs sh -c "printf x >>'$MNT/top.raw'"
check "after the appends the view's size is still the virtual size" \
	expect_size "$MNT/top.raw" "$VSIZE"
check "after the appends the image's virtual size is unchanged" \
	test "$(virtual_size top.qcow2)" = "$VSIZE"
check "a pwrite past the end is refused by write(2) or fsync (EFBIG), never lost silently" \
	fs past_end "$MNT/top.raw"
check "after the write past the end the image's virtual size is unchanged" \
	test "$(virtual_size top.qcow2)" = "$VSIZE"
check "truncate grows the disk and the view shows it" fs truncate -s 8M "$MNT/top.raw"
check "the grown view's size is the image's new virtual size" \
	expect_size_as_qemu top.qcow2 "$MNT/top.raw"
check "the grown range reads zeros in the image" qio top.qcow2 "read -P 0 $VSIZE 64k"
# read into a file first: a reader in a process substitution may still hold the view open
# when the unmount below runs (EBUSY)
grown_reads_zeros()
{
	fs dd if="$MNT/top.raw" of="$WORK/grown.raw" bs=64k skip=$((VSIZE / 65536)) count=1 \
		status=none && cmp -n 65536 "$WORK/grown.raw" /dev/zero
}
check "and through the view (not the refused write)" grown_reads_zeros
check "unmount" umount_qcowfs "$MNT"
check "after the unmount: no corruption" image_not_corrupt top.qcow2

if [ "$(id -u)" != 0 ] || ! command -v setpriv >/dev/null || ! command -v useradd >/dev/null; then
	echo "# skipped the write-only user: needs root, setpriv and useradd"
	finish
fi
TUSER=qfswb$$
add_test_user "$TUSER"
TUID=$(id -u "$TUSER") && TGID=$(id -g "$TUSER") || bail "no uid for $TUSER"
chmod 0755 "$WORK" "$SRC"
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 wo.qcow2
chmod 0606 wo.qcow2
mount_qcowfs "$SRC" "$MNT" -o writeback,allow_other || bail "mount -o writeback,allow_other failed"
# wo_user: as the test user, 100 bytes in the middle of a page are written through a write-only
# descriptor and fsynced
wo_user()
{
	fs setpriv --reuid="$TUID" --regid="$TGID" --init-groups python3 - "$MNT/wo.raw" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
assert os.pwrite(fd, b"\x77" * 100, 5000) == 100
os.fsync(fd)
os.close(fd)
PY
}
check "another user: a partial page written through a write-only descriptor and fsynced" wo_user
check "unmount" umount_qcowfs "$MNT"
check "the partial page holds the write and the backing file's bytes around it" \
	qio wo.qcow2 "read -P 0x11 4096 904" "read -P 0x77 5000 100" "read -P 0x11 5100 3092"
check "no corruption" image_not_corrupt wo.qcow2
finish

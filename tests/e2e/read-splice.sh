#!/bin/bash
# read-splice.sh - reads of a flat view go through the zero-copy path (plain data spliced from
# the image files into the reply, zeros and decoded data from memory) and still read as qemu-img
# convert says, across every kind of piece a request can be cut into:
#   - a raw base layer (data, and a hole), shorter than the disk (zeros past its end);
#   - a middle qcow2 layer with subclusters (extended_l2): 4 KiB writes at odd subclusters, so
#     one cluster holds allocated, unallocated (the base shows) and zero subclusters, a zero
#     cluster over base data, and a compressed cluster;
#   - a top qcow2 layer: runs crossing cluster and layer boundaries, zeros over data below;
#   - an encrypted layer's view (decoded in memory) beside them.
# The whole view is compared with cmp (the kernel's read-ahead requests), then 400 reads
# at random offsets and lengths through O_DIRECT (each one a request cut exactly there), and
# the daemon's own read(2) byte count shows that plain data was not copied through it: after
# reading 16 MiB of plain data cold, the daemon's rchar (read(2)/pread(2) bytes, which splice
# does not count) grew by less than 4 MiB. The mount's read-ahead window is set before the first
# request is answered.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root "drops the page cache and reads the daemon's I/O counters"
S=$WORK/src
MNT=$WORK/mnt
mkdir -p "$S"
MiB=$((1 << 20))

# base.raw: 6 MiB of a pattern with a hole at 2-3 MiB; the disk is 40 MiB (past 6 MiB: zeros)
setup python3 -c "
import os
fd = os.open('$S/base.raw', os.O_WRONLY | os.O_CREAT, 0o644)
for m in range(6):
    if m != 2:
        os.pwrite(fd, bytes((m * 37 + i) % 251 + 1 for i in range(256)) * 4096, m << 20)
os.ftruncate(fd, 6 << 20)
"
setup qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=65536 -b base.raw -F raw \
	"$S/mid.qcow2" 40M
mid_cmds=(-c "write -q -P 0x11 $((64 * 1024 + 2048)) 2048" # one subcluster of cluster 1
	-c "write -q -P 0x12 $((64 * 1024 + 8192)) 4096"            # two more, not adjacent
	-c "write -q -z $((64 * 1024 + 16384)) 2048"                # a zero subcluster
	-c "write -q -z $((3 * MiB)) 65536"                         # a zero cluster over data
	-c "write -q -c -P 0x13 $((4 * MiB)) 65536"                 # a compressed cluster
	-c "write -q -P 0x14 $((5 * MiB - 3072)) 8192"              # across a cluster boundary
	-c "write -q -P 0x15 $((7 * MiB)) $((3 * MiB))")            # past the base's end
setup qemu-io -f qcow2 "${mid_cmds[@]}" "$S/mid.qcow2"
setup qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$S/top.qcow2" 40M
top_cmds=(-c "write -q -P 0x21 $((MiB - 4096)) 12288" # across the base's data and layers
	-c "write -q -z $((5 * MiB)) 65536"                   # zeros over the middle's data
	-c "write -q -P 0x22 $((8 * MiB + 100 * 1024)) 300000" # unaligned, inside the middle's run
	-c "write -q -P 0x23 $((24 * MiB)) $((16 * MiB))")    # a long run of plain data at the end
setup qemu-io -f qcow2 "${top_cmds[@]}" "$S/top.qcow2"
# an encrypted image with its key
printf 'secret-pass' >"$WORK/key"
chmod 600 "$WORK/key"
setup luks_create "$S/enc.qcow2" 4M "$WORK/key"
enc_args "$S/enc.qcow2" "$WORK/key"
setup qemu-io "${ENC_ARGS[@]}" -c "write -q -P 0x31 65536 $((2 * MiB))"
setup qemu-img convert -O raw "$S/top.qcow2" "$WORK/top.raw"
setup qemu-img convert "${ENC_ARGS[@]}" -O raw "$WORK/enc.raw"

# random_reads VIEW EXPECTED: 400 O_DIRECT reads at random offsets and lengths (1 byte to
# 1.5 MiB, many ending or starting inside a cluster) equal EXPECTED's bytes there
random_reads()
{
	python3 - "$1" "$2" <<'PY'
import os, random, sys
view, want = sys.argv[1:]
size = os.path.getsize(want)
v = os.open(view, os.O_RDONLY | os.O_DIRECT)
w = os.open(want, os.O_RDONLY)
rng = random.Random(7)
for i in range(400):
    n = rng.choice([1, 512, 2047, 4096, 65537, 300000, 1 << 20, 3 << 19])
    off = rng.randrange(size)
    got = os.pread(v, n, off)
    exp = os.pread(w, n, off)
    if got != exp:
        sys.exit("read %d: %d bytes at %d differ (got %d bytes)" % (i, n, off, len(got)))
PY
}

# open_read_close VIEW: 4 threads, each opening the view, reading at a random offset and
# closing it again 200 times (O_DIRECT: every read a request): a release that arrives while the
# read that was answered last is still finishing must wait for it (it once freed the chain
# under it), and every read must return the right bytes
open_read_close()
{
	python3 - "$1" "$2" <<'PY'
import os, random, sys, threading
view, want = sys.argv[1:]
size = os.path.getsize(want)
w = os.open(want, os.O_RDONLY)
bad = []
def worker(seed):
    rng = random.Random(seed)
    for _ in range(200):
        off = rng.randrange(size // 4096) * 4096
        fd = os.open(view, os.O_RDONLY | os.O_DIRECT)
        got = os.pread(fd, 65536, off)
        os.close(fd)
        if got != os.pread(w, 65536, off):
            bad.append(off)
ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
for t in ts: t.start()
for t in ts: t.join()
sys.exit("reads at %s differ" % bad[:5] if bad else 0)
PY
}

# window_now MNT KB: the read-ahead window of MNT's bdi is KB already (no waiting): it is set
# while INIT is answered, before any file of the mount can be opened (a file takes the window
# it finds at open, and keeps it)
window_now()
{
	local f
	f=/sys/class/bdi/$(mountpoint -d "$1")/read_ahead_kb
	echo "$f: $(cat "$f")"
	[ "$(cat "$f")" = "$2" ]
}

# rchar_of PID: bytes the process read through read(2)-like calls
rchar_of() { awk '/^rchar:/ { print $2 }' "/proc/$1/io"; }

# plain_not_copied VIEW: read the top's 16 MiB run of plain data (24-40 MiB) cold; the daemon's rchar grows by
# less than 4 MiB (the copy path preads every byte: 16 MiB or more)
plain_not_copied()
{
	local before after
	sync
	echo 3 >/proc/sys/vm/drop_caches
	before=$(rchar_of "$QCOWFS_PID")
	dd if="$1" of=/dev/null bs=1M skip=24 count=16 status=none || return 1
	after=$(rchar_of "$QCOWFS_PID")
	echo "the daemon's rchar grew by $((after - before)) bytes for 16 MiB served"
	[ $((after - before)) -lt $((4 * MiB)) ]
}

if check "qcowfs mounts the chain" \
	mount_qcowfs "$S" "$MNT" --key "enc.qcow2=$WORK/key"; then
	check "the mount's read-ahead window is 4 MiB as soon as the mount answers" \
		window_now "$MNT" 4096
	check "the whole view reads as qemu-img convert (read-ahead requests)" \
		fs cmp "$MNT/top.raw" "$WORK/top.raw"
	check "400 O_DIRECT reads at random offsets and lengths read as qemu-img convert" \
		fs random_reads "$MNT/top.raw" "$WORK/top.raw"
	check "the encrypted view (decoded in memory) reads as qemu-img convert" \
		fs cmp "$MNT/enc.raw" "$WORK/enc.raw"
	check "random O_DIRECT reads of the encrypted view read as qemu-img convert" \
		fs random_reads "$MNT/enc.raw" "$WORK/enc.raw"
	check "plain data is spliced, not copied through the daemon" plain_not_copied "$MNT/top.raw"
	check "800 reads by threads that open, read and close read as qemu-img convert" \
		fs open_read_close "$MNT/top.raw" "$WORK/top.raw"
	check "the daemon is still running" daemon_alive "$MNT"
	check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
fi

# A damaged lower layer fails only the reads that reach it: the first read of a window fills
# the owner map layer by layer, and a layer it cannot map must not fail the reads that a layer
# above answers (as a walk from the top never reached it).
D=$WORK/damaged
mkdir -p "$D"
setup qemu-img create -q -f qcow2 "$D/base.qcow2" 4M
setup qemu-io -f qcow2 -c "write -q -P 0x41 0 128k" "$D/base.qcow2"
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$D/top.qcow2" 4M
setup qemu-io -f qcow2 -c "write -q -P 0x42 0 64k" "$D/top.qcow2"
# base's L2 entry of cluster 1: an offset inside a cluster (QEMU calls that corruption)
setup python3 - "$D/base.qcow2" <<'PY'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(40)
    l1 = struct.unpack(">Q", f.read(8))[0]
    f.seek(l1)
    l2 = struct.unpack(">Q", f.read(8))[0] & 0x00fffffffffffe00
    f.seek(l2 + 8)
    entry = struct.unpack(">Q", f.read(8))[0]
    f.seek(l2 + 8)
    f.write(struct.pack(">Q", entry | 0x200))
PY
# the top's cluster 0 reads as the top wrote it; cluster 1 fails (not zeros, not a lie)
top_cluster_reads()
{
	python3 -c "
import os, sys
fd = os.open('$1', os.O_RDONLY | os.O_DIRECT)
sys.exit(0 if os.pread(fd, 65536, 0) == b'\x42' * 65536 else 'cluster 0 differs')"
}
if check "qcowfs mounts a chain with a damaged base" mount_qcowfs "$D" "$MNT"; then
	check "the top's cluster reads although the base's table is damaged" \
		fs top_cluster_reads "$MNT/top.raw"
	check_not "the damaged cluster of the base does not read" \
		fs dd if="$MNT/top.raw" of=/dev/null bs=64k skip=1 count=1 iflag=direct status=none
	check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
fi
finish

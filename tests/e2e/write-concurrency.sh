#!/bin/bash
# write-concurrency.sh - many threads writing and reading flat views at once: first
# writes of the same clusters racing each other (the allocation must happen once, and no
# write may be lost), writes into two views of one mount at once, and a reader racing a writer
# of the same range, which must see the old or the new data, never a mix of anything else.
# Afterwards qemu-img check is clean and qemu-img convert equals the model the writers kept.
# The writers run again through a mount with -o writeback, whose write-back sends the daemon
# many requests at once (first writes into different clusters then run in parallel).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC=$WORK/src
MNT=$WORK/mnt
mkdir -p "$SRC"
cd "$SRC" || exit 1

SIZE=$((16 << 20))
setup qemu-img create -q -f qcow2 base.qcow2 $SIZE
setup qio base.qcow2 "write -P 0x11 0 $SIZE"
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 $SIZE
setup qemu-img create -q -f qcow2 -o cluster_size=4096 other.qcow2 $SIZE
setup qemu-img create -q -f qcow2 -o extended_l2=on -b base.qcow2 -F qcow2 ext.qcow2 $SIZE
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 race.qcow2 $SIZE
cp base.qcow2 "$WORK/base-before.qcow2"

mount_qcowfs "$SRC" "$MNT" || bail "mount failed"

# race.py MODE FILE...: the writers; each thread owns the bytes it writes (interleaved 512-byte
# stripes across shared clusters), so the expected content is known whatever the order.
cat >"$WORK/race.py" <<'EOF'
import mmap, os, random, sys, threading

mode, out = sys.argv[1], sys.argv[2]
files = sys.argv[3:]
SIZE = 16 << 20
errors = []

def stripes(path, model, tid, nthreads, seed):
    # thread tid writes the 512-byte stripes s with s % nthreads == tid of random clusters:
    # every cluster is first-touched by several threads at once
    fd = os.open(path, os.O_RDWR)
    rnd = random.Random(seed)
    try:
        for _ in range(300):
            c = rnd.randrange(0, SIZE // 65536)
            for s in range(tid, 128, nthreads):
                off = c * 65536 + s * 512
                data = bytes([(tid * 37 + c) & 0xff]) * 512
                os.pwrite(fd, data, off)
                model[off:off + 512] = data
        os.fsync(fd)
    except OSError as e:
        errors.append("%s: %s" % (path, e))
    finally:
        os.close(fd)

def run_writers(path, nthreads, seed):
    model = bytearray(SIZE)
    with open(path, "rb") as f:
        model[:] = f.read()
    ts = [threading.Thread(target=stripes, args=(path, model, t, nthreads, seed + t))
          for t in range(nthreads)]
    for t in ts:
        t.start()
    return ts, model

if mode == "writers":
    jobs = [run_writers(p, 4, 100 * i) for i, p in enumerate(files)]
    for ts, _ in jobs:
        for t in ts:
            t.join()
    for i, (_, model) in enumerate(jobs):
        with open("%s.%d" % (out, i), "wb") as f:
            f.write(model)
        with open(files[i], "rb") as f:
            if f.read() != bytes(model):
                errors.append("%s: reads differ from what the threads wrote" % files[i])
elif mode == "reader-vs-writer":
    # O_DIRECT both ways: the daemon, not the page cache, answers every read. The range
    # starts half way into a cluster nobody wrote yet, so the first writes copy the rest of
    # two clusters from the backing file (0x11) while the reader reads. Every byte read must
    # be the backing data or one of the patterns written, nothing else (zeros of a cluster
    # allocated but not yet filled, say). Whole sectors are not asked for: the host file
    # system's own reads and writes of one page may interleave.
    path = files[0]
    n, at = 64 * 1024, (5 << 20) + 32 * 1024
    pats = (b"\x11" * 512, b"\xaa" * 512, b"\x55" * 512)
    wfd = os.open(path, os.O_RDWR | os.O_DIRECT)
    rfd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    wbuf, rbuf = mmap.mmap(-1, n), mmap.mmap(-1, n)
    stop = threading.Event()
    reads = [0]

    def reader():
        while not stop.is_set():
            os.preadv(rfd, [rbuf], at)
            got = bytes(rbuf)
            bad = got.translate(None, b"\x11\xaa\x55")
            if bad:
                errors.append("a read racing a write returned bytes of neither the old nor "
                              "the new data: %r" % bad[:16])
                return
            reads[0] += 1

    t = threading.Thread(target=reader)
    t.start()
    for i in range(400):
        wbuf[:] = (pats[1] if i % 2 else pats[2]) * (n // 512)
        os.pwritev(wfd, [wbuf], at)
    stop.set()
    t.join()
    os.fsync(wfd)
    if reads[0] == 0:
        errors.append("the reader read nothing")
    with open(out, "wb") as f:
        f.write(bytes(wbuf))
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
EOF

check "4 threads each on top.raw, other.raw and ext.raw: first writes of shared clusters race" \
	fs python3 "$WORK/race.py" writers "$WORK/model" "$MNT/top.raw" "$MNT/other.raw" "$MNT/ext.raw"
check "a reader racing a writer of the same range sees the old or the new data" \
	fs python3 "$WORK/race.py" reader-vs-writer "$WORK/last" "$MNT/race.raw"
check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"

# the reader-vs-writer run ended with its last buffer at 5 MiB + 32 KiB of race.raw
setup qemu-img convert -O raw base.qcow2 "$WORK/model.3"
setup python3 - "$WORK/model.3" "$WORK/last" <<'EOF'
import sys
model, last = sys.argv[1], sys.argv[2]
data = open(last, "rb").read()
with open(model, "r+b") as f:
    f.seek((5 << 20) + 32 * 1024)
    f.write(data)
EOF
i=0
for img in top other ext race; do
	check "$img.qcow2: qemu-img check finds no errors and no leaks" qemu-img check "$img.qcow2"
	check "$img.qcow2: qemu-img convert equals what the threads wrote" \
		bash -c "qemu-img convert -O raw '$img.qcow2' '$WORK/got.raw' && cmp '$WORK/got.raw' '$WORK/model.$i'"
	i=$((i + 1))
done
check "the backing file is unchanged" cmp base.qcow2 "$WORK/base-before.qcow2"

# The same writers through the kernel's writeback cache (-o writeback): the kernel then writes
# the pages back with many requests at once, so first writes of different clusters of one image
# run in parallel in the daemon (the in-flight table of the engine), and first writes of the
# same cluster wait for each other.
SRC2=$WORK/src2
MNT2=$WORK/mnt2
mkdir -p "$SRC2"
cp "$WORK/base-before.qcow2" "$SRC2/base.qcow2"
(cd "$SRC2" &&
	qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 $SIZE &&
	qemu-img create -q -f qcow2 -o cluster_size=4096 other.qcow2 $SIZE &&
	qemu-img create -q -f qcow2 -o extended_l2=on -b base.qcow2 -F qcow2 ext.qcow2 $SIZE) ||
	bail "qemu-img create in $SRC2 failed"
mount_qcowfs "$SRC2" "$MNT2" -o writeback || bail "mount with -o writeback failed"
check "writeback: 4 threads each on top.raw, other.raw and ext.raw race their first writes" \
	fs python3 "$WORK/race.py" writers "$WORK/wbmodel" "$MNT2/top.raw" "$MNT2/other.raw" \
	"$MNT2/ext.raw"
check "writeback: the daemon unmounts and exits cleanly" umount_qcowfs "$MNT2"
check "writeback: no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
i=0
for img in top other ext; do
	check "writeback: $img.qcow2: qemu-img check finds no errors and no leaks" \
		qemu-img check "$SRC2/$img.qcow2"
	check "writeback: $img.qcow2: qemu-img convert equals what the threads wrote" \
		bash -c "qemu-img convert -O raw '$SRC2/$img.qcow2' '$WORK/got.raw' && cmp '$WORK/got.raw' '$WORK/wbmodel.$i'"
	i=$((i + 1))
done
finish

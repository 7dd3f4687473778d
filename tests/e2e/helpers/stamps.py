"""A writer whose every write says which it was, and the check of a copy of the view it wrote
(a snapshot view, the view after a crash) against its log: the copy must be exactly what the
first K writes made, for one K, within the bounds the test saw.

Each write is one 4 KiB block, aligned, inside one cluster (a write the daemon applies at
once): 8 bytes of its sequence number (1, 2, ...), then bytes derived from it. Blocks never
written read as zeros (sequence 0)."""
import os
import random
import struct
import sys

BLOCK = 4096


def _block(seq):
    head = struct.pack(">Q", seq)
    body = (struct.pack(">Q", seq * 0x9E3779B97F4A7C15 & (2**64 - 1)) * (BLOCK // 8))[8:]
    return head + body


def cmd_stamp_writer(view, log, stop, seed, blocks, fsync_each="0"):
    """Write blocks of VIEW (BLOCKS of them, chosen from SEED) until the file STOP exists; after
    each write (and its fsync when FSYNC_EACH is 1) append "SEQ BLOCK" to LOG (flushed).
    Exit 0 when stopped, 1 printing "error SEQ: MESSAGE" at the first failed write."""
    rnd = random.Random(int(seed))
    n = int(blocks)
    fd = os.open(view, os.O_RDWR)
    seq = 0
    with open(log, "w", buffering=1) as lg:
        while not os.path.exists(stop):
            seq += 1
            b = rnd.randrange(n)
            try:
                os.pwrite(fd, _block(seq), b * BLOCK)
                if fsync_each == "1":
                    os.fsync(fd)
            except OSError as e:
                print("error %d: %s" % (seq, e))
                sys.exit(1)
            lg.write("%d %d\n" % (seq, b))
    os.close(fd)


def _log(log):
    out = []
    with open(log) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                out.append((int(parts[0]), int(parts[1])))
    return out


def cmd_stamp_check(copy, log, lo, hi, blocks):
    """COPY (a file or view of the disk) must be what the first K writes of LOG made, for a K
    with LO <= K <= HI (HI: "any" for no bound). Prints "K=..." or why not, exit 1."""
    n = int(blocks)
    writes = _log(log)
    where = {s: b for s, b in writes}
    seen = []
    with open(copy, "rb") as f:
        for i in range(n):
            data = f.read(BLOCK)
            seq = struct.unpack(">Q", data[:8])[0]
            if data != (_block(seq) if seq else bytes(BLOCK)):
                sys.exit("block %d holds neither zeros nor a whole write (seq %d?)" % (i, seq))
            if seq and where.get(seq, i) != i:
                sys.exit("block %d holds write %d, which went to block %d" % (i, seq, where[seq]))
            seen.append(seq)
    k = max(seen)
    # the first k writes (k may be one past the log: a write done but not yet logged)
    last = [0] * n
    for s, b in writes:
        if s <= k:
            last[b] = s
    if k == len(writes) + 1:  # done, not logged yet: the block where it is
        last[seen.index(k)] = k
    elif k > len(writes):
        sys.exit("K=%d: more writes than the log holds (%d)" % (k, len(writes)))
    for i in range(n):
        if seen[i] != last[i]:
            sys.exit("block %d holds write %d, the first %d writes leave write %d there"
                     % (i, seen[i], k, last[i]))
    if k < int(lo) or (hi != "any" and k > int(hi)):
        sys.exit("K=%d outside [%s, %s]" % (k, lo, hi))
    print("K=%d" % k)


def cmd_stamp_durable(copy, log, blocks):
    """After a crash: every write LOG holds (each was fsynced before it was logged) is in
    COPY, unless a later write of the same block is (one that had not been logged). Prints the
    number of logged writes, or why not and exit 1."""
    n = int(blocks)
    writes = _log(log)
    last = [0] * n
    for s, b in writes:
        last[b] = s
    with open(copy, "rb") as f:
        for i in range(n):
            data = f.read(BLOCK)
            seq = struct.unpack(">Q", data[:8])[0]
            if data != (_block(seq) if seq else bytes(BLOCK)):
                sys.exit("block %d holds neither zeros nor a whole write (seq %d?)" % (i, seq))
            if seq != last[i] and not (seq > len(writes)):
                sys.exit("block %d holds write %d, but write %d was fsynced there last"
                         % (i, seq, last[i]))
    print("%d fsynced writes present" % len(writes))

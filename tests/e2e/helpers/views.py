"""What the tests do to flat views through the kernel: lseek(SEEK_DATA/SEEK_HOLE) walks, open(2)
results, writes, discards and syncs applied to a view and to the model of its bytes, fill and
crash writers, reads at odd offsets with O_DIRECT."""
import ctypes
import errno
import json
import os
import random
import sys

from .common import errname, merge, num


def cmd_seek(path):
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    ext = []
    off = 0
    while off < size:
        try:
            data = os.lseek(fd, off, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                break
            raise
        if data < off or data > size:
            sys.exit("SEEK_DATA from %d returned %d (size %d)" % (off, data, size))
        if data == size:
            break
        hole = os.lseek(fd, data, os.SEEK_HOLE)
        if hole <= data or hole > size:
            sys.exit("SEEK_HOLE from %d returned %d (size %d)" % (data, hole, size))
        ext.append((data, hole))
        off = hole
    # at the end of the file both must fail with ENXIO, as on any Linux file system
    for whence, name in ((os.SEEK_DATA, "SEEK_DATA"), (os.SEEK_HOLE, "SEEK_HOLE")):
        try:
            r = os.lseek(fd, size, whence)
            sys.exit("%s at end of file (%d) returned %d, want ENXIO" % (name, size, r))
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
    os.close(fd)
    for s, e in merge(ext):
        print(s, e)


MODES = {
    "r": os.O_RDONLY,
    "w": os.O_WRONLY,
    "rw": os.O_RDWR,
    "wtrunc": os.O_WRONLY | os.O_TRUNC,
    "append": os.O_WRONLY | os.O_APPEND,
    "creat": os.O_WRONLY | os.O_CREAT,
}


def cmd_open(path, *modes):
    for mode in modes:
        try:
            fd = os.open(path, MODES[mode], 0o644)
        except OSError as e:
            print(errno.errorcode.get(e.errno, str(e.errno)))
            continue
        os.close(fd)
        print("ok")


FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
_libc = None


def fallocate(fd, mode, off, length):
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if _libc.fallocate(fd, mode, off, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def data(length, seed):
    """LEN pseudo-random bytes, the same for the same SEED (never all zero in practice)."""
    return random.Random(seed).randbytes(length)


def parse_op(text):
    parts = text.split(":")
    kind = parts[0]
    args = [num(x) for x in parts[1:]]
    want = {"w": 3, "p": 2, "z": 2, "a": 2, "t": 1, "f": 0, "d": 0}
    if kind not in want or len(args) != want[kind]:
        sys.exit("bad operation: " + text)
    return kind, args


def pwrite_all(fd, buf, off):
    """pwrite until done; returns the bytes written (less than asked on a short write that
    makes no progress)."""
    done = 0
    while done < len(buf):
        n = os.pwrite(fd, buf[done:], off + done)
        if n <= 0:
            break
        done += n
    return done


def do_op(fd, kind, args, model):
    """Apply one operation; returns the bytes a write wrote (None for other operations)."""
    if kind == "w":
        off, length, seed = args
        return pwrite_all(fd, data(length, seed), off)
    if kind in ("p", "z"):
        off, length = args
        if model:
            size = os.fstat(fd).st_size
            end = min(off + length, size)
            if end > off:
                pwrite_all(fd, bytes(end - off), off)
        else:
            mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE if kind == "p" else FALLOC_FL_ZERO_RANGE
            fallocate(fd, mode, off, length)
        return None
    if kind == "a":
        if not model:
            fallocate(fd, 0, args[0], args[1])
        return None
    if kind == "t":
        os.ftruncate(fd, args[0])
        return None
    if not model:
        (os.fsync if kind == "f" else os.fdatasync)(fd)
    return None


def cmd_apply(*argv):
    model = False
    if argv and argv[0] == "--model":
        model = True
        argv = argv[1:]
    if not argv:
        sys.exit("apply: no file")
    path, ops = argv[0], argv[1:]
    parsed = [(text,) + parse_op(text) for text in ops]
    fd = os.open(path, os.O_RDWR)
    try:
        for text, kind, args in parsed:
            try:
                n = do_op(fd, kind, args, model)
            except OSError as e:
                sys.exit("%s on %s: %s %s" % (text, path, errname(e), e.strerror))
            if n is not None and n != args[1]:
                sys.exit("%s on %s: short write of %d bytes" % (text, path, n))
    finally:
        os.close(fd)


def cmd_apply_both(view, model, *ops):
    """apply VIEW OP... then apply --model MODEL OP..., in one process."""
    cmd_apply(view, *ops)
    cmd_apply("--model", model, *ops)


def cmd_try(path, text):
    kind, args = parse_op(text)
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as e:
        print("open:" + errname(e))
        return
    try:
        n = do_op(fd, kind, args, False)
        if n is not None and n != args[1]:
            print("short %d" % n)
        else:
            print("ok")
    except OSError as e:
        print(errname(e))
    finally:
        os.close(fd)


def chunk_bytes(seed, k, chunk):
    """Chunk K of the stream `fill` writes: made from (SEED, K) alone."""
    return data(chunk, seed * 1000003 + k)


def cmd_fill(path, chunk, seed, limit):
    chunk, seed, limit = num(chunk), int(seed), num(limit)
    durable = 0
    err = "none"
    fd = os.open(path, os.O_RDWR)
    try:
        off = 0
        while off < limit:
            buf = chunk_bytes(seed, off // chunk, chunk)[:limit - off]
            try:
                n = pwrite_all(fd, buf, off)
                if n != len(buf):
                    err = "short"
                    break
                os.fsync(fd)
            except OSError as e:
                err = errname(e)
                break
            off += len(buf)
            durable = off
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    print("durable", durable)
    print("error", err)


def cmd_pattern(path, length, chunk, seed):
    length, chunk, seed = num(length), num(chunk), int(seed)
    with open(path, "r+b") as f:
        off = 0
        while off < length:
            f.seek(off)
            f.write(chunk_bytes(seed, off // chunk, chunk)[:length - off])
            off += chunk


def random_op(rng, size):
    r = rng.random()
    if r < 0.45:
        length = rng.randint(1, 6000)  # small and unaligned
    elif r < 0.75:
        length = rng.choice((512, 4096, 65536, 3 * 4096))
    else:
        length = rng.randint(1, 150000)
    length = min(length, size)
    off = rng.randrange(0, size - length + 1)
    if rng.random() < 0.5:  # often aligned, as a file system in the guest writes
        off &= ~4095
    kind = rng.choices(("w", "p", "z"), (85, 10, 5))[0]
    if kind == "w":
        return ("w", off, length, rng.getrandbits(31))
    return (kind, off, length)


def cmd_crash_writer(view, model, pending_path, seed, limit_s="60"):
    import time
    rng = random.Random(int(seed))
    deadline = time.monotonic() + float(limit_s)
    pending = []
    nops = nsync = 0
    err = "none"
    with open(pending_path, "w") as f:
        json.dump(pending, f)
    try:
        fd = os.open(view, os.O_RDWR)
        size = os.fstat(fd).st_size
    except OSError as e:
        print("ops 0 fsyncs 0 pending 0 error %s (opening the view)" % errname(e))
        return
    mfd = os.open(model, os.O_RDWR)
    with open(pending_path + ".ready", "w"):
        pass
    try:
        while time.monotonic() < deadline:
            op = random_op(rng, size)
            pending.append(op)
            try:
                n = do_op(fd, op[0], list(op[1:]), False)
                if n is not None and n != op[2]:
                    err = "short write"
                    break
                nops += 1
                if rng.random() < 0.25:
                    (os.fsync if rng.random() < 0.7 else os.fdatasync)(fd)
                    for o in pending:
                        do_op(mfd, o[0], list(o[1:]), True)
                    pending = []
                    nsync += 1
            except OSError as e:
                err = errname(e)
                break
    finally:
        with open(pending_path, "w") as f:
            json.dump(pending, f)
        os.close(mfd)
        try:
            os.close(fd)
        except OSError:
            pass
    print("ops %d fsyncs %d pending %d error %s" % (nops, nsync, len(pending), err))


def cmd_crash_verify(got_path, model_path, pending_path):
    with open(got_path, "rb") as f:
        got = f.read()
    with open(model_path, "rb") as f:
        model = f.read()
    with open(pending_path) as f:
        pending = json.load(f)
    if len(got) != len(model):
        sys.exit("size %d, want %d" % (len(got), len(model)))
    ops = []
    for o in pending:
        if o[0] == "w":
            ops.append((o[1], o[1] + o[2], data(o[2], o[3])))
        else:
            ops.append((o[1], o[1] + o[2], None))
    bad = []
    block = 4096
    for b in range(0, len(got), block):
        if got[b:b + block] == model[b:b + block]:
            continue
        for p in range(b, min(b + block, len(got))):
            g = got[p]
            if g == model[p]:
                continue
            ok = False
            for s, e, buf in ops:
                if s <= p < e and g == (0 if buf is None else buf[p - s]):
                    ok = True
                    break
            if not ok:
                bad.append(p)
                if len(bad) >= 10:
                    break
        if len(bad) >= 10:
            break
    if bad:
        for p in bad:
            print("byte %d: 0x%02x, want 0x%02x (what was fsynced) or what a pending write put"
                  " there" % (p, got[p], model[p]))
        print("pending operations: %s" % json.dumps(pending))
        sys.exit(1)


def cmd_odd_reads(flat, expected):
    """Read FLAT with O_DIRECT at offsets and lengths that start and end inside clusters and
    compare each read with the same bytes of EXPECTED (a raw file). The buffer is page-aligned
    (mmap); offset and length are not, as FUSE passes them through to the daemon."""
    import mmap
    offs = [1, 511, 4095, 4096, 65535, 65537, 131071, 1048575, 2097151, 3145727]
    lens = [1, 4097, 70000]
    fd = os.open(flat, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 1 << 20)
    bad = 0
    with open(expected, "rb") as want:
        for off in offs:
            for length in lens:
                want.seek(off)
                exp = want.read(length)
                view = memoryview(buf)[:length]
                got = os.preadv(fd, [view], off)
                if bytes(view[:got]) != exp:
                    print("bytes %d+%d differ (read %d)" % (off, length, got))
                    bad += 1
    os.close(fd)
    sys.exit(1 if bad else 0)

#!/usr/bin/env python3
"""Small helpers for the qcowfs end-to-end tests (sourced through lib.sh).

Subcommands:
  seek FILE                 data extents of FILE found with lseek(SEEK_DATA/SEEK_HOLE),
                            one "START END" line each (END exclusive), adjacent ones merged
  qmap JSON                 the same, from `qemu-img map --output=json` (entries with
                            "data": true are data; zero clusters and holes are not)
  open FILE MODE...         open(2) FILE with each MODE (r, w, rw, wtrunc, append, creat) in
                            turn and print "ok" or the errno name (EROFS, EACCES, ...), a line
                            each
  drop-backing-fmt IMAGE    remove the backing-format header extension of a qcow2 image, the
                            way images made by old QEMU versions look (no backing_fmt)
  info-compare OURS QEMU    compare `qcowctl info --json` with `qemu-img info --output=json`
  chain-compare OURS QEMU   the same for `--chain` / `--backing-chain` arrays
  json-get FILE EXPR        print a value from a JSON file (EXPR: dotted path, [n] indices)
  sfdisk-part JSON N        "START SIZE" in bytes of partition N (1-based) of `sfdisk -J` output

Writing (the same operation applied to a flat view and to the test's model of its bytes):
  apply [--model] FILE OP...
                            open FILE read-write and apply each OP in order; on the first
                            failure print "OP: ERRNO message" and exit 1. OPs (numbers in
                            bytes, with an optional k/M/G suffix):
                              w:OFF:LEN:SEED  pwrite LEN pseudo-random bytes made from SEED
                              p:OFF:LEN       fallocate(PUNCH_HOLE|KEEP_SIZE)
                              z:OFF:LEN       fallocate(ZERO_RANGE)
                              a:OFF:LEN       fallocate(0), preallocation
                              t:SIZE          ftruncate
                              f / d           fsync / fdatasync
                            --model applies them to a plain file as their effect on the
                            bytes: p and z write zeros, a, f and d do nothing
  apply-both VIEW MODEL OP...
                            apply VIEW OP..., then apply --model MODEL OP...
  try FILE OP               apply one OP and print "ok", "short N" (a write that wrote only
                            N bytes), the errno name, or "open:ERRNO" when FILE does not open
  clear-autoclear IMAGE     clear bit 0 (bitmaps) of a v3 image's autoclear features, as a
                            program that writes the image without updating its bitmaps does
  qcow2-fields IMAGE        header facts, one "key value" line each: version, incompat,
                            autoclear (hex) and exts (the header extension magics, hex)
  fill FILE CHUNK SEED LIMIT
                            write chunks of CHUNK pseudo-random bytes from offset 0, fsync
                            after each, until an error or LIMIT bytes; print "durable N" (the
                            bytes written and fsynced) and "error ERRNO" or "error none"
  pattern FILE LEN CHUNK SEED
                            write to FILE the first LEN bytes `fill` writes with CHUNK, SEED
  crash-writer VIEW MODEL PENDING SEED [SECONDS]
                            random writes and discards on VIEW with an fsync every few
                            operations, until one fails (PENDING.ready tells it has opened
                            VIEW and starts); after each successful fsync the same
                            operations go to MODEL (a copy of what VIEW must hold). On the way
                            out (at the failure, or after SECONDS, default 60), the operations
                            since the last successful fsync are saved to PENDING (JSON): they
                            may or may not have reached the image
  qcow2-break IMAGE:KIND[:GUEST_OFF]...
                            damage qcow2 images on purpose, the L2 entry of guest offset
                            GUEST_OFF (default 0) or its data cluster: leak (raise the refcount
                            of the refcount table's first cluster by one), refcount (lower the
                            data cluster's refcount by one), header (point the entry into the
                            header: at offset 0x200, which a cluster-aligned entry cannot be),
                            eof (point it 4 clusters past the end of the file), metadata (point
                            it at the refcount table), copied (clear its COPIED flag), corrupt
                            (set the corrupt bit), l1 (point it, with COPIED, at the active L1
                            table), free-l1 / free-l2 (set the refcount of the active L1
                            table's first cluster / of the entry's L2 table to 0), snapeof (the entry in the first snapshot's
                            own L2 table, 4 clusters past the end of the file); and entry N
                            (the third field) of the refcount table: rt-l1, rt-l2, rt-refblock
                            (pointed at the L1 table, the L2 table of guest offset 0, the block
                            of entry 1), rt-header (0x200), rt-reserved (bit 8 set), rt-high
                            (bit 63 set), rt-eof (4 clusters past the end of the file);
                            more entries with COPIED into metadata: at-l2 (its own L2 table),
                            at-refblock (the first refcount block), at-snaptable (the snapshot
                            table), at-snapl1 (the first snapshot's L1 table), at-bmdir (the
                            bitmap directory); share (GUEST:OTHER: the entry of guest offset
                            OTHER becomes a copy of this one, both with COPIED), free-data (refcount
                            0 on the data cluster, COPIED kept), l1-refblock (L1 entry 0 points
                            at the first refcount block), reftable-at-l1 (the header places the
                            refcount table on the L1 table), zip-l1 (a compressed descriptor
                            whose bytes start in the cluster before the L1 table and run into
                            it), dirty (set the dirty bit of a lazy-refcounts image)
  check-compare OURS QEMU [OURS QEMU...]
                            compare `qcowctl check --json` outputs with `qemu-img check
                            --output=json` ones field by field (the same fields, the same
                            values): a line "same OURS" or "differs OURS: ..." for each pair
  crash-verify GOT MODEL PENDING
                            GOT (the image's bytes after a crash) equals MODEL, except that
                            each byte in a PENDING range may instead hold what one of the
                            pending operations wrote there

qcowctl commit, pull and rebase (ctl-jobs.sh, ctl-kill.sh):
  depth0 JSON               the extents `qemu-img map --output=json` says the top image itself
                            provides (depth 0, "present"), one "START END" line each, merged
  plan JSON                 check that JSON is a plan as `qcowctl ... --json` prints it
                            ({"dry-run": bool, "steps": [...]}, each step with "step" and
                            "image", "bytes" for copy and grow, "backing" for repoint) and
                            print "dry-run true|false", then a line per step: "STEP NAME
                            [BYTES|BACKING]" with NAME the image's file name
  check-counts JSON         "CHECK-ERRORS CORRUPTIONS LEAKS" from `qemu-img check
                            --output=json`
"""
import ctypes
import errno
import json
import os
import random
import struct
import sys


def merge(extents):
    out = []
    for s, e in extents:
        if e <= s:
            continue
        if out and out[-1][1] == s:
            out[-1][1] = e
        else:
            out.append([s, e])
    return out


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


def cmd_qmap(path):
    with open(path) as f:
        entries = json.load(f)
    ext = [(x["start"], x["start"] + x["length"]) for x in entries if x.get("data")]
    for s, e in merge(sorted(ext)):
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


def cmd_drop_backing_fmt(path):
    with open(path, "r+b") as f:
        h = bytearray(f.read(65536))
        if h[:4] != b"QFI\xfb":
            sys.exit("not a qcow2 image: " + path)
        version = struct.unpack(">I", h[4:8])[0]
        hdr_len = 72 if version == 2 else struct.unpack(">I", h[100:104])[0]
        backing_off = struct.unpack(">Q", h[8:16])[0]
        off = hdr_len
        exts = []
        while True:
            magic, length = struct.unpack(">II", h[off:off + 8])
            if magic == 0:
                break
            exts.append((magic, bytes(h[off + 8:off + 8 + length])))
            off += 8 + ((length + 7) & ~7)
        if not any(m == 0xE2792ACA for m, _ in exts):
            sys.exit("no backing format extension in " + path)
        area = bytearray()
        for magic, data in exts:
            if magic == 0xE2792ACA:
                continue
            area += struct.pack(">II", magic, len(data)) + data
            area += b"\0" * (((len(data) + 7) & ~7) - len(data))
        area += b"\0" * 8
        if backing_off == 0 or hdr_len + len(area) > backing_off:
            sys.exit("unexpected header layout in " + path)
        h[hdr_len:backing_off] = area + b"\0" * (backing_off - hdr_len - len(area))
        f.seek(0)
        f.write(h[:backing_off])


def load(path):
    with open(path) as f:
        return json.load(f)


SNAP_KEYS = ("id", "name", "vm-state-size", "date-sec", "date-nsec", "vm-clock-sec",
             "vm-clock-nsec", "icount")
FS_KEYS = ("compat", "refcount-bits", "lazy-refcounts", "corrupt", "extended-l2",
           "compression-type")


def compare_one(ours, qemu, where):
    """Facts qemu-img prints that qcowctl must print under the same name and with the same
    value: the brief's list (virtual-size, cluster-size, backing-filename, snapshot names),
    the format, the dirty flag, each snapshot's fields and the qcow2 format-specific data."""
    bad = []

    def same(key, a, b):
        if a != b:
            bad.append("%s%s: qcowctl %r, qemu-img %r" % (where, key, a, b))

    for key in ("virtual-size", "cluster-size", "format", "backing-filename",
                "backing-filename-format", "dirty-flag"):
        if key in qemu or key in ("virtual-size", "format", "backing-filename"):
            same(key, ours.get(key), qemu.get(key))
    qs = qemu.get("snapshots") or []
    os_ = ours.get("snapshots") or []
    same("snapshots[].name", [x.get("name") for x in os_], [x.get("name") for x in qs])
    if len(qs) == len(os_):
        for i, (o, q) in enumerate(zip(os_, qs)):
            for key in SNAP_KEYS:
                if key in q:
                    same("snapshots[%d].%s" % (i, key), o.get(key), q.get(key))
    qfs = qemu.get("format-specific") or {}
    ofs = ours.get("format-specific") or {}
    if qfs:
        same("format-specific.type", ofs.get("type"), qfs.get("type"))
        for key, val in (qfs.get("data") or {}).items():
            if key in FS_KEYS:
                same("format-specific.data." + key, (ofs.get("data") or {}).get(key), val)
    return bad


def cmd_info_compare(ours_path, qemu_path):
    ours, qemu = load(ours_path), load(qemu_path)
    if not isinstance(ours, dict):
        sys.exit("qcowctl info --json did not print a JSON object")
    bad = compare_one(ours, qemu, "")
    for b in bad:
        print(b)
    sys.exit(1 if bad else 0)


def cmd_chain_compare(ours_path, qemu_path):
    ours, qemu = load(ours_path), load(qemu_path)
    if not isinstance(ours, list):
        sys.exit("qcowctl info --chain --json did not print a JSON array")
    bad = []
    if len(ours) != len(qemu):
        bad.append("chain length: qcowctl %d, qemu-img %d" % (len(ours), len(qemu)))
    for i, (o, q) in enumerate(zip(ours, qemu)):
        bad += compare_one(o, q, "[%d]." % i)
    for b in bad:
        print(b)
    sys.exit(1 if bad else 0)


def cmd_json_get(path, expr):
    v = load(path)
    for part in expr.replace("]", "").replace("[", ".").split("."):
        if part == "":
            continue
        v = v[int(part)] if isinstance(v, list) else v[part]
    print(v if not isinstance(v, (dict, list)) else json.dumps(v))


def cmd_sfdisk_part(path, n):
    t = load(path)["partitiontable"]
    sector = t.get("sectorsize", 512)
    p = t["partitions"][int(n) - 1]
    print(p["start"] * sector, p["size"] * sector)


# ---- writing ----

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


def num(text):
    mult = {"k": 1 << 10, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text and text[-1] in mult:
        return int(text[:-1], 0) * mult[text[-1]]
    return int(text, 0)


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


def errname(e):
    return errno.errorcode.get(e.errno, str(e.errno))


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


def cmd_qcow2_fields(path):
    with open(path, "rb") as f:
        h = f.read(65536)
    if h[:4] != b"QFI\xfb":
        sys.exit("not a qcow2 image: " + path)
    version = struct.unpack(">I", h[4:8])[0]
    print("version", version)
    if version < 3:
        print("incompat 0x0")
        print("autoclear 0x0")
        hdr_len = 72
    else:
        print("incompat 0x%x" % struct.unpack(">Q", h[72:80])[0])
        print("autoclear 0x%x" % struct.unpack(">Q", h[88:96])[0])
        hdr_len = struct.unpack(">I", h[100:104])[0]
    off = hdr_len
    exts = []
    while off + 8 <= len(h):
        magic, length = struct.unpack(">II", h[off:off + 8])
        if magic == 0:
            break
        exts.append("0x%08x" % magic)
        off += 8 + ((length + 7) & ~7)
    print("exts", ",".join(exts))


def cmd_clear_autoclear(path):
    with open(path, "r+b") as f:
        h = f.read(104)
        if h[:4] != b"QFI\xfb" or struct.unpack(">I", h[4:8])[0] < 3:
            sys.exit("not a qcow2 v3 image: " + path)
        autoclear = struct.unpack(">Q", h[88:96])[0]
        f.seek(88)
        f.write(struct.pack(">Q", autoclear & ~1))


class Qcow2:
    """The few facts of a qcow2 file that qcow2-break needs (qcow2.txt)."""

    def __init__(self, f):
        self.f = f
        h = self.read(0, 104)
        if h[:4] != b"QFI\xfb":
            sys.exit("not a qcow2 image")
        self.version = struct.unpack(">I", h[4:8])[0]
        self.cluster_bits = struct.unpack(">I", h[20:24])[0]
        self.cs = 1 << self.cluster_bits
        self.l1_off = struct.unpack(">Q", h[40:48])[0]
        self.reftable_off = struct.unpack(">Q", h[48:56])[0]
        self.order = struct.unpack(">I", h[96:100])[0] if self.version >= 3 else 4
        incompat = struct.unpack(">Q", h[72:80])[0] if self.version >= 3 else 0
        self.entry_bytes = 16 if incompat & 16 else 8

    def bitmap_dir(self):
        """The offset of the bitmap directory (header extension 0x23852875)."""
        off = struct.unpack(">I", self.read(100, 4))[0] if self.version >= 3 else 72
        while off + 8 <= self.cs:
            magic, length = struct.unpack(">II", self.read(off, 8))
            if magic == 0:
                break
            if magic == 0x23852875:
                return struct.unpack(">Q", self.read(off + 24, 8))[0]
            off += 8 + ((length + 7) & ~7)
        sys.exit("no bitmaps extension")

    def read(self, off, n):
        self.f.seek(off)
        return self.f.read(n)

    def u64(self, off):
        return struct.unpack(">Q", self.read(off, 8))[0]

    def put64(self, off, v):
        self.f.seek(off)
        self.f.write(struct.pack(">Q", v))

    def l2_entry_off(self, guest):
        per = self.cs // self.entry_bytes
        l2 = self.u64(self.l1_off + 8 * (guest // self.cs // per)) & 0x00fffffffffffe00
        if not l2:
            sys.exit("no L2 table for guest offset %d" % guest)
        return l2 + self.entry_bytes * (guest // self.cs % per)

    def refcount_at(self, idx):
        """(byte offset, shift, width) of cluster idx's refcount entry."""
        bits = 1 << self.order
        per = self.cs * 8 // bits
        block = self.u64(self.reftable_off + 8 * (idx // per)) & ~0x1ff
        bit = idx % per * bits
        return block + bit // 8, bit % 8, bits

    def refcount(self, idx):
        at, shift, bits = self.refcount_at(idx)
        raw = self.read(at, max(bits // 8, 1))
        return (int.from_bytes(raw, "big") >> shift) & ((1 << bits) - 1)

    def set_refcount(self, idx, v):
        at, shift, bits = self.refcount_at(idx)
        n = max(bits // 8, 1)
        raw = int.from_bytes(self.read(at, n), "big")
        mask = ((1 << bits) - 1) << shift
        raw = (raw & ~mask) | ((v << shift) & mask)
        self.f.seek(at)
        self.f.write(raw.to_bytes(n, "big"))


def break_reftable(f, q, kind, idx):
    at = q.reftable_off + 8 * idx
    size = os.fstat(f.fileno()).st_size
    values = {
        "rt-l1": lambda: q.l1_off,
        "rt-l2": lambda: q.u64(q.l1_off) & 0x00fffffffffffe00,
        "rt-refblock": lambda: q.u64(q.reftable_off + 8),
        "rt-header": lambda: 0x200,
        "rt-reserved": lambda: q.u64(at) | 0x100,
        "rt-high": lambda: q.u64(at) | (1 << 63),
        "rt-eof": lambda: ((size + q.cs - 1) // q.cs + 4) * q.cs,
    }
    if kind not in values:
        sys.exit("unknown damage: " + kind)
    q.put64(at, values[kind]())


def break_snapshot_entry(f, q, guest):
    """The L2 entry of GUEST in the first snapshot's L2 table, 4 clusters past the end."""
    h = q.read(0, 72)
    if not struct.unpack(">I", h[60:64])[0]:
        sys.exit("no snapshot")
    sn_l1 = q.u64(struct.unpack(">Q", h[64:72])[0])
    per = q.cs // q.entry_bytes
    l2 = q.u64(sn_l1 + 8 * (guest // q.cs // per)) & 0x00fffffffffffe00
    if not l2:
        sys.exit("the snapshot has no L2 table there")
    size = os.fstat(f.fileno()).st_size
    q.put64(l2 + q.entry_bytes * (guest // q.cs % per), ((size + q.cs - 1) // q.cs + 4) * q.cs)


def break_one(path, kind, guest="0", other="0"):
    with open(path, "r+b") as f:
        q = Qcow2(f)
        if kind.startswith("rt-"):
            break_reftable(f, q, kind, num(guest))
            return
        if kind == "snapeof":
            break_snapshot_entry(f, q, num(guest))
            return
        if kind in ("l1-refblock", "reftable-at-l1", "dirty"):
            if kind == "l1-refblock":
                q.put64(q.l1_off, (1 << 63) | (q.u64(q.reftable_off) & ~0x1ff))
            elif kind == "reftable-at-l1":
                q.put64(48, q.l1_off)
            else:
                q.put64(72, q.u64(72) | 1)
            return
        at = q.l2_entry_off(num(guest))
        entry = q.u64(at)
        host = entry & 0x00fffffffffffe00
        copied = 1 << 63
        if kind == "leak":
            c = q.reftable_off >> q.cluster_bits
            q.set_refcount(c, q.refcount(c) + 1)
        elif kind == "refcount":
            c = host >> q.cluster_bits
            if not host or not q.refcount(c):
                sys.exit("guest offset %s has no data cluster with a refcount" % guest)
            q.set_refcount(c, q.refcount(c) - 1)
        elif kind == "header":
            q.put64(at, copied | 0x200)
        elif kind == "eof":
            size = os.fstat(f.fileno()).st_size
            q.put64(at, copied | ((size + q.cs - 1) // q.cs + 4) * q.cs)
        elif kind == "metadata":
            q.put64(at, copied | q.reftable_off)
        elif kind == "l1":
            q.put64(at, copied | q.l1_off)
        elif kind == "at-l2":
            q.put64(at, copied | (at & ~(q.cs - 1)))
        elif kind == "at-refblock":
            q.put64(at, copied | (q.u64(q.reftable_off) & ~0x1ff))
        elif kind == "at-snaptable":
            q.put64(at, copied | q.u64(64))
        elif kind == "at-snapl1":
            if not q.u64(56) >> 32:
                sys.exit("no snapshot")
            q.put64(at, copied | q.u64(q.u64(64)))
        elif kind == "at-bmdir":
            q.put64(at, copied | q.bitmap_dir())
        elif kind == "share":
            q.put64(q.l2_entry_off(num(other)), entry | copied)
            q.put64(at, entry | copied)
        elif kind == "free-data":
            if not host or entry & (1 << 62):
                sys.exit("guest offset %s has no standard data cluster" % guest)
            q.set_refcount(host >> q.cluster_bits, 0)
        elif kind == "zip-l1":
            # offset bits: 62 - (cluster_bits - 8); the sector count above them
            x = 62 - (q.cluster_bits - 8)
            start = q.l1_off - 512
            q.put64(at, (1 << 62) | (1 << x) | start)
        elif kind == "free-l1":
            q.set_refcount(q.l1_off >> q.cluster_bits, 0)
        elif kind == "free-l2":
            q.set_refcount(at >> q.cluster_bits, 0)
        elif kind == "copied":
            q.put64(at, entry & ~copied)
        elif kind == "corrupt":
            if q.version < 3:
                sys.exit("no corrupt bit in a version 2 image")
            q.put64(72, q.u64(72) | 2)
        else:
            sys.exit("unknown damage: " + kind)


def cmd_qcow2_break(*specs):
    for spec in specs:
        break_one(*spec.split(":"))


def cmd_check_compare(*paths):
    if not paths or len(paths) % 2:
        sys.exit("check-compare OURS QEMU [OURS QEMU...]")
    for ours_path, qemu_path in zip(paths[::2], paths[1::2]):
        try:
            ours, qemu = load(ours_path), load(qemu_path)
        except (OSError, ValueError) as e:
            print("differs %s: %s" % (ours_path, e))
            continue
        diffs = ["%s is %r, qemu-img says %r" % (k, ours.get(k), qemu.get(k))
                 for k in sorted(set(ours) | set(qemu)) if ours.get(k) != qemu.get(k)]
        print(("differs %s: " % ours_path + "; ".join(diffs)) if diffs else "same " + ours_path)


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


def cmd_depth0(path):
    with open(path) as f:
        entries = json.load(f)
    ext = [(x["start"], x["start"] + x["length"]) for x in entries
           if x.get("depth") == 0 and x.get("present", x.get("data") or x.get("zero"))]
    for s, e in merge(sorted(ext)):
        print(s, e)


def cmd_plan(path):
    with open(path) as f:
        plan = json.load(f)
    if not isinstance(plan, dict) or not isinstance(plan.get("dry-run"), bool):
        sys.exit("no boolean \"dry-run\" in the plan")
    steps = plan.get("steps")
    if not isinstance(steps, list):
        sys.exit("no \"steps\" array in the plan")
    print("dry-run", "true" if plan["dry-run"] else "false")
    for s in steps:
        kind, image = s.get("step"), s.get("image")
        if not isinstance(kind, str) or not isinstance(image, str):
            sys.exit("a step without \"step\" or \"image\": %r" % s)
        line = [kind, os.path.basename(image)]
        if kind in ("copy", "grow"):
            if not isinstance(s.get("bytes"), int):
                sys.exit("a %s step without an integer \"bytes\": %r" % (kind, s))
            line.append(str(s["bytes"]))
        elif kind == "repoint":
            if not isinstance(s.get("backing"), str):
                sys.exit("a repoint step without \"backing\": %r" % s)
            line.append(s["backing"])
        print(" ".join(line))


def cmd_check_counts(path):
    with open(path) as f:
        j = json.load(f)
    print(j.get("check-errors", 0), j.get("corruptions", 0), j.get("leaks", 0))


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


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    table = {
        "seek": cmd_seek,
        "qmap": cmd_qmap,
        "open": cmd_open,
        "drop-backing-fmt": cmd_drop_backing_fmt,
        "info-compare": cmd_info_compare,
        "chain-compare": cmd_chain_compare,
        "json-get": cmd_json_get,
        "sfdisk-part": cmd_sfdisk_part,
        "apply": cmd_apply,
        "apply-both": cmd_apply_both,
        "try": cmd_try,
        "qcow2-fields": cmd_qcow2_fields,
        "clear-autoclear": cmd_clear_autoclear,
        "qcow2-break": cmd_qcow2_break,
        "check-compare": cmd_check_compare,
        "odd-reads": cmd_odd_reads,
        "fill": cmd_fill,
        "pattern": cmd_pattern,
        "crash-writer": cmd_crash_writer,
        "crash-verify": cmd_crash_verify,
        "depth0": cmd_depth0,
        "plan": cmd_plan,
        "check-counts": cmd_check_counts,
    }
    if cmd not in table:
        sys.exit(__doc__)
    table[cmd](*args)


if __name__ == "__main__":
    main()

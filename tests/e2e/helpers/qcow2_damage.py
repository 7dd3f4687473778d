"""Building images that QEMU no longer makes, and damaging images on purpose: a backing file
without its format extension, stale bitmaps (the autoclear bit cleared), and the corruptions of
`qcow2-break` (see e2e_helper.py for the list)."""
import os
import struct
import sys

from .common import num
from .qcow2_reader import Qcow2


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


def cmd_clear_autoclear(path):
    with open(path, "r+b") as f:
        h = f.read(104)
        if h[:4] != b"QFI\xfb" or struct.unpack(">I", h[4:8])[0] < 3:
            sys.exit("not a qcow2 v3 image: " + path)
        autoclear = struct.unpack(">Q", h[88:96])[0]
        f.seek(88)
        f.write(struct.pack(">Q", autoclear & ~1))


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

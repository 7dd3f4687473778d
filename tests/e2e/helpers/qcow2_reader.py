"""A qcow2 reader of its own, written from qcow2.txt and independent of the library under test:
the tests use it as a second oracle next to qemu-img (header facts, where the L2 entry of a guest
offset lies, refcounts) and qcow2_damage uses it to find what it breaks."""
import struct
import sys


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

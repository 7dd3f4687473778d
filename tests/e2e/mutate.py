#!/usr/bin/env python3
"""Structural mutations of qcow2 metadata, for tests/e2e/mutate.sh (standard library only).

Subcommands:
  mutate SEEDDIR OUTDIR SEED ITER
        pick one seed chain (a directory under SEEDDIR holding the chain's files and a file
        TOP naming its top image), copy it to OUTDIR (which must not exist) and apply 1 to 3
        mutations to the metadata of one of its qcow2 images (the top image mostly). The
        choice depends only on SEED and ITER, so "SEED ITER" reproduces a mutant. Prints
        "chain NAME", "top FILE", one "mutation ..." line per mutation (what was changed, in
        words), "info-must-open yes" when only refcounts and snapshot entries changed (or
        "no"), and one "patch FILE OFFSET HEX" line per changed byte run (the bytes written)
        or "truncate FILE SIZE", from which a reproducer rebuilds the mutant.
  errors JSON
        the number of errors in `qemu-img check --output=json` output: corruptions + leaks +
        check-errors; "inf" when the file holds no report (the check could not open the image)
  snapshots JSON
        "NAME<TAB>VIEW" per internal snapshot in `qemu-img info --output=json` output whose
        name is unique in the table, VIEW being its file name under the mount (without the
        image's base name: "@S.raw", '%' written %25 and '/' %2F)
  cmp-prefix EXPECTED VIEW
        read VIEW (a file under the mount) and compare it with EXPECTED over the length of the
        shorter one. An error reading VIEW is allowed (prints "read error ERRNO", exit 0); bytes
        that differ print "differ at OFFSET" and exit 1
"""
import errno
import json
import os
import random
import shutil
import struct
import sys

COPIED = 1 << 63
COMPRESSED = 1 << 62
OFF_MASK = 0x00FFFFFFFFFFFE00
L1_RESERVED = 0x7F000000000001FF
L2_RESERVED = 0x3F000000000001FE

HEADER_FIELDS = [
    # name, offset, width, kind
    ("version", 4, 4, "small"),
    ("backing_file_offset", 8, 8, "offset"),
    ("backing_file_size", 16, 4, "size"),
    ("cluster_bits", 20, 4, "small"),
    ("size", 24, 8, "size"),
    ("crypt_method", 32, 4, "small"),
    ("l1_size", 36, 4, "size"),
    ("l1_table_offset", 40, 8, "offset"),
    ("refcount_table_offset", 48, 8, "offset"),
    ("refcount_table_clusters", 56, 4, "size"),
    ("nb_snapshots", 60, 4, "size"),
    ("snapshots_offset", 64, 8, "offset"),
]
HEADER_V3_FIELDS = [
    ("incompatible_features", 72, 8, "flags"),
    ("compatible_features", 80, 8, "flags"),
    ("autoclear_features", 88, 8, "flags"),
    ("refcount_order", 96, 4, "small"),
    ("header_length", 100, 4, "size"),
    ("compression_type", 104, 1, "small"),
]
INFO_OPTIONAL = {"refcount table", "refcount blocks", "snapshot table", "snapshot L1",
                 "snapshot L2"}
EXT_NAMES = {
    0xE2792ACA: "backing-format",
    0x6803F857: "feature-table",
    0x23852875: "bitmaps",
    0x0537BE77: "crypto",
    0x44415441: "data-file",
}


def be(b):
    return int.from_bytes(b, "big")


class Image:
    """The metadata of one qcow2 file, as byte ranges to mutate."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            self.data = bytearray(f.read())
        self.patches = []   # (offset, new bytes)
        self.words = []     # what each mutation did
        self.regions = set()  # where the mutations were
        self.fields = {}    # region name -> list of (label, offset, width, kind)
        self.meta = set()   # offsets of metadata clusters (targets for pointers)
        self.dataoffs = set()
        self.active_l2 = set()
        self.shared = set()  # host clusters referenced by a snapshot (refcount > 1)
        self.parse()

    # -- reading --
    def u(self, off, width):
        if off < 0 or off + width > len(self.data):
            return None
        return be(self.data[off:off + width])

    def add(self, region, label, off, width, kind):
        if off + width <= len(self.data):
            self.fields.setdefault(region, []).append((label, off, width, kind))

    def parse(self):
        d = self.data
        if len(d) < 72 or d[:4] != b"QFI\xfb":
            raise SystemExit("not a qcow2 image: " + self.path)
        self.version = self.u(4, 4)
        self.cb = self.u(20, 4)
        if not 9 <= self.cb <= 21:
            raise SystemExit("odd cluster_bits in seed " + self.path)
        self.cs = 1 << self.cb
        self.meta.add(0)
        for f in HEADER_FIELDS:
            self.add("header", *f)
        hdr_len = 72
        incompat = 0
        self.order = 4
        if self.version >= 3:
            for f in HEADER_V3_FIELDS:
                self.add("header", *f)
            incompat = self.u(72, 8)
            self.order = self.u(96, 4)
            hdr_len = self.u(100, 4)
        self.ext_l2 = bool(incompat & 16)
        self.parse_exts(hdr_len)
        bf_off, bf_len = self.u(8, 8), self.u(16, 4)
        if bf_off and bf_len:
            self.add("strings", "backing file name", bf_off, bf_len, "bytes")
        self.l1_off, self.l1_size = self.u(40, 8), self.u(36, 4)
        self.meta.add(self.l1_off)
        self.parse_l1("L1", self.l1_off, self.l1_size, active=True)
        self.parse_refcounts()
        self.parse_snapshots()

    def parse_exts(self, off):
        n = 0
        while off + 8 <= min(len(self.data), self.cs) and n < 32:
            typ, length = self.u(off, 4), self.u(off + 4, 4)
            if typ == 0:
                break
            name = EXT_NAMES.get(typ, "0x%08x" % typ)
            self.add("extensions", "extension %s type" % name, off, 4, "flags")
            self.add("extensions", "extension %s length" % name, off + 4, 4, "size")
            body = off + 8
            if typ == 0x23852875 and length >= 24:
                self.add("extensions", "bitmaps nb_bitmaps", body, 4, "size")
                self.add("extensions", "bitmaps directory size", body + 8, 8, "size")
                self.add("extensions", "bitmaps directory offset", body + 16, 8, "offset")
                self.parse_bitmaps(self.u(body + 16, 8), self.u(body + 8, 8), self.u(body, 4))
            elif length:
                self.add("strings", "extension %s data" % name, body, min(length, 64), "bytes")
            off = body + ((length + 7) & ~7)
            n += 1

    def parse_bitmaps(self, off, size, count):
        self.meta.add(off)
        end = off + min(size, 65536)
        for i in range(min(count, 64)):
            if off + 24 > end:
                break
            tab, tab_size = self.u(off, 8), self.u(off + 8, 4)
            if tab is None:
                break
            r = "bitmap directory"
            self.add(r, "bitmap %d table offset" % i, off, 8, "offset")
            self.add(r, "bitmap %d table size" % i, off + 8, 4, "size")
            self.add(r, "bitmap %d flags" % i, off + 12, 4, "flags")
            self.add(r, "bitmap %d type" % i, off + 16, 1, "small")
            self.add(r, "bitmap %d granularity" % i, off + 17, 1, "small")
            self.add(r, "bitmap %d name size" % i, off + 18, 2, "size")
            self.add(r, "bitmap %d extra data size" % i, off + 20, 4, "size")
            name_size = self.u(off + 18, 2) or 0
            extra = self.u(off + 20, 4) or 0
            if tab:
                self.meta.add(tab & ~(self.cs - 1))
                for j in range(min(tab_size or 0, 4096)):
                    e = self.u(tab + 8 * j, 8)
                    if e is None:
                        break
                    self.add("bitmap tables", "bitmap %d table entry %d" % (i, j), tab + 8 * j, 8,
                             "entry-bitmap")
                    if e & OFF_MASK:
                        self.meta.add(e & OFF_MASK)
            off += (24 + extra + name_size + 7) & ~7

    def parse_l1(self, region, off, size, active):
        if not off or size is None or off + 8 * size > len(self.data):
            return
        for i in range(min(size, 65536)):
            e = self.u(off + 8 * i, 8)
            self.add(region, "%s entry %d" % (region, i), off + 8 * i, 8, "entry-l1")
            l2 = e & OFF_MASK
            if l2 and l2 + self.cs <= len(self.data):
                self.meta.add(l2)
                if active:
                    self.active_l2.add(l2)
                    self.parse_l2(l2, active)
                elif l2 in self.active_l2:
                    self.shared.add(l2)
                else:
                    self.parse_l2(l2, active)

    def parse_l2(self, off, active):
        esz = 16 if self.ext_l2 else 8
        region = "L2" if active else "snapshot L2"
        for i in range(self.cs // esz):
            e = self.u(off + esz * i, 8)
            label = "L2 table %#x entry %d" % (off, i)
            self.add(region, label, off + esz * i, 8, "entry-l2")
            if esz == 16:
                self.add(region, label + " bitmap", off + esz * i + 8, 8, "flags")
            if e & COMPRESSED:
                continue
            host = e & OFF_MASK
            if host:
                self.dataoffs.add(host)
                if not active:
                    self.shared.add(host)
        if not active:
            self.shared.add(off)

    def parse_refcounts(self):
        off, clusters = self.u(48, 8), self.u(56, 4)
        if not off or off + clusters * self.cs > len(self.data):
            return
        self.meta.add(off)
        self.rbits = 1 << self.order
        for i in range(clusters * self.cs // 8):
            e = self.u(off + 8 * i, 8)
            if i < 64 or e:
                self.add("refcount table", "refcount table entry %d" % i, off + 8 * i, 8,
                         "entry-reftable")
            blk = e & ~0x1FF
            if blk and blk + self.cs <= len(self.data):
                self.meta.add(blk)
                self.parse_refblock(i, blk)

    def parse_refblock(self, idx, blk):
        per = self.cs * 8 // self.rbits
        nclusters = (len(self.data) + self.cs - 1) // self.cs
        for j in range(per):
            cluster = idx * per + j
            if cluster > nclusters + 4:
                break
            bit = j * self.rbits
            self.add("refcount blocks", "refcount of cluster %d" % cluster, blk + bit // 8,
                     max(self.rbits // 8, 1), "refcount:%d:%d" % (bit % 8, self.rbits))

    def parse_snapshots(self):
        n, off = self.u(60, 4), self.u(64, 8)
        if not n or not off:
            return
        self.meta.add(off & ~(self.cs - 1))
        for i in range(min(n, 1024)):
            if off + 40 > len(self.data):
                return
            r = "snapshot table"
            self.add(r, "snapshot %d l1_table_offset" % i, off, 8, "offset")
            self.add(r, "snapshot %d l1_size" % i, off + 8, 4, "size")
            self.add(r, "snapshot %d id_str_size" % i, off + 12, 2, "size")
            self.add(r, "snapshot %d name_size" % i, off + 14, 2, "size")
            self.add(r, "snapshot %d vm_state_size" % i, off + 32, 4, "size")
            self.add(r, "snapshot %d extra_data_size" % i, off + 36, 4, "size")
            extra = self.u(off + 36, 4)
            if extra >= 16:
                self.add(r, "snapshot %d disk_size" % i, off + 48, 8, "size")
            if extra >= 8:
                self.add(r, "snapshot %d vm_state_size_large" % i, off + 40, 8, "size")
            ids, names = self.u(off + 12, 2), self.u(off + 14, 2)
            if ids:
                self.add("strings", "snapshot %d id" % i, off + 40 + extra, ids, "bytes")
            if names:
                self.add("strings", "snapshot %d name" % i, off + 40 + extra + ids, names, "bytes")
            l1, l1n = self.u(off, 8), self.u(off + 8, 4)
            self.meta.add(l1)
            self.parse_l1("snapshot L1", l1, l1n, active=False)
            off += (40 + extra + ids + names + 7) & ~7

    # -- writing --
    def put(self, off, raw):
        self.data[off:off + len(raw)] = raw
        self.patches.append((off, bytes(raw)))

    def save(self):
        with open(self.path, "r+b") as f:
            for off, raw in self.patches:
                f.seek(off)
                f.write(raw)


def pick_pointer(img, rng):
    """A cluster-aligned offset that already holds something: metadata, data, the header."""
    pool = sorted(img.meta | set(rng.sample(sorted(img.dataoffs), min(4, len(img.dataoffs)))))
    return rng.choice(pool) if pool else 0


def past_eof(img, rng):
    end = (len(img.data) + img.cs - 1) // img.cs * img.cs
    return rng.choice([end, end + img.cs * rng.randint(1, 64), 1 << 40, (1 << 55) - img.cs])


def new_value(img, rng, kind, old, width):
    """(new value, words) for one field."""
    bits = 8 * width
    top = (1 << bits) - 1
    choices = ["flip", "zero", "ones"]
    if kind in ("offset", "entry-l1", "entry-l2", "entry-reftable", "entry-bitmap"):
        choices += ["pointer", "pointer", "eof", "unaligned"]
    if kind == "size":
        choices += ["huge", "huge", "plus", "minus", "double"]
    if kind == "small":
        choices += ["plus", "minus", "huge"]
    if kind == "flags":
        choices += ["setbit", "setbit"]
    if kind in ("entry-l1", "entry-l2"):
        choices += ["reserved", "copied", "copied", "nocopied", "compressed"]
    if kind.startswith("refcount"):
        choices = ["plus", "minus", "zero", "ones", "flip", "plus"]
    how = rng.choice(choices)
    keep = old & (COPIED | COMPRESSED | 1) if kind.startswith("entry-l") else 0
    if how == "flip":
        v = old ^ (1 << rng.randrange(bits))
    elif how == "zero":
        v = 0
    elif how == "ones":
        v = top
    elif how == "pointer":
        v = keep | pick_pointer(img, rng)
    elif how == "eof":
        v = keep | past_eof(img, rng)
    elif how == "unaligned":
        v = old + rng.choice([1, 8, 512, img.cs // 2 or 1])
    elif how == "huge":
        v = rng.choice([top, top >> 1, 1 << (bits - 1), 1 << (bits // 2), 0x10000, 0x2000001])
    elif how == "plus":
        v = old + rng.choice([1, 1, 2, 255])
    elif how == "minus":
        v = old - 1
    elif how == "double":
        v = old * 2 + 1
    elif how == "setbit":
        v = old | (1 << rng.randrange(bits))
    elif how == "reserved":
        mask = L1_RESERVED if kind == "entry-l1" else L2_RESERVED
        v = old | (1 << rng.choice([b for b in range(64) if mask >> b & 1]))
    elif how == "copied":
        v = old | COPIED
    elif how == "nocopied":
        v = old & ~COPIED
    elif how == "compressed":
        v = old ^ COMPRESSED
    return v & top, how


def mutate_field(img, rng, region):
    fields = img.fields[region]
    live = [f for f in fields if img.u(f[1], f[2])]
    label, off, width, kind = rng.choice(live if live and rng.random() < 0.8 else fields)
    img.regions.add("snapshot table" if label.startswith("snapshot ") else region)
    raw = img.data[off:off + width]
    if kind == "bytes":
        n = rng.randint(1, min(4, width))
        new = bytearray(raw)
        for _ in range(n):
            new[rng.randrange(width)] = rng.choice([0, 0x2F, 0x25, 0xFF, rng.randrange(256)])
        img.put(off, new)
        img.words.append("%s: bytes %s -> %s" % (label, raw.hex(), new.hex()))
        return
    if kind.startswith("refcount:"):
        _, shift, rbits = kind.split(":")
        shift, rbits = int(shift), int(rbits)
        word = be(raw)
        mask = (1 << rbits) - 1
        old = (word >> shift) & mask
        v, how = new_value(img, rng, "refcount", old, max(rbits // 8, 1))
        v &= mask
        new = (word & ~(mask << shift)) | (v << shift)
        img.put(off, new.to_bytes(width, "big"))
        img.words.append("%s: %s %d -> %d" % (label, how, old, v))
        return
    old = be(raw)
    if kind == "entry-l1" and rng.random() < 0.15 and len(fields) > 1:
        other = rng.choice(fields)
        v, how = img.u(other[1], 8), "duplicate of " + other[0]
    elif kind == "entry-l2" and rng.random() < 0.2:
        same = [f for f in fields if f[3] == "entry-l2" and img.u(f[1], 8)]
        if rng.random() < 0.5 and img.shared:
            v, how = COPIED | rng.choice(sorted(img.shared)), "COPIED pointer to a shared cluster"
        elif same:
            other = rng.choice(same)
            v, how = img.u(other[1], 8), "duplicate of " + other[0]
        else:
            v, how = new_value(img, rng, kind, old, width)
    elif kind == "entry-reftable" and rng.random() < 0.2:
        live = [f for f in fields if img.u(f[1], 8)]
        other = rng.choice(live or fields)
        v, how = img.u(other[1], 8), "duplicate of " + other[0]
    else:
        v, how = new_value(img, rng, kind, old, width)
    img.put(off, v.to_bytes(width, "big"))
    img.words.append("%s at %#x: %s %#x -> %#x" % (label, off, how, old, v))


def copy_chain(src, dst):
    shutil.copytree(src, dst, copy_function=shutil.copy)


def cmd_mutate(seeddir, outdir, seed, it):
    rng = random.Random("%s:%s" % (seed, it))
    chains = sorted(d for d in os.listdir(seeddir) if os.path.isdir(os.path.join(seeddir, d)))
    chain = rng.choice(chains)
    copy_chain(os.path.join(seeddir, chain), outdir)
    with open(os.path.join(outdir, "TOP")) as f:
        top = f.read().strip()
    images = sorted(n for n in os.listdir(outdir)
                    if n.endswith(".qcow2") and open(os.path.join(outdir, n), "rb").read(4) ==
                    b"QFI\xfb")
    target = top if len(images) == 1 or rng.random() < 0.7 else rng.choice(images)
    print("chain", chain)
    print("top", top)
    img = Image(os.path.join(outdir, target))
    truncate = None
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        if rng.random() < 0.03:
            cut = rng.choice(sorted(img.meta)) + rng.choice([0, 8, img.cs // 2])
            truncate = min(cut, len(img.data)) if truncate is None else min(truncate, cut)
            img.words.append("truncated to %d bytes" % truncate)
            img.regions.add("file size")
            continue
        region = rng.choice(sorted(img.fields))
        mutate_field(img, rng, region)
    img.save()
    if truncate is not None:
        os.truncate(img.path, truncate)
    for w in img.words:
        print("mutation %s: %s" % (target, w))
    # Refcounts and snapshot entries are not needed to describe an image: `qemu-img info`
    # opens it whatever they hold, and so must `qcowctl info` (a bad snapshot entry disables
    # that snapshot only). Elsewhere a refusal with a reason is allowed (an image with e.g. an
    # L1 table past the end of the file must be refused).
    print("info-must-open", "yes" if img.regions <= INFO_OPTIONAL else "no")
    for off, raw in img.patches:
        print("patch %s %d %s" % (target, off, raw.hex()))
    if truncate is not None:
        print("truncate %s %d" % (target, truncate))


def cmd_errors(path):
    try:
        with open(path) as f:
            j = json.load(f)
    except (OSError, ValueError):
        print("inf")
        return
    if not isinstance(j, dict):
        print("inf")
        return
    print(j.get("corruptions", 0) + j.get("leaks", 0) + j.get("check-errors", 0))


def cmd_snapshots(path):
    with open(path) as f:
        j = json.load(f)
    names = [s.get("name", "") for s in j.get("snapshots", [])]
    for n in names:
        if names.count(n) != 1 or not n or "\t" in n or "\n" in n:
            continue
        print("%s\t@%s.raw" % (n, n.replace("%", "%25").replace("/", "%2F")))


def cmd_cmp_prefix(expected, view):
    try:
        with open(expected, "rb") as e, open(view, "rb") as v:
            off = 0
            while True:
                a = e.read(1 << 20)
                try:
                    b = v.read(len(a)) if a else b""
                except OSError as err:
                    print("read error %s at %d" % (errno.errorcode.get(err.errno, err.errno), off))
                    return
                n = min(len(a), len(b))
                if a[:n] != b[:n]:
                    i = next(k for k in range(n) if a[k] != b[k])
                    print("differ at %d: want %02x, got %02x" % (off + i, a[i], b[i]))
                    sys.exit(1)
                if n < len(a) or not a:
                    return
                off += n
    except OSError as err:
        print("open error %s" % errno.errorcode.get(err.errno, err.errno))


def main():
    table = {"mutate": cmd_mutate, "errors": cmd_errors, "snapshots": cmd_snapshots,
             "cmp-prefix": cmd_cmp_prefix}
    if len(sys.argv) < 2 or sys.argv[1] not in table:
        sys.exit(__doc__)
    table[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Small helpers for the qcowfs end-to-end tests (sourced through lib.sh).

Subcommands:
  seek FILE                 data extents of FILE found with lseek(SEEK_DATA/SEEK_HOLE),
                            one "START END" line each (END exclusive), adjacent ones merged
  qmap JSON                 the same, from `qemu-img map --output=json` (entries with
                            "data": true are data; zero clusters and holes are not)
  open FILE MODE            open(2) FILE with MODE (r, w, rw, wtrunc, append, creat) and
                            print "ok" or the errno name (EROFS, EACCES, ...)
  drop-backing-fmt IMAGE    remove the backing-format header extension of a qcow2 image, the
                            way images made by old QEMU versions look (no backing_fmt)
  info-compare OURS QEMU    compare `qcowctl info --json` with `qemu-img info --output=json`
  chain-compare OURS QEMU   the same for `--chain` / `--backing-chain` arrays
  json-get FILE EXPR        print a value from a JSON file (EXPR: dotted path, [n] indices)
  sfdisk-part JSON N        "START SIZE" in bytes of partition N (1-based) of `sfdisk -J` output
"""
import errno
import json
import os
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


def cmd_open(path, mode):
    try:
        fd = os.open(path, MODES[mode], 0o644)
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e.errno)))
        return
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
    }
    if cmd not in table:
        sys.exit(__doc__)
    table[cmd](*args)


if __name__ == "__main__":
    main()

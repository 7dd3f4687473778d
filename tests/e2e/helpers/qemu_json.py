"""Reading what qemu-img and qcowctl print as JSON: qemu-img map extents, info and check compared
field by field with qcowctl's, values picked out of a JSON file, sfdisk partitions, qcowctl's
--dry-run --json plans."""
import json
import os
import sys

from .common import load, merge


def cmd_qmap(path):
    with open(path) as f:
        entries = json.load(f)
    ext = [(x["start"], x["start"] + x["length"]) for x in entries if x.get("data")]
    for s, e in merge(sorted(ext)):
        print(s, e)


SNAP_KEYS = ("id", "name", "vm-state-size", "date-sec", "date-nsec", "vm-clock-sec",
             "vm-clock-nsec", "icount")
FS_KEYS = ("compat", "refcount-bits", "lazy-refcounts", "corrupt", "extended-l2",
           "compression-type")
FS_KEYS += ("encrypt",)  # format, cipher, key slots of an encrypted image


def compare_one(ours, qemu, where):
    """Facts qemu-img prints that qcowctl must print under the same name and with the same
    value: the brief's list (virtual-size, cluster-size, backing-filename, snapshot names),
    the format, the dirty flag, each snapshot's fields and the qcow2 format-specific data."""
    bad = []

    def same(key, a, b):
        if a != b:
            bad.append("%s%s: qcowctl %r, qemu-img %r" % (where, key, a, b))

    for key in ("virtual-size", "cluster-size", "format", "backing-filename",
                "backing-filename-format", "dirty-flag", "encrypted"):
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

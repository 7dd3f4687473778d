"""Small pieces the other helper modules share: extents, numbers, errno names, JSON files."""
import errno
import json


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


def load(path):
    with open(path) as f:
        return json.load(f)


def num(text):
    mult = {"k": 1 << 10, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text and text[-1] in mult:
        return int(text[:-1], 0) * mult[text[-1]]
    return int(text, 0)


def errname(e):
    return errno.errorcode.get(e.errno, str(e.errno))

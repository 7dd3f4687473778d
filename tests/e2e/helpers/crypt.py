"""Encrypted images: where their ciphertext lies, and that a flat view never shows it."""

import sys

from .common import num
from .qcow2_reader import Qcow2


def cmd_host_offset(image, guest_off):
    """The host offset of the data at GUEST_OFF of IMAGE's active L1 table, read by our own
    qcow2 reader (qemu-img map tells no offsets of an encrypted image)."""
    goff = num(guest_off)
    with open(image, "rb") as f:
        q = Qcow2(f)
        entry = q.u64(q.l2_entry_off(goff))
        host = entry & 0x00FFFFFFFFFFFE00
        if not host or entry & (1 << 62):
            sys.exit("guest offset %#x has no data cluster" % goff)
        print(host + goff % q.cs)


def cmd_block_absent(image, host_off, path):
    """The 512 bytes of IMAGE at HOST_OFF appear nowhere in the file PATH (read whole)."""
    with open(image, "rb") as f:
        f.seek(int(host_off, 0))
        block = f.read(512)
    if len(block) != 512 or block == bytes(512):
        sys.exit("no ciphertext block at %s of %s" % (host_off, image))
    tail = b""
    pos = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            hay = tail + chunk
            i = hay.find(block)
            if i >= 0:
                sys.exit("%s shows the ciphertext of %s (at %d)" % (path, image,
                                                                   pos - len(tail) + i))
            tail = hay[-511:]
            pos += len(chunk)

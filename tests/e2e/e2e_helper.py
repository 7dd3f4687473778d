#!/usr/bin/env python3
"""Small helpers for the qcowfs end-to-end tests (called through lib.sh), one command line in
front of the modules in helpers/: qcow2_reader (a qcow2 reader of our own, a second oracle next
to qemu-img), qcow2_damage (images built or broken on purpose), views (what the tests do to flat
views), qemu_json (what qemu-img and qcowctl print as JSON), common.

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

  host-offset IMAGE OFF     the host offset of the data at guest offset OFF of a qcow2 image
  ctl-call SOCKET WORD...   one request on a qcowfs control socket, each reply frame printed
                            ("out:", "err:", "record:", "progress:", then "exit N")
  ctl-call-cancel SOCKET WORD...
                            the same, the client's CANCEL frame sent with the request
  ctl-fake-daemon DIR MODE  pose as a daemon on DIR/PID.sock: "yes" says every request was
                            done, "drip" sends frames for ever and never an exit status
  stamp-writer VIEW LOG STOP SEED BLOCKS [FSYNC_EACH]
                            4 KiB writes to random blocks of VIEW, each stamped with its
                            sequence number, logged to LOG after each, until STOP exists
  stamp-check COPY LOG LO HI BLOCKS
                            COPY is what the first K writes of LOG made, LO <= K <= HI
  stamp-durable COPY LOG BLOCKS
                            after a crash: every write LOG holds (fsynced) is in COPY, unless
                            a later, unlogged write of its block is
  block-absent IMAGE HOST FILE
                            the 512 bytes of IMAGE at HOST (ciphertext) appear nowhere in FILE

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

qcowctl commit, pull and rebase (ctl-commit.sh, ctl-pull.sh, ctl-rebase.sh, ctl-kill.sh):
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
import importlib
import sys

# subcommand: the module of helpers/ that holds it (its function is cmd_<name with _ for ->);
# only that module is imported: the tests run this hundreds of times
COMMANDS = {
    "seek": "views",
    "qmap": "qemu_json",
    "open": "views",
    "drop-backing-fmt": "qcow2_damage",
    "info-compare": "qemu_json",
    "chain-compare": "qemu_json",
    "json-get": "qemu_json",
    "sfdisk-part": "qemu_json",
    "apply": "views",
    "apply-both": "views",
    "try": "views",
    "qcow2-fields": "qcow2_reader",
    "clear-autoclear": "qcow2_damage",
    "qcow2-break": "qcow2_damage",
    "check-compare": "qemu_json",
    "odd-reads": "views",
    "fill": "views",
    "pattern": "views",
    "crash-writer": "views",
    "crash-verify": "views",
    "depth0": "qemu_json",
    "plan": "qemu_json",
    "check-counts": "qemu_json",
    "host-offset": "crypt",
    "block-absent": "crypt",
    "ctl-call": "ctlsock",
    "ctl-call-cancel": "ctlsock",
    "ctl-fake-daemon": "ctlsock",
    "stamp-writer": "stamps",
    "stamp-check": "stamps",
    "stamp-durable": "stamps",
}


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    sys.dont_write_bytecode = True  # no __pycache__ in the source tree
    module = importlib.import_module("helpers." + COMMANDS[cmd])
    getattr(module, "cmd_" + cmd.replace("-", "_"))(*args)


if __name__ == "__main__":
    main()

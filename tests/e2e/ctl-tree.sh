#!/bin/bash
# ctl-tree.sh - qcowctl tree draws a directory of chains (a shared base with two overlays,
# a raw base, snapshots, missing and outside backing files, a symlink, a text file) in text and
# JSON; an image a QEMU writer holds is "in use" (and map and checksum refuse it unless -U);
# every error is one line and a non-zero exit.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

T=$WORK/tree
mkdir -p "$T/sub" "$WORK/elsewhere"
cd "$T" || exit 1
setup qcreate base.qcow2 1M
setup qemu-img snapshot -c clean base.qcow2
setup qemu-img snapshot -c 'with space' base.qcow2
setup qcreate -b base.qcow2 -F qcow2 ov-a.qcow2
setup qemu-img snapshot -c before ov-a.qcow2
setup qcreate -b ../ov-a.qcow2 -F qcow2 sub/ov-a2.qcow2
setup qcreate -b ../base.qcow2 -F qcow2 sub/ov-b.qcow2
setup qemu-img create -q -f raw disk.raw 1M
setup qcreate -b disk.raw -F raw vm.qcow2
setup qemu-img snapshot -c daily vm.qcow2
setup qcreate lone.qcow2 1M
setup qcreate "$WORK/elsewhere/far-base.qcow2" 1M
setup qcreate -b ../elsewhere/far-base.qcow2 -F qcow2 far.qcow2
setup qcreate -b gone.qcow2 -F qcow2 -u orphan.qcow2 1M
setup ln -s base.qcow2 link-to-base.qcow2
echo "not an image" >notes.txt
cd "$WORK" || exit 1

tree_text()
{
	local got=$WORK/tree.txt
	"$QCOWCTL" tree "$T" >"$got" || return 1
	diff -u - "$got" <<EOF
base.qcow2
  snapshot 1: clean
  snapshot 2: with space
  |
  +- ov-a.qcow2
  |   snapshot 1: before
  |   |
  |   +- sub/ov-a2.qcow2
  |
  +- sub/ov-b.qcow2
disk.raw (raw)
  |
  +- vm.qcow2
      snapshot 1: daily
far.qcow2 (backing file outside the directory: $WORK/elsewhere/far-base.qcow2)
lone.qcow2
orphan.qcow2 (backing file missing: $T/gone.qcow2)
EOF
}
check "tree draws every chain under the directory" tree_text

tree_json()
{
	local out=$WORK/tree.json
	"$QCOWCTL" tree --json "$T" >"$out" || return 1
	python3 - "$out" "$T" "$WORK" <<'EOF'
import json, sys
j, T, W = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
assert j["directory"] == T, j["directory"]
def shape(n):
    return (n["filename"], n["format"], [(s["id"], s["name"]) for s in n.get("snapshots", [])],
            n.get("note"), [shape(c) for c in n["children"]])
want = [
    ("base.qcow2", "qcow2", [("1", "clean"), ("2", "with space")], None, [
        ("ov-a.qcow2", "qcow2", [("1", "before")], None, [
            ("sub/ov-a2.qcow2", "qcow2", [], None, [])]),
        ("sub/ov-b.qcow2", "qcow2", [], None, [])]),
    ("disk.raw", "raw", [], None, [("vm.qcow2", "qcow2", [("1", "daily")], None, [])]),
    ("far.qcow2", "qcow2", [], "backing file outside the directory", []),
    ("lone.qcow2", "qcow2", [], None, []),
    ("orphan.qcow2", "qcow2", [], "backing file missing", []),
]
got = [shape(n) for n in j["images"]]
assert got == want, "\n%s\n!=\n%s" % (got, want)
ova = j["images"][0]["children"][0]
assert ova["full-path"] == T + "/ov-a.qcow2" and ova["full-backing-filename"] == T + "/base.qcow2"
assert ova["backing-filename-format"] == "qcow2" and ova["in-use"] is False
assert j["images"][2]["full-backing-filename"] == W + "/elsewhere/far-base.qcow2"
EOF
}
check "tree --json has the same forest, with paths, formats, snapshots and notes" tree_json

in_use()
{
	local got
	got=$("$QCOWCTL" tree "$T") || return 1
	grep -qx '  +- vm.qcow2 (in use)' <<<"$got" || { echo "$got"; return 1; }
	one_line_error "vm.qcow2" "$QCOWCTL" map "$T/vm.qcow2" || return 1
	one_line_error "vm.qcow2" "$QCOWCTL" checksum "$T/vm.qcow2" || return 1
	"$QCOWCTL" map -U "$T/vm.qcow2" >/dev/null && "$QCOWCTL" checksum -q -U "$T/vm.qcow2" >/dev/null
}
setup qemu_writer_start "$T/vm.qcow2"
check "an image held by a QEMU writer: tree says in use, map and checksum refuse unless -U" in_use
qemu_writer_stop

check "tree of a missing directory: one line" one_line_error "nodir" "$QCOWCTL" tree "$WORK/nodir"
check "tree of a file: one line" one_line_error "Not a directory" "$QCOWCTL" tree "$T/lone.qcow2"
check "tree: usage errors exit 64, --help describes it" ctl_usage_error tree

finish

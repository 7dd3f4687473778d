#!/bin/bash
# ctl-inspect.sh - qcowctl map, checksum and tree (SPEC 6) against QEMU as the oracle:
# `qcowctl map --json` is byte for byte `qemu-img map --output=json` and the text form is
# qemu-img's human format, on chains with a raw base with holes, zero clusters (plain and
# preallocated), discards, compressed clusters, 512 B and 64 KiB clusters, extended L2 with
# subcluster writes, metadata preallocation, an external data file, a v2 image and an overlay
# larger than its backing file; `qcowctl checksum` is the sha256sum of `qemu-img convert -O raw`
# (of `convert -l` for IMAGE@SNAP, by name and by id, file names containing '@'), reading only
# the data of an 8 GiB sparse image, and stopped by SIGINT; `qcowctl tree` draws a directory of
# chains (a shared base with two overlays, a raw base, snapshots, missing and outside backing
# files, an image in use) in text and JSON; every error is one line and a non-zero exit; nothing is
# written to the images.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

D=$WORK/img
mkdir -p "$D"
cd "$D" || exit 1

# ---- fixtures ----

# raw base with holes, then three qcow2 layers of 64 KiB clusters; top has a snapshot
setup qemu-img create -q -f raw base.raw 4M
setup qio_raw base.raw "write -P 0x11 0 1M" "write -P 0x12 3M 64k" "write -P 0x13 3200k 4k"
setup qcreate -b base.raw -F raw l1.qcow2
setup qio l1.qcow2 "write -P 0x21 512k 256k" "write -z 2M 128k" "discard 0 64k" \
	"write -P 0x22 1536k 192k" "write -z 1536k 64k" "write -z -u 1600k 64k"
setup qcreate -b l1.qcow2 -F qcow2 l2.qcow2 6M # past 4M: beyond its backing file
setup qio l2.qcow2 "write -P 0x31 3M 64k" "write -z 64k 64k" "write -P 0x32 5M 4k" \
	"write -P 0x33 100k 8k"
setup qcreate -b l2.qcow2 -F qcow2 top.qcow2
setup qio top.qcow2 "write -P 0x41 0 32k" "discard 3M 64k" "write -P 0x42 4160k 64k"
setup qemu-img snapshot -c s1 top.qcow2
setup qio top.qcow2 "write -P 0x43 256k 1M" "write -z 4M 512k" "write -P 0x44 5M 8k"

# compressed clusters (64 KiB and 512 B), and an overlay on compressed data
setup qcreate src.qcow2 2M
setup qio src.qcow2 "write -P 0x51 0 1M" "write -P 0x52 1536k 64k" "write -P 0x53 1800k 1k"
setup qemu-img convert -c -O qcow2 src.qcow2 comp.qcow2
setup qemu-img convert -c -O qcow2 -o cluster_size=512 src.qcow2 comp512.qcow2
setup qcreate -b comp.qcow2 -F qcow2 compov.qcow2
setup qio compov.qcow2 "write -P 0x54 64k 64k" "write -z 512k 64k"

# 512 B clusters
setup qcreate -o cluster_size=512 s0.qcow2 1M
setup qio s0.qcow2 "write -P 0x61 0 3k" "write -P 0x62 1536 1k" "write -z 8k 2k" "write -P 0x63 9k 512"
setup qcreate -o cluster_size=512 -b s0.qcow2 -F qcow2 s1.qcow2
setup qio s1.qcow2 "write -P 0x64 1k 512" "discard 8k 512" "write -z 2k 1k"

# extended L2: subcluster writes, zeros, discards; the overlay is larger than its backing
setup qcreate -o extended_l2=on x0.qcow2 2M
setup qio x0.qcow2 "write -P 0x71 8k 4k" "write -z 16k 2k" "write -P 0x72 40k 1k" \
	"write -P 0x73 128k 64k" "discard 130k 2k" "write -z 136k 4k"
setup qcreate -o extended_l2=on -b x0.qcow2 -F qcow2 x1.qcow2 3M
setup qio x1.qcow2 "write -P 0x74 10k 2k" "write -z 128k 4k" "write -P 0x75 2112k 2k"

# metadata preallocation (QEMU then looks at the host file's holes), an external data file,
# a version 2 image
setup qcreate -o preallocation=metadata pm.qcow2 1M
setup qio pm.qcow2 "write -P 0x81 64k 4k"
setup qcreate -o data_file=df.data df.qcow2 1M
setup qio df.qcow2 "write -P 0x82 64k 4k" "write -z 128k 64k"
setup qcreate -o compat=0.10 v2.qcow2 1M
setup qio v2.qcow2 "write -P 0x83 64k 4k" "write -z 128k 64k"

IMAGES=(top.qcow2 l2.qcow2 l1.qcow2 base.raw comp.qcow2 comp512.qcow2 compov.qcow2 s0.qcow2
	s1.qcow2 x0.qcow2 x1.qcow2 pm.qcow2 df.qcow2 v2.qcow2)
# QEMU reads the host files' allocation (st_blocks, SEEK_DATA) to decide whether an image is
# metadata-preallocated and where its data clusters have holes. Where it zeroed a cluster's
# copy-on-write part with fallocate, SEEK_DATA finds a hole until something reads that range
# into the page cache, and a hole again once the kernel drops those pages: so the map tests
# come first, on files nothing has read, written back (sync) and left alone.
setup sync "${IMAGES[@]}" df.data

# ---- map ----

# map_same IMAGE: --json equals qemu-img's JSON byte for byte; the text form equals qemu-img's
# human form, or both refuse (compressed clusters have no offset to show).
map_same()
{
	local img=$1 want=$WORK/map.want got=$WORK/map.got
	qemu-img map -U --output=json "$img" >"$want" || { echo "qemu-img map $img failed"; return 1; }
	"$QCOWCTL" map --json "$img" >"$got" || return 1
	diff -u --label "qemu-img map --output=json $img" --label "qcowctl map --json" "$want" "$got" ||
		return 1
	if qemu-img map -U "$img" >"$want" 2>/dev/null; then
		"$QCOWCTL" map "$img" >"$got" || return 1
		diff -u --label "qemu-img map $img" --label "qcowctl map" "$want" "$got"
	else
		one_line_error "compressed" "$QCOWCTL" map "$img"
	fi
}

# one_line_error TEXT COMMAND...: the command fails with one line on stderr, "qcowctl: ..."
# containing TEXT, and prints nothing on stdout.
one_line_error()
{
	local text=$1 out=$WORK/error.out err=$WORK/error.err rc
	shift
	"$@" >"$out" 2>"$err" </dev/null
	rc=$?
	if [ $rc = 0 ]; then
		echo "'$*' succeeded"
		return 1
	fi
	if [ "$(wc -l <"$err")" != 1 ] || ! grep -q "^qcowctl: .*$text" "$err"; then
		echo "'$*' (exit $rc) did not print one line naming '$text':"
		cat "$err"
		return 1
	fi
	[ "$1" = "$QCOWCTL" ] && [ "$2" = map ] && return 0 # map prints its header line first
	[ -s "$out" ] && { echo "'$*' printed on stdout:"; cat "$out"; return 1; }
	return 0
}

for img in "${IMAGES[@]}"; do
	check "map $img equals qemu-img map (JSON and text)" map_same "$img"
done
map_elsewhere()
{
	cmp <(cd / && qemu-img map -U "$D/top.qcow2") <(cd / && "$QCOWCTL" map "$D/top.qcow2") &&
		cmp <(cd "$WORK" && qemu-img map -U img/x1.qcow2) <(cd "$WORK" && "$QCOWCTL" map img/x1.qcow2)
}
check "map names the files as qemu-img does from other directories" map_elsewhere

# ---- checksum ----

sha_of "${IMAGES[@]}" df.data >"$WORK/before.sha"

# sum_same IMAGE [SNAPSHOT]: qcowctl checksum prints what sha256sum prints for the bytes
# qemu-img convert makes (of the snapshot: convert -l), and its own name for the argument.
sum_same()
{
	local img=$1 snap=${2:-} raw=$WORK/sum.raw want got arg=$1
	if [ -n "$snap" ]; then
		arg="$img@$snap"
		qemu-img convert -U -l "snapshot.name=$snap" -O raw "$img" "$raw" ||
			qemu-img convert -U -l "snapshot.id=$snap" -O raw "$img" "$raw" || return 1
	else
		qemu-img convert -U -O raw "$img" "$raw" || return 1
	fi
	want="$(sha256sum <"$raw" | cut -c1-64)  $arg"
	rm -f "$raw"
	got=$("$QCOWCTL" checksum -q "$arg") || return 1
	[ "$got" = "$want" ] || { echo "got  '$got'"; echo "want '$want'"; return 1; }
}

for img in "${IMAGES[@]}"; do
	check "checksum $img equals sha256sum of qemu-img convert" sum_same "$img"
done
check "checksum top.qcow2@s1 (by name) equals convert -l" sum_same top.qcow2 s1
check "checksum top.qcow2@1 (by id) equals convert -l" sum_same top.qcow2 1

setup cp s1.qcow2 at@home.qcow2
setup qemu-img rebase -u -b s0.qcow2 -F qcow2 at@home.qcow2
setup qemu-img snapshot -c 'a@b' at@home.qcow2
setup qio at@home.qcow2 "write -P 0x91 0 64k"
check "a file name with '@' is the image when it exists" sum_same at@home.qcow2
check "IMAGE@SNAP splits at the '@' that leaves an existing file" sum_same at@home.qcow2 'a@b'

checksum_json()
{
	local out=$WORK/sum.json raw=$WORK/sum.raw
	"$QCOWCTL" checksum --json -q x1.qcow2 >"$out" || return 1
	qemu-img convert -U -O raw x1.qcow2 "$raw" || return 1
	python3 - "$out" "$(sha256sum <"$raw" | cut -c1-64)" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
assert j == {"filename": "x1.qcow2", "sha256": sys.argv[2]}, j
EOF
}
check "checksum --json gives filename and sha256" checksum_json

progress_shown()
{
	local err=$WORK/progress.err
	"$QCOWCTL" checksum -p top.qcow2 >/dev/null 2>"$err" || return 1
	grep -q 'checksum \[#*\] 100.0%' "$err" || { echo "no progress bar:"; cat "$err"; return 1; }
	"$QCOWCTL" checksum -q top.qcow2 2>"$err" >/dev/null || return 1
	[ ! -s "$err" ] || { echo "-q printed:"; cat "$err"; return 1; }
}
check "checksum -p draws a progress bar to 100%, -q nothing" progress_shown

# 8 GiB, sparse: a raw file with two 64 KiB patterns and holes, under an overlay with a zeroed
# MiB and a third pattern at the end. The expected value was computed once with Python's
# hashlib (streaming the same bytes) and with `qemu-img convert -O raw | sha256sum`; hashing
# 8 GiB in the test again would double its time.
BIG_SHA=a94a606f362420fff50467f11282e9cb7b1b07994c3bddaa46d4bc7ed93caa71
setup truncate -s 8G big.raw
setup qio_raw big.raw "write -P 0x5a 0 64k" "write -P 0xa5 4G 64k"
setup qcreate -b big.raw -F raw big.qcow2
setup qio big.qcow2 "write -z 6G 1M" "write -P 0x11 8388544k 64k"
big_sum()
{
	local got trace=$WORK/big.trace
	local -a cmd=("$QCOWCTL" checksum -q big.qcow2)
	# the holes (of the raw file too) are hashed, not read: all it reads is the data and the
	# metadata (counted with strace where there is one)
	# (LeakSanitizer cannot run under ptrace)
	command -v strace >/dev/null && cmd=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
		strace -f -qq -e trace=pread64,read -o "$trace" "${cmd[@]}")
	# how fast, against qemu-img, is measured by bench/bench-jobs.sh; here a hang fails
	timeout -k 2 300 "${cmd[@]}" >"$WORK/big.out" 2>"$WORK/big.err" || { cat "$WORK/big.err"; return 1; }
	got=$(<"$WORK/big.out")
	[ "$got" = "$BIG_SHA  big.qcow2" ] || { echo "got $got"; return 1; }
	[ -f "$trace" ] || return 0
	awk -F'= ' '{ n += $NF } END { print n " bytes read"; exit !(n < 4194304) }' "$trace"
}
check "checksum of an 8 GiB sparse image reads only its data and matches" big_sum

interrupted()
{
	local pid err=$WORK/int.err rc t0
	"$QCOWCTL" checksum -q big.qcow2 >/dev/null 2>"$err" &
	pid=$!
	sleep 0.5
	t0=$(date +%s%N)
	kill -INT "$pid"
	wait "$pid"
	rc=$?
	echo "exit $rc after $((($(date +%s%N) - t0) / 1000000)) ms"
	[ $rc != 0 ] && grep -qx 'qcowctl: interrupted' "$err" && [ "$(wc -l <"$err")" = 1 ] ||
		{ cat "$err"; return 1; }
	[ $((($(date +%s%N) - t0) / 1000000)) -lt 2000 ]
}
check "SIGINT stops checksum at once with one line and a failure" interrupted
rm -f big.qcow2 big.raw

# ---- tree ----

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
cd "$D" || exit 1

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

# ---- errors ----

head -c 1024 top.qcow2 >bad.qcow2
check "map of a missing file: one line" one_line_error "missing.qcow2" "$QCOWCTL" map missing.qcow2
check "map of a malformed qcow2 file: one line" one_line_error "bad.qcow2" "$QCOWCTL" map bad.qcow2
check "checksum of a missing file: one line" one_line_error "missing.qcow2" \
	"$QCOWCTL" checksum missing.qcow2
check "checksum of a malformed qcow2 file: one line" one_line_error "bad.qcow2" \
	"$QCOWCTL" checksum bad.qcow2
check "checksum of a missing snapshot: one line" one_line_error "no snapshot 'nosuch'" \
	"$QCOWCTL" checksum top.qcow2@nosuch
check "checksum of a snapshot of a raw file: one line" one_line_error "raw files have no snapshots" \
	"$QCOWCTL" checksum base.raw@s1
check "tree of a missing directory: one line" one_line_error "nodir" "$QCOWCTL" tree "$WORK/nodir"
check "tree of a file: one line" one_line_error "Not a directory" "$QCOWCTL" tree top.qcow2
usage_errors()
{
	local c
	for c in map checksum tree; do
		"$QCOWCTL" "$c" >/dev/null 2>&1
		[ $? = 64 ] || { echo "$c without arguments did not exit 64"; return 1; }
		"$QCOWCTL" "$c" --help | grep -q "^usage: qcowctl $c " || { echo "$c --help"; return 1; }
	done
}
check "map, checksum and tree: usage errors exit 64, --help describes them" usage_errors

check "no image was changed" sha_unchanged "$WORK/before.sha"
finish

#!/bin/bash
# ctl-create.sh - `qcowctl create` against qemu-img. For a matrix of
# options (v2/v3, 512 B/64 K/2 M clusters, refcount widths 1/16/64, lazy refcounts, extended L2,
# every preallocation mode, overlays on relative and absolute backing names, raw and qcow2
# backing files): `qemu-img check` is clean; `qemu-img info` tells the same facts as for the
# image `qemu-img create` makes with the same options (backing name exactly as given); qemu-io
# writes and reads back; an overlay reads as its backing file; preallocation allocates what
# qemu-img's does (`qemu-img map`, host blocks). --dry-run creates nothing; bad options fail
# with one line naming the cause (and qemu-img refuses them too); an image another process
# writes is not replaced; a killed or interrupted create leaves nothing or the
# complete image. (qcowctl resize: ctl-resize.sh.)
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

D=$WORK/d
mkdir -p "$D/sub" "$D/q/sub"
cd "$D" || exit 1

# Facts compared in one python run at the end (a python start costs much on a loaded machine):
# lines "info|DESC|OURS.json|QEMUS.json" (qemu-img info tells the same), "map|DESC|A|B" (qemu-img
# map JSON: the same runs of depth/present/zero/data, offsets aside), "field|DESC|JSON|KEY|WANT".
BATCH=$WORK/batch
n_fields=0
: >"$BATCH"
cat >"$WORK/batch.py" <<'EOF'
import json, sys
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[1])
from helpers.qemu_json import compare_one
def runs(path):
    out = []
    for e in json.load(open(path)):
        k = (e["depth"], e["present"], e["zero"], e["data"])
        if out and out[-1][0] == k and out[-1][2] == e["start"]:
            out[-1][2] += e["length"]
        else:
            out.append([k, e["start"], e["start"] + e["length"]])
    return out
for line in open(sys.argv[2]):
    kind, desc, *args = line.rstrip("\n").split("|")
    if kind == "info":
        bad = compare_one(json.load(open(args[0])), json.load(open(args[1])), "")
    elif kind == "map":
        a, b = runs(args[0]), runs(args[1])
        bad = [] if a == b else ["ours: %s" % a, "qemu-img's: %s" % b]
    else:
        got = json.load(open(args[0])).get(args[1])
        bad = [] if str(got) == args[2] else ["%s is %r, want %r" % (args[1], got, args[2])]
    print("\t".join([desc] + bad))
EOF

# run_batch: one pass/fail per line of $BATCH.
run_batch()
{
	local desc msg
	python3 "$WORK/batch.py" "$E2E_DIR" "$BATCH" >"$WORK/batch.out" || bail "batch.py failed"
	while IFS=$'\t' read -r desc msg; do
		if [ -z "$msg" ]; then
			pass "$desc"
		else
			fail "$desc"
			echo "#   $msg"
		fi
	done <"$WORK/batch.out"
}

# writes_read_back IMAGE: qemu-io writes a pattern and reads it back, and check stays clean.
writes_read_back()
{
	local out
	out=$(qemu-io -c "write -P 0x5a 4k 68k" -c "read -P 0x5a 4k 68k" "$1" 2>&1) ||
		{ echo "$out"; return 1; }
	if grep -qiE 'fail|error' <<<"$out"; then
		echo "$out"
		return 1
	fi
	image_clean "$1"
}

# info_later DESC IMAGE KEY WANT: queue a check of one `qemu-img info` field.
info_later()
{
	local j=$WORK/field.$((++n_fields)).json
	qemu-img info -U --output=json "$2" >"$j"
	echo "field|$1|$j|$3|$4" >>"$BATCH"
}

# same_blocks OURS QEMUS: the host files hold allocated blocks within 128 KiB of each other.
same_blocks()
{
	local a b
	a=$(stat -c %b "$1") b=$(stat -c %b "$2")
	if ((a - b > 256 || b - a > 256)); then
		echo "host blocks: ours $a, qemu-img's $b (512-byte units)"
		return 1
	fi
}

# case NAME SIZE OPTS...: `qcowctl create` and `qemu-img create` with the same -o/-b/-F
# options, then the checks. SIZE "-" leaves it out (an overlay takes its backing size).
case_()
{
	local name=$1 size=$2 ours=$D/$1.qcow2 theirs=$D/q/$1.qcow2
	shift 2
	[ "$size" = - ] && size=
	# relative backing names are relative to the image's directory: keep both at one depth
	check "$name: qcowctl create" ctl create -q "$@" "$ours" $size || return
	setup qemu-img create -q -f qcow2 "$@" "$theirs" $size
	check "$name: qemu-img check is clean" image_clean "$ours"
	qemu-img info --output=json "$ours" >"$WORK/$name.info.a"
	qemu-img info --output=json "$theirs" >"$WORK/$name.info.b"
	echo "info|$name: qemu-img info tells what it tells of qemu-img's image|$WORK/$name.info.a|$WORK/$name.info.b" >>"$BATCH"
	check "$name: reads as qemu-img's image" same_content "$ours" "$theirs"
	case " $* " in
	*preallocation=*)
		qemu-img map --output=json "$ours" >"$WORK/$name.map.a"
		qemu-img map --output=json "$theirs" >"$WORK/$name.map.b"
		echo "map|$name: qemu-img map shows what it shows of qemu-img's image|$WORK/$name.map.a|$WORK/$name.map.b" >>"$BATCH"
		check "$name: host blocks allocated as for qemu-img's image" same_blocks "$ours" "$theirs"
		;;
	esac
	check "$name: qemu-io writes and reads back" writes_read_back "$ours"
}

# ---- images ----

case_ v3 10M
case_ v2 10M -o compat=0.10
case_ c512 3M -o cluster_size=512
case_ c2m 5M -o cluster_size=2M
case_ rc1 3M -o refcount_bits=1,cluster_size=4K
case_ rc64 3M -o refcount_bits=64
case_ lazy 3M -o lazy_refcounts=on
case_ extl2 3M -o extended_l2=on,cluster_size=32K
case_ big 160M -o cluster_size=512,refcount_bits=64 # refcount blocks after the L1 table
for p in metadata falloc full; do
	case_ pre-$p 3M -o preallocation=$p
	case_ pre-$p-extl2 3M -o preallocation=$p,extended_l2=on
done
case_ pre-metadata-c512 1M -o preallocation=metadata,cluster_size=512
case_ pre-falloc-v2 2M -o preallocation=falloc,compat=0.10

# ---- overlays ----

setup qemu-img create -q -f qcow2 "$D/base.qcow2" 6M
setup qio "$D/base.qcow2" "write -P 0x31 0 1M" "write -P 0x32 5M 64k"
setup cp base.qcow2 q/base.qcow2
setup qemu-img create -q -f raw "$D/sub/base.raw" 4M
setup qio_raw "$D/sub/base.raw" "write -P 0x41 64k 1M"
setup cp -r sub q/

case_ ov-rel - -b base.qcow2 -F qcow2
case_ ov-sub - -b sub/base.raw -F raw
case_ ov-abs 8M -b "$D/base.qcow2" -F qcow2 -o cluster_size=4K
case_ ov-v2 - -b base.qcow2 -F qcow2 -o compat=0.10
case_ ov-pre - -b base.qcow2 -F qcow2 -o extended_l2=on,preallocation=metadata
check "an overlay with a relative name" ctl create -q -b base.qcow2 -F qcow2 fresh-rel.qcow2
check "an overlay reads as its backing file" same_content fresh-rel.qcow2 base.qcow2
info_later "the backing name is stored as given (relative)" fresh-rel.qcow2 backing-filename \
	base.qcow2
check "an overlay one directory down, no -F" ctl create -q -b ../base.qcow2 sub/probed.qcow2
info_later "without -F the backing format is probed and stored" sub/probed.qcow2 \
	backing-filename-format qcow2
check "a relative name resolves from the image's directory (the size is the backing's)" \
	same_content sub/probed.qcow2 base.qcow2
info_later "... its size is the backing file's" sub/probed.qcow2 virtual-size 6291456
check "an overlay of a raw file, no -F, no SIZE" ctl create -q -b base.raw sub/probed-raw.qcow2
info_later "a raw backing file is probed as raw" sub/probed-raw.qcow2 backing-filename-format raw
check "... and reads as it" same_content sub/probed-raw.qcow2 sub/base.raw

# ---- --dry-run ----

check "--dry-run prints the plan" bash -c "'$QCOWCTL' create --dry-run -b base.qcow2 dry.qcow2 \
	| grep -q \"would create 'dry.qcow2'\""
check "--dry-run creates nothing" test ! -e dry.qcow2
check "--dry-run --json tells the stored backing name" bash -c "'$QCOWCTL' create --dry-run \
	--json -b base.qcow2 dry.qcow2 | grep -q '\"backing-filename\": \"base.qcow2\"'"
check "--dry-run --json creates nothing either" test ! -e dry.qcow2
sha_of v3.qcow2 >"$WORK/v3.sha"
check "--dry-run over an existing image" ctl create -q --dry-run v3.qcow2 1M
check "... leaves it unchanged" sha_unchanged "$WORK/v3.sha"

# ---- bad options: one line naming the cause, nothing created, and qemu-img refuses too ----

# create_refused CAUSE ARGS...: `qcowctl create ARGS bad.qcow2 [SIZE]` fails with one line naming CAUSE.
create_refused()
{
	local cause=$1 rc
	shift
	"$QCOWCTL" create "$@" >"$WORK/out" 2>"$WORK/err"
	rc=$?
	[ $rc != 0 ] || { echo "exit status 0"; return 1; }
	[ "$(wc -l <"$WORK/err")" = 1 ] || { echo "not one line:"; cat "$WORK/err"; return 1; }
	grep -qF -- "$cause" "$WORK/err" || { echo "no '$cause' in:"; cat "$WORK/err"; return 1; }
	[ ! -e bad.qcow2 ] || { echo "bad.qcow2 was created"; return 1; }
}

# qemu_refuses ARGS...: qemu-img create refuses the same.
qemu_refuses()
{
	if qemu-img create -q -f qcow2 "$@" 2>/dev/null; then
		rm -f bad.qcow2
		echo "qemu-img create accepted: $*"
		return 1
	fi
}

while read -r cause args; do
	eval "set -- $args"
	check "refused: $args" create_refused "$cause" "$@"
	case $cause in SIZE | 1Q) continue ;; esac
	check "qemu-img refuses it too: $args" qemu_refuses "$@"
done <<'EOF'
cluster_size -o cluster_size=3K bad.qcow2 1M
cluster_size -o cluster_size=256 bad.qcow2 1M
cluster_size -o cluster_size=4M bad.qcow2 1M
refcount_bits -o refcount_bits=3 bad.qcow2 1M
refcount_bits -o refcount_bits=128 bad.qcow2 1M
compat=1.1 -o compat=0.10,refcount_bits=8 bad.qcow2 1M
lazy_refcounts -o compat=0.10,lazy_refcounts=on bad.qcow2 1M
extended_l2 -o compat=0.10,extended_l2=on bad.qcow2 1M
16K -o extended_l2=on,cluster_size=8K bad.qcow2 1M
compat -o compat=2.0 bad.qcow2 1M
preallocation -o preallocation=sparse bad.qcow2 1M
lazy_refcounts -o lazy_refcounts=maybe bad.qcow2 1M
colour -o colour=blue bad.qcow2 1M
large bad.qcow2 64P
1Q bad.qcow2 1Q
missing.qcow2 -b missing.qcow2 -F qcow2 bad.qcow2 1M
extended_l2=on -b base.qcow2 -F qcow2 -o preallocation=metadata bad.qcow2
vmdk -b base.qcow2 -F vmdk bad.qcow2
SIZE bad.qcow2
EOF

sha_of v3.qcow2 >"$WORK/v3.sha"
check "an image cannot be its own backing file" bash -c "! '$QCOWCTL' create -b v3.qcow2 v3.qcow2 \
	2>'$WORK/err' && grep -q 'its own backing file' '$WORK/err'"
check "... (qemu-img refuses it too)" qemu_refuses -b v3.qcow2 -F qcow2 v3.qcow2
check "... and the image is unchanged" sha_unchanged "$WORK/v3.sha"

# ---- images other processes use ----

setup cp v3.qcow2 busy.qcow2
sha_of busy.qcow2 >"$WORK/busy.sha"
setup qemu_writer_start busy.qcow2
check "create refuses to replace an image qemu-io writes, naming it" holder_named create -q busy.qcow2 1M
qemu_writer_stop
check "... and the image is unchanged" sha_unchanged "$WORK/busy.sha"
check "an existing image no one writes is replaced" ctl create -q -o cluster_size=4K busy.qcow2 2M
check "... by the new one" test "$(virtual_size busy.qcow2)" = 2097152

# ---- killed and interrupted creates ----

mkdir -p "$D/k"
# nothing_or_complete DIR IMAGE SIZE: DIR holds nothing, or just IMAGE complete and clean.
nothing_or_complete()
{
	local n
	n=$(find "$1" -mindepth 1 | wc -l)
	if [ "$n" = 0 ]; then
		return 0
	fi
	[ "$n" = 1 ] && [ -e "$1/$2" ] || { echo "left in $1:"; ls -la "$1"; return 1; }
	image_clean "$1/$2" && [ "$(virtual_size "$1/$2")" = "$3" ]
}
"$QCOWCTL" create -q -o preallocation=full "$D/k/killed.qcow2" 256M &
pid=$!
sleep 0.3
kill -KILL "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
check "a create killed midway leaves nothing or the complete image" \
	nothing_or_complete "$D/k" killed.qcow2 268435456
rm -f "$D/k/"*
"$QCOWCTL" create -q -o preallocation=full "$D/k/int.qcow2" 256M 2>"$WORK/int.err" &
pid=$!
sleep 0.3
kill -INT "$pid" 2>/dev/null
wait "$pid"
rc=$?
check "a create interrupted midway leaves nothing or the complete image" \
	nothing_or_complete "$D/k" int.qcow2 268435456
if [ $rc != 0 ]; then
	check "... and says it was interrupted" grep -q interrupted "$WORK/int.err"
fi
rm -f "$D/k/"*

run_batch
finish

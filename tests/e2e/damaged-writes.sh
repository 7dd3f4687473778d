#!/bin/bash
# damaged-writes.sh - changing an image with damaged metadata never makes it worse (SPEC 5),
# with qemu-img as the oracle (its error count: corruptions + leaks + check errors, and the
# bytes it reads of the disk and of each snapshot):
#   - guest data lying in metadata (an L2 entry, with COPIED, pointing at the active L2 table,
#     the snapshot table, a snapshot's L1 table; a compressed cluster whose bytes run into a
#     refcount block and the L1 table; an L1 entry pointing at a refcount block): qcowctl
#     snapshot create, apply and delete refuse, saying where in one line, and change no byte
#     (each would rewrite metadata that the guest reads as data there, and count the
#     metadata's own refcount up or down).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$WORK" || exit 1
H=$E2E_HELPER
SRC=$WORK/src
mkdir -p "$SRC"

# mk IMAGE: a 8 MiB image with data, a compressed cluster, a snapshot, then more data
mk()
{
	qemu-img create -q -f qcow2 "$1" 8M &&
		qio "$1" "write -P 0x11 0 1M" "write -c -P 0x33 2M 64k" "write -P 0x22 3M 256k" &&
		qemu-img snapshot -c s1 "$1" &&
		qio "$1" "write -P 0x44 64k 64k" "write -P 0x55 4M 64k"
}

# errors IMAGE: qemu-img's count of what is wrong with IMAGE
errors()
{
	qemu-img check -U --output=json "$1" >"$WORK/check.json" 2>/dev/null
	python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
print(j.get("corruptions", 0) + j.get("leaks", 0) + j.get("check-errors", 0))' "$WORK/check.json"
}

# refuses_in_one_line WHY CMD...: CMD fails, printing one line that holds WHY
refuses_in_one_line()
{
	local why=$1 out
	shift
	if out=$("$@" 2>&1); then
		echo "succeeded: $*"
		return 1
	fi
	[ "$(wc -l <<<"$out")" = 1 ] || { echo "more than one line: $out"; return 1; }
	grep -q -- "$why" <<<"$out" || { echo "no '$why' in: $out"; return 1; }
}

# ---- snapshot operations on guest data lying in metadata ----

for kind in at-l2:0 at-snaptable:0 at-snapl1:0 zip-l1:0 l1-refblock; do
	name=${kind%%:*}
	img=$SRC/snap-$name.qcow2
	setup mk "$img"
	setup python3 "$H" qcow2-break "$img:$kind"
	before=$(errors "$img")
	sha_of "$img" >"snap-$name.sha"
	check "$name: qcowctl snapshot create refuses, saying where" \
		refuses_in_one_line "lies in the" "$QCOWCTL" snapshot create -q "$img" s2
	check "$name: qcowctl snapshot apply refuses, saying where" \
		refuses_in_one_line "lies in the" "$QCOWCTL" snapshot apply -q "$img" s1
	check "$name: qcowctl snapshot delete refuses, saying where" \
		refuses_in_one_line "lies in the" "$QCOWCTL" snapshot delete -q "$img" s1
	check "$name: not one byte changed" sha_unchanged "snap-$name.sha"
	check "$name: qemu-img counts as many errors as before" \
		eval '[ "$(errors "$img")" = "$before" ]'
done

finish

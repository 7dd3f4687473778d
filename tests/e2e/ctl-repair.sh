#!/bin/bash
# ctl-repair.sh - `qcowctl check --repair` against `qemu-img check -r all` as the oracle: after
# a repair of an image damaged on purpose (see ctl-check.sh) both checkers find the image clean,
# and its data (qemu-img convert -O raw) is what `qemu-img check -r all` makes of a copy (for
# the entry into the header, which QEMU can neither repair nor read, what QEMU makes of its
# repaired copy once that cluster is zeroed); a dry run changes no byte; a repair is refused
# while qemu-io holds the image for writing.
# A refcount table entry pointing into other metadata, with bad bits or past the end of the
# file: qcowctl check counts what qemu-img check counts, qcowctl info tells what qemu-img info
# tells, and --repair leaves no error where qemu-img check found some (counted by qemu-img
# before and after); damage it cannot improve is left byte for byte, with exit 4.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$WORK" || exit 1
Q=$QCOWCTL
H=$E2E_HELPER
check_images

# incompat IMAGE: the incompatible feature bits of a v3 image, as 0x...
incompat()
{
	printf '0x%x\n' "0x$(od -An -tx8 --endian=big -j72 -N8 "$1" | tr -d ' ')"
}

# ---- repairs ----

# repaired_clean IMAGE: `qcowctl check --repair` exits 0, then qemu-img check and ours are clean
repaired_clean()
{
	local out rc
	out=$("$Q" check --repair "$1" 2>&1)
	rc=$?
	[ $rc = 0 ] || { echo "qcowctl check --repair exited $rc:"; echo "$out"; return 1; }
	grep -q "^Double checking the fixed image now" <<<"$out" ||
		{ echo "no report of what was repaired:"; echo "$out"; return 1; }
	image_clean "$1" || return 1
	"$Q" check -q "$1" || { echo "qcowctl check after the repair exits $?"; return 1; }
}

# same_data A B: qemu-img reads the same bytes from both images
same_data()
{
	qemu-img convert -O raw "$1" "$1.raw" && qemu-img convert -O raw "$2" "$2.raw" &&
		cmp "$1.raw" "$2.raw"
}

# dry_run_changes_nothing IMAGE WANT_RC: --repair --dry-run exits as the check does, announces
# fixes, and the file keeps every byte
dry_run_changes_nothing()
{
	local sum out rc
	sum=$(sha256sum <"$1")
	out=$("$Q" check --repair --dry-run "$1" 2>&1)
	rc=$?
	[ $rc = "$2" ] || { echo "dry run exited $rc, want $2"; echo "$out"; return 1; }
	grep -q "would be repaired" <<<"$out" || { echo "no plan:"; echo "$out"; return 1; }
	[ "$(sha256sum <"$1")" = "$sum" ] || { echo "the dry run changed $1"; return 1; }
}

check "a dry run announces the fixes and changes nothing" dry_run_changes_nothing header.qcow2 2
check "a dirty image: the dirty bit is set" [ "$(incompat dirty.qcow2)" = 0x1 ]
check "an image marked corrupt: the corrupt bit is set" [ "$(incompat corrupt.qcow2)" = 0x2 ]

for n in $CHECK_DAMAGED; do
	check "$n: --repair leaves an image both checkers find clean" repaired_clean "$n.qcow2"
	qemu-img check -q -r all "$n.qemu.qcow2" >/dev/null 2>&1
done
for n in leak refcount eof meta copied snapcopied extrefcount corrupt dirty; do
	check "$n: the repaired image reads what qemu-img's repaired copy reads" \
		same_data "$n.qcow2" "$n.qemu.qcow2"
done
check "a dirty image: the dirty bit is cleared" [ "$(incompat dirty.qcow2)" = 0x0 ]
check "an image marked corrupt: the corrupt bit is cleared" [ "$(incompat corrupt.qcow2)" = 0x0 ]

# The entry into the header: qemu-img check -r all cannot fix it (exit 2 after its repair) nor
# read it (convert fails). Ours makes it a zero cluster: what QEMU reads once its own copy's
# cluster is zeroed (write -z, which QEMU does for such a cluster by making it a preallocated
# zero cluster, then its repair turns that into a plain zero cluster).
header_qemu_cannot()
{
	if qemu-img check "header.qemu.qcow2" >/dev/null 2>&1; then
		echo "qemu-img check -r all repaired the entry into the header after all"
		return 1
	fi
	if qemu-img convert -O raw header.qemu.qcow2 header.qemu.raw 2>/dev/null; then
		echo "QEMU reads the entry into the header after all"
		return 1
	fi
}
check "qemu-img check -r all neither repairs nor reads an entry into the header" \
	header_qemu_cannot
setup qio header.qemu.qcow2 "write -z 0 64k"
setup qemu-img check -q -r all header.qemu.qcow2
check "the entry into the header reads as zeros, as QEMU's copy with that cluster zeroed" \
	same_data header.qcow2 header.qemu.qcow2

# ---- locks ----

setup qemu_writer_start held.qcow2
repair_refused()
{
	local out
	if out=$("$Q" check --repair held.qcow2 2>&1); then
		echo "the repair ran while qemu-io held the image:"
		echo "$out"
		return 1
	fi
	grep -q "qemu-io" <<<"$out" || { echo "the holder is not named:"; echo "$out"; return 1; }
}
check "--repair is refused while qemu-io holds the image for writing, naming it" repair_refused
qemu_writer_stop
check "the refused repair changed nothing" sha_unchanged held.sha

# ---- a broken refcount table: never more errors than found, and info still works ----

# json_errors JSON: corruptions + leaks + check errors, as qemu-img check --output=json counts them
json_errors()
{
	check_counts_json "$1" | awk '{ print $1 + $2 + $3 }'
}

# A refcount table entry into other metadata, with bad bits, outside the file; on 64 KiB and
# 512-byte clusters (several refcount blocks), on a block in use and on an unused entry.
rtcases="rtl1:plain:rt-l1:0 rtl2:plain:rt-l2:0 rthdr:plain:rt-header:0 rtres:plain:rt-reserved:0
	rthigh:plain:rt-high:0 rteof:plain:rt-eof:0 rtl1s:c512:rt-l1:0 rtl1u:c512:rt-l1:3
	rtl2u:c512:rt-l2:3 rtrbs:c512:rt-refblock:0 rtrbu:c512:rt-refblock:3
	rthighs:c512:rt-high:0 rteofs:c512:rt-eof:1"
rtnames=""
for d in $rtcases; do
	IFS=: read -r name from kind idx <<<"$d"
	setup cp "$from.qcow2" "$name.qcow2"
	setup python3 "$H" qcow2-break "$name.qcow2:$kind:$idx"
	setup qemu-img convert -O raw "$from.qcow2" "$name.want.raw"
	rtnames="$rtnames $name"
done
# combinations
setup cp c512.qcow2 rtmix.qcow2
setup python3 "$H" qcow2-break rtmix.qcow2:rt-l1:0 rtmix.qcow2:rt-eof:1 rtmix.qcow2:rt-high:2
setup qemu-img convert -O raw c512.qcow2 rtmix.want.raw
rtnames="$rtnames rtmix"

# info_as_qemu IMAGE: exit 0 as qemu-img info, the same facts
info_as_qemu()
{
	qemu-img info --output=json "$1" >"$1.qi.json" || { echo "qemu-img info fails"; return 1; }
	"$Q" info --json "$1" >"$1.oi.json" 2>"$1.oi.err" ||
		{ echo "qcowctl info exits $?:"; cat "$1.oi.err"; return 1; }
	python3 "$H" info-compare "$1.oi.json" "$1.qi.json"
}

# never_worse NAME: qcowctl check counts as qemu-img before; --repair exits 0 and its own
# check of the result counts what qemu-img check then counts: no error (fewer than before);
# a later qcowctl check agrees too; the data are the same
never_worse()
{
	local n=$1 before after out rc
	qemu-img check --output=json "$n.qcow2" >"$n.qb.json" 2>/dev/null
	"$Q" check --json "$n.qcow2" >"$n.ob.json" 2>/dev/null
	python3 "$H" check-compare "$n.ob.json" "$n.qb.json" | grep -q "^same " ||
		{ python3 "$H" check-compare "$n.ob.json" "$n.qb.json"; return 1; }
	before=$(json_errors "$n.qb.json")
	[ "$before" -gt 0 ] || { echo "no damage seen"; return 1; }
	"$Q" check --repair --json "$n.qcow2" >"$n.or.json" 2>"$n.or.err"
	rc=$?
	[ $rc = 0 ] || { echo "qcowctl check --repair exited $rc:"; tail -5 "$n.or.err"; return 1; }
	qemu-img check --output=json "$n.qcow2" >"$n.qa.json" 2>/dev/null
	"$Q" check --json "$n.qcow2" >"$n.oa.json" 2>/dev/null
	# the repair's own check of its result says what qemu-img says
	[ "$(check_counts_json "$n.or.json")" = "$(check_counts_json "$n.qa.json")" ] ||
		{ echo "after --repair, its check says $(check_counts_json "$n.or.json")," \
			"qemu-img check $(check_counts_json "$n.qa.json")"; return 1; }
	after=$(json_errors "$n.qa.json")
	[ "$after" -lt "$before" ] && [ "$after" = 0 ] ||
		{ echo "qemu-img check: $before errors before the repair, $after after"; return 1; }
	python3 "$H" check-compare "$n.oa.json" "$n.qa.json" | grep -q "^same " ||
		{ python3 "$H" check-compare "$n.oa.json" "$n.qa.json"; return 1; }
	qemu-img convert -O raw "$n.qcow2" "$n.got.raw" && cmp "$n.want.raw" "$n.got.raw"
}

for n in $rtnames; do
	check "$n: qcowctl info on a broken refcount table tells what qemu-img info tells" \
		info_as_qemu "$n.qcow2"
	check "$n: --repair leaves fewer errors (none), as qemu-img check counts them" \
		never_worse "$n"
done

# Damage no repair fixes (an entry of a snapshot's own L2 table past the end of the file;
# qemu-img check -r all cannot either): exit 4, the reason, not a byte changed.
setup cp snap.qcow2 unfix.qcow2
setup python3 "$H" qcow2-break unfix.qcow2:snapeof:1088k
sha_of unfix.qcow2 >unfix.sha
not_improved()
{
	local out rc b a
	qemu-img check --output=json unfix.qcow2 >unfix.qb.json 2>/dev/null
	b=$(json_errors unfix.qb.json)
	out=$("$Q" check --repair unfix.qcow2 2>&1)
	rc=$?
	[ $rc = 4 ] || { echo "qcowctl check --repair exited $rc, want 4:"; echo "$out"; return 1; }
	grep -q "repair would not improve the image: .*; nothing changed" <<<"$out" ||
		{ echo "no reason given:"; echo "$out"; return 1; }
	sha_unchanged unfix.sha || return 1
	qemu-img check --output=json unfix.qcow2 >unfix.qa.json 2>/dev/null
	a=$(json_errors unfix.qa.json)
	[ "$b" -gt 0 ] && [ "$a" = "$b" ] || { echo "qemu-img check: $b errors, then $a"; return 1; }
}
check "a repair that would not improve the image changes nothing and says why (exit 4)" \
	not_improved

# ---- usage ----

check "-U with --repair: a usage error" \
	eval '"$Q" check -U --repair plain.qcow2 >/dev/null 2>&1; [ $? = 64 ]'

finish

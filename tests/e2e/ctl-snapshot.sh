#!/bin/bash
# ctl-snapshot.sh - qcowctl snapshot list|create|apply|delete against QEMU, on images
# qemu-img made (v2 and v3, 64 KiB and 512 B clusters, 64-bit refcounts, extended L2 entries,
# compressed clusters, a persistent bitmap, snapshots from `qemu-img snapshot -c`, a VM-state
# snapshot from QEMU's savevm): `qemu-img check` clean after every change; ours listed by
# `qemu-img snapshot -l` with the next free id; `qemu-img convert -l` of ours equals the content
# at create time after qemu-io wrote over the image; apply gives the bytes `qemu-img snapshot
# -a` gives on a copy; delete leaves the other snapshots' content, QEMU's snapshots, the bitmap
# and the VM state (QEMU's loadvm still loads it) as they were; list as qemu-img prints it;
# refusals (1-bit refcounts, a data file, a bitmap on apply, a name taken, a holder named)
# change no byte; --dry-run changes no byte; and a mounted directory shows NAME@SNAP.raw after a
# create and drops it after a delete.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v qemu-system-x86_64 >/dev/null 2>&1 || missing_prereq qemu-system-x86_64

SRC=$WORK/src
MNT=$WORK/mnt
mkdir -p "$SRC"
cd "$SRC" || exit 1

# sha IMAGE [SNAPSHOT]: SHA-256 of what qemu-img convert -O raw makes of it.
sha()
{
	rm -f "$WORK/sha.raw"
	qemu-img convert -U ${2:+-l "snapshot.name=$2"} -O raw "$1" "$WORK/sha.raw" || return 1
	sha256sum <"$WORK/sha.raw" | cut -d' ' -f1
}

# sha_is WANT IMAGE [SNAPSHOT]
sha_is()
{
	local got
	got=$(sha "$2" "${3:-}") || return 1
	[ "$got" = "$1" ] || { echo "${2}${3:+@$3}: sha256 $got, want $1"; return 1; }
}

# names IMAGE: the snapshot names qemu-img lists, one a line
names() { qemu-img snapshot -U -l "$1" | awk 'NR > 2 { print $2 }'; }

# list_matches IMAGE NAME: qemu-img snapshot -l lists NAME, and our list prints just what it
# prints, byte for byte (ids, names, sizes, dates, clocks, icounts).
list_matches()
{
	local out
	out=$(qemu-img snapshot -U -l "$1") || return 1
	grep -q "^[0-9]* *$2 " <<<"$out" || { echo "qemu-img does not list '$2'"; return 1; }
	diff -u --label "qemu-img snapshot -l" --label "qcowctl snapshot list" \
		<(echo "$out") <(ctl snapshot list -U "$1")
}

# json_matches IMAGE: our --json list has qemu-img info's snapshot fields and values.
json_matches()
{
	ctl snapshot list --json -U "$1" >"$WORK/ours.json" || return 1
	qemu-img info -U --output=json "$1" >"$WORK/qemu.json" || return 1
	python3 - "$WORK/ours.json" "$WORK/qemu.json" <<'EOF'
import json, sys
ours = json.load(open(sys.argv[1]))
qemu = json.load(open(sys.argv[2])).get("snapshots", [])
keys = ("id", "name", "vm-state-size", "date-sec", "date-nsec", "vm-clock-sec",
        "vm-clock-nsec", "icount")
bad = [] if len(ours) == len(qemu) else ["%d snapshots, qemu-img %d" % (len(ours), len(qemu))]
for i, (o, q) in enumerate(zip(ours, qemu)):
    for k in keys:
        if o.get(k) != q.get(k):
            bad.append("[%d].%s: ours %r, qemu-img %r" % (i, k, o.get(k), q.get(k)))
print("\n".join(bad))
sys.exit(1 if bad else 0)
EOF
}

# file_unchanged IMAGE SHA: the file's own bytes (not its content) are as they were.
file_unchanged()
{
	local got
	got=$(sha256sum <"$1" | cut -d' ' -f1)
	[ "$got" = "$2" ] || { echo "$1 changed"; return 1; }
}

# fails_saying TEXT COMMAND...: the command fails, its error contains TEXT.
fails_saying()
{
	local text=$1 out
	shift
	if out=$("$@" 2>&1); then
		echo "succeeded: $*"
		return 1
	fi
	grep -qF -- "$text" <<<"$out" || { echo "error lacks '$text': $out"; return 1; }
}

# hmp IMAGE COMMAND...: run HMP commands in a machine-less QEMU holding IMAGE; output in
# $WORK/hmp.out, failing if QEMU printed an error.
hmp()
{
	local img=$1 c
	shift
	for c in "$@" quit; do printf '%s\n' "$c"; done |
		timeout 30 qemu-system-x86_64 -M none -nodefaults -display none -S -monitor stdio \
			-drive "file=$img,if=none,format=qcow2,id=d0" >"$WORK/hmp.out" 2>&1 || return 1
	if grep -a -i 'error' "$WORK/hmp.out"; then
		return 1
	fi
}

# QEMU's VM state of snapshot SNAP of IMAGE still loads (on a copy: loadvm reverts the disk).
loadvm_ok()
{
	cp "$1" "$WORK/loadvm.qcow2" && hmp "$WORK/loadvm.qcow2" "loadvm $2"
}

# same_convert A B: qemu-img converts both and finds the same bytes (each convert's status is
# tested: two that fail print the same nothing)
same_convert()
{
	local a b rc
	a=$(tmpfile .raw)
	b=$(tmpfile .raw)
	qemu-img convert -U -O raw "$1" "$a" || { echo "qemu-img convert $1 failed"; return 1; }
	qemu-img convert -U -O raw "$2" "$b" || { echo "qemu-img convert $2 failed"; return 1; }
	cmp "$a" "$b"
	rc=$?
	rm -f "$a" "$b"
	return $rc
}

# ---- the images ----

fill_three() { qio "$1" "write -P 0x11 0 1M" "write -P 0x12 1536k 100k" "write -P 0x13 3M 64k"; }

setup qcreate v3.qcow2 4M
setup fill_three v3.qcow2
setup qemu-img snapshot -c q1 v3.qcow2
setup qio v3.qcow2 "write -P 0x14 64k 64k" "write -z 3M 64k"
setup qemu-img snapshot -c q2 v3.qcow2
setup qio v3.qcow2 "write -P 0x15 2M 4k"

setup qcreate -o compat=0.10 v2.qcow2 4M
setup fill_three v2.qcow2
setup qemu-img snapshot -c q1 v2.qcow2

setup qcreate -o cluster_size=512 c512.qcow2 4M
setup fill_three c512.qcow2
setup qemu-img snapshot -c q1 c512.qcow2
setup qio c512.qcow2 "write -P 0x16 700k 3k"

setup qcreate -o refcount_bits=64 r64.qcow2 4M
setup fill_three r64.qcow2

setup qcreate -o extended_l2=on ext.qcow2 4M
setup fill_three ext.qcow2
setup qio ext.qcow2 "write -P 0x17 2051k 3k"
setup qemu-img snapshot -c q1 ext.qcow2

setup qemu-img create -q -f raw plain.raw 4M
setup qio_raw plain.raw "write -P 0x21 0 1M" "write -P 0x22 2M 300k"
setup qemu-img convert -c -O qcow2 plain.raw comp.qcow2
setup qemu-img snapshot -c q1 comp.qcow2

setup qcreate bm.qcow2 4M
setup qemu-img bitmap --add bm.qcow2 b0
setup fill_three bm.qcow2

setup qcreate vm.qcow2 4M
setup fill_three vm.qcow2
setup hmp vm.qcow2 "savevm vm1"
setup qio vm.qcow2 "write -P 0x18 0 64k"
setup qemu-img snapshot -c q1 vm.qcow2
# vm1's line of qemu-img snapshot -l, VM state size and all
vm1_line() { qemu-img snapshot -U -l vm.qcow2 | grep '^1  *vm1 '; }
# (a line found now: the comparison below would pass on two empty lines)
vm1=$(vm1_line) || bail "qemu-img snapshot -l does not list vm1 as snapshot 1"
check "vm: QEMU's savevm made a snapshot with VM state" \
	bash -c "qemu-img info -U --output=json vm.qcow2 | grep -q '\"vm-state-size\": [1-9]'"

# ---- create, write over, apply, delete on each ----

# snaps_are IMAGE NAME=SHA...: qemu-img lists exactly these snapshots, with this content.
snaps_are()
{
	local img=$1 kv want got
	shift
	want=$(for kv in "$@"; do echo "${kv%%=*}"; done | sort)
	got=$(names "$img" | sort)
	[ "$want" = "$got" ] || { echo "qemu-img lists: $got; want: $want"; return 1; }
	for kv in "$@"; do
		sha_is "${kv#*=}" "$img" "${kv%%=*}" || return 1
	done
}

# both_are SHA IMAGE COPY: IMAGE and COPY both convert to SHA.
both_are() { sha_is "$1" "$2" && sha_is "$1" "$3"; }

# exercise TAG IMAGE [no-apply] [json]
exercise()
{
	local tag=$1 img=$2 s active copy=$WORK/copy.qcow2
	local -a was=()

	for s in $(names "$img"); do was+=("$s=$(sha "$img" "$s")"); done
	active=$(sha "$img")
	check "$tag: create" ctl snapshot create -q "$img" ours
	check "$tag: qemu-img check clean after create" image_clean "$img"
	check "$tag: qemu-img snapshot -l lists ours; list prints just what it prints" \
		list_matches "$img" ours
	if [ "${4:-}" = json ]; then
		check "$tag: list --json has qemu-img info's snapshot fields" json_matches "$img"
	fi
	setup qio "$img" "write -P 0xa1 0 70k" "write -P 0xa2 1M 64k" "write -z 2M 64k" \
		"discard 3M 64k" "write -P 0xa3 3900k 1k"
	check "$tag: after qemu-io wrote over it, convert -l ours is the content at create" \
		sha_is "$active" "$img" ours
	if [ "${3:-}" != no-apply ]; then
		setup cp "$img" "$copy"
		setup qemu-img snapshot -a ours "$copy"
		check "$tag: apply" ctl snapshot apply -q "$img" ours
		check "$tag: qemu-img check clean after apply" image_clean "$img"
		check "$tag: apply gives the content at create, as qemu-img snapshot -a does" \
			both_are "$active" "$img" "$copy"
		setup qio "$img" "write -P 0xa4 0 8k" "write -P 0xa5 1M 4k"
		check "$tag: a write after apply leaves ours as it was" sha_is "$active" "$img" ours
	fi
	check "$tag: delete" ctl snapshot delete -q "$img" ours
	check "$tag: qemu-img check clean after delete" image_clean "$img"
	check "$tag: ours is gone, the others kept their content" snaps_are "$img" "${was[@]}"
}

exercise v3 v3.qcow2 apply json
exercise v2 v2.qcow2 no-apply
exercise c512 c512.qcow2
exercise r64 r64.qcow2
exercise ext ext.qcow2
exercise comp comp.qcow2
exercise bitmap bm.qcow2 no-apply
check "bitmap: b0 still listed by qemu-img info" \
	bash -c "qemu-img info -U bm.qcow2 | grep -q 'name: b0'"
check "bitmap: qemu-img bitmap still works on it" qemu-img bitmap --disable bm.qcow2 b0
exercise vm vm.qcow2 apply json
check "vm: vm1 is listed as before (VM state size, date, clock)" \
	test "$(vm1_line)" = "$vm1"
check "vm: QEMU's loadvm loads vm1 after our create, apply and delete" loadvm_ok vm.qcow2 vm1

# QEMU's VM-state snapshot applied and deleted by us
setup cp vm.qcow2 vm2.qcow2
setup cp vm.qcow2 vm2-qemu.qcow2
setup qemu-img snapshot -a vm1 vm2-qemu.qcow2
check "vm: apply of QEMU's vm1" ctl snapshot apply -q vm2.qcow2 vm1
check "vm: ... gives what qemu-img snapshot -a gives" same_convert vm2.qcow2 vm2-qemu.qcow2
check "vm: ... qemu-img check clean" image_clean vm2.qcow2
check "vm: vm1 still loads after it was applied" loadvm_ok vm2.qcow2 vm1
check "vm: delete of QEMU's vm1 (by id)" ctl snapshot delete -q vm2.qcow2 1
check "vm: ... qemu-img check clean, nothing leaked" image_clean vm2.qcow2
check "vm: ... q1 kept its content" sha_is "$(sha vm.qcow2 q1)" vm2.qcow2 q1

# ---- refusals change no byte ----

setup qcreate -o refcount_bits=1 r1.qcow2 4M
setup fill_three r1.qcow2
r1=$(sha256sum <r1.qcow2 | cut -d' ' -f1)
check "1-bit refcounts: create refused, naming the cause" \
	fails_saying "1-bit refcounts" ctl snapshot create r1.qcow2 s
check "1-bit refcounts: the file is unchanged" file_unchanged r1.qcow2 "$r1"
check "1-bit refcounts: qemu-img check clean" image_clean r1.qcow2

setup qcreate -o data_file=data.raw df.qcow2 1M
check "a data file: create refused, as qemu-img does" \
	fails_saying "external data file" ctl snapshot create df.qcow2 s

v3=$(sha256sum <v3.qcow2 | cut -d' ' -f1)
check "a name taken: refused" fails_saying "exists already" ctl snapshot create v3.qcow2 q1
check "an id taken as a name: refused" fails_saying "exists already" ctl snapshot create v3.qcow2 2
check "an unknown snapshot: apply refused" fails_saying "no snapshot 'nope'" \
	ctl snapshot apply v3.qcow2 nope
check "an unknown snapshot: delete refused" fails_saying "nope" ctl snapshot delete v3.qcow2 nope
check "bitmap: apply refused, as qemu-img does" fails_saying "bitmaps" \
	ctl snapshot apply bm.qcow2 q1
check "--dry-run of create prints the plan" \
	bash -c "set -o pipefail; '$QCOWCTL' snapshot create --dry-run v3.qcow2 new |
		grep 'refcounts raised: *[1-9]' >/dev/null"
check "--dry-run --json of delete prints the plan as JSON" \
	bash -c "set -o pipefail; '$QCOWCTL' snapshot delete --dry-run --json v3.qcow2 q1 | python3 -c '
import json, sys; p = json.load(sys.stdin)
sys.exit(not (p[\"snapshots-before\"] == 2 and p[\"snapshots-after\"] == 1 and p[\"id\"] == \"1\"))'"
check "--dry-run of apply runs" ctl snapshot apply --dry-run v3.qcow2 q2
check "refusals and dry runs changed no byte" file_unchanged v3.qcow2 "$v3"

# a QEMU writer holds the image: refused, naming it
setup qemu_writer_start v3.qcow2
check "held by qemu-io: create refused, naming the holder" \
	fails_saying "qemu-io" ctl snapshot create v3.qcow2 held
check "held by qemu-io: --dry-run refused too" \
	fails_saying "qemu-io" ctl snapshot delete --dry-run v3.qcow2 q1
qemu_writer_stop
check "held by qemu-io: the file is unchanged" file_unchanged v3.qcow2 "$v3"

# ---- a mounted directory follows ----

mount_qcowfs "$SRC" "$MNT" || bail "mount failed"
check "mounted: create while no view is open" ctl snapshot create -q v3.qcow2 live
check "mounted: v3@live.raw appears" expect_exists "$MNT/v3@live.raw"
setup qemu-img convert -U -l snapshot.name=live -O raw v3.qcow2 "$WORK/live.raw"
check "mounted: v3@live.raw equals qemu-img convert -l live" \
	expect_same_bytes "$WORK/live.raw" "$MNT/v3@live.raw"
exec {held}<"$MNT/v3.raw"
check "mounted: with a view held open, --offline names the daemon as the holder" \
	fails_saying "qcowfs" ctl snapshot delete --offline v3.qcow2 live
check "mounted: with a view held open, the daemon deletes it (forwarded)" \
	ctl snapshot delete -q v3.qcow2 live
exec {held}<&-
check "mounted: v3@live.raw is gone" expect_absent "$MNT/v3@live.raw"
check "mounted: unmount" umount_qcowfs "$MNT"
check "qemu-img check clean after the mounted create and delete" image_clean v3.qcow2

# ---- the virtual size follows the snapshot applied ----

# same_state A B: the same virtual size and bytes
same_state()
{
	local a b
	a=$(qemu-img info -U "$1" | grep '^virtual size') && b=$(qemu-img info -U "$2" | grep '^virtual size') ||
		return 1
	[ "$a" = "$b" ] || { echo "$1: $a; $2: $b"; return 1; }
	same_convert "$1" "$2"
}

setup cp v3.qcow2 rs.qcow2
setup qemu-img resize -q rs.qcow2 6M
setup qio rs.qcow2 "write -P 0x31 5M 64k"
check "resized: create at 6 MiB" ctl snapshot create -q rs.qcow2 big
setup cp rs.qcow2 "$WORK/rs-qemu.qcow2"
setup qemu-img snapshot -a q1 "$WORK/rs-qemu.qcow2"
check "resized: apply of q1 (taken at 4 MiB)" ctl snapshot apply -q rs.qcow2 q1
check "resized: ... the size and bytes qemu-img snapshot -a gives" \
	same_state rs.qcow2 "$WORK/rs-qemu.qcow2"
check "resized: ... qemu-img check clean" image_clean rs.qcow2
setup qemu-img snapshot -a big "$WORK/rs-qemu.qcow2"
check "resized: apply of big gives the 6 MiB disk back" ctl snapshot apply -q rs.qcow2 big
check "resized: ... as qemu-img snapshot -a does" \
	same_state rs.qcow2 "$WORK/rs-qemu.qcow2"
check "resized: ... qemu-img check clean" image_clean rs.qcow2

check "--help is printed" bash -c "set -o pipefail; '$QCOWCTL' snapshot --help |
	grep 'usage: qcowctl snapshot list' >/dev/null"
check "a usage error exits 64" bash -c "'$QCOWCTL' snapshot create v3.qcow2; [ \$? = 64 ]"

finish

#!/bin/bash
# ctl-map.sh - qcowctl map against QEMU as the oracle: `qcowctl map --json` is byte for
# byte `qemu-img map --output=json` and the text form is qemu-img's human format, on the chains
# of lib.sh's inspect_images (a raw base with holes, zero clusters plain and preallocated,
# discards, compressed clusters, 512 B and 64 KiB clusters, extended L2 with subcluster writes,
# metadata preallocation, an external data file, a v2 image, an overlay larger than its
# backing file), from other directories too; every error is one line and a non-zero exit;
# nothing is written to the images.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

D=$WORK/img
mkdir -p "$D"
cd "$D" || exit 1
inspect_images
# each file's size and modification time before the maps (stat reads no data, so it leaves what
# SEEK_DATA finds alone; the SHA-256 below can only be taken after them)
stat -c '%n %s %y' "${IMAGES[@]}" df.data >"$WORK/before.stat"

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

for img in "${IMAGES[@]}"; do
	check "map $img equals qemu-img map (JSON and text)" map_same "$img"
done
# map_from DIR IMAGE: qemu-img map and qcowctl map, run in DIR, both succeed and print the same
# (each exit status is tested: two commands that both fail print the same nothing)
map_from()
{
	local want=$WORK/map.want got=$WORK/map.got
	(cd "$1" && qemu-img map -U "$2") >"$want" || { echo "qemu-img map $2 in $1 failed"; return 1; }
	(cd "$1" && "$QCOWCTL" map "$2") >"$got" || { echo "qcowctl map $2 in $1 failed"; return 1; }
	diff -u --label "qemu-img map $2 (in $1)" --label "qcowctl map" "$want" "$got"
}
map_elsewhere()
{
	map_from / "$D/top.qcow2" && map_from "$WORK" img/x1.qcow2
}
check "map names the files as qemu-img does from other directories" map_elsewhere

# only now: reading the files would change what SEEK_DATA finds in them (see inspect_images)
sha_of "${IMAGES[@]}" df.data >"$WORK/before.sha"

head -c 1024 top.qcow2 >bad.qcow2
check "map of a missing file: one line" one_line_error "missing.qcow2" "$QCOWCTL" map missing.qcow2
check "map of a malformed qcow2 file: one line" one_line_error "bad.qcow2" "$QCOWCTL" map bad.qcow2
check "map: usage errors exit 64, --help describes it" ctl_usage_error map

check "no image was changed" sha_unchanged "$WORK/before.sha"
check "no image was written, the maps above included (size and modification time)" \
	eval 'stat -c "%n %s %y" "${IMAGES[@]}" df.data | diff "$WORK/before.stat" -'
finish

#!/bin/bash
# ctl-bitmap.sh - persistent dirty bitmaps, read side, against QEMU as the oracle: `qcowctl info`
# lists the bitmaps as `qemu-img info` does (text block and JSON), `qcowctl bitmap list` too,
# `qcowctl map --bitmap NAME --json` is byte for byte what `qemu-img map --output=json` prints
# for `qemu-nbd -B NAME` with x-dirty-bitmap, on bitmaps qemu-img made and qemu-io dirtied
# (enabled, disabled, in use, 512 B to 2 MiB granularity, several data clusters, a disk that
# ends inside a granule); `qcowctl check` counts damage of the bitmap structures as qemu-img
# does where qemu-img opens the image, and reports the rest; `check --repair --drop-bitmap NAME`
# drops an inconsistent bitmap and leaves the image clean for qemu-img check.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_cmd qemu-nbd

D=$WORK/img
mkdir -p "$D"
cd "$D" || exit 1

# many.qcow2: 512 B clusters, bitmaps of every granularity, one disabled before the writes, one
# added after them; the writes cross granule and cluster boundaries and include zeroes and
# discards
setup qemu-img create -q -f qcow2 -o cluster_size=512 many.qcow2 8M
setup qemu-img bitmap --add -g 512 many.qcow2 fine
setup qemu-img bitmap --add -g 2M many.qcow2 coarse
setup qemu-img bitmap --add --disable many.qcow2 off
setup qemu-img bitmap --add many.qcow2 default
setup qemu-io -c 'write 0 4k' -c 'write 3M 1k' -c 'write 5242879 2' -c 'write -z 7M 64k' \
	-c 'discard 1M 512' -c 'write 8387584 512' many.qcow2
setup qemu-img bitmap --add -g 4096 many.qcow2 later
# odd.qcow2: a disk of 1 MiB + 512 B (the last granule of 64 KiB is cut short), all dirty at the
# end
setup qemu-img create -q -f qcow2 odd.qcow2 1049088
setup qemu-img bitmap --add -g 64k odd.qcow2 tail
setup qemu-io -c 'write 1048576 512' -c 'write 0 64k' odd.qcow2
# full.qcow2: every granule dirty
setup qemu-img create -q -f qcow2 full.qcow2 4M
setup qemu-img bitmap --add -g 64k full.qcow2 all
setup qemu-io -c 'write 0 4M' full.qcow2
# inuse.qcow2: a bitmap marked in use (its flags word: in use and auto), as after a crash
setup cp many.qcow2 inuse.qcow2
dir_off=$(python3 - <<'PY'
import struct
f = open("inuse.qcow2", "rb").read()
off = struct.unpack(">I", f[100:104])[0]
while True:
    t, l = struct.unpack(">II", f[off:off + 8])
    if t == 0x23852875:
        print(struct.unpack(">Q", f[off + 24:off + 32])[0])
        break
    off += 8 + ((l + 7) & ~7)
PY
)
[ -n "$dir_off" ] || bail "no bitmap directory in inuse.qcow2"
put_be inuse.qcow2 $((dir_off + 12)) 4 3
setup qemu-img create -q -f qcow2 none.qcow2 1M

# ---- info and bitmap list ----

# info_bitmaps_same IMAGE: the "bitmaps:" block of the text and the "bitmaps" array of the JSON
# of `qcowctl info` are qemu-img info's
info_bitmaps_same()
{
	local img=$1 q=$WORK/q.json o=$WORK/o.json
	qemu-img info -U "$img" | sed -n '/^    bitmaps:/,/^    [a-z]/p' | sed '$d' >"$WORK/q.txt" ||
		return 1
	"$QCOWCTL" info "$img" >"$WORK/o.all" || return 1
	sed -n '/^    bitmaps:/,/^    [a-z]/p' "$WORK/o.all" | sed '$d' >"$WORK/o.txt"
	[ -s "$WORK/q.txt" ] || { echo "qemu-img info lists no bitmaps"; return 1; }
	diff -u --label "qemu-img info $img" --label "qcowctl info" "$WORK/q.txt" "$WORK/o.txt" ||
		return 1
	qemu-img info -U --output=json "$img" >"$q" && "$QCOWCTL" info --json "$img" >"$o" ||
		return 1
	python3 "$E2E_HELPER" info-compare "$o" "$q" || return 1
	diff <(python3 "$E2E_HELPER" json-get "$q" format-specific.data.bitmaps) \
		<(python3 "$E2E_HELPER" json-get "$o" format-specific.data.bitmaps)
}

# list_same IMAGE: `qcowctl bitmap list` is the same block, unindented, and its JSON the array
list_same()
{
	local img=$1 q=$WORK/q.json o=$WORK/o.json
	qemu-img info -U "$img" | sed -n '/^    bitmaps:/,/^    [a-z]/p' | sed '$d' |
		sed 's/^    //' >"$WORK/q.txt" || return 1
	"$QCOWCTL" bitmap list "$img" >"$WORK/o.txt" || return 1
	diff -u --label "qemu-img info $img" --label "qcowctl bitmap list" "$WORK/q.txt" \
		"$WORK/o.txt" || return 1
	qemu-img info -U --output=json "$img" >"$q" && "$QCOWCTL" bitmap list --json "$img" >"$o" ||
		return 1
	diff <(python3 "$E2E_HELPER" json-get "$q" format-specific.data.bitmaps) \
		<(python3 "$E2E_HELPER" json-get "$o" bitmaps)
}

for img in many.qcow2 odd.qcow2 full.qcow2 inuse.qcow2; do
	check "info lists the bitmaps of $img as qemu-img info does (text and JSON)" \
		info_bitmaps_same "$img"
	check "bitmap list $img lists them as qemu-img info does (text and JSON)" list_same "$img"
done
no_bitmaps()
{
	"$QCOWCTL" info none.qcow2 >"$WORK/o.txt" && ! grep -q bitmaps "$WORK/o.txt" &&
		[ "$("$QCOWCTL" bitmap list none.qcow2)" = "" ] &&
		[ "$("$QCOWCTL" bitmap list --json none.qcow2 |
			python3 -c 'import json,sys; print(json.load(sys.stdin)["bitmaps"])')" = "[]" ]
}
check "an image without bitmaps lists none" no_bitmaps

# ---- map --bitmap ----

# map_bitmap_same IMAGE NAME: `qcowctl map --bitmap NAME --json` is qemu-nbd's map byte for
# byte; the text form lists exactly its dirty ranges
map_bitmap_same()
{
	nbd_dirty_map_of "$1" "$2" "$WORK/q.map" || return 1
	"$QCOWCTL" map --bitmap "$2" --json "$1" >"$WORK/o.map" || return 1
	diff -u --label "qemu-nbd -B $2 + qemu-img map" --label "qcowctl map --bitmap $2" \
		"$WORK/q.map" "$WORK/o.map" || return 1
	"$QCOWCTL" map --bitmap "$2" "$1" >"$WORK/o.txt" || return 1
	python3 - "$WORK/q.map" "$WORK/o.txt" <<'PY'
import json, sys
want = ["%#-16x%#x" % (e["start"], e["length"]) for e in json.load(open(sys.argv[1]))
        if not e["data"]]
got = open(sys.argv[2]).read().splitlines()
if got[:1] != ["Offset          Length"] or got[1:] != want:
    sys.exit("text map differs: %r, want the dirty ranges %r" % (got, want))
PY
}

for bm in fine coarse off default later; do
	check "map --bitmap $bm many.qcow2 is qemu-nbd's dirty map" map_bitmap_same many.qcow2 "$bm"
done
check "map --bitmap of a disk ending inside a granule" map_bitmap_same odd.qcow2 tail
check "map --bitmap of a bitmap dirty everywhere" map_bitmap_same full.qcow2 all
check "map --bitmap of a bitmap in use: refused in one line" \
	one_line_error "inconsistent" "$QCOWCTL" map --bitmap fine inuse.qcow2
check "map --bitmap of a bitmap the image lacks: one line" \
	one_line_error "no bitmap 'nope'" "$QCOWCTL" map --bitmap nope many.qcow2

# ---- check of the bitmap structures ----

# bm_patch IMAGE NAME KIND VALUE: patch bitmap NAME's directory entry or table of IMAGE, or
# the header's bitmap count (KIND nb)
bm_patch()
{
	python3 - "$@" <<'PY'
import struct, sys
path, name, kind, value = sys.argv[1], sys.argv[2].encode(), sys.argv[3], int(sys.argv[4], 0)
f = bytearray(open(path, "rb").read())
off = struct.unpack(">I", f[100:104])[0]
while True:
    t, l = struct.unpack(">II", f[off:off + 8])
    if t == 0:
        sys.exit("no bitmaps extension")
    if t == 0x23852875:
        ext = off + 8
        nb, _, size, d = struct.unpack(">IIQQ", f[ext:ext + 24])
        break
    off += 8 + ((l + 7) & ~7)
p = d
while p < d + size:
    table, entries, flags, typ, gran, nlen, elen = struct.unpack(">QIIBBHI", f[p:p + 24])
    if f[p + 24 + elen:p + 24 + elen + nlen] == name:
        break
    p += (24 + nlen + elen + 7) & ~7
else:
    sys.exit("no bitmap %r" % name)
if kind == "table-entry":   # the first entry of its bitmap table
    struct.pack_into(">Q", f, table, value)
elif kind == "flags":
    struct.pack_into(">I", f, p + 12, value)
elif kind == "granularity":
    f[p + 17] = value
elif kind == "nb":          # the header's bitmap count
    struct.pack_into(">I", f, ext, value)
open(path, "wb").write(f)
PY
}

# counts_same IMAGE: qcowctl check --json counts what qemu-img check counts
counts_same()
{
	local q o
	q=$(check_counts "$1") || { echo "qemu-img check gave no counts"; return 1; }
	"$QCOWCTL" check --json "$1" >"$WORK/o.json"
	o=$(check_counts_json "$WORK/o.json") || return 1
	[ "$q" = "$o" ] && return 0
	echo "check errors, corruptions, leaks: qcowctl $o, qemu-img $q"
	return 1
}

setup cp full.qcow2 past.qcow2
setup bm_patch past.qcow2 all table-entry $((1 << 32))
check "a bitmap data cluster past the end of the file: counted as qemu-img does" \
	counts_same past.qcow2
setup cp full.qcow2 ones.qcow2
setup bm_patch ones.qcow2 all table-entry 1
check "a table entry made all ones (its old cluster leaked): counted as qemu-img does" \
	counts_same ones.qcow2
setup cp many.qcow2 shared.qcow2
shared_data=$(python3 - <<'PY'
import struct
f = open("shared.qcow2", "rb").read()
off = struct.unpack(">I", f[100:104])[0]
while True:
    t, l = struct.unpack(">II", f[off:off + 8])
    if t == 0x23852875:
        d = struct.unpack(">Q", f[off + 24:off + 32])[0]
        table = struct.unpack(">Q", f[d:d + 8])[0]   # bitmap "fine", its first data cluster
        print(struct.unpack(">Q", f[table:table + 8])[0])
        break
    off += 8 + ((l + 7) & ~7)
PY
)
[ -n "$shared_data" ] && [ "$shared_data" != 0 ] || bail "bitmap 'fine' has no data cluster"
setup bm_patch shared.qcow2 default table-entry "$shared_data"
check "two bitmaps sharing a data cluster (one leaked): counted as qemu-img does" \
	counts_same shared.qcow2
setup cp inuse.qcow2 inuse-check.qcow2
check "a bitmap in use: clean, as qemu-img check says" counts_same inuse-check.qcow2
setup cp many.qcow2 gran.qcow2
setup bm_patch gran.qcow2 fine granularity 40
check_not "a granularity QEMU refuses: qemu-img cannot open it" qemu-img check gran.qcow2
check "a granularity QEMU refuses: check reports a corruption naming the bitmap" \
	eval '"$QCOWCTL" check gran.qcow2 >"$WORK/c.out" 2>&1; [ $? = 2 ] && grep -q "bitmap '"'"'fine'"'"' has an invalid granularity" "$WORK/c.out"'
setup cp many.qcow2 gran70.qcow2
setup bm_patch gran70.qcow2 fine granularity 70
check "a granularity past 63 bits: info and bitmap list print granularity 0 for it, and go on" \
	eval '"$QCOWCTL" info gran70.qcow2 >"$WORK/i.out" 2>/dev/null && "$QCOWCTL" bitmap list --json gran70.qcow2 >"$WORK/b.json" 2>/dev/null && grep -A1 "name: fine" "$WORK/i.out" | grep -qx " *granularity: 0" && python3 -c "import json,sys; b=[x for x in json.load(open(sys.argv[1]))[\"bitmaps\"] if x[\"name\"]==\"fine\"]; sys.exit(b[0][\"granularity\"] != 0)" "$WORK/b.json"'
setup cp many.qcow2 count.qcow2
setup bm_patch count.qcow2 fine nb 6
check_not "a bitmap count the directory does not hold: qemu-img cannot open it" \
	qemu-img check count.qcow2
check "a bitmap count the directory does not hold: check reports a corruption" \
	eval '"$QCOWCTL" check count.qcow2 >/dev/null; [ $? = 2 ]'

# ---- check --repair --drop-bitmap ----

# dropped_clean IMAGE NAME: check --repair --drop-bitmap NAME takes the bitmap out; qemu-img
# check then finds the image clean (the bitmap's clusters freed) and no longer lists it, and the
# other bitmaps keep their dirty maps (as qemu-nbd shows them before and after)
dropped_clean()
{
	local img=$1 name=$2 n others
	others=$(qemu-img info -U "$img" 2>/dev/null | sed -n 's/^ *name: //p' | grep -vx "$name")
	for n in $others; do
		nbd_dirty_map_of "$img" "$n" "$WORK/before.$n" 2>/dev/null || rm -f "$WORK/before.$n"
	done
	"$QCOWCTL" check -q --repair --drop-bitmap "$name" "$img" ||
		{ echo "check --repair --drop-bitmap $name $img failed"; return 1; }
	image_clean "$img" || return 1
	if lists_bitmap "$img" "$name"; then
		echo "$name still listed"
		return 1
	fi
	for n in $others; do
		lists_bitmap "$img" "$n" || { echo "$n no longer listed"; return 1; }
		[ -e "$WORK/before.$n" ] || continue
		nbd_dirty_map_of "$img" "$n" "$WORK/after.$n" &&
			cmp "$WORK/before.$n" "$WORK/after.$n" || return 1
	done
}
setup cp many.qcow2 d-gran.qcow2
setup bm_patch d-gran.qcow2 fine granularity 40
check "--drop-bitmap: an entry QEMU refuses is dropped, the image checks clean" \
	dropped_clean d-gran.qcow2 fine
drop_dry_run()
{
	cp inuse.qcow2 d-dry.qcow2 && sha_of d-dry.qcow2 >"$WORK/d.sha" || return 1
	"$QCOWCTL" check -q --repair --dry-run --drop-bitmap fine d-dry.qcow2 2>"$WORK/d.err" ||
		return 1
	grep -q "would drop bitmap 'fine', which is in use" "$WORK/d.err" || { cat "$WORK/d.err"; return 1; }
	sha_unchanged "$WORK/d.sha" && lists_bitmap d-dry.qcow2 fine
}
check "--drop-bitmap --dry-run says why it would drop the bitmap and changes nothing" drop_dry_run
setup cp inuse.qcow2 d-inuse.qcow2
check "--drop-bitmap: a bitmap in use is dropped, the image checks clean" \
	dropped_clean d-inuse.qcow2 fine
setup cp full.qcow2 d-past.qcow2
setup bm_patch d-past.qcow2 all table-entry $((1 << 32))
check "--drop-bitmap: a table pointing past the end of the file is dropped, the image checks clean" \
	dropped_clean d-past.qcow2 all
setup cp many.qcow2 d-res.qcow2
setup bm_patch d-res.qcow2 coarse table-entry 2
check "--drop-bitmap: a table entry with reserved bits is dropped, the image checks clean" \
	dropped_clean d-res.qcow2 coarse
drop_refused()
{
	sha_of many.qcow2 >"$WORK/m.sha"
	one_line_error "consistent" "$QCOWCTL" check -q --repair --drop-bitmap fine many.qcow2 &&
		one_line_error "no bitmap 'nope'" "$QCOWCTL" check -q --repair --drop-bitmap nope \
			many.qcow2 &&
		sha_unchanged "$WORK/m.sha"
}
check "--drop-bitmap refuses a consistent bitmap and a missing one, changing nothing" \
	drop_refused

check "bitmap: usage errors exit 64, --help describes it" ctl_usage_error bitmap
finish

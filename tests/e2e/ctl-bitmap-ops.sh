#!/bin/bash
# ctl-bitmap-ops.sh - qcowctl bitmap add/remove/clear/enable/disable/merge (also merge from
# another image, and qemu-img's --add/--merge spelling) and copy --bitmaps against qemu-img on
# twin copies: after each step the same bitmap names, flags and granularities in `qemu-img info
# --output=json`, the same dirty extents through qemu-nbd -B, `qemu-img check` clean; what
# qemu-img refuses is refused and changes nothing; --dry-run changes nothing; a write refused
# while QEMU holds the image, naming the holder.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_cmd qemu-nbd

D=$WORK/img
mkdir -p "$D"
cd "$D" || exit 1

# Q.qcow2 is changed by qemu-img, O.qcow2 (its twin) by qcowctl; S.qcow2 is a source of merges.
setup qemu-img create -q -f qcow2 -o cluster_size=4k Q.qcow2 16M
setup cp Q.qcow2 O.qcow2
setup qemu-img create -q -f qcow2 S.qcow2 16M
setup qemu-img bitmap --add -g 64k S.qcow2 s
setup qemu-io -c 'write 9M 100k' -c 'write 15M 4k' S.qcow2

# dirty_of IMAGE NAME: qemu-nbd's dirty map of bitmap NAME (qemu-img map JSON)
dirty_of()
{
	nbd_dirty_map_of "$1" "$2" /dev/stdout
}

# bitmaps_json IMAGE: the bitmaps qemu-img info lists (JSON, [] for none)
bitmaps_json()
{
	qemu-img info -U --output=json "$1" >"$WORK/info.json" || return 1
	python3 -c 'import json,sys
d = json.load(open(sys.argv[1]))["format-specific"]["data"]
print(json.dumps(d.get("bitmaps", [])))' "$WORK/info.json"
}

# twins_same A B: qemu-img info lists the same bitmaps in both; each consistent one has the same
# dirty extents through qemu-nbd; both check clean
twins_same()
{
	local a b names n
	a=$(bitmaps_json "$1") && b=$(bitmaps_json "$2") || return 1
	[ "$a" = "$b" ] || { echo "bitmaps differ: $1 $a, $2 $b"; return 1; }
	names=$(python3 -c 'import json,sys
for b in json.loads(sys.argv[1]):
    if "in-use" not in b["flags"]:
        print(b["name"])' "$a") || return 1
	for n in $names; do
		dirty_of "$1" "$n" >"$WORK/a.map" && dirty_of "$2" "$n" >"$WORK/b.map" || return 1
		diff -u --label "$1 $n" --label "$2 $n" "$WORK/a.map" "$WORK/b.map" || return 1
	done
	image_clean "$2"
}

# both QEMU-ARGS -- QCOWCTL-ARGS: qemu-img bitmap QEMU-ARGS on Q.qcow2 and qcowctl bitmap
# QCOWCTL-ARGS on O.qcow2 both succeed, and the twins are the same
both()
{
	local q=() i
	for ((i = 1; i <= $#; i++)); do
		[ "${!i}" = -- ] && break
		q+=("${!i}")
	done
	shift $i
	qemu-img bitmap "${q[@]}" || { echo "qemu-img bitmap ${q[*]} failed"; return 1; }
	"$QCOWCTL" bitmap "$@" || { echo "qcowctl bitmap $* failed"; return 1; }
	twins_same Q.qcow2 O.qcow2
}

# neither QEMU-ARGS -- QCOWCTL-ARGS: both refuse, O.qcow2 unchanged, one line
neither()
{
	local q=() i
	for ((i = 1; i <= $#; i++)); do
		[ "${!i}" = -- ] && break
		q+=("${!i}")
	done
	shift $i
	if qemu-img bitmap "${q[@]}" 2>/dev/null; then
		echo "qemu-img bitmap ${q[*]} succeeded"
		return 1
	fi
	sha_of O.qcow2 >"$WORK/o.sha"
	one_line_error "" "$QCOWCTL" bitmap "$@" || return 1
	sha_unchanged "$WORK/o.sha"
}

check "add: a bitmap of the default granularity" both --add Q.qcow2 x -- add O.qcow2 x
check "add -g 512 --disabled (qemu-img: --add --disable)" \
	both --add --disable -g 512 Q.qcow2 y -- add -g 512 --disabled O.qcow2 y
check "add in qemu-img's spelling, 2 MiB granularity" \
	both --add -g 2M Q.qcow2 z -- --add -g 2M O.qcow2 z
setup qemu-io -c 'write 0 4k' -c 'write 3M 10k' -c 'write -z 6M 64k' -c 'discard 12M 4k' Q.qcow2
setup qemu-io -c 'write 0 4k' -c 'write 3M 10k' -c 'write -z 6M 64k' -c 'discard 12M 4k' O.qcow2
check "the writes leave the same bitmaps" twins_same Q.qcow2 O.qcow2
check "merge x into y" both --merge x Q.qcow2 y -- merge x y O.qcow2
check "merge from another image (-b)" both --merge s -b S.qcow2 -F qcow2 Q.qcow2 x -- \
	merge -b S.qcow2 -F qcow2 s x O.qcow2
check "merge of a coarse bitmap into a fine one" both --merge z Q.qcow2 y -- \
	--merge z O.qcow2 y
check "disable x" both --disable Q.qcow2 x -- disable O.qcow2 x
check "enable y" both --enable Q.qcow2 y -- enable O.qcow2 y
check "clear z" both --clear Q.qcow2 z -- clear O.qcow2 z
check "add and merge in one command" both --add --merge x Q.qcow2 w -- --add --merge x O.qcow2 w
check "remove x" both --remove Q.qcow2 x -- remove O.qcow2 x
check "add of a name that exists: refused" neither --add Q.qcow2 y -- add O.qcow2 y
check "remove of a name that does not exist: refused" neither --remove Q.qcow2 nope -- \
	remove O.qcow2 nope
check "merge from a bitmap that does not exist: refused" neither --merge nope Q.qcow2 y -- \
	merge nope y O.qcow2
check "a granularity under 512: refused" neither --add -g 256 Q.qcow2 g -- add -g 256 O.qcow2 g
setup qemu-img create -q -f qcow2 T.qcow2 8M
setup qemu-img bitmap --add T.qcow2 t
check "merge from an image of another size: refused" neither --merge t -b T.qcow2 Q.qcow2 y -- \
	merge -b T.qcow2 t y O.qcow2
setup qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 1M
v2_refused()
{
	if qemu-img bitmap --add v2.qcow2 a 2>/dev/null; then
		echo "qemu-img added a bitmap to a v2 image"
		return 1
	fi
	one_line_error "version 2" "$QCOWCTL" bitmap add v2.qcow2 a &&
		one_line_error "version 2" "$QCOWCTL" bitmap add --dry-run v2.qcow2 a
}
check "a version 2 image cannot store bitmaps (also in a dry run)" v2_refused
setup truncate -s 1M raw.img
check "a raw file has no bitmaps: one line naming it" \
	one_line_error "not a qcow2 image" "$QCOWCTL" bitmap add raw.img a
check "merge from a bitmap another image lacks names that image" \
	one_line_error "S.qcow2': bitmap 'nope' not found" "$QCOWCTL" bitmap merge -b S.qcow2 nope y \
	O.qcow2
bitmap_dry_run_unchanged()
{
	sha_of O.qcow2 >"$WORK/o.sha"
	"$QCOWCTL" bitmap add --dry-run O.qcow2 new >"$WORK/dry.out" || return 1
	grep -q "would add bitmap 'new'" "$WORK/dry.out" || { cat "$WORK/dry.out"; return 1; }
	"$QCOWCTL" bitmap remove --dry-run --json O.qcow2 y >"$WORK/dry.json" || return 1
	[ "$(python3 "$E2E_HELPER" json-get "$WORK/dry.json" actions[0].action)" = remove ] ||
		return 1
	sha_unchanged "$WORK/o.sha"
}
check "--dry-run says what it would do and changes nothing" bitmap_dry_run_unchanged
locked_out()
{
	qemu_writer_start O.qcow2 || return 1
	holder_named bitmap add O.qcow2 held
	local rc=$?
	qemu_writer_stop
	return $rc
}
check "a write while qemu-io holds the image is refused, naming it" locked_out

# in use: QEMU refuses every change but removal of an inconsistent bitmap
setup cp Q.qcow2 Qu.qcow2
setup cp O.qcow2 Ou.qcow2
# bitmap_dir_at IMAGE: the offset of IMAGE's bitmap directory
bitmap_dir_at()
{
	python3 - "$1" <<'PY'
import struct, sys
f = open(sys.argv[1], "rb").read()
off = struct.unpack(">I", f[100:104])[0]
while True:
    t, l = struct.unpack(">II", f[off:off + 8])
    if t == 0:
        sys.exit("no bitmaps extension")
    if t == 0x23852875:
        print(struct.unpack(">Q", f[off + 24:off + 32])[0])
        break
    off += 8 + ((l + 7) & ~7)
PY
}
dir_off=$(bitmap_dir_at Ou.qcow2)
[ -n "$dir_off" ] || bail "no bitmap directory"
# the first entry (y) marked in use, in both twins
setup put_be Ou.qcow2 $((dir_off + 12)) 4 3
dir_off=$(bitmap_dir_at Qu.qcow2)
[ -n "$dir_off" ] || bail "no bitmap directory in Qu.qcow2"
setup put_be Qu.qcow2 $((dir_off + 12)) 4 3
inuse_refused()
{
	if qemu-img bitmap --clear Qu.qcow2 y 2>/dev/null; then
		echo "qemu-img cleared a bitmap in use"
		return 1
	fi
	one_line_error "inconsistent" "$QCOWCTL" bitmap clear Ou.qcow2 y
}
check "a bitmap in use cannot be cleared" inuse_refused
inuse_removed()
{
	qemu-img bitmap --remove Qu.qcow2 y && "$QCOWCTL" bitmap remove Ou.qcow2 y &&
		twins_same Qu.qcow2 Ou.qcow2
}
check "a bitmap in use can be removed" inuse_removed

# ---- copy --bitmaps ----
copy_same()
{
	qemu-img convert -O qcow2 --bitmaps O.qcow2 cq.qcow2 || return 1
	"$QCOWCTL" copy -q --bitmaps O.qcow2 co.qcow2 || return 1
	twins_same cq.qcow2 co.qcow2 || return 1
	cmp <(qemu-img convert -O raw co.qcow2 /dev/stdout) <(qemu-img convert -O raw O.qcow2 /dev/stdout)
}
check "copy --bitmaps keeps the bitmaps as qemu-img convert --bitmaps" copy_same
copy_inuse()
{
	if qemu-img convert -O qcow2 --bitmaps Oc.qcow2 cq2.qcow2 2>/dev/null; then
		echo "qemu-img copied an inconsistent bitmap"
		return 1
	fi
	one_line_error "inconsistent" "$QCOWCTL" copy -q --bitmaps Oc.qcow2 co2.qcow2 || return 1
	[ ! -e co2.qcow2 ] || { echo "co2.qcow2 was made"; return 1; }
	qemu-img convert -O qcow2 --bitmaps --skip-broken-bitmaps Oc.qcow2 cq2.qcow2 2>/dev/null &&
		"$QCOWCTL" copy -q --bitmaps --skip-broken-bitmaps Oc.qcow2 co2.qcow2 2>/dev/null &&
		twins_same cq2.qcow2 co2.qcow2
}
setup cp O.qcow2 Oc.qcow2
dir_off=$(bitmap_dir_at Oc.qcow2)
[ -n "$dir_off" ] || bail "no bitmap directory in Oc.qcow2"
setup put_be Oc.qcow2 $((dir_off + 12)) 4 3
check "copy --bitmaps refuses a bitmap in use, --skip-broken-bitmaps leaves it out" copy_inuse
finish

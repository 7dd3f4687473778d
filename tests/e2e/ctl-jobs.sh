#!/bin/bash
# ctl-jobs.sh - qcowctl commit, pull and rebase (SPEC 6) against QEMU's own tools. Every
# operation runs on a copy of a chain QEMU built (data, zero clusters and discards in every
# layer, compressed clusters, a raw base, a middle layer shorter than the others, 512 B and
# 64 KiB clusters, an extended-L2 overlay written in subclusters, v2 images) and its QEMU
# counterpart (qemu-img commit, rebase, rebase -u) runs on a second copy. Afterwards the images
# hold QEMU's bytes, the flat view of the image operated on never changed, the backing pointers
# are QEMU's, `qemu-img check` is clean, dry runs change no byte, commit refuses to change the
# content of other overlays (unless --force), every command refuses images that qemu-io or the
# mounted daemon hold for writing (naming them), internal snapshots and persistent bitmaps
# survive, libvirt's blockcommit/blockpull sequence gives QEMU's result, and a 100 GiB sparse
# overlay is committed and pulled in seconds. Two workers run the chain variants in parallel.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$WORK" || exit 1
V=$WORK/variants
mkdir -p "$V" "$WORK/c"

ctl() { "$QCOWCTL" "$@"; }

# ---- helpers (this machine forks slowly: they spawn as few processes as they can) ----

# same_content A B [FMT_B]: qemu-img compare finds the same bytes and the same size
same_content()
{
	local out
	out=$(qemu-img compare -U ${3:+-F "$3"} "$1" "$2" 2>&1)
	if [ $? != 0 ] || [[ $out == *"size mismatch"* ]]; then
		echo "qemu-img compare $1 $2: $out"
		return 1
	fi
}

# same_prefix A B LEN: the chains of A and B hold the same first LEN bytes
same_prefix()
{
	qemu-img convert -U -O raw "$1" "$C.a.raw" && qemu-img convert -U -O raw "$2" "$C.b.raw" ||
		{ echo "qemu-img convert failed"; return 1; }
	cmp -n "$3" "$C.a.raw" "$C.b.raw"
}

# view_unchanged VARIANT IMAGE: IMAGE's chain holds the variant's original top view
view_unchanged() { same_content "$2" "$V/$1.view" raw; }

# clean IMAGE...: `qemu-img check` is clean (exit 0) on each qcow2 image
clean()
{
	local f rc=0
	for f in "$@"; do
		[[ $f == *.qcow2 ]] || continue # a raw base has nothing to check
		image_clean "$f" || rc=1
	done
	return $rc
}

# expect_backing IMAGE NAME: IMAGE's backing file is NAME, as stored (qemu-img info's "backing
# file", "" when there is none)
expect_backing()
{
	local out line got=""
	out=$(qemu-img info -U "$1") || { echo "qemu-img info $1 failed"; return 1; }
	while IFS= read -r line; do
		if [[ $line == "backing file: "* ]]; then
			got=${line#backing file: }
			got=${got% (actual path: *}
		fi
	done <<<"$out"
	[ "$got" = "$2" ] || { echo "backing file of $1: '$got', want '$2'"; return 1; }
}

# emptied IMAGE: qemu-img map finds nothing the image itself provides (depth 0)
emptied()
{
	local out
	out=$(qemu-img map -U --output=json "$1") || { echo "qemu-img map $1 failed"; return 1; }
	[[ $out == *'"depth": 0, "present": true'* ]] || return 0
	echo "$out"
	echo "(the entries at depth 0 are still provided by $1)"
	return 1
}

# layer_map IMAGE OUT: qemu-img map of the image alone (no backing), host offsets included
layer_map()
{
	local spec='{"driver":"qcow2","backing":null,"file":{"driver":"file","filename":"'$1'"}}'
	qemu-img map -U --output=json "json:$spec" >"$2"
}

# layer_unchanged IMAGE BEFORE: the image's own clusters are where they were (from layer_map)
layer_unchanged()
{
	layer_map "$1" "$2.after" || return 1
	cmp -s "$2" "$2.after" && return 0
	diff "$2" "$2.after"
	return 1
}

# sha_dir DIR OUT: SHA-256 of every file in DIR; files_unchanged DIR OUT: the same files with
# the same bytes
sha_dir() { sha256sum -- "$1"/* >"$2"; }
files_unchanged()
{
	local -a now want
	now=("$1"/*)
	mapfile -t want <"$2"
	[ ${#now[@]} = ${#want[@]} ] || { echo "files in $1 now: ${now[*]##*/}"; return 1; }
	sha256sum --quiet -c "$2"
}

# run OUT COMMAND...: run, output (both streams) in OUT, the exit status in OUT.rc
run()
{
	local out=$1
	shift
	"$@" >"$out" 2>&1
	echo $? >"$out.rc"
}

# text FILE: the file's contents in $TEXT
text() { TEXT=""; IFS= read -r -d '' TEXT <"$1"; return 0; }

# ran_ok OUT: the command run by `run` exited 0
ran_ok()
{
	local rc
	read -r rc <"$1.rc"
	[ "$rc" = 0 ] && return 0
	echo "exit status $rc:"
	cat "$1"
	return 1
}

# refused OUT WORD... [-- NOTWORD...]: the command run by `run` failed with a one-line message
# naming each WORD (and none of the NOTWORDs)
refused()
{
	local out=$1 rc w not=0
	shift
	read -r rc <"$out.rc"
	text "$out"
	[ "$rc" != 0 ] || { echo "exit status 0, want a refusal: $TEXT"; return 1; }
	[[ ${TEXT%$'\n'} != *$'\n'* ]] || { echo "want a one-line error, got: $TEXT"; return 1; }
	for w in "$@"; do
		[ "$w" = -- ] && { not=1; continue; }
		if [ $not = 0 ] && [[ $TEXT != *"$w"* ]]; then
			echo "the message does not name '$w': $TEXT"
			return 1
		elif [ $not = 1 ] && [[ $TEXT == *"$w"* ]]; then
			echo "the message names '$w': $TEXT"
			return 1
		fi
	done
}

# has_lines FILE PATTERN...: FILE has a line matching each (bash) PATTERN
has_lines()
{
	local f=$1 p line found
	shift
	for p in "$@"; do
		found=0
		while IFS= read -r line; do
			# shellcheck disable=SC2053
			[[ $line == $p ]] && { found=1; break; }
		done <"$f"
		[ $found = 1 ] || { echo "no line like '$p' in:"; cat "$f"; return 1; }
	done
}

# fresh NAME VARIANT: two copies of a variant's images, $O (ours) and $R (for QEMU's tools);
# the case's other files are $C.*
fresh()
{
	C=$WORK/c/$1
	O=$C.ours R=$C.ref
	cp -a "$V/$2" "$O" && cp -a "$V/$2" "$R" || bail "cannot copy variant $2"
}

# ---- workers: groups of checks run in the background, their results replayed in order ----

_workers=()
# worker N FUNCTION ARGS...: run in a subshell with its own $WORK (its own tmpfiles and check
# output); its "ok"/"not ok" lines are counted by collect_workers
worker()
{
	local n=$1
	shift
	(
		WORK=$WORK/w$n
		mkdir -p "$WORK/c"
		"$@"
		echo "worker done"
	) >"$WORK/worker.$n" 2>&1 &
	_workers+=("$n:$!")
}

collect_workers()
{
	local w n pid line ended
	for w in "${_workers[@]}"; do
		n=${w%%:*} pid=${w#*:}
		wait "$pid"
		ended=0
		while IFS= read -r line; do
			case $line in
			"ok "*) pass "${line#* - }" ;;
			"not ok "*) fail "${line#* - }" ;;
			"worker done") ended=1 ;;
			*) echo "$line" ;;
			esac
		done <"$WORK/worker.$n"
		[ $ended = 1 ] || fail "worker $n stopped early"
	done
	_workers=()
}

# ---- 1. the chains, built by qemu-img and qemu-io ----
# Every variant is base <- mid <- top (relative backing names), of size S in clusters of C:
# base: a compressible pattern in the first half, random data in [S/2 + C, 3S/4), holes elsewhere
# (compressed clusters where it is made with convert -c); mid: partial clusters over base data,
# zero clusters, a discard, a compressed cluster; top: data over mid's and base's, zero clusters,
# a discard, a compressed cluster, the last bytes of the disk (and subclusters with extended L2).
# other.qcow2, unrelated to the chain, is a target for rebase.

# build VARIANT C SIZE OPTS BASEKIND [MIDSIZE|- [TOPOPTS]]
build()
{
	local name=$1 c=$2 s=$3 opts=$4 kind=$5 midsize=${6:-} topopts=${7:-$4} d=$V/$1 b bf
	[ "$midsize" = - ] && midsize=""
	mkdir -p "$d"
	truncate -s "$s" "$d/src.raw" &&
		dd if="$V/ones" of="$d/src.raw" bs=$((s / 2)) count=1 conv=notrunc status=none &&
		dd if="$V/random" of="$d/src.raw" bs=$((s / 4 - c)) count=1 seek=$((s / 2 + c)) \
			oflag=seek_bytes conv=notrunc status=none || return 1
	case $kind in
	compressed) b=base.qcow2 bf=qcow2
		qemu-img convert -c -O qcow2 -o "$opts,cluster_size=$c" "$d/src.raw" "$d/$b" || return 1 ;;
	qcow2) b=base.qcow2 bf=qcow2
		qemu-img convert -O qcow2 -o "$opts,cluster_size=$c" "$d/src.raw" "$d/$b" || return 1 ;;
	raw) b=base.img bf=raw
		cp "$d/src.raw" "$d/$b" || return 1 ;;
	esac
	rm -f "$d/src.raw"
	(cd "$d" && qemu-img create -q -f qcow2 -o "$opts,cluster_size=$c" -b "$b" -F "$bf" \
		mid.qcow2 $midsize) || return 1
	qio "$d/mid.qcow2" "write -P 0x21 $((2 * c + c / 2)) $((3 * c))" \
		"write -z $((8 * c)) $((2 * c))" "discard $((12 * c)) $c" \
		"write -c -P 0x22 $((14 * c)) $c" || return 1
	(cd "$d" && qemu-img create -q -f qcow2 -o "$topopts,cluster_size=$c" -b mid.qcow2 -F qcow2 \
		top.qcow2 "$s") || return 1
	qio "$d/top.qcow2" "write -P 0x31 $((3 * c)) $((4 * c + 100))" \
		"write -z $((13 * c)) $((2 * c))" "discard $((9 * c)) $c" \
		"write -P 0x32 $((s - c / 2)) $((c / 2))" \
		"write -P 0x33 $((s / 2 + 2 * c)) $c" "write -c -P 0x34 $((16 * c)) $c" || return 1
	case $topopts in
	*extended_l2=on*) # subclusters of C/32
		qio "$d/top.qcow2" "write -P 0x35 $((20 * c + 2 * c / 32)) $((c / 32))" \
			"write -z $((21 * c + 5 * c / 32)) $((2 * c / 32))" \
			"write -P 0x36 $((22 * c + 31 * c / 32)) $((c / 16))" || return 1 ;;
	esac
	qemu-img create -q -f qcow2 -o "cluster_size=$c" "$d/other.qcow2" "$s" || return 1
	qio "$d/other.qcow2" "write -P 0x41 0 $((s / 4))" "write -P 0x42 $((s / 2)) $((s / 8))" ||
		return 1
	echo "$b $bf" >"$V/$name.base"
	qemu-img convert -O raw "$d/top.qcow2" "$V/$name.view"
}

# the bases' bytes: 2 MiB of 0x11 (compressible), 1 MiB of random (incompressible) bytes
setup truncate -s 1M "$V/random"
setup python3 "$E2E_HELPER" pattern "$V/random" 1M 64k 7
setup bash -c "head -c 2M /dev/zero | tr '\\0' '\\021' >'$V/ones'"

# variant_base VARIANT: sets B (the base's file name) and BF (its format)
variant_base() { read -r B BF <"$V/$1.base"; }

# reads_zero IMAGE OFFSET LENGTH: qemu-io reads zeros there
reads_zero()
{
	local out
	out=$(qemu-io -r -U -c "read -P 0 $2 $3" "$1" 2>&1)
	[[ $out == *"read $3/$3 bytes"* && $out != *"Pattern verification failed"* ]] && return 0
	echo "$1 at $2+$3: $out"
	return 1
}

has_compressed()
{
	local out
	out=$(qemu-img check "$1") &&
		[[ $out == *" compressed clusters"* && $out != *" 0.00% compressed"* ]]
}

# info_says IMAGE TEXT: qemu-img info's text has TEXT
info_says()
{
	local out
	out=$(qemu-img info -U "$1") && [[ $out == *"$2"* ]] && return 0
	echo "$out"
	return 1
}

check_fixture()
{
	case $1 in
	std | c512 | v2)
		check "fixtures: $1: the base has compressed clusters" has_compressed "$V/$1/base.qcow2" ;;
	short)
		check "fixtures: short: the middle layer is 2 MiB, the others 4 MiB" \
			test "$(virtual_size "$V/short/mid.qcow2")" = 2097152
		check "fixtures: short: the view past the middle layer's end is zeros" \
			reads_zero "$V/short/top.qcow2" $((2097152 + 65536)) 65536
		check_not "fixtures: short: ... where the base has data" \
			reads_zero "$V/short/base.qcow2" $((2097152 + 65536)) 65536 ;;
	extl2)
		check "fixtures: extl2: the top has extended L2 entries" \
			info_says "$V/extl2/top.qcow2" "extended l2: true" ;;
	esac
	case $1 in
	v2) check "fixtures: v2: the images are version 2" \
		test "$(qcow2_field "$V/v2/top.qcow2" version)" = 2 ;;
	esac
}

# ---- 2-7. the operations on each variant, against QEMU's counterparts ----

# 2. commit, active, default base (the middle layer) vs `qemu-img commit top`
case_commit_active()
{
	local v=$1 d="$1: commit top"
	fresh "$v-active" "$v"
	run "$C.out" ctl commit -q "$O/top.qcow2"
	(cd "$R" && qemu-img commit -q top.qcow2) || fail "$v: qemu-img commit top"
	check "$d: exit status 0" ran_ok "$C.out"
	check "$d: mid.qcow2 holds QEMU's bytes" same_content "$O/mid.qcow2" "$R/mid.qcow2"
	check "$d: top's view unchanged" view_unchanged "$v" "$O/top.qcow2"
	check "$d: top is emptied" emptied "$O/top.qcow2"
	check "$d: top still backs onto mid.qcow2" expect_backing "$O/top.qcow2" mid.qcow2
	check "$d: qemu-img check clean" clean "$O/mid.qcow2" "$O/top.qcow2"
}

# 3. commit --base B of the 3-layer chain vs `qemu-img commit -b B top`, after a dry run; --drop
case_commit_base()
{
	local v=$1 d="$1: commit --base $B --drop"
	variant_base "$v"
	fresh "$v-base" "$v"
	sha_dir "$O" "$C.sha"
	run "$C.dry" ctl commit --base "$O/$B" --drop --dry-run --json "$O/top.qcow2"
	check "$d --dry-run --json: exit status 0" ran_ok "$C.dry"
	check "$d --dry-run --json: every file unchanged" files_unchanged "$O" "$C.sha"
	# the plan's JSON, read by python (on two variants: python costs)
	if [ "$v" = std ] || [ "$v" = c512 ]; then
		python3 "$E2E_HELPER" plan "$C.dry" >"$C.plan" 2>&1
		check "$d --dry-run --json: a plan: copy into $B, re-point and empty top, delete mid" \
			has_lines "$C.plan" "dry-run true" "copy $B [1-9]*" "repoint top.qcow2 $B" \
				"empty top.qcow2" "delete mid.qcow2"
	fi
	if [ "$v" = std ]; then
		run "$C.dry2" ctl commit --base "$O/$B" --drop --dry-run "$O/top.qcow2"
		check "$d --dry-run: the text plan names the steps" \
			has_lines "$C.dry2" "dry run: nothing changed*" "  copy *[(]*[1-9]* bytes[)] into */$B'" \
				"  repoint */top.qcow2' to *$B'" "  empty */top.qcow2'" "  delete */mid.qcow2'"
		check "$d --dry-run: every file unchanged" files_unchanged "$O" "$C.sha"
	fi
	run "$C.out" ctl commit -q --base "$O/$B" --drop "$O/top.qcow2"
	(cd "$R" && qemu-img commit -q -b "$B" top.qcow2) || fail "$v: qemu-img commit -b $B top"
	check "$d: exit status 0" ran_ok "$C.out"
	check "$d: $B holds QEMU's bytes" same_content "$O/$B" "$R/$B"
	check "$d: $B's view is top's original view" view_unchanged "$v" "$O/$B"
	check "$d: top's view unchanged" view_unchanged "$v" "$O/top.qcow2"
	check "$d: top backs onto '$B' (relative, as it was)" expect_backing "$O/top.qcow2" "$B"
	check "$d: top is emptied" emptied "$O/top.qcow2"
	check "$d: mid.qcow2 is deleted" test ! -e "$O/mid.qcow2"
	check "$d: qemu-img check clean" clean "$O/$B" "$O/top.qcow2"
}

# 4. commit --top mid (intermediate) vs `qemu-img commit mid` + `qemu-img rebase -u -b B top`
case_commit_mid()
{
	local v=$1 drop=${2:-} d
	variant_base "$v"
	d="$v: commit --top mid${drop:+ $drop}"
	fresh "$v-mid$drop" "$v"
	layer_map "$O/top.qcow2" "$C.map"
	run "$C.out" ctl commit -q --top "$O/mid.qcow2" $drop "$O/top.qcow2"
	(cd "$R" && qemu-img commit -q mid.qcow2 && qemu-img rebase -u -b "$B" -F "$BF" top.qcow2) ||
		fail "$v: qemu-img commit mid"
	check "$d: exit status 0" ran_ok "$C.out"
	if [ "$v" = short ]; then
		# QEMU commits mid's 2 MiB only, and the base's data past them then shows through top
		# (its view changes); the view must not change: zeros past 2 MiB where top has none
		check "$d: $B holds QEMU's bytes over mid's 2 MiB" \
			same_prefix "$O/$B" "$R/$B" 2097152
	else
		check "$d: $B holds QEMU's bytes" same_content "$O/$B" "$R/$B"
	fi
	check "$d: top's view unchanged" view_unchanged "$v" "$O/top.qcow2"
	check "$d: top backs onto '$B'" expect_backing "$O/top.qcow2" "$B"
	check "$d: top's own clusters untouched (qemu-img map of top alone)" \
		layer_unchanged "$O/top.qcow2" "$C.map"
	if [ -n "$drop" ]; then
		check "$d: mid.qcow2 is deleted" test ! -e "$O/mid.qcow2"
	else
		check "$d: mid.qcow2 is kept" test -e "$O/mid.qcow2"
	fi
	check "$d: qemu-img check clean" clean "$O/$B" "$O/top.qcow2"
}

# 6. pull [--base B] vs `qemu-img rebase -b B top` (or -b "")
case_pull()
{
	local v=$1 base=${2:-} d
	variant_base "$v"
	[ -n "$base" ] && base=$B
	d="$v: pull${base:+ --base $B}"
	fresh "$v-pull${base:+-base}" "$v"
	run "$C.out" ctl pull -q ${base:+--base "$B"} "$O/top.qcow2"
	(cd "$R" && qemu-img rebase -b "$base" ${base:+-F "$BF"} top.qcow2) ||
		fail "$v: qemu-img rebase -b '$base' top"
	check "$d: exit status 0" ran_ok "$C.out"
	check "$d: top's view unchanged" view_unchanged "$v" "$O/top.qcow2"
	check "$d: the same view as QEMU's" same_content "$O/top.qcow2" "$R/top.qcow2"
	check "$d: the backing file is '$base' (as qemu-img rebase writes it)" \
		expect_backing "$O/top.qcow2" "$base"
	check "$d: qemu-img check clean" clean "$O/top.qcow2"
	check "$d: the lower layers unchanged" cmp "$O/mid.qcow2" "$V/$v/mid.qcow2"
	[ -z "$base" ] || check "$d: the base unchanged" cmp "$O/$B" "$V/$v/$B"
}

# 7. rebase [-u] -b NEW vs `qemu-img rebase [-u] -b NEW`
case_rebase()
{
	local v=$1 new=$2 unsafe=${3:-} fmt=qcow2 tag d
	variant_base "$v"
	[ "$new" = "$B" ] && fmt=$BF
	tag=${new:-none}
	d="$v: rebase${unsafe:+ $unsafe} -b '$new'"
	fresh "$v-rebase-${tag%%.*}$unsafe" "$v"
	layer_map "$O/top.qcow2" "$C.map"
	run "$C.out" ctl rebase -q $unsafe -b "$new" "$O/top.qcow2"
	(cd "$R" && qemu-img rebase -q $unsafe -b "$new" ${new:+-F "$fmt"} top.qcow2) ||
		fail "$v: qemu-img rebase $unsafe -b '$new'"
	check "$d: exit status 0" ran_ok "$C.out"
	check "$d: the same view as QEMU's" same_content "$O/top.qcow2" "$R/top.qcow2"
	if [ -z "$unsafe" ]; then
		check "$d: top's view unchanged" view_unchanged "$v" "$O/top.qcow2"
	else
		check "$d: only the pointer changed (qemu-img map of top alone)" \
			layer_unchanged "$O/top.qcow2" "$C.map"
	fi
	check "$d: the backing file is '$new' (as qemu-img rebase writes it)" \
		expect_backing "$O/top.qcow2" "$new"
	check "$d: qemu-img check clean" clean "$O/top.qcow2"
}

# 5. commit refuses to change what other overlays show, naming them; --force commits anyway
case_siblings()
{
	local d="siblings"
	fresh siblings std
	(cd "$O" && qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 sib.qcow2 &&
		qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 sib2.qcow2) || bail "sibling overlays"
	sha_dir "$O" "$C.sha"
	run "$C.out" ctl commit --base "$O/base.qcow2" "$O/top.qcow2"
	check "$d: commit --base base.qcow2 refused, naming sib.qcow2 and sib2.qcow2" \
		refused "$C.out" sib.qcow2 sib2.qcow2
	run "$C.out2" ctl commit "$O/top.qcow2"
	check "$d: commit into mid.qcow2 refused, naming sib2.qcow2 (and not sib.qcow2)" \
		refused "$C.out2" sib2.qcow2 -- sib.qcow2
	# committing mid into base changes nothing sib2 shows (mid covers what base takes in)
	run "$C.out3" ctl commit --top "$O/mid.qcow2" "$O/top.qcow2"
	check "$d: intermediate commit of mid.qcow2 refused, naming sib.qcow2 (not sib2.qcow2)" \
		refused "$C.out3" sib.qcow2 -- sib2.qcow2
	check "$d: nothing changed (SHA-256 of every file)" files_unchanged "$O" "$C.sha"
	# ... but deleting mid would leave sib2 without its backing file
	mv "$O/sib.qcow2" "$C.sib.qcow2"
	run "$C.out5" ctl commit --top "$O/mid.qcow2" --drop "$O/top.qcow2"
	check "$d: intermediate commit --drop refused, naming sib2.qcow2 (its backing file)" \
		refused "$C.out5" sib2.qcow2
	check "$d: mid.qcow2 still there" test -e "$O/mid.qcow2"
	mv "$C.sib.qcow2" "$O/sib.qcow2"
	check "$d: nothing changed (SHA-256 of every file)" files_unchanged "$O" "$C.sha"
	run "$C.out4" ctl commit -q --force --base "$O/base.qcow2" "$O/top.qcow2"
	check "$d: commit --force --base base.qcow2 proceeds" ran_ok "$C.out4"
	check "$d: --force: base.qcow2's view is top's" view_unchanged std "$O/base.qcow2"
	check "$d: --force: top's view unchanged" view_unchanged std "$O/top.qcow2"
	check "$d: --force: qemu-img check clean" clean "$O"/*.qcow2
}

# ---- 8. internal snapshots and persistent bitmaps that QEMU wrote survive ----
# base (snapshot s1, bitmap b0) <- mid (bitmap bm) <- top (snapshot ts, bitmap bt). mid's data
# is zeros where base has none, or covered by top when ts was taken: so ts reads the same
# through base as through mid, and pull --base base must keep it.

sb_build()
{
	local d=$V/sb
	mkdir -p "$d" && cd "$d" || return 1
	qemu-img create -q -f qcow2 base.qcow2 4M && qio base.qcow2 "write -P 0x11 0 1M" &&
		qemu-img snapshot -c s1 base.qcow2 && qio base.qcow2 "write -P 0x12 512k 1M" &&
		qemu-img bitmap --add base.qcow2 b0 || return 1
	qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2 &&
		qio mid.qcow2 "write -P 0x21 1536k 128k" "write -P 0 2M 512k" &&
		qemu-img bitmap --add mid.qcow2 bm || return 1
	qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 &&
		qio top.qcow2 "write -P 0x31 1536k 256k" && qemu-img snapshot -c ts top.qcow2 &&
		qio top.qcow2 "write -P 0x32 1M 256k" "write -P 0x33 3M 64k" &&
		qemu-img bitmap --add top.qcow2 bt || return 1
	cd "$WORK" || return 1
	qemu-img convert -O raw "$d/top.qcow2" "$V/sb.view" &&
		qemu-img convert -l snapshot.name=s1 -O raw "$d/base.qcow2" "$V/sb.s1" &&
		qemu-img convert -l snapshot.name=ts -O raw "$d/top.qcow2" "$V/sb.ts" || return 1
	qemu-img snapshot -l "$d/base.qcow2" >"$V/sb.base.snaps" &&
		qemu-img snapshot -l "$d/top.qcow2" >"$V/sb.top.snaps" || return 1
}

# check_counts IMAGE: "CHECK-ERRORS CORRUPTIONS LEAKS" from `qemu-img check --output=json`
check_counts()
{
	local out k v=() re
	out=$(qemu-img check --output=json "$1" 2>/dev/null)
	for k in check-errors corruptions leaks; do
		re="\"$k\": ([0-9]+)"
		if [[ $out =~ $re ]]; then v+=("${BASH_REMATCH[1]}"); else v+=(0); fi
	done
	echo "${v[*]}"
}

# bitmap_leaks IMAGE: the clusters `qemu-img check` reports leaked once IMAGE's bitmaps are no
# longer trusted (its autoclear bit cleared, on a copy next to it, so that its backing file
# opens): the bitmaps' own clusters
bitmap_leaks()
{
	local c=$1.leaks.qcow2 got
	cp "$1" "$c" && python3 "$E2E_HELPER" clear-autoclear "$c" || return 1
	got=$(check_counts "$c")
	rm -f "$c"
	[ -n "$got" ] || return 1
	echo "${got##* }"
}

# bitmaps_kept IMAGE BITMAP LEAKS WRITTEN: an image only re-pointed still lists BITMAP and checks
# clean. One written (WRITTEN=1) without its bitmaps updated keeps the bitmaps extension with the
# autoclear bit cleared (SPEC 3), and `qemu-img check` then finds no error and exactly LEAKS
# leaked clusters, the bitmaps' own; still listing the bitmap and checking clean is also right.
bitmaps_kept()
{
	local img=$1 name=$2 leaks=$3 written=$4 f got ac
	if lists_bitmap "$img" "$name"; then
		image_clean "$img"
		return
	fi
	[ "$written" = 1 ] || { echo "bitmap $name no longer listed by qemu-img info $img"; return 1; }
	f=$(python3 "$E2E_HELPER" qcow2-fields "$img") || return 1
	[[ $f == *$'\n'"exts "*0x23852875* ]] || { echo "$img lost its bitmaps extension: $f"; return 1; }
	[[ $f =~ autoclear\ (0x[0-9a-f]+) ]] && ac=${BASH_REMATCH[1]} || ac=1
	[ $((ac & 1)) = 0 ] || { echo "$img: bitmaps neither listed nor marked stale: $f"; return 1; }
	got=$(check_counts "$img")
	[ "$got" = "0 0 $leaks" ] && return 0
	echo "qemu-img check $img: check errors, corruptions, leaks: $got (want 0 0 $leaks)"
	qemu-img check "$img" 2>&1 | head -n 10
	return 1
}

# snapshot_same IMAGE SNAP RAW [REF]: SNAP of IMAGE reads RAW (if not "") and what it reads in REF
snapshot_same()
{
	qemu-img convert -U -l "snapshot.name=$2" -O raw "$1" "$C.snap.raw" || return 1
	if [ -n "$3" ]; then
		cmp "$C.snap.raw" "$3" || { echo "(snapshot $2 of $1 changed)"; return 1; }
	fi
	[ -n "${4:-}" ] || return 0
	qemu-img convert -U -l "snapshot.name=$2" -O raw "$4" "$C.snap.ref" || return 1
	cmp "$C.snap.raw" "$C.snap.ref" || { echo "(snapshot $2 of $1 differs from QEMU's)"; return 1; }
}

# lists_bitmap IMAGE NAME: qemu-img info lists the persistent bitmap NAME
lists_bitmap()
{
	local out
	out=$(qemu-img info -U "$1") || return 1
	[[ $out == *"name: $2"$'\n'* ]]
}

# snapshots_listed IMAGE LIST: `qemu-img snapshot -l` says the same as before
snapshots_listed()
{
	qemu-img snapshot -U -l "$1" >"$C.snaps" || return 1
	cmp -s "$C.snaps" "$2" || { diff "$2" "$C.snaps"; return 1; }
}

snapshots_bitmaps()
{
	local lb lm lt d
	setup sb_build
	lb=$(bitmap_leaks "$V/sb/base.qcow2") && lm=$(bitmap_leaks "$V/sb/mid.qcow2") &&
		lt=$(bitmap_leaks "$V/sb/top.qcow2") || bail "qemu-img check of a copy with stale bitmaps"
	check "fixtures: sb: base lists bitmap b0" lists_bitmap "$V/sb/base.qcow2" b0
	check "fixtures: sb: mid lists bitmap bm" lists_bitmap "$V/sb/mid.qcow2" bm
	check "fixtures: sb: top lists bitmap bt" lists_bitmap "$V/sb/top.qcow2" bt

	d="snapshots, bitmaps: pull --base base.qcow2"
	fresh sb-pull sb
	run "$C.out" ctl pull -q --base base.qcow2 "$O/top.qcow2"
	(cd "$R" && qemu-img rebase -b base.qcow2 -F qcow2 top.qcow2) || fail "$d: qemu-img rebase"
	check "$d: exit status 0" ran_ok "$C.out"
	check "$d: top's view unchanged" same_content "$O/top.qcow2" "$V/sb.view" raw
	check "$d: the same view as QEMU's" same_content "$O/top.qcow2" "$R/top.qcow2"
	check "$d: top's snapshot list unchanged" snapshots_listed "$O/top.qcow2" "$V/sb.top.snaps"
	check "$d: snapshot ts reads as before, as QEMU's" \
		snapshot_same "$O/top.qcow2" ts "$V/sb.ts" "$R/top.qcow2"
	check "$d: top's bitmap bt kept" bitmaps_kept "$O/top.qcow2" bt "$lt" 1
	check "$d: the backing file is base.qcow2" expect_backing "$O/top.qcow2" base.qcow2

	d="snapshots, bitmaps: commit --top mid"
	fresh sb-mid sb
	run "$C.out" ctl commit -q --top "$O/mid.qcow2" "$O/top.qcow2"
	(cd "$R" && qemu-img commit -q mid.qcow2 && qemu-img rebase -u -b base.qcow2 -F qcow2 top.qcow2) ||
		fail "$d: qemu-img commit"
	check "$d: exit status 0" ran_ok "$C.out"
	check "$d: base.qcow2 holds QEMU's bytes" same_content "$O/base.qcow2" "$R/base.qcow2"
	check "$d: top's view unchanged" same_content "$O/top.qcow2" "$V/sb.view" raw
	check "$d: base's snapshot list unchanged" snapshots_listed "$O/base.qcow2" "$V/sb.base.snaps"
	check "$d: base's snapshot s1 reads as before" snapshot_same "$O/base.qcow2" s1 "$V/sb.s1"
	check "$d: top's snapshot list unchanged" snapshots_listed "$O/top.qcow2" "$V/sb.top.snaps"
	check "$d: top's snapshot ts reads as before, as QEMU's" \
		snapshot_same "$O/top.qcow2" ts "$V/sb.ts" "$R/top.qcow2"
	check "$d: base's bitmap b0 kept" bitmaps_kept "$O/base.qcow2" b0 "$lb" 1
	check "$d: top (only re-pointed) still lists bt, checks clean" bitmaps_kept "$O/top.qcow2" bt 0 0

	d="snapshots, bitmaps: commit top (into mid)"
	fresh sb-active sb
	run "$C.out" ctl commit -q "$O/top.qcow2"
	(cd "$R" && qemu-img commit -q top.qcow2) || fail "$d: qemu-img commit"
	check "$d: exit status 0" ran_ok "$C.out"
	check "$d: mid.qcow2 holds QEMU's bytes" same_content "$O/mid.qcow2" "$R/mid.qcow2"
	check "$d: top's view unchanged" same_content "$O/top.qcow2" "$V/sb.view" raw
	check "$d: top is emptied" emptied "$O/top.qcow2"
	check "$d: top's snapshot list unchanged" snapshots_listed "$O/top.qcow2" "$V/sb.top.snaps"
	# ts reads its own clusters over mid, which took in top's data: what QEMU's ts reads
	check "$d: top's snapshot ts reads what QEMU's does" \
		snapshot_same "$O/top.qcow2" ts "" "$R/top.qcow2"
	check "$d: mid's bitmap bm kept" bitmaps_kept "$O/mid.qcow2" bm "$lm" 1
	check "$d: top's bitmap bt kept" bitmaps_kept "$O/top.qcow2" bt "$lt" 1
}

# ---- 10. libvirt's external snapshots: base <- snap1 <- snap2 with absolute backing names, as
# virsh snapshot-create --disk-only makes them; blockcommit of snap1 into base, then blockpull
# into snap2; against qemu-img commit snap1 + rebase -u, then rebase -b "" on copies ----
libvirt()
{
	local d="libvirt" o r
	mkdir -p "$WORK/lv/ours" "$WORK/lv/ref"
	o=$WORK/lv/ours r=$WORK/lv/ref
	setup qemu-img create -q -f qcow2 "$o/base.qcow2" 4M
	setup qio "$o/base.qcow2" "write -P 0x11 0 2M" "write -P 0x12 3M 512k"
	setup qemu-img create -q -f qcow2 -b "$o/base.qcow2" -F qcow2 "$o/snap1.qcow2"
	setup qio "$o/snap1.qcow2" "write -P 0x21 1M 1M" "write -z 0 64k" "discard 3M 64k"
	setup qemu-img create -q -f qcow2 -b "$o/snap1.qcow2" -F qcow2 "$o/snap2.qcow2"
	setup qio "$o/snap2.qcow2" "write -P 0x31 1536k 1M" "write -P 0x32 4000k 96k"
	setup qemu-img convert -O raw "$o/snap2.qcow2" "$WORK/lv/view"
	# the reference chain names its own files, by absolute path too
	setup cp -a "$o/base.qcow2" "$o/snap1.qcow2" "$o/snap2.qcow2" "$r/"
	setup qemu-img rebase -u -b "$r/base.qcow2" -F qcow2 "$r/snap1.qcow2"
	setup qemu-img rebase -u -b "$r/snap1.qcow2" -F qcow2 "$r/snap2.qcow2"

	run "$WORK/lv/out" ctl commit -q --top "$o/snap1.qcow2" --base "$o/base.qcow2" "$o/snap2.qcow2"
	qemu-img commit -q "$r/snap1.qcow2" &&
		qemu-img rebase -u -b "$r/base.qcow2" -F qcow2 "$r/snap2.qcow2" ||
		fail "$d: qemu-img commit snap1"
	check "$d: blockcommit snap1 into base: exit status 0" ran_ok "$WORK/lv/out"
	check "$d: blockcommit: base.qcow2 holds QEMU's bytes" \
		same_content "$o/base.qcow2" "$r/base.qcow2"
	check "$d: blockcommit: snap2's view unchanged" \
		same_content "$o/snap2.qcow2" "$WORK/lv/view" raw
	check "$d: blockcommit: snap2's view is QEMU's" same_content "$o/snap2.qcow2" "$r/snap2.qcow2"
	check "$d: blockcommit: snap2 backs onto base.qcow2 by absolute path (as it was)" \
		expect_backing "$o/snap2.qcow2" "$o/base.qcow2"
	check "$d: blockcommit: qemu-img check clean" clean "$o"/*.qcow2

	run "$WORK/lv/out2" ctl pull -q "$o/snap2.qcow2"
	qemu-img rebase -b "" "$r/snap2.qcow2" || fail "$d: qemu-img rebase -b ''"
	check "$d: blockpull into snap2: exit status 0" ran_ok "$WORK/lv/out2"
	check "$d: blockpull: snap2's view unchanged" same_content "$o/snap2.qcow2" "$WORK/lv/view" raw
	check "$d: blockpull: snap2's view is QEMU's" same_content "$o/snap2.qcow2" "$r/snap2.qcow2"
	check "$d: blockpull: snap2 stands alone" expect_backing "$o/snap2.qcow2" ""
	check "$d: blockpull: qemu-img check clean" clean "$o/snap2.qcow2"
}

# allocated bytes of a file
alloc() { echo $(($(stat -c %b "$1") * 512)); }
# timed OUT COMMAND...: run with a 60 s limit; the seconds it took in OUT.secs
timed()
{
	local out=$1 t0
	shift
	t0=$EPOCHREALTIME
	run "$out" timeout 60 "$@"
	awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f\n", b - a }' >"$out.secs"
}
fast() { awk '{ exit !($1 < 10) }' "$1.secs" || { echo "took $(cat "$1.secs") s"; return 1; }; }

# ---- 11. sparse: a 100 GiB overlay with 16 MiB written, in 4 places, commits and pulls in
# seconds, and the base grows by about 16 MiB ----
sparse()
{
	local S before grown
	S=$WORK/sparse
	mkdir -p "$S"
	setup qemu-img create -q -f qcow2 "$S/base.qcow2" 100G
	setup qio "$S/base.qcow2" "write -P 0x11 1G 1M"
	setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$S/top.qcow2"
	setup qio "$S/top.qcow2" "write -P 0x21 0 4M" "write -P 0x22 33G 4M" "write -P 0x23 66G 4M" \
		"write -P 0x24 $((100 * 1024 - 4))M 4M"
	setup cp -a "$S" "$WORK/sparse.orig"
	before=$(alloc "$S/base.qcow2")
	timed "$S/out" "$QCOWCTL" commit -q "$S/top.qcow2"
	echo "# sparse: commit took $(cat "$S/out.secs") s"
	check "sparse: commit of the 100 GiB overlay: exit status 0" ran_ok "$S/out"
	check "sparse: commit took less than 10 s" fast "$S/out"
	grown=$(($(alloc "$S/base.qcow2") - before))
	echo "# sparse: the base grew by $grown bytes"
	check "sparse: the base grew by 16 to 18 MiB" \
		test "$grown" -ge $((16 << 20)) -a "$grown" -le $((18 << 20))
	check "sparse: the view unchanged" same_content "$S/top.qcow2" "$WORK/sparse.orig/top.qcow2"
	check "sparse: top is emptied" emptied "$S/top.qcow2"
	check "sparse: qemu-img check clean" clean "$S/base.qcow2" "$S/top.qcow2"
	before=$(alloc "$S/top.qcow2")
	timed "$S/out" "$QCOWCTL" pull -q "$S/top.qcow2"
	echo "# sparse: pull took $(cat "$S/out.secs") s"
	check "sparse: pull into the 100 GiB overlay: exit status 0" ran_ok "$S/out"
	check "sparse: pull took less than 10 s" fast "$S/out"
	grown=$(($(alloc "$S/top.qcow2") - before))
	echo "# sparse: the overlay grew by $grown bytes"
	check "sparse: the overlay grew by 17 to 19 MiB (16 MiB, and the base's 1 MiB)" \
		test "$grown" -ge $((17 << 20)) -a "$grown" -le $((19 << 20))
	check "sparse: the view unchanged" same_content "$S/top.qcow2" "$WORK/sparse.orig/top.qcow2"
	check "sparse: top stands alone" expect_backing "$S/top.qcow2" ""
	check "sparse: qemu-img check clean" clean "$S/top.qcow2"
}

# variants VARIANT...: build, then every case
variants()
{
	local v
	for v in "$@"; do
		setup build "$v" ${VSPEC[$v]}
		check_fixture "$v"
	done
	for v in "$@"; do
		variant_base "$v"
		for c in ${VCASES[$v]}; do
			case $c in
			active) case_commit_active "$v" ;;
			base) case_commit_base "$v" ;;
			mid) case_commit_mid "$v" ;;
			mid-drop) case_commit_mid "$v" --drop ;;
			pull) case_pull "$v" ;;
			pull-base) case_pull "$v" base ;;
			rebase-other) case_rebase "$v" other.qcow2 ;;
			rebase-base) case_rebase "$v" "$B" ;;
			rebase-none) case_rebase "$v" "" ;;
			rebase-unsafe) case_rebase "$v" other.qcow2 -u ;;
			siblings) case_siblings ;;
			esac
		done
	done
}

# bash_all F ARGS... -- G ARGS... ...: run each in turn
bash_all()
{
	local -a cmd=()
	while [ $# -gt 0 ]; do
		if [ "$1" = -- ]; then
			"${cmd[@]}"
			cmd=()
		else
			cmd+=("$1")
		fi
		shift
	done
	[ ${#cmd[@]} = 0 ] || "${cmd[@]}"
}

declare -A VSPEC=(
	[std]="65536 4194304 compat=1.1 compressed"
	[rawbase]="65536 4194304 compat=1.1 raw"
	[short]="65536 4194304 compat=1.1 qcow2 2097152"
	[c512]="512 1048576 compat=1.1 compressed"
	[extl2]="65536 4194304 compat=1.1 qcow2 - extended_l2=on"
	[v2]="65536 4194304 compat=0.10 compressed"
)
# every operation on the plain chain, the ones each variant stresses on the others
declare -A VCASES=(
	[std]="active base mid mid-drop pull pull-base rebase-other rebase-base rebase-none
		rebase-unsafe siblings"
	[rawbase]="base mid pull-base rebase-base"
	[short]="active base mid pull pull-base"
	[c512]="active base pull rebase-other"
	[extl2]="active pull rebase-unsafe"
	[v2]="active base pull rebase-other"
)

worker 1 bash_all variants std rawbase -- sparse
worker 2 bash_all variants short c512 extl2 v2 -- snapshots_bitmaps -- libvirt
collect_workers

# ---- 9. refusals: an image another process holds for writing is not changed ----
fresh locks std
sha_dir "$O" "$C.sha"
# each command on top.qcow2 while qemu-io holds it
if qemu_writer_start "$O/top.qcow2"; then
	for cmd in "commit" "commit --base $O/base.qcow2" "pull" "pull --base base.qcow2" \
		"rebase -b other.qcow2" "rebase -u -b other.qcow2"; do
		run "$C.out" ctl $cmd "$O/top.qcow2"
		check "locks: $cmd refused while qemu-io (pid $QEMU_WRITER_PID) writes top.qcow2, naming it" \
			refused "$C.out" top.qcow2 qemu-io "pid $QEMU_WRITER_PID"
	done
	qemu_writer_stop
else
	fail "locks: qemu-io holds top.qcow2"
fi
# commit writes into the base (and into mid, the default base): refused while qemu-io holds it
for b in base mid; do
	if qemu_writer_start "$O/$b.qcow2"; then
		run "$C.out" ctl commit --base "$O/$b.qcow2" "$O/top.qcow2"
		check "locks: commit --base $b.qcow2 refused while qemu-io writes $b.qcow2, naming it" \
			refused "$C.out" $b.qcow2 qemu-io "pid $QEMU_WRITER_PID"
		[ $b = base ] && run "$C.out" ctl commit --top "$O/mid.qcow2" "$O/top.qcow2" &&
			check "locks: commit --top mid.qcow2 refused while qemu-io writes base.qcow2, naming it" \
				refused "$C.out" base.qcow2 qemu-io "pid $QEMU_WRITER_PID"
		qemu_writer_stop
	else
		fail "locks: qemu-io holds $b.qcow2"
	fi
done
check "locks: nothing changed (SHA-256 of every file)" files_unchanged "$O" "$C.sha"

# the daemon with top's flat view open for writing
MNT=$WORK/mnt
if mount_qcowfs "$O" "$MNT"; then
	exec 3<>"$MNT/top.raw"
	if eventually qemu_holds_write_lock "$O/top.qcow2"; then
		for cmd in "commit" "pull" "rebase -b other.qcow2"; do
			run "$C.out" ctl $cmd "$O/top.qcow2"
			check "locks: $cmd refused while the view top.raw is open for writing, naming qcowfs" \
				refused "$C.out" top.qcow2 qcowfs "pid $QCOWFS_PID"
		done
	else
		fail "locks: the daemon takes the write lock of top.qcow2 for an open view"
	fi
	exec 3>&-
	check "locks: the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
else
	fail "locks: mount"
fi
check "locks: nothing changed (SHA-256 of every file)" files_unchanged "$O" "$C.sha"

finish

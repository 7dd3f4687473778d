#!/bin/bash
# ctl-words.sh - qemu-img's spellings in qcowctl, each against qemu-img on twin copies: the same
# result, exit status and (where they are meant to match) output.
# - snapshot -c/-a/-d NAME IMAGE (qemu-img's order) change the image as qemu-img's do and print
#   nothing; snapshot -l prints qemu-img's table;
# - --output=json is --json and --output=human the text, on every command that has --json;
#   info --backing-chain is info --chain and names qemu-img's files;
# - -f qcow2 is taken by every command, any other format refused in one line (exit 64);
# - check -r all and -r leaks repair as qemu-img check -r does (same exit status and report);
# - commit -d leaves the top as it was (qemu-img commit -d), base gets its data;
# - rebase -u without -F is refused as qemu-img 7.2 refuses it, changing nothing;
# - sizes: the "virtual size" line of info is qemu-img's over a table of sizes around each
#   unit's 1000 (never an exponent: where qemu-img prints "1e+03 KiB" the next unit is used);
# - usage errors: every command with a missing argument or a bad option value: one line on
#   stderr, "qcowctl CMD: ... (see 'qcowctl CMD --help')", exit 64, nothing on stdout.
# - a file that is not a qcow2 image: the cause (no magic, empty: "raw?"), named as typed;
# - the progress bar (-p) shows the rate and the time left.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$WORK" || exit 1
Q=$QCOWCTL
H=$E2E_HELPER

# ---- snapshot -l/-c/-a/-d ----

setup mk_qcow2 s.qcow2 4M
setup qio s.qcow2 "write -P 0x11 0 1M"
setup cp s.qcow2 s.ref.qcow2

# twin_step "QEMU-IMG ARGS" "QCOWCTL ARGS": both on their twin, the same exit status, nothing
# on stdout from either, both twins then hold the same snapshots (all but their dates) and the
# same view
twin_step()
{
	local qa=$1 oa=$2 qrc orc
	# shellcheck disable=SC2086
	qemu-img $qa >q.out 2>q.err
	qrc=$?
	# shellcheck disable=SC2086
	"$Q" $oa >o.out 2>o.err
	orc=$?
	[ "$qrc" = "$orc" ] || { echo "qemu-img exit $qrc, qcowctl exit $orc"; cat q.err o.err; return 1; }
	[ ! -s q.out ] && [ ! -s o.out ] || { echo "output:"; cat q.out o.out; return 1; }
	# every column of qemu-img snapshot -l but the date (ID, tag, VM size, clock, icount)
	diff <(qemu-img snapshot -l s.ref.qcow2 | awk 'NR > 2 { $5 = $6 = ""; print }') \
		<(qemu-img snapshot -l s.qcow2 | awk 'NR > 2 { $5 = $6 = ""; print }') || return 1
	same_content s.qcow2 s.ref.qcow2 && image_clean s.qcow2
}
check "snapshot -c NAME IMAGE" twin_step "snapshot -c one s.ref.qcow2" "snapshot -c one s.qcow2"
setup qio s.qcow2 "write -P 0x22 0 64k"
setup qio s.ref.qcow2 "write -P 0x22 0 64k"
check "snapshot -q -c NAME IMAGE" twin_step "snapshot -q -c two s.ref.qcow2" \
	"snapshot -q -c two s.qcow2"
check "snapshot -a NAME IMAGE" twin_step "snapshot -a one s.ref.qcow2" "snapshot -a one s.qcow2"
check "... the view is snapshot one's" qio s.qcow2 "read -P 0x11 0 64k"
check "snapshot -d NAME IMAGE" twin_step "snapshot -d two s.ref.qcow2" "snapshot -d two s.qcow2"
check "snapshot -a of a missing name: exit 1 as qemu-img" twin_step \
	"snapshot -a nope s.ref.qcow2" "snapshot -a nope s.qcow2"
check "snapshot -f qcow2 -c NAME IMAGE" twin_step "snapshot -c three s.ref.qcow2" \
	"snapshot -f qcow2 -c three s.qcow2"

# the table of qemu-img snapshot -l, on one image (the dates are the same)
check "snapshot -l IMAGE prints qemu-img's table" \
	diff <(qemu-img snapshot -l s.ref.qcow2) <("$Q" snapshot -l s.ref.qcow2)
check "snapshot -l -U IMAGE" diff <(qemu-img snapshot -l -U s.ref.qcow2) \
	<("$Q" snapshot -l -U s.ref.qcow2)

# ---- --output=json|human, --backing-chain ----

setup qemu-img create -q -f qcow2 -b s.ref.qcow2 -F qcow2 top.qcow2
setup qio top.qcow2 "write -P 0x33 1M 64k"
mkdir -p tree && setup cp top.qcow2 s.ref.qcow2 tree/

# same_output "ARGS A" "ARGS B": qcowctl prints the same with both, and exits 0
same_output()
{
	# shellcheck disable=SC2086
	"$Q" $1 >a.out 2>&1 || { cat a.out; return 1; }
	# shellcheck disable=SC2086
	"$Q" $2 >b.out 2>&1 || { cat b.out; return 1; }
	cmp a.out b.out || { diff a.out b.out | head; return 1; }
}
for c in "info" "info --chain" "check" "map" "checksum" "snapshot list"; do
	check "$c --output=json is --json" same_output "$c --output=json s.ref.qcow2" \
		"$c --json s.ref.qcow2"
	check "$c --output=human is the text" same_output "$c --output=human s.ref.qcow2" \
		"$c s.ref.qcow2"
done
check "tree --output=json is --json" same_output "tree --output=json tree" "tree --json tree"
check "commit --dry-run --output=json is --json" same_output \
	"commit --dry-run --output=json top.qcow2" "commit --dry-run --json top.qcow2"
check "info --backing-chain is info --chain" same_output "info --backing-chain top.qcow2" \
	"info --chain top.qcow2"

# chain_files_as_qemu: info --backing-chain --output=json names the files qemu-img's does
chain_files_as_qemu()
{
	qemu-img info --backing-chain --output=json top.qcow2 >q.json || return 1
	"$Q" info --backing-chain --output=json top.qcow2 >o.json || return 1
	python3 -c '
import json, sys
q = [(i["filename"], i["format"], i["virtual-size"]) for i in json.load(open("q.json"))]
o = [(i["filename"], i["format"], i["virtual-size"]) for i in json.load(open("o.json"))]
sys.exit(0 if q == o else print(q, o) or 1)'
}
check "info --backing-chain --output=json: qemu-img's files, formats and sizes" \
	chain_files_as_qemu
mkdir -p sub
setup qemu-img create -q -f qcow2 sub/b.qcow2 1M
setup qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 sub/t.qcow2
# backing_as_qemu: the backing lines of info (text, "(actual path: sub/b.qcow2)") and the
# files of --backing-chain --output=json are qemu-img's for an image in a subdirectory
backing_as_qemu()
{
	diff <(qemu-img info sub/t.qcow2 | grep -E '^(image|backing)') \
		<("$Q" info sub/t.qcow2 | grep -E '^(image|backing)') || return 1
	diff <(qemu-img info --backing-chain sub/t.qcow2 | grep -E '^(image|backing)') \
		<("$Q" info --backing-chain sub/t.qcow2 | grep -E '^(image|backing)') || return 1
	diff <(qemu-img info --backing-chain --output=json sub/t.qcow2 | grep -E 'filename"' | sort) \
		<("$Q" info --backing-chain --output=json sub/t.qcow2 | grep -E 'filename"' | sort)
}
check "info names the backing file of sub/t.qcow2 as qemu-img (sub/b.qcow2)" backing_as_qemu

# ---- -f qcow2 everywhere, other formats refused ----

# refused_line CODE PATTERN COMMAND...: exit CODE, one line on stderr matching PATTERN
# (grep -E), nothing on stdout
refused_line()
{
	local want=$1 pat=$2 rc
	shift 2
	timeout -k 2 10 "$@" >r.out 2>r.err
	rc=$?
	[ "$rc" = "$want" ] || { echo "exit $rc, not $want: $*"; cat r.err; return 1; }
	[ "$(wc -l <r.err)" = 1 ] || { echo "stderr is not one line:"; cat r.err; return 1; }
	grep -qE -- "$pat" r.err || { echo "stderr does not match '$pat':"; cat r.err; return 1; }
	[ ! -s r.out ] || { echo "stdout is not empty:"; cat r.out; return 1; }
}
for c in "info" "check" "map" "checksum" "snapshot list" "commit --dry-run" "pull --dry-run" \
	"resize --dry-run" "rebase --dry-run -b s.ref.qcow2"; do
	read -ra w <<<"$c"
	extra=()
	[ "$c" = "resize --dry-run" ] && extra=(+1M)
	check "$c -f qcow2 is taken" ctl "${w[@]}" -f qcow2 top.qcow2 "${extra[@]}"
	check "$c -f raw is refused in one line" refused_line 64 \
		"^qcowctl ${w[0]}: only qcow2 images are supported \(-f raw\) \(see 'qcowctl ${w[0]} --help'\)$" \
		"$Q" "${w[@]}" -f raw top.qcow2 "${extra[@]}"
done

# ---- check -r all, -r leaks ----

for n in leak refcount; do
	setup qemu-img create -q -f qcow2 "$n.qcow2" 4M
	setup qio "$n.qcow2" "write -P 0x44 0 256k"
done
# a leaked cluster and a refcount too low (qcow2-break, as ctl-check.sh makes them)
setup python3 "$H" qcow2-break leak.qcow2:leak:0 refcount.qcow2:refcount:64k
setup cp leak.qcow2 leak2.qcow2
setup cp leak.qcow2 leak.ref.qcow2
setup cp leak.qcow2 leak2.ref.qcow2
setup cp refcount.qcow2 refcount.ref.qcow2

# twin_check QEMU_IMG_ARGS IMAGE: qemu-img check ARGS on IMAGE's twin, qcowctl check ARGS on
# IMAGE: the same exit status and the same report; both twins are then equally clean
twin_check()
{
	local args=$1 img=$2 ref=${2%.qcow2}.ref.qcow2 qrc orc
	# shellcheck disable=SC2086
	qemu-img check $args "$ref" >q.out 2>q.err
	qrc=$?
	# shellcheck disable=SC2086
	"$Q" check $args "$img" >o.out 2>o.err
	orc=$?
	[ "$qrc" = "$orc" ] || { echo "qemu-img exit $qrc, qcowctl exit $orc"; cat q.* o.*; return 1; }
	diff <(sed "s|$ref|IMG|" q.out) <(sed "s|$img|IMG|" o.out) || return 1
	[ "$(check_errors "$img")" = "$(check_errors "$ref")" ] ||
		{ echo "after: $(check_errors "$img") vs qemu-img's $(check_errors "$ref")"; return 1; }
}
check "check -r leaks as qemu-img check -r leaks" twin_check "-r leaks" leak.qcow2
check "check -r all as qemu-img check -r all" twin_check "-r all" leak2.qcow2
check "check -r leaks on an image with a corruption: refused, nothing changed" \
	bash -c "sha256sum refcount.qcow2 >rc.sha; ! '$Q' check -r leaks refcount.qcow2 &&
		sha256sum -c --quiet rc.sha"
check "check -r bogus is a usage error" refused_line 64 "'-r' takes leaks or all" \
	"$Q" check -r bogus leak.qcow2

# ---- commit -d ----

setup mk_qcow2 cb.qcow2 4M
setup qio cb.qcow2 "write -P 0x51 0 1M"
setup qemu-img create -q -f qcow2 -b cb.qcow2 -F qcow2 ct.qcow2
setup qio ct.qcow2 "write -P 0x52 512k 1M"
mkdir -p ref && setup cp cb.qcow2 ct.qcow2 ref/
sha_of ct.qcow2 >ct.sha

# commit_d: qcowctl commit -d and qemu-img commit -d give the same base, and the top's file
# does not change at all
commit_d()
{
	(cd ref && qemu-img commit -q -d ct.qcow2) || return 1
	ctl commit -q -d ct.qcow2 || return 1
	sha_unchanged ct.sha || { echo "the top changed"; return 1; }
	same_content cb.qcow2 ref/cb.qcow2 && same_content ct.qcow2 ref/ct.qcow2 &&
		images_clean cb.qcow2 ct.qcow2
}
check "commit -d: base as qemu-img commit -d leaves it, the top not emptied" commit_d

# ---- rebase -u needs -F ----

setup cp top.qcow2 rb.qcow2
setup cp top.qcow2 rb.ref.qcow2
sha_of rb.qcow2 >rb.sha
check "rebase -u -b NEW without -F: refused as qemu-img 7.2 refuses it" bash -c "
	! qemu-img rebase -u -b s.qcow2 rb.ref.qcow2 2>q.err &&
	grep -q 'backing format must be specified' q.err &&
	! '$Q' rebase -u -b s.qcow2 rb.qcow2 2>o.err && [ \$(wc -l <o.err) = 1 ] &&
	grep -q 'backing format must be specified' o.err && sha256sum -c --quiet rb.sha"
check "rebase -u -b NEW -F qcow2 as qemu-img" bash -c "
	qemu-img rebase -u -b s.qcow2 -F qcow2 rb.ref.qcow2 &&
	'$Q' rebase -q -u -b s.qcow2 -F qcow2 rb.qcow2 &&
	[ \"\$(qemu-img info rb.qcow2 | grep backing)\" = \"\$(qemu-img info rb.ref.qcow2 | grep backing)\" ]"

# ---- sizes as qemu-img prints them ----

# size_line BYTES: info's "virtual size" line of a raw file of BYTES, qcowctl's and qemu-img's
size_as_qemu()
{
	local b=$1 q o
	truncate -s "$b" sz.img || return 1
	q=$(qemu-img info sz.img | grep '^virtual size')
	o=$("$Q" info sz.img | grep '^virtual size')
	if [[ $q == *e+* ]]; then # qemu-img's exponent: ours is the next unit, never an exponent
		[[ $o != *e+* ]] || { echo "exponent: $o"; return 1; }
		return 0
	fi
	[ "$q" = "$o" ] || { echo "qemu-img: $q"; echo "qcowctl:  $o"; return 1; }
}
sizes_as_qemu()
{
	local b u n
	for u in 0 10 20 30 40; do
		for n in 1 511 512 999 1000 1023 1024 4096; do
			for b in $(((n << u) - 512)) $((n << u)) $(((n << u) + 512)); do
				[ "$b" -ge 0 ] && [ $((b % 512)) = 0 ] && [ "$b" -le $((8 << 40)) ] ||
					continue
				size_as_qemu "$b" || return 1
			done
		done
	done
	size_as_qemu 1023488 && size_as_qemu 5000000000 && size_as_qemu 999999488
}
check "info's sizes are qemu-img's over a table around 1000 of each unit" sizes_as_qemu

# ---- a file that is not a qcow2 image: the cause, the name as typed ----

mkdir -p in/dir
echo "just some text" >in/text.txt
: >in/empty.img
setup truncate -s 1M in/disk.raw
setup qio_raw in/disk.raw "write -P 0x61 0 64k"
for c in "check" "snapshot list" "resize" "pull" "rebase -b s.qcow2" "snapshot -c s1" \
	"snapshot create" "commit --dry-run"; do
	read -ra w <<<"$c"
	for f in text.txt empty.img disk.raw; do
		extra=()
		[ "$c" = resize ] && extra=(+1M)
		[ "$c" = "snapshot create" ] && extra=(s1)
		case $c in
		commit*) want="'in/$f' has no backing file" ;; # true of a raw file, too
		check | "snapshot list" | resize) want="^qcowctl: 'in/$f': not a qcow2 image \\(.*: raw\\?\\)$" ;;
		*) want="^qcowctl: 'in/$f': not a qcow2 image \\(raw\\?\\)" ;;
		esac
		check "$c in/$f: the cause, the name as typed" refused_line 1 "$want" \
			"$Q" "${w[@]}" "in/$f" "${extra[@]}"
	done
	check "$c in/dir: a directory, named as typed" refused_line 1 \
		"^qcowctl: cannot open 'in/dir': a directory" "$Q" "${w[@]}" in/dir "${extra[@]}"
done
check "a text file: no qcow2 magic" refused_line 1 "'in/text.txt': not a qcow2 image \(no qcow2 magic: raw\?\)" \
	"$Q" check in/text.txt
check "an empty file: empty" refused_line 1 "'in/empty.img': not a qcow2 image \(an empty file: raw\?\)" \
	"$Q" check in/empty.img
check "the raw files are unchanged" bash -c "[ ! -s in/empty.img ] && [ \$(stat -c %s in/disk.raw) = 1048576 ] &&
	grep -q 'just some text' in/text.txt"

# ---- the progress bar: rate and time left ----

setup mk_qcow2 prog.qcow2 32M
setup qio prog.qcow2 "write -P 0x71 0 32M"
# bar_has_rate_eta COMMAND...: with -p, the bar's last state says 100%, the bytes, a rate
# ("N MiB/s", a size as qemu-img writes it) and the time left ("ETA 0:00")
bar_has_rate_eta()
{
	"$@" 2>bar.err >/dev/null || { cat bar.err; return 1; }
	tr '\r' '\n' <bar.err | grep -v '^$' | tail -n 1 >bar.last
	grep -qE '\] 100\.0% [0-9.]+ MiB of [0-9.]+ MiB, [0-9.]+ (B|KiB|MiB|GiB|TiB)/s, ETA 0:00 *$' bar.last ||
		{ echo "last state of the bar:"; cat bar.last; return 1; }
}
check "checksum -p: the bar shows the rate and the time left" bar_has_rate_eta \
	"$Q" checksum -p prog.qcow2
check "check -p: the same bar" bar_has_rate_eta "$Q" check -p prog.qcow2

# ---- usage errors: one line, one style ----

usage_cases=(
	"info" "check" "map" "checksum" "tree" "commit" "pull" "rebase s.qcow2" "rebase -b x"
	"create" "resize s.qcow2" "copy s.qcow2" "snapshot" "snapshot list" "snapshot create s.qcow2"
	"snapshot apply s.qcow2" "snapshot delete s.qcow2" "snapshot create --external s.qcow2"
	"snapshot -l" "snapshot s.qcow2 -x" "info --output=xml s.qcow2" "check -r some s.qcow2"
	"snapshot -c a -d b s.qcow2" "info a b" "measure" "measure --size 1M s.qcow2"
	"measure -O vmdk --size 1M" "compare" "compare s.qcow2" "amend s.qcow2"
	"amend -o compat=1.1" "amend -o size=1M s.qcow2" "resize --shrink s.qcow2"
	"measure --no-such-option s.qcow2" "compare -Z s.qcow2 s.qcow2"
	"amend -o compat=1.1 --json s.qcow2")
for c in "${usage_cases[@]}"; do
	read -ra w <<<"$c"
	[ "${w[0]}" = snapshot ] && [ "${w[1]:-}" = -x ] && w=(snapshot -x s.qcow2)
	check "qcowctl $c: one usage line, exit 64" refused_line 64 \
		"^qcowctl ${w[0]}: .* \(see 'qcowctl ${w[0]} --help'\)$" "$Q" "${w[@]}"
done
check "qcowctl alone: one line, exit 64" refused_line 64 "see 'qcowctl --help'" "$Q"

finish

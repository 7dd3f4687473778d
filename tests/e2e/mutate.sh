#!/bin/bash
# mutate.sh - a mutation fuzz loop over the metadata of images made by qemu-img (images
# are untrusted input; never crash, never hang, never lie, never make a damaged image worse).
#
# Seed chains are made with qemu-img and qemu-io: v2 and v3, 512 B and 64 KiB clusters, a
# backing chain, internal snapshots, compressed clusters, extended L2 entries, zero clusters,
# persistent bitmaps, 1-bit and 64-bit refcounts. Each iteration copies one chain and changes
# the metadata of one of its images where mutate.py finds it (header fields, header extensions,
# L1 and L2 tables, the refcount table and blocks, the snapshot table and the snapshots' L1
# tables, the bitmap directory): bit flips, zeros, offsets of other metadata, offsets past the
# end of the file, huge sizes, reserved bits, COPIED flags on shared clusters, duplicated
# entries. On each mutant, every command runs under `timeout` (a hang is a failure) and must
# not crash nor print a sanitizer report:
#   - `qcowctl info`, `info --chain`, `map`, `checksum`: exit 0 or 1, and a failure says why
#     on stderr; when only refcounts or snapshot entries were changed, `info` must work where
#     `qemu-img info` does (neither is needed to describe the image, and a bad snapshot entry
#     disables that snapshot only); `checksum` must be the SHA-256 of `qemu-img convert -O raw`
#     when both work;
#   - `qcowctl check`: exit 0, 1, 2 or 3 only;
#   - `qcowctl check --repair` on a copy: exit 0 to 3, or 4 ("would not improve the image;
#     nothing changed") with the file byte-identical to before; never worse by qemu-img's count, errors (corruptions
#     + leaks + check-errors of `qemu-img check --output=json`; an image qemu-img cannot check
#     counts as infinitely many) after the repair <= errors before it;
#   - when `qemu-img convert` reads the active view: a mount of the chain's directory, every
#     file under it read through (an error is allowed, a hang or a crash is not), the flat view
#     of the mutated image and of each of its snapshots compared with `qemu-img convert` (a
#     view that returns bytes returns the right bytes), and a clean daemon exit.
#
# Environment:
#   MUTATE_SEED     the seed (default: a random one); printed at the start, so
#                   MUTATE_SEED=S MUTATE_ONLY=I reproduces iteration I of a run
#   MUTATE_ITERS    iterations at most (default 100000: MUTATE_SECONDS decides)
#   MUTATE_SECONDS  time budget for the loop in seconds (default 75; 110 under the sanitizers)
#   MUTATE_ONLY     run only these iterations (a space-separated list)
#   MUTATE_TIMEOUT  seconds a single command may take (default 30; 90 under the sanitizers)
#   MUTATE_FAILDIR  where failing mutants are saved (default: a new directory in TMPDIR)
# The regression list REGRESS below (SEED:ITER pairs of mutants that once failed) runs first.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_cmd sha256sum
MUT="$E2E_DIR/mutate.py"
Q=$QCOWCTL
T=${MUTATE_TIMEOUT:-}
SEED=${MUTATE_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
ITERS=${MUTATE_ITERS:-100000}
SANITIZED=0
# (ldd's output read whole first: grep -q stops reading at the first match, and with pipefail
# the SIGPIPE ldd may then get would make a sanitized build pass for a plain one.)
LIBS=$(ldd "$Q" 2>/dev/null)
if grep -q 'lib[at]san\|libubsan' <<<"$LIBS"; then
	SANITIZED=1
fi
# A hang is a loop that does not end: the limit leaves room for a slow sanitized build on a
# busy machine (a check of a snapshot L1 table of 32k garbage entries takes 15 s under ASan).
if [ "$SANITIZED" = 1 ]; then
	SECONDS_MAX=${MUTATE_SECONDS:-110}
	T=${T:-90}
else
	SECONDS_MAX=${MUTATE_SECONDS:-75}
	T=${T:-30}
fi
# A sanitizer report must end the process with a failure, whatever the caller set.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}abort_on_error=1"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}halt_on_error=1:abort_on_error=1:print_stacktrace=1"
SANITIZER_RE='AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:|ThreadSanitizer'
# Mutants that once failed, SEED:ITER, run first in every run. On main at the time this
# list was made they fail (the fixes are under way); each then guards its fix:
#   check --repair leaves more errors than it found, when the refcount structure itself is
#   damaged (refcounts written through it): two refcount table entries naming one block
#   (3003:79, 3040499152:0), a misaligned refcount table entry (3003:147), a refcount block
#   inside an L2 table (4004:31);
#   info refuses an image that qemu-img info opens, over a bad refcount table entry:
#   misaligned (3003:92), past the end of the file (3003:95, 1178805878:33);
#   ... or over one bad snapshot entry (which should disable that snapshot only): a NUL in
#   the name (3003:140), an invalid L1 table (4004:88), a name running past the end of the
#   file (4004:95), extra data too short (4004:114);
#   a repair that would not improve the image exits 4 and leaves it byte for byte (2907499918:18).
REGRESS="3003:79 3040499152:0 3003:147 4004:31 3003:92 3003:95 1178805878:33 3003:140 4004:88
	4004:95 4004:114 2907499918:18 1009956784:116 965896096:49"

echo "# mutate: seed $SEED (reproduce with MUTATE_SEED=$SEED MUTATE_ONLY=ITER)"

# ---- seed chains: SEEDS/NAME/ holds the chain's files and TOP, the top image's name ----

SEEDS=$WORK/seeds
mkdir -p "$SEEDS"

# seed NAME TOP: start seed chain NAME whose top image is TOP; cd into it
seed()
{
	mkdir -p "$SEEDS/$1" && cd "$SEEDS/$1" && echo "$2" >TOP
}

seed v3-snap img.qcow2
setup qemu-img create -q -f qcow2 img.qcow2 4M
setup qio img.qcow2 "write -P 0x11 0 192k" "write -P 0x12 1M 64k" "write -z 2M 128k"
setup qemu-img snapshot -c s1 img.qcow2
setup qio img.qcow2 "write -P 0x21 64k 64k" "write -P 0x22 3M 4k" "discard 1M 64k"
setup qemu-img snapshot -c s2 img.qcow2
setup qio img.qcow2 "write -P 0x31 128k 8k"
if qemu-img bitmap --help >/dev/null 2>&1; then
	setup qemu-img bitmap --add img.qcow2 b0
	setup qemu-img bitmap --add -g 65536 img.qcow2 b1
	setup qio img.qcow2 "write -P 0x32 512k 64k"
fi

seed v2-512 img.qcow2
setup qemu-img create -q -f qcow2 -o compat=0.10,cluster_size=512 img.qcow2 1M
setup qio img.qcow2 "write -P 0x41 0 8k" "write -P 0x42 300k 3k" "write -P 0x43 1020k 4k"
setup qemu-img snapshot -c s1 img.qcow2
setup qio img.qcow2 "write -P 0x44 4k 2k" "write -P 0x45 600k 1k"

seed compressed img.qcow2
setup qemu-img create -q -f qcow2 plain.tmp 2M
setup qio plain.tmp "write -P 0x51 0 256k" "write -P 0x52 1M 64k" "write -P 0x53 1984k 64k"
setup qemu-img convert -c -O qcow2 plain.tmp img.qcow2
setup qemu-img snapshot -c s1 img.qcow2
setup qio img.qcow2 "write -P 0x54 64k 4k"
rm -f plain.tmp

seed compressed-512 img.qcow2
setup qemu-img create -q -f qcow2 plain.tmp 512k
setup qio plain.tmp "write -P 0x55 0 16k" "write -P 0x56 200k 8k"
setup qemu-img convert -c -O qcow2 -o cluster_size=512 plain.tmp img.qcow2
rm -f plain.tmp

seed extended-l2 img.qcow2
setup qemu-img create -q -f qcow2 -o extended_l2=on img.qcow2 4M
setup qio img.qcow2 "write -P 0x61 0 4k" "write -P 0x62 70k 2k" "write -z 128k 8k" \
	"write -P 0x63 1M 64k"
setup qemu-img snapshot -c s1 img.qcow2
setup qio img.qcow2 "write -P 0x64 2k 2k"

seed chain top.qcow2
setup qemu-img create -q -f qcow2 base.qcow2 4M
setup qio base.qcow2 "write -P 0x71 0 1M" "write -P 0x72 3M 64k"
setup qemu-img create -q -f qcow2 -o cluster_size=512 -b base.qcow2 -F qcow2 mid.qcow2
setup qio mid.qcow2 "write -P 0x73 64k 4k" "write -z 512k 8k"
setup qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2
setup qio top.qcow2 "write -P 0x74 0 64k" "discard 3M 64k"
setup qemu-img snapshot -c s1 top.qcow2
setup qio top.qcow2 "write -P 0x75 128k 64k"

seed refcount-1 img.qcow2
setup qemu-img create -q -f qcow2 -o refcount_bits=1,cluster_size=4k img.qcow2 2M
setup qio img.qcow2 "write -P 0x81 0 16k" "write -P 0x82 1M 4k"

seed refcount-64 img.qcow2
setup qemu-img create -q -f qcow2 -o refcount_bits=64,cluster_size=4k img.qcow2 2M
setup qio img.qcow2 "write -P 0x91 0 16k" "write -P 0x92 1M 4k"
setup qemu-img snapshot -c s1 img.qcow2
setup qio img.qcow2 "write -P 0x93 4k 4k"
cd "$WORK" || exit 1

# ---- one mutant ----

MNT=$WORK/mnt
FAILDIR=${MUTATE_FAILDIR:-}
ITER_FAILED=0
N_MOUNTS=0
N_VIEWS=0
N_SUMS=0
CUR_ITER=""
CUR_DESC=""

# failed WHAT: a failure of the current mutant; prints the seed and the mutation, and saves the
# mutant (rebuilt from the seed chains, as it was before any command ran) once
failed()
{
	fail "seed $SEED iteration $CUR_ITER: $*"
	sed 's/^/#   /' <<<"$CUR_DESC" | grep -v '^#   patch '
	if [ "$ITER_FAILED" = 0 ]; then
		if [ -z "$FAILDIR" ]; then
			FAILDIR=$(mktemp -d "${TMPDIR:-/tmp}/qcowfs-mutate-failures.XXXXXX")
		fi
		mkdir -p "$FAILDIR"
		rm -rf "$FAILDIR/$SEED-$CUR_ITER"
		python3 "$MUT" mutate "$SEEDS" "$FAILDIR/$SEED-$CUR_ITER" "$SEED" "$CUR_ITER" \
			>"$FAILDIR/$SEED-$CUR_ITER.txt"
		echo "#   mutant saved in $FAILDIR/$SEED-$CUR_ITER"
	fi
	ITER_FAILED=1
}

# run NAME CMD...: run a command under `timeout`, its output in $OUT/NAME.out and .err, its
# status in RC. With LIMIT=1 in a plain build, in a bounded address space (ASan reserves too
# much of it for that), so an allocation in proportion to a number read from the file fails
# instead of succeeding lazily.
run()
{
	local name=$1
	shift
	if [ "$SANITIZED" = 1 ] || [ "${LIMIT:-0}" != 1 ]; then
		timeout -k 5 "$T" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" </dev/null
	else
		(ulimit -v 4194304 && exec timeout -k 5 "$T" "$@") \
			>"$OUT/$name.out" 2>"$OUT/$name.err" </dev/null
	fi
	RC=$?
}

# ours NAME ALLOWED CMD...: one of our commands; it must exit with one of the ALLOWED statuses
# (a space-separated list), within the time limit, without a sanitizer report, and say why on
# stderr when it fails
ours()
{
	local name=$1 allowed=$2
	shift 2
	LIMIT=1 run "$name" "$@"
	if grep -qE "$SANITIZER_RE" "$OUT/$name.err"; then
		failed "$name: sanitizer report (exit $RC)"
		grep -E -m 5 -A 12 "$SANITIZER_RE" "$OUT/$name.err" | head -n 30 | sed 's/^/#     /'
		return 1
	fi
	if [ "$RC" = 124 ] || [ "$RC" = 137 ]; then
		failed "$name: still running after $T s"
		return 1
	fi
	if [[ " $allowed " != *" $RC "* ]]; then
		failed "$name: exit status $RC (allowed: $allowed)"
		tail -n 5 "$OUT/$name.err" | sed 's/^/#     /'
		return 1
	fi
	if [ "$RC" != 0 ] && [ ! -s "$OUT/$name.err" ]; then
		failed "$name: exit status $RC with nothing on stderr"
		return 1
	fi
	return 0
}

# errors JSON: corruptions + leaks + check-errors of a `qemu-img check --output=json` report,
# "inf" when there is none
errors_of()
{
	python3 "$MUT" errors "$1"
}

# read_views: read every file under the mount, then compare the flat view of the top image and
# of each of its snapshots with qemu-img's bytes
read_views()
{
	local f out name view exp img
	if ! fs_t "$T" find "$MNT" -type f >"$OUT/files" 2>"$OUT/find.err"; then
		failed "listing the mount failed: $(head -n 3 "$OUT/find.err")"
		return 1
	fi
	while read -r f; do
		fs_t "$T" cat "$f" >/dev/null 2>>"$OUT/cat.err"
		case $? in
		0 | 1) ;;
		*) failed "reading ${f#"$MNT"/} did not end within $T s"; return 1 ;;
		esac
	done <"$OUT/files"
	for img in *.qcow2; do
		exp=$OUT/exp.raw
		if [ "$img" != "$TOP" ]; then
			exp=$OUT/layer.raw
			oracle_raw "$img" "$exp" || continue
		fi
		if ! out=$(fs_t "$T" python3 "$MUT" cmp-prefix "$exp" "$MNT/${img%.qcow2}.raw"); then
			failed "the flat view of $img differs from qemu-img convert: $out"
		fi
		[ -z "$out" ] && N_VIEWS=$((N_VIEWS + 1))
	done
	while IFS=$'\t' read -r name view; do
		exp=$OUT/snap.raw
		rm -f "$exp"
		run convert-snap qemu-img convert -U -f qcow2 -l "snapshot.name=$name" -O raw "$TOP" "$exp"
		[ "$RC" = 0 ] || continue
		if ! out=$(fs_t "$T" python3 "$MUT" cmp-prefix "$exp" "$MNT/${TOP%.qcow2}$view"); then
			failed "the view of snapshot '$name' differs from qemu-img convert: $out"
		fi
		[ -z "$out" ] && N_VIEWS=$((N_VIEWS + 1))
		rm -f "$exp"
	done < <([ -s "$OUT/top-qinfo.json" ] && python3 "$MUT" snapshots "$OUT/top-qinfo.json")
}

# mount_and_read: mount the mutant's directory, read every view, unmount; the daemon must
# mount, serve and exit cleanly
mount_and_read()
{
	if ! mount_qcowfs "$M" "$MNT" >"$OUT/mount.out" 2>&1; then
		if log_clean "$QCOWFS_LOG" >/dev/null; then
			failed "the daemon did not mount the directory"
		else
			failed "the daemon: sanitizer report at mount"
		fi
		sed 's/^/#     /' "$OUT/mount.out" | head -n 20
	else
		N_MOUNTS=$((N_MOUNTS + 1))
		read_views
		if ! umount_qcowfs "$MNT" >"$OUT/umount.out" 2>&1; then
			failed "the daemon did not exit cleanly: $(head -n 2 "$OUT/umount.out")"
		fi
	fi
	if ! log_clean "$QCOWFS_LOG" >"$OUT/log.out"; then
		failed "the daemon printed a sanitizer report"
		grep -E -m 5 -A 12 "$SANITIZER_RE" "$QCOWFS_LOG" | head -n 30 | sed 's/^/#     /'
	fi
	# the daemon is gone (or the trap stops it); forget it so its pid is never signalled later
	if mountpoint -q "$MNT"; then
		fusermount3 -u -z -q "$MNT" 2>/dev/null
	fi
	if kill -0 "$QCOWFS_PID" 2>/dev/null; then
		kill -KILL "$QCOWFS_PID" 2>/dev/null
		wait "$QCOWFS_PID" 2>/dev/null
	fi
	_e2e_pids=()
	_e2e_mounts=()
	_e2e_mount_pid=()
}

# repair_never_worse: `qcowctl check --repair` on a copy leaves no more errors than qemu-img
# counted before
repair_never_worse()
{
	local before after sum_before
	cp --sparse=always "$TOP" "$REP" || return 1
	run qcheck-before qemu-img check -f qcow2 --output=json "$REP"
	before=$(errors_of "$OUT/qcheck-before.out")
	sum_before=$(sha256sum <"$REP")
	# exit 4: the repair would not have improved the image and left it as it was; allowed
	# only when the file is byte for byte what it was before
	ours repair "0 1 2 3 4" "$Q" check --repair -q "$REP" || { rm -f "$REP"; return 1; }
	if [ "$RC" = 4 ] && [ "$(sha256sum <"$REP")" != "$sum_before" ]; then
		failed "check --repair exited 4 (nothing changed) but changed the image"
	fi
	run qcheck-after qemu-img check -f qcow2 --output=json "$REP"
	after=$(errors_of "$OUT/qcheck-after.out")
	if [ "$before" != inf ] && { [ "$after" = inf ] || [ "$after" -gt "$before" ]; }; then
		failed "check --repair made it worse: qemu-img counts $before errors before, $after after"
		sed 's/^/#     /' "$OUT/qcheck-after.err" | head -n 3
	fi
	rm -f "$REP"
}

# oracle_raw IMAGE RAW: RAW holds `qemu-img convert -O raw` of IMAGE's chain, for disks small
# enough to compare; fails when qemu-img cannot read it
oracle_raw()
{
	rm -f "$2"
	run qinfo qemu-img info -U -f qcow2 --output=json "$1"
	[ "$RC" = 0 ] || return 1
	[ "$(python3 "$E2E_HELPER" json-get "$OUT/qinfo.out" virtual-size 2>/dev/null || echo x)" \
		-le $((64 << 20)) ] 2>/dev/null || return 1
	run convert qemu-img convert -U -f qcow2 -O raw "$1" "$2"
	[ "$RC" = 0 ] && return 0
	rm -f "$2"
	return 1
}

# one_iteration I
one_iteration()
{
	local i=$1 qinfo_ok sum want
	CUR_ITER=$i
	ITER_FAILED=0
	M=$WORK/mutant
	OUT=$WORK/out
	rm -rf "$M" "$OUT"
	mkdir -p "$OUT"
	CUR_DESC=$(python3 "$MUT" mutate "$SEEDS" "$M" "$SEED" "$i") ||
		bail "mutate.py failed on seed $SEED iteration $i: $CUR_DESC"
	TOP=$(sed -n 's/^top //p' <<<"$CUR_DESC")
	REP=$M/repair-copy.qcow2
	cd "$M" || return 1

	run qinfo qemu-img info -U -f qcow2 --output=json "$TOP"
	qinfo_ok=$RC
	cp "$OUT/qinfo.out" "$OUT/top-qinfo.json"
	ours info "0 1" "$Q" info "$TOP"
	if [ "$RC" != 0 ] && [ "$qinfo_ok" = 0 ] && grep -qx 'info-must-open yes' <<<"$CUR_DESC"; then
		failed "qcowctl info fails where qemu-img info works: $(head -n 1 "$OUT/info.err")"
	fi
	ours info-chain "0 1" "$Q" info --chain "$TOP"
	ours check "0 1 2 3" "$Q" check "$TOP"
	ours map "0 1" "$Q" map "$TOP"
	ours checksum "0 1" "$Q" checksum -q "$TOP"
	sum=$RC

	if oracle_raw "$TOP" "$OUT/exp.raw"; then
		if [ "$sum" = 0 ]; then
			N_SUMS=$((N_SUMS + 1))
			want=$(sha256sum <"$OUT/exp.raw" | cut -d' ' -f1)
			if [ "$(cut -d' ' -f1 "$OUT/checksum.out")" != "$want" ]; then
				failed "checksum is not the SHA-256 of qemu-img convert ($want)"
			fi
		fi
		mount_and_read
	fi
	repair_never_worse
	cd "$WORK" || return 1
	if [ "$ITER_FAILED" = 0 ]; then
		pass "seed $SEED iteration $i"
	fi
}

# ---- the loop ----

start=$(date +%s)
if [ -n "${MUTATE_ONLY:-}" ]; then
	for i in $MUTATE_ONLY; do
		one_iteration "$i"
	done
else
	for r in $REGRESS; do
		SEED=${r%%:*} one_iteration "${r#*:}"
	done
	for ((i = 0; i < ITERS; i++)); do
		if (($(date +%s) - start >= SECONDS_MAX)); then
			break
		fi
		one_iteration "$i"
	done
	echo "# mutate: seed $SEED, $i iterations in $(($(date +%s) - start)) s: $N_MOUNTS mounts," \
		"$N_VIEWS views and $N_SUMS checksums equal to qemu-img's bytes"
fi
[ -n "$FAILDIR" ] && echo "# failing mutants saved in $FAILDIR"
finish

#!/usr/bin/env bash
# bench-tools.sh - qcowctl's long commands against their qemu-img counterparts, on the same
# images, in one run, as ratios, at several sizes (the target: at least 1.2x qemu-img at every
# size, and the ratio not falling as the size grows).
#
#   bash bench/bench-tools.sh                   # as root: 256 MiB, 1 GiB, 4 GiB and 16 GiB
#   BENCH_SIZES="256M 1G" bash bench/bench-tools.sh
#   bash bench/bench-tools.sh --quick           # 16 MiB, one run: checks that the bench runs
#
# The images, at each size S: base.qcow2 (S of random data, 64 KiB clusters) and top.qcow2
# over it, with every other MiB written (half the disk). Each pair of commands runs on fresh
# copies of them (cp --sparse=always; hard links of the images a command only reads), with the
# page cache dropped before every timed run:
#   commit     qcowctl commit top.qcow2          vs  qemu-img commit top.qcow2
#              (half the disk copied from top into base, top emptied)
#   pull       qcowctl pull top.qcow2            vs  qemu-img rebase -b "" top.qcow2
#              (the other half copied from base into top, which then stands alone)
#   copy       qcowctl copy top.qcow2 out.qcow2  vs  qemu-img convert -O qcow2 top.qcow2 out.qcow2
#   copy-c     qcowctl convert -c (compressing on one thread per CPU, up to 4)  vs
#              qemu-img convert -c -m 8 -W (its parallel compression)
#   copy-c1    qcowctl convert -c -m 1 (one compressing thread)  vs  qemu-img convert -c
#   check      qcowctl check top.qcow2           vs  qemu-img check top.qcow2
#   checksum   qcowctl checksum top.qcow2        vs  qemu-img convert -O raw top.qcow2 (to
#              /dev/shm) followed by sha256sum of the raw file (QEMU 7.2 has no checksum)
# Every result is checked: both sides' images compare equal (qemu-img compare), pass
# qemu-img check, and the two checksums are equal.
# Each figure runs until the command's writes are on the disk (a sync after it: qemu-img
# convert leaves them in the page cache, qcowctl makes them durable before it returns).
# Each figure is the median of BENCH_REPS runs (default 3; qemu-img goes first in every other
# run), in seconds, printed with the load average before it; the ratio is qemu-img's time over
# qcowctl's (above 1: qcowctl is faster). The first qcowctl run of each figure runs with -v
# where the command has it: its phases (where the time went) are printed under the figure.
# After the table, a trend line per command: its ratio at the largest size over its ratio at
# the smallest (below 1: qcowctl falls behind as the disk grows).
# A size whose images do not fit in the free space of the work directory (about 4.5 times the
# size) is skipped, with the reason printed.
#
# Environment:
#   BENCH_SIZES="256M 1G 4G 16G"  sizes of the images (numfmt --from=iec syntax, multiples of
#                    2 MiB); BENCH_SIZE=S is the same as BENCH_SIZES=S
#   BENCH_REPS=3      runs per figure (the median is shown)
#   BENCH_TARGET=1.2  the ratio a command must reach
#   BENCH_DIR=DIR     work directory (default: a temporary directory under /var/tmp, removed)
#   BENCH_STRICT=1    exit 1 when a target is missed (never with --quick)
#   BENCH_OPS="..."   the commands to measure (default: all of them)
#   QCOWCTL           the tool to measure (default build/tools/qcowctl)
# Exit status: 1 when a result check fails, or a target is missed and BENCH_STRICT=1.
# Needs root (drop_caches; --quick runs without it, nothing then is timed fairly), qemu-img,
# qemu-io, bc.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
QUICK=0
case ${1:-} in
--quick) QUICK=1 ;;
"") ;;
*) die "usage: bench-tools.sh [--quick]" ;;
esac
if [ "$QUICK" = 1 ]; then
	SIZES=${BENCH_SIZES:-16M}
	REPS=${BENCH_REPS:-1}
else
	SIZES=${BENCH_SIZES:-${BENCH_SIZE:-256M 1G 4G 16G}}
	REPS=${BENCH_REPS:-3}
fi
TARGET=${BENCH_TARGET:-1.2}
QCOWCTL=${QCOWCTL:-$ROOT/build/tools/qcowctl}

[ "$(id -u)" = 0 ] || [ "$QUICK" = 1 ] || die "needs root (drop_caches)"
for c in qemu-img qemu-io python3 bc numfmt; do command -v "$c" >/dev/null || die "missing $c"; done
[ -x "$QCOWCTL" ] || die "no $QCOWCTL: build first (ninja -C build)"
read -r -a SIZE_LIST <<<"$SIZES"
for SIZE in "${SIZE_LIST[@]}"; do
	BYTES=$(numfmt --from=iec "$SIZE") || die "bad size '$SIZE'"
	MIB=$((BYTES >> 20))
	[ $((MIB % 2)) = 0 ] && [ "$MIB" -gt 0 ] || die "sizes must be multiples of 2 MiB: '$SIZE'"
done

if [ -n "${BENCH_DIR:-}" ]; then
	DIR=$BENCH_DIR
	mkdir -p "$DIR"
else
	DIR=$(mktemp -d "${TMPDIR:-/var/tmp}/qcowctl-bench.XXXXXX")
	trap 'rm -rf "$DIR" /dev/shm/qcowctl-bench.$$.raw' EXIT
fi
SHM=/dev/shm/qcowctl-bench.$$.raw

make_images() {
	log "making the images ($SIZE) in $DIR"
	rm -rf "${DIR:?}/src"
	mkdir -p "$DIR/src"
	head -c "$BYTES" /dev/urandom >"$DIR/src/base.raw"
	qemu-img convert -q -f raw -O qcow2 -o cluster_size=65536 "$DIR/src/base.raw" \
		"$DIR/src/base.qcow2"
	rm -f "$DIR/src/base.raw"
	qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$DIR/src/top.qcow2"
	local i
	for ((i = 0; i < MIB; i += 2)); do
		printf 'write -P %d %dM 1M\n' $((i % 250 + 1)) "$i"
	done | qemu-io "$DIR/src/top.qcow2" >/dev/null
}

# fresh SIDE: copies of the source images in $DIR/SIDE: of those the command $OP changes
# (commit: both, pull: top), hard links of those it only reads (so a size fits in about 4.5
# times its space)
fresh() {
	rm -rf "${DIR:?}/$1"
	mkdir -p "$DIR/$1"
	case $OP in
	commit) cp --sparse=always "$DIR/src/base.qcow2" "$DIR/src/top.qcow2" "$DIR/$1/" ;;
	pull)
		ln "$DIR/src/base.qcow2" "$DIR/$1/"
		cp --sparse=always "$DIR/src/top.qcow2" "$DIR/$1/"
		;;
	*) ln "$DIR/src/base.qcow2" "$DIR/src/top.qcow2" "$DIR/$1/" ;;
	esac
}

# -v on the first qcowctl run of a figure (commit, pull, copy, check): its phases go to
# $DIR/v.OP (the rest of the runs measure the plain command)
verbose_flag() {
	case $1 in
	commit | pull | copy | check) [ -e "$DIR/v.$1" ] || echo -v ;;
	esac
}

# run_side SIDE NAME: the timed command of one side ("q": qemu-img, "c": qcowctl) in $DIR/SIDE,
# its time written to $DIR/t.SIDE
run_side() {
	local side=$1 name=$2 t v=
	[ "$side" = q ] || v=$(verbose_flag "$name")
	cd "$DIR/$side" || exit 1
	case $side-$name in
	q-commit) timed t qemu-img commit -q top.qcow2 ;;
	c-commit) timed t "$QCOWCTL" commit -q $v top.qcow2 2>"$DIR/err" ;;
	q-pull) timed t qemu-img rebase -b "" top.qcow2 ;;
	c-pull) timed t "$QCOWCTL" pull -q $v top.qcow2 2>"$DIR/err" ;;
	q-copy) timed t qemu-img convert -O qcow2 top.qcow2 out.qcow2 ;;
	c-copy) timed t "$QCOWCTL" copy -q $v top.qcow2 out.qcow2 2>"$DIR/err" ;;
	q-copy-c) timed t qemu-img convert -c -m 8 -W -O qcow2 top.qcow2 out.qcow2 ;;
	c-copy-c) timed t "$QCOWCTL" convert -q -c top.qcow2 out.qcow2 ;;
	q-copy-c1) timed t qemu-img convert -c -O qcow2 top.qcow2 out.qcow2 ;;
	c-copy-c1) timed t "$QCOWCTL" convert -q -c -m 1 top.qcow2 out.qcow2 ;;
	q-check) timed t qemu-img check top.qcow2 ;;
	c-check) timed t "$QCOWCTL" check $v top.qcow2 2>"$DIR/err" ;;
	q-checksum) timed t sh -c "qemu-img convert -O raw top.qcow2 $SHM &&
		sha256sum $SHM | cut -d' ' -f1 >sum; rm -f $SHM" ;;
	c-checksum) timed t sh -c "'$QCOWCTL' checksum -q top.qcow2 | cut -d' ' -f1 >sum" ;;
	esac
	[ -z "$v" ] || grep "; total " "$DIR/err" >"$DIR/v.$name" || true
	echo "$t" >"$DIR/t.$side"
	cd "$DIR" || exit 1
}

# verify NAME: both sides produced the same result, and qcowctl's images pass qemu-img check
verify() {
	case $1 in
	commit)
		images_equal commit "$DIR/q/base.qcow2" "$DIR/c/base.qcow2" &&
			images_equal "commit (top)" "$DIR/q/top.qcow2" "$DIR/c/top.qcow2" &&
			image_clean "$DIR/c/base.qcow2" && image_clean "$DIR/c/top.qcow2" ;;
	pull)
		images_equal pull "$DIR/q/top.qcow2" "$DIR/c/top.qcow2" && image_clean "$DIR/c/top.qcow2" ;;
	copy | copy-c | copy-c1)
		images_equal "$1" "$DIR/q/out.qcow2" "$DIR/c/out.qcow2" && image_clean "$DIR/c/out.qcow2" ;;
	checksum)
		if ! cmp -s "$DIR/q/sum" "$DIR/c/sum"; then
			log "DATA CHECK FAILED: checksums differ"
			FAILED=1
		fi ;;
	esac
}

# the space a size needs: the source images (1.5 times the size), two copies of them for commit
need_bytes() { echo $((BYTES * 9 / 2 + (256 << 20))); }

ref_of() {
	case $1 in
	commit) echo "qemu-img commit" ;;
	pull) echo "qemu-img rebase -b \"\"" ;;
	copy) echo "qemu-img convert -O qcow2" ;;
	copy-c) echo "qemu-img convert -c -m 8 -W" ;;
	copy-c1) echo "qemu-img convert -c" ;;
	check) echo "qemu-img check" ;;
	checksum) echo "qemu-img convert -O raw + sha256sum" ;;
	esac
}

read -r -a OPS <<<"${BENCH_OPS:-commit pull copy check checksum copy-c copy-c1}"
declare -A RATIO LOAD QS CS PHASES
DONE_SIZES=()
log "conditions: $(nproc) CPUs, $REPS runs per figure (median), page cache dropped before each" \
	"run$([ "$(id -u)" = 0 ] || echo ' (not as root: NOT dropped)'), time until durable" \
	"(sync after each command), work directory $DIR ($(df -h --output=fstype "$DIR" | tail -1 | tr -d ' '))"
for SIZE in "${SIZE_LIST[@]}"; do
	BYTES=$(numfmt --from=iec "$SIZE")
	MIB=$((BYTES >> 20))
	rm -rf "${DIR:?}/src" "$DIR/q" "$DIR/c" "$DIR"/v.*
	avail=$(($(df --output=avail -k "$DIR" | tail -1) * 1024))
	if [ "$avail" -lt "$(need_bytes)" ]; then
		log "size $SIZE skipped: it needs about $(numfmt --to=iec "$(need_bytes)") free in $DIR," \
			"$(numfmt --to=iec "$avail") are"
		continue
	fi
	make_images
	for op in "${OPS[@]}"; do
		OP=$op
		LOAD[$op@$SIZE]=$(cut -d' ' -f1 /proc/loadavg)
		bench_op "$op"
		QS[$op@$SIZE]=${Q_T[$op]}
		CS[$op@$SIZE]=${C_T[$op]}
		RATIO[$op@$SIZE]=$(echo "${Q_T[$op]} / ${C_T[$op]}" | bc -l)
		[ -s "$DIR/v.$op" ] && PHASES[$op@$SIZE]=$(cat "$DIR/v.$op")
	done
	rm -rf "${DIR:?}/src" "$DIR/q" "$DIR/c"
	DONE_SIZES+=("$SIZE")
done
[ "${#DONE_SIZES[@]}" -gt 0 ] || die "no size fits in $DIR"

MISSED=0
TOTAL=0
printf '\n%-10s %-6s %-34s %8s %12s %12s %8s\n' command size "qemu-img counterpart" load \
	"qemu-img s" "qcowctl s" ratio
for op in "${OPS[@]}"; do
	for SIZE in "${DONE_SIZES[@]}"; do
		k=$op@$SIZE
		printf '%-10s %-6s %-34s %8s %12.3f %12.3f %8.2f\n' "$op" "$SIZE" "$(ref_of "$op")" \
			"${LOAD[$k]}" "${QS[$k]}" "${CS[$k]}" "${RATIO[$k]}"
		[ -n "${PHASES[$k]:-}" ] && printf '%-10s %-6s   qcowctl -v: %s\n' "" "" "${PHASES[$k]}"
		TOTAL=$((TOTAL + 1))
		if [ "$(echo "${RATIO[$k]} < $TARGET" | bc -l)" = 1 ]; then
			MISSED=$((MISSED + 1))
		fi
	done
done
echo
first=${DONE_SIZES[0]}
last=${DONE_SIZES[${#DONE_SIZES[@]} - 1]}
for op in "${OPS[@]}"; do
	printf 'trend %-10s ratio at %s / ratio at %s = %.2f\n' "$op" "$last" "$first" \
		"$(echo "${RATIO[$op@$last]} / ${RATIO[$op@$first]}" | bc -l)"
done
printf 'targets: %d of %d at least %sx qemu-img (sizes %s, median of %d)\n' \
	$((TOTAL - MISSED)) "$TOTAL" "$TARGET" "${DONE_SIZES[*]}" "$REPS"
[ "$FAILED" = 0 ] || exit 1
[ "$QUICK" = 0 ] && [ "${BENCH_STRICT:-}" = 1 ] && [ "$MISSED" -gt 0 ] && exit 1
exit 0

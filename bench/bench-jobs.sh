#!/usr/bin/env bash
# bench-jobs.sh - qcowctl on large sparse images against qemu-img, on the same images, in one
# run, as ratios: the work must follow the data, not the disk size. (The e2e tests check these
# commands' results: ctl-jobs-sparse.sh and ctl-inspect.sh; how fast they are is measured here.)
#
#   bash bench/bench-jobs.sh                  # a few minutes
#   BENCH_REPS=1 bash bench/bench-jobs.sh     # quick run
#
# The images:
#   sparse/base.qcow2  100 GiB, 1 MiB written at 1 GiB
#   sparse/top.qcow2   over it, 4 MiB written at 0, 33 GiB, 66 GiB and the last 4 MiB
#   big/big.qcow2      8 GiB over an 8 GiB raw file with 64 KiB of data at 0 and at 4 GiB; in
#                      big.qcow2 a zero range at 6 GiB and 64 KiB of data at the end
# The pairs, each on fresh copies (cp --sparse=always):
#   commit     qcowctl commit top.qcow2          vs  qemu-img commit top.qcow2
#   pull       qcowctl pull top.qcow2            vs  qemu-img rebase -b "" top.qcow2
#   checksum   qcowctl checksum big.qcow2        vs  qemu-img convert -O raw big.qcow2 (to a sparse
#              file in /dev/shm) followed by sha256sum of it (QEMU 7.2 has no checksum)
#   interrupt  how long qcowctl checksum big.qcow2 takes to exit after SIGINT, sent 0.5 s into
#              the run (median, in milliseconds; qemu-img has no counterpart)
# Every result is checked: both sides' images compare equal (qemu-img compare) and pass qemu-img
# check, and the two checksums are equal. Each figure runs until the command's writes are on the
# disk (a sync after it) and is the median of BENCH_REPS runs (default 3; qemu-img goes first in
# every other run), in seconds; the ratio is qemu-img's time over qcowctl's (above 1: qcowctl is
# faster). As root, the page cache is dropped before every timed run.
#
# Environment:
#   BENCH_REPS=3      runs per figure (the median is shown)
#   BENCH_DIR=DIR     work directory (default: a temporary directory under /var/tmp, removed)
#   BENCH_STRICT=1    exit 1 when a target is missed
#   QCOWCTL           the tool to measure (default build/tools/qcowctl)
# Exit status: 1 when a result check fails, or a target is missed and BENCH_STRICT=1.
# Needs qemu-img, qemu-io, bc.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
REPS=${BENCH_REPS:-3}
QCOWCTL=${QCOWCTL:-$ROOT/build/tools/qcowctl}

for c in qemu-img qemu-io bc; do command -v "$c" >/dev/null || die "missing $c"; done
[ -x "$QCOWCTL" ] || die "no $QCOWCTL: build first (ninja -C build)"

SHM=/dev/shm/qcowctl-bench-jobs.$$.raw
if [ -n "${BENCH_DIR:-}" ]; then
	DIR=$BENCH_DIR
	mkdir -p "$DIR"
	trap 'rm -f "$SHM"' EXIT
else
	DIR=$(mktemp -d /var/tmp/qcowctl-bench-jobs.XXXXXX)
	trap 'rm -rf "$DIR" "$SHM"' EXIT
fi

qio() { # IMAGE CMD...: qemu-io writes, quietly
	local img=$1 args=() c
	shift
	for c in "$@"; do args+=(-c "$c"); done
	qemu-io "${args[@]}" "$img" >/dev/null
}

make_images() {
	log "making the images in $DIR"
	mkdir -p "$DIR/src/sparse" "$DIR/src/big"
	local s=$DIR/src/sparse b=$DIR/src/big
	qemu-img create -q -f qcow2 "$s/base.qcow2" 100G
	qio "$s/base.qcow2" "write -P 0x11 1G 1M"
	qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$s/top.qcow2"
	qio "$s/top.qcow2" "write -P 0x21 0 4M" "write -P 0x22 33G 4M" "write -P 0x23 66G 4M" \
		"write -P 0x24 $((100 * 1024 - 4))M 4M"
	truncate -s 8G "$b/big.raw"
	qemu-io -f raw -c "write -P 0x5a 0 64k" -c "write -P 0xa5 4G 64k" "$b/big.raw" >/dev/null
	qemu-img create -q -f qcow2 -b big.raw -F raw "$b/big.qcow2"
	qio "$b/big.qcow2" "write -z 6G 1M" "write -P 0x11 8388544k 64k"
}

# fresh SIDE: copies of the source images in $DIR/SIDE
fresh() {
	rm -rf "${DIR:?}/$1"
	cp -a --sparse=always "$DIR/src" "$DIR/$1"
}

# run_side SIDE NAME: the timed command of one side ("q": qemu-img, "c": qcowctl), its time
# written to $DIR/t.SIDE
run_side() {
	local side=$1 name=$2 t
	case $name in
	checksum) cd "$DIR/$side/big" || exit 1 ;;
	*) cd "$DIR/$side/sparse" || exit 1 ;;
	esac
	case $side-$name in
	q-commit) timed t qemu-img commit -q top.qcow2 ;;
	c-commit) timed t "$QCOWCTL" commit -q top.qcow2 ;;
	q-pull) timed t qemu-img rebase -b "" top.qcow2 ;;
	c-pull) timed t "$QCOWCTL" pull -q top.qcow2 ;;
	q-checksum) timed t sh -c "qemu-img convert -O raw big.qcow2 $SHM &&
		sha256sum $SHM | cut -d' ' -f1 >sum; rm -f $SHM" ;;
	c-checksum) timed t sh -c "'$QCOWCTL' checksum -q big.qcow2 | cut -d' ' -f1 >sum" ;;
	esac
	echo "$t" >"$DIR/t.$side"
	cd "$DIR" || exit 1
}

# verify NAME: both sides produced the same result, and qcowctl's images pass qemu-img check
verify() {
	case $1 in
	commit)
		images_equal commit "$DIR/q/sparse/base.qcow2" "$DIR/c/sparse/base.qcow2"
		image_clean "$DIR/c/sparse/base.qcow2"
		image_clean "$DIR/c/sparse/top.qcow2" ;;
	pull)
		images_equal pull "$DIR/q/sparse/top.qcow2" "$DIR/c/sparse/top.qcow2"
		image_clean "$DIR/c/sparse/top.qcow2" ;;
	checksum)
		if ! cmp -s "$DIR/q/big/sum" "$DIR/c/big/sum"; then
			log "DATA CHECK FAILED: checksums differ"
			FAILED=1
		fi ;;
	esac
}

make_images
OPS=(commit pull checksum)
for op in "${OPS[@]}"; do
	bench_op "$op"
done

MISSED=0
printf '\n%-10s %-34s %12s %12s %10s\n' command "qemu-img counterpart" "qemu-img s" "qcowctl s" ratio
for op in "${OPS[@]}"; do
	case $op in
	commit) ref="qemu-img commit" ;;
	pull) ref="qemu-img rebase -b \"\"" ;;
	checksum) ref="qemu-img convert -O raw + sha256sum" ;;
	esac
	ratio=$(echo "${Q_T[$op]} / ${C_T[$op]}" | bc -l)
	printf '%-10s %-34s %12.3f %12.3f %10.2f\n' "$op" "$ref" "${Q_T[$op]}" "${C_T[$op]}" "$ratio"
	if [ "$(echo "$ratio < 1" | bc -l)" = 1 ]; then
		MISSED=$((MISSED + 1))
	fi
done
printf 'targets: %d of %d at least 1.00x qemu-img (sparse images, median of %d)\n' \
	$((${#OPS[@]} - MISSED)) "${#OPS[@]}" "$REPS"

# How soon a long command stops on SIGINT (Ctrl-C).
interrupt_ms()
{
	local pid t0 rc
	(cd "$DIR/src/big" && exec "$QCOWCTL" checksum -q big.qcow2 >/dev/null 2>&1) &
	pid=$!
	sleep 0.5
	t0=$(date +%s%N)
	kill -INT "$pid" 2>/dev/null || { wait "$pid"; echo -1; return; }
	wait "$pid"
	rc=$?
	[ "$rc" != 0 ] || { echo -1; return; } # it had finished: no figure
	echo $((($(date +%s%N) - t0) / 1000000))
}
ms=()
for ((i = 0; i < REPS; i++)); do
	ms+=("$(interrupt_ms)")
done
printf 'interrupt: qcowctl checksum exits %s ms after SIGINT (median of %d; -1: it had finished)\n' \
	"$(median "${ms[@]}")" "$REPS"
[ "$FAILED" = 0 ] || exit 1
[ "${BENCH_STRICT:-}" = 1 ] && [ "$MISSED" -gt 0 ] && exit 1
exit 0

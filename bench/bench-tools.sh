#!/usr/bin/env bash
# bench-tools.sh - qcowctl's long commands against their qemu-img counterparts, on the same
# images, in one run, as ratios (the target: at least as fast as qemu-img).
#
#   bash bench/bench-tools.sh                   # as root: 1 GiB images, a few minutes
#   BENCH_SIZE=256M bash bench/bench-tools.sh   # quick run
#
# The images: base.qcow2 (BENCH_SIZE of random data, 64 KiB clusters) and top.qcow2 over it,
# with every other MiB written (half the disk). Each pair of commands runs on fresh copies of
# them (cp --sparse=always), with the page cache dropped before every timed run:
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
# Each figure is the median of BENCH_REPS runs (default 5; qemu-img goes first in every other
# run), in seconds; the ratio is
# qemu-img's time over qcowctl's (above 1: qcowctl is faster).
#
# Environment:
#   BENCH_SIZE=1G     size of the images (numfmt --from=iec syntax, a multiple of 2 MiB)
#   BENCH_REPS=5      runs per figure (the median is shown)
#   BENCH_DIR=DIR     work directory (default: a temporary directory under /var/tmp, removed)
#   BENCH_STRICT=1    exit 1 when a target is missed
#   BENCH_OPS="..."   the commands to measure (default: all of them)
#   QCOWCTL           the tool to measure (default build/tools/qcowctl)
# Exit status: 1 when a result check fails, or a target is missed and BENCH_STRICT=1.
# Needs root (drop_caches), qemu-img, qemu-io.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
SIZE=${BENCH_SIZE:-1G}
REPS=${BENCH_REPS:-5}
QCOWCTL=${QCOWCTL:-$ROOT/build/tools/qcowctl}

[ "$(id -u)" = 0 ] || die "needs root (drop_caches)"
for c in qemu-img qemu-io python3; do command -v "$c" >/dev/null || die "missing $c"; done
[ -x "$QCOWCTL" ] || die "no $QCOWCTL: build first (ninja -C build)"
BYTES=$(numfmt --from=iec "$SIZE")
MIB=$((BYTES >> 20))
[ $((MIB % 2)) = 0 ] && [ "$MIB" -gt 0 ] || die "BENCH_SIZE must be a multiple of 2 MiB"

if [ -n "${BENCH_DIR:-}" ]; then
	DIR=$BENCH_DIR
	mkdir -p "$DIR"
else
	DIR=$(mktemp -d /var/tmp/qcowctl-bench.XXXXXX)
	trap 'rm -rf "$DIR" /dev/shm/qcowctl-bench.$$.raw' EXIT
fi
SHM=/dev/shm/qcowctl-bench.$$.raw

make_images() {
	log "making the images ($SIZE) in $DIR"
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

# fresh SIDE: copies of the source images in $DIR/SIDE
fresh() {
	rm -rf "${DIR:?}/$1"
	mkdir -p "$DIR/$1"
	cp --sparse=always "$DIR/src/base.qcow2" "$DIR/src/top.qcow2" "$DIR/$1/"
}

# run_side SIDE NAME: the timed command of one side ("q": qemu-img, "c": qcowctl) in $DIR/SIDE,
# its time written to $DIR/t.SIDE
run_side() {
	local side=$1 name=$2 t
	cd "$DIR/$side" || exit 1
	case $side-$name in
	q-commit) timed t qemu-img commit -q top.qcow2 ;;
	c-commit) timed t "$QCOWCTL" commit -q top.qcow2 ;;
	q-pull) timed t qemu-img rebase -b "" top.qcow2 ;;
	c-pull) timed t "$QCOWCTL" pull -q top.qcow2 ;;
	q-copy) timed t qemu-img convert -O qcow2 top.qcow2 out.qcow2 ;;
	c-copy) timed t "$QCOWCTL" copy -q top.qcow2 out.qcow2 ;;
	q-copy-c) timed t qemu-img convert -c -m 8 -W -O qcow2 top.qcow2 out.qcow2 ;;
	c-copy-c) timed t "$QCOWCTL" convert -q -c top.qcow2 out.qcow2 ;;
	q-copy-c1) timed t qemu-img convert -c -O qcow2 top.qcow2 out.qcow2 ;;
	c-copy-c1) timed t "$QCOWCTL" convert -q -c -m 1 top.qcow2 out.qcow2 ;;
	q-check) timed t qemu-img check top.qcow2 ;;
	c-check) timed t "$QCOWCTL" check top.qcow2 ;;
	q-checksum) timed t sh -c "qemu-img convert -O raw top.qcow2 $SHM &&
		sha256sum $SHM | cut -d' ' -f1 >sum; rm -f $SHM" ;;
	c-checksum) timed t sh -c "'$QCOWCTL' checksum -q top.qcow2 | cut -d' ' -f1 >sum" ;;
	esac
	echo "$t" >"$DIR/t.$side"
	cd "$DIR" || exit 1
}

# verify NAME: both sides produced the same result, and qcowctl's images pass qemu-img check
verify() {
	case $1 in
	commit)
		images_equal commit "$DIR/q/base.qcow2" "$DIR/c/base.qcow2" &&
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

command -v bc >/dev/null || die "missing bc"
make_images
read -r -a OPS <<<"${BENCH_OPS:-commit pull copy check checksum copy-c copy-c1}"
for op in "${OPS[@]}"; do
	bench_op "$op"
done

MISSED=0
printf '\n%-10s %-34s %12s %12s %10s\n' command "qemu-img counterpart" "qemu-img s" "qcowctl s" ratio
for op in "${OPS[@]}"; do
	case $op in
	commit) ref="qemu-img commit" ;;
	pull) ref="qemu-img rebase -b \"\"" ;;
	copy) ref="qemu-img convert -O qcow2" ;;
	copy-c) ref="qemu-img convert -c -m 8 -W" ;;
	copy-c1) ref="qemu-img convert -c" ;;
	check) ref="qemu-img check" ;;
	checksum) ref="qemu-img convert -O raw + sha256sum" ;;
	esac
	ratio=$(echo "${Q_T[$op]} / ${C_T[$op]}" | bc -l)
	printf '%-10s %-34s %12.3f %12.3f %10.2f\n' "$op" "$ref" "${Q_T[$op]}" "${C_T[$op]}" "$ratio"
	if [ "$(echo "$ratio < 1" | bc -l)" = 1 ]; then
		MISSED=$((MISSED + 1))
	fi
done
printf 'targets: %d of %d at least 1.00x qemu-img (size %s, median of %d)\n' \
	$((${#OPS[@]} - MISSED)) "${#OPS[@]}" "$SIZE" "$REPS"
[ "$FAILED" = 0 ] || exit 1
[ "${BENCH_STRICT:-}" = 1 ] && [ "$MISSED" -gt 0 ] && exit 1
exit 0

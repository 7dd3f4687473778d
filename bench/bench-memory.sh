#!/usr/bin/env bash
# bench-memory.sh - the daemon's peak memory (VmHWM) after random reads of a 1 TiB-virtual disk,
# against qemu-storage-daemon's FUSE export of the same disk.
#
#   bash bench/bench-memory.sh            # 20,000 random 4 KiB reads per row
#   bash bench/bench-memory.sh --quick    # 2,000 reads: checks that the bench runs
#
# Makes a 1 TiB qcow2 image with 1 MiB written every 16 GiB (64 MiB of data spread over the
# disk: its L2 tables are spread too), and an overlay over it. For each row, a fresh daemon
# serves the disk, fio reads it (psync, 4 KiB, random over the whole disk, one job), and the
# daemon's VmHWM (/proc/PID/status) is read before it is stopped:
#   qcowfs 1 layer      the image's flat view
#   qcowfs 2 layers     the overlay's view (the chain's owner map is in use)
#   qsd 1 layer / qsd 2 layers    qemu-storage-daemon --export type=fuse of the same
# Printed: peak MiB, the target (SPEC: under 64 MiB), qsd/qcowfs, and the load average before
# each row. Nothing is asserted (BENCH_STRICT=1: exit 1 when a qcowfs row misses the target).
#
# Environment:
#   BENCH_IOS=20000   reads per row
#   QCOWFS            the daemon to measure (default build/fs/qcowfs)
# Needs /dev/fuse, fusermount3, qemu-img, qemu-io, fio; qemu-storage-daemon for its rows.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

IOS=${BENCH_IOS:-20000}
case "${1:-}" in
--quick) IOS=2000 ;;
'') ;;
*) die "usage: bench-memory.sh [--quick]" ;;
esac
QCOWFS=${QCOWFS:-$ROOT/build/fs/qcowfs}
TARGET_MIB=64
export PATH="$PATH:/usr/sbin:/sbin"

for c in qemu-img qemu-io fio fusermount3 mountpoint; do
	command -v "$c" >/dev/null 2>&1 || die "'$c' is missing: run 'bash scripts/setup.sh'"
done
[ -x "$QCOWFS" ] || die "'$QCOWFS' is not built (ninja -C build)"
[ -e /dev/fuse ] || die "/dev/fuse is missing"
QSD=$(command -v qemu-storage-daemon || true)

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/qcowfs-bench-memory.XXXXXX")
SRC=$WORK/src
MNT=$WORK/mnt
PID=
MOUNTED=
cleanup() {
	if [ -n "$MOUNTED" ]; then
		fusermount3 -u "$MOUNTED" 2>/dev/null || fusermount3 -u -z -q "$MOUNTED" 2>/dev/null || true
	fi
	if [ -n "$PID" ]; then
		kill "$PID" 2>/dev/null || true
		wait "$PID" 2>/dev/null || true
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$SRC" "$MNT"

log "making a 1 TiB image with 1 MiB written every 16 GiB, and an overlay"
qemu-img create -q -f qcow2 "$SRC/base.qcow2" 1T
for ((i = 0; i < 64; i++)); do
	echo "write -P $((i + 1)) $((i * 16))G 1M"
done | qemu-io -f qcow2 "$SRC/base.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$SRC/top.qcow2"

# wait (at most 30 s) until the view $1 is served by the daemon $PID
wait_served() {
	local i
	for ((i = 0; i < 300; i++)); do
		mountpoint -q "$MNT" && [ -e "$1" ] && return 0
		kill -0 "$PID" 2>/dev/null || die "the daemon exited: $(head -n 5 "$WORK/daemon.log")"
		sleep 0.1
	done
	die "$1 was not served in 30 s"
}

# fio's random reads of $1 (the whole 1 TiB), then the daemon's peak in KiB into ${2}
read_and_peak() {
	local file=$1 var=$2 kib
	fio --name=mem --filename="$file" --rw=randread --bs=4k --ioengine=psync \
		--number_ios="$IOS" --size=1T --randrepeat=1 --output-format=terse >/dev/null ||
		die "fio failed on $file"
	kib=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$PID/status")
	printf -v "$var" '%s' "$kib"
}

# one row of qcowfs: the view $1 of SOURCE
qcowfs_row() {
	local view=$1 var=$2
	"$QCOWFS" -f -o ro "$SRC" "$MNT" </dev/null >"$WORK/daemon.log" 2>&1 &
	PID=$!
	MOUNTED=$MNT
	wait_served "$MNT/$view"
	read_and_peak "$MNT/$view" "$var"
	fusermount3 -u "$MNT"
	MOUNTED=
	wait "$PID" || true
	PID=
}

# one row of qemu-storage-daemon: the image $1 exported on a file
qsd_row() {
	local img=$1 var=$2 exp=$WORK/export
	: >"$exp"
	"$QSD" --blockdev "driver=file,node-name=f,filename=$SRC/$img,read-only=on" \
		--blockdev driver=qcow2,node-name=q,file=f,read-only=on \
		--export "type=fuse,id=e,node-name=q,mountpoint=$exp" \
		</dev/null >"$WORK/daemon.log" 2>&1 &
	PID=$!
	MOUNTED=$exp
	local i
	for ((i = 0; i < 300; i++)); do
		mountpoint -q "$exp" 2>/dev/null && break
		grep -q " $exp fuse" /proc/self/mounts && break
		kill -0 "$PID" 2>/dev/null || die "qemu-storage-daemon exited: $(head -n 5 "$WORK/daemon.log")"
		sleep 0.1
	done
	read_and_peak "$exp" "$var"
	fusermount3 -u "$exp" 2>/dev/null || true
	MOUNTED=
	kill "$PID" 2>/dev/null || true
	wait "$PID" 2>/dev/null || true
	PID=
}

load() { cut -d' ' -f1-3 /proc/loadavg; }
declare -A PEAK LOAD
for row in "qcowfs 1 layer" "qcowfs 2 layers" "qsd 1 layer" "qsd 2 layers"; do
	LOAD[$row]=$(load)
	case $row in
	"qcowfs 1 layer") qcowfs_row base.raw k ;;
	"qcowfs 2 layers") qcowfs_row top.raw k ;;
	"qsd 1 layer") [ -n "$QSD" ] && qsd_row base.qcow2 k || k= ;;
	"qsd 2 layers") [ -n "$QSD" ] && qsd_row top.qcow2 k || k= ;;
	esac
	PEAK[$row]=$k
	log "$row: VmHWM ${k:-?} KiB (load ${LOAD[$row]})"
done

mib() { [ -n "$1" ] && echo "scale=1; $1 / 1024" | bc -l | sed 's/^\./0./' || echo -; }
ratio() { [ -n "$1" ] && [ -n "$2" ] && echo "scale=2; $2 / $1" | bc -l | sed 's/^\./0./' || echo -; }
printf '\ndaemon peak memory (VmHWM) after %d random 4 KiB reads of a 1 TiB-virtual disk\n' "$IOS"
printf '(one fio job, psync, page cache kept; a fresh daemon per row)\n'
printf '%-16s %10s %10s %12s   %s\n' "" "peak MiB" "target" "qsd/qcowfs" "load average before"
for n in "1 layer" "2 layers"; do
	q=${PEAK["qcowfs $n"]} s=${PEAK["qsd $n"]:-}
	printf '%-16s %10s %10s %12s   %s\n' "qcowfs $n" "$(mib "$q")" "< $TARGET_MIB" \
		"$(ratio "$q" "$s")" "${LOAD["qcowfs $n"]}"
	printf '%-16s %10s %10s %12s   %s\n' "qsd $n" "$(mib "$s")" "" "" "${LOAD["qsd $n"]}"
done
[ -n "$QSD" ] || printf '(qemu-storage-daemon is not installed: its rows are empty)\n'
if [ "${BENCH_STRICT:-0}" = 1 ]; then
	for n in "1 layer" "2 layers"; do
		[ "${PEAK["qcowfs $n"]}" -lt $((TARGET_MIB * 1024)) ] || die "qcowfs $n: over $TARGET_MIB MiB"
	done
fi

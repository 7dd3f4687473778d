#!/usr/bin/env bash
# bench-luks.sh - reads of a LUKS-encrypted image's flat view against QEMU's FUSE export of the
# same image, in the same run.
#
#   bash bench/bench-luks.sh                     # as root: a 512 MiB image, a few minutes
#   BENCH_SIZE=128M BENCH_REPS=3 bash bench/bench-luks.sh   # quick run
#
# One image, made by qemu-img (encrypt.format=luks, aes-256-xts-plain64, 64 KiB clusters), every
# cluster written by qemu-io. Two readers of its guest data, each given the passphrase:
#   qcowfs  the flat view of build/fs/qcowfs --key IMAGE=KEYFILE
#   qsd     qemu-storage-daemon --object secret --blockdev file,qcow2 (read-only,
#           encrypt.key-secret) --export type=fuse
# measured with fio (bench/*.fio), cold (page cache dropped before each run):
#   seq 1M      sequential 1 MiB reads of the whole disk, 1 job       (MB/s)
#   rand 4k     random 4 KiB reads, 1 job, one per cluster on average (IOPS)
# Each figure is the median of BENCH_REPS runs (default 5); the table gives the ratios the
# targets set: random reads at least 1.5x qemu-storage-daemon's IOPS, sequential at least 0.9x
# its throughput. Both readers are checked to read the same bytes first.
#
# Environment: BENCH_SIZE (512M), BENCH_REPS (5), BENCH_STRICT=1 (exit 1 when a target is
# missed), QCOWFS (default build/fs/qcowfs).
# Needs root (drop_caches, FUSE mounts), fio, qemu-img, qemu-io, qemu-storage-daemon, python3.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
. "$BENCH/lib.sh"
SIZE=${BENCH_SIZE:-512M}
REPS=${BENCH_REPS:-5}
QCOWFS=${QCOWFS:-$ROOT/build/fs/qcowfs}
CLUSTER=65536
export PATH="$PATH:/usr/sbin:/sbin"

BYTES=$(numfmt --from=iec "$SIZE") || die "bad BENCH_SIZE '$SIZE'"
for c in fio qemu-img qemu-io qemu-storage-daemon python3 fusermount3 mountpoint numfmt bc; do
	command -v "$c" >/dev/null 2>&1 || die "'$c' is missing"
done
[ -w /proc/sys/vm/drop_caches ] || die "cannot drop the page cache: run as root"
[ -x "$QCOWFS" ] || die "'$QCOWFS' is not built"

WORK=$(mktemp -d /var/tmp/qcowfs-bench-luks.XXXXXX)
PIDS=()
MOUNTS=()
cleanup() {
	local m p
	for m in "${MOUNTS[@]}"; do
		fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null || true
	done
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

KEY=$WORK/key
printf 'bench passphrase' >"$KEY"
chmod 600 "$KEY"
IMG=$WORK/src/disk.qcow2
mkdir -p "$WORK/src" "$WORK/mnt/qcowfs" "$WORK/mnt/qsd"

log "creating a $SIZE LUKS image and writing every cluster"
for ((i = 0; i < 30; i++)); do
	qemu-img create -q -f qcow2 --object secret,id=sec0,file="$KEY" \
		-o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10 "$IMG" "$SIZE" \
		2>/dev/null && break
done
[ -f "$IMG" ] || die "qemu-img could not create the image"
python3 - "$BYTES" "$CLUSTER" >"$WORK/fill.qio" <<'EOF'
import random, sys
size, cs = int(sys.argv[1]), int(sys.argv[2])
order = list(range(size // cs))
random.Random(1).shuffle(order)
for c in order:
    print("write -P %d %d %d" % (c % 251 + 1, c * cs, cs))
EOF
qemu-io --object secret,id=sec0,file="$KEY" \
	--image-opts "driver=qcow2,file.filename=$IMG,encrypt.key-secret=sec0" \
	<"$WORK/fill.qio" >/dev/null || die "qemu-io could not fill the image"

wait_mounted() { # MNT PID
	local i
	for i in $(seq 1 200); do
		mountpoint -q "$1" && return 0
		[ -n "$2" ] && ! kill -0 "$2" 2>/dev/null && return 1
		sleep 0.05
	done
	return 1
}

"$QCOWFS" -f --key disk.qcow2="$KEY" "$WORK/src" "$WORK/mnt/qcowfs" >"$WORK/qcowfs.log" 2>&1 &
PIDS+=("$!")
MOUNTS+=("$WORK/mnt/qcowfs")
wait_mounted "$WORK/mnt/qcowfs" "$!" || die "qcowfs did not mount: $(tail -n 3 "$WORK/qcowfs.log")"
: >"$WORK/mnt/qsd-export"
MOUNTS+=("$WORK/mnt/qsd-export")
qemu-storage-daemon --object secret,id=sec0,file="$KEY" \
	--blockdev driver=file,node-name=file,filename="$IMG",read-only=on \
	--blockdev driver=qcow2,node-name=qcow2,file=file,read-only=on,encrypt.format=luks,encrypt.key-secret=sec0 \
	--export type=fuse,id=exp,node-name=qcow2,mountpoint="$WORK/mnt/qsd-export" \
	--pidfile "$WORK/qsd.pid" --daemonize >"$WORK/qsd.log" 2>&1 ||
	die "qemu-storage-daemon failed: $(cat "$WORK/qsd.log")"
PIDS+=("$(cat "$WORK/qsd.pid")")
wait_mounted "$WORK/mnt/qsd-export" "" || die "qemu-storage-daemon did not mount"
declare -A FILE=([qcowfs]=$WORK/mnt/qcowfs/disk.raw [qsd]=$WORK/mnt/qsd-export)

python3 - "$BYTES" "${FILE[qcowfs]}" "${FILE[qsd]}" <<'EOF' || die "the readers disagree; not measuring"
import os, random, sys
size, a, b = int(sys.argv[1]), os.open(sys.argv[2], os.O_RDONLY), os.open(sys.argv[3], os.O_RDONLY)
rng = random.Random()
for off in [0, size - 4096] + [rng.randrange(size // 4096) * 4096 for _ in range(300)]:
    x = os.pread(a, 4096, off)
    if x != os.pread(b, 4096, off) or x != bytes([off // 65536 % 251 + 1]) * 4096:
        sys.exit("bench: the views differ at offset %d" % off)
EOF

# run_fio KIND TARGET: one cold run; prints MB/s (seq) or IOPS (rand)
run_fio() {
	local out=$WORK/fio.json
	drop_caches
	BENCH_FILE=${FILE[$2]} BENCH_BYTES=$BYTES BENCH_RUNTIME=600 BENCH_JOBS=1 \
		BENCH_IO_BYTES=$((BYTES / CLUSTER * 4096)) \
		fio --output-format=json --output="$out" "$BENCH/$1-read.fio" >/dev/null
	python3 - "$out" "$1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["jobs"][0]["read"]
print("%.1f" % (r["bw_bytes"] / 1e6) if sys.argv[2] == "seq" else "%.0f" % r["iops"])
EOF
}

declare -A RES
for kind in seq rand; do
	for t in qcowfs qsd; do
		vals=()
		for ((r = 0; r < REPS; r++)); do
			vals+=("$(run_fio "$kind" "$t")")
		done
		RES[$kind.$t]=$(median "${vals[@]}")
		log "$kind $t: ${vals[*]} -> ${RES[$kind.$t]}"
	done
done

ratio() { echo "scale=2; $1 / $2" | bc -l; }
SEQ_R=$(ratio "${RES[seq.qcowfs]}" "${RES[seq.qsd]}")
RAND_R=$(ratio "${RES[rand.qcowfs]}" "${RES[rand.qsd]}")
cat <<EOF
LUKS (aes-256-xts-plain64) $SIZE image, 64 KiB clusters, cold reads, median of $REPS runs
read-ahead: qcowfs $(cat "/sys/class/bdi/$(stat -c '%Hd:%Ld' "${FILE[qcowfs]}")/read_ahead_kb" 2>/dev/null || echo '?') KiB, load: $(cut -d' ' -f1-3 /proc/loadavg)
| test          | qcowfs | qemu-storage-daemon | ratio | target |
|---------------|--------|---------------------|-------|--------|
| seq 1M (MB/s) | ${RES[seq.qcowfs]} | ${RES[seq.qsd]} | ${SEQ_R}x | >= 0.9x |
| rand 4k (IOPS)| ${RES[rand.qcowfs]} | ${RES[rand.qsd]} | ${RAND_R}x | >= 1.5x |
EOF
miss=0
(($(echo "$SEQ_R < 0.9" | bc -l))) && { log "target missed: sequential"; miss=1; }
(($(echo "$RAND_R < 1.5" | bc -l))) && { log "target missed: random 4k"; miss=1; }
[ "${BENCH_STRICT:-0}" = 1 ] && [ "$miss" = 1 ] && exit 1
exit 0

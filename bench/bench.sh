#!/usr/bin/env bash
# bench.sh - read performance of the qcowfs flat view against a raw file and QEMU's FUSE export.
#
#   bash bench/bench.sh                      # as root: 1 GiB images, about 3 minutes on 2 cores
#   BENCH_SIZE=128M bash bench/bench.sh      # quick run
#
# One run measures, with fio (bench/*.fio), cold reads (page cache dropped before each run):
#   seq 1M      sequential 1 MiB reads of the whole file, 1 job              (MB/s)
#   rand 4k 1j  random 4 KiB reads, 1 job; one read per cluster on average  (IOPS)
#   rand 4k 4j  the same split over 4 jobs                                  (IOPS)
# through three readers of the same guest data:
#   raw     a raw copy (qemu-img convert -O raw): the limit
#   qcowfs  the flat view of build/fs/qcowfs
#   qsd     qemu-storage-daemon --blockdev file,qcow2 (read-only) --export type=fuse
# on two images of BENCH_SIZE, 64 KiB clusters, every cluster written, in random order:
#   single  one qcow2 image
#   chain   a BENCH_LAYERS-layer chain (default 32); layer i holds the clusters c with
#           c % LAYERS == i, so data is scattered over all layers; its flat view equals single's
# Each figure is the median of BENCH_REPS runs (default 5). The table gives the ratios that
# the performance targets set: sequential reads at least 0.9x raw, random 4k reads at least
# 1.5x qemu-storage-daemon, and a deep chain within 10% of a single image (checked below).
#
# Environment:
#   BENCH_SIZE=1G        image size (numfmt --from=iec syntax)
#   BENCH_LAYERS=32      chain depth
#   BENCH_REPS=5         runs per figure (the median is shown)
#   BENCH_REMOUNT=0      1: restart qcowfs and qsd before every run, so that their own metadata
#                        caches are cold too (by default they stay mounted for the whole bench:
#                        "cold" is the kernel's page cache, dropped before every run)
#   BENCH_RAND_PER_CLUSTER=1  random 4 KiB reads per cluster of the image, per run
#   BENCH_DIR=DIR        keep the images and results (every fio JSON) in DIR, and reuse the
#                        images on the next run (default: a temporary directory under
#                        /var/tmp, removed at the end)
#   BENCH_QCOWFS_OPTS    extra options for qcowfs (e.g. "-o ro")
#   BENCH_STRICT=1       exit 1 when a target is missed
#   QCOWFS               the daemon to measure (default build/fs/qcowfs)
# Needs root (drop_caches, FUSE mounts), fio, qemu-img, qemu-io, qemu-storage-daemon, python3.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
SIZE=${BENCH_SIZE:-1G}
LAYERS=${BENCH_LAYERS:-32}
REPS=${BENCH_REPS:-5}
REMOUNT=${BENCH_REMOUNT:-0}
PER_CLUSTER=${BENCH_RAND_PER_CLUSTER:-1}
QCOWFS=${QCOWFS:-$ROOT/build/fs/qcowfs}
CLUSTER=65536
export PATH="$PATH:/usr/sbin:/sbin"

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

BYTES=$(numfmt --from=iec "$SIZE") || die "bad BENCH_SIZE '$SIZE'"
[ $((BYTES % (CLUSTER * LAYERS))) -eq 0 ] ||
	die "BENCH_SIZE must be a multiple of $((CLUSTER * LAYERS)) bytes"
CLUSTERS=$((BYTES / CLUSTER))
for c in fio qemu-img qemu-io qemu-storage-daemon python3 fusermount3 mountpoint numfmt; do
	command -v "$c" >/dev/null 2>&1 || die "'$c' is missing: run 'bash scripts/setup.sh'"
done
[ -w /proc/sys/vm/drop_caches ] || die "cannot drop the page cache: run as root"
[ -e /dev/fuse ] || die "/dev/fuse is missing"
TARGETS=(raw qcowfs qsd)
if [ ! -x "$QCOWFS" ]; then
	log "warning: '$QCOWFS' is not built: measuring raw and qsd only"
	TARGETS=(raw qsd)
fi

# ---- cleanup: every mount and daemon started here goes away on any exit ----
MOUNTS=()
PIDS=()
KEEP_WORK=0
if [ -n "${BENCH_DIR:-}" ]; then
	WORK=$BENCH_DIR
	KEEP_WORK=1
	mkdir -p "$WORK"
else
	WORK=$(mktemp -d /var/tmp/qcowfs-bench.XXXXXX)
fi
WORK=$(cd "$WORK" && pwd)

cleanup() {
	local m p i
	for m in "${MOUNTS[@]}"; do
		if mountpoint -q "$m" 2>/dev/null || ! stat "$m" >/dev/null 2>&1; then
			fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null ||
				umount -l "$m" 2>/dev/null || true
		fi
	done
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${PIDS[@]}"; do
		for i in $(seq 1 50); do
			kill -0 "$p" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$p" 2>/dev/null || true
	done
	# a daemon killed before it unmounted leaves a dead mount behind
	for m in "${MOUNTS[@]}"; do
		grep -qF " $m " /proc/mounts && { fusermount3 -uz "$m" 2>/dev/null || umount -l "$m"; }
	done
	if [ "$KEEP_WORK" = 0 ]; then
		rm -rf "$WORK"
	else
		rm -rf "${WORK:?}/mnt" # results/ stays: every run's fio JSON and all.tsv
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- images ----
# qemu_io_script SEL - qemu-io commands writing the clusters selected by SEL ("all" or a
# layer number), in random order; cluster c is filled with byte (c % 251) + 1, so the single
# image and the chain have the same flat view and a misplaced cluster shows.
qemu_io_script() {
	python3 - "$CLUSTERS" "$LAYERS" "$CLUSTER" "$1" <<'EOF'
import random, sys
clusters, layers, csize, sel = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cl = list(range(clusters)) if sel == "all" else list(range(int(sel), clusters, layers))
random.Random(42).shuffle(cl)
sys.stdout.write("".join("write -q -P %d %d %d\n" % (c % 251 + 1, c * csize, csize) for c in cl))
EOF
}

make_images() {
	local stamp="$WORK/images.done" want="size=$BYTES layers=$LAYERS cluster=$CLUSTER" i prev
	if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
		log "reusing the images in $WORK"
		return
	fi
	rm -rf "$WORK/single" "$WORK/chain" "$WORK/raw.img" "$stamp"
	mkdir -p "$WORK/single" "$WORK/chain"
	log "writing $SIZE into single.qcow2"
	qemu-img create -q -f qcow2 -o cluster_size=$CLUSTER "$WORK/single/single.qcow2" "$BYTES"
	qemu_io_script all >"$WORK/qemu-io.cmds"
	qemu-io -f qcow2 "$WORK/single/single.qcow2" <"$WORK/qemu-io.cmds" >/dev/null
	log "writing $SIZE over a $LAYERS-layer chain"
	prev=
	for ((i = 0; i < LAYERS; i++)); do
		img=$(printf 'l%02d.qcow2' "$i")
		if [ -z "$prev" ]; then
			qemu-img create -q -f qcow2 -o cluster_size=$CLUSTER "$WORK/chain/$img" "$BYTES"
		else
			(cd "$WORK/chain" && qemu-img create -q -f qcow2 -o cluster_size=$CLUSTER \
				-b "$prev" -F qcow2 "$img" "$BYTES")
		fi
		qemu_io_script "$i" >"$WORK/qemu-io.cmds"
		qemu-io -f qcow2 "$WORK/chain/$img" <"$WORK/qemu-io.cmds" >/dev/null
		prev=$img
	done
	TOP=$(printf 'l%02d.qcow2' $((LAYERS - 1)))
	log "raw copy"
	qemu-img convert -f qcow2 -O raw "$WORK/single/single.qcow2" "$WORK/raw.img"
	log "checking that the chain's flat view equals the raw copy"
	qemu-img compare -q -f qcow2 -F raw "$WORK/chain/$TOP" "$WORK/raw.img" ||
		die "the $LAYERS-layer chain does not match the single image"
	rm -f "$WORK/qemu-io.cmds"
	echo "$want" >"$stamp"
}

# ---- mounts ----
wait_mounted() { # PATH PID
	local i
	for i in $(seq 1 100); do
		mountpoint -q "$1" 2>/dev/null && return 0
		[ -n "$2" ] && ! kill -0 "$2" 2>/dev/null && return 1
		sleep 0.1
	done
	return 1
}

mount_qcowfs() { # SRC-DIR MOUNTPOINT LOG
	local pid
	mkdir -p "$2"
	# shellcheck disable=SC2086 # BENCH_QCOWFS_OPTS is a list of options
	"$QCOWFS" -f ${BENCH_QCOWFS_OPTS:-} "$1" "$2" </dev/null >"$3" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	MOUNTS+=("$2")
	LAST_PID=$pid
	wait_mounted "$2" "$pid" || die "qcowfs did not mount $1 (log: $(tail -n 3 "$3"))"
}

# Read-only nodes: a read-write node would take QEMU's write lock on the image, which qcowfs
# (serving the same image at the same time) rightly refuses to share.
mount_qsd() { # IMAGE EXPORT-FILE LOG
	local pidfile="$2.pid"
	: >"$2"
	MOUNTS+=("$2")
	qemu-storage-daemon \
		--blockdev driver=file,node-name=file,filename="$1",read-only=on \
		--blockdev driver=qcow2,node-name=qcow2,file=file,read-only=on \
		--export type=fuse,id=exp,node-name=qcow2,mountpoint="$2" \
		--pidfile "$pidfile" --daemonize >"$3" 2>&1 || die "qemu-storage-daemon failed: $(cat "$3")"
	LAST_PID=$(cat "$pidfile")
	PIDS+=("$LAST_PID")
	wait_mounted "$2" "" || die "qemu-storage-daemon did not mount $2"
}

# start_target IMAGE TARGET / stop_target IMAGE TARGET - mount or unmount one reader.
declare -A FILE DPID
start_target() {
	local image=$1 t=$2 img name
	if [ "$image" = single ]; then img=$WORK/single/single.qcow2; else img=$WORK/chain/$TOP; fi
	case $t in
	raw) FILE[$image.raw]=$WORK/raw.img ;;
	qsd)
		mount_qsd "$img" "$WORK/mnt/qsd-$image" "$WORK/mnt/qsd-$image.log"
		FILE[$image.qsd]=$WORK/mnt/qsd-$image
		DPID[$image.qsd]=$LAST_PID
		;;
	qcowfs)
		name=$(basename "${img%.qcow2}")
		mount_qcowfs "$WORK/$image" "$WORK/mnt/qcowfs-$image" "$WORK/mnt/qcowfs-$image.log"
		FILE[$image.qcowfs]=$WORK/mnt/qcowfs-$image/$name.raw
		DPID[$image.qcowfs]=$LAST_PID
		;;
	esac
}

stop_target() {
	local image=$1 t=$2 m pid i
	[ "$t" = raw ] && return
	pid=${DPID[$image.$t]}
	if [ "$t" = qsd ]; then m=$WORK/mnt/qsd-$image; else m=$WORK/mnt/qcowfs-$image; fi
	fusermount3 -u "$m" 2>/dev/null || true
	kill "$pid" 2>/dev/null || true
	for i in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	kill -9 "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	grep -qF " $m " /proc/mounts && { fusermount3 -uz "$m" 2>/dev/null || umount -l "$m"; }
	return 0
}

read_ahead_kb() { # FILE
	local dev
	dev=$(stat -c '%Hd:%Ld' "$1" 2>/dev/null) || { echo '?'; return; }
	cat "/sys/class/bdi/$dev/read_ahead_kb" 2>/dev/null || echo '?'
}

# check_same FILE... - a few hundred random 4 KiB blocks read the same through every reader.
check_same() {
	python3 - "$BYTES" "$@" <<'EOF' || die "readers disagree about the data; not measuring"
import os, random, sys
size, files = int(sys.argv[1]), sys.argv[2:]
fds = [os.open(f, os.O_RDONLY) for f in files]
for f, fd in zip(files, fds):
    if os.fstat(fd).st_size != size:
        sys.exit("bench: %s has size %d, want %d" % (f, os.fstat(fd).st_size, size))
rng = random.Random()
for off in [0, size - 4096] + [rng.randrange(size // 4096) * 4096 for _ in range(300)]:
    want = os.pread(fds[0], 4096, off)
    for f, fd in zip(files[1:], fds[1:]):
        if os.pread(fd, 4096, off) != want:
            sys.exit("bench: %s differs from %s at offset %d" % (f, files[0], off))
EOF
}

# ---- runs ----
RESULTS=$WORK/results
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

run_fio() { # IMAGE WORKLOAD TARGET FILE REP
	local image=$1 wl=$2 target=$3 file=$4 rep=$5 job jobs=1 out
	out="$RESULTS/$image-$wl-$target-$rep.json"
	case $wl in
	seq) job=seq-read.fio ;;
	rand1) job=rand-read.fio ;;
	rand4) job=rand-read.fio jobs=4 ;;
	esac
	drop_caches
	BENCH_FILE=$file BENCH_BYTES=$BYTES BENCH_RUNTIME=60 BENCH_JOBS=$jobs \
		BENCH_IO_BYTES=$((CLUSTERS * PER_CLUSTER * 4096 / jobs)) \
		fio --readonly --output-format=json --output="$out" "$BENCH/$job" >/dev/null \
		2>"$out.err" || die "fio failed on $file ($wl): $(tail -n 5 "$out.err")"
	python3 - "$out" "$image" "$wl" "$target" <<'EOF' >>"$RESULTS/all.tsv"
import json, sys
path, image, wl, target = sys.argv[1:]
text = open(path).read()
data = json.loads(text[text.index("{"):])   # fio may print notes before the JSON
read = data["jobs"][0]["read"]
value = read["bw_bytes"] / 1e6 if wl == "seq" else read["iops"]
print("%s\t%s\t%s\t%.3f" % (image, wl, target, value))
EOF
}

make_images
TOP=$(printf 'l%02d.qcow2' $((LAYERS - 1)))
rm -rf "${WORK:?}/mnt" "$RESULTS"
mkdir -p "$WORK/mnt" "$RESULTS"
: >"$RESULTS/all.tsv"

for image in single chain; do
	for t in "${TARGETS[@]}"; do start_target "$image" "$t"; done
	files=()
	for t in "${TARGETS[@]}"; do files+=("${FILE[$image.$t]}"); done
	check_same "${files[@]}"
done
ra=""
for k in single.qsd single.qcowfs; do
	[ -n "${FILE[$k]:-}" ] && ra+=" ${k#single.}=$(read_ahead_kb "${FILE[$k]}")"
done
log "read_ahead_kb of the FUSE mounts:$ra"

nruns=$((2 * 3 * ${#TARGETS[@]} * REPS))
n=0
for ((rep = 1; rep <= REPS; rep++)); do
	for image in single chain; do
		for wl in seq rand1 rand4; do
			for t in "${TARGETS[@]}"; do
				n=$((n + 1))
				log "run $n/$nruns: $image $wl $t"
				if [ "$REMOUNT" = 1 ]; then
					stop_target "$image" "$t"
					start_target "$image" "$t"
				fi
				run_fio "$image" "$wl" "$t" "${FILE[$image.$t]}" "$rep"
			done
		done
	done
done

# ---- report ----
python3 - "$RESULTS/all.tsv" "$SIZE" "$LAYERS" "$REPS" "${BENCH_STRICT:-0}" <<'EOF'
import statistics, sys
from collections import defaultdict
path, size, layers, reps, strict = sys.argv[1:]
vals = defaultdict(list)
for line in open(path):
    image, wl, target, v = line.split("\t")
    vals[(image, wl, target)].append(float(v))
med = {k: statistics.median(v) for k, v in vals.items()}
def get(image, wl, target):
    return med.get((image, wl, target))
def ratio(a, b):
    return a / b if a is not None and b else None
def fmt(v, nd=1):
    return "-" if v is None else ("%.*f" % (nd, v))
names = {"seq": "seq 1M (MB/s)", "rand1": "rand 4k 1 job (IOPS)",
         "rand4": "rand 4k 4 jobs (IOPS)"}
imgs = {"single": "single", "chain": "%s-layer" % layers}
plural = {"rand1": "1 job", "rand4": "4 jobs"}
row = "%-32s %10s %10s %10s %11s %11s"
print()
print("qcowfs read benchmark: %s images, 64 KiB clusters, cold page cache, median of %s"
      % (size, reps))
print()
hdr = row % ("workload", "raw", "qcowfs", "qsd", "qcowfs/raw", "qcowfs/qsd")
print(hdr)
print("-" * len(hdr))
for image in ("single", "chain"):
    for wl in ("seq", "rand1", "rand4"):
        r, q, s = get(image, wl, "raw"), get(image, wl, "qcowfs"), get(image, wl, "qsd")
        print(row % (imgs[image] + " " + names[wl], fmt(r), fmt(q), fmt(s),
                     fmt(ratio(q, r), 2), fmt(ratio(q, s), 2)))
worst = max(((max(v) / min(v), k) for k, v in vals.items() if len(v) > 1 and min(v) > 0),
            default=None)
if worst:
    print("(noise: the widest spread is %s %s %s, max/min %.2f over %d runs)"
          % (imgs[worst[1][0]], worst[1][1], worst[1][2], worst[0], len(vals[worst[1]])))
print()
print("%s-layer chain / single image:" % layers)
for wl in ("seq", "rand1", "rand4"):
    depth = [fmt(ratio(get("chain", wl, t), get("single", wl, t)), 2) for t in ("qcowfs", "qsd")]
    print("  %-24s qcowfs %5s   qsd %5s" % (names[wl], depth[0], depth[1]))
print()
print("Targets:")
checks = []
for image in ("single", "chain"):
    checks.append(("%s seq read >= 0.9x raw" % imgs[image],
                   ratio(get(image, "seq", "qcowfs"), get(image, "seq", "raw")), 0.9))
    for wl in ("rand1", "rand4"):
        checks.append(("%s rand 4k %s >= 1.5x qsd" % (imgs[image], plural[wl]),
                       ratio(get(image, wl, "qcowfs"), get(image, wl, "qsd")), 1.5))
for wl in ("rand1", "rand4"):
    checks.append(("%s-layer rand 4k %s within 10%% of single" % (layers, plural[wl]),
                   ratio(get("chain", wl, "qcowfs"), get("single", wl, "qcowfs")), 0.9))
missed = 0
for name, got, want in checks:
    verdict = "n/a" if got is None else ("PASS" if got >= want else "MISS")
    missed += verdict != "PASS"
    print("  %-44s %6s  (want >= %.2f)  %s" % (name, fmt(got, 2), want, verdict))
sys.exit(1 if strict == "1" and missed else 0)
EOF

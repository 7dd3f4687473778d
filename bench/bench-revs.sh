#!/usr/bin/env bash
# bench-revs.sh - the same workloads on two revisions of this repository, old and new in turn,
# as same-run ratios new/old: does a change cost speed?
#
#   bash bench/bench-revs.sh OLD_REV [NEW_REV]     # as root; NEW_REV defaults to HEAD
#   BENCH_REPS=9 bash bench/bench-revs.sh 0888558  # more runs, to see the noise
#
# Both revisions are taken from git (git archive: committed trees only, the work tree's edits
# are not measured) into a temporary directory under /var/tmp and built there as the README
# builds (meson setup with the project's default options, debugoptimized), without tests.
# Then every workload runs with the old and the new binaries in turn, the order flipping on
# every repetition (old new, new old, ...), so that the drift of a shared machine falls on both:
#   single seq     cold sequential 1 MiB reads of the qcowfs view of one image        (MB/s)
#   single rand1   cold random 4 KiB reads of that view, 1 job, one per cluster        (IOPS)
#   single rand4   the same split over 4 jobs                                          (IOPS)
#   chain ...      the same three on the view of a BENCH_LAYERS-layer chain
#                  (images, fio jobs and the data check are bench.sh's)
#   write rand     random 4 KiB writes, final fsync included, into a fresh overlay
#                  through the view (rand-write.fio, bench-write.sh's base and overlay)  (IOPS)
#   ctl commit     qcowctl commit of a half-written overlay into its base            (seconds)
#   ctl copy       qcowctl copy of that overlay to a new image                        (seconds)
#   ctl check      qcowctl check of that overlay                                     (seconds)
#                  (bench-tools.sh's images and timing: caches dropped, sync included)
# The page cache is dropped before every run and the daemon is started for every run (its
# own caches are cold too). The old and new results are checked against each other: both
# views read the same bytes as a raw copy, both overlays written through them are equal and
# pass qemu-img check, both commits and copies give equal images.
# The report gives per workload min/median/max of each side, the ratio of the medians
# new/old, the min and max of the per-repetition ratios (each pair ran back to back), and the
# load average at the start and the end, twice: for the figures above, and for the CPU time
# (user + system) of the daemon over its whole life in the run, or of qcowctl, which the load
# of a shared machine disturbs far less. A workload is called slower or faster only when
# the new side was so in every one of at least 5 pairs; otherwise "within noise".
# About 3 minutes with the defaults on 2 cores (the two builds take about 1 of them).
#
# Environment:
#   BENCH_SIZE=128M        size of the read and write images (numfmt --from=iec syntax, a
#                          multiple of 64 KiB times BENCH_LAYERS)
#   BENCH_LAYERS=32        chain depth
#   BENCH_TOOLS_SIZE=256M  size of the qcowctl images (a multiple of 2 MiB)
#   BENCH_REPS=5           runs per workload and revision
#   BENCH_RAND_PER_CLUSTER=1  random 4 KiB reads or writes per cluster, per run
#   BENCH_WORKLOADS        the workloads to run, by the names above (default all:
#                          "single-seq single-rand1 single-rand4 chain-seq chain-rand1
#                          chain-rand4 write-rand ctl-commit ctl-copy ctl-check")
#   BENCH_TIMEOUT=600      seconds one fio run may take
#   BENCH_QCOWFS_OPTS      extra options for both daemons
#   BENCH_MESON_OPTS       extra options for both builds' meson setup
# Needs root (drop_caches, FUSE mounts), git, meson, ninja, fio, qemu-img, qemu-io, python3, bc.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
SIZE=${BENCH_SIZE:-128M}
LAYERS=${BENCH_LAYERS:-32}
TOOLS_SIZE=${BENCH_TOOLS_SIZE:-256M}
REPS=${BENCH_REPS:-5}
PER_CLUSTER=${BENCH_RAND_PER_CLUSTER:-1}
TIMEOUT=${BENCH_TIMEOUT:-600}
WORKLOADS=${BENCH_WORKLOADS:-single-seq single-rand1 single-rand4 chain-seq chain-rand1 \
chain-rand4 write-rand ctl-commit ctl-copy ctl-check}
CLUSTER=65536
export PATH="$PATH:/usr/sbin:/sbin"

# log, die, drop_caches, timed, median
# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: bench/bench-revs.sh OLD_REV [NEW_REV]"
OLD_REV=$(git -C "$ROOT" rev-parse --verify -q "$1^{commit}") || die "no revision '$1'"
NEW_REV=$(git -C "$ROOT" rev-parse --verify -q "${2:-HEAD}^{commit}") ||
	die "no revision '${2:-HEAD}'"
BYTES=$(numfmt --from=iec "$SIZE") || die "bad BENCH_SIZE '$SIZE'"
[ "$BYTES" -gt 0 ] && [ $((BYTES % (CLUSTER * LAYERS))) -eq 0 ] ||
	die "BENCH_SIZE must be a multiple of $((CLUSTER * LAYERS)) bytes"
CLUSTERS=$((BYTES / CLUSTER))
TOOLS_BYTES=$(numfmt --from=iec "$TOOLS_SIZE") || die "bad BENCH_TOOLS_SIZE '$TOOLS_SIZE'"
[ "$TOOLS_BYTES" -gt 0 ] && [ $((TOOLS_BYTES % 2097152)) -eq 0 ] ||
	die "BENCH_TOOLS_SIZE must be a multiple of 2 MiB"
[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "bad BENCH_REPS '$REPS'"
for w in $WORKLOADS; do
	case $w in
	single-seq | single-rand1 | single-rand4 | chain-seq | chain-rand1 | chain-rand4) ;;
	write-rand | ctl-commit | ctl-copy | ctl-check) ;;
	*) die "unknown workload '$w' in BENCH_WORKLOADS" ;;
	esac
done
for c in git meson ninja fio qemu-img qemu-io python3 bc fusermount3 mountpoint numfmt timeout; do
	command -v "$c" >/dev/null 2>&1 || die "'$c' is missing: run 'bash scripts/setup.sh'"
done
[ -w /proc/sys/vm/drop_caches ] || die "cannot drop the page cache: run as root"
[ -e /dev/fuse ] || die "/dev/fuse is missing"

# import_fn FILE NAME [AS] - the shell function NAME of the bench script FILE, defined here
# (as AS): the images, fio runs, checks and timings are the other benchmarks' own, not copies.
import_fn() {
	local file=$BENCH/$1 name=$2 as=${3:-$2} body
	body=$(sed -n "/^$name() {/,/^}/p" "$file")
	[ -n "$body" ] || die "$file has no function $name(): update bench-revs.sh"
	eval "$as() ${body#"$name() "}"
}
# bench.sh: images (single, chain, raw copy), the data check, one fio read run
for f in qemu_io_script make_images wait_mounted check_same run_fio; do
	import_fn bench.sh "$f"
done
# bench-write.sh: the base and a fresh overlay, the fio figure, stopping a pid, unmounting
for f in make_base new_overlay fio_result stop_pid unmount; do
	import_fn bench-write.sh "$f"
done
# bench-tools.sh: the base and half-written overlay, fresh copies, a timed command
import_fn bench-tools.sh make_images tools_make_images
import_fn bench-tools.sh fresh

# ---- cleanup: the daemon, fio, the builds and the images go away on every path ----
WORK=$(mktemp -d /var/tmp/qcowfs-bench-revs.XXXXXX)
RESULTS=$WORK/results # bench.sh's run_fio writes here
SRC=$WORK/wsrc        # bench-write.sh's base.qcow2 and top.qcow2
DIR=$WORK/tools       # bench-tools.sh's images
MNT=$WORK/mnt/view
QPID= # the qcowfs running now (empty: none)
FIO_PID=

cleanup() {
	[ -n "$FIO_PID" ] && kill "$FIO_PID" 2>/dev/null && stop_pid "$FIO_PID" 15
	unmount "$MNT"
	[ -n "$QPID" ] && stop_pid "$QPID" 0
	unmount "$MNT" # a daemon killed before it unmounted leaves a dead mount behind
	cd /
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- builds ----
declare -A QCOWFS_BIN QCOWCTL_BIN
build() { # SIDE REV
	local src=$WORK/src-$1 out=$WORK/build-$1
	log "building $1 ($(git -C "$ROOT" log -1 --format='%h %s' "$2" | cut -c1-60))"
	mkdir -p "$src"
	git -C "$ROOT" archive --format=tar "$2" | tar -x -C "$src"
	# shellcheck disable=SC2086 # BENCH_MESON_OPTS is a list of options
	meson setup "$out" "$src" -Dtests=false ${BENCH_MESON_OPTS:-} >"$WORK/meson-$1.log" 2>&1 ||
		die "meson setup of $1 failed: $(tail -n 5 "$WORK/meson-$1.log")"
	ninja -C "$out" fs/qcowfs tools/qcowctl >>"$WORK/meson-$1.log" 2>&1 ||
		die "build of $1 failed: $(tail -n 5 "$WORK/meson-$1.log")"
	QCOWFS_BIN[$1]=$out/fs/qcowfs
	QCOWCTL_BIN[$1]=$out/tools/qcowctl
}
build old "$OLD_REV"
build new "$NEW_REV"

# ---- the daemon ----
start_view() { # SIDE SOURCE-DIR LOG
	mkdir -p "$MNT"
	# shellcheck disable=SC2086 # BENCH_QCOWFS_OPTS is a list of options
	"${QCOWFS_BIN[$1]}" -f ${BENCH_QCOWFS_OPTS:-} "$2" "$MNT" </dev/null >"$3" 2>&1 &
	QPID=$!
	wait_mounted "$MNT" "$QPID" || die "$1 qcowfs did not mount $2: $(tail -n 3 "$3")"
}

# CPU time: a process's user and system time, its threads' included, is added to the
# children's times of this shell (bash's times) when the shell reaps it. cpu_mark FILE notes
# those times, in the shell itself (a subshell would count its own children); cpu_diff FILE
# FILE2 prints the seconds between two marks. Only the process measured and small helpers
# (fusermount3, stop_pid's sleeps: the same on both sides) end between the marks. This figure
# is disturbed by the load of a shared machine far less than the elapsed time is.
cpu_mark() { times >"$1"; }
cpu_diff() {
	python3 - "$1" "$2" <<'PY'
import re, sys
def cpu(path):
    line = open(path).read().splitlines()[1]   # the children's "user sys"
    return sum(float(m) * 60 + float(s) for m, s in re.findall(r"(\d+)m([\d.]+)s", line))
print("%.4f" % (cpu(sys.argv[2]) - cpu(sys.argv[1])))
PY
}

# Unmounting ends the daemon's session; it then exits by itself, having written out what it
# holds (within a minute, or it is killed and the run fails). With a third argument, the
# daemon's CPU time (start, workload and exit) goes to the global CPU.
stop_view() { # SIDE LOG [CPU-MARK]
	local rc=0
	fusermount3 -u "$MNT" 2>/dev/null || true
	stop_pid "$QPID" 60
	wait "$QPID" 2>/dev/null || rc=$?
	if [ -n "${3:-}" ]; then
		cpu_mark "$3.end"
		CPU=$(cpu_diff "$3" "$3.end")
	fi
	QPID=
	unmount "$MNT"
	[ "$rc" = 0 ] || die "$1 qcowfs exited with status $rc: $(tail -n 3 "$2")"
}

view_of() { # IMAGE - the file of the view that fio reads
	if [ "$1" = single ]; then echo "$MNT/single.raw"; else echo "$MNT/${TOP%.qcow2}.raw"; fi
}

# ---- one run of one workload on one side ----
run_read() { # IMAGE WL SIDE REP
	local image=$1 wl=$2 side=$3 rep=$4 logf=$RESULTS/$1-$2-$3-$4.log
	start_view "$side" "$WORK/$image" "$logf"
	run_fio "$image" "$wl" "$side" "$(view_of "$image")" "$rep"
	cpu_mark "$WORK/cpu" # after fio ended: the daemon's whole life is counted, fio's not
	stop_view "$side" "$logf" "$WORK/cpu"
	printf '%s\t%s\t%s\t%s\n' "$image" "$wl" "$side" "$CPU" >>"$RESULTS/cpu.tsv"
}

run_write() { # SIDE REP
	local side=$1 rep=$2 out=$RESULTS/write-rand-$1-$2.json logf=$RESULTS/write-rand-$1-$2.log
	local rc=0 res out_img
	new_overlay
	start_view "$side" "$SRC" "$logf"
	drop_caches
	# in the background, so that a signal interrupts the wait and cleanup stops fio first
	BENCH_FILE=$MNT/top.raw BENCH_BYTES=$BYTES BENCH_IO_BYTES=$((CLUSTERS * PER_CLUSTER * 4096)) \
		timeout -k 10 "$TIMEOUT" fio --output-format=json --output="$out" \
		"$BENCH/rand-write.fio" >/dev/null 2>"$out.err" &
	FIO_PID=$!
	wait "$FIO_PID" || rc=$?
	FIO_PID=
	[ "$rc" = 0 ] || die "$side: fio failed (status $rc): $(tail -n 3 "$out.err")"
	res=$(fio_result "$out" rand)
	[ "${res#error}" = "$res" ] || die "$side: fio: $res"
	cpu_mark "$WORK/cpu" # after fio and fio_result ended: the daemon's whole life is counted
	stop_view "$side" "$logf" "$WORK/cpu"
	printf 'write\trand\t%s\t%s\n' "$side" "$CPU" >>"$RESULTS/cpu.tsv"
	qemu-img check -q "$SRC/top.qcow2" || die "$side: qemu-img check of the written overlay failed"
	# fio writes the same bytes every time (fixed seed): both sides must leave equal views
	out_img=$WORK/written-$side.qcow2
	if [ ! -f "$out_img" ]; then
		qemu-img convert -f qcow2 -O qcow2 "$SRC/top.qcow2" "$out_img"
		if [ -f "$WORK/written-old.qcow2" ] && [ -f "$WORK/written-new.qcow2" ]; then
			qemu-img compare -q "$WORK/written-old.qcow2" "$WORK/written-new.qcow2" ||
				die "the overlays written through old and new differ"
			log "write-rand: old and new wrote the same image"
		fi
	fi
	printf 'write\trand\t%s\t%s\n' "$side" "$res" >>"$RESULTS/all.tsv"
}

# cpu_run CMD... - CMD, its CPU time in the global CPU
cpu_run() {
	cpu_mark "$WORK/cpu"
	"$@"
	cpu_mark "$WORK/cpu.end"
	CPU=$(cpu_diff "$WORK/cpu" "$WORK/cpu.end")
}

run_ctl() { # OP SIDE REP
	local op=$1 side=$2 ctl=${QCOWCTL_BIN[$2]} t
	fresh "$side"
	cd "$DIR/$side"
	case $op in
	commit) timed t cpu_run "$ctl" commit -q top.qcow2 ;;
	copy) timed t cpu_run "$ctl" copy -q top.qcow2 out.qcow2 ;;
	check) timed t cpu_run "$ctl" check -q top.qcow2 ;;
	esac
	cd "$WORK"
	printf 'ctl\t%s\t%s\t%s\n' "$op" "$side" "$t" >>"$RESULTS/all.tsv"
	printf 'ctl\t%s\t%s\t%s\n' "$op" "$side" "$CPU" >>"$RESULTS/cpu.tsv"
}

# verify_ctl OP - the first pair of runs of OP left equal, clean images on both sides
verify_ctl() {
	local f
	case $1 in
	commit) f=base.qcow2 ;;
	copy) f=out.qcow2 ;;
	check) return 0 ;;
	esac
	qemu-img compare -q "$DIR/old/$f" "$DIR/new/$f" || die "ctl $1: old and new results differ"
	qemu-img check -q "$DIR/new/$f" || die "ctl $1: qemu-img check of new's $f failed"
	log "ctl $1: old and new made the same image"
}

run() { # WORKLOAD SIDE REP
	case $1 in
	single-* | chain-*) run_read "${1%%-*}" "${1#*-}" "$2" "$3" ;;
	write-rand) run_write "$2" "$3" ;;
	ctl-*) run_ctl "${1#ctl-}" "$2" "$3" ;;
	esac
}

# ---- images ----
mkdir -p "$RESULTS" "$WORK/mnt"
: >"$RESULTS/all.tsv"
: >"$RESULTS/cpu.tsv"
cd "$WORK"
case " $WORKLOADS " in *" single-"* | *" chain-"*) make_images ;; esac
TOP=$(printf 'l%02d.qcow2' $((LAYERS - 1)))
case " $WORKLOADS " in *" write-rand "*) make_base ;; esac
case " $WORKLOADS " in
*" ctl-"*) BYTES=$TOOLS_BYTES MIB=$((TOOLS_BYTES >> 20)) SIZE=$TOOLS_SIZE tools_make_images ;;
esac

# Both views read what the raw copy holds (in a mount of their own: the timed runs start cold).
for image in single chain; do
	case " $WORKLOADS " in *" $image-"*) ;; *) continue ;; esac
	for side in old new; do
		start_view "$side" "$WORK/$image" "$RESULTS/check-$image-$side.log"
		check_same "$WORK/raw.img" "$(view_of "$image")"
		stop_view "$side" "$RESULTS/check-$image-$side.log"
	done
	log "$image: the old and the new view read the same data as the raw copy"
done

# ---- runs: old and new in turn, the order flipping every repetition ----
read -ra WLS <<<"$WORKLOADS"
nruns=$((2 * ${#WLS[@]} * REPS))
n=0
for ((rep = 1; rep <= REPS; rep++)); do
	if ((rep % 2)); then order=(old new); else order=(new old); fi
	for wl in "${WLS[@]}"; do
		for side in "${order[@]}"; do
			n=$((n + 1))
			log "run $n/$nruns: $wl $side"
			run "$wl" "$side" "$rep"
		done
		if [ "$rep" = 1 ] && [ "${wl#ctl-}" != "$wl" ]; then verify_ctl "${wl#ctl-}"; fi
	done
done

# ---- report ----
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$RESULTS/all.tsv" "$RESULTS/cpu.tsv" "$LAYERS" "$SIZE" "$TOOLS_SIZE" "$REPS" \
	"$(git -C "$ROOT" log -1 --format='%h %s' "$OLD_REV" | cut -c1-70)" \
	"$(git -C "$ROOT" log -1 --format='%h %s' "$NEW_REV" | cut -c1-70)" \
	"$LOAD_START" "$LOAD_END" "$WORKLOADS" <<'EOF'
import statistics, sys
from collections import defaultdict
path, cpath, layers, size, tsize, reps, old, new, load0, load1, wls = sys.argv[1:]
def load(path):
    vals = defaultdict(list)
    for line in open(path):
        group, wl, side, v = line.rstrip("\n").split("\t")
        vals[(group + "-" + wl, side)].append(float(v))
    return vals
names = {"seq": "seq 1M read (MB/s)", "rand1": "rand 4k read 1 job (IOPS)",
         "rand4": "rand 4k read 4 jobs (IOPS)"}
def label(w):
    group, wl = w.split("-", 1)
    if group == "single": return "single " + names[wl]
    if group == "chain": return "%s-layer %s" % (layers, names[wl])
    if group == "write": return "overlay rand 4k write (IOPS)"
    return "qcowctl %s %s (s)" % (wl, tsize)
print()
print("old: %s" % old)
print("new: %s" % new)
print("%s runs per side, in turn; read/write images %s, qcowctl images %s" % (reps, size, tsize))
print("load average at start %s, at end %s" % (load0, load1))
row = "%-42s %22s %22s %7s %13s  %s"
def f(v):
    return "%.3f" % v if v < 10 else "%.0f" % v
def table(title, vals, lower_better, label):
    print()
    print(title)
    hdr = row % ("workload", "old min/med/max", "new min/med/max", "new/old",
                 "pairs min-max", "verdict")
    print(hdr)
    print("-" * len(hdr))
    for w in wls.split():
        o, n = vals.get((w, "old"), []), vals.get((w, "new"), [])
        if not o or not n or not statistics.median(o):
            continue
        pairs = [b / a for a, b in zip(o, n) if a > 0]
        ratio = statistics.median(n) / statistics.median(o)
        slower = [p > 1 if lower_better(w) else p < 1 for p in pairs]
        verdict = ("new slower in every pair" if all(slower) else
                   "new faster in every pair" if not any(slower) else "within noise")
        if len(pairs) < 5:
            verdict = "too few runs to tell"
        print(row % (label(w), "/".join(f(x) for x in (min(o), statistics.median(o), max(o))),
                     "/".join(f(x) for x in (min(n), statistics.median(n), max(n))),
                     "%.3f" % ratio, "%.2f-%.2f" % (min(pairs), max(pairs)), verdict))
table("Figures (elapsed):", load(path), lambda w: w.startswith("ctl-"), label)
def cpu_label(w):
    return label(w).rsplit(" (", 1)[0] + (" (s)" if w.startswith("ctl-") else " daemon (s)")
table("CPU time, user + system (the daemon's whole life per run, or qcowctl's):",
      load(cpath), lambda w: True, cpu_label)
print()
print("new/old is the ratio of the medians (for a time, above 1 is slower); a pair is one")
print("repetition's old and new run, back to back.")
EOF

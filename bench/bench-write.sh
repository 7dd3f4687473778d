#!/usr/bin/env bash
# bench-write.sh - allocating writes through the qcowfs flat view against a raw file and QEMU's
# FUSE export.
#
#   bash bench/bench-write.sh                    # as root: 1 GiB image, some minutes on 2 cores
#   BENCH_SIZE=128M BENCH_REPS=3 bash bench/bench-write.sh    # shorter
#   BENCH_QUICK=1 bash bench/bench-write.sh      # CI: checks that the bench runs (no timing)
#
# One run measures, with fio (bench/write-jobs-seq.fio, bench/write-jobs-rand.fio), writes into
# a fresh copy-on-write overlay, each job ending with an fsync that counts in the figure, at 1
# and 4 jobs (BENCH_JOBS), each job in its own slice of the file:
#   seqN      sequential 1 MiB writes over the whole file, N jobs                   (MB/s)
#   randN     random 4 KiB writes, N jobs; one write per cluster on average          (IOPS)
# through four writers of the same guest data:
#   raw       a fresh copy of the base's data (cp --sparse=always): the limit
#   qcowfs    build/fs/qcowfs SRC MNT, writing MNT/top.raw (the default options)
#   qcowfs-wb the same with -o writeback (the kernel's writeback cache, opt-in: README)
#   qsd       qemu-storage-daemon --blockdev file,qcow2 --export type=fuse,writable=on
# The base is one qcow2 image of BENCH_SIZE, 64 KiB clusters, every cluster holding random
# data. Before every run of qcowfs or qsd, SRC/top.qcow2 is created anew on top of it
# (qemu-img create -b base.qcow2), so writes allocate: the first write into a cluster copies
# the rest of it from the base (copy-on-write); before every raw run the raw copy is made anew.
# The page cache is dropped before every run, and qcowfs and qsd are started for each run and
# stopped after it. The load average is read before every run and printed with the figures.
#
# The bench also checks the data. fio writes the same bytes on every target (fixed seed), so:
#   - after every qcowfs (and qsd) run, once the daemon has exited, top.qcow2 must pass
#     qemu-img check;
#   - after the first run of each workload, the flat view of qcowfs's and of qsd's top.qcow2
#     must equal the raw result (qemu-img compare).
# Each figure is the median of BENCH_REPS runs (default 3), with the min-max. The table gives
# the ratios the targets are set for (SPEC, "Performance contract"): sequential 1 MiB writes
# at least 0.9x raw; random 4 KiB writes at least 0.5x raw and 3x qemu-storage-daemon.
#
# When qcowfs cannot write (fio fails: a read-only milestone, a crash, a timeout), its column
# says so, the reason is printed, the remaining qcowfs runs of that workload are skipped and
# raw and qsd are still measured.
#
# Environment:
#   BENCH_SIZE=1G        image size (numfmt --from=iec syntax, a multiple of 4 MiB)
#   BENCH_REPS=3         runs per figure (the median is shown)
#   BENCH_JOBS="1 4"     job counts to measure
#   BENCH_TARGETS        the writers, in run order (default "raw qsd qcowfs qcowfs-wb")
#   BENCH_RAND_PER_CLUSTER=1  random 4 KiB writes per cluster of the image, per run
#   BENCH_TIMEOUT=600    seconds one fio run may take before it counts as failed
#   BENCH_QUICK=1        64 MiB, one run each: checks that everything runs (CI), no target
#   BENCH_DIR=DIR        keep the base image and the results (every fio JSON, daemon logs) in
#                        DIR, and reuse the base on the next run (default: a temporary
#                        directory under /var/tmp, removed at the end)
#   BENCH_QCOWFS_OPTS    extra options for qcowfs (both qcowfs columns)
#   BENCH_STRICT=1       exit 1 when a target is missed
#   QCOWFS               the daemon to measure (default build/fs/qcowfs)
# Exit status: 1 when a data check fails (always), or when a target is missed and BENCH_STRICT=1.
# Needs root (drop_caches, FUSE mounts), fio, qemu-img, qemu-storage-daemon, python3.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
SIZE=${BENCH_SIZE:-1G}
REPS=${BENCH_REPS:-3}
JOBS_LIST=${BENCH_JOBS:-1 4}
if [ "${BENCH_QUICK:-0}" = 1 ]; then
	SIZE=64M
	REPS=1
fi
PER_CLUSTER=${BENCH_RAND_PER_CLUSTER:-1}
TIMEOUT=${BENCH_TIMEOUT:-600}
QCOWFS=${QCOWFS:-$ROOT/build/fs/qcowfs}
CLUSTER=65536
export PATH="$PATH:/usr/sbin:/sbin"

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

BYTES=$(numfmt --from=iec "$SIZE") || die "bad BENCH_SIZE '$SIZE'"
if [ "$BYTES" -le 0 ] || [ $((BYTES % 4194304)) -ne 0 ]; then
	die "BENCH_SIZE must be a multiple of 4 MiB"
fi
CLUSTERS=$((BYTES / CLUSTER))
for c in fio qemu-img qemu-storage-daemon python3 fusermount3 mountpoint numfmt timeout; do
	command -v "$c" >/dev/null 2>&1 || die "'$c' is missing: run 'bash scripts/setup.sh'"
done
[ -w /proc/sys/vm/drop_caches ] || die "cannot drop the page cache: run as root"
[ -e /dev/fuse ] || die "/dev/fuse is missing"
# run order; qsd's result checks the raw reference before qcowfs's
read -r -a TARGETS <<<"${BENCH_TARGETS:-raw qsd qcowfs qcowfs-wb}"
[ -x "$QCOWFS" ] || log "warning: '$QCOWFS' is not built: its column will say so"

# ---- cleanup: every mount and daemon started here goes away on any exit ----
KEEP_WORK=0
if [ -n "${BENCH_DIR:-}" ]; then
	WORK=$BENCH_DIR
	KEEP_WORK=1
	mkdir -p "$WORK"
else
	WORK=$(mktemp -d /var/tmp/qcowfs-bench-write.XXXXXX)
fi
WORK=$(cd "$WORK" && pwd)
SRC=$WORK/src         # base.qcow2 and the fresh top.qcow2: qcowfs's SOURCE
MNT_QCOWFS=$WORK/mnt/qcowfs
MNT_QSD=$WORK/mnt/qsd # qsd's FUSE export mounts over this regular file
RESULTS=$WORK/results
QCOWFS_PID= # the daemons running now (empty: none)
QSD_PID=
FIO_PID= # timeout(1) running fio; it passes a SIGTERM on to fio

unmount() { # PATH - unmount PATH if anything is mounted there, lazily if need be
	grep -qF " $1 " /proc/mounts 2>/dev/null || return 0
	fusermount3 -u "$1" 2>/dev/null || fusermount3 -uz "$1" 2>/dev/null ||
		umount -l "$1" 2>/dev/null || true
}

stop_pid() { # PID SECONDS - SIGTERM (after waiting SECONDS for PID to exit on its own), SIGKILL
	local pid=$1 i
	for ((i = 0; i < $2 * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null || true
}

cleanup() {
	[ -n "$FIO_PID" ] && kill "$FIO_PID" 2>/dev/null && stop_pid "$FIO_PID" 15
	unmount "$MNT_QCOWFS"
	unmount "$MNT_QSD"
	[ -n "$QCOWFS_PID" ] && stop_pid "$QCOWFS_PID" 0
	[ -n "$QSD_PID" ] && stop_pid "$QSD_PID" 0
	# a daemon killed before it unmounted leaves a dead mount behind
	unmount "$MNT_QCOWFS"
	unmount "$MNT_QSD"
	if [ "$KEEP_WORK" = 0 ]; then
		rm -rf "$WORK"
	else # the base stays for the next run, results/ for reading
		rm -rf "${WORK:?}/mnt" "$WORK/run" "$WORK/check" "$SRC/top.qcow2"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- images ----
# data.raw holds BENCH_SIZE of random bytes (the raw target starts from a copy of it), and
# src/base.qcow2 the same data in every one of its 64 KiB clusters.
make_base() {
	local stamp="$WORK/base.done" want="size=$BYTES cluster=$CLUSTER"
	if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
		log "reusing the base image in $WORK"
		return
	fi
	rm -rf "$SRC" "$WORK/data.raw" "$stamp"
	mkdir -p "$SRC"
	log "writing $SIZE of random data into base.qcow2"
	head -c "$BYTES" /dev/urandom >"$WORK/data.raw"
	qemu-img convert -f raw -O qcow2 -o cluster_size=$CLUSTER "$WORK/data.raw" "$SRC/base.qcow2"
	echo "$want" >"$stamp"
}

new_overlay() {
	rm -f "$SRC/top.qcow2"
	(cd "$SRC" && qemu-img create -q -f qcow2 -o cluster_size=$CLUSTER \
		-b base.qcow2 -F qcow2 top.qcow2)
}

# ---- targets ----
# start_TARGET LOG - prepare a fresh target and set FILE to the file fio writes; on failure
# set REASON and return 1. stop_TARGET LOG - stop it; on failure set REASON and return 1.
start_raw() {
	cp --sparse=always "$WORK/data.raw" "$WORK/run/raw.img" || { REASON="cp failed"; return 1; }
	FILE=$WORK/run/raw.img
}
stop_raw() { :; }

wait_mounted() { # PATH PID
	local i
	for ((i = 0; i < 100; i++)); do
		mountpoint -q "$1" 2>/dev/null && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

start_qcowfs() {
	start_qcowfs_opts "$1"
}
start_qcowfs-wb() {
	start_qcowfs_opts "$1" -o writeback
}
stop_qcowfs-wb() {
	stop_qcowfs "$@"
}

# start_qcowfs_opts LOG [OPTION...] - qcowfs with OPTIONs (and BENCH_QCOWFS_OPTS)
start_qcowfs_opts() {
	local why log=$1
	shift
	[ -x "$QCOWFS" ] || { REASON="$QCOWFS is not built"; return 1; }
	new_overlay || { REASON="qemu-img create failed"; return 1; }
	mkdir -p "$MNT_QCOWFS"
	# shellcheck disable=SC2086 # BENCH_QCOWFS_OPTS is a list of options
	"$QCOWFS" -f "$@" ${BENCH_QCOWFS_OPTS:-} "$SRC" "$MNT_QCOWFS" </dev/null >"$log" 2>&1 &
	QCOWFS_PID=$!
	if ! wait_mounted "$MNT_QCOWFS" "$QCOWFS_PID"; then
		why="qcowfs did not mount: $(tail -n 3 "$log" | tr '\n' ' ')"
		stop_qcowfs "$log" || true
		REASON=$why
		return 1
	fi
	FILE=$MNT_QCOWFS/top.raw
	if [ ! -f "$FILE" ]; then
		stop_qcowfs "$log" || true
		REASON="no top.raw under the mount point"
		return 1
	fi
}

# Unmounting ends the daemon's session; it must then exit by itself (having written out what
# it holds) before top.qcow2 is checked. A daemon that does not exit within a minute is killed.
stop_qcowfs() {
	local rc=0
	[ -n "$QCOWFS_PID" ] || return 0
	fusermount3 -u "$MNT_QCOWFS" 2>/dev/null || true
	stop_pid "$QCOWFS_PID" 60
	wait "$QCOWFS_PID" 2>/dev/null || rc=$?
	QCOWFS_PID=
	unmount "$MNT_QCOWFS"
	if [ "$rc" != 0 ]; then
		REASON="qcowfs exited with status $rc: $(tail -n 3 "$1" | tr '\n' ' ')"
		return 1
	fi
}

# A writable node takes QEMU's write lock on top.qcow2; nothing else has it open meanwhile.
start_qsd() {
	local pidfile=$WORK/run/qsd.pid
	new_overlay || { REASON="qemu-img create failed"; return 1; }
	: >"$MNT_QSD"
	if ! qemu-storage-daemon \
		--blockdev driver=file,node-name=file,filename="$SRC/top.qcow2" \
		--blockdev driver=qcow2,node-name=qcow2,file=file \
		--export type=fuse,id=exp,node-name=qcow2,mountpoint="$MNT_QSD",writable=on \
		--pidfile "$pidfile" --daemonize >"$1" 2>&1; then
		REASON="qemu-storage-daemon failed: $(tail -n 3 "$1" | tr '\n' ' ')"
		return 1
	fi
	QSD_PID=$(cat "$pidfile")
	if ! wait_mounted "$MNT_QSD" "$QSD_PID"; then
		REASON="qemu-storage-daemon did not mount its export"
		stop_qsd "$1" || true
		return 1
	fi
	FILE=$MNT_QSD
}

# QEMU 7.2's daemon neither exits when its export is unmounted nor unmounts it when it gets
# SIGTERM (the mount is left dead): unmount first, then SIGTERM, which closes the image.
stop_qsd() {
	[ -n "$QSD_PID" ] || return 0
	fusermount3 -u "$MNT_QSD" 2>/dev/null || true
	stop_pid "$QSD_PID" 0
	QSD_PID=
	unmount "$MNT_QSD"
}

# ---- checks ----
# check_image TARGET WORKLOAD REP - qemu-img check of top.qcow2 after a run of TARGET, and,
# the first time for WORKLOAD, qemu-img compare of its flat view with the raw result.
declare -A COMPARED
check_image() {
	local t=$1 wl=$2 rep=$3 out ref
	ref=$WORK/check/raw-$wl.img
	if ! out=$(qemu-img check "$SRC/top.qcow2" 2>&1); then
		bad "$t" "$wl" "run $rep: qemu-img check of top.qcow2 failed: $(echo "$out" | head -n 3 | tr '\n' ' ')"
		return
	fi
	if [ -n "${COMPARED[$t.$wl]:-}" ] || [ ! -f "$ref" ]; then
		return 0
	fi
	COMPARED[$t.$wl]=1
	if out=$(qemu-img compare -f qcow2 -F raw "$SRC/top.qcow2" "$ref" 2>&1); then
		log "$t $wl: the written image equals the raw result"
	elif [ "$t" = qsd ]; then
		die "qsd's result differs from raw's ($out): fio did not write the same data twice, the bench cannot check qcowfs"
	else
		bad "$t" "$wl" "run $rep: the written image differs from the raw result: $(echo "$out" | tr '\n' ' ')"
	fi
	# both writers compared: the reference is no longer needed
	if [ -n "${COMPARED[qsd.$wl]:-}" ] && [ -n "${COMPARED[qcowfs.$wl]:-}" ]; then
		rm -f "$ref"
	fi
}

# failed TARGET WORKLOAD REASON - TARGET could not do WORKLOAD: skip its remaining runs.
# bad TARGET WORKLOAD REASON - TARGET wrote wrong data: a failure whatever the figures.
declare -A SKIP
failed() {
	log "$1 $2 failed: $3"
	SKIP[$1.$2]=1
	printf '%s\t%s\tfailed\t%s\n' "$1" "$2" "$3" >>"$RESULTS/failures.tsv"
}
bad() {
	log "error: $1 $2: $3"
	printf '%s\t%s\tbad\t%s\n' "$1" "$2" "$3" >>"$RESULTS/failures.tsv"
}

# ---- runs ----
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# fio_result JSON - the job's figure (MB/s or IOPS), or "error: ..." when fio reports one.
fio_result() {
	python3 - "$1" "$2" <<'EOF'
import json, os, sys
path, wl = sys.argv[1:]
text = open(path).read()
data = json.loads(text[text.index("{"):])   # fio may print notes before the JSON
job = data["jobs"][0]
if job["error"]:
    print("error: %s (errno %d)" % (os.strerror(job["error"]), job["error"]))
else:
    write = job["write"]
    print("%.3f" % (write["bw_bytes"] / 1e6 if wl.startswith("seq") else write["iops"]))
EOF
}

run_one() { # WORKLOAD TARGET REP
	local wl=$1 t=$2 rep=$3 job out logf rc=0 res
	out=$RESULTS/$wl-$t-$rep.json
	logf=$RESULTS/$wl-$t-$rep.log
	local jobs=${wl#seq}
	jobs=${jobs#rand}
	case $wl in
	seq*) job=write-jobs-seq.fio ;;
	rand*) job=write-jobs-rand.fio ;;
	esac
	REASON=
	if ! "start_$t" "$logf"; then
		[ "$t" = raw ] && die "raw: $REASON"
		failed "$t" "$wl" "$REASON"
		return
	fi
	drop_caches
	LOAD=$(cut -d' ' -f1 /proc/loadavg)
	# in the background, so that a signal interrupts the wait and cleanup stops fio first
	BENCH_FILE=$FILE BENCH_JOBS=$jobs BENCH_JOB_BYTES=$((BYTES / jobs)) \
		BENCH_JOB_IO_BYTES=$((CLUSTERS * PER_CLUSTER * 4096 / jobs)) \
		timeout -k 10 "$TIMEOUT" fio --output-format=json --output="$out" "$BENCH/$job" \
		>/dev/null 2>"$out.err" &
	FIO_PID=$!
	wait "$FIO_PID" || rc=$?
	FIO_PID=
	if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		res="error: fio did not finish within $TIMEOUT s"
	elif ! res=$(fio_result "$out" "$wl" 2>/dev/null); then
		res="error: fio failed (status $rc): $(tail -n 3 "$out.err" | tr '\n' ' ')"
	elif [ "$rc" != 0 ] && [ "${res#error}" = "$res" ]; then
		res="error: fio failed (status $rc): $(tail -n 3 "$out.err" | tr '\n' ' ')"
	fi
	if ! "stop_$t" "$logf" && [ "${res#error}" = "$res" ]; then
		res="error: $REASON"
	fi
	if [ "${res#error}" != "$res" ]; then
		[ "$t" = raw ] && die "raw: ${res#error: }"
		failed "$t" "$wl" "${res#error: }"
		return
	fi
	printf '%s\t%s\t%s\t%s\n' "$wl" "$t" "$res" "$LOAD" >>"$RESULTS/all.tsv"
	log "$wl $t: $res (load average $LOAD before the run)"
	case $t in
	raw)
		if [ "$rep" = 1 ]; then mv "$WORK/run/raw.img" "$WORK/check/raw-$wl.img"; else rm -f "$WORK/run/raw.img"; fi
		;;
	*) check_image "$t" "$wl" "$rep" ;;
	esac
}

make_base
rm -rf "${WORK:?}/mnt" "$WORK/run" "$WORK/check" "$RESULTS"
mkdir -p "$WORK/mnt" "$WORK/run" "$WORK/check" "$RESULTS"
: >"$RESULTS/all.tsv"
: >"$RESULTS/failures.tsv"

WORKLOADS=()
for j in $JOBS_LIST; do
	[ $((CLUSTERS % j)) = 0 ] || die "BENCH_SIZE is not a whole number of clusters per job for $j jobs"
	WORKLOADS+=("seq$j" "rand$j")
done
nruns=$((${#WORKLOADS[@]} * ${#TARGETS[@]} * REPS))
n=0
for ((rep = 1; rep <= REPS; rep++)); do
	for wl in "${WORKLOADS[@]}"; do
		for t in "${TARGETS[@]}"; do
			n=$((n + 1))
			if [ -n "${SKIP[$t.$wl]:-}" ]; then
				log "run $n/$nruns: $wl $t: skipped (failed before)"
				continue
			fi
			log "run $n/$nruns: $wl $t"
			run_one "$wl" "$t" "$rep"
		done
	done
done

# ---- report ----
python3 - "$RESULTS/all.tsv" "$RESULTS/failures.tsv" "$SIZE" "$REPS" "${BENCH_STRICT:-0}" \
	"${BENCH_QUICK:-0}" "$(uname -r)" "$(nproc)" "$(df -T "$WORK" | awk 'NR==2 {print $2}')" \
	"$("$QCOWFS" --version 2>/dev/null | head -n 1 || echo unknown)" "${BENCH_QCOWFS_OPTS:-}" \
	"${WORKLOADS[*]}" <<'EOF'
import statistics, sys
from collections import defaultdict
(path, fpath, size, reps, strict, quick, kernel, cpus, fstype, version, opts,
 workloads) = sys.argv[1:]
workloads = workloads.split()
vals = defaultdict(list)
loads = defaultdict(list)
for line in open(path):
    wl, target, v, load = line.rstrip("\n").split("\t")
    vals[(wl, target)].append(float(v))
    loads[(wl, target)].append(float(load))
fails = defaultdict(list)
bad = False
for line in open(fpath):
    target, wl, kind, reason = line.rstrip("\n").split("\t", 3)
    fails[(wl, target)].append((kind, reason))
    bad = bad or kind == "bad"
med = {k: statistics.median(v) for k, v in vals.items()}
def get(wl, target):
    return None if fails[(wl, target)] else med.get((wl, target))
def ratio(a, b):
    return a / b if a is not None and b else None
def fmt(v, nd=1):
    return "-" if v is None else ("%.*f" % (nd, v))
def cell(wl, target):
    kinds = [kind for kind, _ in fails[(wl, target)]]
    if "bad" in kinds:
        return "bad data"
    if kinds or (wl, target) not in vals:
        return "failed" if kinds else "-"
    v = vals[(wl, target)]
    return "%.0f (%.0f-%.0f)" % (med[(wl, target)], min(v), max(v))
def name(wl):
    jobs = wl.lstrip("seqrand")
    return ("seq 1M MB/s" if wl.startswith("seq") else "rand 4k IOPS") + ", %s job%s" % (
        jobs, "" if jobs == "1" else "s")
targets = ["raw", "qcowfs", "qcowfs-wb", "qsd"]
print()
print("qcowfs write benchmark: allocating writes into a fresh overlay of a %s image,"
      " 64 KiB clusters, median (min-max) of %s run(s)" % (size, reps))
print("conditions: kernel %s, %s CPUs, SOURCE on %s; page cache dropped before each run;"
      " each job's final fsync counted; %s%s; qcowfs-wb adds -o writeback"
      % (kernel, cpus, fstype, version, (" with " + opts) if opts else ""))
print()
row = "%-22s" + " %20s" * 4
hdr = row % tuple(["workload"] + targets)
print(hdr)
print("-" * len(hdr))
for wl in workloads:
    print(row % tuple([name(wl)] + [cell(wl, t) for t in targets]))
print()
row2 = "%-22s" + " %10s" * 5
hdr2 = row2 % ("ratios", "qcowfs/raw", "qcowfs/qsd", "wb/raw", "wb/qsd", "qsd/raw")
print(hdr2)
print("-" * len(hdr2))
for wl in workloads:
    r, q, w, s = (get(wl, t) for t in ("raw", "qcowfs", "qcowfs-wb", "qsd"))
    print(row2 % (name(wl), fmt(ratio(q, r), 2), fmt(ratio(q, s), 2), fmt(ratio(w, r), 2),
                  fmt(ratio(w, s), 2), fmt(ratio(s, r), 2)))
print()
print("load average before the runs (min-max):")
for wl in workloads:
    print("  %-22s %s" % (name(wl), "  ".join(
        "%s %.1f-%.1f" % (t, min(loads[(wl, t)]), max(loads[(wl, t)]))
        for t in targets if loads[(wl, t)])))
worst = max(((max(v) / min(v), k) for k, v in vals.items() if len(v) > 1 and min(v) > 0),
            default=None)
if worst:
    print("(noise: the widest spread is %s %s, max/min %.2f over %d runs)"
          % (worst[1][0], worst[1][1], worst[0], len(vals[worst[1]])))
for wl in workloads:
    for target in targets:
        for kind, reason in fails[(wl, target)]:
            print("%s %s %s: %s" % (target, wl, "FAILED" if kind == "failed" else "WRONG DATA",
                                    reason))
print()
print("Targets%s:" % (" (quick mode: not judged)" if quick == "1" else ""))
missed = 0
for target in ("qcowfs", "qcowfs-wb"):
    if not any((wl, target) in vals or fails[(wl, target)] for wl in workloads):
        continue
    for wl in workloads:
        checks = [("raw", 0.9)] if wl.startswith("seq") else [("raw", 0.5), ("qsd", 3.0)]
        for ref, want in checks:
            got = ratio(get(wl, target), get(wl, ref))
            verdict = "PASS" if got is not None and got >= want else "FAIL"
            if quick != "1" and target == "qcowfs":
                missed += verdict != "PASS"
            print("  %-10s %-22s >= %.1fx %-4s %6s  %s" % (target, name(wl), want, ref,
                                                        fmt(got, 2), verdict))
if bad:
    print()
    print("ERROR: a data check failed (see above)")
sys.exit(1 if bad or (strict == "1" and missed) else 0)
EOF

# lib.sh - what the benchmarks share, sourced by each bench/*.sh (not run on its own).
#
# log MESSAGE / die MESSAGE: one line on stderr ("bench: ..."); die exits 1.
# drop_caches: write back, then drop the page cache (as root; a no-op otherwise).
# timed SECONDS_VAR CMD...: run CMD in the current directory, caches dropped first; the time
#   runs until what CMD wrote is on the disk (a sync after it): qcowctl makes its results
#   durable before it returns, qemu-img convert (cache mode unsafe) leaves them in the page
#   cache, so without the sync the figures would compare different work.
# median VALUES...: the median (the upper one of an even count).
# bench_op NAME: REPS runs of a job on both sides into Q_T[NAME] and C_T[NAME] (medians, in
#   seconds), through the caller's fresh SIDE (new copies of the images in $DIR/SIDE),
#   run_side SIDE NAME (one timed run, its time in $DIR/t.SIDE) and verify NAME (the result
#   checks, after the first run).
# images_equal WHAT A B / image_clean IMAGE: the result checks of a job (qemu-img compare and
#   qemu-img check); a failure is logged and sets FAILED=1.

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

drop_caches() {
	sync
	[ "$(id -u)" = 0 ] && echo 3 >/proc/sys/vm/drop_caches
	return 0
}

timed() {
	local var=$1 t0 t1
	shift
	drop_caches
	t0=$(date +%s.%N)
	"$@" >/dev/null
	sync
	t1=$(date +%s.%N)
	printf -v "$var" '%s' "$(echo "$t1 - $t0" | bc -l)"
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

FAILED=0
images_equal() { # WHAT A B
	if ! qemu-img compare -q "$2" "$3"; then
		log "DATA CHECK FAILED: $1: '$2' and '$3' differ"
		FAILED=1
	fi
}
image_clean() { # IMAGE
	local rc=0
	qemu-img check -q "$1" || rc=$?
	if [ "$rc" != 0 ]; then
		log "CHECK FAILED: qemu-img check '$1' exited $rc"
		FAILED=1
	fi
}

declare -A Q_T C_T
# bench_op NAME: REPS runs of both sides, qemu-img first on even runs and qcowctl first on odd
# ones (the disk behind this machine is slower right after a burst of writes: the order must
# not favour either side)
bench_op() {
	local name=$1 r qs=() cs=()
	for ((r = 0; r < REPS; r++)); do
		fresh q
		fresh c
		if ((r % 2 == 0)); then
			run_side q "$name"
			run_side c "$name"
		else
			run_side c "$name"
			run_side q "$name"
		fi
		[ "$r" = 0 ] && verify "$name"
		qs+=("$(cat "$DIR/t.q")")
		cs+=("$(cat "$DIR/t.c")")
	done
	Q_T[$name]=$(median "${qs[@]}")
	C_T[$name]=$(median "${cs[@]}")
	log "$name: qemu-img ${Q_T[$name]} s, qcowctl ${C_T[$name]} s"
}

# loadavg1: the 1-minute load average now (printed next to every figure).
loadavg1() { cut -d' ' -f1 /proc/loadavg; }

# read_ahead_kb_of FILE: the read-ahead window (KiB) of the bdi FILE's file system sits on ("?"
# when the kernel does not say).
read_ahead_kb_of() {
	local dev
	dev=$(stat -c '%Hd:%Ld' "$1" 2>/dev/null) || {
		echo '?'
		return
	}
	cat "/sys/class/bdi/$dev/read_ahead_kb" 2>/dev/null || echo '?'
}

# wait_mounted PATH PID: wait (at most 30 s) until PATH is a mount point; 1 when PID (if not
# empty) exits first or time runs out.
wait_mounted() {
	local i
	for ((i = 0; i < 300; i++)); do
		mountpoint -q "$1" 2>/dev/null && return 0
		[ -n "$2" ] && ! kill -0 "$2" 2>/dev/null && return 1
		sleep 0.1
	done
	return 1
}

# fuse_unmount PATH: unmount PATH if anything is mounted there, lazily if need be.
fuse_unmount() {
	grep -qF " $1 " /proc/mounts 2>/dev/null || return 0
	fusermount3 -u "$1" 2>/dev/null || fusermount3 -uz "$1" 2>/dev/null ||
		umount -l "$1" 2>/dev/null || true
}

# stop_daemon PID: SIGTERM, then (after 10 s) SIGKILL; reaps PID if it is our child.
stop_daemon() {
	local i
	kill "$1" 2>/dev/null || return 0
	for ((i = 0; i < 100; i++)); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

# check_same_bytes A B: A and B have the same size and the same bytes at a few hundred random
# 4 KiB blocks (and the first and last); dies otherwise (a reader that lies is not measured).
check_same_bytes() {
	python3 - "$1" "$2" <<'PY' || die "'$2' does not read as '$1'; not measuring"
import os, random, sys
a, b = (os.open(f, os.O_RDONLY) for f in sys.argv[1:])
size = os.fstat(a).st_size
if os.fstat(b).st_size != size:
    sys.exit("bench: %s has size %d, want %d" % (sys.argv[2], os.fstat(b).st_size, size))
rng = random.Random()
for off in [0, size - 4096] + [rng.randrange(size // 4096) * 4096 for _ in range(300)]:
    if os.pread(a, 4096, off) != os.pread(b, 4096, off):
        sys.exit("bench: %s differs from %s at offset %d" % (sys.argv[2], sys.argv[1], off))
PY
}

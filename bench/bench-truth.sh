#!/usr/bin/env bash
# bench-truth.sh - the rows of issue 15 in one run, as ratios, against every other way to read a
# qcow2 image as a raw file, with the conditions each figure was measured under.
#
#   bash bench/bench-truth.sh            # as root: 1 GiB images, 3 reps (about 15-25 minutes)
#   bash bench/bench-truth.sh --quick    # tiny sizes, one rep: checks that the bench runs (CI)
#
# Readers (columns), each of the same guest data:
#   raw        the data as a raw file on the same file system (qemu-img convert -O raw): the limit
#   pass       libfuse's passthrough_ll example (Debian's libfuse3-dev examples), built here and
#              mounted over the directory of that raw file: the FUSE ceiling
#   qcowfs     the flat view of build/fs/qcowfs
#   qsd        qemu-storage-daemon's FUSE export (--export type=fuse)
#   nbdfuse    qemu-nbd serving the image, nbdfuse mounting it
#   qcowmount  libyal's qcowmount (libqcow-utils; read-only, no backing chains)
#   base       another qcowfs binary (BENCH_BASELINE=PATH, e.g. a build of the previous commit):
#              before/after in the same run, under the same load
# A reader whose package is missing is installed with apt-get when the archive has it (not in
# --quick mode); otherwise its column prints "skipped: PACKAGE not in the archive" (or "not
# installed").
#
# Rows (fio, bench/*.fio, psync, direct=0, page cache dropped before every run):
#   seq read 1M        sequential 1 MiB reads of the whole single image, 1 job       (MB/s)
#   rand read 4k 1j    random 4 KiB reads, one per cluster on average, 1 job         (IOPS)
#   rand read 4k 4j    the same split over 4 jobs                                    (IOPS)
#   chain D rand 4k    random 4 KiB reads of a D-layer chain (D = 1, 32, 1000; layer i holds
#                      the clusters c with c % D == i), the daemon started afresh before each
#                      run, so the first touch of every cluster (its walk down the chain) counts
#   rand write 4k      random 4 KiB writes into a fresh overlay of the single image, one per
#                      cluster on average (most are first touches: copy-on-write), final fsync
#                      counted                                                       (IOPS)
#   seq write 1M       sequential 1 MiB writes over a fresh overlay, final fsync counted (MB/s)
#   memory             the daemon's peak resident memory (VmHWM) after random 4 KiB reads of a
#                      1 TiB-virtual image with data in every L2 table's range       (MiB)
#   scale              bench/bench-scale.sh (mount and ls -l of a directory of many images)
# Writes: raw and pass write a fresh copy of the raw file; qcowfs and qsd a fresh qcow2 overlay
# (qemu-img create -b single.qcow2); the written data is the same on every reader (fixed seed)
# and is checked against raw's result after the first rep (qemu-img compare).
#
# Every figure: median [min-max] of BENCH_REPS reps, the load average (1 min) before each rep,
# the ratio of the median to raw and to pass. The conditions (kernel, fio version, CPUs, sizes,
# read_ahead_kb of every FUSE mount's bdi, cache drops, fsync, direct I/O) come first.
#
# Environment:
#   BENCH_SIZE=1G          the single image and the chains (a multiple of 1 MiB)
#   BENCH_REPS=3           reps per figure
#   BENCH_DEPTHS="1 32 1000"  chain depths
#   BENCH_RUNTIME=60       cap in seconds of one fio run (slow readers are measured over it)
#   BENCH_MEM_READS=20000  random reads before the memory figure
#   BENCH_SCALE_N=10000    images for bench-scale.sh (0: skip the scale row)
#   BENCH_READERS          the readers to run (default: all six, and base with BENCH_BASELINE)
#   BENCH_BASELINE=PATH    a second qcowfs to measure beside QCOWFS (the column "base")
#   BENCH_PASS_RA_KB=4096  read_ahead_kb of the passthrough's mount (0: the kernel's 128 KiB)
#   BENCH_INSTALL=1        apt-get install a missing reader's package (0 in --quick)
#   BENCH_DIR=DIR          keep the images in DIR and reuse them (default: a temporary directory
#                          under /var/tmp, removed at the end)
#   QCOWFS                 the daemon to measure (default build/fs/qcowfs)
# Needs root (cache drops, FUSE mounts), fio, qemu-img, qemu-io, qemu-storage-daemon, python3,
# a C compiler and libfuse3-dev (passthrough_ll).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

QUICK=0
case "${1:-}" in
--quick) QUICK=1 ;;
'') ;;
*) die "usage: bench-truth.sh [--quick]" ;;
esac
if [ "$QUICK" = 1 ]; then
	SIZE=${BENCH_SIZE:-16M}
	REPS=${BENCH_REPS:-1}
	DEPTHS=${BENCH_DEPTHS:-1 8}
	RUNTIME=${BENCH_RUNTIME:-3}
	MEM_READS=${BENCH_MEM_READS:-200}
	MEM_VSIZE=$((16 << 30))
	SCALE_N=${BENCH_SCALE_N:-0}
	INSTALL=${BENCH_INSTALL:-0}
else
	SIZE=${BENCH_SIZE:-1G}
	REPS=${BENCH_REPS:-3}
	DEPTHS=${BENCH_DEPTHS:-1 32 1000}
	RUNTIME=${BENCH_RUNTIME:-60}
	MEM_READS=${BENCH_MEM_READS:-20000}
	MEM_VSIZE=$((1 << 40))
	SCALE_N=${BENCH_SCALE_N:-10000}
	INSTALL=${BENCH_INSTALL:-1}
fi
BASELINE=${BENCH_BASELINE:-}
PASS_RA_KB=${BENCH_PASS_RA_KB:-4096}
READERS=(${BENCH_READERS:-raw pass qcowfs ${BASELINE:+base} qsd nbdfuse qcowmount})
QCOWFS=${QCOWFS:-$ROOT/build/fs/qcowfs}
[ -z "$BASELINE" ] || [ -x "$BASELINE" ] || die "BENCH_BASELINE '$BASELINE' is not executable"
CLUSTER=65536
export PATH="$PATH:/usr/sbin:/sbin"

BYTES=$(numfmt --from=iec "$SIZE") || die "bad BENCH_SIZE '$SIZE'"
[ "$BYTES" -gt 0 ] && [ $((BYTES % 1048576)) -eq 0 ] || die "BENCH_SIZE must be a multiple of 1 MiB"
CLUSTERS=$((BYTES / CLUSTER))
for c in fio qemu-img qemu-io qemu-storage-daemon python3 fusermount3 mountpoint numfmt bc cc \
	pkg-config timeout; do
	command -v "$c" >/dev/null 2>&1 || die "'$c' is missing: run 'bash scripts/setup.sh'"
done
[ -w /proc/sys/vm/drop_caches ] || die "cannot drop the page cache: run as root"
[ -e /dev/fuse ] || die "/dev/fuse is missing"
[ -x "$QCOWFS" ] || die "'$QCOWFS' is not built (ninja -C build)"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" # a 1,000-layer chain: 1,000 files

if [ -n "${BENCH_DIR:-}" ]; then
	WORK=$BENCH_DIR
	mkdir -p "$WORK"
	KEEP_WORK=1
else
	WORK=$(mktemp -d /var/tmp/qcowfs-bench-truth.XXXXXX)
	KEEP_WORK=0
fi
WORK=$(cd "$WORK" && pwd)
MNT=$WORK/mnt
RES=$WORK/results
ACTIVE_MOUNTS=() # mount points to undo on exit
ACTIVE_PIDS=()   # daemons to stop on exit

cleanup() {
	local m p
	for m in "${ACTIVE_MOUNTS[@]}"; do fuse_unmount "$m"; done
	for p in "${ACTIVE_PIDS[@]}"; do stop_daemon "$p"; done
	for m in "${ACTIVE_MOUNTS[@]}"; do fuse_unmount "$m"; done
	if [ "$KEEP_WORK" = 0 ]; then
		rm -rf "$WORK"
	else
		rm -rf "${WORK:?}/mnt" "$WORK/w"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
rm -rf "$MNT" "$RES"
mkdir -p "$MNT" "$RES"
: >"$RES/all.tsv"

# ---- readers that need a package: install or say why not ----
declare -A SKIP # reader -> why it is not measured
need_pkg() {    # READER COMMAND PACKAGE
	command -v "$2" >/dev/null 2>&1 && return 0
	if ! apt-cache policy "$3" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
		SKIP[$1]="skipped: $3 not in the archive"
	elif [ "$INSTALL" = 1 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$3" \
		>"$RES/apt-$3.log" 2>&1 && command -v "$2" >/dev/null 2>&1; then
		return 0
	else
		SKIP[$1]="skipped: $3 not installed"
	fi
	printf '%s\n' "${SKIP[$1]}"
}
for r in "${READERS[@]}"; do
	case $r in
	nbdfuse)
		need_pkg nbdfuse nbdfuse nbdfuse
		[ -n "${SKIP[nbdfuse]:-}" ] || need_pkg nbdfuse qemu-nbd qemu-utils
		;;
	qcowmount) need_pkg qcowmount qcowmount libqcow-utils ;;
	pass)
		ex=/usr/share/doc/libfuse3-dev/examples
		if [ ! -f "$ex/passthrough_ll.c" ]; then
			SKIP[pass]="skipped: libfuse3-dev examples not installed"
			echo "${SKIP[pass]}"
		else
			mkdir -p "$WORK/bin"
			cp "$ex/passthrough_ll.c" "$ex/passthrough_helpers.h" "$WORK/bin/"
			# shellcheck disable=SC2046 # pkg-config prints a list of flags
			cc -O2 -o "$WORK/bin/passthrough_ll" "$WORK/bin/passthrough_ll.c" \
				$(pkg-config --cflags --libs fuse3) 2>"$RES/passthrough_ll.log" ||
				die "passthrough_ll did not build: $(tail -n 3 "$RES/passthrough_ll.log")"
		fi
		;;
	esac
done
measured() { [ -z "${SKIP[$1]:-}" ] && [[ " ${READERS[*]} " == *" $1 "* ]]; }

# ---- images ----
# chain_script SEL LAYERS: qemu-io commands writing the clusters c with c % LAYERS == SEL (or all
# of them: SEL "all") in random order; cluster c holds byte (c % 251) + 1, so every chain's
# flat view equals the single image.
io_script() {
	python3 - "$CLUSTERS" "$2" "$CLUSTER" "$1" <<'EOF'
import random, sys
clusters, layers, csize, sel = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cl = list(range(clusters)) if sel == "all" else list(range(int(sel), clusters, layers))
random.Random(42).shuffle(cl)
sys.stdout.write("".join("write -q -P %d %d %d\n" % (c % 251 + 1, c * csize, csize) for c in cl))
EOF
}

make_chain() { # DEPTH: $WORK/chain-DEPTH/lNNNN.qcow2, the top last
	local d=$1 dir=$WORK/chain-$1 i img prev=
	[ -f "$dir/done" ] && [ "$(cat "$dir/done")" = "$BYTES" ] && return
	rm -rf "$dir"
	mkdir -p "$dir"
	log "writing a $d-layer chain of $SIZE"
	# Each layer is written on its own and given its backing file afterwards (rebase -u only
	# rewrites the header): written through the chain, layer i would open the i layers below
	# it, and a 1,000-layer chain would take half a million opens. Whole clusters are written,
	# so no cluster needs data from below (the result is the same).
	for ((i = 0; i < d; i++)); do
		printf -v img 'l%04d.qcow2' "$i"
		qemu-img create -q -f qcow2 -o cluster_size=$CLUSTER "$dir/$img" "$BYTES"
		io_script "$i" "$d" | qemu-io -f qcow2 "$dir/$img" >/dev/null
		[ -z "$prev" ] || qemu-img rebase -q -u -f qcow2 -b "$prev" -F qcow2 "$dir/$img"
		prev=$img
	done
	# QEMU reads a deep chain slowly (minutes at 1,000 layers): the build is checked on chains
	# up to 100 layers (the same steps make the deeper ones), every reader of every chain by
	# check_same_bytes before it is measured
	if [ "$d" -le 100 ]; then
		qemu-img compare -q -f qcow2 -F raw "$dir/$img" "$WORK/data/raw.img" ||
			die "the $d-layer chain does not match the raw copy"
	fi
	echo "$BYTES" >"$dir/done"
}
chain_top() { printf '%s/chain-%s/l%04d.qcow2' "$WORK" "$1" $(($1 - 1)); }

make_images() {
	if [ ! -f "$WORK/single.done" ] || [ "$(cat "$WORK/single.done")" != "$BYTES" ]; then
		rm -rf "$WORK/single" "$WORK/data" "$WORK"/chain-*
		mkdir -p "$WORK/single" "$WORK/data"
		log "writing $SIZE into single.qcow2"
		qemu-img create -q -f qcow2 -o cluster_size=$CLUSTER "$WORK/single/single.qcow2" "$BYTES"
		io_script all 1 | qemu-io -f qcow2 "$WORK/single/single.qcow2" >/dev/null
		qemu-img convert -f qcow2 -O raw "$WORK/single/single.qcow2" "$WORK/data/raw.img"
		echo "$BYTES" >"$WORK/single.done"
	fi
	for d in $DEPTHS; do make_chain "$d"; done
	# the memory row: one 64 KiB cluster in each L2 table's range (512 MiB) of a huge disk
	if [ ! -f "$WORK/big/done" ] || [ "$(cat "$WORK/big/done")" != "$MEM_VSIZE" ]; then
		rm -rf "$WORK/big"
		mkdir -p "$WORK/big"
		qemu-img create -q -f qcow2 -o cluster_size=$CLUSTER "$WORK/big/big.qcow2" "$MEM_VSIZE"
		python3 -c "import sys; s=int(sys.argv[1]); print(''.join('write -q -P 7 %d 65536\n' %
			o for o in range(0, s, 512 << 20)), end='')" "$MEM_VSIZE" |
			qemu-io -f qcow2 "$WORK/big/big.qcow2" >/dev/null
		echo "$MEM_VSIZE" >"$WORK/big/done"
	fi
}

# ---- mounting a reader: FILE (the file to read), PID (the daemon), MP (its mount point) ----
FILE= PID= MP= NBD_PID=
start_reader() { # READER IMAGE(qcow2 path) [rw]
	local r=$1 img=$2 rw=${3:-} name log
	name=$(basename "${img%.qcow2}")
	MP=$MNT/$r
	log=$RES/$r.log
	PID=
	case $r in
	raw)
		FILE=$WORK/data/raw.img
		[ "$rw" = rw ] && FILE=$WORK/w/raw.img
		MP=
		return
		;;
	pass)
		mkdir -p "$MP"
		local dir=$WORK/data
		[ "$rw" = rw ] && dir=$WORK/w
		"$WORK/bin/passthrough_ll" -f -o source="$dir" "$MP" </dev/null >"$log" 2>&1 &
		PID=$!
		FILE=$MP/raw.img
		;;
	qcowfs | base)
		mkdir -p "$MP"
		local bin=$QCOWFS
		[ "$r" = base ] && bin=$BASELINE
		"$bin" -f "$(dirname "$img")" "$MP" </dev/null >"$log" 2>&1 &
		PID=$!
		FILE=$MP/$name.raw
		;;
	qsd)
		local ro=on wr=off
		[ "$rw" = rw ] && ro=off wr=on
		: >"$MP"
		qemu-storage-daemon \
			--blockdev driver=file,node-name=file,filename="$img",read-only=$ro \
			--blockdev driver=qcow2,node-name=qcow2,file=file,read-only=$ro \
			--export type=fuse,id=exp,node-name=qcow2,mountpoint="$MP",writable=$wr \
			</dev/null >"$log" 2>&1 &
		PID=$!
		FILE=$MP
		;;
	nbdfuse)
		local sock=$WORK/nbd.sock ro=-r
		[ "$rw" = rw ] && ro=
		rm -f "$sock"
		mkdir -p "$MP"
		# shellcheck disable=SC2086 # $ro is one option or none
		qemu-nbd $ro -f qcow2 -k "$sock" "$img" </dev/null >"$log.nbd" 2>&1 &
		NBD_PID=$!
		ACTIVE_PIDS+=("$NBD_PID")
		for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done
		nbdfuse "$MP" --unix "$sock" </dev/null >"$log" 2>&1 &
		PID=$!
		FILE=$MP/nbd
		;;
	qcowmount)
		mkdir -p "$MP"
		qcowmount -v "$img" "$MP" </dev/null >"$log" 2>&1 &
		PID=$!
		FILE=$MP/qcow1
		;;
	esac
	ACTIVE_PIDS+=("$PID")
	ACTIVE_MOUNTS+=("$MP")
	wait_mounted "$MP" "$PID" || die "$r did not mount $img: $(tail -n 3 "$log")"
	[ -e "$FILE" ] || die "$r: no $FILE"
	# the ceiling with the kernel's 128 KiB read-ahead would be a floor: raised as qcowfs does
	if [ "$r" = pass ] && [ "$PASS_RA_KB" != 0 ]; then
		echo "$PASS_RA_KB" >"/sys/class/bdi/$(stat -c '%Hd:%Ld' "$FILE")/read_ahead_kb" ||
			die "cannot set the read-ahead of $MP"
	fi
}

stop_reader() {
	[ -z "$MP" ] && return
	fuse_unmount "$MP"
	[ -n "$PID" ] && stop_daemon "$PID"
	[ -n "$NBD_PID" ] && stop_daemon "$NBD_PID" # the qemu-nbd behind nbdfuse
	MP= PID= NBD_PID=
}

# ---- one measurement: fio on $FILE, one line into results/all.tsv ----
# run_fio ROW READER REP JOB(fio file) JOBS IO_BYTES(per job)
run_fio() {
	local row=$1 r=$2 rep=$3 job=$4 jobs=$5 io=$6 out load ra=- dir=read
	out="$RES/$row-$r-$rep.json"
	[[ $job == *write* ]] && dir=write
	[ -n "$MP" ] && ra=$(read_ahead_kb_of "$FILE")
	drop_caches
	load=$(loadavg1)
	BENCH_FILE=$FILE BENCH_BYTES=$BYTES BENCH_RUNTIME=$RUNTIME BENCH_JOBS=$jobs \
		BENCH_IO_BYTES=$io timeout $((RUNTIME * 3 + 120)) \
		fio --output-format=json --output="$out" "$BENCH/$job" >/dev/null 2>"$out.err" ||
		die "fio failed on $r ($row): $(tail -n 5 "$out.err")"
	python3 - "$out" "$row" "$r" "$rep" "$dir" "$load" "$ra" <<'EOF' >>"$RES/all.tsv"
import json, sys
path, row, r, rep, d, load, ra = sys.argv[1:]
text = open(path).read()
j = json.loads(text[text.index("{"):])["jobs"][0][d]
v = j["bw_bytes"] / 1e6 if row.startswith("seq") else j["iops"]
print("%s\t%s\t%s\t%.3f\t%s\t%s" % (row, r, rep, v, load, ra))
EOF
	log "$row $r rep $rep: $(tail -n 1 "$RES/all.tsv" | cut -f4) (load $load, read_ahead_kb $ra)"
}

# ---- the runs ----
make_images
cat <<EOF

qcowfs truth benchmark ($([ "$QUICK" = 1 ] && echo "QUICK MODE: tiny sizes, figures mean nothing" || echo "full run"))
  host:        $(uname -sr), $(nproc) CPUs, $(awk '/MemTotal/ {printf "%d MiB", $2/1024}' /proc/meminfo)
  fio:         $(fio --version), ioengine=psync, direct=0 (through the page cache)
  file system: $(df -T "$WORK" | awk 'NR==2 {print $2}') under $WORK
  images:      $SIZE, 64 KiB clusters, every cluster allocated; chains of $DEPTHS layers
  cache:       page cache dropped (sync; echo 3 >drop_caches) before every run
  writes:      fresh overlay (or fresh raw copy) per run, final fsync counted (end_fsync=1)
  reps:        $REPS per figure (median [min-max]); fio runs capped at $RUNTIME s
  readers:     ${READERS[*]}
EOF
for r in "${!SKIP[@]}"; do echo "  $r: ${SKIP[$r]}"; done

read_rows() {
	local rep r
	for ((rep = 1; rep <= REPS; rep++)); do
		for r in "${READERS[@]}"; do
			measured "$r" || continue
			start_reader "$r" "$WORK/single/single.qcow2"
			[ "$rep" = 1 ] && check_same_bytes "$WORK/data/raw.img" "$FILE"
			run_fio seq-read "$r" "$rep" seq-read.fio 1 "$BYTES"
			run_fio rand-read-1j "$r" "$rep" rand-read.fio 1 $((CLUSTERS * 4096))
			run_fio rand-read-4j "$r" "$rep" rand-read.fio 4 $((CLUSTERS * 4096 / 4))
			stop_reader
		done
	done
}

chain_rows() {
	local rep r d
	for ((rep = 1; rep <= REPS; rep++)); do
		for d in $DEPTHS; do
			for r in qcowfs base qsd nbdfuse; do
				measured "$r" || continue
				drop_caches
				start_reader "$r" "$(chain_top "$d")" # afresh: first touch included
				# (after the run: the check's reads would be first touches)
				run_fio "chain-$d" "$r" "$rep" rand-read.fio 1 $((CLUSTERS * 4096))
				[ "$rep" = 1 ] && check_same_bytes "$WORK/data/raw.img" "$FILE"
				stop_reader
			done
		done
	done
}

fresh_write_target() { # READER: a fresh copy or overlay of the single image in $WORK/w
	rm -rf "$WORK/w"
	mkdir -p "$WORK/w"
	case $1 in
	raw | pass) cp --sparse=always "$WORK/data/raw.img" "$WORK/w/raw.img" ;;
	*)
		ln "$WORK/single/single.qcow2" "$WORK/w/base.qcow2" 2>/dev/null ||
			cp "$WORK/single/single.qcow2" "$WORK/w/base.qcow2"
		qemu-img create -q -f qcow2 -o cluster_size=$CLUSTER -b base.qcow2 -F qcow2 \
			"$WORK/w/top.qcow2" "$BYTES"
		;;
	esac
}

write_rows() {
	local rep r row job io
	for ((rep = 1; rep <= REPS; rep++)); do
		for row in rand-write seq-write; do
			for r in "${READERS[@]}"; do
				measured "$r" || continue
				[ "$r" = qcowmount ] && continue # read-only
				fresh_write_target "$r"
				start_reader "$r" "$WORK/w/top.qcow2" rw
				job=$row.fio io=$((CLUSTERS * 4096))
				[ "$row" = seq-write ] && io=$BYTES
				run_fio "$row" "$r" "$rep" "$job" 1 "$io"
				stop_reader
				if [ "$rep" = 1 ]; then # the same bytes as raw's result
					if [ "$r" = raw ]; then
						mv "$WORK/w/raw.img" "$WORK/$row-expected.img"
					elif [ "$r" = pass ]; then
						cmp -s "$WORK/w/raw.img" "$WORK/$row-expected.img" ||
							die "$row: passthrough wrote other bytes than raw"
					else
						qemu-img compare -q -f qcow2 -F raw "$WORK/w/top.qcow2" \
							"$WORK/$row-expected.img" ||
							die "$row: $r wrote other bytes than raw"
					fi
				fi
			done
		done
	done
	rm -f "$WORK"/*-expected.img
}

memory_rows() {
	local rep r hwm load
	for ((rep = 1; rep <= REPS; rep++)); do
		for r in qcowfs base qsd nbdfuse qcowmount; do
			measured "$r" || continue
			start_reader "$r" "$WORK/big/big.qcow2"
			load=$(loadavg1)
			BENCH_FILE=$FILE BENCH_BYTES=$MEM_VSIZE BENCH_RUNTIME=$((RUNTIME * 5)) BENCH_JOBS=1 \
				BENCH_IO_BYTES=$((MEM_READS * 4096)) \
				fio --output-format=json --output="$RES/mem-$r-$rep.json" \
				"$BENCH/rand-read.fio" >/dev/null 2>"$RES/mem-$r-$rep.err" ||
				die "fio failed on $r (memory): $(tail -n 5 "$RES/mem-$r-$rep.err")"
			hwm=$(awk '/VmHWM/ {print $2 / 1024}' "/proc/$PID/status")
			printf 'memory\t%s\t%s\t%s\t%s\t-\n' "$r" "$rep" "$hwm" "$load" >>"$RES/all.tsv"
			log "memory $r rep $rep: $hwm MiB (load $load)"
			stop_reader
		done
	done
}

read_rows
chain_rows
write_rows
memory_rows

python3 - "$RES/all.tsv" "$DEPTHS" "$MEM_READS" "$MEM_VSIZE" "${READERS[@]}" <<'EOF'
import statistics, sys
from collections import defaultdict
path, depths, mem_reads, mem_vsize, readers = sys.argv[1], sys.argv[2].split(), sys.argv[3], int(sys.argv[4]), sys.argv[5:]
vals, loads, ras = defaultdict(list), defaultdict(list), defaultdict(set)
for line in open(path):
    row, r, rep, v, load, ra = line.rstrip("\n").split("\t")
    vals[(row, r)].append(float(v))
    loads[(row, r)].append(float(load))
    if ra != "-":
        ras[r].add(ra)
med = {k: statistics.median(v) for k, v in vals.items()}
def fig(row, r):
    v = vals.get((row, r))
    if not v:
        return "-"
    return "%.0f [%.0f-%.0f]" % (med[(row, r)], min(v), max(v)) if med[(row, r)] >= 100 else \
        "%.1f [%.1f-%.1f]" % (med[(row, r)], min(v), max(v))
def ratio(a, b):
    return "-" if a is None or not b else "%.2f" % (a / b)
rows = [("seq-read", "seq read 1M (MB/s)"), ("rand-read-1j", "rand read 4k 1 job (IOPS)"),
        ("rand-read-4j", "rand read 4k 4 jobs (IOPS)")]
rows += [("chain-%s" % d, "chain %s rand 4k (IOPS)" % d) for d in depths]
rows += [("rand-write", "rand write 4k +fsync (IOPS)"), ("seq-write", "seq write 1M +fsync (MB/s)")]
print()
print("Figures: median [min-max]; load: 1-min load average before the reps")
w = 22
print("%-30s" % "row" + "".join("%*s" % (w, r) for r in readers) + "%14s" % "load")
for row, name in rows:
    ls = [l for r in readers for l in loads.get((row, r), [])]
    print("%-30s" % name + "".join("%*s" % (w, fig(row, r)) for r in readers) +
          "%14s" % ("%.1f-%.1f" % (min(ls), max(ls)) if ls else "-"))
print()
print("Ratios of the medians (higher is better)")
print("%-30s" % "row" + "".join("%12s" % s for s in ("qcowfs/raw", "qcowfs/pass", "qcowfs/qsd",
                                                      "pass/raw", "qsd/raw", "qcowfs/base")))
for row, name in rows:
    g = lambda r: med.get((row, r))
    print("%-30s" % name + "".join("%12s" % x for x in (
        ratio(g("qcowfs"), g("raw")), ratio(g("qcowfs"), g("pass")), ratio(g("qcowfs"), g("qsd")),
        ratio(g("pass"), g("raw")), ratio(g("qsd"), g("raw")), ratio(g("qcowfs"), g("base")))))
print()
print("Chain depth, first touch included (IOPS at depth D / IOPS at depth %s)" % depths[0])
for d in depths[1:]:
    print("  depth %-6s" % d + "".join("  %s %s" % (r, ratio(med.get(("chain-%s" % d, r)),
                                                             med.get(("chain-%s" % depths[0], r))))
                                       for r in ("qcowfs", "base", "qsd", "nbdfuse") if r in readers))
print()
print("Daemon peak memory (VmHWM, MiB) after %s random 4 KiB reads of a %d GiB-virtual image"
      % (mem_reads, mem_vsize >> 30))
print("  " + "   ".join("%s %s" % (r, fig("memory", r)) for r in readers if ("memory", r) in vals))
print()
print("read_ahead_kb of each FUSE mount's bdi: " +
      ", ".join("%s %s" % (r, "/".join(sorted(ras[r]))) for r in readers if ras.get(r)))
print()
print("Targets (issue 15)")
def target(name, got, want):
    print("  %-52s %6s  want >= %.2f  %s" % (name, "-" if got is None else "%.2f" % got, want,
          "n/a" if got is None else ("PASS" if got >= want else "MISS")))
def rt(row, a, b):
    x, y = med.get((row, a)), med.get((row, b))
    return x / y if x is not None and y else None
target("seq read qcowfs/raw", rt("seq-read", "qcowfs", "raw"), 0.9)
target("rand read 4k 1 job qcowfs/pass", rt("rand-read-1j", "qcowfs", "pass"), 0.9)
target("rand read 4k 4 jobs qcowfs/pass", rt("rand-read-4j", "qcowfs", "pass"), 0.9)
for d in depths[1:]:
    x, y = med.get(("chain-%s" % d, "qcowfs")), med.get(("chain-%s" % depths[0], "qcowfs"))
    target("chain %s / chain %s (qcowfs, first touch)" % (d, depths[0]), x / y if x and y else None, 0.9)
target("rand write 4k +fsync qcowfs/raw", rt("rand-write", "qcowfs", "raw"), 0.5)
target("rand write 4k +fsync qcowfs/qsd", rt("rand-write", "qcowfs", "qsd"), 3.0)
target("seq write 1M +fsync qcowfs/raw", rt("seq-write", "qcowfs", "raw"), 0.9)
m = med.get(("memory", "qcowfs"))
target("memory: 64 MiB / qcowfs peak", 64 / m if m else None, 1.0)
EOF

if [ "$SCALE_N" != 0 ]; then
	echo
	echo "Scale (bench/bench-scale.sh $SCALE_N; load $(loadavg1)):"
	mkdir -p "$WORK/scale" # its images, reused by the next run (not this bench's own files)
	QCOWFS=$QCOWFS BENCH_REPS=$REPS BENCH_DIR=$WORK/scale bash "$BENCH/bench-scale.sh" "$SCALE_N"
fi

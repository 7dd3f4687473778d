#!/usr/bin/env bash
# bench-snapshots.sh - listing the views of an image with many internal snapshots costs O(n)
# in snapshots (QEMU allows 65,536).
#
#   bash bench/bench-snapshots.sh                      # 4,000 and 40,000 snapshots
#   BENCH_COUNTS="1000 10000 65000" bash bench/bench-snapshots.sh
#
# For each count N an image of 16 MiB is made with N internal snapshots (qemu-img snapshot -c
# takes one, then the table is written directly: N entries sharing its L1 table, whose refcount
# is N, so that qemu-img check passes), mounted with build/fs/qcowfs, and `ls -l` of the mount
# point (a readdir, then a lookup and getattr of every view) is timed, once cold (the first
# listing after mounting) and once warm, with the CPU time the daemon spent on the cold one.
# The last column is the daemon's CPU time per snapshot relative to the smallest count's: near
# 1 means linear; the listing was quadratic before (40,000 snapshots took 64 s).
# The script fails (exit 1) if the per-snapshot cost of the largest count is more than 3 times
# the smallest's, or if `ls -l` does not show N + 1 views.
#
# Environment:
#   BENCH_COUNTS="4000 40000"   snapshot counts (each at most 65536)
#   BENCH_DIR=DIR               work directory (default: a temporary directory, removed)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
QCOWFS=${QCOWFS:-$ROOT/build/fs/qcowfs}
COUNTS=${BENCH_COUNTS:-4000 40000}
[ -x "$QCOWFS" ] || { echo "build first: $QCOWFS missing" >&2; exit 1; }
for c in qemu-img python3 fusermount3; do
	command -v "$c" >/dev/null || { echo "missing $c" >&2; exit 1; }
done

DIR=${BENCH_DIR:-$(mktemp -d)}
MNT=$DIR/mnt
PID=""
cleanup()
{
	if mountpoint -q "$MNT" 2>/dev/null; then fusermount3 -u "$MNT" || true; fi
	if [ -n "$PID" ]; then wait "$PID" 2>/dev/null || true; fi
	[ -n "${BENCH_DIR:-}" ] || rm -rf "$DIR"
}
trap cleanup EXIT
mkdir -p "$MNT"

# many IMAGE N: give IMAGE (with one snapshot) N snapshots sharing that one's L1 table.
many()
{
	python3 - "$1" "$2" <<'EOF'
import struct, sys
path, n = sys.argv[1], int(sys.argv[2])
f = open(path, 'r+b')
h = f.read(104)
cbits, = struct.unpack('>I', h[20:24])
cs = 1 << cbits
rt_off, = struct.unpack('>Q', h[48:56])
nb, soff = struct.unpack('>IQ', h[60:72])
rorder, = struct.unpack('>I', h[96:100])
assert nb == 1 and rorder == 4, 'one snapshot and 16-bit refcounts expected'
f.seek(soff)
e = f.read(40)
l1, l1n = struct.unpack('>QI', e[:12])
extra, = struct.unpack('>I', e[36:40])
f.seek(soff + 40)
ext = f.read(extra)
table = bytearray()
for i in range(n):
    sid, name = str(i + 1).encode(), ('snap-%05d' % i).encode()
    ent = e[:12] + struct.pack('>HH', len(sid), len(name)) + e[16:40] + ext + sid + name
    table += ent + b'\0' * (-len(ent) % 8)
f.seek(0, 2)
end = f.tell()
new = (end + cs - 1) // cs * cs
f.seek(new)
f.write(bytes(table) + b'\0' * (-len(table) % cs))

def setref(cluster, v):
    per = cs // 2
    f.seek(rt_off + (cluster // per) * 8)
    blk, = struct.unpack('>Q', f.read(8))
    assert blk, 'refcount block missing'
    f.seek(blk + (cluster % per) * 2)
    f.write(struct.pack('>H', v))

for c in range((new // cs), (new + len(table) + cs - 1) // cs):
    setref(c, 1)
old = soff // cs
setref(old, 0)
setref(l1 // cs, n)
f.seek(60)
f.write(struct.pack('>IQ', n, new))
f.close()
EOF
}

now() { date +%s.%N; }
# CPU seconds (user + system) the daemon has used: less noisy than the wall clock on a
# shared machine, and the daemon's own share of the work.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"; }

printf '%-9s %9s %9s %14s %14s\n' snapshots 'cold (s)' 'warm (s)' 'daemon cpu (s)' 'per snap (x)'
base_per=""
status=0
for n in $COUNTS; do
	img=$DIR/vm.qcow2
	rm -f "$img"
	qemu-img create -q -f qcow2 "$img" 16M
	qemu-img snapshot -c first "$img"
	many "$img" "$n"
	qemu-img check -q "$img" || { echo "the built image does not check clean" >&2; exit 1; }
	"$QCOWFS" -f "$img" "$MNT" 2>"$DIR/log" &
	PID=$!
	for ((i = 0; i < 100; i++)); do mountpoint -q "$MNT" && break; sleep 0.1; done
	c0=$(cpu "$PID")
	t0=$(now)
	views=$(ls -l "$MNT" | grep -c '\.raw$')
	t1=$(now)
	c1=$(cpu "$PID")
	ls -l "$MNT" >/dev/null
	t2=$(now)
	fusermount3 -u "$MNT"
	wait "$PID" || true
	PID=""
	if [ "$views" != $((n + 1)) ]; then
		echo "ls -l showed $views views, not $((n + 1))" >&2
		status=1
	fi
	cold=$(echo "$t1 - $t0" | bc -l)
	warm=$(echo "$t2 - $t1" | bc -l)
	dcpu=$(echo "$c1 - $c0" | bc -l)
	per=$(echo "($dcpu + 0.01) / $n" | bc -l)
	[ -n "$base_per" ] || base_per=$per
	rel=$(echo "$per / $base_per" | bc -l)
	printf '%-9s %9.2f %9.2f %14.2f %14.2f\n' "$n" "$cold" "$warm" "$dcpu" "$rel"
	if [ "$(echo "$rel > 3" | bc -l)" = 1 ]; then
		echo "per-snapshot cost grew ${rel}x from the smallest count: not linear" >&2
		status=1
	fi
done
exit $status

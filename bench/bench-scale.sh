#!/usr/bin/env bash
# bench-scale.sh - a directory of many images: how long qcowfs takes to mount it and list it.
#
#   bash bench/bench-scale.sh            # 10,000 images, 3 reps (about a minute on 2 cores)
#   bash bench/bench-scale.sh 2000       # N images
#   bash bench/bench-scale.sh --quick    # 100 images, one rep: checks that the bench runs
#
# Makes N small qcow2 images (one made by qemu-img create, copied with cp --reflink=auto
# --sparse=always) in one directory, then, for each rep, mounts it afresh and times:
#   mount      from starting the daemon until the mount point lists (one readdir answers),
#              page cache dropped first (every image header read from the disk)
#   mount warm the same again with the headers in the page cache (the daemon's own cost)
#   ls -l      a listing with every view's attributes (readdir, then a lookup per view)
#   ls -l 2nd  the same again (the daemon's cache and the kernel's)
# then, on a mount of its own (with strace installed), the daemon's system calls per image
# during a second ls -l (strace -c -f): a lookup of an unchanged image costs about one stat.
# and checks that every image is listed once, as STEM.raw. Each figure is the median of the reps,
# printed beside its target (SPEC: 10,000 images mount in under 1 s and list in under 2 s) and
# the ratio target/time (>= 1 meets it). No timing is asserted (BENCH_STRICT=1: exit 1 when a
# target is missed at 10,000 images or more).
#
# Environment:
#   BENCH_REPS=3         reps (median shown)
#   BENCH_DIR=DIR        keep the images in DIR and reuse them on the next run
#   BENCH_STRICT=1       exit 1 when a target is missed (N >= 10,000 only)
#   QCOWFS               the daemon to measure (default build/fs/qcowfs)
# Needs /dev/fuse, fusermount3, qemu-img, mountpoint.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

N=10000
REPS=${BENCH_REPS:-3}
case "${1:-}" in
--quick)
	N=100
	REPS=1
	;;
'') ;;
*[!0-9]* | 0) die "usage: bench-scale.sh [N | --quick]" ;;
*) N=$1 ;;
esac
QCOWFS=${QCOWFS:-$ROOT/build/fs/qcowfs}
MOUNT_TARGET=1
LIST_TARGET=2
export PATH="$PATH:/usr/sbin:/sbin"

for c in qemu-img fusermount3 mountpoint bc; do
	command -v "$c" >/dev/null 2>&1 || die "'$c' is missing: run 'bash scripts/setup.sh'"
done
[ -x "$QCOWFS" ] || die "'$QCOWFS' is not built (ninja -C build)"
[ -e /dev/fuse ] || die "/dev/fuse is missing"

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/qcowfs-bench-scale.XXXXXX")
IMG=${BENCH_DIR:-$WORK/images}
MNT=$WORK/mnt
PID=
cleanup() {
	if [ -n "$PID" ]; then
		fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -u -z -q "$MNT" 2>/dev/null || true
		kill "$PID" 2>/dev/null || true
		wait "$PID" 2>/dev/null || true
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$IMG" "$MNT"

now() { date +%s.%N; }

# the images: img-00001.qcow2 ... (reused from BENCH_DIR when it holds exactly these)
make_images() {
	local i have name
	have=$(find "$IMG" -maxdepth 1 -name 'img-*.qcow2' | wc -l)
	if [ "$have" = "$N" ]; then
		log "reusing $N images in $IMG"
		return
	fi
	find "$IMG" -maxdepth 1 -name 'img-*.qcow2' -delete
	qemu-img create -q -f qcow2 "$WORK/base.qcow2" 64M
	log "making $N images"
	for ((i = 1; i <= N; i++)); do
		printf -v name 'img-%05d.qcow2' "$i"
		cp --reflink=auto --sparse=always "$WORK/base.qcow2" "$IMG/$name"
	done
}

# start the daemon and wait (at most 60 s) until the mount point lists; the time into $1
mount_timed() {
	local var=$1 t0 t1 i
	t0=$(now)
	"$QCOWFS" -f "$IMG" "$MNT" </dev/null >"$WORK/qcowfs.log" 2>&1 &
	PID=$!
	for ((i = 0; i < 60000; i++)); do
		if mountpoint -q "$MNT" && ls -f "$MNT" >/dev/null 2>&1; then
			break
		fi
		kill -0 "$PID" 2>/dev/null || die "qcowfs exited: $(head -n 5 "$WORK/qcowfs.log")"
		sleep 0.001
	done
	t1=$(now)
	mountpoint -q "$MNT" || die "qcowfs did not mount $IMG in 60 s"
	printf -v "$var" '%s' "$(echo "$t1 - $t0" | bc -l)"
}

unmount() {
	fusermount3 -u "$MNT"
	wait "$PID" || die "qcowfs exited with status $? (log: $(head -n 5 "$WORK/qcowfs.log"))"
	PID=
}

# ls -l of the mount, timed into $1; the listing into $WORK/ls
ls_timed() {
	local var=$1 t0 t1
	t0=$(now)
	ls -l "$MNT" >"$WORK/ls"
	t1=$(now)
	printf -v "$var" '%s' "$(echo "$t1 - $t0" | bc -l)"
}

# every image listed once as a flat view of the image's virtual size, nothing else
check_listing() {
	local views sizes
	views=$(awk 'NR > 1 { print $NF }' "$WORK/ls" | grep -c '^img-[0-9]*\.raw$' || true)
	sizes=$(awk 'NR > 1 && $5 == 67108864' "$WORK/ls" | wc -l)
	if [ "$views" != "$N" ] || [ "$sizes" != "$N" ] || [ "$(($(wc -l <"$WORK/ls") - 1))" != "$N" ]; then
		log "LISTING CHECK FAILED: $views of $N views listed as img-NNNNN.raw, $sizes of 64 MiB"
		FAILED=1
	fi
}

make_images
ms=() mw=() l1=() l2=()
for ((r = 0; r < REPS; r++)); do
	ld=$(cut -d' ' -f1-3 /proc/loadavg)
	drop_caches
	mount_timed tm
	ls_timed ta
	check_listing
	ls_timed tb
	check_listing
	unmount
	mount_timed tw # the images' headers now in the page cache: the daemon's own cost
	unmount
	log "rep $((r + 1)): mount $tm s (warm $tw s), ls -l $ta s, ls -l again $tb s (load before: $ld)"
	ms+=("$tm") mw+=("$tw") l1+=("$ta") l2+=("$tb")
done

# the daemon's system calls per image over a second ls -l (strace -c), into SYSCALLS and the
# top three calls into TOPCALLS
SYSCALLS='' TOPCALLS=''
syscalls_per_image() {
	local spid i
	command -v strace >/dev/null 2>&1 || return 0
	mount_timed tx
	ls -l "$MNT" >/dev/null
	strace -c -f -o "$WORK/strace" -p "$PID" 2>/dev/null &
	spid=$!
	for ((i = 0; i < 100; i++)); do
		awk '$1 == "TracerPid:" && $2 != 0 { ok = 1 } END { exit !ok }' "/proc/$PID/status" && break
		sleep 0.1
	done
	ls -l "$MNT" >/dev/null
	kill -INT "$spid" 2>/dev/null || true
	wait "$spid" 2>/dev/null || true
	unmount
	# strace -c's table: "% time seconds usecs/call calls [errors] syscall", then "total"
	SYSCALLS=$(awk -v n="$N" '$NF == "total" { printf "%.1f", $4 / n }' "$WORK/strace")
	TOPCALLS=$(awk -v n="$N" '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" {
		printf "%s %.1f\n", $NF, $4 / n }' "$WORK/strace" | sort -k2 -g -r | head -n 3 |
		paste -sd, - | sed 's/,/, /g')
}
syscalls_per_image

M=$(median "${ms[@]}")
W=$(median "${mw[@]}")
A=$(median "${l1[@]}")
B=$(median "${l2[@]}")
ratio() { echo "scale=2; $2 / $1" | bc -l | sed 's/^\./0./'; }
printf '\nqcowfs, a directory of %d images (median of %d, page cache dropped before each cold mount)\n' \
	"$N" "$REPS"
printf '%-12s %10s %10s %14s\n' "" "seconds" "target" "target/time"
printf '%-12s %10.3f %10s %14s\n' "mount" "$M" "< $MOUNT_TARGET" "$(ratio "$M" "$MOUNT_TARGET")"
printf '%-12s %10.3f %10s %14s\n' "mount warm" "$W" "< $MOUNT_TARGET" "$(ratio "$W" "$MOUNT_TARGET")"
printf '%-12s %10.3f %10s %14s\n' "ls -l" "$A" "< $LIST_TARGET" "$(ratio "$A" "$LIST_TARGET")"
printf '%-12s %10.3f %10s %14s\n' "ls -l 2nd" "$B" "< $LIST_TARGET" "$(ratio "$B" "$LIST_TARGET")"
[ -z "$SYSCALLS" ] ||
	printf '%-12s %10s   per image on a 2nd ls -l (strace -c of the daemon: %s)\n' "syscalls" \
		"$SYSCALLS" "$TOPCALLS"
printf 'load average at the end: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
[ "$N" -ge 10000 ] || printf '(targets are for 10,000 images)\n'
[ "$FAILED" = 0 ] || die "a listing was wrong"
if [ "${BENCH_STRICT:-0}" = 1 ] && [ "$N" -ge 10000 ]; then
	miss=$(echo "$M >= $MOUNT_TARGET || $A >= $LIST_TARGET || $B >= $LIST_TARGET" | bc -l)
	[ "$miss" = 0 ] || die "a target was missed"
fi

#!/bin/bash
# hostile-paths.sh - never hang, never lie, whatever file types and paths SOURCE holds:
# sockets, devices and /proc or /sys files named as backing or data files, symlink loops and
# long symlink chains, a 4094-byte symlink, symlinks to '/' and '..', a FIFO put in the place
# of a backing file after the listing, the mount point bound into SOURCE, a stopped FUSE
# daemon's mount and a qcowfs of our own mount inside SOURCE (a FUSE mount below SOURCE is never
# looked into: its daemon may hang, or be this one), 100,000 files in one directory; qcowctl on
# the same inputs; SIGTERM and fusermount3 -u end the daemon. Every access is bounded (fs_t,
# timeout), so a hang fails the test.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC=$WORK/src
MNT=$WORK/mnt
OUT=$WORK/outside
SRC2=$WORK/src2
mkdir -p "$SRC" "$MNT" "$OUT" "$SRC2"
cd "$SRC" || exit 1

# the good image the mount must keep serving whatever else happens
setup qemu-img create -q -f qcow2 good.qcow2 1M
setup qio good.qcow2 "write -P 0x11 0 64k"

# a socket, devices, /proc and /sys files as raw backing files and as a data file
setup python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' sock.raw
setup qemu-img create -q -f qcow2 -u -b sock.raw -F raw over-sock.qcow2 1M
for d in zero random tty; do
	setup qemu-img create -q -f qcow2 -u -b /dev/$d -F raw over-$d.qcow2 1M
done
setup qemu-img create -q -f qcow2 -o data_file=dz.data over-data-zero.qcow2 1M
rm -f dz.data && ln -s /dev/zero dz.data
setup qemu-img create -q -f qcow2 -u -b /proc/self/status -F raw over-status.qcow2 1M
setup qemu-img create -q -f qcow2 -u -b /proc/self/mem -F raw over-mem.qcow2 1M
SYSF=/sys/devices/system/cpu/online
[ -f "$SYSF" ] || missing_prereq "$SYSF"
setup qemu-img create -q -f qcow2 -u -b "$SYSF" -F raw over-sys.qcow2 1M

# symlink loops, a chain of 10 links (served) and one of 45 (over the kernel's 40: refused), a
# symlink 4094 bytes long, symlinks to '/', '..' and '.'
ln -s loop-b.qcow2 loop-a.qcow2
ln -s loop-a.qcow2 loop-b.qcow2
setup qemu-img create -q -f qcow2 -u -b loop-a.qcow2 -F qcow2 over-loop.qcow2 1M
mkdir links
ln -s ../good.qcow2 links/s0
for ((i = 1; i <= 45; i++)); do ln -s "s$((i - 1))" "links/s$i"; done
ln -s links/s9 chain10.qcow2
ln -s links/s45 chain46.qcow2
ln -s "$(python3 -c 'print("./" * 2042 + "good.qcow2", end="")')" long.qcow2
ln -s / root-link
ln -s .. up-link
ln -s . self-link
ln -s dloop-b dloop-a
ln -s dloop-a dloop-b

# a raw backing file and a top image that become FIFOs after the listing
setup qemu-img create -q -f qcow2 race-top.qcow2 1M
setup qemu-img create -q -f raw race.raw 1M
setup qio_raw race.raw "write -P 0x55 0 64k"
setup qemu-img create -q -f qcow2 -b race.raw -F raw over-race.qcow2 1M

# directories for the mounts made below SOURCE
mkdir bind stopped nest
setup qemu-img create -q -f qcow2 "$SRC2/x.qcow2" 1M
setup qio "$SRC2/x.qcow2" "write -P 0x66 0 64k"

mount_qcowfs "$SRC" "$MNT" --backing-dir /dev --backing-dir /proc --backing-dir /sys ||
	bail "mount failed"
MAIN_PID=$QCOWFS_PID
MAIN_LOG=$QCOWFS_LOG

check "the listing answers and shows exactly the servable chains" fs_t 20 expect_listing "$MNT" \
	good.raw chain10.raw long.raw over-sys.raw race.raw \
	over-race.raw race-top.raw links bind stopped nest
check "good.raw reads as qemu-img reads it" \
	fs_t 20 expect_same_as_qemu "$SRC/good.qcow2" "$MNT/good.raw"
check "chain10.raw (10 symlinks) reads as good.qcow2" \
	fs_t 20 expect_same_as_qemu "$SRC/good.qcow2" "$MNT/chain10.raw"
check "long.raw (a 4094-byte symlink) reads as good.qcow2" \
	fs_t 20 expect_same_as_qemu "$SRC/good.qcow2" "$MNT/long.raw"
# a /sys file's size is 4096 while it holds 4 bytes: the view reads what qemu-img reads; a /proc
# file says 0 bytes whatever it holds and has no end to seek to: refused, as QEMU refuses it
check "over-sys.raw reads as qemu-img reads it" \
	fs_t 20 expect_same_as_qemu "$SRC/over-sys.qcow2" "$MNT/over-sys.raw"
for f in over-sock over-zero over-random over-tty over-data-zero over-loop chain46 over-status \
	over-mem; do
	check "$f.qcow2 is not shown" fs_t 20 expect_absent "$MNT/$f.raw"
	check "the log names $f.qcow2" log_names "$MAIN_LOG" "$f.qcow2"
done
check "the symlinks to '/', '..', '.' and a loop of them are not shown" \
	fs_t 20 expect_absent "$MNT/root-link" "$MNT/up-link" "$MNT/self-link" "$MNT/dloop-a"

# a FIFO in the place of the raw backing file, after the listing: the open fails at once
rm -f race.raw && mkfifo race.raw
check "over-race.raw over a FIFO put there since the listing: the read fails, at once" \
	fs_t 20 _e2e_negate cat "$MNT/over-race.raw"
rm -f race-top.qcow2 && mkfifo race-top.qcow2
check "race-top.raw, its image a FIFO since the listing: the read fails, at once" \
	fs_t 20 _e2e_negate cat "$MNT/race-top.raw"
rm -f race.raw race-top.qcow2
check "and the mount still reads" fs_t 20 expect_same_as_qemu "$SRC/good.qcow2" "$MNT/good.raw"

# the mount point bound into SOURCE: a lookup there would wait for this daemon
if [ "$(id -u)" = 0 ] && mount --bind "$MNT" "$SRC/bind" 2>/dev/null; then
	track_kmount "$SRC/bind"
	touch "$SRC" # the directory changed: the next lookup scans it again
	setup qemu-img create -q -f qcow2 -u -b bind/good.raw -F raw over-bind.qcow2 1M
	check "with the mount point bound into SOURCE, the listing answers" \
		fs_t 20 expect_listing "$MNT" good.raw chain10.raw long.raw \
		over-sys.raw links stopped nest
	check "the bound mount point is not shown" fs_t 20 expect_absent "$MNT/bind"
	check "over-bind.qcow2 (backing file through the bound mount point) is not shown" \
		fs_t 20 expect_absent "$MNT/over-bind.raw"
	check "the log says the bound mount point is a FUSE mount not looked into" \
		bash -c "grep -F '$SRC/bind' '$MAIN_LOG' | grep -q FUSE"
	check "and the mount still reads" \
		fs_t 20 expect_same_as_qemu "$SRC/good.qcow2" "$MNT/good.raw"
	umount "$SRC/bind"
	rm -f over-bind.qcow2
else
	echo "# not root or no bind mount here: the bind-mount checks are skipped"
fi

# another daemon's mount inside SOURCE, that daemon stopped (a hung server)
mount_qcowfs "$SRC2" "$SRC/stopped" || bail "mount of the second source failed"
STOPPED_PID=$QCOWFS_PID
setup qemu-img create -q -f qcow2 -u -b stopped/x.raw -F raw over-stopped.qcow2 1M
kill -STOP "$STOPPED_PID"
touch "$SRC"
QCOWFS_PID=$MAIN_PID
check "with a stopped FUSE daemon's mount inside SOURCE, the listing answers" \
	fs_t 20 expect_listing "$MNT" good.raw chain10.raw long.raw \
	over-sys.raw links bind nest
check "over-stopped.qcow2 (backing file on the stopped mount) is not shown" \
	fs_t 20 expect_absent "$MNT/over-stopped.raw"
check "and the mount still reads" fs_t 20 expect_same_as_qemu "$SRC/good.qcow2" "$MNT/good.raw"
check "qcowctl tree of SOURCE with the stopped mount in it ends, and lists good.qcow2" bash -c "
	timeout -k 2 20 '$QCOWCTL' tree '$SRC' >'$WORK/tree-stopped.out' 2>&1 &&
		grep -q '^good.qcow2' '$WORK/tree-stopped.out' &&
		grep -F 'over-stopped.qcow2 (backing file cannot be reached' '$WORK/tree-stopped.out' ||
		{ cat '$WORK/tree-stopped.out'; exit 1; }"
kill -CONT "$STOPPED_PID"
QCOWFS_PID=$STOPPED_PID
check "the second daemon unmounts (fusermount3 -u) and exits cleanly" umount_qcowfs "$SRC/stopped"
rm -f over-stopped.qcow2

# a qcowfs of our own mount, mounted inside SOURCE: looking into it waits on this daemon
mount_qcowfs "$MNT" "$SRC/nest" || bail "mount of the mount point failed"
NEST_PID=$QCOWFS_PID
touch "$SRC"
QCOWFS_PID=$MAIN_PID
check "with a qcowfs of the mount point inside SOURCE, the listing answers" \
	fs_t 20 expect_listing "$MNT" good.raw chain10.raw long.raw \
	over-sys.raw links bind stopped
check "and the mount still reads" fs_t 20 expect_same_as_qemu "$SRC/good.qcow2" "$MNT/good.raw"
QCOWFS_PID=$NEST_PID
check "the nested daemon unmounts and exits cleanly" umount_qcowfs "$SRC/nest"

QCOWFS_PID=$MAIN_PID
check "the daemon is still up" daemon_alive "$MNT"
check "SIGTERM: the daemon exits cleanly and the mount is gone" bash -c "
	kill -TERM $MAIN_PID
	for ((i = 0; i < 100; i++)); do kill -0 $MAIN_PID 2>/dev/null || break; sleep 0.1; done
	! kill -0 $MAIN_PID 2>/dev/null && ! mountpoint -q '$MNT'"
wait "$MAIN_PID"
check "SIGTERM: exit status 0" test $? = 0
check "no sanitizer report in the daemon log" log_clean "$MAIN_LOG"

# 100,000 files in one directory: the mount and a listing stay bounded
MANY=$WORK/many
MNT3=$WORK/mnt3
mkdir -p "$MANY/d"
setup python3 -c '
import os, sys
for i in range(100000):
    open(os.path.join(sys.argv[1], "f%06d" % i), "w").close()' "$MANY/d"
setup qemu-img create -q -f qcow2 "$MANY/d/img.qcow2" 1M
mount_qcowfs "$MANY" "$MNT3" || bail "mount of the directory of 100,000 files failed"
check "a directory of 100,000 files lists (the one image only)" \
	fs_t 60 expect_listing "$MNT3/d" img.raw
check "100,000 files: the daemon unmounts and exits cleanly" umount_qcowfs "$MNT3"
check "100,000 files: no sanitizer report" log_clean "$QCOWFS_LOG"

# qcowctl on the same inputs: a quick error naming the file, never a hang
for f in over-sock:sock.raw over-zero:/dev/zero over-random:/dev/random over-tty:/dev/tty \
	over-data-zero:/dev/zero over-loop:loop-a.qcow2 over-status:/status over-mem:/mem; do
	img=${f%%:*}.qcow2
	for cmd in "info --chain" map checksum "copy -O raw"; do
		args=($cmd "$img")
		[ "$cmd" = "copy -O raw" ] && args+=("$WORK/copy.raw")
		check "qcowctl $cmd $img fails fast naming ${f#*:}" ctl_fails_fast "${f#*:}" "${args[@]}"
		rm -f "$WORK/copy.raw"
	done
done
# qcowctl tree enters a symlinked directory only inside DIR: not the whole machine through
# root-link, not the image outside through up-link
setup qemu-img create -q -f qcow2 "$OUT/far.qcow2" 1M
ln -s ../outside "$SRC/out-link"
check "qcowctl tree with symlinks to '/' and '..' in DIR ends and stays inside DIR" bash -c "
	timeout -k 2 30 '$QCOWCTL' tree '$SRC' >'$WORK/tree.out' 2>&1 || { cat '$WORK/tree.out'; exit 1; }
	grep -q good.qcow2 '$WORK/tree.out' || { echo 'good.qcow2 not listed'; cat '$WORK/tree.out'; exit 1; }
	! grep -q far.qcow2 '$WORK/tree.out' || { echo 'far.qcow2 (outside DIR) listed'; exit 1; }"
check "qcowctl tree says over-loop.qcow2's backing name loops (not that it is missing)" bash -c "
	grep -F 'over-loop.qcow2 (backing file name loops through symlinks' '$WORK/tree.out' ||
		{ cat '$WORK/tree.out'; exit 1; }"
check "qcowctl tree of 100,000 files ends" bash -c "
	timeout -k 2 60 '$QCOWCTL' tree '$MANY' | grep -q img.qcow2"

finish

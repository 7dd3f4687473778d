#!/bin/bash
# confine.sh - confinement: a symlink in SOURCE to an image elsewhere is not served
# unless --backing-dir allows its directory; no backing name or symlink leads the daemon into
# its own mount point (the mount keeps answering); a FIFO or a directory named as a backing or
# data file is never opened (the chain is not listed, the log says why, and qcowctl fails fast);
# the base of an image refused for another reason is still read-only. Every access to the mount
# is bounded in time (fs_t), so a hang fails the test instead of the suite.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC=$WORK/src
MNT=$SRC/mnt # inside SOURCE, as an operator may well mount it
OUT=$WORK/outside
mkdir -p "$SRC" "$MNT" "$OUT"
cd "$SRC" || exit 1

# drop_backing_fmt IMAGE: make the backing format extension an unknown one (ignored), so the
# backing file's format is probed (qemu-img 7.2 no longer creates such images)
drop_backing_fmt()
{
	python3 - "$1" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read(65536))
i = b.find(bytes.fromhex('e2792aca'), 72)
assert i > 0 and i % 8 == 0, 'no backing format extension'
b[i:i + 4] = bytes.fromhex('7f000001')
with open(p, 'r+b') as f:
    f.write(b[:i + 4])
PY
}

# a good image and a raw file the mount must keep serving whatever else happens
setup qemu-img create -q -f qcow2 good.qcow2 1M
setup qio good.qcow2 "write -P 0x11 0 64k"
setup qemu-img create -q -f raw plain.raw 1M
setup qio_raw plain.raw "write -P 0x22 0 64k"
setup qemu-img create -q -f qcow2 -b plain.raw -F raw over-plain.qcow2 1M

# 1. a symlink in SOURCE to an image outside it
setup qemu-img create -q -f qcow2 "$OUT/far.qcow2" 1M
setup qio "$OUT/far.qcow2" "write -P 0x33 0 64k"
ln -s ../outside/far.qcow2 far-link.qcow2
sha_of "$OUT/far.qcow2" >"$WORK/far.sha"

# 3. FIFOs named as a raw backing file (format given and probed) and as a data file
mkfifo pipe.raw
setup qemu-img create -q -f qcow2 -u -b pipe.raw -F raw over-fifo.qcow2 1M
setup qemu-img create -q -f qcow2 -u -b pipe.raw -F raw over-fifo-probe.qcow2 1M
setup drop_backing_fmt over-fifo-probe.qcow2
setup qemu-img create -q -f qcow2 -o data_file=data-fifo.data over-data-fifo.qcow2 1M
rm -f data-fifo.data && mkfifo data-fifo.data

# 4. a directory named as a raw backing file (shown as the directory it is)
mkdir dir.raw
setup qemu-img create -q -f qcow2 -u -b dir.raw -F raw over-dir.qcow2 1M

# 5. bases of refused overlays: an unknown incompatible feature, an unknown backing format,
# LUKS encryption without a key
for b in base-a base-b base-c; do
	setup qemu-img create -q -f qcow2 "$b.qcow2" 1M
	setup qio "$b.qcow2" "write -P 0x44 0 64k"
done
setup qemu-img create -q -f qcow2 -b base-a.qcow2 -F qcow2 bad-feature.qcow2 1M
put_be bad-feature.qcow2 72 8 $((1 << 20))
setup qemu-img create -q -f qcow2 -u -b base-b.qcow2 -F vmdk bad-format.qcow2 1M
setup qemu-img create -q -f qcow2 -b base-c.qcow2 -F qcow2 encrypted.qcow2 1M
put_be encrypted.qcow2 32 4 2
sha_of base-a.qcow2 base-b.qcow2 base-c.qcow2 >"$WORK/bases.sha"

mount_qcowfs "$SRC" "$MNT" || bail "mount failed"

check "the listing answers" fs_t 20 ls -A "$MNT"
check "exactly the servable chains are listed" fs_t 20 expect_listing "$MNT" \
	dir.raw good.raw plain.raw over-plain.raw base-a.raw base-b.raw base-c.raw
check "the good image reads as qemu-img reads it" \
	expect_same_as_qemu "$SRC/good.qcow2" "$MNT/good.raw"

# 1
check "a symlink to an image outside SOURCE is not shown" fs_t 20 expect_absent "$MNT/far-link.raw"
check "the log names the symlink and says it leads outside" \
	bash -c "grep -F far-link.qcow2 '$QCOWFS_LOG' | grep -q outside"
check "the image outside SOURCE is unchanged" sha_unchanged "$WORK/far.sha"

# 2. names that lead into the mount point, created while mounted (before the mount, a lookup
# there does not reach the daemon): a relative and an absolute backing name, a symlink to the
# mount point used as a directory of a backing name, symlinks to and into the mount point
setup qemu-img create -q -f qcow2 -u -b mnt/plain.raw -F raw into-rel.qcow2 1M
setup qemu-img create -q -f qcow2 -u -b "$MNT/good.raw" -F raw into-abs.qcow2 1M
ln -s mnt mnt-link
setup qemu-img create -q -f qcow2 -u -b mnt-link/plain.raw -F raw into-link.qcow2 1M
setup drop_backing_fmt into-link.qcow2
ln -s mnt/good.raw into-file.qcow2
check "with names into the mount point, the listing still answers" \
	fs_t 20 expect_listing "$MNT" dir.raw good.raw plain.raw over-plain.raw base-a.raw base-b.raw \
	base-c.raw
for f in into-rel into-abs into-link; do
	check "$f.qcow2 (backing name into the mount point) is not shown" \
		fs_t 20 expect_absent "$MNT/$f.raw"
	check "the log names $f.qcow2" log_names "$QCOWFS_LOG" "$f.qcow2"
done
check "a lookup of a name through the mount point answers (absent)" \
	fs_t 20 expect_absent "$MNT/into-file.raw"
check "the log says the symlink into the mount point is not followed" \
	bash -c "grep -F into-file.qcow2 '$QCOWFS_LOG' | grep -q 'mount point'"
check "and the mount still reads" fs_t 20 expect_same_as_qemu "$SRC/good.qcow2" "$MNT/good.raw"

# 3, 4
for f in over-fifo over-fifo-probe over-data-fifo over-dir; do
	check "$f.qcow2 is not shown" fs_t 20 expect_absent "$MNT/$f.raw"
	check "one log line names $f.qcow2" bash -c "[ \$(grep -cF '$f.qcow2' '$QCOWFS_LOG') = 1 ]"
done
check "the log says pipe.raw is a FIFO" bash -c "grep -F pipe.raw '$QCOWFS_LOG' | grep -q FIFO"
check "the log says dir.raw is a directory" \
	bash -c "grep -F dir.raw '$QCOWFS_LOG' | grep -q directory"
check "one log line names the symlink to the image outside, after many listings" \
	bash -c "[ \$(grep -cF far-link.qcow2 '$QCOWFS_LOG') = 1 ]"
check "a second listing logs nothing new" bash -c \
	"n=\$(wc -l <'$QCOWFS_LOG'); ls '$MNT' >/dev/null && [ \$(wc -l <'$QCOWFS_LOG') = \$n ]"

# 5
for b in base-a base-b base-c; do
	check "$b.raw (the base of a refused overlay) is read-only" \
		fs_t 20 expect_not_writable "$MNT/$b.raw"
done
check "the refused overlays are named in the log" \
	log_names "$QCOWFS_LOG" bad-feature.qcow2 bad-format.qcow2 encrypted.qcow2
check "the bases are unchanged" sha_unchanged "$WORK/bases.sha"

check "the daemon is still up" daemon_alive "$MNT"
check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"

# 1, with --backing-dir allowing the outside directory: the symlinked image is served
MNT2=$WORK/mnt2
mount_qcowfs "$SRC" "$MNT2" --backing-dir "$OUT" || bail "mount with --backing-dir failed"
check "--backing-dir: the symlinked image outside is shown and reads as qemu-img reads it" \
	expect_same_as_qemu "$OUT/far.qcow2" "$MNT2/far-link.raw"
check "--backing-dir: the daemon unmounts and exits cleanly" umount_qcowfs "$MNT2"

# the same with a relative --backing-dir and a daemon that detaches (and so works from /): the
# directory is the one named relative to where qcowfs was started
MNT3=$WORK/mnt3
mkdir -p "$MNT3"
track_mount "$MNT3"
check "--backing-dir relative, detached daemon: the mount starts" bash -c \
	"cd '$(dirname "$OUT")' && '$QCOWFS' --backing-dir '$(basename "$OUT")' '$SRC' '$MNT3' \
		</dev/null >/dev/null 2>&1 && mountpoint -q '$MNT3'"
check "--backing-dir relative, detached daemon: the symlinked image outside reads as qemu-img reads it" \
	expect_same_as_qemu "$OUT/far.qcow2" "$MNT3/far-link.raw"
check "--backing-dir relative, detached daemon: it unmounts" fusermount3 -u "$MNT3"

# qcowctl on chains through a FIFO: a quick error naming the FIFO, never a hang
check "qcowctl info --chain over a FIFO backing file fails fast" \
	ctl_fails_fast pipe.raw info --chain over-fifo.qcow2
check "qcowctl map over a FIFO backing file fails fast" ctl_fails_fast pipe.raw map over-fifo.qcow2
check "qcowctl checksum over a FIFO backing file fails fast" \
	ctl_fails_fast pipe.raw checksum over-fifo.qcow2
check "qcowctl checksum over a probed FIFO backing file fails fast" \
	ctl_fails_fast pipe.raw checksum over-fifo-probe.qcow2
check "qcowctl checksum over a FIFO data file fails fast" \
	ctl_fails_fast data-fifo.data checksum over-data-fifo.qcow2
check "qcowctl info on a FIFO fails fast" ctl_fails_fast pipe.raw info pipe.raw
check "qcowctl checksum over a directory backing file fails" \
	ctl_fails_fast dir.raw checksum over-dir.qcow2

finish

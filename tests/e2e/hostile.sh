#!/bin/bash
# hostile.sh - untrusted input: malformed, truncated and hostile images in one SOURCE
# with good ones. Every bad image is absent from the mount and named in the daemon's log with
# its cause; the daemon stays up, does not blow up its memory, and keeps serving the good
# images; the corrupt bit makes an image read-only, not invisible; backing files outside SOURCE
# are refused unless --backing-dir allows their directory.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC=$WORK/src
MNT=$WORK/mnt
mkdir -p "$SRC/sub"
cd "$SRC" || exit 1

get_be()
{
	local f=$1 off=$2 w=$3
	echo $((16#$(od -A n -t x1 -j "$off" -N "$w" "$f" | tr -d ' \n')))
}

# a valid template: 4 MiB, 64k clusters, data in three places
TMPL=$WORK/template.qcow2
setup qemu-img create -q -f qcow2 "$TMPL" 4M
setup qio "$TMPL" "write -P 0x11 0 64k" "write -P 0x12 1M 128k" "write -P 0x13 4032k 64k"

# bad NAME OFFSET WIDTH VALUE: a copy of the template with one header field patched
BAD=()
bad()
{
	local name=$1
	cp "$TMPL" "$name" || return 1
	put_be "$name" "$2" "$3" "$4"
	BAD+=("$name")
}

# the good images
cp "$TMPL" good.qcow2
cp "$TMPL" sub/good2.qcow2
setup qio sub/good2.qcow2 "write -P 0x21 2M 64k"

# header fields (offsets from qcow2.txt, big-endian)
bad bad-magic-version.qcow2 4 4 4                # version 4
bad l1-past-eof.qcow2 40 8 $((0x10000000))         # L1 table 256 MiB into a small file
bad l1-unaligned.qcow2 40 8 $((0x30001))           # L1 table not cluster-aligned
bad l1-over-header.qcow2 40 8 0                    # L1 table overlaps the header
bad huge-l1.qcow2 36 4 $((0x7fffffff))             # 16 GiB of L1 table
bad l1-too-small.qcow2 36 4 0                      # no L1 entries for 4 MiB of disk
bad huge-snapshot-count.qcow2 60 4 $((0xffffffff)) # 4 G snapshots...
put_be huge-snapshot-count.qcow2 64 8 $((0x10000)) # ...in a table at 64k
bad snapshots-past-eof.qcow2 60 4 60000            # under QEMU's cap, but past EOF
put_be snapshots-past-eof.qcow2 64 8 $((0x10000))
bad reftable-past-eof.qcow2 48 8 $((0x40000000))   # refcount table at 1 GiB
bad huge-reftable.qcow2 56 4 $((0xffffff))         # 16 M refcount table clusters
bad reftable-over-l1.qcow2 48 8 $((0x30000))       # refcount table overlaps the L1 table
bad cluster-bits-30.qcow2 20 4 30                  # 1 GiB clusters
bad cluster-bits-8.qcow2 20 4 8                    # 256-byte clusters
bad huge-size.qcow2 24 8 $((1 << 62))              # 4 EiB virtual disk
bad unknown-incompat.qcow2 72 8 $((1 << 20))       # incompatible feature bit 20
bad encrypted-luks.qcow2 32 4 2                    # LUKS, no key, no crypto header
bad encrypted-aes.qcow2 32 4 1                     # legacy AES, no key
bad long-backing-name.qcow2 8 8 $((0x200))         # a 4000-byte backing file name
put_be long-backing-name.qcow2 16 4 4000
bad ext-huge-length.qcow2 116 4 $((0xfffffff0))    # header extension longer than the header

# a snapshot table entry with absurd sizes
cp "$TMPL" snap-extra-huge.qcow2
setup qemu-img snapshot -c s1 snap-extra-huge.qcow2
SNOFF=$(get_be snap-extra-huge.qcow2 64 8)
put_be snap-extra-huge.qcow2 $((SNOFF + 36)) 4 $((0xfffffff0)) # extra_data_size
BAD+=(snap-extra-huge.qcow2)

# truncated files: inside the header, and after the refcount table (L1 and data gone)
cp "$TMPL" truncated-header.qcow2 && truncate -s 50 truncated-header.qcow2
cp "$TMPL" truncated.qcow2 && truncate -s $((0x20000)) truncated.qcow2
BAD+=(truncated-header.qcow2 truncated.qcow2)

# backing loops: a -> b -> a, and an image backing itself
setup qemu-img create -q -f qcow2 loop-a.qcow2 4M
setup qemu-img create -q -f qcow2 -b loop-a.qcow2 -F qcow2 loop-b.qcow2
setup qemu-img rebase -u -b loop-b.qcow2 -F qcow2 loop-a.qcow2
setup qemu-img create -q -f qcow2 self.qcow2 4M
setup qemu-img rebase -u -b self.qcow2 -F qcow2 self.qcow2
BAD+=(loop-a.qcow2 loop-b.qcow2 self.qcow2)

# a missing backing file
setup qemu-img create -q -f qcow2 -u -b not-there.qcow2 -F qcow2 missing-backing.qcow2 4M
BAD+=(missing-backing.qcow2)

# backing files outside SOURCE: absolute (/etc/passwd), ../ escape, a symlink pointing out
setup qemu-img create -q -f qcow2 -b /etc/passwd -F raw outside.qcow2 1M
setup qemu-img create -q -f raw "$WORK/outside-file.raw" 1M
setup qio_raw "$WORK/outside-file.raw" "write -P 0x31 0 1M"
setup qemu-img create -q -f qcow2 -b ../outside-file.raw -F raw escape.qcow2 1M
ln -s /etc/passwd passwd-link
setup qemu-img create -q -f qcow2 -b passwd-link -F raw symlink-out.qcow2 1M
BAD+=(outside.qcow2 escape.qcow2 symlink-out.qcow2)

# the corrupt bit: served read-only, not refused
cp "$TMPL" corrupt.qcow2
put_be corrupt.qcow2 72 8 2

# an L2 table past the end of the file: found on read (or at open); never silently zeros
cp "$TMPL" l2-past-eof.qcow2
L1OFF=$(get_be l2-past-eof.qcow2 40 8)
put_be l2-past-eof.qcow2 "$L1OFF" 8 $(((1 << 63) | 0x8000000)) # copied flag | 128 MiB

# Sanity check of the fixtures: qemu-img refuses these too (not the loops: qemu-img recurses
# through a backing loop until it runs out of memory)
for b in bad-magic-version.qcow2 huge-l1.qcow2 huge-snapshot-count.qcow2 \
	cluster-bits-30.qcow2 unknown-incompat.qcow2 encrypted-luks.qcow2 \
	truncated-header.qcow2 long-backing-name.qcow2; do
	check_not "qemu-img also refuses $b" qemu-img convert -U -O raw "$b" "$WORK/scratch.raw"
done
rm -f "$WORK/scratch.raw"

mount_qcowfs "$SRC" "$MNT" || bail "mount failed"

check "the good image is served and reads correctly" \
	expect_same_as_qemu "$SRC/good.qcow2" "$MNT/good.raw"
check "the good image in a subdirectory reads correctly" \
	expect_same_as_qemu "$SRC/sub/good2.qcow2" "$MNT/sub/good2.raw"
for b in "${BAD[@]}"; do
	check "$b is not shown" expect_absent "$MNT/${b%.qcow2}.raw"
done
check "readdir shows none of the bad images" bash -c \
	"ls -A '$MNT' | grep -vxE 'good.raw|corrupt.raw|l2-past-eof.raw|sub' | sed 's/^/unexpected: /' | { ! grep .; }"
for b in "${BAD[@]}"; do
	check "the log names $b" log_names "$QCOWFS_LOG" "$b"
done
check "the log gives encryption as the cause for encrypted-luks.qcow2" \
	bash -c "grep -F encrypted-luks.qcow2 '$QCOWFS_LOG' | grep -qi encrypt"
check "the daemon is still up after the scan" daemon_alive "$MNT"

# the corrupt bit
check "corrupt.qcow2 is shown" expect_exists "$MNT/corrupt.raw"
check "corrupt.qcow2 reads as qemu-img reads it" expect_same_as_qemu "$SRC/corrupt.qcow2" "$MNT/corrupt.raw"
check "corrupt.qcow2 is read-only (mode)" expect_readonly_mode "$MNT/corrupt.raw"
check "corrupt.qcow2 refuses opens for writing with EROFS" expect_open_fails "$MNT/corrupt.raw" EROFS w rw

# the L2 table past EOF: either refused, or the read of its range fails - never data
l2_past_eof()
{
	if ! fs test -e "$MNT/l2-past-eof.raw"; then
		log_names "$QCOWFS_LOG" l2-past-eof.qcow2
		return
	fi
	if fs dd if="$MNT/l2-past-eof.raw" of=/dev/null bs=64k count=1 iflag=direct status=none 2>/dev/null; then
		echo "reading through an L2 table past the end of the file succeeded"
		return 1
	fi
	# the rest of the image (the other L2 table) is not concerned... the daemon stays up
	daemon_alive "$MNT"
}
check "an L2 table past EOF is refused or fails the read" l2_past_eof

# memory: nothing allocated in proportion to numbers read from the files
peak_rss_bounded()
{
	local kb
	kb=$(awk '/^VmHWM/ {print $2}' "/proc/$QCOWFS_PID/status") || return 1
	[ "$kb" -lt $((1024 * 1024)) ] || { echo "daemon peak RSS ${kb} kB"; return 1; }
}
check "the daemon's peak memory stays under 1 GiB" peak_rss_bounded

# the whole mount still works after all the refusals; reading every file of it ends
read_everything() { fs find "$MNT" -type f -name '*.raw' ! -name 'l2-past-eof.raw' -exec cat {} + >/dev/null; }
check "every shown file reads" read_everything
check "the good image still reads correctly" expect_same_as_qemu "$SRC/good.qcow2" "$MNT/good.raw"
check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"

# --backing-dir: /etc allowed -> outside.qcow2 (backed by /etc/passwd) is served
MNT2=$WORK/mnt-backing-dir
mount_qcowfs "$SRC" "$MNT2" --backing-dir /etc || bail "mount with --backing-dir failed"
check "--backing-dir /etc: outside.raw is shown" expect_exists "$MNT2/outside.raw"
check "--backing-dir /etc: outside.raw equals qemu-img convert" \
	expect_same_as_qemu "$SRC/outside.qcow2" "$MNT2/outside.raw"
check "--backing-dir /etc: symlink-out.raw (symlink to /etc/passwd) is shown" \
	expect_same_as_qemu "$SRC/symlink-out.qcow2" "$MNT2/symlink-out.raw"
check "--backing-dir /etc: escape.qcow2 (backing in another directory) is still refused" \
	expect_absent "$MNT2/escape.raw"
check "--backing-dir /etc: the good image reads correctly" \
	expect_same_as_qemu "$SRC/good.qcow2" "$MNT2/good.raw"
check "--backing-dir: the daemon unmounts and exits cleanly" umount_qcowfs "$MNT2"

MNT3=$WORK/mnt-backing-dir2
mount_qcowfs "$SRC" "$MNT3" --backing-dir /etc --backing-dir "$WORK" || bail "mount with two --backing-dir failed"
check "two --backing-dir: escape.raw is shown and equals qemu-img convert" \
	expect_same_as_qemu "$SRC/escape.qcow2" "$MNT3/escape.raw"
check "two --backing-dir: outside.raw is shown and equals qemu-img convert" \
	expect_same_as_qemu "$SRC/outside.qcow2" "$MNT3/outside.raw"
check "two --backing-dir: the daemon unmounts and exits cleanly" umount_qcowfs "$MNT3"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
finish

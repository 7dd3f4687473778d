#!/bin/bash
# snapshot-views.sh - snapshot views that stay true, and snapshot tables that are partly bad:
# - a bad entry in the snapshot table (its L1 table misaligned or too large) disables that
#   snapshot only: the image and its other snapshots are served, the bad one has no view and
#   the log says why; qcowctl info, check and checksum exit as qemu-img does, check reports the
#   entry in qemu-img check's words, and check --repair --drop-bad-snapshots drops it;
# - a snapshot deleted by QEMU while its view is open, its clusters reused, never shows the
#   new data through the open view (an error instead); other snapshots created or deleted
#   meanwhile do not disturb it;
# - snapshots with the same name each get a view (NAME@S.raw, then NAME@S%#ID.raw), and a
#   name too long for a file name gets a shortened one (logged).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC=$WORK/src
MNT=$WORK/mnt
mkdir -p "$SRC"
cd "$SRC" || exit 1

# break_snapshot IMAGE INDEX misalign|huge: damage the L1 fields of snapshot table entry INDEX.
break_snapshot()
{
	python3 - "$@" <<'EOF'
import struct, sys
path, idx, how = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path, 'r+b') as f:
    h = f.read(72)
    nb, off = struct.unpack('>IQ', h[60:72])
    for i in range(nb):
        f.seek(off)
        e = f.read(40)
        l1, l1n, idl, nml = struct.unpack('>QIHH', e[:16])
        extra, = struct.unpack('>I', e[36:40])
        if i == idx:
            if how == 'misalign':
                f.seek(off)
                f.write(struct.pack('>Q', l1 + 0x200))
            else:
                f.seek(off + 8)
                f.write(struct.pack('>I', 0x10000000))
        off += (40 + extra + idl + nml + 7) & ~7
EOF
}

# same_as_snapshot_id IMAGE ID FLAT: FLAT holds what qemu-img convert makes of snapshot ID.
same_as_snapshot_id()
{
	local exp
	exp=$(tmpfile .raw)
	qemu-img convert -U -f qcow2 -l "snapshot.id=$2" -O raw "$1" "$exp" || return 1
	fs cmp "$exp" "$3"
}

# ---- a bad entry disables that snapshot only ----

for how in misalign huge; do
	setup qemu-img create -q -f qcow2 "bad-$how.qcow2" 4M
	setup qio "bad-$how.qcow2" "write -P 0x11 0 1M"
	setup qemu-img snapshot -c broken "bad-$how.qcow2"
	setup qio "bad-$how.qcow2" "write -P 0x22 512k 1M"
	setup qemu-img snapshot -c good "bad-$how.qcow2"
	setup qio "bad-$how.qcow2" "write -P 0x33 1M 64k"
	setup break_snapshot "bad-$how.qcow2" 0 "$how"
	setup cp "bad-$how.qcow2" "$WORK/orig-$how.qcow2"
done

# an image whose snapshot will be deleted while its view is open: the snapshot alone owns its
# clusters (the active state rewrote every one), so deleting it frees them all for reuse
setup qemu-img create -q -f qcow2 held.qcow2 16M
setup qio held.qcow2 "write -P 0xaa 0 16M"
setup qemu-img snapshot -c keep held.qcow2
setup qio held.qcow2 "write -P 0xbb 0 16M"

# repeated and long names
long=$(printf 'L%.0s' {1..300})
# its view: as much of the name as fits in 255 bytes with "names@" and "%#3.raw"
short=$(printf 'L%.0s' {1..242})
setup qemu-img create -q -f qcow2 names.qcow2 1M
setup qio names.qcow2 "write -P 0x01 0 64k"
setup qemu-img snapshot -c same names.qcow2
setup qio names.qcow2 "write -P 0x02 0 64k"
setup qemu-img snapshot -c same names.qcow2
setup qio names.qcow2 "write -P 0x03 0 64k"
setup qemu-img snapshot -c "$long" names.qcow2
setup qio names.qcow2 "write -P 0x04 0 64k"
setup qemu-img snapshot -c 'x%#3' names.qcow2
setup qio names.qcow2 "write -P 0x05 0 64k"

# ---- qcowctl on the bad images: as qemu-img ----

# same_exit WHAT ARGS...: qcowctl WHAT exits as qemu-img WHAT on the same image.
same_exit()
{
	local what=$1 ours theirs
	shift
	"$QCOWCTL" "$what" "$@" >/dev/null 2>&1
	ours=$?
	qemu-img "$what" "$@" >/dev/null 2>&1
	theirs=$?
	[ "$ours" = "$theirs" ] || { echo "qcowctl $what: exit $ours, qemu-img: $theirs"; return 1; }
}

# same_check IMAGE: qcowctl check prints what qemu-img check prints, with its exit code.
same_check()
{
	local a b
	# tmpfile runs in a subshell here: distinct suffixes make distinct files
	a=$(tmpfile .ours.txt)
	b=$(tmpfile .qemu.txt)
	"$QCOWCTL" check "$1" >"$a" 2>&1
	echo "exit $?" >>"$a"
	qemu-img check "$1" >"$b" 2>&1
	echo "exit $?" >>"$b"
	diff -u "$b" "$a"
}

# checksum_is_qemu IMAGE: qcowctl checksum is the SHA-256 of qemu-img convert's output.
checksum_is_qemu()
{
	local exp ours
	exp=$(tmpfile .raw)
	qemu-img convert -O raw "$1" "$exp" || return 1
	ours=$("$QCOWCTL" checksum "$1" | cut -d' ' -f1) || return 1
	[ "$ours" = "$(sha256sum <"$exp" | cut -d' ' -f1)" ]
}

for how in misalign huge; do
	img=$SRC/bad-$how.qcow2
	check "bad entry ($how): info exits as qemu-img info" same_exit info "$img"
	check "bad entry ($how): info lists both snapshots" \
		eval "\"$QCOWCTL\" info \"$img\" | grep -q broken"
	check "bad entry ($how): check prints and exits as qemu-img check" same_check "$img"
	check "bad entry ($how): checksum works and equals qemu-img convert" checksum_is_qemu "$img"
	check_not "bad entry ($how): checksum of the bad snapshot is refused" \
		"$QCOWCTL" checksum "$img@broken"
	check "bad entry ($how): snapshot apply of the bad one is refused, naming the cause" \
		eval "! \"$QCOWCTL\" snapshot apply \"$img\" broken 2>\"$WORK/err\" &&
		      grep \"'broken' (id 1) is unusable: L1 table\" \"$WORK/err\""
	check_not "bad entry ($how): snapshot delete of the bad one is refused" \
		"$QCOWCTL" snapshot delete "$img" broken
done
check "qcowctl tree marks the bad snapshots unusable and lists the good ones" \
	eval "[ \$(\"$QCOWCTL\" tree \"$SRC\" | grep -c 'snapshot 1: broken (unusable: L1 table') = 2 ] &&
	      [ \$(\"$QCOWCTL\" tree \"$SRC\" | grep -c 'snapshot 2: good\$') = 2 ]"

# ---- the mount ----

mount_qcowfs "$SRC" "$MNT" || bail "mount failed"

check "bad images and their good snapshots are listed, the bad snapshots are not" \
	expect_listing "$MNT" bad-misalign.raw bad-misalign@good.raw bad-huge.raw \
	bad-huge@good.raw held.raw held@keep.raw names.raw names@same.raw 'names@same%#2.raw' \
	"names@$short%#3.raw" 'names@x%25#3.raw'
for how in misalign huge; do
	check "bad entry ($how): the active view equals qemu-img convert" \
		expect_same_as_qemu "$SRC/bad-$how.qcow2" "$MNT/bad-$how.raw"
	check "bad entry ($how): the good snapshot's view equals qemu-img convert" \
		expect_same_as_qemu "$SRC/bad-$how.qcow2" "$MNT/bad-$how@good.raw" good
	check "bad entry ($how): the bad snapshot has no view" \
		expect_absent "$MNT/bad-$how@broken.raw"
done
check "one log line per bad snapshot, naming the image and the snapshot" \
	eval "[ \$(grep -c \"snapshot 'broken' (id 1) has no view\" \"$QCOWFS_LOG\") = 2 ] &&
	      log_names \"$QCOWFS_LOG\" \"$SRC/bad-misalign.qcow2\" \"$SRC/bad-huge.qcow2\""

# the images change (as under a running VM): nothing new to say, so nothing logged again
setup qio "$SRC/bad-misalign.qcow2" "write -P 0x44 2M 64k"
setup qio "$SRC/names.qcow2" "write -P 0x06 128k 64k"
setup fs ls -l "$MNT"
check "still one log line per bad snapshot after the image changed" \
	eval "[ \$(grep -c \"snapshot 'broken' (id 1) has no view\" \"$QCOWFS_LOG\") = 2 ]"
check "the shortened name is logged once, even after the image changed" \
	eval "[ \$(grep -c 'name too long' \"$QCOWFS_LOG\") = 1 ]"
check "bad entry (misalign): the active view follows the change" \
	expect_same_as_qemu "$SRC/bad-misalign.qcow2" "$MNT/bad-misalign.raw"

check "repeated name: the first snapshot is names@same.raw" \
	same_as_snapshot_id "$SRC/names.qcow2" 1 "$MNT/names@same.raw"
check "repeated name: the second is names@same%#2.raw" \
	same_as_snapshot_id "$SRC/names.qcow2" 2 "$MNT/names@same%#2.raw"
check "a name too long for a file name: shortened, with its id" \
	same_as_snapshot_id "$SRC/names.qcow2" 3 "$MNT/names@$short%#3.raw"
check "the shortened name is logged" log_names "$QCOWFS_LOG" "name too long"
check "a name with '%#' in it cannot pass for another snapshot's view" \
	same_as_snapshot_id "$SRC/names.qcow2" 4 "$MNT/names@x%25#3.raw"

# ---- a snapshot deleted while its view is open ----

# pread_fd FD OFF LEN: read LEN bytes at OFF from the open file FD (of this shell) and print
# them in hex (one line); fails on a read error.
pread_fd()
{
	python3 -c '
import os, sys
fd, off, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
print(os.pread(fd, n, off).hex())' "$@"
}

all_bytes() # BYTE LEN: the hex line pread_fd prints for LEN bytes of BYTE
{
	python3 -c 'import sys; print(bytes([int(sys.argv[1], 16)]).hex() * int(sys.argv[2]))' "$@"
}

exec {held}<"$MNT/held@keep.raw" || bail "cannot open held@keep.raw"
check "the open snapshot view reads the snapshot" \
	eval "[ \"\$(pread_fd $held 0 4096)\" = \"\$(all_bytes aa 4096)\" ]"
# another snapshot taken and deleted: the table moves, the view's snapshot stays
setup qemu-img snapshot -c other held.qcow2
check "another snapshot created while the view is open: the view still reads" \
	eval "[ \"\$(pread_fd $held $((4 << 20)) 4096)\" = \"\$(all_bytes aa 4096)\" ]"
setup qemu-img snapshot -d other held.qcow2
check "another snapshot deleted while the view is open: the view still reads" \
	eval "[ \"\$(pread_fd $held $((5 << 20)) 4096)\" = \"\$(all_bytes aa 4096)\" ]"
setup qemu-img snapshot -d keep held.qcow2
setup qio held.qcow2 "discard 0 16M" "write -P 0xcc 0 16M"
check "QEMU reused the deleted snapshot's clusters (precondition)" \
	eval "[ \$(qemu-img check held.qcow2 | sed -n 's/^Image end offset: //p') -lt $((24 << 20)) ]"
# the range was never read through the view: nothing of it is in the page cache
got=$(pread_fd "$held" $((8 << 20)) 65536 2>&1)
check "the open view of the deleted snapshot never returns other data" \
	eval "! grep -q cc <<<\"\$got\" && { [ \"\$got\" = \"\$(all_bytes aa 65536)\" ] ||
	      grep -qE 'Stale|Input/output' <<<\"\$got\"; } || { echo \"read: \${got:0:120}\"; false; }"
exec {held}<&-
check "the deleted snapshot's view is gone" eval "! fs test -e \"$MNT/held@keep.raw\" ||
	{ sleep 1.5; ! fs test -e \"$MNT/held@keep.raw\"; }"
check "the active view shows the new data" expect_same_as_qemu "$SRC/held.qcow2" "$MNT/held.raw"

check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"

# ---- repair drops the bad entry ----

for how in misalign huge; do
	img=$SRC/bad-$how.qcow2
	check "bad entry ($how): check --repair alone keeps the entry" \
		eval "\"$QCOWCTL\" check --repair \"$img\" >/dev/null 2>&1;
		      qemu-img snapshot -l \"$img\" | grep -q broken"
	check "bad entry ($how): check --repair --drop-bad-snapshots drops it" \
		eval "\"$QCOWCTL\" check --repair --drop-bad-snapshots \"$img\" >/dev/null 2>&1;
		      output_lacks broken qemu-img snapshot -l \"$img\""
	check "bad entry ($how): qemu-img check is clean after the repair" qemu-img check "$img"
	check "bad entry ($how): the good snapshot is intact after the repair" \
		eval "a=\$(tmpfile .now.raw); b=\$(tmpfile .before.raw);
		      qemu-img convert -l snapshot.name=good -O raw \"$img\" \$a &&
		      qemu-img convert -l snapshot.name=good -O raw \"$WORK/orig-$how.qcow2\" \$b &&
		      cmp \$a \$b"
done

finish

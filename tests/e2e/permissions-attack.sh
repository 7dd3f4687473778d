#!/bin/bash
# permissions-attack.sh - a second user of the host tries, through a mount by root with
# allow_other, to read what the source files do not let them read: POSIX ACLs that
# deny what the mode bits allow (on an image, on a directory above it), and a user who owns a
# directory in SOURCE swapping a file or a directory of it for a symlink to someone else's image
# while holding a view or directory of the mount (an O_PATH descriptor reopened through /proc).
# Two test users are added for the test and removed in the trap.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root "adds users"
require_cmd useradd userdel groupadd groupdel usermod setpriv getent

U1=qfsatk$$a
U2=qfsatk$$b
G=qfsatkg$$
add_test_user "$U1"
add_test_user "$U2"
UID1=$(id -u "$U1") && GID1=$(id -g "$U1") && UID2=$(id -u "$U2") && GID2=$(id -g "$U2") ||
	bail "no uids"
PY=$(command -v python3)
case $PY in /usr/*) ;; *) PY=/usr/bin/python3 ;; esac # the users cannot run root's shims
[ -x "$PY" ] || missing_prereq /usr/bin/python3

chmod 0755 "$WORK"
SRC=$WORK/src
MNT=$WORK/mnt
mkdir -p "$SRC/acldir" "$SRC/alice/sub" "$SRC/bob/pub"
chmod 0755 "$SRC" "$SRC/acldir" "$SRC/bob/pub"
chown "$UID1:$GID1" "$SRC/alice" "$SRC/alice/sub"
chown "$UID2:$GID2" "$SRC/bob" "$SRC/bob/pub"
chmod 0700 "$SRC/bob"
cd "$SRC" || exit 1

# as U1|U2 COMMAND...: run COMMAND as a test user (no supplementary groups of root's)
as()
{
	local u=$1
	shift
	if [ "$u" = 1 ]; then
		fs setpriv --reuid="$UID1" --regid="$GID1" --init-groups "$@"
	else
		fs setpriv --reuid="$UID2" --regid="$GID2" --init-groups "$@"
	fi
}

# reads VIEW: the user reads the first bytes of VIEW; cannot_read VIEW: open(2) fails
user_reads() { as "$1" head -c 4096 "$2" >/dev/null; }
cannot_read()
{
	local got
	got=$(as "$1" "$PY" "$E2E_HELPER" open "$2" r)
	[ "$got" = EACCES ] || { echo "open($2) as user $1: got $got, want EACCES"; return 1; }
}

# top_has_no_data IMAGE: qemu-img map shows no data in IMAGE's own layer (depth 0)
top_has_no_data()
{
	qemu-img map -U --output=json "$1" | "$PY" -c '
import json, sys
own = [e for e in json.load(sys.stdin) if e["depth"] == 0 and e["data"]]
sys.exit("data in the top layer: %s" % own if own else 0)'
}

# ---- the source ----
# acl.qcow2: mode 0644, but an ACL keeps U1 out (user:U1:---)
setup qemu-img create -q -f qcow2 acl.qcow2 1M
chmod 0644 acl.qcow2
ACL_OK=1
set_acl acl.qcow2 6 4 4 "$UID1" 0 2>/dev/null || ACL_OK=0
# acldir/d.qcow2: mode 0644 in a 0755 directory whose ACL keeps U1 out
setup qemu-img create -q -f qcow2 acldir/d.qcow2 1M
chmod 0644 acldir/d.qcow2
[ $ACL_OK = 1 ] && set_acl acldir 7 5 5 "$UID1" 0
# acltop.qcow2 (0644) over aclbase.qcow2 (0644 with an ACL keeping U1 out)
setup qemu-img create -q -f qcow2 aclbase.qcow2 1M
setup qemu-img create -q -f qcow2 -b aclbase.qcow2 -F qcow2 acltop.qcow2
chmod 0644 aclbase.qcow2 acltop.qcow2
[ $ACL_OK = 1 ] && set_acl aclbase.qcow2 6 4 4 "$UID1" 0
if [ $ACL_OK = 1 ]; then
	check "the source: U1 cannot read acl.qcow2" _e2e_negate as 1 head -c 1 acl.qcow2
	check "the source: U2 reads acl.qcow2" as 2 head -c 1 acl.qcow2
fi
# bob/vm.qcow2: U2's, 0644, but bob/ is 0700: U1 cannot read it
setup qemu-img create -q -f qcow2 bob/vm.qcow2 1M
setup qio bob/vm.qcow2 "write -P 0x62 0 64k"
chmod 0644 bob/vm.qcow2
chown "$UID2:$GID2" bob/vm.qcow2
setup qemu-img create -q -f qcow2 bob/pub/p.qcow2 1M
setup qio bob/pub/p.qcow2 "write -P 0x63 0 64k"
chmod 0644 bob/pub/p.qcow2
# alice/top.qcow2, alice/sub/s.qcow2: U1's own images in U1's own directories; alice/araw.img
# a raw backing file of U1's (under alice/over.qcow2)
setup qemu-img create -q -f qcow2 alice/top.qcow2 1M
setup qemu-img create -q -f qcow2 alice/sub/s.qcow2 1M
setup qemu-img create -q -f raw alice/araw.img 1M
setup qemu-img create -q -f qcow2 -b araw.img -F raw alice/over.qcow2
chown "$UID1:$GID1" alice/top.qcow2 alice/sub/s.qcow2 alice/araw.img alice/over.qcow2
chmod 0644 alice/top.qcow2 alice/sub/s.qcow2 alice/araw.img alice/over.qcow2
# bob/raw.img: U2's raw file, 0644 in the 0700 bob/
setup qemu-img create -q -f raw bob/raw.img 1M
setup qio_raw bob/raw.img "write -P 0x64 0 64k"
chown "$UID2:$GID2" bob/raw.img
chmod 0644 bob/raw.img
# alice/leak.qcow2: U1's own image over root's 0600 raw file: a write through the view would
# copy the rest of the cluster from the backing file into U1's image, which U1 reads
setup qemu-img create -q -f raw rootsecret.img 1M
setup qio_raw rootsecret.img "write -P 0x66 0 64k"
chmod 0600 rootsecret.img
setup qemu-img create -q -f qcow2 -b ../rootsecret.img -F raw alice/leak.qcow2
chown "$UID1:$GID1" alice/leak.qcow2
chmod 0644 alice/leak.qcow2
setup qemu-img convert -O raw alice/leak.qcow2 "$WORK/leak.before"
# alice/dimg.qcow2: U1's image whose external data file is root's 0600 rd.data (in U1's
# directory); md.data: U1's own file of the same size
(cd alice && setup qemu-img create -q -f qcow2 -o data_file=rd.data dimg.qcow2 1M &&
	setup qio dimg.qcow2 "write -P 0x68 0 64k") || bail "cannot make alice/dimg.qcow2"
setup qemu-img create -q -f raw alice/md.data 1M
chown "$UID1:$GID1" alice/dimg.qcow2 alice/md.data
chmod 0644 alice/dimg.qcow2 alice/md.data
chmod 0600 alice/rd.data
# alice/vm.qcow2: root's 0600 image in U1's directory (provisioned there for U1's VM, say)
setup qemu-img create -q -f qcow2 alice/vm.qcow2 1M
setup qio alice/vm.qcow2 "write -P 0x65 0 64k"
chmod 0600 alice/vm.qcow2
check "the source: U1 cannot read bob/vm.qcow2" _e2e_negate as 1 head -c 1 bob/vm.qcow2
# books.qcow2: root's 0600 image with an internal snapshot whose name only readers may know
setup qemu-img create -q -f qcow2 books.qcow2 1M
setup qemu-img snapshot -c before-layoffs books.qcow2
chmod 0600 books.qcow2

# ---- held: cases that give nothing away (checked so that they stay so) ----
add_test_group "$G"
setup usermod -aG "$G" "$U1" # a supplementary group of U1's, not U2's
mkdir -p held/priv held/sgid
chmod 0755 held
chmod 0700 held/priv
chgrp "$G" held/sgid
chmod 2770 held/sgid # setgid: images made in it get group G
# a raw backing file 0644 in a 0700 directory, under a 0644 overlay outside it
setup qemu-img create -q -f raw held/priv/r.img 1M
setup qemu-img create -q -f qcow2 -b priv/r.img -F raw held/overr.qcow2
# a backing file reached through a symlink in a 0700 directory: its real place is readable
setup qemu-img create -q -f qcow2 held/b.qcow2 1M
ln -s ../b.qcow2 held/priv/lnk.qcow2
setup qemu-img create -q -f qcow2 -b priv/lnk.qcow2 -F qcow2 held/vialink.qcow2
# a 0644 image of a 0700 directory hard-linked into a 0755 one; a 0600 image hard-linked
setup qemu-img create -q -f qcow2 held/priv/h.qcow2 1M
ln held/priv/h.qcow2 held/hardlink.qcow2
setup qemu-img create -q -f qcow2 held/s600.qcow2 1M
ln held/s600.qcow2 held/s600link.qcow2
# an image whose group is G (0640), and one made in the setgid directory
setup qemu-img create -q -f qcow2 held/grp.qcow2 1M
chgrp "$G" held/grp.qcow2
setup qemu-img create -q -f qcow2 held/sgid/g.qcow2 1M
# an image with its data in an external data file, both 0644
(cd held && setup qemu-img create -q -f qcow2 -o data_file=df.data df.qcow2 1M &&
	setup qio df.qcow2 "write -P 0x67 0 64k") || bail "cannot make held/df.qcow2"
# a qcow2 file named as a raw backing file (-F raw): its bytes are the layer, its own backing
# file (0600) is not part of the chain
setup qemu-img create -q -f qcow2 held/deep.qcow2 1M
setup qemu-img create -q -f qcow2 -b deep.qcow2 -F qcow2 held/asraw.qcow2
setup qemu-img create -q -f qcow2 -b asraw.qcow2 -F raw held/overq.qcow2
chmod 0600 held/deep.qcow2
chmod 0644 held/asraw.qcow2 held/overq.qcow2
chmod 0644 held/priv/r.img held/overr.qcow2 held/b.qcow2 held/vialink.qcow2 held/priv/h.qcow2 \
	held/df.qcow2 held/df.data
chmod 0600 held/s600.qcow2
chmod 0640 held/grp.qcow2 held/sgid/g.qcow2

mount_qcowfs "$SRC" "$MNT" -o allow_other || bail "mount -o allow_other failed"

# reads_as SRC_FILE VIEW U: user U reads VIEW exactly where U reads SRC_FILE in the source
reads_as()
{
	local src_ok=no view_ok=no
	as "$3" head -c 1 "$1" >/dev/null 2>&1 && src_ok=yes
	[ "$1" = - ] && src_ok=$4
	as "$3" head -c 1 "$2" >/dev/null 2>&1 && view_ok=yes
	[ "$src_ok" = "$view_ok" ] || { echo "user $3: source $src_ok, view $view_ok"; return 1; }
}
for u in 1 2; do
	check "held: U$u reads overr.raw (0644 over a 0644 raw file in a 0700 dir): no" \
		reads_as - "$MNT/held/overr.raw" $u no
	check "held: U$u reads vialink.raw (backing through a link in a 0700 dir): yes" \
		reads_as - "$MNT/held/vialink.raw" $u yes
	check "held: U$u reads hardlink.raw as the source's hard link" \
		reads_as held/hardlink.qcow2 "$MNT/held/hardlink.raw" $u
	check "held: U$u reads s600link.raw as the source's hard link" \
		reads_as held/s600link.qcow2 "$MNT/held/s600link.raw" $u
	check "held: U$u reads grp.raw (group G, 0640) as the source" \
		reads_as held/grp.qcow2 "$MNT/held/grp.raw" $u
	check "held: U$u reads sgid/g.raw (setgid directory) as the source" \
		reads_as held/sgid/g.qcow2 "$MNT/held/sgid/g.raw" $u
	check "held: U$u reads priv/r.img (0644 raw in a 0700 dir): no" \
		reads_as held/priv/r.img "$MNT/held/priv/r.img" $u
done
check "held: U1 reads df.raw (external data file) as qemu-img does" \
	bash -c "cd held && qemu-img convert -U -O raw df.qcow2 '$WORK/df.exp' &&
		setpriv --reuid=$UID1 --regid=$GID1 --init-groups cat '$MNT/held/df.raw' |
		cmp - '$WORK/df.exp'"
check "held: U2 cannot list priv/ (0700)" _e2e_negate as 2 ls "$MNT/held/priv"
check "held: U1 reads overq.raw (over a qcow2 file taken as raw) as qemu-img does" \
	bash -c "cd held && qemu-img convert -U -O raw overq.qcow2 '$WORK/overq.exp' &&
		setpriv --reuid=$UID1 --regid=$GID1 --init-groups cat '$MNT/held/overq.raw' |
		cmp - '$WORK/overq.exp'"
setup qemu-img convert -O raw held/hardlink.qcow2 "$WORK/b.before"
# a reader of hardlink.raw (a writable view, 0644: root writes it) tries every other way to
# change it: each is refused
check "held: a reader of hardlink.raw cannot change it by any call" as 2 "$PY" -c '
import errno, mmap, os, sys
v = sys.argv[1]
fd = os.open(v, os.O_RDONLY)
tries = {
    "open O_RDONLY|O_TRUNC": lambda: os.open(v, os.O_RDONLY | os.O_TRUNC),
    "open O_WRONLY": lambda: os.open(v, os.O_WRONLY),
    "reopen O_RDWR through /proc": lambda: os.open("/proc/self/fd/%d" % fd, os.O_RDWR),
    "fallocate": lambda: os.posix_fallocate(fd, 0, 4096),
    "ftruncate": lambda: os.ftruncate(fd, 2 << 20),
    "truncate by name": lambda: os.truncate(v, 2 << 20),
    "pwrite": lambda: os.pwrite(fd, b"x", 0),
    "mmap shared writable": lambda: mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_WRITE),
    "setxattr": lambda: os.setxattr(v, "user.x", b"1"),
    "chmod": lambda: os.chmod(v, 0o666),
}
bad = []
for name, f in tries.items():
    try:
        f()
        bad.append(name)
    except OSError:
        pass
sys.exit("allowed: %s" % ", ".join(bad) if bad else 0)' "$MNT/held/hardlink.raw"
check "held: hardlink.qcow2 kept its bytes and size" \
	bash -c "qemu-img convert -U -O raw held/b.qcow2 '$WORK/b.after' && cmp '$WORK/b.before' '$WORK/b.after'"

# ---- POSIX ACLs ----
if [ $ACL_OK = 1 ]; then
	check "acl.raw (0644, ACL user:U1:---): U1 cannot read it" cannot_read 1 "$MNT/acl.raw"
	check "acl.raw: mode 0600 (an ACL is taken conservatively)" \
		bash -c "[ \"\$(stat -c %a '$MNT/acl.raw')\" = 600 ]"
	check "acldir/ (0755, ACL user:U1:---): U1 cannot list it" \
		_e2e_negate as 1 ls "$MNT/acldir"
	check "acldir/d.raw: U1 cannot read it" cannot_read 1 "$MNT/acldir/d.raw"
	check "acltop.raw (its backing file's ACL keeps U1 out): U1 cannot read it" \
		cannot_read 1 "$MNT/acltop.raw"
	check "root reads acl.raw" expect_same_as_qemu acl.qcow2 "$MNT/acl.raw"
else
	echo "# no POSIX ACLs on this file system: the ACL checks are skipped"
fi

# ---- write-only: a partial write copies from the backing file ----
check "alice/leak.raw (U1's image over root's 0600 raw file): U1 cannot open it write-only" \
	bash -c "[ \"\$(setpriv --reuid=$UID1 --regid=$GID1 --init-groups \
		'$PY' '$E2E_HELPER' open '$MNT/alice/leak.raw' w)\" = EACCES ]"
as 1 dd if=/dev/zero of="$MNT/alice/leak.raw" bs=512 count=1 conv=notrunc,fsync status=none \
	2>/dev/null
check "alice/leak.qcow2 has no data of its own (nothing copied up)" top_has_no_data alice/leak.qcow2

# ---- snapshot names are the image's content ----
# U1 sees books.qcow2 in the source directory, as books.raw in the mount, but may not read the
# image: nor its snapshot table, nor its snapshot names.
check "U1 lists books.raw" bash -c "setpriv --reuid=$UID1 --regid=$GID1 --init-groups \
	ls '$MNT' | grep -qx books.raw"
# lists_no_snapshot_name U DIR: user U lists DIR (the listing itself must work: a negated
# `ls | grep` passed when ls failed) and no name in it has an '@'
lists_no_snapshot_name()
{
	local out
	out=$(as "$1" ls "$2") || { echo "ls $2 as user $1 failed"; return 1; }
	! grep -F '@' <<<"$out"
}
check "U1 does not list the snapshot names of books.qcow2 (0600)" lists_no_snapshot_name 1 "$MNT"
check "U1 cannot look the snapshot view up by name" \
	_e2e_negate as 1 stat "$MNT/books@before-layoffs.raw"
check "root lists the snapshot view" bash -c "ls '$MNT' | grep -qx 'books@before-layoffs.raw'"
check "root still stats it after U1 tried" stat "$MNT/books@before-layoffs.raw"

# ---- a symlink swapped in while a view is held ----
# U1 opens an O_PATH descriptor of a view (or directory) of their own, swaps the source for a
# symlink to bob's image (or directory), then reopens the descriptor through /proc.
SWAP='
import os, sys
view, src, target, mode = sys.argv[1:5]
fd = os.open(view, os.O_PATH)
os.rename(src, src + ".old")
os.symlink(target, src)
try:
    if mode == "dir":
        names = os.listdir("/proc/self/fd/%d" % fd)
        print("listed %s" % names)
        f = os.open("/proc/self/fd/%d/%s" % (fd, names[0]), os.O_RDONLY)
    else:
        f = os.open("/proc/self/fd/%d" % fd, os.O_RDONLY)
    print("read %r" % os.pread(f, 4, 0))
    sys.exit(1)
except OSError as e:
    print("refused: %s" % e)
finally:
    os.unlink(src)
    os.rename(src + ".old", src)
'
check "top.raw swapped for a link to bob/vm.qcow2: U1 cannot read it" \
	as 1 "$PY" -c "$SWAP" "$MNT/alice/top.raw" "$SRC/alice/top.qcow2" "$SRC/bob/vm.qcow2" file
check "alice/sub/ swapped for a link to bob/pub/: U1 cannot read bob's image" \
	as 1 "$PY" -c "$SWAP" "$MNT/alice/sub" "$SRC/alice/sub" "$SRC/bob/pub" dir
check "araw.img (raw) swapped for a link to bob/raw.img: U1 cannot read it" \
	as 1 "$PY" -c "$SWAP" "$MNT/alice/araw.img" "$SRC/alice/araw.img" "$SRC/bob/raw.img" file
check "alice/top.raw is still U1's" user_reads 1 "$MNT/alice/top.raw"

# ---- a file replaced by a rename while its view is open ----
# Root holds the view of root's 0600 alice/vm.qcow2 open. U1, who owns alice/, moves the image
# aside and puts an image of their own in its place: U1 may read the new file, but must not be
# served the chain that is open, of root's file.
SWAPFILE='
import os, subprocess, sys
view, src, mine = sys.argv[1:4]
os.rename(src, src + ".old")
os.rename(mine, src)
try:
    f = os.open(view, os.O_RDONLY)
    data = os.pread(f, 4, 0)
    print("read %r" % data)
    sys.exit(1 if data == b"eeee" else 0)
except OSError as e:
    print("refused: %s" % e)
finally:
    os.rename(src, mine)
    os.rename(src + ".old", src)
'
exec {held}<"$MNT/alice/vm.raw" || bail "root cannot open alice/vm.raw"
check "alice/vm.raw (root 0600), open by root: U1 cannot read it" cannot_read 1 "$MNT/alice/vm.raw"
check "alice/vm.qcow2 renamed away and U1's image in its place: U1 is not served root's" \
	as 1 "$PY" -c "$SWAPFILE" "$MNT/alice/vm.raw" "$SRC/alice/vm.qcow2" "$SRC/alice/top.qcow2"
check "root's descriptor still reads root's image" \
	bash -c "head -c 4 <&$held | cmp - <(printf eeee)"
exec {held}<&-

# Root holds the view of alice/dimg.qcow2 open (its data in root's rd.data). U1, who owns the
# image, points its header at md.data instead: U1 may read the image and md.data, but must not
# be served the open chain, which reads rd.data.
exec {held}<"$MNT/alice/dimg.raw" || bail "root cannot open alice/dimg.raw"
check "alice/dimg.raw (data in root's 0600 rd.data): U1 cannot read it" \
	cannot_read 1 "$MNT/alice/dimg.raw"
check "U1 points the header of dimg.qcow2 at md.data" as 1 "$PY" -c '
import sys
f = open(sys.argv[1], "r+b")
head = f.read(65536)
at = head.find(b"rd.data")
if at < 0:
    sys.exit("no data file name in the header")
f.seek(at)
f.write(b"md.data")' "$SRC/alice/dimg.qcow2"
check "U1 is not served root's rd.data through the open chain" as 1 "$PY" -c '
import os, sys
try:
    f = os.open(sys.argv[1], os.O_RDONLY)
    data = os.pread(f, 4, 0)
    print("read %r" % data)
    sys.exit(1 if data == b"hhhh" else 0)
except OSError as e:
    print("refused: %s" % e)' "$MNT/alice/dimg.raw"
exec {held}<&-
check "U2 reads bob/vm.raw" user_reads 2 "$MNT/bob/vm.raw"

check "the daemon exits cleanly" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon's log" log_clean "$QCOWFS_LOG"

# ---- the blocks a file system keeps for root ----
# U1's image on a small ext4 file system with a large root reserve: U1's writes to the image
# file stop where the reserve begins, and so must U1's writes through its view (the daemon
# writes as root, which may use the reserve). Needs a loop device.
if command -v mkfs.ext4 >/dev/null && losetup -f >/dev/null 2>&1; then
	FSIMG=$WORK/res.ext4
	RES=$WORK/res
	setup truncate -s 64M "$FSIMG"
	setup mkfs.ext4 -q -F -m 50 "$FSIMG"
	DEV=$(losetup -f --show "$FSIMG") || bail "losetup failed"
	track_loop "$DEV"
	mkdir -p "$RES"
	setup mount -t ext4 "$DEV" "$RES"
	track_kmount "$RES"
	mkdir -p "$RES/src/u1"
	chmod 0755 "$RES" "$RES/src"
	chown "$UID1:$GID1" "$RES/src/u1"
	setup qemu-img create -q -f qcow2 "$RES/src/u1/big.qcow2" 256M
	chown "$UID1:$GID1" "$RES/src/u1/big.qcow2"
	chmod 0644 "$RES/src/u1/big.qcow2"
	# free blocks the reserve holds: what root may use and U1 may not
	reserved() { "$PY" -c 'import os, sys; v = os.statvfs(sys.argv[1]); print(v.f_bfree - v.f_bavail)' "$RES"; }
	RESERVED=$(reserved)
	check "the source: U1's own writes stop at the reserve (ENOSPC)" \
		_e2e_negate as 1 dd if=/dev/zero of="$RES/src/u1/probe" bs=1M count=64 status=none
	rm -f "$RES/src/u1/probe"
	MNTR=$WORK/mnt-res
	mount_qcowfs "$RES/src" "$MNTR" -o allow_other || bail "mount of the small file system failed"
	OUT=$WORK/res-fill.out
	as 1 "$PY" "$E2E_HELPER" fill "$MNTR/u1/big.raw" 1048576 9 128M >"$OUT" 2>&1
	check "U1's writes through the view fail with ENOSPC too" grep -qx "error ENOSPC" "$OUT" ||
		sed 's/^/#   /' "$OUT"
	check "U1's writes left the root reserve alone" \
		bash -c "[ \$('$PY' -c 'import os; print(os.statvfs(\"$RES\").f_bfree)') -ge $RESERVED ]"
	check "the daemon is still alive" daemon_alive "$MNTR"
	check "the daemon exits cleanly (small file system)" umount_qcowfs "$MNTR"
	check "big.qcow2 is not corrupt" image_not_corrupt "$RES/src/u1/big.qcow2"
else
	echo "# no loop device: the root reserve checks are skipped"
fi
finish

#!/bin/bash
# permissions.sh - who may read and write the views, checked as a real second user
# (added for the test, removed in the trap). The mount uses the kernel's permission checks
# (default_permissions); a view's owner and group are its image file's, and its mode is never
# more than its chain grants: readable by a class only if every member of the class could read
# every file of the chain and reach it (search permission on every directory above it),
# writable only for a writable leaf and only by the classes the image file grants write to.
# Snapshot views and raw backing files follow the same rule. A directory of the mount is no more
# open than its source directory. Mode changes of a source file show at the next lookup.
# Without allow_other, other users get nothing at all; -o no_default_permissions is refused with
# allow_other and works without it.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root "adds a user"
require_cmd useradd userdel setpriv findmnt

TUSER=qfsperm$$
add_test_user "$TUSER"
TUID=$(id -u "$TUSER") && TGID=$(id -g "$TUSER") || bail "no uid for $TUSER"

# The test user must reach SOURCE and the mount point like any user of the host would.
chmod 0755 "$WORK"
SRC=$WORK/src
MNT=$WORK/mnt
mkdir -p "$SRC/private" "$SRC/open"
chmod 0755 "$SRC" "$SRC/open"
chmod 0700 "$SRC/private"
cd "$SRC" || exit 1

# as_user COMMAND...: run COMMAND as the test user (no supplementary groups of root's).
as_user()
{
	fs setpriv --reuid="$TUID" --regid="$TGID" --init-groups "$@"
}

# user_reads VIEW: the test user can read VIEW whole, and it holds what qemu-img shows of IMAGE.
user_reads_as_qemu()
{
	local img=$1 view=$2 exp got
	exp=$(tmpfile .raw)
	got=$(tmpfile .raw)
	qemu-img convert -U -O raw "$img" "$exp" || return 1
	as_user cat "$view" >"$got" || { echo "the test user cannot read $view"; return 1; }
	cmp "$exp" "$got"
}

# user_open_fails VIEW ERRNO MODE...: every open of VIEW by the test user fails with ERRNO.
user_open_fails()
{
	local f=$1 want=$2 m got rc=0 i=0
	local -a res
	shift 2
	mapfile -t res < <(as_user python3 "$E2E_HELPER" open "$f" "$@")
	for m in "$@"; do
		got=${res[i]:-"(no answer)"}
		i=$((i + 1))
		if [ "$got" != "$want" ]; then
			echo "open($f, $m) as $TUSER: got $got, want $want"
			rc=1
		fi
	done
	return $rc
}

# expect_attr FILE MODE OWNER GROUP: octal mode and owner of FILE.
expect_attr()
{
	local got
	got=$(fs stat -c '%a %U %G' "$1") || return 1
	[ "$got" = "$2 $3 $4" ] || { echo "$1: got '$got', want '$2 $3 $4'"; return 1; }
}

# same_image_bytes IMAGE SAVED: the image's flat content is still SAVED (qemu-img convert).
same_image_bytes()
{
	local now
	now=$(tmpfile .raw)
	qemu-img convert -U -O raw "$1" "$now" || return 1
	cmp "$2" "$now"
}

# image_size_is IMAGE BYTES: qemu-img's virtual size of IMAGE.
image_size_is()
{
	local got
	got=$(virtual_size "$1") || return 1
	[ "$got" = "$2" ] || { echo "$1: virtual size $got, want $2"; return 1; }
}

# ---- the source ----
# secret.qcow2: root's, 0600, with an internal snapshot
setup qemu-img create -q -f qcow2 secret.qcow2 1M
setup qio secret.qcow2 "write -P 0x51 0 64k"
setup qemu-img snapshot -c s1 secret.qcow2
chmod 0600 secret.qcow2
setup qemu-img convert -O raw secret.qcow2 "$WORK/secret.before"
# rawsecret.img: a raw backing file, 0600, under a 0644 overlay
setup qemu-img create -q -f raw rawsecret.img 1M
setup qio_raw rawsecret.img "write -P 0x52 0 64k"
setup qemu-img create -q -f qcow2 -b rawsecret.img -F raw overraw.qcow2
chmod 0600 rawsecret.img
chmod 0644 overraw.qcow2
# hb.qcow2 (0600) backs ht.qcow2 (0644)
setup qemu-img create -q -f qcow2 hb.qcow2 1M
setup qio hb.qcow2 "write -P 0x53 0 64k"
setup qemu-img create -q -f qcow2 -b hb.qcow2 -F qcow2 ht.qcow2
chmod 0600 hb.qcow2
chmod 0644 ht.qcow2
# dfimg.qcow2 (0644) keeps its data in an external data file df.data (0600)
setup qemu-img create -q -f qcow2 -o data_file=df.data dfimg.qcow2 1M
setup qio dfimg.qcow2 "write -P 0x5a 0 64k"
chmod 0644 dfimg.qcow2
chmod 0600 df.data
# pub: a 0644 chain, its top with a snapshot
setup qemu-img create -q -f qcow2 pubbase.qcow2 1M
setup qio pubbase.qcow2 "write -P 0x54 0 64k"
setup qemu-img create -q -f qcow2 -b pubbase.qcow2 -F qcow2 pub.qcow2
setup qio pub.qcow2 "write -P 0x55 32k 4k"
setup qemu-img snapshot -c s1 pub.qcow2
chmod 0644 pubbase.qcow2 pub.qcow2
setup qemu-img convert -O raw pub.qcow2 "$WORK/pub.before"
# pubraw.img: a 0644 raw backing file
setup qemu-img create -q -f raw pubraw.img 1M
setup qio_raw pubraw.img "write -P 0x56 0 64k"
setup qemu-img create -q -f qcow2 -b pubraw.img -F raw overpub.qcow2
chmod 0644 pubraw.img overpub.qcow2
# mine.qcow2: the test user's own image, 0600, over a 0644 base of root's
setup qemu-img create -q -f qcow2 -b pubbase.qcow2 -F qcow2 mine.qcow2
setup qio mine.qcow2 "write -P 0x57 64k 4k"
chown "$TUID:$TGID" mine.qcow2
chmod 0600 mine.qcow2
# group.qcow2: root's, the test user's group may read it (0640), over the 0644 base
setup qemu-img create -q -f qcow2 -b pubbase.qcow2 -F qcow2 group.qcow2
chown "0:$TGID" group.qcow2
chmod 0640 group.qcow2
# frozen.qcow2: no write bit for anyone (0444): its view is read-only, even for root
setup qemu-img create -q -f qcow2 frozen.qcow2 1M
chmod 0444 frozen.qcow2
# private/p.qcow2: 0644, but in a 0700 directory; open/o.qcow2 backs onto it
setup qemu-img create -q -f qcow2 private/p.qcow2 1M
setup qio private/p.qcow2 "write -P 0x58 0 64k"
setup qemu-img create -q -f qcow2 -b ../private/p.qcow2 -F qcow2 open/o.qcow2
chmod 0644 private/p.qcow2 open/o.qcow2
# private/u.qcow2: the test user's, 0600, where the test user cannot reach it: no one may
# write its view (no write bit left), so not even root writes through it
setup qemu-img create -q -f qcow2 private/u.qcow2 1M
chown "$TUID:$TGID" private/u.qcow2
chmod 0600 private/u.qcow2

ROOT=root
RGRP=$(id -gn 0)

# ---- mounted with allow_other ----
mount_qcowfs "$SRC" "$MNT" -o allow_other || bail "mount -o allow_other failed"
check "the mount uses default_permissions" \
	bash -c "findmnt -no OPTIONS '$MNT' | tr , '\\n' | grep -qx default_permissions"

check "secret.raw (image 0600): mode 0600, root's" expect_attr "$MNT/secret.raw" 600 "$ROOT" "$RGRP"
check "secret.raw: the test user cannot read it" user_open_fails "$MNT/secret.raw" EACCES r
check "secret.raw: the test user cannot write it" user_open_fails "$MNT/secret.raw" EACCES w rw
check_not "secret.raw: a write by the test user is refused" \
	as_user dd if=/dev/zero of="$MNT/secret.raw" bs=4k count=1 conv=notrunc status=none
check "secret.raw: the image still holds its bytes" same_image_bytes secret.qcow2 "$WORK/secret.before"
check "secret@s1.raw (snapshot of a 0600 image): mode 0400" \
	expect_attr "$MNT/secret@s1.raw" 400 "$ROOT" "$RGRP"
check "secret@s1.raw: the test user cannot read it, nor know its name" \
	user_open_fails "$MNT/secret@s1.raw" ENOENT r
check "root still reads secret.raw" expect_same_as_qemu secret.qcow2 "$MNT/secret.raw"

check "rawsecret.img (raw backing file 0600): mode 0400" \
	expect_attr "$MNT/rawsecret.img" 400 "$ROOT" "$RGRP"
check "rawsecret.img: the test user cannot read it" user_open_fails "$MNT/rawsecret.img" EACCES r
check "overraw.raw (0644 over a 0600 raw file): mode 0600" \
	expect_attr "$MNT/overraw.raw" 600 "$ROOT" "$RGRP"
check "overraw.raw: the test user cannot read it" user_open_fails "$MNT/overraw.raw" EACCES r

check "ht.raw (0644 over a 0600 qcow2): mode 0600" expect_attr "$MNT/ht.raw" 600 "$ROOT" "$RGRP"
check "ht.raw: the test user cannot read it" user_open_fails "$MNT/ht.raw" EACCES r
check "hb.raw (0600, a backing image): mode 0400" expect_attr "$MNT/hb.raw" 400 "$ROOT" "$RGRP"

check "dfimg.raw (0644, its data file 0600): mode 0600" \
	expect_attr "$MNT/dfimg.raw" 600 "$ROOT" "$RGRP"
check "dfimg.raw: the test user cannot read it" user_open_fails "$MNT/dfimg.raw" EACCES r
check "root reads dfimg.raw" expect_same_as_qemu dfimg.qcow2 "$MNT/dfimg.raw"

check "pub.raw (a 0644 chain): mode 0644" expect_attr "$MNT/pub.raw" 644 "$ROOT" "$RGRP"
check "pub.raw: the test user reads the chain" user_reads_as_qemu pub.qcow2 "$MNT/pub.raw"
check "pubbase.raw: mode 0444" expect_attr "$MNT/pubbase.raw" 444 "$ROOT" "$RGRP"
check "pubbase.raw: the test user reads it" user_reads_as_qemu pubbase.qcow2 "$MNT/pubbase.raw"
check "pub@s1.raw (snapshot of a 0644 chain): mode 0444" \
	expect_attr "$MNT/pub@s1.raw" 444 "$ROOT" "$RGRP"
check "pub@s1.raw: the test user reads it" \
	bash -c "qemu-img convert -U -O raw -l snapshot.name=s1 pub.qcow2 '$WORK/s1.raw' &&
		setpriv --reuid=$TUID --regid=$TGID --init-groups cat '$MNT/pub@s1.raw' | cmp - '$WORK/s1.raw'"
check "pub.raw: the test user cannot write it" user_open_fails "$MNT/pub.raw" EACCES w rw
check "pub.raw: the image still holds its bytes" same_image_bytes pub.qcow2 "$WORK/pub.before"
check "pubraw.img (raw backing file 0644): mode 0444" \
	expect_attr "$MNT/pubraw.img" 444 "$ROOT" "$RGRP"
check "overpub.raw: the test user reads it" user_reads_as_qemu overpub.qcow2 "$MNT/overpub.raw"

check "mine.raw (the test user's 0600 image): mode 0600, the test user's" \
	expect_attr "$MNT/mine.raw" 600 "$TUSER" "$TUSER"
check "mine.raw: the test user reads it" user_reads_as_qemu mine.qcow2 "$MNT/mine.raw"
check "mine.raw: the test user writes it" \
	as_user dd if="$WORK/pub.before" of="$MNT/mine.raw" bs=64k count=1 conv=notrunc,fsync status=none
check "mine.raw: the write landed in mine.qcow2" \
	bash -c "qemu-img convert -U -O raw mine.qcow2 '$WORK/mine.after' &&
		cmp -n 65536 '$WORK/pub.before' '$WORK/mine.after'"
check "mine.qcow2 is clean after the user's write" eventually image_clean mine.qcow2
# The daemon checks each open against the current modes, not only the kernel against those it
# has cached (for up to a second): reopening an O_PATH descriptor of the view through /proc
# right after the owner took away its own read permission fails.
check "the daemon checks opens against the current modes" as_user python3 -c '
import errno, os, sys
view, img = sys.argv[1], sys.argv[2]
fd = os.open(view, os.O_PATH)
os.chmod(img, 0)
try:
    os.close(os.open("/proc/self/fd/%d" % fd, os.O_RDONLY))
except OSError as e:
    sys.exit(0 if e.errno == errno.EACCES else "open: %s" % e)
sys.exit("opened the view of an image its owner may not read")' "$MNT/mine.raw" "$SRC/mine.qcow2"
chmod 0600 mine.qcow2
check "the daemon checks truncate by name against the current modes" as_user python3 -c '
import errno, os, sys
view, img = sys.argv[1], sys.argv[2]
fd = os.open(view, os.O_PATH)
os.chmod(img, 0o020)  # writable, but not by its owner
try:
    os.truncate("/proc/self/fd/%d" % fd, 2 << 20)
except OSError as e:
    sys.exit(0 if e.errno == errno.EACCES else "truncate: %s" % e)
sys.exit("grew the view of an image its owner may not write")' "$MNT/mine.raw" "$SRC/mine.qcow2"
chmod 0600 mine.qcow2
check "mine.qcow2 kept its size" image_size_is mine.qcow2 1048576

check "group.raw (0640, the test user's group): mode 0640" \
	expect_attr "$MNT/group.raw" 640 "$ROOT" "$TUSER"
check "group.raw: the test user reads it through the group" \
	user_reads_as_qemu group.qcow2 "$MNT/group.raw"
check "group.raw: the test user cannot write it" user_open_fails "$MNT/group.raw" EACCES w

check "frozen.raw (image 0444): mode 0444" expect_attr "$MNT/frozen.raw" 444 "$ROOT" "$RGRP"
check "frozen.raw: not even root opens it for writing" \
	expect_open_fails "$MNT/frozen.raw" EROFS w rw

check "private/ (source 0700): mode 0500" expect_attr "$MNT/private" 500 "$ROOT" "$RGRP"
check_not "private/: the test user cannot list it" as_user ls "$MNT/private"
check "private/p.raw: the test user cannot open it" user_open_fails "$MNT/private/p.raw" EACCES r
check "private/u.raw (its owner cannot reach it): mode 0000" \
	expect_attr "$MNT/private/u.raw" 0 "$TUSER" "$TUSER"
check "private/u.raw: root cannot open it for writing" \
	expect_open_fails "$MNT/private/u.raw" EROFS w rw
check "private/u.raw: root reads it" expect_same_as_qemu private/u.qcow2 "$MNT/private/u.raw"
check "open/o.raw (backing file in a 0700 directory): mode 0600" \
	expect_attr "$MNT/open/o.raw" 600 "$ROOT" "$RGRP"
check "open/o.raw: the test user cannot read it" user_open_fails "$MNT/open/o.raw" EACCES r
check "root reads open/o.raw" expect_same_as_qemu open/o.qcow2 "$MNT/open/o.raw"

# mode changes follow at the next lookup (entry timeout 0)
chmod 0600 pubbase.qcow2
check "after chmod 0600 of its base, pub.raw has mode 0600" expect_attr "$MNT/pub.raw" 600 "$ROOT" "$RGRP"
check "after chmod 0600 of its base, the test user cannot read pub.raw" \
	user_open_fails "$MNT/pub.raw" EACCES r
chmod 0644 pubbase.qcow2
check "after chmod 0644 again, the test user reads pub.raw" \
	user_reads_as_qemu pub.qcow2 "$MNT/pub.raw"
chmod 0700 "$SRC/open"
check "after chmod 0700 of its directory, the test user cannot list open/" \
	_e2e_negate as_user ls "$MNT/open"
chmod 0755 "$SRC/open"

check "the daemon exits cleanly" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon's log" log_clean "$QCOWFS_LOG"

# ---- mounted without allow_other: nothing for other users ----
MNT2=$WORK/mnt-private
mount_qcowfs "$SRC" "$MNT2" || bail "mount failed"
check "without allow_other: the test user cannot read even pub.raw" \
	user_open_fails "$MNT2/pub.raw" EACCES r
check "without allow_other: root reads pub.raw" expect_same_as_qemu pub.qcow2 "$MNT2/pub.raw"
check "without allow_other: the daemon exits cleanly" umount_qcowfs "$MNT2"

# ---- opting out of default_permissions ----
MNT3=$WORK/mnt-nodp
mkdir -p "$MNT3"
track_mount "$MNT3" # unmounted by the trap should the daemon mount it after all
check_not "-o allow_other,no_default_permissions is refused" \
	timeout 10 "$QCOWFS" -f -o allow_other,no_default_permissions "$SRC" "$MNT3"
check_not "... and nothing is mounted" mountpoint -q "$MNT3"
mount_qcowfs "$SRC" "$MNT3" -o no_default_permissions || bail "mount -o no_default_permissions failed"
check "-o no_default_permissions: no default_permissions on the mount" \
	output_lacks default_permissions findmnt -no OPTIONS "$MNT3"
check "-o no_default_permissions: root reads secret.raw" \
	expect_same_as_qemu secret.qcow2 "$MNT3/secret.raw"
check "-o no_default_permissions: the test user still cannot read" \
	user_open_fails "$MNT3/pub.raw" EACCES r
check "-o no_default_permissions: the daemon exits cleanly" umount_qcowfs "$MNT3"

finish

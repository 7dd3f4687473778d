#!/bin/bash
# fstab.sh - qcowfs under mount(8) and mount.fuse3, as the README's and the man page's fstab
# line uses it:
#   - `mount -T FSTAB MNT` of the line "SOURCE MNT fuse.qcowfs
#     defaults,nofail,x-systemd.automount,allow_other 0 0" mounts SOURCE (mount.fuse3 runs
#     `qcowfs SOURCE MNT -o rw,allow_other,dev,suid`, having kept nofail and x-systemd.* to
#     itself), as type fuse.qcowfs with allow_other; the view is `qemu-img convert`'s bytes and
#     writable; `umount MNT` ends the daemon;
#   - `mount -t fuse.qcowfs -o ro SOURCE MNT` mounts it read-only.
# mount(8) runs its helpers with a fixed PATH, so the test runs in a mount namespace of its own
# where a directory of that PATH (bind-mounted over) holds the built daemon as `qcowfs`: the
# machine's file systems and mounts are never touched.
if [ -z "${QCOWFS_FSTAB_NS:-}" ]; then
	if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null 2>&1; then
		exec unshare --mount --propagation private env QCOWFS_FSTAB_NS=1 bash "$0" "$@"
	fi
fi
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root "mount(8), and a mount namespace"
[ -n "${QCOWFS_FSTAB_NS:-}" ] || missing_prereq unshare
[ -x /sbin/mount.fuse3 ] || [ -x /usr/sbin/mount.fuse3 ] || missing_prereq mount.fuse3
require_cmd mount umount

SRC=$WORK/src
MNT=$WORK/mnt
mkdir -p "$SRC" "$MNT" "$WORK/bin"
setup qemu-img create -q -f qcow2 "$SRC/base.qcow2" 4M
setup qemu-io -c 'write -P 0x11 0 1M' "$SRC/base.qcow2"
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$SRC/top.qcow2"
setup qemu-io -c 'write -P 0x22 512k 1M' "$SRC/top.qcow2"
setup qemu-img convert -O raw "$SRC/top.qcow2" "$WORK/top.expected"

# The first directory of mount(8)'s helper PATH that exists gets the daemon (in this
# namespace only).
for BIN in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin; do
	[ -d "$BIN" ] && break
done
ln -s "$QCOWFS" "$WORK/bin/qcowfs"
setup mount --bind "$WORK/bin" "$BIN"
track_kmount "$BIN"

# the daemons of this test: any process whose command line holds $SRC
daemons_of_test()
{
	local p
	for p in /proc/[0-9]*; do
		tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "$SRC " && echo "${p#/proc/}"
	done
	return 0
}
kill_test_daemons()
{
	local p
	for p in $(daemons_of_test); do
		kill -KILL "$p" 2>/dev/null
	done
}
on_cleanup kill_test_daemons
track_mount "$MNT"

# mount_type MNT: the file system type and options of MNT ("fuse.qcowfs rw,...,allow_other")
mount_type()
{
	awk -v m="$1" '$5 == m { split($0, t, " - "); split(t[2], f, " "); print f[1], $6 "," f[3] }' \
		/proc/self/mountinfo
}

# unmounted_and_gone: umount MNT; within 10 s the daemon has exited and nothing is mounted
unmounted_and_gone()
{
	local i
	umount "$MNT" || return 1
	for ((i = 0; i < 100; i++)); do
		[ -z "$(daemons_of_test)" ] && ! mountpoint -q "$MNT" && return 0
		sleep 0.1
	done
	echo "after umount: daemons $(daemons_of_test), $(mount_type "$MNT")"
	return 1
}

# ---- the fstab line of the README and the man page
printf '%s %s fuse.qcowfs defaults,nofail,x-systemd.automount,allow_other 0 0\n' "$SRC" "$MNT" \
	>"$WORK/fstab"
check "mount -T FSTAB MNT mounts the fstab line" timeout 20 mount -T "$WORK/fstab" "$MNT"
check "it is a fuse.qcowfs mount with allow_other" \
	bash -c '[[ "$1" == "fuse.qcowfs "*allow_other* ]] || { echo "$1"; exit 1; }' _ \
	"$(mount_type "$MNT")"
check "the daemon got the options mount.fuse3 passes, without nofail and x-systemd.*" \
	bash -c 'ps -o args= -p "$1" | grep -qxF -- "qcowfs $2 $3 -o rw,allow_other,dev,suid" ||
		{ ps -o args= -p "$1"; exit 1; }' _ "$(daemons_of_test | head -n 1)" "$SRC" "$MNT"
check "the view is qemu-img's flat image" fs cmp "$MNT/top.raw" "$WORK/top.expected"
check "the leaf's view is writable" fs test -w "$MNT/top.raw"
check "umount ends the daemon" unmounted_and_gone

# ---- by hand, read-only
check "mount -t fuse.qcowfs -o ro SOURCE MNT" timeout 20 mount -t fuse.qcowfs -o ro "$SRC" "$MNT"
check "the view is qemu-img's flat image" fs cmp "$MNT/top.raw" "$WORK/top.expected"
check_not "the view is read-only" fs test -w "$MNT/top.raw"
check "umount ends the daemon" unmounted_and_gone

finish

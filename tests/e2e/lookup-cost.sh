#!/bin/bash
# lookup-cost.sh - a lookup of an unchanged image costs about one stat of its file, and what the
# daemon keeps in memory instead of asking again never hides a change:
# - over three lookups of one view (entry timeout 0: each stat(2) of the path is a lookup),
#   strace of the daemon sees the image file reached once per request (a stat(1) is a lookup,
#   sometimes a getattr too: at most 2 each), the directories above it and access(2) only on
#   the first lookup after a change: those answers are kept until what decides them changes;
# - a directory above the source made 0700, then 0755 again: the view's mode follows at the
#   next lookup (644 -> 600 -> 644), and so it does for an ACL set on that directory;
# - the image made immutable (chattr +i, where the file system has it): the daemon may no
#   longer write it, and the view shows no write bit at the next lookup; writable again after
#   chattr -i;
# - files changed under the mount: an image made, removed, renamed or resized (qemu-img) shows
#   at the next listing and lookup, with qemu-img's virtual size.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_cmd qemu-img strace
require_root "the daemon's own access (chattr) and the modes of a root-owned tree"

UP=$WORK/a/b
SRC=$UP/src
MNT=$WORK/mnt
mkdir -p "$SRC"
chmod 0755 "$WORK/a" "$UP" "$SRC"
for n in v w x; do
	setup mk_qcow2 "$SRC/$n.qcow2" 1M
done
chmod 0644 "$SRC"/*.qcow2
on_cleanup chmod 0700 "$WORK"
on_cleanup chattr -i "$SRC/v.qcow2"
chmod 0755 "$WORK"
# a change of the last two seconds is never kept (the kernel's coarse ctime): let them settle
sleep 3

mount_qcowfs "$SRC" "$MNT" || bail "mount failed"
check "the three views list" expect_listing "$MNT" v.raw w.raw x.raw
fs ls -l "$MNT" >/dev/null

# The daemon's file system calls over three lookups of v.raw, in $WORK/trace.
trace_lookups()
{
	local trace=$WORK/trace i spid
	: >"$trace"
	strace -f -qq -e trace=open,openat,openat2,stat,lstat,newfstatat,statx,access,faccessat,faccessat2 \
		-o "$trace" -p "$QCOWFS_PID" 2>/dev/null &
	spid=$!
	for ((i = 0; i < 100; i++)); do
		awk '$1 == "TracerPid:" && $2 != 0 { ok = 1 } END { exit !ok }' \
			"/proc/$QCOWFS_PID/status" && break
		sleep 0.1
	done
	fs stat "$MNT/v.raw" >/dev/null
	fs stat "$MNT/v.raw" >/dev/null
	fs stat "$MNT/v.raw" >/dev/null
	kill -INT "$spid" 2>/dev/null
	wait "$spid" 2>/dev/null
}

lookups_cost_one_stat()
{
	local trace=$WORK/trace n d
	trace_lookups
	n=$(grep -c "\"$SRC/v.qcow2\"" "$trace")
	if [ "$n" -lt 1 ] || [ "$n" -gt 6 ]; then
		echo "the image file was reached $n times over 3 stat(1) (want 1 to 6):"
		grep "\"$SRC/v.qcow2\"" "$trace" | head -n 10
		return 1
	fi
	# at most the first lookup after a change of a directory asks for it again, its stat and
	# its ACL ($WORK and the directories above it change as this test and others run: not
	# counted)
	for d in "$SRC" "$UP" "$WORK/a"; do
		n=$(grep -c "\"$d\"" "$trace")
		if [ "$n" -gt 2 ]; then
			echo "the directory $d was looked up $n times over 3 stat(1) of an unchanged image:"
			grep "\"$d\"" "$trace" | head -n 5
			return 1
		fi
	done
	if [ "$(grep -c 'access(' "$trace")" -gt 1 ]; then
		echo "access(2) was asked more than once over 3 stat(1) of an unchanged image:"
		grep 'access(' "$trace" | head -n 5
		return 1
	fi
}
check "three lookups of an unchanged image: one stat each, directories above and access(2) only after a change" \
	lookups_cost_one_stat

check "v.raw: 644 (every directory above is 0755)" view_mode_is "$MNT/v.raw" 644
chmod 0700 "$WORK/a"
check "a directory above made 0700: v.raw is 600 at the next lookup" view_mode_is "$MNT/v.raw" 600
chmod 0755 "$WORK/a"
check "made 0755 again: v.raw is 644 at the next lookup" view_mode_is "$MNT/v.raw" 644
setup set_acl "$UP" 7 5 5 65534 0
check "an ACL on a directory above denies a named user: v.raw is 600 at the next lookup" \
	view_mode_is "$MNT/v.raw" 600
setup python3 -c 'import os, sys; os.removexattr(sys.argv[1], "system.posix_acl_access")' "$UP"
check "the ACL removed: v.raw is 644 again" view_mode_is "$MNT/v.raw" 644

if chattr +i "$SRC/v.qcow2" 2>/dev/null; then
	check "v.qcow2 made immutable: v.raw has no write bit at the next lookup" \
		expect_readonly_mode "$MNT/v.raw"
	chattr -i "$SRC/v.qcow2"
	check "writable again after chattr -i: v.raw is 644" view_mode_is "$MNT/v.raw" 644
fi

# files changed under the mount, each seen at the next listing and lookup
setup mk_qcow2 "$SRC/n.qcow2" 2M
check "an image made since shows" expect_listing "$MNT" n.raw v.raw w.raw x.raw
check "with qemu-img's virtual size" expect_size_as_qemu "$SRC/n.qcow2" "$MNT/n.raw"
rm -f "$SRC/w.qcow2"
check "an image removed goes" expect_listing "$MNT" n.raw v.raw x.raw
mv "$SRC/x.qcow2" "$SRC/y.qcow2"
check "an image renamed moves" expect_listing "$MNT" n.raw v.raw y.raw
check "x.raw is gone" expect_absent "$MNT/x.raw"
setup qemu-img resize -q "$SRC/y.qcow2" 3M
check "an image resized shows qemu-img's new size" expect_size_as_qemu "$SRC/y.qcow2" "$MNT/y.raw"
sleep 3 # the changes above settle (a ctime of the last two seconds is never kept)
check "the three lookups still cost one stat each" lookups_cost_one_stat

check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
finish

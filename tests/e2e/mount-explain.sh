#!/bin/bash
# mount-explain.sh - a mount that explains itself: /proc/mounts and df show the source
# (fsname=SOURCE, escaped as the kernel escapes it) and the type fuse.qcowfs; every view carries
# user.qcowfs.chain (its files, top first, one a line), user.qcowfs.mode ("rw", or "ro: " and
# the reason) and user.qcowfs.image, each reason made by its condition (backing file of another
# image, another process writing it, corrupt bit, -o ro, the image file's permissions, the
# caller's permissions, snapshot view, raw backing file); the attributes cannot be set or
# removed, and a user who may not read a view learns nothing of its chain. The status file
# .qcowfs-status.json is hidden from ls, reads as JSON naming the daemon and every refused or
# read-only image with its reason, its size right for stat and cat, and lists for another user
# only the files that user may read.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_cmd getfattr setfattr runuser df

# a source directory whose name the kernel and libfuse must escape
SRC="$WORK/my src,1"
MNT=$WORK/mnt
MNT2=$WORK/mnt-ro
mkdir -p "$SRC/priv"
chmod 0755 "$WORK" # another user reaches the mount point and SOURCE
cd "$SRC" || exit 1

setup qemu-img create -q -f qcow2 base.qcow2 4M
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
setup qemu-img snapshot -c s1 top.qcow2
setup qemu-img create -q -f qcow2 held.qcow2 1M
setup qemu-img create -q -f qcow2 frozen.qcow2 1M
chmod a-w frozen.qcow2
setup qemu-img create -q -f qcow2 rootonly.qcow2 1M
chmod 0644 rootonly.qcow2
setup qemu-img create -q -f raw rawbase.img 1M
setup qemu-img create -q -f qcow2 -b rawbase.img -F raw over.qcow2
# the corrupt bit (incompatible feature bit 1, header offset 72), as QEMU sets it
setup qemu-img create -q -f qcow2 bad.qcow2 1M
python3 - bad.qcow2 <<'PY' || bail "setting the corrupt bit failed"
import sys
with open(sys.argv[1], 'r+b') as f:
    f.seek(72)
    f.write((2).to_bytes(8, 'big'))
PY
qemu-img info --output=json bad.qcow2 | grep -q '"corrupt": true' || bail "qemu-img does not see the corrupt bit"
# files the mount refuses: a truncated header, a text file
head -c 50 base.qcow2 >trunc.qcow2
echo "not an image" >notes.txt
# a symlink to an image outside SOURCE: not followed
mkdir -p "$WORK/outside"
setup qemu-img create -q -f qcow2 "$WORK/outside/x.qcow2" 1M
ln -s "$WORK/outside/x.qcow2" link.qcow2
# an image on a read-only file system (a read-only bind mount of a directory of SOURCE)
RODIR=""
if [ "$(id -u)" = 0 ]; then
	mkdir -p rodir
	setup qemu-img create -q -f qcow2 rodir/frozenfs.qcow2 1M
	if mount --bind "$SRC/rodir" "$SRC/rodir"; then
		track_kmount "$SRC/rodir"
		setup mount -o remount,bind,ro "$SRC/rodir"
		RODIR=$SRC/rodir
	fi
fi
# a directory only root may enter, with an image in it
setup qemu-img create -q -f qcow2 priv/secret.qcow2 1M
# a base anyone may read whose overlay lies in that directory: another user is not told
# the overlay's name
setup qemu-img create -q -f qcow2 pubbase.qcow2 1M
setup qemu-img create -q -f qcow2 -b ../pubbase.qcow2 -F qcow2 priv/over-pub.qcow2
chmod 0700 priv

U=qfsexp$$
add_test_user "$U"
UID_U=$(id -u "$U")

mount_qcowfs "$SRC" "$MNT" -o allow_other || bail "mount failed"
LOG1=$QCOWFS_LOG

# ---- fsname and type ----

expect_proc_mounts()
{
	local want
	want=$(python3 -c 'import sys; p = sys.argv[1]
for c, e in (("\\", "\\134"), (" ", "\\040"), ("\t", "\\011"), ("\n", "\\012")):
    p = p.replace(c, e)
print(p)' "$SRC")
	WANT=$want awk -v m="$MNT" '$2 == m { found = 1; s = ENVIRON["WANT"]
		if ($1 != s || $3 != "fuse.qcowfs") {
		print "got " $1 " " $3 ", want " s " fuse.qcowfs"; exit 1 } }
		END { if (!found) { print "not in /proc/mounts"; exit 1 } }' /proc/mounts
}
check "/proc/mounts shows fsname=SOURCE (escaped) and type fuse.qcowfs" expect_proc_mounts

expect_df()
{
	local out
	out=$(df -P "$MNT" | tail -n 1) || return 1
	echo "$out"
	[ "${out#"$SRC" }" != "$out" ] || return 1
	[ "$(df --output=fstype "$MNT" 2>/dev/null | tail -n 1 | tr -d ' ')" = fuse.qcowfs ] ||
		[ "$(findmnt -n -o FSTYPE "$MNT")" = fuse.qcowfs ]
}
check "df -P shows SOURCE as the file system, of type fuse.qcowfs" expect_df

# ---- extended attributes ----

# xattr_is FILE NAME VALUE: getfattr gives VALUE for NAME (as root)
xattr_is()
{
	local got
	got=$(fs getfattr --only-values -n "$2" "$1") || return 1
	[ "$got" = "$3" ] || { printf 'got: %s\nwant: %s\n' "$got" "$3"; return 1; }
}

# xattr_has FILE NAME TEXT: the value of NAME holds TEXT
xattr_has()
{
	local got
	got=$(fs getfattr --only-values -n "$2" "$1") || return 1
	echo "$got"
	[[ "$got" == *"$3"* ]]
}

check "top.raw: chain lists top then base, one a line" \
	xattr_is "$MNT/top.raw" user.qcowfs.chain "$SRC/top.qcow2"$'\n'"$SRC/base.qcow2"
check "top.raw: image is its source file" xattr_is "$MNT/top.raw" user.qcowfs.image "$SRC/top.qcow2"
check "top.raw (a leaf): mode rw" xattr_is "$MNT/top.raw" user.qcowfs.mode rw
check "top.raw: getfattr -d lists the three attributes" \
	bash -c "getfattr -d '$MNT/top.raw' | grep -c '^user.qcowfs.' | grep -qx 3"
check "base.raw: ro, the backing file of top.qcow2" \
	xattr_is "$MNT/base.raw" user.qcowfs.mode "ro: it is the backing file of '$SRC/top.qcow2'"
check "top@s1.raw: ro, a snapshot view" xattr_has "$MNT/top@s1.raw" user.qcowfs.mode "ro: a snapshot view"
check "top@s1.raw: snapshot name and chain" \
	bash -c "[ \"\$(getfattr --only-values -n user.qcowfs.snapshot '$MNT/top@s1.raw')\" = s1 ] &&
		getfattr --only-values -n user.qcowfs.chain '$MNT/top@s1.raw' | grep -qxF '$SRC/base.qcow2'"
check "bad.raw: ro, the corrupt bit" xattr_has "$MNT/bad.raw" user.qcowfs.mode "ro: the image's corrupt bit is set"
check "frozen.raw: ro, the image file has no write bit" \
	xattr_has "$MNT/frozen.raw" user.qcowfs.mode "ro: permissions: the image file has no write bit"
check "rawbase.img: ro, a raw backing file; its chain is itself" \
	bash -c "getfattr --only-values -n user.qcowfs.mode '$MNT/rawbase.img' | grep -q '^ro: a raw backing file' &&
		[ \"\$(getfattr --only-values -n user.qcowfs.chain '$MNT/rawbase.img')\" = '$SRC/rawbase.img' ]"
check "over.raw: chain ends with its raw backing file" \
	xattr_is "$MNT/over.raw" user.qcowfs.chain "$SRC/over.qcow2"$'\n'"$SRC/rawbase.img"
if [ -n "$RODIR" ]; then
	check "rodir/frozenfs.raw (read-only file system): ro, the daemon may not write it" \
		xattr_is "$MNT/rodir/frozenfs.raw" user.qcowfs.mode \
		"ro: the daemon may not write the image file: Read-only file system"
fi
check "the root directory: image is SOURCE" xattr_is "$MNT" user.qcowfs.image "$SRC"

# another process holds held.qcow2 for writing (qemu-io): its view says who
setup qemu_writer_start "$SRC/held.qcow2"
check "held.raw: ro, held by the qemu-io process, named with its pid" \
	xattr_has "$MNT/held.raw" user.qcowfs.mode "pid $QEMU_WRITER_PID (qemu-io)"
check "held.raw: the reason says another process writes it" \
	xattr_has "$MNT/held.raw" user.qcowfs.mode "ro: another process writes it"
qemu_writer_stop
check "held.raw: rw again once qemu-io is gone" eventually xattr_is "$MNT/held.raw" user.qcowfs.mode rw

# the caller's permissions: the user may read top.raw (0644) but not write it
as_user_mode()
{
	local got
	got=$(fs runuser -u "$U" -- getfattr --only-values -n user.qcowfs.mode "$1") || return 1
	echo "$got"
	[[ "$got" == "ro: permissions: uid $UID_U may not write it"* ]]
}
check "top.raw seen by another user: ro for that user's permissions" as_user_mode "$MNT/top.raw"
as_user_backing()
{
	local got
	got=$(fs runuser -u "$U" -- getfattr --only-values -n user.qcowfs.mode "$MNT/pubbase.raw") || return 1
	echo "$got"
	[ "$got" = "ro: it is the backing file of another image" ]
}
check "pubbase.raw seen by another user: the overlay in a private directory is not named" as_user_backing
check "pubbase.raw seen by root: the overlay is named" \
	xattr_is "$MNT/pubbase.raw" user.qcowfs.mode "ro: it is the backing file of '$SRC/priv/over-pub.qcow2'"
check "top.raw seen by root: still rw" xattr_is "$MNT/top.raw" user.qcowfs.mode rw
chmod 0600 "$SRC/rootonly.qcow2"
as_user_denied()
{
	local out
	if out=$(fs runuser -u "$U" -- getfattr --only-values -n user.qcowfs.chain "$1" 2>&1); then
		echo "read: $out"
		return 1
	fi
	echo "$out"
	! grep -qF "$SRC" <<<"$out"
}
check "rootonly.raw (0600): another user learns nothing of its chain" \
	eventually as_user_denied "$MNT/rootonly.raw"

check_not "setfattr of user.qcowfs.mode fails" setfattr -n user.qcowfs.mode -v rw "$MNT/base.raw"
check "setfattr of user.qcowfs.mode: EPERM" \
	bash -c "setfattr -n user.qcowfs.mode -v rw '$MNT/base.raw' 2>&1 | grep -q 'Operation not permitted'"
check "setfattr of another name: not supported" \
	bash -c "setfattr -n user.other -v x '$MNT/top.raw' 2>&1 | grep -q 'Operation not supported'"
check "setfattr -x user.qcowfs.chain: EPERM" \
	bash -c "setfattr -x user.qcowfs.chain '$MNT/top.raw' 2>&1 | grep -q 'Operation not permitted'"
check "the attribute is unchanged" xattr_is "$MNT/base.raw" user.qcowfs.mode "ro: it is the backing file of '$SRC/top.qcow2'"

# -o ro: every view says so (the first reason that holds: a leaf's)
mount_qcowfs "$SRC" "$MNT2" -o ro || bail "mount -o ro failed"
check "-o ro: top.raw says ro (-o ro)" xattr_is "$MNT2/top.raw" user.qcowfs.mode "ro: the mount is read-only (-o ro)"

# ---- the status file ----

check "the status file is not listed (ls -a)" bash -c "! ls -a '$MNT' | grep -qF .qcowfs-status.json"
check "cat of the status file works" fs cat "$MNT/.qcowfs-status.json"

status_ok()
{
	fs cat "$MNT/.qcowfs-status.json" >"$WORK/status.json" || return 1
	python3 - "$WORK/status.json" "$QCOWFS_PID_MAIN" "$SRC" "$MNT" "$("$QCOWFS" --version)" <<'PY'
import json, sys
path, pid, src, mnt, version = sys.argv[1:]
s = json.load(open(path))
assert s["pid"] == int(pid), s["pid"]
assert s["source"] == src and s["mount_point"] == mnt, (s["source"], s["mount_point"])
assert version.split()[1] == s["version"], (version, s["version"])
assert s["options"]["allow_other"] is True and s["options"]["read_only"] is False
assert "allow_other" in " ".join(s["command_line"]), s["command_line"]
refused = {e["file"]: e["reason"] for e in s["refused"]}
ro = {e["file"]: e["reason"] for e in s["read_only"]}
assert "header cut short" in refused[src + "/trunc.qcow2"], refused
assert "not a qcow2 image" in refused[src + "/notes.txt"], refused
assert "corrupt bit" in ro[src + "/bad.qcow2"], ro
assert "backing file of '%s/top.qcow2'" % src in ro[src + "/base.qcow2"], ro
assert "symlink not followed" in refused[src + "/link.qcow2"], refused
assert src + "/top.qcow2" not in ro and src + "/top.qcow2" not in refused
assert src + "/priv/secret.qcow2" not in refused and src + "/priv/secret.qcow2" not in ro
PY
}
QCOWFS_PID_MAIN=${_e2e_mount_pid[$MNT]}
check "status: JSON with pid, version, options, and every refused or read-only file's reason" status_ok

status_size_ok()
{
	local size bytes
	size=$(fs stat -c %s "$MNT/.qcowfs-status.json") || return 1
	bytes=$(fs cat "$MNT/.qcowfs-status.json" | wc -c) || return 1
	echo "stat $size, cat $bytes"
	[ "$size" = "$bytes" ] && [ "$size" -gt 0 ]
}
check "status: stat's size is what cat reads" status_size_ok

# refreshed on each read: a new refused file appears
head -c 10 base.qcow2 >new-trunc.qcow2
check "status: refreshed on each read (a new refused file)" \
	bash -c "grep -qF '$SRC/new-trunc.qcow2' '$MNT/.qcowfs-status.json'"

as_user_status()
{
	fs runuser -u "$U" -- cat "$MNT/.qcowfs-status.json" >"$WORK/status-u.json" || return 1
	python3 - "$WORK/status-u.json" "$SRC" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
src = sys.argv[2]
files = [e["file"] for e in s["refused"] + s["read_only"]]
assert src + "/notes.txt" in files, files
assert src + "/rootonly.qcow2" not in files, files
assert src + "/link.qcow2" not in files, files
assert not any(f.startswith(src + "/priv/") for f in files), files
assert not any("/priv/" in e["reason"] for e in s["refused"] + s["read_only"]), s
PY
}
chmod 0600 "$SRC/priv/secret.qcow2"
chmod 0700 "$SRC/priv"
# a refused image in the private directory: root sees it, the user does not
head -c 10 base.qcow2 >"$SRC/priv/hidden.qcow2"
check "status: root sees a refused file in a private directory" \
	bash -c "grep -qF '$SRC/priv/hidden.qcow2' '$MNT/.qcowfs-status.json'"
check "status: another user sees only the files it may read" as_user_status

# an image file the daemon cannot read: root reads mode 000, so this daemon runs without the
# capabilities that allow it
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
	SRC3=$WORK/src3
	MNT3=$WORK/mnt3
	mkdir -p "$SRC3"
	setup qemu-img create -q -f qcow2 "$SRC3/ok.qcow2" 1M
	setup qemu-img create -q -f qcow2 "$SRC3/locked.qcow2" 1M
	chmod 000 "$SRC3/locked.qcow2"
	printf '#!/bin/sh\nexec setpriv --inh-caps=-dac_override,-dac_read_search --bounding-set=-dac_override,-dac_read_search "%s" "$@"\n' \
		"$QCOWFS" >"$WORK/qcowfs-nodac"
	chmod +x "$WORK/qcowfs-nodac"
	QCOWFS_REAL=$QCOWFS
	QCOWFS=$WORK/qcowfs-nodac
	mount_qcowfs "$SRC3" "$MNT3" || bail "mount without DAC capabilities failed"
	QCOWFS=$QCOWFS_REAL
	LOG3=$QCOWFS_LOG
	unreadable_listed()
	{
		fs cat "$MNT3/.qcowfs-status.json" >"$WORK/status3.json" || return 1
		python3 - "$WORK/status3.json" "$SRC3" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
refused = {e["file"]: e["reason"] for e in s["refused"]}
assert "Permission denied" in refused[sys.argv[2] + "/locked.qcow2"], refused
assert sys.argv[2] + "/ok.qcow2" not in refused, refused
PY
	}
	check "status: an image file the daemon cannot read is refused: Permission denied" unreadable_listed
	check "unmount the mount without DAC capabilities" umount_qcowfs "$MNT3"
	check "its log is clean" log_clean "$LOG3"
fi

check "status: cannot be written" bash -c "! echo x >'$MNT/.qcowfs-status.json'"
QCOWFS_PID=$QCOWFS_PID_MAIN # the first mount's daemon
check "daemon alive" daemon_alive "$MNT"
check "unmount -o ro mount" umount_qcowfs "$MNT2"
check "unmount" umount_qcowfs "$MNT"
check "daemon logs clean" log_clean "$LOG1" "$QCOWFS_LOG"
finish

#!/bin/bash
# ctl-socket.sh - the control socket of a mount, and qcowctl commands forwarded through it:
# - each mount has /run/qcowfs/PID.sock (root's mounts), mode 0600 in a 0700 directory,
#   removed at unmount; a daemon killed with SIGKILL leaves it, and the next lister removes it;
# - the peer is checked (SO_PEERCRED): a second user who reaches the socket anyway (a hard link
#   made for the test, its mode opened) is refused with one line; root is served;
# - qcowfs --status MOUNTPOINT and qcowctl mounts [--json] list the mount, its views open and
#   their writers; qcowctl job list answers;
# - snapshot create, list and delete on an image whose view is open are run by the daemon and
#   print what the same command prints offline (compared on a copy of the image), exit
#   statuses and refusals included; --offline refuses as before (the holder named); the
#   image stays clean (qemu-img check) and qemu-img lists the snapshots made live.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root
SRC=$WORK/src
OFF=$WORK/off
MNT=$WORK/mnt
mkdir -p "$SRC" "$OFF"
setup mk_qcow2 "$SRC/a.qcow2" 64M
setup qemu-io -f qcow2 -c "write -P 0x11 0 1M" "$SRC/a.qcow2"
cp "$SRC/a.qcow2" "$OFF/a.qcow2"

setup mount_qcowfs "$SRC" "$MNT"
SOCK=/run/qcowfs/$QCOWFS_PID.sock

# ---- the socket ----
check "the socket exists, mode 0600" test "$(stat -c %F:%a "$SOCK" 2>&1)" = "socket:600"
check "its directory is root's, mode 0700" test "$(stat -c %U:%a /run/qcowfs)" = "root:700"
check "root is served" eval '[ "$(python3 "$E2E_HELPER" ctl-call "$SOCK" status | tail -n 1)" = "exit 0" ]'

# a second user: the directory keeps it out; given a way in, the daemon refuses it itself
U=qcowfs-ctl-$$
add_test_user "$U"
LINKDIR=$(mktemp -d /run/qcowfs-test.XXXXXX)
on_cleanup rm -rf "$LINKDIR"
chmod 755 "$LINKDIR"
cp -r "$E2E_DIR/e2e_helper.py" "$E2E_DIR/helpers" "$LINKDIR/"
check "another user cannot reach the socket's directory" \
	eval '[ "$(runuser -u "$U" -- python3 "$LINKDIR/e2e_helper.py" ctl-call "$SOCK" status)" = "connect: Permission denied" ]'
ln "$SOCK" "$LINKDIR/s.sock"
chmod 666 "$LINKDIR/s.sock" # the same inode: the socket itself is open to everyone now
runuser -u "$U" -- python3 "$LINKDIR/e2e_helper.py" ctl-call "$LINKDIR/s.sock" status \
	>"$WORK/user.out" 2>&1
check "another user who reaches the socket is refused, with one line" \
	grep -qx "err: permission denied: uid $(id -u "$U") may not control this mount (only root and its owner, uid 0)" "$WORK/user.out"
check "... and its request is not run" grep -qx "exit 1" "$WORK/user.out"
check_not "... nothing of the status reaches it" grep -q "out:" "$WORK/user.out"
check "the refusal is logged" grep -q "uid $(id -u "$U") may not control this mount" "$QCOWFS_LOG"
chmod 600 "$SOCK"
rm -f "$LINKDIR/s.sock"

# ---- status and mounts, with a view open for writing ----
exec {VIEW}<>"$MNT/a.raw"
on_cleanup eval "exec $VIEW>&-"
"$QCOWFS" --status "$MNT" >"$WORK/status.out" 2>&1
check "qcowfs --status names the mount" \
	grep -qx "qcowfs pid $QCOWFS_PID: $SRC on $MNT, owner uid 0" "$WORK/status.out"
check "... and the view open for writing" \
	grep -qx "  view a.raw: 1 open, 1 writing ($SRC/a.qcow2)" "$WORK/status.out"
check_not "qcowfs --status of a directory that is no mount fails" "$QCOWFS" --status "$OFF"
ctl mounts --json >"$WORK/mounts.json"
check "qcowctl mounts --json lists the mount and its writer" python3 - "$WORK/mounts.json" "$MNT" "$QCOWFS_PID" <<'PY'
import json, sys
mounts = json.load(open(sys.argv[1]))
m = [m for m in mounts if m["mount-point"] == sys.argv[2]]
assert len(m) == 1 and m[0]["pid"] == int(sys.argv[3]), mounts
assert m[0]["views"] == [{"view": "a.raw", "image": m[0]["source"] + "/a.qcow2", "handles": 1, "writers": 1}], m
PY
check "qcowctl mounts lists it as text" eval 'ctl mounts | grep -qx "qcowfs pid $QCOWFS_PID: $SRC on $MNT, owner uid 0"'
ctl job list >"$WORK/jobs.out"
check "qcowctl job list answers" grep -q "^ID *KIND *STATE" "$WORK/jobs.out"

# ---- forwarding: the same output, exit status and refusals as offline ----
# same_as_offline ARGS...: qcowctl ARGS in SRC (forwarded) and in OFF (offline, on the copy)
# print the same stdout and stderr and exit the same.
same_as_offline()
{
	local a b ra rb
	a=$(cd "$SRC" && ctl "$@" 2>&1)
	ra=$?
	b=$(cd "$OFF" && ctl "$@" 2>&1)
	rb=$?
	if [ "$a" != "$b" ] || [ $ra != $rb ]; then
		echo "forwarded (exit $ra):"
		echo "$a"
		echo "offline (exit $rb):"
		echo "$b"
		return 1
	fi
	echo "$a"
}
check "snapshot create is forwarded and prints what it prints offline" same_as_offline snapshot create a.qcow2 s1
check "the daemon ran it (its log)" grep -q "snapshot 's1' of '$SRC/a.qcow2' created" "$QCOWFS_LOG"
check "an existing name: the same refusal and exit status" same_as_offline snapshot create a.qcow2 s1
check "snapshot create of a second one" same_as_offline snapshot create a.qcow2 s2
check "qemu-img's snapshot create is the same too (-c)" same_as_offline snapshot -c s3 a.qcow2
(cd "$SRC" && ctl snapshot list a.qcow2) >"$WORK/list.fwd" 2>&1
qemu-img snapshot -l -U "$SRC/a.qcow2" >"$WORK/list.qemu" 2>&1
check "snapshot list, forwarded, prints what qemu-img prints" cmp "$WORK/list.fwd" "$WORK/list.qemu"
(cd "$SRC" && ctl snapshot list --json a.qcow2) >"$WORK/list.json" 2>&1
check "snapshot list --json, forwarded, has the three snapshots" \
	eval '[ "$(python3 -c "import json,sys; print(\" \".join(s[\"name\"] for s in json.load(open(sys.argv[1]))))" "$WORK/list.json")" = "s1 s2 s3" ]'
check "snapshot delete is forwarded and prints what it prints offline" same_as_offline snapshot delete a.qcow2 s2
check "a missing snapshot: the same refusal and exit status" same_as_offline snapshot delete a.qcow2 nosuch
check "the snapshot views appeared at once" eval 'ls "$MNT" | grep -qx "a@s1.raw" && ls "$MNT" | grep -qx "a@s3.raw"'
check_not "... the deleted one went" eval 'ls "$MNT" | grep -qx "a@s2.raw"'

# --offline: the refusal of today
(cd "$SRC" && ctl snapshot create --offline a.qcow2 s9) >"$WORK/offline.out" 2>&1
rc=$?
check "--offline refuses, naming the daemon as the holder" \
	grep -qx "qcowctl: 'a.qcow2' is in use: pid $QCOWFS_PID (qcowfs) holds the \"write\" permission" "$WORK/offline.out"
check "... with exit status 1" test $rc = 1
ctl snapshot --help >"$WORK/help.out"
check "--offline is in snapshot's --help" grep -q -- "^  --offline " "$WORK/help.out"
check "apply is not run live: the daemon refuses it in one line, saying why" eval \
	'[ "$(cd "$SRC" && ctl snapshot apply a.qcow2 s1 2>&1)" = "qcowctl: '"'a.qcow2'"': snapshot apply cannot run while a view of it is open: it would change the disk under the view'"'"'s readers and writers (close the view, or unmount)" ]'

exec {VIEW}>&-
check "the view's snapshots as qemu-img sees them" eval \
	'[ "$(qemu-img snapshot -l -U "$SRC/a.qcow2" | awk "NR > 2 { print \$2 }" | tr "\n" " ")" = "s1 s3 " ]'
check "umount" umount_qcowfs "$MNT"
check "the socket is removed at unmount" test ! -e "$SOCK"
check "the image is clean" qemu-img check -q "$SRC/a.qcow2"

# ---- a daemon killed with SIGKILL: its socket is removed by the next lister ----
setup mount_qcowfs "$SRC" "$MNT"
SOCK=/run/qcowfs/$QCOWFS_PID.sock
check "a new mount has its socket" test -S "$SOCK"
kill -KILL "$QCOWFS_PID"
wait "$QCOWFS_PID" 2>/dev/null
fusermount3 -u -z "$MNT" 2>/dev/null
check "SIGKILL leaves the socket" test -S "$SOCK"
ctl mounts >/dev/null 2>&1
check "the next lister removes it" test ! -e "$SOCK"
check "the image is clean after the kill" qemu-img check -q "$SRC/a.qcow2"

finish

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
# a snapshot whose delete has work to do: 98,304 small clusters to count down
setup mk_qcow2 "$SRC/j.qcow2" 64M -o cluster_size=512
setup qemu-io -f qcow2 -c "write -P 0x22 0 48M" "$SRC/j.qcow2"
setup qemu-img snapshot -c big "$SRC/j.qcow2"
setup qemu-io -f qcow2 -c "write -P 0x33 0 48M" "$SRC/j.qcow2"

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

# the client's interrupt (a CANCEL frame), there before the command starts: nothing changes
python3 "$E2E_HELPER" ctl-call-cancel "$SOCK" snapshot create "$SRC/a.qcow2" s8 >"$WORK/cancel.out" 2>&1
check "a create cancelled by its client: one line, exit 1" test "$(cat "$WORK/cancel.out")" = \
	"err: cancelled before it began: nothing changed
exit 1"
check "... no snapshot s8" eval '! qemu-img snapshot -l -U "$SRC/a.qcow2" | grep -q " s8 "'

# --offline: the refusal of today
(cd "$SRC" && ctl snapshot create --offline a.qcow2 s9) >"$WORK/offline.out" 2>&1
rc=$?
check "--offline refuses, naming the daemon as the holder" \
	grep -qx "qcowctl: 'a.qcow2' is in use: pid $QCOWFS_PID (qcowfs) holds the \"write\" permission" "$WORK/offline.out"
check "... with exit status 1" test $rc = 1
ctl snapshot --help >"$WORK/help.out"
(cd "$SRC" && ctl snapshot -c s9 --offline a.qcow2) >"$WORK/offline.out" 2>&1
check "--offline in qemu-img's spelling (-c) refuses too" \
	grep -qx "qcowctl: 'a.qcow2' is in use: pid $QCOWFS_PID (qcowfs) holds the \"write\" permission" "$WORK/offline.out"
check "--offline is in snapshot's --help" grep -q -- "^  --offline " "$WORK/help.out"
check "apply is not run live: the daemon refuses it in one line, saying why" eval \
	'[ "$(cd "$SRC" && ctl snapshot apply a.qcow2 s1 2>&1)" = "qcowctl: '"'a.qcow2'"': snapshot apply cannot run while a view of it is open: it would change the disk under the view'"'"'s readers and writers (close the view, or unmount)" ]'

# ---- the jobs registry: a delete with work to do, seen by job list from another client ----
exec {JVIEW}<>"$MNT/j.raw"
on_cleanup eval "exec $JVIEW>&-"
(cd "$SRC" && ctl snapshot delete -q j.qcow2 big) >"$WORK/jdel.out" 2>&1 &
JDEL=$!
seen="" QID=""
while kill -0 $JDEL 2>/dev/null; do # each job list answers while the delete runs
	ctl job list >"$WORK/jobs.now" 2>&1 || break
	grep -q "snapshot-delete *running .*$SRC/j.qcow2\$" "$WORK/jobs.now" && seen=running && break
done
# a create queued behind the running delete waits for it, and a cancel then stops it before it
# changes anything (when the delete is still running by then: it is not made to wait)
if [ -n "$seen" ]; then
	(cd "$SRC" && ctl snapshot create j.qcow2 queued) >"$WORK/jq.out" 2>&1 &
	JQ=$!
	while kill -0 $JQ 2>/dev/null && kill -0 $JDEL 2>/dev/null; do
		ctl job list >"$WORK/jobs.now" 2>&1 || break
		QID=$(awk -v img="$SRC/j.qcow2" '$2 == "snapshot-create" && $3 == "waiting" &&
			$NF == img { print $1 }' "$WORK/jobs.now")
		[ -n "$QID" ] && break
	done
	if [ -n "$QID" ]; then
		out=$(ctl job cancel "$QID" 2>&1)
		check "job cancel of the create waiting behind the delete: cancelled" \
			test "$out" = "job $QID: cancelled"
		wait $JQ
		check "... its client gets exit status 1" test $? = 1
		check "... and one line saying nothing changed" \
			test "$(cat "$WORK/jq.out")" = "qcowctl: cancelled before it began: nothing changed"
	else
		wait $JQ
		echo "# the queued create was not seen waiting (the delete ended first)"
	fi
fi
wait $JDEL
check "the delete, forwarded, succeeds" test $? = 0 -a ! -s "$WORK/jdel.out"
echo "# the delete was seen running by job list: ${seen:-no (it ended first)}"
ctl job list >"$WORK/jobs.out"
JOB=$(awk -v img="$SRC/j.qcow2" '$2 == "snapshot-delete" && $NF == img { print $1 }' "$WORK/jobs.out")
check "job list shows the finished delete: its id, kind, state, share done, image" \
	grep -qE "^$QCOWFS_PID-[0-9]+ +snapshot-delete +done +100\.0%  $SRC/j.qcow2\$" "$WORK/jobs.out"
check "... and the creates before it" eval '[ "$(grep -c "^$QCOWFS_PID-[0-9]* *snapshot-create *done .*/a.qcow2\$" "$WORK/jobs.out")" = 3 ]'
ctl job list --json >"$WORK/jobs.json"
check "job list --json has the jobs" python3 - "$WORK/jobs.json" "$JOB" <<'PY'
import json, sys
jobs = json.load(open(sys.argv[1]))
d = [j for j in jobs if j["id"] == sys.argv[2]]
assert len(d) == 1 and d[0]["kind"] == "snapshot-delete" and d[0]["state"] == "done", jobs
f = [j for j in jobs if j["id"].startswith(sys.argv[2].split("-")[0] + "-") and j["state"] == "failed"]
assert f and all(j["error"] for j in f), jobs  # the create of a taken name, the missing delete
PY
check "job cancel of a finished job says how it ended" eval '[ "$(ctl job cancel "$JOB")" = "job $JOB: done" ]'
out=$(ctl job cancel "$QCOWFS_PID-999" 2>&1)
check "job cancel of an unknown job fails, one line" test "$out" = "qcowctl: no job $QCOWFS_PID-999"
check_not "... with a non-zero exit status" ctl job cancel "$QCOWFS_PID-999"
check_not "job cancel of a malformed ID is a usage error" ctl job cancel 12
exec {JVIEW}>&-
check "j.qcow2 is clean after the live delete" eventually qemu-img check -q -U "$SRC/j.qcow2"
if [ -n "$QID" ]; then
	check "... and has no snapshot left (the cancelled create made none)" \
		eval '[ -z "$(qemu-img snapshot -l -U "$SRC/j.qcow2")" ]'
fi

exec {VIEW}>&-
check "the view's snapshots as qemu-img sees them" eval \
	'[ "$(qemu-img snapshot -l -U "$SRC/a.qcow2" | awk "NR > 2 { print \$2 }" | tr "\n" " ")" = "s1 s3 " ]'
check "umount" umount_qcowfs "$MNT"
check "the socket is removed at unmount" test ! -e "$SOCK"
check "the image is clean" qemu-img check -q "$SRC/a.qcow2"

# ---- what the daemon cannot change live: refused in one line saying why ----
setup qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 "$SRC/top.qcow2"
setup mount_qcowfs "$SRC" "$MNT"
exec {TOPVIEW}<>"$MNT/top.raw"
on_cleanup eval "exec $TOPVIEW>&-"
out=$(cd "$SRC" && ctl snapshot create a.qcow2 nope 2>&1)
check "a backing layer of an open view: refused, saying so" test "$out" = \
	"qcowctl: 'a.qcow2' cannot be changed live: it is a backing layer of an open view (read-only while the view is open)"
(cd "$SRC" && ctl snapshot list a.qcow2) >"$WORK/list.backing" 2>&1
qemu-img snapshot -l -U "$SRC/a.qcow2" >"$WORK/list.qemu" 2>&1
check "... its snapshots are listed by the daemon all the same" cmp "$WORK/list.backing" "$WORK/list.qemu"
exec {TOPVIEW}>&-
check "umount" umount_qcowfs "$MNT"
rm -f "$SRC/top.qcow2"
setup mount_qcowfs "$SRC" "$MNT" -o ro
exec {ROVIEW}<"$MNT/a.raw"
on_cleanup eval "exec $ROVIEW<&-"
out=$(cd "$SRC" && ctl snapshot create a.qcow2 nope 2>&1)
check "a read-only mount: refused, saying so" test "$out" = \
	"qcowctl: 'a.qcow2' cannot be changed live: the mount serves it read-only"
exec {ROVIEW}<&-
check "umount" umount_qcowfs "$MNT"
check "the image has no snapshot 'nope'" eval '! qemu-img snapshot -l "$SRC/a.qcow2" | grep -q " nope "'

# ---- a client that drips its request holds up neither requests nor the unmount ----
# (an ARG frame every 2 s: each frame in time, the request never complete)
drip_client()
{
	python3 -c 'import socket, struct, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
print("connected", flush=True)
try:
    for i in range(150):
        s.sendall(b"A" + struct.pack(">I", 1) + b"x")
        time.sleep(2)
    print("never closed", flush=True)
except OSError:
    print("closed by the daemon", flush=True)' "$1"
}
setup mount_qcowfs "$SRC" "$MNT"
SOCK=/run/qcowfs/$QCOWFS_PID.sock
drip_client "$SOCK" >"$WORK/drip1.out" 2>&1 &
DRIP1=$!
track_pid $DRIP1
check "a dripping client is connected" eventually grep -qx connected "$WORK/drip1.out"
check "qcowfs --status answers meanwhile" "$QCOWFS" --status "$MNT"
wait $DRIP1
check "the daemon closes a request not complete in time" grep -qx "closed by the daemon" "$WORK/drip1.out"
drip_client "$SOCK" >"$WORK/drip2.out" 2>&1 &
DRIP2=$!
track_pid $DRIP2
check "a second dripping client is connected" eventually grep -qx connected "$WORK/drip2.out"
check "the unmount does not wait for it" umount_qcowfs "$MNT"
check "... and the socket is removed" test ! -e "$SOCK"
wait $DRIP2
check "... its connection was shut down" grep -qx "closed by the daemon" "$WORK/drip2.out"

# ---- SIGTERM ends the session: the socket goes with it ----
setup mount_qcowfs "$SRC" "$MNT"
SOCK=/run/qcowfs/$QCOWFS_PID.sock
check "a new mount has its socket" test -S "$SOCK"
kill -TERM "$QCOWFS_PID"
wait "$QCOWFS_PID"
check "SIGTERM: the daemon exits with status 0" test $? = 0
check "SIGTERM: the socket is removed" test ! -e "$SOCK"
fusermount3 -u -z "$MNT" 2>/dev/null

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

#!/bin/bash
# ctl-snapshot-live.sh - internal snapshots taken through the daemon while a writer writes the
# view (qcowctl snapshot create forwarded to the mount's daemon):
# - the writer (each 4 KiB write stamped with its sequence number, logged once done) sees no
#   error while five snapshots are taken;
# - each snapshot's view appears at once and is exactly what the first K writes made, K
#   between the writes done before the create began and those done when it returned; so is
#   qemu-img's copy of each snapshot after the unmount, and the view holds every write;
# - qemu-img check is clean and qemu-img snapshot -l lists the snapshots;
# - a snapshot deleted live: refused while its view is open (naming it), done once closed;
# - kill -9 of the daemon while a snapshot is being created and a writer fsyncs each write:
#   after a remount the image is valid (qemu-img check: no corruption) and every fsynced write
#   is there.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root
SRC=$WORK/src
MNT=$WORK/mnt
BLOCKS=2048 # the writer's 8 MiB
mkdir -p "$SRC"
setup mk_qcow2 "$SRC/a.qcow2" 64M
cd "$SRC" || exit 1

# valid_after_kill IMAGE: `qemu-img check` finds no corruption (exit 0, or 3: leaks), or only
# COPIED flags that disagree with a refcount of 2: a create killed between its two durable
# stages (the reach's refcounts raised, then the L2 tables with their COPIED flags cleared;
# QEMU's create has the same window), which no reader or writer misreads (no snapshot refers
# to the clusters yet: writing them in place is right) and `qemu-img check -r all` sets right.
valid_after_kill()
{
	local rc
	qemu-img check "$1" >"$WORK/vak.out" 2>&1
	rc=$?
	[ $rc = 0 ] || [ $rc = 3 ] && return 0
	if [ $rc = 2 ] && ! grep "^ERROR" "$WORK/vak.out" | grep -qv "^ERROR OFLAG_COPIED .*refcount=2$"; then
		cp "$1" "$WORK/vak.qcow2"
		qemu-img check -q -r all "$WORK/vak.qcow2" >/dev/null 2>&1
		qemu-img check -q "$WORK/vak.qcow2" && echo "COPIED window only" && return 0
	fi
	head -n 20 "$WORK/vak.out"
	return 1
}

# ---- five snapshots while the writer writes ----
setup mount_qcowfs "$SRC" "$MNT"
LOG=$WORK/writes.log
setup stamp_writer "$MNT/a.raw" "$LOG" 7 0 $BLOCKS
declare -a LO HI
for i in 1 2 3 4 5; do
	LO[i]=$(stamp_lines "$LOG")
	check "snapshot s$i created live" ctl snapshot create -q a.qcow2 "s$i"
	HI[i]=$(($(stamp_lines "$LOG") + 1))
	check "a@s$i.raw appears at once" test -e "$MNT/a@s$i.raw"
	n=$(stamp_lines "$LOG")
	check "the writer goes on after s$i" eventually stamp_grows "$LOG" $((n + 20))
done
touch "$WORK/stop"
wait "$WRITER_PID"
rc=$?
check "the writer saw no error (exit $rc)" test $rc = 0
check "the writer printed nothing" test ! -s "$LOG.out"
for i in 1 2 3 4 5; do
	check "a@s$i.raw is what the first K writes made, ${LO[i]} <= K <= ${HI[i]}" \
		fs python3 "$E2E_HELPER" stamp-check "$MNT/a@s$i.raw" "$LOG" "${LO[i]}" "${HI[i]}" $BLOCKS
done
total=$(stamp_lines "$LOG")
check "the view holds all $total writes" \
	fs python3 "$E2E_HELPER" stamp-check "$MNT/a.raw" "$LOG" "$total" "$total" $BLOCKS

# ---- delete live ----
exec {SNAPVIEW}<"$MNT/a@s2.raw"
on_cleanup eval "exec $SNAPVIEW<&-"
exec {VIEW}<>"$MNT/a.raw"
on_cleanup eval "exec $VIEW<&-"
out=$(ctl snapshot delete a.qcow2 s2 2>&1)
check "a delete is refused while the snapshot's view is open, naming it and its opener" \
	test "$out" = "qcowctl: 'a.qcow2': snapshot 's2' is in use: its view 'a@s2.raw' is open: pid $$ ($(cat /proc/$$/comm))"
exec {SNAPVIEW}<&-
check "... and done once it is closed" eventually ctl snapshot delete -q a.qcow2 s2
check "a@s2.raw is gone" eval '! ls "$MNT" | grep -qx "a@s2.raw"'
exec {VIEW}<&-
check "umount" umount_qcowfs "$MNT"
check "qemu-img check is clean" qemu-img check -q a.qcow2
check "qemu-img snapshot -l lists the snapshots made live" eval \
	'[ "$(qemu-img snapshot -l a.qcow2 | awk "NR > 2 { print \$2 }" | tr "\n" " ")" = "s1 s3 s4 s5 " ]'
for i in 1 3 4 5; do
	setup qemu-img convert -l "snapshot.name=s$i" -O raw a.qcow2 "$WORK/s$i.raw"
	check "qemu-img's copy of s$i is what the first K writes made, ${LO[i]} <= K <= ${HI[i]}" \
		python3 "$E2E_HELPER" stamp-check "$WORK/s$i.raw" "$LOG" "${LO[i]}" "${HI[i]}" $BLOCKS
	rm -f "$WORK/s$i.raw"
done

# ---- kill -9 of the daemon during a live snapshot create ----
# Each round: a writer that fsyncs each write, a create sent to the daemon, the daemon killed
# after a different delay (before, during or after the create: each must leave a valid image
# with every fsynced write).
round=0
for delay in 0 0.01 0.03 0.1; do
	round=$((round + 1))
	setup mk_qcow2 "k$round.qcow2" 64M # its own image: the writer's log tells all it holds
	setup mount_qcowfs "$SRC" "$MNT"
	LOG2=$WORK/writes-$delay.log
	setup stamp_writer "$MNT/k$round.raw" "$LOG2" $round 1 $BLOCKS
	ctl snapshot create -q "k$round.qcow2" "crash" >"$WORK/crash.out" 2>&1 &
	CREATE_PID=$!
	sleep "$delay"
	kill -KILL "$QCOWFS_PID"
	wait "$CREATE_PID"
	check "[kill after ${delay}s] the create ends when the daemon dies (no hang)" true
	wait "$WRITER_PID"
	wait "$QCOWFS_PID" 2>/dev/null
	fusermount3 -u -z "$MNT" 2>/dev/null
	check "[kill after ${delay}s] qemu-img check: valid (leaks, or the COPIED window)" \
		valid_after_kill "k$round.qcow2"
	setup mount_qcowfs "$SRC" "$MNT"
	check "[kill after ${delay}s] after a remount every fsynced write is in the view" \
		fs python3 "$E2E_HELPER" stamp-durable "$MNT/k$round.raw" "$LOG2" $BLOCKS
	check "[kill after ${delay}s] umount" umount_qcowfs "$MNT"
done
check "qemu-img check -r all, then clean" eval \
	'for i in 1 2 3 4; do qemu-img check -q -r all k$i.qcow2 >/dev/null 2>&1; qemu-img check -q k$i.qcow2 || exit 1; done'

finish

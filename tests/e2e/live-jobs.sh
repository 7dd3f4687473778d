#!/bin/bash
# live-jobs.sh - chain jobs run live by the daemon on a view's open chain (qcowctl snapshot
# create --external, commit, pull forwarded to the mount's daemon) while a writer writes the
# view (each 4 KiB write stamped with its sequence number, logged once done):
# - an external snapshot, an intermediate commit, a pull and an active commit with --pivot run
#   one after the other; the writer sees no error and goes on after each;
# - each job's layers are as asked: the files' backing pointers (qemu-img info), and the view
#   keeps every write;
# - after the unmount qemu-img check is clean on every image, and qemu-img convert of the
#   chain the view ended on (base.qcow2 alone) holds every write;
# - a loop-mounted ext4 on a view (files written and synced before, while and after) while an
#   external snapshot and an active commit with pivot run: qemu-img check is clean, e2fsck -fn
#   of qemu-img's copy of the disk passes and every file has the bytes written;
# - qcowctl job list shows a live pull running; job cancel stops it: exit 1, the chain and the
#   view as they were, qemu-img check clean;
# - kill -9 of the daemon during each live job (twice: early and late), a writer fsyncing each
#   write: after a remount every image is valid and every fsynced write is in the disk the
#   view was on (the old top, or the new overlay / the base once the job switched); the same
#   command run offline afterwards completes an intermediate commit or a pull, and an active
#   commit killed before its pivot.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root
require_cmd qemu-io mkfs.ext4 debugfs e2fsck losetup
SRC=$WORK/src
MNT=$WORK/mnt
BLOCKS=2048 # the writer's 8 MiB
mkdir -p "$SRC"
cd "$SRC" || exit 1

# lj_backing IMAGE: the backing file IMAGE names ("" for none).
lj_backing()
{
	qemu-img info -U --output=json "$1" | python3 -c \
		'import json,sys; print(json.load(sys.stdin).get("backing-filename", ""))'
}

# lj_chain3 PREFIX: PREFIX-base <- PREFIX-mid <- PREFIX (64 MiB, data in base and mid past the
# writer's first 8 MiB, which it expects to read zeros where it did not write).
lj_chain3()
{
	mk_qcow2 "$1-base.qcow2" 64M &&
		qemu-io -f qcow2 -c "write -P 0x11 8M 24M" "$1-base.qcow2" >/dev/null &&
		mk_qcow2 "$1-mid.qcow2" 64M -b "$1-base.qcow2" -F qcow2 &&
		qemu-io -f qcow2 -c "write -P 0x22 12M 8M" -c "write -z 20M 1M" "$1-mid.qcow2" >/dev/null &&
		mk_qcow2 "$1.qcow2" 64M -b "$1-mid.qcow2" -F qcow2
}

# ---- the four jobs, one after the other, while the writer writes ----
setup lj_chain3 a
setup mount_qcowfs "$SRC" "$MNT"
LOG=$WORK/writes.log
setup stamp_writer "$MNT/a.raw" "$LOG" 7 0 $BLOCKS
LO=$(stamp_lines "$LOG")
check "snapshot --external a.qcow2 b.qcow2 runs live" \
	ctl snapshot create --external -q a.qcow2 b.qcow2
HI=$(($(stamp_lines "$LOG") + 1))
check "b.qcow2 backs onto a.qcow2" test "$(lj_backing b.qcow2)" = a.qcow2
check "the writer goes on (into b.qcow2)" stamp_goes_on "$LOG"
touch "$WORK/stop"
wait "$WRITER_PID"
rc=$?
check "the writer saw no error across the snapshot (exit $rc)" test $rc = 0
n1=$(stamp_lines "$LOG")
check "a.raw, opened again, is the point of the snapshot: the first K writes, $LO <= K <= $HI" \
	fs python3 "$E2E_HELPER" stamp-check "$MNT/a.raw" "$LOG" "$LO" "$HI" $BLOCKS
msg=$(getfattr -n user.qcowfs.mode --only-values "$MNT/a.raw" 2>/dev/null)
check "... read-only, saying why ($msg)" eval '[[ "$msg" == "ro: "*"b.qcow2"* ]]'
check "b.raw holds all $n1 writes" \
	fs python3 "$E2E_HELPER" stamp-check "$MNT/b.raw" "$LOG" "$n1" "$n1" $BLOCKS
check "umount" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
check "qemu-img check a.qcow2 is clean" qemu-img check -q a.qcow2
check "qemu-img check b.qcow2 is clean" qemu-img check -q b.qcow2
setup qemu-img convert -O raw b.qcow2 "$WORK/conv.raw"
check "qemu-img convert of b.qcow2 holds all $n1 writes" \
	python3 "$E2E_HELPER" stamp-check "$WORK/conv.raw" "$LOG" "$n1" "$n1" $BLOCKS
rm -f "$WORK/conv.raw"

# ---- intermediate commit, pull, active commit with pivot, on c-base <- c-mid <- c <- d ----
setup lj_chain3 c
setup mk_qcow2 d.qcow2 64M -b c.qcow2 -F qcow2
setup mount_qcowfs "$SRC" "$MNT"
LOG=$WORK/writes2.log
setup stamp_writer "$MNT/d.raw" "$LOG" 8 0 $BLOCKS
check "an intermediate commit (c-mid into c-base) runs live" \
	ctl commit -q --top c-mid.qcow2 --base c-base.qcow2 d.qcow2
check "c.qcow2 backs onto c-base.qcow2 now" test "$(lj_backing c.qcow2)" = c-base.qcow2
check "the writer goes on after the commit" stamp_goes_on "$LOG"
check "a pull (c into d) runs live" ctl pull -q --base c-base.qcow2 d.qcow2
check "d.qcow2 backs onto c-base.qcow2 now" test "$(lj_backing d.qcow2)" = c-base.qcow2
check "the writer goes on after the pull" stamp_goes_on "$LOG"
msg=$(ctl commit d.qcow2 2>&1)
check "an active commit without --pivot is refused live, saying why" \
	eval '[[ "$msg" == *"runs live only with --pivot"* ]] || { echo "$msg"; false; }'
msg=$(ctl commit --pivot d.qcow2 2>&1)
check "... and, as offline, refused while other images read through the base" \
	eval '[[ "$msg" == *"is also a backing file of"*"--force commits anyway"* ]] || { echo "$msg"; false; }'
check "an active commit with --pivot --force runs live" ctl commit -q --pivot --force d.qcow2
check "the writer goes on after the pivot (into c-base.qcow2)" stamp_goes_on "$LOG"
touch "$WORK/stop"
wait "$WRITER_PID"
rc=$?
check "the writer saw no error (exit $rc)" test $rc = 0
check "the writer printed nothing" test ! -s "$LOG.out"
[ -s "$LOG.out" ] && head -n 5 "$LOG.out"
total=$(stamp_lines "$LOG")
check "the disk the view ended on (c-base.raw now) holds all $total writes" \
	fs python3 "$E2E_HELPER" stamp-check "$MNT/c-base.raw" "$LOG" "$total" "$total" $BLOCKS
check "d.raw, kept, is what the view showed at the pivot (its first K writes)" \
	fs python3 "$E2E_HELPER" stamp-check "$MNT/d.raw" "$LOG" 1 "$total" $BLOCKS
check "umount" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
for f in c-base.qcow2 c-mid.qcow2 c.qcow2 d.qcow2; do
	check "qemu-img check $f is clean" qemu-img check -q "$f"
done
setup qemu-img convert -O raw c-base.qcow2 "$WORK/conv.raw"
check "qemu-img convert of the chain the view ended on (c-base.qcow2) holds all $total writes" \
	python3 "$E2E_HELPER" stamp-check "$WORK/conv.raw" "$LOG" "$total" "$total" $BLOCKS
rm -f "$WORK/conv.raw"
setup qemu-img convert -O raw d.qcow2 "$WORK/conv.raw"
check "d.qcow2, kept, shows what the view showed at the pivot" \
	python3 "$E2E_HELPER" stamp-check "$WORK/conv.raw" "$LOG" 1 "$total" $BLOCKS
rm -f "$WORK/conv.raw"

# ---- job list and job cancel of a live pull ----
# running_pull: the ID of a running pull in `qcowctl job list` (nothing when none).
lj_running_pull()
{
	ctl job list | awk '$2 == "pull" && $3 == "running" { print $1; exit }'
}

setup mk_qcow2 p-base.qcow2 512M
setup qemu-io -f qcow2 -c "write -P 0x33 0 384M" p-base.qcow2
setup mk_qcow2 p.qcow2 512M -b p-base.qcow2 -F qcow2
setup qemu-img convert -O raw p.qcow2 "$WORK/p-before.raw"
setup mount_qcowfs "$SRC" "$MNT"
exec {PVIEW}<>"$MNT/p.raw"
on_cleanup eval "exec $PVIEW<&-"
ctl pull -q p.qcow2 >"$WORK/pull.out" 2>&1 &
PULL_PID=$!
id=""
for ((i = 0; i < 100; i++)); do
	id=$(lj_running_pull)
	[ -n "$id" ] && break
	sleep 0.05
done
if [ -n "$id" ]; then
	check "job list shows the live pull running ($id)" true
	check "job cancel $id" ctl job cancel "$id"
	wait "$PULL_PID"
	rc=$?
	check "the cancelled pull exits 1 (exit $rc)" test $rc = 1
	check "... saying it was interrupted" grep -q "interrupted" "$WORK/pull.out"
	check "p.qcow2 still backs onto p-base.qcow2" test "$(lj_backing p.qcow2)" = p-base.qcow2
	check "the view is unchanged" fs cmp "$MNT/p.raw" "$WORK/p-before.raw"
else
	wait "$PULL_PID"
	echo "# the pull ended before it could be cancelled: the cancel is not checked"
fi
exec {PVIEW}<&-
check "umount" umount_qcowfs "$MNT"
check "qemu-img check p.qcow2 is clean" qemu-img check -q p.qcow2
setup qemu-img convert -O raw p.qcow2 "$WORK/p-after.raw"
check "qemu-img convert of p.qcow2 is as before" cmp "$WORK/p-before.raw" "$WORK/p-after.raw"
rm -f "$WORK/p-before.raw" "$WORK/p-after.raw" p.qcow2 p-base.qcow2

# ---- a loop-mounted ext4 on a view while an external snapshot and an active commit run ----
# guest_fill DIR TAG: files written into the guest's file system, synced (the bytes kept in
# $WORK/want-TAG.bin).
guest_fill()
{
	head -c 3M /dev/urandom >"$WORK/want-$2.bin" &&
		cp "$WORK/want-$2.bin" "$1/$2.bin" && sync -f "$1"
}

# debugfs_has IMAGE NAME: the ext4 file system IMAGE holds /NAME.bin with the bytes written.
debugfs_has()
{
	debugfs -R "cat /$2.bin" "$1" 2>/dev/null | cmp - "$WORK/want-$2.bin"
}

if ! losetup -f >/dev/null 2>&1; then
	[ "$CI" = true ] && fail "no free loop device for the ext4 part"
	echo "# no free loop device: the ext4 part is skipped"
else
	setup truncate -s 64M "$WORK/e.img"
	setup mkfs.ext4 -q -F -b 4096 "$WORK/e.img"
	setup qemu-img convert -O qcow2 "$WORK/e.img" e.qcow2
	rm -f "$WORK/e.img"
	setup mount_qcowfs "$SRC" "$MNT"
	GUEST=$WORK/guest
	mkdir -p "$GUEST"
	if dev=$(losetup -f --show "$MNT/e.raw"); then
		track_loop "$dev"
		if check "the guest's ext4 on e.raw mounts" mount -t ext4 "$dev" "$GUEST"; then
			track_kmount "$GUEST"
			check "files written and synced in the guest" fs guest_fill "$GUEST" one
			fs guest_fill "$GUEST" two &
			FILL=$!
			check "snapshot --external e.qcow2 f.qcow2 runs live under the mounted guest" \
				ctl snapshot create --external -q e.qcow2 f.qcow2
			wait $FILL
			check "the guest wrote through the snapshot" test $? = 0
			fs guest_fill "$GUEST" three &
			FILL=$!
			check "commit --pivot f.qcow2 (into e.qcow2) runs live under the mounted guest" \
				ctl commit -q --pivot f.qcow2
			wait $FILL
			check "the guest wrote through the pivot" test $? = 0
			check "files written after the pivot" fs guest_fill "$GUEST" four
			check "ext4 unmounts" umount "$GUEST"
		fi
		check "the loop device detaches" losetup -d "$dev"
	else
		fail "losetup on e.raw"
	fi
	check "umount" umount_qcowfs "$MNT"
	check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
	check "qemu-img check e.qcow2 is clean" qemu-img check -q e.qcow2
	check "qemu-img check f.qcow2 is clean" qemu-img check -q f.qcow2
	setup qemu-img convert -O raw e.qcow2 "$WORK/e-conv.raw"
	check "the guest's ext4 in qemu-img's copy of e.qcow2 is clean (e2fsck -fn)" \
		e2fsck -fn "$WORK/e-conv.raw"
	for t in one two three four; do
		check "debugfs finds /$t.bin with the bytes written" debugfs_has "$WORK/e-conv.raw" $t
	done
	rm -f "$WORK/e-conv.raw"
fi

# ---- kill -9 of the daemon during each live job ----
round=0
for job in snapshot intermediate pull commit; do
	for delay in 0.01 0.3; do
		round=$((round + 1))
		setup lj_chain3 "k$round"
		setup mount_qcowfs "$SRC" "$MNT"
		LOG2=$WORK/writes-$round.log
		setup stamp_writer "$MNT/k$round.raw" "$LOG2" $round 1 $BLOCKS
		if [ $job = snapshot ]; then
			ctl snapshot create --external -q "k$round.qcow2" "k$round-s.qcow2" >"$WORK/job.out" 2>&1 &
		elif [ $job = intermediate ]; then
			ctl commit -q --top "k$round-mid.qcow2" "k$round.qcow2" >"$WORK/job.out" 2>&1 &
		elif [ $job = pull ]; then
			ctl pull -q "k$round.qcow2" >"$WORK/job.out" 2>&1 &
		else
			ctl commit -q --pivot --force "k$round.qcow2" >"$WORK/job.out" 2>&1 &
		fi
		JOB_PID=$!
		sleep "$delay"
		kill -KILL "$QCOWFS_PID"
		wait "$JOB_PID"
		check "[$job, kill after ${delay}s] the command ends when the daemon dies" true
		wait "$WRITER_PID"
		wait "$QCOWFS_PID" 2>/dev/null
		fusermount3 -u -z "$MNT" 2>/dev/null
		for f in "k$round-base.qcow2" "k$round-mid.qcow2" "k$round.qcow2" $(ls "k$round-s.qcow2" 2>/dev/null); do
			check "[$job, kill after ${delay}s] $f is valid (leaks at most)" \
				eval "qemu-img check -q '$f' >/dev/null; rc=\$?; [ \$rc = 0 ] || [ \$rc = 3 ]"
		done
		setup mount_qcowfs "$SRC" "$MNT"
		# a kill after the pivot leaves the disk in the base (k-mid, the top's backing file),
		# one after a snapshot's switch in the new overlay (k-s): the writes after it are
		# there, not in the old top
		view=k$round
		if [ $job = snapshot ] && [ -e "k$round-s.qcow2" ] && ! fs python3 "$E2E_HELPER" \
			stamp-durable "$MNT/k$round.raw" "$LOG2" $BLOCKS >"$WORK/top-durable.out" 2>&1; then
			view=k$round-s
			echo "# k$round.raw: $(head -c 300 "$WORK/top-durable.out")"
		fi
		if [ $job = commit ] && ! fs python3 "$E2E_HELPER" stamp-durable "$MNT/k$round.raw" \
			"$LOG2" $BLOCKS >"$WORK/top-durable.out" 2>&1; then
			view=k$round-mid
			echo "# k$round.raw: $(head -c 300 "$WORK/top-durable.out")"
		fi
		check "[$job, kill after ${delay}s] after a remount every fsynced write is in the view ($view.raw)" \
			fs python3 "$E2E_HELPER" stamp-durable "$MNT/$view.raw" "$LOG2" $BLOCKS
		check "[$job, kill after ${delay}s] umount" umount_qcowfs "$MNT"
		if [ $job = snapshot ]; then
			true # nothing to complete: the overlay exists (the view then on it) or not
		elif [ $job = intermediate ]; then
			check "[$job, kill after ${delay}s] the commit run again offline completes it" \
				ctl commit -q --top "k$round-mid.qcow2" "k$round.qcow2"
			check "[$job] ... k$round.qcow2 backs onto k$round-base.qcow2" \
				test "$(lj_backing "k$round.qcow2")" = "k$round-base.qcow2"
		elif [ $job = pull ]; then
			check "[$job, kill after ${delay}s] the pull run again offline completes it" \
				ctl pull -q "k$round.qcow2"
			check "[$job] ... k$round.qcow2 stands alone" test "$(lj_backing "k$round.qcow2")" = ""
		elif [ $view = "k$round-mid" ]; then
			# killed after the pivot: the job was done (the old top is kept, stale; a commit
			# of it now would merge its old data into the disk)
			true
		else
			check "[$job, kill after ${delay}s] the commit run again offline completes it" \
				ctl commit -q "k$round.qcow2"
		fi
		setup mount_qcowfs "$SRC" "$MNT"
		check "[$job, kill after ${delay}s] ... every fsynced write still in the view" \
			fs python3 "$E2E_HELPER" stamp-durable "$MNT/$view.raw" "$LOG2" $BLOCKS
		check "[$job, kill after ${delay}s] umount again" umount_qcowfs "$MNT"
		check "[$job, kill after ${delay}s] qemu-img check after the rerun (leaks repaired)" \
			eval "qemu-img check -q -r leaks '$view.qcow2' >/dev/null; qemu-img check -q '$view.qcow2'"
	done
done

# ---- a live intermediate commit's plan counts what the merged layer holds, the parts the
# layers above hide included (all of it is copied): as the offline plan counts it ----
setup lj_chain3 p
setup qemu-io -f qcow2 -c "write -P 0x33 12M 2M" p.qcow2
setup mk_qcow2 q.qcow2 64M -b p.qcow2 -F qcow2
setup mount_qcowfs "$SRC" "$MNT"
exec 7<>"$MNT/q.raw"
live_plan=$(ctl commit --dry-run --top p-mid.qcow2 q.qcow2 2>&1 | grep "^ *copy ")
exec 7>&-
check "umount after the planned commit" umount_qcowfs "$MNT"
offline_plan=$(ctl commit --dry-run --top p-mid.qcow2 q.qcow2 2>&1 | grep "^ *copy ")
check "the live plan copies what the offline plan copies ($offline_plan)" \
	eval '[ -n "$offline_plan" ] && [ "$live_plan" = "$offline_plan" ] || { echo "live: $live_plan"; false; }'

finish

#!/bin/bash
# ctl-jobs-locks.sh - qcowctl commit, pull and rebase refuse images another process holds for
# writing, naming it, and change no byte: qemu-io holding top, the base or mid (where commit
# writes), and the daemon holding top for an open writable view. On a copy of the std chain
# variant of lib.sh's job_variant_build.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$WORK" || exit 1
jobs_setup
job_variants std

job_fresh locks std
sha_dir "$O" "$C.sha"
# each command on top.qcow2 while qemu-io holds it
if qemu_writer_start "$O/top.qcow2"; then
	for cmd in "commit" "commit --base $O/base.qcow2" "pull" "pull --base base.qcow2" \
		"rebase -b other.qcow2" "rebase -u -b other.qcow2 -F qcow2"; do
		run_to "$C.out" ctl $cmd "$O/top.qcow2"
		check "locks: $cmd refused while qemu-io (pid $QEMU_WRITER_PID) writes top.qcow2, naming it" \
			refused_naming "$C.out" top.qcow2 qemu-io "pid $QEMU_WRITER_PID"
	done
	qemu_writer_stop
else
	fail "locks: qemu-io holds top.qcow2"
fi
# commit writes into the base (and into mid, the default base): refused while qemu-io holds it
for b in base mid; do
	if qemu_writer_start "$O/$b.qcow2"; then
		run_to "$C.out" ctl commit --base "$O/$b.qcow2" "$O/top.qcow2"
		check "locks: commit --base $b.qcow2 refused while qemu-io writes $b.qcow2, naming it" \
			refused_naming "$C.out" $b.qcow2 qemu-io "pid $QEMU_WRITER_PID"
		[ $b = base ] && run_to "$C.out" ctl commit --top "$O/mid.qcow2" "$O/top.qcow2" &&
			check "locks: commit --top mid.qcow2 refused while qemu-io writes base.qcow2, naming it" \
				refused_naming "$C.out" base.qcow2 qemu-io "pid $QEMU_WRITER_PID"
		qemu_writer_stop
	else
		fail "locks: qemu-io holds $b.qcow2"
	fi
done
check "locks: nothing changed (SHA-256 of every file)" files_unchanged "$O" "$C.sha"

# the daemon with top's flat view open for writing
MNT=$WORK/mnt
if mount_qcowfs "$O" "$MNT"; then
	exec 3<>"$MNT/top.raw"
	if eventually qemu_holds_write_lock "$O/top.qcow2"; then
		# (commit and pull run live in the daemon unless --offline: the refusal is its)
		for cmd in "commit --offline" "pull --offline" "rebase -b other.qcow2"; do
			run_to "$C.out" ctl $cmd "$O/top.qcow2"
			check "locks: $cmd refused while the view top.raw is open for writing, naming qcowfs" \
				refused_naming "$C.out" top.qcow2 qcowfs "pid $QCOWFS_PID"
		done
	else
		fail "locks: the daemon takes the write lock of top.qcow2 for an open view"
	fi
	exec 3>&-
	check "locks: the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
else
	fail "locks: mount"
fi
check "locks: nothing changed (SHA-256 of every file)" files_unchanged "$O" "$C.sha"

finish

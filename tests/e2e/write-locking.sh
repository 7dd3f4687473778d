#!/bin/bash
# write-locking.sh - QEMU-compatible locks around writable views. While a writable view
# is open for writing, QEMU cannot open its image, nor any backing file of the chain, for
# writing (`Failed to get "write" lock`), and, as with a QEMU writer, QEMU readers that do not
# share the write permission are refused too, while `-U` readers still work. While the view is
# only open read-only, QEMU readers work and writers are refused. Once every handle is closed the
# image is free for QEMU again. An image that QEMU holds open for writing is served read-only (no
# write bit, opening for writing fails, the log names it), whether QEMU took it before the mount
# or after; it is writable again once QEMU lets go.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC=$WORK/src
MNT=$WORK/mnt
MODELS=$WORK/models
mkdir -p "$SRC" "$MODELS"
cd "$SRC" || exit 1

setup qemu-img create -q -f qcow2 base.qcow2 4M
setup qio base.qcow2 "write -P 0x11 0 4M"
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
setup qio top.qcow2 "write -P 0x12 1M 64k"
setup qemu-img create -q -f qcow2 busy.qcow2 4M
setup qio busy.qcow2 "write -P 0x21 0 64k"
setup qemu-img create -q -f qcow2 late.qcow2 4M
setup qio late.qcow2 "write -P 0x31 0 64k"
setup make_model top.qcow2 "$MODELS/top.raw"
sha_of base.qcow2 >"$WORK/backing.sha"

# QEMU must not be able to read a consistent image while we write (it does not share "write"):
# a reader without -U is refused, as when a VM runs
qemu_read_refused()
{
	local out
	if out=$(qemu-img info "$1" 2>&1); then
		echo "qemu-img info (without -U) opened $1 while it is open for writing:"
		echo "$out" | head -n 5
		return 1
	fi
	grep -qF 'lock' <<<"$out" || { echo "qemu-img info failed, but not on a lock:"; echo "$out"; return 1; }
}

# qemu-io started before the mount holds busy.qcow2 for writing
qemu_writer_start "$SRC/busy.qcow2" || bail "cannot start the QEMU writer"
mount_qcowfs "$SRC" "$MNT" || bail "mount failed"

# ---- a writable view open for writing
exec 8<>"$MNT/top.raw" || bail "cannot open top.raw read-write"
check "top.raw: a write through the open handle" write_both "$MNT/top.raw" "$MODELS/top.raw" w:100:5000:1 f
write_fd8() { printf 'qcowfs' >&8; }
check "top.raw: a write through the shell's read-write handle" write_fd8
printf 'qcowfs' | dd of="$MODELS/top.raw" conv=notrunc status=none
check "while top.raw is open for writing, qemu-io cannot write top.qcow2 (write lock)" \
	qemu_write_refused top.qcow2
check "while top.raw is open for writing, qemu-io cannot write its backing file base.qcow2" \
	qemu_write_refused base.qcow2
check "while top.raw is open for writing, qemu-img info without -U is refused (write not shared)" \
	qemu_read_refused top.qcow2
check "while top.raw is open for writing, qemu-img info -U works" qemu-img info -U top.qcow2
check "while top.raw is open for writing, QEMU may read base.qcow2" qemu-img info base.qcow2
exec 8<&-

# ---- the same view open read-only only
exec 7<"$MNT/top.raw" || bail "cannot open top.raw read-only"
head -c 4096 <&7 >/dev/null
# (the write handle's release may reach the daemon a little after close returns)
check "while top.raw is only open read-only, qemu-img info without -U works" \
	eventually qemu-img info top.qcow2
check "while top.raw is only open read-only, qemu-io cannot write top.qcow2 (write lock)" \
	qemu_write_refused top.qcow2
check "while top.raw is only open read-only, qemu-io cannot write base.qcow2" \
	qemu_write_refused base.qcow2
exec 7<&-

# ---- closed: free for QEMU, and the view follows what QEMU wrote
check "top.raw holds the expected bytes" view_is_model "$MNT/top.raw" "$MODELS/top.raw"
check "after every handle closed, qemu-io can write top.qcow2 while mounted" \
	eventually qio top.qcow2 "write -P 0x13 2M 4k"
setup qio_raw "$MODELS/top.raw" "write -P 0x13 2M 4k"
check "top.raw shows what qemu-io wrote" view_is_model "$MNT/top.raw" "$MODELS/top.raw"
check "top.raw is still writable after QEMU wrote the image" expect_writable_mode "$MNT/top.raw"
check "top.raw: writes succeed after QEMU wrote the image" \
	write_both "$MNT/top.raw" "$MODELS/top.raw" w:3M:10000:2 f

# ---- an image QEMU holds for writing (since before the mount) is served read-only
check "busy.raw is shown" expect_exists "$MNT/busy.raw"
check "busy.raw (QEMU holds busy.qcow2 for writing) has no write bit" expect_readonly_mode "$MNT/busy.raw"
check "busy.raw refuses to open for writing" expect_open_fails "$MNT/busy.raw" EROFS rw
check "the log names busy.qcow2" log_names "$QCOWFS_LOG" busy.qcow2
check "qemu-io still holds busy.qcow2 (the daemon did not break its lock)" \
	qemu_holds_write_lock "$SRC/busy.qcow2"
qemu_writer_stop
check "once QEMU let go, busy.raw is writable" expect_writable_mode "$MNT/busy.raw"
check "busy.raw opens for writing" expect_open_fails "$MNT/busy.raw" ok rw

# ---- QEMU takes late.qcow2 for writing after the mount (its view not open)
check "late.raw is writable before QEMU takes the image" expect_writable_mode "$MNT/late.raw"
qemu_writer_start "$SRC/late.qcow2" || bail "cannot start the QEMU writer"
check "late.raw: opening for writing fails while QEMU writes the image" \
	expect_open_fails "$MNT/late.raw" EROFS rw
check "late.raw has no write bit while QEMU writes the image" expect_readonly_mode "$MNT/late.raw"
check "qemu-io still holds late.qcow2" qemu_holds_write_lock "$SRC/late.qcow2"
qemu_writer_stop
check "late.raw opens for writing once QEMU let go" expect_open_fails "$MNT/late.raw" ok rw

check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
check "top.qcow2: qemu-img check finds no error and no leak" image_clean top.qcow2
check "top.qcow2: qemu-img convert equals the model" image_is_model top.qcow2 "$MODELS/top.raw"
check "busy.qcow2 and late.qcow2 check clean" bash -c "qemu-img check -q busy.qcow2 && qemu-img check -q late.qcow2"
check "the backing file is unchanged (SHA-256)" sha_unchanged "$WORK/backing.sha"
check "after unmount, qemu-io can write top.qcow2 and base.qcow2" \
	bash -c "qemu-io -c 'write 0 512' top.qcow2 >/dev/null && qemu-io -c 'write 0 512' base.qcow2 >/dev/null"
finish

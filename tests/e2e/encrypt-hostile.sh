#!/bin/bash
# encrypt-hostile.sh - a LUKS header whose key slot asks for an absurd PBKDF2 iteration count
# (2^31 - 1: half an hour or more of CPU per try) must not block qcowctl or the daemon: with
# the image's key given, qcowctl refuses it at once with one line naming the image, and qcowfs
# mounts, refuses that image (the log names it) and serves the others. qemu-img info is the
# oracle that the patched header says what the test means it to say, and a sibling image with
# a sane header and the same key still opens (the bound does not refuse QEMU's own images).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC=$WORK/src
MNT=$WORK/mnt
KEY=$WORK/key
mkdir -p "$SRC"
cd "$SRC" || exit 1
printf 'correct horse battery staple' >"$KEY"
chmod 600 "$KEY"

setup luks_create slow.qcow2 4M "$KEY"
setup luks_create sane.qcow2 4M "$KEY"
setup enc_qio sane.qcow2 "$KEY" "write -P 0x5a 0 1M"

# slot 0's iteration count: 4 bytes at 212 into the LUKS phdr
luks_at=$(LC_ALL=C grep -obaP 'LUKS\xba\xbe' slow.qcow2 | head -n 1 | cut -d: -f1)
setup test -n "$luks_at"
setup put_be slow.qcow2 $((luks_at + 212)) 4 2147483647
# slow_slot_iters: what qemu-img info reads as slot 0's iterations
slow_slot_iters()
{
	qemu-img info --output=json slow.qcow2 |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["format-specific"]["data"]["encrypt"]["slots"][0]["iters"])'
}
check "qemu-img reads the patched slot as 2147483647 iterations" \
	test "$(slow_slot_iters)" = 2147483647

check "qcowctl checksum with the key refuses the hostile slot at once, naming the image" \
	ctl_fails_fast slow.qcow2 checksum --key slow.qcow2="$KEY" slow.qcow2
check "the sane image still opens with the same key" \
	ctl checksum --key sane.qcow2="$KEY" sane.qcow2

# qcowctl_refuses_long_iter_time: create does not make an image whose unlock the bound above
# would refuse (an iter-time of 60 s): it fails at once, one line, and leaves no file
qcowctl_refuses_long_iter_time()
{
	ctl_fails_fast encrypt.iter-time create -f qcow2 \
		-o encrypt.format=luks,encrypt.iter-time=60000 --key long.qcow2="$KEY" \
		long.qcow2 4M || return 1
	[ ! -e long.qcow2 ] || { echo "long.qcow2 was left behind"; return 1; }
}
check "create refuses an iter-time whose unlock would be refused" qcowctl_refuses_long_iter_time

check "qcowfs mounts with a key for the hostile image" mount_qcowfs "$SRC" "$MNT" \
	--key slow.qcow2="$KEY" --key sane.qcow2="$KEY"
check "the sane image's view equals qemu-img convert with the secret" \
	enc_same_as_qemu "$MNT/sane.raw" "$SRC/sane.qcow2" "$KEY"
check "the hostile image has no view" expect_absent "$MNT/slow.raw"
check "the log names the hostile image" log_names "$QCOWFS_LOG" "$SRC/slow.qcow2"
check_not "no passphrase in the log" grep -qF "correct horse" "$QCOWFS_LOG"
check "unmounts cleanly" umount_qcowfs "$MNT"
check "no sanitizer report" log_clean "$QCOWFS_LOG"
finish

#!/bin/bash
# live-fio.sh - fio writing and verifying (crc32c, each block read back through the view
# shortly after it is written) on a view while every live job runs on its chain, through
# the mount's daemon: an internal snapshot, an intermediate commit, an external snapshot
# (fio's open handle goes on writing into the new top), a pull and an active commit with
# pivot (fio's handle goes on writing into the base). fio must see no error and no
# verification failure; afterwards qemu-img check is clean on every image, and the disk the
# view ended on (base.qcow2 after the pivot) is, by qemu-img compare, what the view showed.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root
require_cmd fio
SRC=$WORK/src
MNT=$WORK/mnt
mkdir -p "$SRC"
cd "$SRC" || exit 1

setup mk_qcow2 base.qcow2 64M
setup qio base.qcow2 "write -P 0x11 0 48M"
setup mk_qcow2 mid.qcow2 64M -b base.qcow2 -F qcow2
setup qio mid.qcow2 "write -P 0x22 8M 16M"
setup mk_qcow2 vm.qcow2 64M -b mid.qcow2 -F qcow2
setup mount_qcowfs "$SRC" "$MNT"

cat >"$WORK/live.fio" <<JOB
[global]
ioengine=psync
direct=0
fallocate=none
verify=crc32c
verify_backlog=16
verify_fatal=1
randseed=1414
time_based=1
runtime=25
rate_iops=400
fsync=32

[live]
filename=$MNT/vm.raw
rw=randwrite
bs=4k
offset=0
size=32M
JOB
fs_t 120 fio --output="$WORK/fio.out" "$WORK/live.fio" &
FIO=$!
track_pid "$FIO"
sleep 2

check "an internal snapshot, taken live while fio writes" ctl snapshot create -q vm.qcow2 s1
check "an intermediate commit (mid into base), live" ctl commit -q --top mid.qcow2 vm.qcow2
check "an external snapshot (fio goes on into vm-2), live" \
	ctl snapshot create --external -q vm.qcow2 vm-2.qcow2
sleep 1
check "a pull (vm into vm-2), live" ctl pull -q --base base.qcow2 vm-2.qcow2
sleep 1
check "an active commit with pivot (vm-2 into base, fio goes on into base), live" \
	ctl commit -q --pivot --force vm-2.qcow2
fio_rc=0
wait "$FIO" || fio_rc=$?
check "fio wrote and verified every block through all five jobs (exit $fio_rc)" \
	eval '[ $fio_rc = 0 ] || { grep -iE "err|verify|bad|fail" "$WORK/fio.out" | head -20; false; }'
check "fio read back (verified) blocks while writing" eval 'grep -qE "issued rwts: total=[1-9][0-9]*," "$WORK/fio.out"'
setup fs cp "$MNT/base.raw" "$WORK/base.view"
check "the daemon unmounts" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
for f in base.qcow2 vm.qcow2 vm-2.qcow2; do
	check "$f: qemu-img check is clean" image_clean "$f"
done
check "base.qcow2, the disk after the pivot, is what its view showed" \
	image_is_model base.qcow2 "$WORK/base.view"
check "qemu-img snapshot -l vm.qcow2 lists s1" bash -c "qemu-img snapshot -l vm.qcow2 | grep -qw s1"
finish

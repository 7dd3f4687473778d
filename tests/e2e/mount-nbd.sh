#!/bin/bash
# mount-nbd.sh - views served beyond one machine: a flat view is a file, so qemu-nbd serves it
# over the network. Two network namespaces joined by a veth pair stand for two hosts: in one,
# qemu-nbd -f raw serves the view of a two-layer chain, read-only (-r), then read-write
# (--shared=2); from the other, qemu-img convert nbd://... reads it (equal to qemu-img convert
# of the chain), qemu-io -f raw nbd://... writes to it (refused by the read-only export). The
# writes land copy-on-write in the chain's top image: qemu-io on the image reads them back,
# the rest of a partly written cluster still shows the base, the base file is unchanged, and
# qemu-img check finds the image clean.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root "network namespaces"
require_cmd ip qemu-nbd sha256sum

SRC=$WORK/src
MNT=$WORK/mnt
mkdir -p "$SRC"
cd "$SRC" || exit 1

setup qemu-img create -q -f qcow2 base.qcow2 8M
setup qio base.qcow2 "write -P 0x11 0 8M"
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
setup qio top.qcow2 "write -P 0x22 1M 64k"
setup qemu-img convert -O raw top.qcow2 "$WORK/expected.raw"
sha_of base.qcow2 >"$WORK/base.sha"

# two "hosts": unique names (interface names have at most 15 bytes), removed by the trap
NS_SRV=qfs-nbd-srv-$$
NS_CLI=qfs-nbd-cli-$$
VETH_S=qfsn$$s
VETH_C=qfsn$$c
# nbd_net_down: remove the namespaces and the veth pair (each may be gone already)
nbd_net_down()
{
	ip netns del "$NS_SRV" 2>/dev/null
	ip netns del "$NS_CLI" 2>/dev/null
	ip link del "$VETH_S" 2>/dev/null
	return 0
}
on_cleanup nbd_net_down
ip netns add "$NS_SRV" 2>/dev/null || missing_prereq "ip netns (network namespaces)"
ip netns add "$NS_CLI" 2>/dev/null || missing_prereq "ip netns (network namespaces)"
ip link add "$VETH_S" type veth peer name "$VETH_C" 2>/dev/null || missing_prereq "veth links"
setup ip link set "$VETH_S" netns "$NS_SRV"
setup ip link set "$VETH_C" netns "$NS_CLI"
setup ip -n "$NS_SRV" addr add 10.213.77.1/30 dev "$VETH_S"
setup ip -n "$NS_CLI" addr add 10.213.77.2/30 dev "$VETH_C"
setup ip -n "$NS_SRV" link set lo up
setup ip -n "$NS_SRV" link set "$VETH_S" up
setup ip -n "$NS_CLI" link set "$VETH_C" up
URL=nbd://10.213.77.1:10809/view

mount_qcowfs "$SRC" "$MNT" || bail "mount failed"

# nbd_serve ARGS...: qemu-nbd serving the view in the server namespace (persistent, export
# "view"), until it answers from the client namespace; its pid in NBD_PID
nbd_serve()
{
	local i
	ip netns exec "$NS_SRV" qemu-nbd -f raw -t -b 10.213.77.1 -p 10809 -x view "$@" \
		"$MNT/top.raw" </dev/null >"$WORK/qemu-nbd.log" 2>&1 &
	NBD_PID=$!
	track_pid "$NBD_PID"
	for ((i = 0; i < 100; i++)); do
		ip netns exec "$NS_CLI" qemu-img info "$URL" >/dev/null 2>&1 && return 0
		kill -0 "$NBD_PID" 2>/dev/null || break
		sleep 0.1
	done
	cat "$WORK/qemu-nbd.log"
	return 1
}

# nbd_stop: end qemu-nbd (it closes the view)
nbd_stop()
{
	kill "$NBD_PID" 2>/dev/null
	wait "$NBD_PID" 2>/dev/null
	return 0
}

# cli COMMAND...: run in the client namespace, bounded in time
cli()
{
	fs ip netns exec "$NS_CLI" "$@"
}

# ---- read-only ----
setup nbd_serve -r
check "read-only export: qemu-img convert over nbd:// equals the chain" \
	cli qemu-img convert -f raw -O raw "$URL" "$WORK/ro.raw"
check "... byte for byte" cmp "$WORK/ro.raw" "$WORK/expected.raw"
check_not "read-only export: a write over nbd:// is refused" \
	cli qemu-io -f raw -c "write -P 0x33 0 4k" "$URL"
nbd_stop

# ---- read-write ----
setup nbd_serve --shared=2
check "read-write export: qemu-io writes a cluster over nbd://" \
	cli qemu-io -f raw -c "write -P 0xab 2M 64k" "$URL"
check "read-write export: and 512 bytes inside another cluster" \
	cli qemu-io -f raw -c "write -P 0xcd 3146240 512" "$URL"
check "the writes read back over nbd://" \
	cli qemu-io -f raw -c "read -P 0xab 2M 64k" -c "read -P 0xcd 3146240 512" "$URL"
check "qemu-img convert over nbd:// still reads the rest of the chain" \
	bash -c "ip netns exec '$NS_CLI' qemu-img convert -f raw -O raw '$URL' '$WORK/rw.raw' &&
		cmp -n 1048576 '$WORK/rw.raw' '$WORK/expected.raw' &&
		cmp -i 1048576:1048576 -n 65536 '$WORK/rw.raw' '$WORK/expected.raw'"
nbd_stop

# the daemon writes back and lets go of the image once the view's last handle closes
# top_released: no process holds QEMU's write permission on top.qcow2
top_released()
{
	! qemu_holds_write_lock "$SRC/top.qcow2"
}
check "the daemon releases top.qcow2" eventually top_released
qio_read_top()
{
	qemu-io -r -f qcow2 -c "read -P 0xab 2M 64k" -c "read -P 0xcd 3146240 512" \
		-c "read -P 0x11 3145728 512" -c "read -P 0x11 3146752 64512" \
		-c "read -P 0x22 1M 64k" "$SRC/top.qcow2" | grep -v "^read\|ops/sec"
	[ "${PIPESTATUS[0]}" = 0 ]
}
check "qemu-io on top.qcow2 reads the writes, and the base around them" qio_read_top
top_allocated()
{
	qemu-io -r -f qcow2 -c "alloc 2M 64k" -c "alloc 3M 64k" "$SRC/top.qcow2" | tee /dev/stderr |
		grep -c "65536/65536 bytes allocated" | grep -qx 2
}
check "the written clusters are allocated in top.qcow2 (copy-on-write)" top_allocated
check "base.qcow2 is unchanged" sha256sum --quiet -c "$WORK/base.sha"
check "qemu-img check: top.qcow2 is clean" image_clean "$SRC/top.qcow2"
check "unmount" umount_qcowfs "$MNT"
check "daemon log clean" log_clean "$QCOWFS_LOG"
finish

#!/usr/bin/env bash
# demo.sh - build a small qcow2 chain holding an ext4 filesystem and mount it with qcowfs.
#
#   bash scripts/demo.sh [DIR]      # DIR defaults to ./demo; it is recreated on every run
#
# The chain is what a libvirt guest with two external snapshots looks like:
#
#   DIR/src/base.qcow2    the installed guest (ext4 made with mkfs.ext4 -d, no mount needed)
#   DIR/src/snap1.qcow2   external snapshot on base: a config file added, a log grown
#   DIR/src/snap2.qcow2   external snapshot on snap1, with internal snapshot "before-upgrade";
#                         after it the "upgrade" changed /app/VERSION and added /app/CHANGELOG
#
# Each layer holds only what changed: the new filesystem state is made on a scratch raw copy
# with debugfs, and `qemu-img rebase` keeps just the clusters that differ from the layer below.
# Then `qcowfs DIR/src DIR/mnt` shows every point in time as a flat raw file.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEMO=${1:-$ROOT/demo}
QCOWFS=${QCOWFS:-$ROOT/build/fs/qcowfs}
export PATH="$PATH:/usr/sbin:/sbin"

log() { printf 'demo: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ -x "$QCOWFS" ] || die "'$QCOWFS' is not built: run 'bash scripts/setup.sh' first"
for c in qemu-img mkfs.ext4 debugfs fusermount3 mountpoint; do
	command -v "$c" >/dev/null 2>&1 || die "'$c' is missing: run 'bash scripts/setup.sh' first"
done

# ---- start from nothing: unmount and remove an earlier demo ----
if [ -e "$DEMO" ]; then
	if mountpoint -q "$DEMO/mnt" 2>/dev/null; then
		log "unmounting the previous demo at $DEMO/mnt"
		fusermount3 -u "$DEMO/mnt" 2>/dev/null || fusermount3 -uz "$DEMO/mnt"
	fi
	# A daemon whose mount died leaves "Transport endpoint is not connected" behind.
	if ! stat "$DEMO/mnt" >/dev/null 2>&1; then
		fusermount3 -uz "$DEMO/mnt" 2>/dev/null || umount -l "$DEMO/mnt" 2>/dev/null || true
	fi
	rm -rf "$DEMO"
fi
mkdir -p "$DEMO/src" "$DEMO/mnt" "$DEMO/work/files"
DEMO=$(cd "$DEMO" && pwd)
cd "$ROOT"
SRC=$DEMO/src
WORK=$DEMO/work

# ---- the installed guest: a 64 MiB disk with an ext4 filesystem ----
F=$WORK/files
mkdir -p "$F/etc" "$F/app" "$F/var/log" "$F/home/ops"
printf 'web01\n' >"$F/etc/hostname"
printf 'Welcome to web01 (qcowfs demo guest).\n' >"$F/etc/motd"
printf '1.0\n' >"$F/app/VERSION"
printf '2026-01-05 10:00:00 app started, version 1.0\n' >"$F/var/log/app.log"
printf 'Disk layout: one ext4 filesystem, no partition table.\n' >"$F/home/ops/notes.txt"

log "creating the guest filesystem"
truncate -s 64M "$WORK/disk.raw"
mkfs.ext4 -q -F -L demo-root -d "$F" "$WORK/disk.raw"
qemu-img convert -q -f raw -O qcow2 -o cluster_size=64k "$WORK/disk.raw" "$SRC/base.qcow2"

# debugfs_edit RAW CMD... - run debugfs write commands (one per argument) on a raw image.
debugfs_edit() {
	local raw=$1
	shift
	printf '%s\n' "$@" >"$WORK/debugfs.cmds"
	debugfs -w -f "$WORK/debugfs.cmds" "$raw" >/dev/null 2>"$WORK/debugfs.err" ||
		die "debugfs failed: $(cat "$WORK/debugfs.err")"
}

# overlay_from_raw RAW NAME BACKING - make NAME.qcow2 on BACKING (in $SRC) holding only
# the clusters where RAW differs from BACKING's flat view: an overlay on RAW, rebased
# (safely) onto BACKING, copies exactly those clusters into itself.
overlay_from_raw() {
	local raw=$1 name=$2 backing=$3
	(
		cd "$SRC"
		qemu-img create -q -f qcow2 -o cluster_size=64k -b "$raw" -F raw "$name" 64M
		qemu-img rebase -q -f qcow2 -b "$backing" -F qcow2 "$name"
	)
}

log "external snapshot snap1: config added, log grown"
cp "$WORK/disk.raw" "$WORK/t1.raw"
printf 'listen = 0.0.0.0:8080\nworkers = 4\n' >"$WORK/app.conf"
cp "$F/var/log/app.log" "$WORK/app.log"
printf '2026-01-06 09:12:44 config changed: workers = 4\n' >>"$WORK/app.log"
debugfs_edit "$WORK/t1.raw" \
	"write $WORK/app.conf /etc/app.conf" \
	"rm /var/log/app.log" "write $WORK/app.log /var/log/app.log"
overlay_from_raw "$WORK/t1.raw" snap1.qcow2 base.qcow2

log "external snapshot snap2 with internal snapshot 'before-upgrade', then the upgrade"
cp "$WORK/t1.raw" "$WORK/t2.raw"
printf '2026-01-07 23:59:01 backup finished\n' >>"$WORK/app.log"
debugfs_edit "$WORK/t2.raw" "rm /var/log/app.log" "write $WORK/app.log /var/log/app.log"
overlay_from_raw "$WORK/t2.raw" snap2.qcow2 snap1.qcow2
qemu-img snapshot -c before-upgrade "$SRC/snap2.qcow2"

# The upgrade is written into snap2's active layer: a temporary overlay on snap2 holding the
# difference, committed down into snap2 (the internal snapshot keeps the old state).
cp "$WORK/t2.raw" "$WORK/t3.raw"
printf '2.0\n' >"$WORK/VERSION"
printf '2.0: new worker pool\n1.0: first release\n' >"$WORK/CHANGELOG"
printf '2026-01-08 02:00:00 app upgraded to 2.0\n' >>"$WORK/app.log"
debugfs_edit "$WORK/t3.raw" \
	"rm /app/VERSION" "write $WORK/VERSION /app/VERSION" \
	"write $WORK/CHANGELOG /app/CHANGELOG" \
	"rm /var/log/app.log" "write $WORK/app.log /var/log/app.log"
overlay_from_raw "$WORK/t3.raw" upgrade.qcow2 snap2.qcow2
qemu-img commit -q -f qcow2 "$SRC/upgrade.qcow2"
rm -f "$SRC/upgrade.qcow2"
rm -rf "$WORK"

# ---- mount ----
log "mounting: $QCOWFS $SRC $DEMO/mnt"
"$QCOWFS" "$SRC" "$DEMO/mnt" </dev/null
for _ in $(seq 1 100); do
	mountpoint -q "$DEMO/mnt" && break
	sleep 0.1
done
mountpoint -q "$DEMO/mnt" ||
	die "qcowfs did not mount within 10 s; to see why, run: $QCOWFS -f $SRC $DEMO/mnt"

# ---- what to look at ----
rel=${DEMO#"$ROOT"/}
say() { printf '%s\n' "$*"; }
say ""
say "qcowfs is serving $rel/src at $rel/mnt:"
say ""
say "\$ ls -l $rel/mnt"
ls -l "$DEMO/mnt"
say ""
say "The guest's /app/VERSION now and before the upgrade:"
say "\$ debugfs -R 'cat /app/VERSION' $rel/mnt/snap2.raw"
debugfs -R 'cat /app/VERSION' "$DEMO/mnt/snap2.raw" 2>/dev/null
say "\$ debugfs -R 'cat /app/VERSION' $rel/mnt/snap2@before-upgrade.raw"
debugfs -R 'cat /app/VERSION' "$DEMO/mnt/snap2@before-upgrade.raw" 2>/dev/null
cat <<EOF

More to try (from $ROOT):
  build/tools/qcowctl info --chain $rel/src/snap2.qcow2
  debugfs -R 'ls -l /' $rel/mnt/snap2.raw
  debugfs -R 'cat /var/log/app.log' $rel/mnt/snap1.raw
  qemu-img compare -f qcow2 -F raw $rel/src/snap1.qcow2 $rel/mnt/snap1.raw

Mount the guest filesystem read-only through a loop device (root):
  dev=\$(losetup -r --find --show $rel/mnt/snap2.raw)
  mkdir -p /tmp/guest && mount -o ro,noload "\$dev" /tmp/guest && ls /tmp/guest/app
  umount /tmp/guest && losetup -d "\$dev"

snap2.raw is writable (snap2.qcow2 is the top of its chain): mount it read-write, change a
file, and the change lands copy-on-write in snap2.qcow2 alone (root):
  dev=\$(losetup --find --show $rel/mnt/snap2.raw)
  mount "\$dev" /tmp/guest && echo 3.0 > /tmp/guest/app/VERSION && umount /tmp/guest
  losetup -d "\$dev" && debugfs -R 'cat /app/VERSION' $rel/mnt/snap2.raw

Unmount when done:
  fusermount3 -u $rel/mnt
EOF

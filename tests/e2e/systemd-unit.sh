#!/bin/bash
# systemd-unit.sh - the template unit qcowfs@.service (dist/qcowfs@.service.in, as the build
# configures it) and the daemon's stop on a signal, which the unit relies on:
#   - `systemd-analyze verify` accepts an instance of the unit (its ExecStart pointed at the
#     built daemon), and refuses it once a line is broken (the check can fail);
#   - the unit's ExecStart, expanded as systemd expands it (%f the unescaped instance path,
#     $OPTIONS split into words, ${MOUNTPOINT} one word, $$ a dollar) for an instance made by
#     `systemd-escape --path` and the environment file of the man page, mounts SOURCE in the
#     foreground, with the view the same bytes as `qemu-img convert`; its ExecStartPost
#     succeeds once mounted;
#   - SIGTERM (systemctl stop), SIGINT and SIGHUP make the daemon unmount and exit with 0;
#   - ExecStopPost cleans up the mount of a daemon killed with SIGKILL, and leaves another
#     file system mounted there alone.
# No running systemd is needed (CI machines have none).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_cmd systemd-analyze systemd-escape
BUILD=$(cd "$(dirname "$QCOWFS")/.." && pwd)
UNIT=$BUILD/dist/qcowfs@.service
[ -f "$UNIT" ] || bail "no $UNIT: the build configures it"

SRC="$WORK/source dir"
MNT=$WORK/mnt
mkdir -p "$SRC" "$MNT" "$WORK/units"
setup qemu-img create -q -f qcow2 "$SRC/vm.qcow2" 4M
setup qemu-io -c 'write -P 0x5a 0 1M' -c 'write -P 0xa5 3M 512k' "$SRC/vm.qcow2"
setup qemu-img convert -O raw "$SRC/vm.qcow2" "$WORK/vm.expected"

INSTANCE=$(systemd-escape --path "$SRC")
check "the instance name of SOURCE unescapes to SOURCE" \
	test "$(systemd-escape --unescape --path "$INSTANCE")" = "$SRC"

# ---- systemd-analyze verify, on the unit as built with ExecStart's daemon the built one
installed_daemon=$(sed -n 's/^ExecStart=\([^ ]*\) .*/\1/p' "$UNIT")
check "ExecStart runs the daemon of the install's bindir" test "${installed_daemon##*/}" = qcowfs
sed "s|^ExecStart=$installed_daemon |ExecStart=$QCOWFS |" "$UNIT" >"$WORK/units/qcowfs@.service"

# verify_unit DIR: systemd-analyze verify of an instance of DIR/qcowfs@.service, which must
# say nothing
verify_unit()
{
	local out
	out=$(systemd-analyze verify --man=no "$1/qcowfs@$INSTANCE.service" 2>&1) || {
		echo "$out"
		return 1
	}
	[ -z "$out" ] || { echo "$out"; return 1; }
}
check "systemd-analyze verify accepts qcowfs@$INSTANCE.service" verify_unit "$WORK/units"
mkdir -p "$WORK/broken"
sed 's/^ExecStart=/ExecStart=no such program /' "$WORK/units/qcowfs@.service" \
	>"$WORK/broken/qcowfs@.service"
check_not "systemd-analyze verify refuses a broken copy" verify_unit "$WORK/broken"

# ---- the command lines, expanded as systemd would
# the environment file of the man page
printf 'MOUNTPOINT=%s\nOPTIONS=-o ro -o readahead_kb=0\n' "$MNT" >"$WORK/$INSTANCE.conf"
MOUNTPOINT=$(sed -n 's/^MOUNTPOINT=//p' "$WORK/$INSTANCE.conf")
OPTIONS=$(sed -n 's/^OPTIONS=//p' "$WORK/$INSTANCE.conf")
export MOUNTPOINT OPTIONS

# unit_command KEY: the words of the unit's KEY= line, expanded (NUL-separated)
unit_command()
{
	python3 - "$WORK/units/qcowfs@.service" "$1" "$SRC" "$INSTANCE" <<'EOF'
import os, re, shlex, sys
unit, key, source, instance = sys.argv[1:]
line = next(l for l in open(unit) if l.startswith(key + "="))[len(key) + 1:].strip()
line = line.lstrip("-")
words = []
for w in shlex.split(line):
    w = w.replace("%f", source).replace("%i", instance).replace("%%", "%")
    if w == "$OPTIONS":
        words += os.environ["OPTIONS"].split()
        continue
    w = re.sub(r"\$\{(\w+)\}", lambda m: os.environ.get(m.group(1), ""), w)
    words.append(w.replace("$$", "$"))
sys.stdout.write("\0".join(words))
EOF
}

# start_as_unit: run ExecStart in the background as the service's main process, with every
# signal's default action as systemd gives it (bash would start it with SIGINT ignored); sets PID
start_as_unit()
{
	local -a cmd
	mapfile -d '' -t cmd < <(unit_command ExecStart)
	track_mount "$MNT"
	env --default-signal "${cmd[@]}" </dev/null >"$WORK/daemon.log" 2>&1 &
	PID=$!
	track_pid "$PID"
	_e2e_mount_pid[$MNT]=$PID
}

# start_post: ExecStartPost, which waits (at most 10 s) for the mount
start_post()
{
	local -a cmd
	mapfile -d '' -t cmd < <(unit_command ExecStartPost)
	"${cmd[@]}"
}

# stopped_by SIGNAL: the daemon, sent SIGNAL, exits with 0 within 10 s and its mount is gone
stopped_by()
{
	local i rc
	kill -"$1" "$PID"
	for ((i = 0; i < 100; i++)); do
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$PID" 2>/dev/null; then
		echo "the daemon still runs 10 s after SIG$1"
		return 1
	fi
	wait "$PID"
	rc=$?
	[ "$rc" = 0 ] || { echo "exit status $rc"; cat "$WORK/daemon.log"; return 1; }
	if mountpoint -q "$MNT"; then
		echo "$MNT is still mounted"
		return 1
	fi
}

for sig in TERM INT HUP; do
	start_as_unit
	check "SIG$sig: ExecStartPost succeeds once mounted" start_post
	check "SIG$sig: the view is qemu-img's flat image" fs cmp "$MNT/vm.raw" "$WORK/vm.expected"
	check_not "SIG$sig: the view is read-only as OPTIONS says" fs test -w "$MNT/vm.raw"
	check "SIG$sig: the daemon unmounts and exits with 0" stopped_by "$sig"
done

# ---- a daemon killed outright leaves its mount: ExecStopPost takes it away
start_as_unit
setup start_post
kill -KILL "$PID"
wait "$PID" 2>/dev/null
check "after SIGKILL the mount is left behind" mountpoint -q "$MNT"
stop_post()
{
	local -a cmd
	mapfile -d '' -t cmd < <(unit_command ExecStopPost)
	"${cmd[@]}"
	! mountpoint -q "$MNT"
}
check "ExecStopPost unmounts it" stop_post
# another file system on the mount point is left alone
if [ "$(id -u)" = 0 ]; then
	setup mount -t tmpfs -o size=1M qcowfs-test "$MNT"
	track_kmount "$MNT"
	stop_post_spares()
	{
		local -a cmd
		mapfile -d '' -t cmd < <(unit_command ExecStopPost)
		"${cmd[@]}"
		[ "$(findmnt -n -o FSTYPE --mountpoint "$MNT")" = tmpfs ]
	}
	check "ExecStopPost leaves a tmpfs on the mount point mounted" stop_post_spares
	setup umount "$MNT"
fi

# ---- ExecStartPost fails (and does not hang) when nothing gets mounted
MOUNTPOINT=$WORK/not-mounted
mkdir -p "$MOUNTPOINT"
check_not "ExecStartPost fails within its bound when nothing is mounted" fs_t 30 start_post

finish

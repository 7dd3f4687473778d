#!/bin/bash
# mount-log.sh - where the daemon's log goes. --log-file PATH: every line appended to PATH with
# a timestamp and the daemon's pid, the file opened before the daemon detaches (a PATH that
# cannot be written is refused on the command line, nothing mounted) and opened again on SIGHUP
# (logrotate moves the file, then signals: new lines go to the new file, the daemon keeps
# serving). Detached without --log-file and with no syslog socket, the lines go to the stderr
# the daemon was started with (they were lost before). The refusal of a truncated image is the
# line each case looks for.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_cmd unshare

SRC=$WORK/src
MNT=$WORK/mnt
MNT2=$WORK/mnt2
LOG=$WORK/logs/qcowfs.log
mkdir -p "$SRC" "$MNT" "$MNT2" "$WORK/logs"
cd "$WORK" || exit 1 # --log-file is given relative: the daemon makes it absolute
setup qemu-img create -q -f qcow2 "$SRC/good.qcow2" 1M
head -c 50 "$SRC/good.qcow2" >"$SRC/trunc1.qcow2"

# daemon_pid_of MNT: the pid the status file of the mount at MNT names
daemon_pid_of()
{
	python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["pid"])' \
		"$1/.qcowfs-status.json"
}

# ---- a bad --log-file ----

check_not "--log-file naming a directory is refused" "$QCOWFS" --log-file "$WORK/logs" "$SRC" "$MNT"
check "... with one line naming the option" \
	bash -c "'$QCOWFS' --log-file '$WORK/logs' '$SRC' '$MNT' 2>&1 | grep -c . | grep -qx 1 &&
		'$QCOWFS' --log-file '$WORK/logs' '$SRC' '$MNT' 2>&1 | grep -q -- '--log-file'"
check_not "... and nothing is mounted" mountpoint -q "$MNT"

# ---- --log-file, detached ----

track_mount "$MNT"
check "qcowfs --log-file detaches after mounting" \
	timeout 20 "$QCOWFS" --log-file "logs/qcowfs.log" "$SRC" "$MNT" </dev/null
mountpoint -q "$MNT" || bail "not mounted"
PID=$(fs daemon_pid_of "$MNT") || bail "no pid in the status file"
track_pid "$PID"
check "the log file exists before any message" test -f "$LOG"
fs ls "$MNT" >/dev/null

# log_line_in FILE NAME: FILE has a timestamped line of this daemon refusing NAME
log_line_in()
{
	grep -E "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z qcowfs\[$PID\]: refusing '[^']*/$2'" "$1" ||
		{ sed 's/^/  /' "$1"; return 1; }
}
check "the refusal is in the log file, timestamped, with the pid" log_line_in "$LOG" trunc1.qcow2

# logrotate: move the file, then SIGHUP
mv "$LOG" "$LOG.1"
kill -HUP "$PID"
check "SIGHUP opens the log file again" eventually test -f "$LOG"
head -c 50 "$SRC/good.qcow2" >"$SRC/trunc2.qcow2"
fs ls "$MNT" >/dev/null
check "a new line goes to the new file" log_line_in "$LOG" trunc2.qcow2
check "... not to the moved one" bash -c "! grep -q trunc2 '$LOG.1'"
check "the daemon still serves after SIGHUP" fs cmp -n 65536 "$MNT/good.raw" /dev/zero
check "unmount" fusermount3 -u "$MNT"
check "the daemon exits" eventually bash -c "! kill -0 $PID"

# ---- detached, no syslog socket: stderr ----

# detached_stderr_run QCOWFS SRC MNT ERR: mount detached with stderr to ERR, look (a refusal is
# logged), unmount, wait for the daemon; succeeds when ERR holds the refusal
detached_stderr_run()
{
	local pid i
	"$1" "$2" "$3" </dev/null >/dev/null 2>"$4" || return 1
	pid=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["pid"])' \
		"$3/.qcowfs-status.json")
	ls "$3" >/dev/null
	timeout 10 fusermount3 -u "$3"
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	grep "refusing '.*trunc1.qcow2'" "$4" || { cat "$4"; return 1; }
}
ERR=$WORK/detached.err
track_mount "$MNT2"
if [ -e /dev/log ]; then
	# a syslog socket is there: hide it in a mount namespace of the test's own
	check "detached, no syslog socket: the log goes to stderr" \
		timeout 60 unshare -m --propagation private bash -c \
		"mount --bind /dev/null /dev/log && $(declare -f detached_stderr_run) &&
			detached_stderr_run '$QCOWFS' '$SRC' '$MNT2' '$ERR'"
else
	check "detached, no syslog socket: the log goes to stderr" \
		detached_stderr_run "$QCOWFS" "$SRC" "$MNT2" "$ERR"
fi
finish

#!/bin/bash
# ctl-hostile-socket.sh - qcowctl believes only daemons it may believe, and no socket holds it:
# - a user whose $XDG_RUNTIME_DIR points to a directory others write (as /tmp is) finds there
#   a qcowfs/ directory another user made, with a process posing as a daemon that says it
#   serves every image and did every command: the user's `snapshot create` on an image held by
#   qemu-io is refused as offline (naming the lock), never reported done by that process, and
#   `qcowctl mounts` lists nothing of it;
# - a process on a socket of the user's own directory that sends frames for ever and never an
#   exit status does not hold `qcowctl mounts`: it ends, naming the daemon that did not answer.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root
require_cmd setpriv
require_cmd qemu-io
A=qcowfs-hsa-$$
B=qcowfs-hsb-$$
add_test_user "$A"
add_test_user "$B"
chmod 755 "$WORK"

# setpriv_as USER: run a command with USER's uid, gid and no other group
setpriv_as()
{
	local u=$1
	shift
	setpriv --reuid="$u" --regid="$u" --clear-groups "$@"
}

# start_fake USER DIR MODE: a posing daemon of USER in DIR; sets FAKE_SOCK
start_fake()
{
	local out="$WORK/fake.$RANDOM" i
	# setpriv itself in the background (not a function's subshell): $! is the process
	setpriv --reuid="$1" --regid="$1" --clear-groups \
		python3 "$E2E_HELPER" ctl-fake-daemon "$2" "$3" >"$out" 2>&1 &
	track_pid $!
	for ((i = 0; i < 100; i++)); do
		FAKE_SOCK=$(head -n 1 "$out")
		[ -S "$FAKE_SOCK" ] && return 0
		sleep 0.1
	done
	echo "# the posing daemon did not start:"
	sed 's/^/#   /' "$out"
	return 1
}

# ---- another user's directory where $XDG_RUNTIME_DIR points ----
XDG=$WORK/xdg
mkdir -m 1777 "$XDG"
setup setpriv_as "$B" mkdir -m 755 "$XDG/qcowfs"
setup start_fake "$B" "$XDG/qcowfs" yes

mkdir -m 700 "$WORK/a"
setup mk_qcow2 "$WORK/a/disk.qcow2" 16M
chown -R "$A:$A" "$WORK/a"
setpriv --reuid="$A" --regid="$A" --clear-groups \
	qemu-io -f qcow2 -c "sleep 600000" "$WORK/a/disk.qcow2" >/dev/null 2>&1 &
QIO=$!
track_pid $QIO
# its locks seen in /proc/locks (asking with qemu-img would take a lock itself, in its way)
INO=$(stat -c %i "$WORK/a/disk.qcow2")
for ((i = 0; i < 100; i++)); do
	grep -q ":$INO " /proc/locks && break
	sleep 0.1
done
grep -q ":$INO " /proc/locks || bail "qemu-io did not take the image's locks"

setpriv_as "$A" env XDG_RUNTIME_DIR="$XDG" timeout -k 2 60 "$QCOWCTL" snapshot create \
	"$WORK/a/disk.qcow2" s1 >"$WORK/create.out" 2>&1
rc=$?
check "a process of another user posing as a daemon is not believed: the create fails" \
	test "$rc" != 0 -a "$rc" != 124
check_not "... and is not reported done" grep -q "created snapshot" "$WORK/create.out"
check "... it is refused as offline, naming qemu-io, the holder" \
	grep -q "is in use: pid $QIO (qemu-io)" "$WORK/create.out"
setpriv_as "$A" env XDG_RUNTIME_DIR="$XDG" timeout -k 2 60 "$QCOWCTL" mounts >"$WORK/mounts.out" 2>&1
check_not "qcowctl mounts lists nothing of the posing process" grep -q fake "$WORK/mounts.out"
kill "$QIO"
wait "$QIO" 2>/dev/null
check_not "the image has no snapshot s1 (qemu-img)" \
	eval 'qemu-img snapshot -l "$WORK/a/disk.qcow2" | grep -qw s1'

# ---- a socket of the user's own that never finishes its answer ----
XDGA=$WORK/xdga
mkdir -m 700 "$XDGA"
chown "$A:$A" "$XDGA"
setup setpriv_as "$A" mkdir -m 700 "$XDGA/qcowfs"
setup start_fake "$A" "$XDGA/qcowfs" drip
setpriv_as "$A" env XDG_RUNTIME_DIR="$XDGA" timeout -k 2 60 "$QCOWCTL" mounts >"$WORK/drip.out" 2>&1
rc=$?
check "qcowctl mounts ends although a daemon sends frames for ever (status $rc)" \
	test "$rc" != 124 -a "$rc" != 137
check "... it fails, naming the daemon that did not answer" \
	grep -q "pid $(basename "$FAKE_SOCK" .sock) does not answer" "$WORK/drip.out"

finish

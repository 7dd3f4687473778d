# Common code for the qcowfs end-to-end tests; every tests/e2e/*.sh sources it.
#
# This file is the tests' one helper vocabulary: each helper is defined here once, with one
# meaning, and a comment line above it says what it does. A script defines only helpers of its
# own with names no other script uses (lint-helpers.sh fails otherwise); a helper two scripts
# need moves here.
#
# Gives each test: prerequisite checks (exit 77 = skip, or failure under CI=true), a private
# work directory ($WORK), a trap that unmounts every mount, stops every daemon, detaches every
# loop device and removes $WORK whatever happens, mount helpers, the qemu-img oracles
# (expect_same_as_qemu, check_seek_matches_map), helpers for writes through the views (a model
# of the expected bytes: make_model, write_both, view_is_model, image_is_model; image_clean and
# image_not_corrupt from `qemu-img check`; a QEMU writer holding an image: qemu_writer_start),
# image building and qemu-img facts (ctl, mk_qcow2, check_counts, ...), the block jobs' chains
# and oracles (job_variant_build, same_content, refused_naming, ...), cleanup hooks for what a
# test adds (on_cleanup, add_test_user) and a pass/fail counter whose last line is
# "N passed, N failed".
#
# Environment: QCOWFS, QCOWCTL (absolute paths, set by meson); E2E_KEEP=1 keeps $WORK;
# E2E_IO_TIMEOUT (seconds, default 120) bounds every command that reads the mount, so a hung
# daemon fails the test instead of hanging it.

set -u
set -o pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
E2E_HELPER="$E2E_DIR/e2e_helper.py"
E2E_TEST=$(basename "$0" .sh)
E2E_IO_TIMEOUT=${E2E_IO_TIMEOUT:-120}

_e2e_pass=0
_e2e_fail=0
_e2e_finished=0
_e2e_mounts=()     # FUSE mount points, in mount order
_e2e_kmounts=()    # kernel (ext4, ...) mount points
_e2e_loops=()      # loop devices we attached
_e2e_pids=()       # background processes we started (daemons, qemu-io holders)
_e2e_hooks=()      # commands the trap runs first (on_cleanup)
declare -A _e2e_mount_pid=()
declare -A _e2e_mount_dev=() # MNT -> its FUSE connection number (/sys/fs/fuse/connections/N)
WORK=""

# ---- prerequisites ----

# A missing prerequisite skips the test, except under CI where it is a failure.
missing_prereq()
{
	if [ "${CI:-}" = true ]; then
		echo "FAIL: missing prerequisite under CI: $*" >&2
		exit 1
	fi
	echo "SKIP: missing prerequisite: $*" >&2
	exit 77
}

# require_cmd COMMAND...: each command is in PATH (or the test is skipped: missing_prereq).
require_cmd()
{
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || missing_prereq "$c"
	done
}

# Things only root may do (loop devices, mounting ext4): skip when not root, CI or not, since
# no setup command can grant it.
require_root()
{
	if [ "$(id -u)" != 0 ]; then
		echo "SKIP: $E2E_TEST needs root ($*)" >&2
		exit 77
	fi
}

[ -c /dev/fuse ] || missing_prereq /dev/fuse
require_cmd fusermount3 qemu-img qemu-io python3 mountpoint timeout cmp
for _v in QCOWFS QCOWCTL; do
	if [ -z "${!_v:-}" ] || [ ! -x "${!_v}" ]; then
		echo "FAIL: \$$_v is not set to an executable (got '${!_v:-}')" >&2
		exit 1
	fi
done
unset _v

# ---- cleanup ----

_e2e_cleanup()
{
	local rc=$? i m p l n
	# only the test's own shell cleans up, never a subshell that inherited the traps
	[ "$BASHPID" = "$_e2e_main_pid" ] || exit "$rc"
	trap - EXIT INT TERM
	set +e
	for ((i = ${#_e2e_hooks[@]} - 1; i >= 0; i--)); do
		eval "${_e2e_hooks[i]}"
	done
	for ((i = ${#_e2e_kmounts[@]} - 1; i >= 0; i--)); do
		m=${_e2e_kmounts[i]}
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
	done
	for l in "${_e2e_loops[@]}"; do
		losetup -d "$l" 2>/dev/null
	done
	# loop devices attached to anything in $WORK that were not recorded (killed mid-attach)
	if [ -n "$WORK" ] && command -v losetup >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
		losetup -a 2>/dev/null | grep -F "($WORK/" | cut -d: -f1 | while read -r l; do
			losetup -d "$l" 2>/dev/null
		done
	fi
	for ((i = ${#_e2e_mounts[@]} - 1; i >= 0; i--)); do
		m=${_e2e_mounts[i]}
		if grep -qF " $m " /proc/self/mountinfo 2>/dev/null; then
			fusermount3 -u -q "$m" 2>/dev/null || fusermount3 -u -z -q "$m" 2>/dev/null ||
				umount -l "$m" 2>/dev/null
		fi
	done
	for p in "${_e2e_pids[@]}"; do
		kill -0 "$p" 2>/dev/null || continue
		kill -TERM "$p" 2>/dev/null
		for ((n = 0; n < 50; n++)); do
			kill -0 "$p" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$p" 2>/dev/null
		kill -0 "$p" 2>/dev/null && _e2e_abort_fuse # a daemon stuck on its own mount
		wait "$p" 2>/dev/null
	done
	if [ -n "$WORK" ] && [ -d "$WORK" ]; then
		if [ "${E2E_KEEP:-}" = 1 ]; then
			echo "keeping $WORK" >&"$_e2e_stdout"
		else
			rm -rf "$WORK"
		fi
	fi
	if [ "$_e2e_finished" = 0 ] && [ "$rc" != 77 ]; then
		# to the test's stdout even if a signal came while a check redirected it
		{
			echo "not ok - $E2E_TEST stopped early (exit status $rc)"
			_e2e_fail=$((_e2e_fail + 1))
			echo "$_e2e_pass passed, $_e2e_fail failed"
		} >&"$_e2e_stdout"
		[ "$rc" = 0 ] && rc=1
	fi
	exit "$rc"
}

_e2e_main_pid=$BASHPID
exec {_e2e_stdout}>&1
trap _e2e_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

WORK=$(mktemp -d "${TMPDIR:-/tmp}/qcowfs-e2e-$E2E_TEST.XXXXXX") || exit 1
WORK=$(cd "$WORK" && pwd -P)

# `python3` may be a wrapper script that chooses an interpreter on every call, which can cost a
# second per call (the tests make hundreds): put the interpreter it chooses first in PATH.
if _e2e_py=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) && [ -x "$_e2e_py" ]; then
	mkdir -p "$WORK/.bin" && ln -s "$_e2e_py" "$WORK/.bin/python3" && PATH=$WORK/.bin:$PATH
fi
unset _e2e_py

# ---- pass/fail counter ----

# pass DESCRIPTION: count one assertion that held, and say so ("ok N - ...").
pass()
{
	_e2e_pass=$((_e2e_pass + 1))
	echo "ok $((_e2e_pass + _e2e_fail)) - $*"
}

# fail DESCRIPTION: count one assertion that failed, and say so ("not ok N - ...").
fail()
{
	_e2e_fail=$((_e2e_fail + 1))
	echo "not ok $((_e2e_pass + _e2e_fail)) - $*"
}

# check DESCRIPTION COMMAND...: one assertion; the command's output is shown when it fails.
check()
{
	local desc=$1 out rc
	shift
	out="$WORK/check.out"
	# run in this shell (not a subshell), so helpers may wait for our children
	"$@" >"$out" 2>&1
	rc=$?
	if [ $rc = 0 ]; then
		pass "$desc"
	else
		fail "$desc"
		head -n 40 "$out" | sed 's/^/#   /'
	fi
	return $rc
}

# check_not DESCRIPTION COMMAND...: the command must fail.
check_not()
{
	local desc=$1
	shift
	check "$desc" _e2e_negate "$@"
}

_e2e_negate()
{
	if "$@"; then
		echo "command succeeded but should have failed: $*"
		return 1
	fi
	return 0
}

# A step that builds the test's fixtures: when it fails the test cannot go on.
setup()
{
	local out="$WORK/setup.out"
	if ! "$@" >"$out" 2>&1; then
		echo "# setup step failed: $*"
		head -n 40 "$out" | sed 's/^/#   /'
		exit 1
	fi
}

# bail MESSAGE: the test cannot go on: say why and stop (a failure).
bail()
{
	echo "# $*"
	exit 1
}

# End of test: print the summary line and exit with the result.
finish()
{
	_e2e_finished=1
	if [ $((_e2e_pass + _e2e_fail)) = 0 ]; then
		echo "not ok - no assertion ran"
		_e2e_fail=1
	fi
	echo "$_e2e_pass passed, $_e2e_fail failed"
	[ "$_e2e_fail" = 0 ] && exit 0
	exit 1
}

# ---- running things against the mount ----

# fs COMMAND...: run a command that touches the mount, bounded in time. `timeout` alone is not
# enough: a process waiting on a deadlocked FUSE daemon can sit in D state where even SIGKILL
# does not reach it. So a watchdog kills the command, then the daemons, and aborts their
# connections (which fails the waiting requests with ENOTCONN, even where a daemon is stuck on
# its own mount and cannot exit): the test fails instead of hanging.
fs()
{
	fs_t "$E2E_IO_TIMEOUT" "$@"
}

# fs_t SECONDS COMMAND...: the same with its own time limit.
fs_t()
{
	local t=$1 cpid
	shift
	"$@" <&0 &
	cpid=$!
	# the watchdog ends by itself within 0.1 s of the command; it is never signalled (a signal
	# that hits a subshell before it has reset the inherited traps would run them there)
	_e2e_watchdog "$t" "$cpid" &
	wait "$cpid"
}

_e2e_watchdog()
{
	local t=$1 pid=$2 i p f
	# hold nothing the test may expect released: open views, fifos, a directory to unmount
	cd / || exit 0
	for f in "/proc/$BASHPID/fd/"*; do
		f=${f##*/}
		[ "$f" -gt 2 ] 2>/dev/null && eval "exec $f>&-" 2>/dev/null
	done
	for ((i = 0; i < t * 10; i++)); do
		sleep 0.1
		kill -0 "$pid" 2>/dev/null || exit 0
	done
	echo "# still running after $t s: killing it and the daemons" >&2
	kill -TERM "$pid" 2>/dev/null
	sleep 2
	kill -KILL "$pid" 2>/dev/null
	for p in "${_e2e_mount_pid[@]}"; do
		kill -KILL "$p" 2>/dev/null
	done
	_e2e_abort_fuse
	exit 0
}

# _e2e_abort_fuse: abort the FUSE connection of every mount of the test. A daemon deadlocked on
# its own mount cannot exit even when killed (its thread waits on a request only it could
# answer), and whatever waits on the mount stays in D state until the connection is aborted.
_e2e_abort_fuse()
{
	local c d=/sys/fs/fuse/connections
	[ "${#_e2e_mount_dev[@]}" -gt 0 ] || return 0
	mountpoint -q "$d" || mount -t fusectl fusectl "$d" 2>/dev/null
	for c in "${_e2e_mount_dev[@]}"; do
		[ -w "$d/$c/abort" ] && echo 1 >"$d/$c/abort" 2>/dev/null
	done
	return 0
}

# Background process the trap must stop.
track_pid()
{
	_e2e_pids+=("$1")
}

# track_loop DEVICE: a loop device the trap detaches.
track_loop()
{
	_e2e_loops+=("$1")
}

# track_kmount MNT: a kernel (ext4, ...) mount the trap unmounts.
track_kmount()
{
	_e2e_kmounts+=("$1")
}

# track_mount MNT: a FUSE mount point the trap unmounts should something mount it (a mount the
# test expects to be refused, made by a command other than mount_qcowfs).
track_mount()
{
	_e2e_mounts+=("$1")
}

# on_cleanup COMMAND...: the trap runs the command (quoted as given) before it unmounts anything,
# the last registered first, on every path out of the test.
on_cleanup()
{
	_e2e_hooks+=("$(printf '%q ' "$@")")
}

# add_test_user NAME: a system user without home or shell, with its own group, deleted
# (userdel -r) by the trap.
add_test_user()
{
	on_cleanup _e2e_userdel "$1"
	setup useradd -M -U -s /usr/sbin/nologin "$1"
}

_e2e_userdel()
{
	id "$1" >/dev/null 2>&1 || return 0
	userdel -r -f "$1" >/dev/null 2>&1 || userdel -f "$1" >/dev/null 2>&1
}

# add_test_group NAME: a group deleted by the trap.
add_test_group()
{
	on_cleanup _e2e_groupdel "$1"
	setup groupadd "$1"
}

_e2e_groupdel()
{
	getent group "$1" >/dev/null && groupdel "$1" 2>/dev/null
	return 0
}

_e2e_nmount=0
# mount_qcowfs SRC MNT [OPTIONS...]: start the daemon in the foreground (in the background of
# this shell) and wait up to ~10 s for the mount. Sets QCOWFS_PID and QCOWFS_LOG.
mount_qcowfs()
{
	local src=$1 mnt=$2 i
	shift 2
	mkdir -p "$mnt"
	_e2e_nmount=$((_e2e_nmount + 1))
	QCOWFS_LOG="$WORK/qcowfs.$_e2e_nmount.log"
	: >"$QCOWFS_LOG"
	_e2e_mounts+=("$mnt")
	"$QCOWFS" -f "$@" "$src" "$mnt" </dev/null >>"$QCOWFS_LOG" 2>>"$QCOWFS_LOG" {_e2e_stdout}>&- &
	QCOWFS_PID=$!
	track_pid "$QCOWFS_PID"
	_e2e_mount_pid[$mnt]=$QCOWFS_PID
	for ((i = 0; i < 100; i++)); do
		if mountpoint -q "$mnt"; then
			# its device number is its connection's: recorded now, since a mount that
			# hangs may be detached before the watchdog needs it
			_e2e_mount_dev[$mnt]=$(awk -v m="$mnt" '$5 == m { split($3, d, ":"); c = d[2] }
				END { print c }' /proc/self/mountinfo)
			return 0
		fi
		if ! kill -0 "$QCOWFS_PID" 2>/dev/null; then
			break
		fi
		sleep 0.1
	done
	echo "# qcowfs did not mount $src on $mnt (options: $*); its log:"
	sed 's/^/#   /' "$QCOWFS_LOG" | head -n 60
	return 1
}

# umount_qcowfs MNT: unmount and wait for the daemon; returns the daemon's exit status
# (non-zero when it crashed, or a sanitizer found errors or leaks).
umount_qcowfs()
{
	local mnt=$1 pid i rc
	pid=${_e2e_mount_pid[$mnt]:-}
	if ! fusermount3 -u "$mnt"; then
		echo "fusermount3 -u $mnt failed"
		fusermount3 -u -z -q "$mnt" 2>/dev/null
		return 1
	fi
	[ -n "$pid" ] || return 0
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "daemon $pid still running 10 s after unmount"
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		return 1
	fi
	wait "$pid"
	rc=$?
	[ $rc = 0 ] || echo "daemon exited with status $rc"
	return $rc
}

# daemon_alive: the last daemon still runs and its mount still answers.
daemon_alive()
{
	kill -0 "$QCOWFS_PID" 2>/dev/null || { echo "daemon $QCOWFS_PID is gone"; return 1; }
	fs stat "${1:-.}" >/dev/null || return 1
}

# log_clean LOG: no sanitizer report and no crash in the daemon's log.
log_clean()
{
	if grep -nE 'AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:|ThreadSanitizer' "$1"; then
		return 1
	fi
	return 0
}

# log_names LOG FILE...: the log has a line naming FILE (each of them).
log_names()
{
	local log=$1 f rc=0
	shift
	for f in "$@"; do
		if ! grep -qF -- "$f" "$log"; then
			echo "no line naming '$f' in the daemon log; log:"
			sed 's/^/  /' "$log" | head -n 60
			rc=1
		fi
	done
	return $rc
}

# ---- oracles ----

# tmpfile [SUFFIX]: a new file name in $WORK (not created).
tmpfile()
{
	# mktemp, not a counter: callers take the name through $(...), a subshell, where a
	# counter's increment is lost (two calls in one function then named the same file)
	mktemp -u "$WORK/tmp.XXXXXXXX${1:-}"
}

# snapshot_copy IMAGE SNAPSHOT: path of a copy of IMAGE reverted to SNAPSHOT (`qemu-img snapshot
# -a`), with its backing file pointed to by absolute path, so qemu-img can tell the snapshot's
# own size and map.
snapshot_copy()
{
	local img=$1 snap=$2 copy j bf fmt
	copy=$(tmpfile .qcow2)
	j=$(tmpfile .json)
	cp --sparse=always "$img" "$copy" || return 1
	qemu-img info -U --output=json "$img" >"$j" || return 1
	if bf=$(python3 "$E2E_HELPER" json-get "$j" full-backing-filename 2>/dev/null); then
		fmt=$(python3 "$E2E_HELPER" json-get "$j" backing-filename-format 2>/dev/null) || fmt=""
		qemu-img rebase -u -b "$bf" ${fmt:+-F "$fmt"} "$copy" || return 1
	fi
	qemu-img snapshot -a "$snap" "$copy" || return 1
	echo "$copy"
}

# expect_same_as_qemu IMAGE FLATFILE [SNAPSHOT]: FLATFILE holds exactly the bytes
# `qemu-img convert -O raw` makes of IMAGE (of IMAGE's snapshot SNAPSHOT if given: `convert -l
# snapshot.name=S`, whose output has the image's current size; the snapshot view has the size
# the disk had when S was taken, so the expected bytes are cut to that size).
expect_same_as_qemu()
{
	local img=$1 flat=$2 snap=${3:-} exp rc copy size
	exp=$(tmpfile .raw)
	if [ -n "$snap" ]; then
		qemu-img convert -U -f qcow2 -l "snapshot.name=$snap" -O raw "$img" "$exp" ||
			{ echo "qemu-img convert of $img@$snap failed"; return 1; }
		copy=$(snapshot_copy "$img" "$snap") || { echo "cannot revert a copy of $img to $snap"; return 1; }
		size=$(virtual_size "$copy") || return 1
		rm -f "$copy"
		if [ "$(stat -c %s "$exp")" -gt "$size" ]; then
			cmp -n $(($(stat -c %s "$exp") - size)) -i "$size" "$exp" /dev/zero >/dev/null ||
				{ echo "qemu-img shows data past the snapshot's size"; return 1; }
			truncate -s "$size" "$exp"
		fi
	else
		qemu-img convert -U -O raw "$img" "$exp" ||
			{ echo "qemu-img convert of $img failed"; return 1; }
	fi
	fs cmp "$exp" "$flat"
	rc=$?
	rm -f "$exp"
	return $rc
}

# eventually COMMAND...: the command succeeds within about 5 s (for what follows a close(): the
# kernel sends FUSE's release after close returns); its output is that of the last try.
eventually()
{
	local i out
	for ((i = 0; i < 25; i++)); do
		out=$("$@" 2>&1) && return 0
		sleep 0.2
	done
	echo "$out"
	return 1
}

# expect_same_bytes FILE FLATFILE: FLATFILE holds exactly the bytes of FILE.
expect_same_bytes()
{
	fs cmp "$1" "$2"
}

# data_extents_qemu IMAGE: merged "START END" data extents from qemu-img map.
data_extents_qemu()
{
	local j
	j=$(tmpfile .json)
	qemu-img map -U --output=json "$1" >"$j" || { echo "qemu-img map $1 failed"; return 1; }
	python3 "$E2E_HELPER" qmap "$j"
}

# check_seek_matches_map IMAGE FLATFILE: SEEK_DATA/SEEK_HOLE on FLATFILE find the data
# extents `qemu-img map --output=json IMAGE` reports ("data": true), and only those.
check_seek_matches_map()
{
	local img=$1 flat=$2 want got
	want=$(tmpfile .want)
	got=$(tmpfile .got)
	data_extents_qemu "$img" >"$want" || return 1
	fs python3 "$E2E_HELPER" seek "$flat" >"$got" || { echo "lseek walk on $flat failed"; return 1; }
	if ! diff -u --label "qemu-img map $img" --label "lseek $flat" "$want" "$got"; then
		return 1
	fi
	return 0
}

# virtual_size IMAGE [SNAPSHOT]
virtual_size()
{
	local j
	j=$(tmpfile .json)
	qemu-img info -U --output=json "$1" >"$j" || return 1
	python3 "$E2E_HELPER" json-get "$j" virtual-size
}

# expect_size FLATFILE BYTES
expect_size()
{
	local got
	got=$(fs stat -c %s "$1") || return 1
	[ "$got" = "$2" ] || { echo "st_size of $1 is $got, want $2"; return 1; }
}

# expect_size_as_qemu IMAGE FLATFILE: st_size equals the image's virtual size.
expect_size_as_qemu()
{
	local want
	want=$(virtual_size "$1") || { echo "qemu-img info $1 failed"; return 1; }
	expect_size "$2" "$want"
}

# open_result FILE MODE...: what open(2) says (ok, EROFS, ...) for each mode, one line each,
# see e2e_helper.py.
open_result()
{
	fs python3 "$E2E_HELPER" open "$@"
}

# expect_open_fails FILE ERRNO MODE...: every open with these modes fails with ERRNO.
expect_open_fails()
{
	local f=$1 want=$2 m got rc=0 i=0
	local -a res
	shift 2
	# one process tries every mode
	mapfile -t res < <(open_result "$f" "$@")
	for m in "$@"; do
		got=${res[i]:-"(no answer)"}
		i=$((i + 1))
		if [ "$got" != "$want" ]; then
			echo "open($f, $m): got $got, want $want"
			rc=1
		fi
	done
	return $rc
}

# expect_readonly_mode FILE: no write permission bit in st_mode.
expect_readonly_mode()
{
	local mode
	mode=$(fs stat -c %a "$1") || return 1
	if (((8#$mode & 8#222) != 0)); then
		echo "$1 has mode $mode, want no write bits"
		return 1
	fi
}

# view_mode_is PATH MODE: stat(2) of PATH through the mount shows MODE (octal, as stat -c %a).
view_mode_is()
{
	local mode
	mode=$(fs stat -c %a "$1") || return 1
	[ "$mode" = "$2" ] || { echo "$1 has mode $mode, want $2"; return 1; }
}

# expect_exists PATH...: each path exists (looked up through the mount, bounded in time).
expect_exists()
{
	local f
	for f in "$@"; do
		fs test -e "$f" || { echo "$f does not exist"; return 1; }
	done
}

# expect_absent PATH...: no path exists.
expect_absent()
{
	local f
	for f in "$@"; do
		if fs test -e "$f"; then
			echo "$f exists but should not"
			return 1
		fi
	done
}

# expect_listing DIR NAME...: readdir of DIR gives exactly these names (any order).
expect_listing()
{
	local dir=$1 want got
	shift
	want=$(printf '%s\n' "$@" | sort)
	got=$(fs ls -A "$dir" | sort) || return 1
	if [ "$want" != "$got" ]; then
		diff -u --label want --label "ls $dir" <(echo "$want") <(echo "$got")
		return 1
	fi
}

# qemu-io writes, quietly: qio IMAGE CMD...
qio()
{
	local img=$1 args=() c
	shift
	for c in "$@"; do
		args+=(-c "$c")
	done
	qemu-io "${args[@]}" "$img" >/dev/null
}

# qio_raw: the same for a raw file
qio_raw()
{
	local img=$1 args=() c
	shift
	for c in "$@"; do
		args+=(-c "$c")
	done
	qemu-io -f raw "${args[@]}" "$img" >/dev/null
}

# ---- building images, and what qemu-img says about them ----

# ctl ARGS...: run qcowctl.
ctl()
{
	"$QCOWCTL" "$@"
}

# mk_qcow2 NAME SIZE [OPTIONS...]: `qemu-img create -q -f qcow2 OPTIONS NAME SIZE`.
mk_qcow2()
{
	local name=$1 size=$2
	shift 2
	qemu-img create -q -f qcow2 "$@" "$name" "$size"
}

# qcreate ARGS...: `qemu-img create -q -f qcow2 ARGS` (options, then the name and the size).
qcreate()
{
	qemu-img create -q -f qcow2 "$@"
}

# flat_of IMAGE OUT [SNAPSHOT_ID]: OUT holds `qemu-img convert -O raw` of IMAGE (of one snapshot).
flat_of()
{
	qemu-img convert -U -O raw ${3:+-l snapshot.id=$3} "$1" "$2"
}

# dd_write VIEW OFFSET: one 4 KiB block of random bytes written at OFFSET (a multiple of 4096)
# with dd, synced.
dd_write()
{
	fs dd if=/dev/urandom of="$1" bs=4096 count=1 seek=$(($2 / 4096)) conv=notrunc,fsync \
		status=none
}

# put_be FILE OFFSET WIDTH VALUE: write VALUE as a WIDTH-byte big-endian number at OFFSET.
put_be()
{
	local f=$1 off=$2 w=$3 v=$4 i s=""
	for ((i = w - 1; i >= 0; i--)); do
		s+=$(printf '\\x%02x' $(((v >> (8 * i)) & 0xff)))
	done
	printf "$s" | dd of="$f" bs=1 seek="$off" conv=notrunc status=none
}

# check_counts_json JSON: "CHECK-ERRORS CORRUPTIONS LEAKS" from the JSON of `qemu-img check
# --output=json` (or `qcowctl check --json`).
check_counts_json()
{
	python3 "$E2E_HELPER" check-counts "$1"
}

# check_counts IMAGE: the same from `qemu-img check -U --output=json IMAGE`; fails when qemu-img
# gives no JSON.
check_counts()
{
	local j rc
	j=$(tmpfile .json)
	qemu-img check -U --output=json "$1" >"$j" 2>/dev/null
	[ -s "$j" ] || { rm -f "$j"; return 1; }
	check_counts_json "$j"
	rc=$?
	rm -f "$j"
	return $rc
}

# check_errors IMAGE: check errors + corruptions + leaks, as `qemu-img check` counts them.
check_errors()
{
	local c
	c=$(check_counts "$1") || return 1
	set -- $c
	echo $(($1 + $2 + $3))
}

# has_compressed IMAGE: `qemu-img check` passes and counts compressed clusters.
has_compressed()
{
	local out
	out=$(qemu-img check "$1") &&
		[[ $out == *" compressed clusters"* && $out != *" 0.00% compressed"* ]]
}

# expect_fail_msg PATTERN COMMAND...: the command fails with one line on stderr, which matches
# the extended regular expression PATTERN.
expect_fail_msg()
{
	local pat=$1 err
	shift
	if err=$("$@" 2>&1 >/dev/null); then
		echo "succeeded: $*"
		return 1
	fi
	[ "$(wc -l <<<"$err")" = 1 ] || { echo "not one line: $err"; return 1; }
	grep -qE "$pat" <<<"$err" || { echo "message: $err"; return 1; }
}

# ctl_fails_fast NAME ARGS...: `qcowctl ARGS` fails with one line on stderr naming NAME, and
# ends within 20 s (a hang fails, it is killed).
ctl_fails_fast()
{
	local name=$1 rc err
	shift
	err=$(tmpfile .err)
	timeout -k 2 20 "$QCOWCTL" "$@" >/dev/null 2>"$err" </dev/null
	rc=$?
	if [ $rc = 124 ] || [ $rc = 137 ]; then
		echo "qcowctl $* hung (killed after 20 s)"
		return 1
	fi
	[ $rc != 0 ] || { echo "qcowctl $* succeeded"; return 1; }
	[ "$(wc -l <"$err")" = 1 ] || { echo "stderr is not one line:"; cat "$err"; return 1; }
	grep -qF -- "$name" "$err" || { echo "the error does not name $name:"; cat "$err"; return 1; }
}

# table_of DISK: its partition table from `sfdisk -d`, the device name replaced by DISK.
table_of()
{
	sfdisk -d "$1" | grep -v '^device:' | sed "s|^$1|DISK|"
}

# same_table DISK1 DISK2: sfdisk reads a partition table from each, and the same one (table_of;
# its status is tested: two disks sfdisk reads no table from would print the same nothing).
same_table()
{
	local a b
	a=$(tmpfile .table)
	b=$(tmpfile .table)
	table_of "$1" >"$a" || { echo "sfdisk -d $1 failed"; return 1; }
	table_of "$2" >"$b" || { echo "sfdisk -d $2 failed"; return 1; }
	diff -u --label "sfdisk -d $1" --label "sfdisk -d $2" "$a" "$b"
}

# ---- writes through the flat views ----
# The tests keep a model of what a writable view must hold: a raw file that starts as `qemu-img
# convert` of the chain and gets the same operations (e2e_helper.py apply, apply --model).

# make_model IMAGE MODEL: MODEL holds the bytes of IMAGE's chain.
make_model()
{
	rm -f "$2"
	qemu-img convert -U -O raw "$1" "$2"
}

# write_both VIEW MODEL OP...: apply the operations (see e2e_helper.py apply) to the flat view
# and the same operations' effect to the model.
write_both()
{
	fs python3 "$E2E_HELPER" apply-both "$@"
}

# try_op FILE OP: what one operation on FILE gives (ok, short N, EFBIG, ...).
try_op()
{
	fs python3 "$E2E_HELPER" try "$1" "$2"
}

# expect_op_fails FILE OP: the operation on FILE fails (any error, or a short write).
expect_op_fails()
{
	local got
	got=$(try_op "$1" "$2") || return 1
	if [ "$got" = ok ]; then
		echo "$2 on $1 succeeded, want a failure"
		return 1
	fi
	echo "$2 on $1: $got"
}

# expect_op_errno FILE OP ERRNO
expect_op_errno()
{
	local got
	got=$(try_op "$1" "$2") || return 1
	[ "$got" = "$3" ] || { echo "$2 on $1: got $got, want $3"; return 1; }
}

# image_clean IMAGE: `qemu-img check` finds no error and no leak (exit status 0).
image_clean()
{
	local out rc
	out=$(qemu-img check "$1" 2>&1)
	rc=$?
	[ $rc = 0 ] && return 0
	echo "qemu-img check $1 exited $rc:"
	echo "$out" | head -n 30
	return 1
}

# image_not_corrupt IMAGE: `qemu-img check` finds no corruption; leaked clusters are allowed
# (exit status 0 or 3).
image_not_corrupt()
{
	local out rc
	out=$(qemu-img check "$1" 2>&1)
	rc=$?
	[ $rc = 0 ] || [ $rc = 3 ] && return 0
	echo "qemu-img check $1 exited $rc:"
	echo "$out" | head -n 30
	return 1
}

# image_is_model IMAGE MODEL: `qemu-img convert -O raw IMAGE` equals MODEL byte for byte.
image_is_model()
{
	local out rc
	out=$(tmpfile .raw)
	qemu-img convert -U -O raw "$1" "$out" || { echo "qemu-img convert $1 failed"; return 1; }
	cmp "$2" "$out"
	rc=$?
	[ "$rc" = 0 ] || echo "(qemu-img convert of $1 differs from the model $2)"
	rm -f "$out"
	return "$rc"
}

# view_is_model VIEW MODEL: the flat view holds exactly the model's bytes.
view_is_model()
{
	local rc
	fs cmp "$2" "$1"
	rc=$?
	[ $rc = 0 ] || echo "(the flat view $1 differs from the model $2)"
	return $rc
}

# sha_of FILE...: "SHA256  FILE" lines
sha_of()
{
	sha256sum "$@"
}

# sha_unchanged SHAFILE: every file listed in SHAFILE (from sha_of) has the same SHA-256.
sha_unchanged()
{
	sha256sum --quiet -c "$1"
}

# expect_writable_mode FILE: a writable flat view: its owner has the write bit (which other
# bits it has follows the image file, its chain and the directories above them: see
# permissions.sh; a test's $WORK is 0700, so only the owner's bits remain).
expect_writable_mode()
{
	local mode
	mode=$(fs stat -c %a "$1") || return 1
	(((8#$mode & 8#200) != 0)) || { echo "$1 has mode $mode, want the owner's write bit"; return 1; }
}

# expect_not_writable FILE: no write bit and every open for writing fails with EROFS.
expect_not_writable()
{
	expect_readonly_mode "$1" || return 1
	expect_open_fails "$1" EROFS w rw wtrunc append
}

# qcow2_field IMAGE KEY: one value from e2e_helper.py qcow2-fields.
qcow2_field()
{
	python3 "$E2E_HELPER" qcow2-fields "$1" | awk -v k="$2" '$1 == k { print $2 }'
}

# ---- QEMU holding an image open for writing ----

# qemu_holds_write_lock IMAGE: some process holds QEMU's "write" permission byte (101) on
# IMAGE, read from /proc/locks (asking qemu-img would take locks itself).
qemu_holds_write_lock()
{
	local ino
	ino=$(stat -c %i "$1") || return 1
	awk -v ino="$ino" '$2 == "OFDLCK" { split($6, id, ":");
		if (id[3] == ino && $7 <= 101 && ($8 == "EOF" || $8 >= 101)) found = 1 }
		END { exit !found }' /proc/locks
}

# qemu_writer_start IMAGE: qemu-io holds IMAGE open read-write until qemu_writer_stop. Its stdin
# is a fifo whose only writer is a sleep we own (no shell fd, which the daemons would inherit),
# so ending the sleep ends qemu-io. Sets QEMU_WRITER_PID.
qemu_writer_start()
{
	local img=$1 fifo i
	fifo=$(tmpfile .fifo)
	_e2e_writer_fifo=$fifo
	mkfifo "$fifo" || return 1
	qemu-io "$img" <"$fifo" >/dev/null 2>&1 &
	QEMU_WRITER_PID=$!
	track_pid "$QEMU_WRITER_PID"
	sleep 600 >"$fifo" &
	_e2e_writer_feed=$!
	track_pid "$_e2e_writer_feed"
	for ((i = 0; i < 100; i++)); do
		qemu_holds_write_lock "$img" && return 0
		kill -0 "$QEMU_WRITER_PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "qemu-io did not take the write lock on $img"
	return 1
}

# qemu_writer_stop: end the qemu-io of qemu_writer_start (it releases its lock).
qemu_writer_stop()
{
	local i
	kill "$_e2e_writer_feed" 2>/dev/null
	wait "$_e2e_writer_feed" 2>/dev/null
	for ((i = 0; i < 100; i++)); do
		kill -0 "$QEMU_WRITER_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$QEMU_WRITER_PID" 2>/dev/null
	wait "$QEMU_WRITER_PID" 2>/dev/null
	rm -f "$_e2e_writer_fifo"
	return 0
}

# qemu_write_refused IMAGE: qemu-io cannot open IMAGE for writing because of a lock.
qemu_write_refused()
{
	local out
	if out=$(qemu-io -c "write -P 0x99 0 512" "$1" 2>&1); then
		echo "qemu-io wrote to $1:"
		echo "$out"
		return 1
	fi
	if ! grep -qF 'Failed to get "write" lock' <<<"$out"; then
		echo "qemu-io failed, but not with the write-lock error:"
		echo "$out"
		return 1
	fi
}

# ---- block jobs (commit, pull, rebase): chains QEMU built, and QEMU's results to compare ----
# The ctl-commit*, ctl-pull, ctl-rebase and ctl-jobs-* scripts run each operation on a copy of a
# chain ($O) and its QEMU counterpart on a second copy ($R); a case's other files are $C.*.
# jobs_setup makes $V (the chain variants) and the bytes the bases are made of.

# jobs_setup: $V, the bases' bytes: 2 MiB of 0x11 (compressible), 1 MiB of random bytes
jobs_setup()
{
	V=$WORK/variants
	mkdir -p "$V" "$WORK/c"
	setup truncate -s 1M "$V/random"
	setup python3 "$E2E_HELPER" pattern "$V/random" 1M 64k 7
	setup bash -c "head -c 2M /dev/zero | tr '\\0' '\\021' >'$V/ones'"
}

# The chain variants: cluster size, disk size, qemu-img create options, the kind of base
# (compressed, qcow2 or raw), then a middle layer size (- for the disk size) and top's options.
declare -A JOB_VARIANT=(
	[std]="65536 4194304 compat=1.1 compressed"
	[rawbase]="65536 4194304 compat=1.1 raw"
	[short]="65536 4194304 compat=1.1 qcow2 2097152"
	[c512]="512 1048576 compat=1.1 compressed"
	[extl2]="65536 4194304 compat=1.1 qcow2 - extended_l2=on"
	[v2]="65536 4194304 compat=0.10 compressed"
)

# job_variant_build VARIANT: $V/VARIANT/ holds base <- mid <- top (relative backing names) and
# other.qcow2; $V/VARIANT.view top's bytes, $V/VARIANT.base the base's name and format. Of size S
# in clusters of C: base: a compressible pattern in the first half, random data in
# [S/2 + C, 3S/4), holes elsewhere (compressed clusters where it is made with convert -c); mid:
# partial clusters over base data, zero clusters, a discard, a compressed cluster; top: data over
# mid's and base's, zero clusters, a discard, a compressed cluster, the last bytes of the disk
# (and subclusters with extended L2). other.qcow2, unrelated to the chain, is a rebase target.
job_variant_build()
{
	_e2e_job_build "$1" ${JOB_VARIANT[$1]}
}

_e2e_job_build()
{
	local name=$1 c=$2 s=$3 opts=$4 kind=$5 midsize=${6:-} topopts=${7:-$4} d=$V/$1 b bf
	[ "$midsize" = - ] && midsize=""
	mkdir -p "$d"
	truncate -s "$s" "$d/src.raw" &&
		dd if="$V/ones" of="$d/src.raw" bs=$((s / 2)) count=1 conv=notrunc status=none &&
		dd if="$V/random" of="$d/src.raw" bs=$((s / 4 - c)) count=1 seek=$((s / 2 + c)) \
			oflag=seek_bytes conv=notrunc status=none || return 1
	case $kind in
	compressed) b=base.qcow2 bf=qcow2
		qemu-img convert -c -O qcow2 -o "$opts,cluster_size=$c" "$d/src.raw" "$d/$b" || return 1 ;;
	qcow2) b=base.qcow2 bf=qcow2
		qemu-img convert -O qcow2 -o "$opts,cluster_size=$c" "$d/src.raw" "$d/$b" || return 1 ;;
	raw) b=base.img bf=raw
		cp "$d/src.raw" "$d/$b" || return 1 ;;
	esac
	rm -f "$d/src.raw"
	(cd "$d" && qemu-img create -q -f qcow2 -o "$opts,cluster_size=$c" -b "$b" -F "$bf" \
		mid.qcow2 $midsize) || return 1
	qio "$d/mid.qcow2" "write -P 0x21 $((2 * c + c / 2)) $((3 * c))" \
		"write -z $((8 * c)) $((2 * c))" "discard $((12 * c)) $c" \
		"write -c -P 0x22 $((14 * c)) $c" || return 1
	(cd "$d" && qemu-img create -q -f qcow2 -o "$topopts,cluster_size=$c" -b mid.qcow2 -F qcow2 \
		top.qcow2 "$s") || return 1
	qio "$d/top.qcow2" "write -P 0x31 $((3 * c)) $((4 * c + 100))" \
		"write -z $((13 * c)) $((2 * c))" "discard $((9 * c)) $c" \
		"write -P 0x32 $((s - c / 2)) $((c / 2))" \
		"write -P 0x33 $((s / 2 + 2 * c)) $c" "write -c -P 0x34 $((16 * c)) $c" || return 1
	case $topopts in
	*extended_l2=on*) # subclusters of C/32
		qio "$d/top.qcow2" "write -P 0x35 $((20 * c + 2 * c / 32)) $((c / 32))" \
			"write -z $((21 * c + 5 * c / 32)) $((2 * c / 32))" \
			"write -P 0x36 $((22 * c + 31 * c / 32)) $((c / 16))" || return 1 ;;
	esac
	qemu-img create -q -f qcow2 -o "cluster_size=$c" "$d/other.qcow2" "$s" || return 1
	qio "$d/other.qcow2" "write -P 0x41 0 $((s / 4))" "write -P 0x42 $((s / 2)) $((s / 8))" ||
		return 1
	echo "$b $bf" >"$V/$name.base"
	qemu-img convert -O raw "$d/top.qcow2" "$V/$name.view"
}

# job_variants VARIANT...: build each variant (a failure stops the test)
job_variants()
{
	local v
	for v in "$@"; do
		setup job_variant_build "$v"
	done
}

# variant_base VARIANT: sets B (the base's file name) and BF (its format)
variant_base()
{
	read -r B BF <"$V/$1.base"
}

# job_fresh NAME VARIANT: two copies of a variant's images, $O (ours) and $R (for QEMU's
# tools); the case's other files are $C.*
job_fresh()
{
	C=$WORK/c/$1
	O=$C.ours R=$C.ref
	cp -a "$V/$2" "$O" && cp -a "$V/$2" "$R" || bail "cannot copy variant $2"
}

# same_content A B [FMT_B]: qemu-img compare finds the same bytes and the same size
same_content()
{
	local out
	out=$(qemu-img compare -U ${3:+-F "$3"} "$1" "$2" 2>&1)
	if [ $? != 0 ] || [[ $out == *"size mismatch"* ]]; then
		echo "qemu-img compare $1 $2: $out"
		return 1
	fi
}

# same_prefix A B LEN: the chains of A and B hold the same first LEN bytes
same_prefix()
{
	qemu-img convert -U -O raw "$1" "$C.a.raw" && qemu-img convert -U -O raw "$2" "$C.b.raw" ||
		{ echo "qemu-img convert failed"; return 1; }
	cmp -n "$3" "$C.a.raw" "$C.b.raw"
}

# variant_view_unchanged VARIANT IMAGE: IMAGE's chain holds the variant's original top view
variant_view_unchanged()
{
	same_content "$2" "$V/$1.view" raw
}

# images_clean IMAGE...: `qemu-img check` is clean (exit 0) on each qcow2 image (a raw one is
# skipped: there is nothing to check)
images_clean()
{
	local f rc=0
	for f in "$@"; do
		[[ $f == *.qcow2 ]] || continue
		image_clean "$f" || rc=1
	done
	return $rc
}

# expect_backing IMAGE NAME: IMAGE's backing file is NAME, as stored (qemu-img info's "backing
# file", "" when there is none)
expect_backing()
{
	local out line got=""
	out=$(qemu-img info -U "$1") || { echo "qemu-img info $1 failed"; return 1; }
	while IFS= read -r line; do
		if [[ $line == "backing file: "* ]]; then
			got=${line#backing file: }
			got=${got% (actual path: *}
		fi
	done <<<"$out"
	[ "$got" = "$2" ] || { echo "backing file of $1: '$got', want '$2'"; return 1; }
}

# emptied IMAGE: qemu-img map finds nothing the image itself provides (depth 0)
emptied()
{
	local out
	out=$(qemu-img map -U --output=json "$1") || { echo "qemu-img map $1 failed"; return 1; }
	[[ $out == *'"depth": 0, "present": true'* ]] || return 0
	echo "$out"
	echo "(the entries at depth 0 are still provided by $1)"
	return 1
}

# layer_map IMAGE OUT: qemu-img map of the image alone (no backing), host offsets included
layer_map()
{
	local spec='{"driver":"qcow2","backing":null,"file":{"driver":"file","filename":"'$1'"}}'
	qemu-img map -U --output=json "json:$spec" >"$2"
}

# layer_unchanged IMAGE BEFORE: the image's own clusters are where they were (from layer_map)
layer_unchanged()
{
	layer_map "$1" "$2.after" || return 1
	cmp -s "$2" "$2.after" && return 0
	diff "$2" "$2.after"
	return 1
}

# sha_dir DIR OUT: SHA-256 of every file in DIR, for files_unchanged
sha_dir()
{
	sha256sum -- "$1"/* >"$2"
}

# files_unchanged DIR OUT: DIR holds the same files with the same bytes as when sha_dir made OUT
files_unchanged()
{
	local -a now want
	now=("$1"/*)
	mapfile -t want <"$2"
	[ ${#now[@]} = ${#want[@]} ] || { echo "files in $1 now: ${now[*]##*/}"; return 1; }
	sha256sum --quiet -c "$2"
}

# run_to OUT COMMAND...: run, its output (both streams) in OUT, its exit status in OUT.rc
run_to()
{
	local out=$1
	shift
	"$@" >"$out" 2>&1
	echo $? >"$out.rc"
}

# ran_ok OUT: the command run by run_to exited 0
ran_ok()
{
	local rc
	read -r rc <"$1.rc"
	[ "$rc" = 0 ] && return 0
	echo "exit status $rc:"
	cat "$1"
	return 1
}

# refused_naming OUT WORD... [-- NOTWORD...]: the command run by run_to failed with a one-line
# message naming each WORD (and none of the NOTWORDs)
refused_naming()
{
	local out=$1 rc w not=0 text=""
	shift
	read -r rc <"$out.rc"
	IFS= read -r -d '' text <"$out"
	[ "$rc" != 0 ] || { echo "exit status 0, want a refusal: $text"; return 1; }
	[[ ${text%$'\n'} != *$'\n'* ]] || { echo "want a one-line error, got: $text"; return 1; }
	for w in "$@"; do
		[ "$w" = -- ] && { not=1; continue; }
		if [ $not = 0 ] && [[ $text != *"$w"* ]]; then
			echo "the message does not name '$w': $text"
			return 1
		elif [ $not = 1 ] && [[ $text == *"$w"* ]]; then
			echo "the message names '$w': $text"
			return 1
		fi
	done
}

# output_lacks TEXT COMMAND...: the command succeeds and no line of its output has TEXT (a fixed
# string). Not `! COMMAND | grep TEXT`, which passes when the command fails and prints nothing.
output_lacks()
{
	local text=$1 out
	shift
	out=$("$@") || { echo "failed: $*"; return 1; }
	if grep -F -- "$text" <<<"$out"; then
		echo "(the output of '$*' has '$text')"
		return 1
	fi
	return 0
}

# has_lines FILE PATTERN...: FILE has a line matching each (bash) PATTERN
has_lines()
{
	local f=$1 p line found
	shift
	for p in "$@"; do
		found=0
		while IFS= read -r line; do
			# shellcheck disable=SC2053
			[[ $line == $p ]] && { found=1; break; }
		done <"$f"
		[ $found = 1 ] || { echo "no line like '$p' in:"; cat "$f"; return 1; }
	done
}

# reads_zero IMAGE OFFSET LENGTH: qemu-io reads zeros there
reads_zero()
{
	local out
	out=$(qemu-io -r -U -c "read -P 0 $2 $3" "$1" 2>&1)
	[[ $out == *"read $3/$3 bytes"* && $out != *"Pattern verification failed"* ]] && return 0
	echo "$1 at $2+$3: $out"
	return 1
}

# info_says IMAGE TEXT: qemu-img info's text has TEXT
info_says()
{
	local out
	out=$(qemu-img info -U "$1") && [[ $out == *"$2"* ]] && return 0
	echo "$out"
	return 1
}

# lists_bitmap IMAGE NAME: qemu-img info lists the persistent bitmap NAME
lists_bitmap()
{
	local out
	out=$(qemu-img info -U "$1") || return 1
	[[ $out == *"name: $2"$'\n'* ]]
}

# bitmap_leaks IMAGE: the clusters `qemu-img check` reports leaked once IMAGE's bitmaps are no
# longer trusted (its autoclear bit cleared, on a copy next to it, so that its backing file
# opens): the bitmaps' own clusters
bitmap_leaks()
{
	local c=$1.leaks.qcow2 got
	cp "$1" "$c" && python3 "$E2E_HELPER" clear-autoclear "$c" || return 1
	got=$(check_counts "$c")
	rm -f "$c"
	[ -n "$got" ] || return 1
	echo "${got##* }"
}

# bitmaps_kept IMAGE BITMAP LEAKS WRITTEN: an image only re-pointed still lists BITMAP and checks
# clean. One written (WRITTEN=1) without its bitmaps updated keeps the bitmaps extension with the
# autoclear bit cleared (as qcow2.txt asks of a program that does not update bitmaps), and
# `qemu-img check` then finds no error and exactly LEAKS leaked clusters, the bitmaps' own;
# still listing the bitmap and checking clean is also right.
bitmaps_kept()
{
	local img=$1 name=$2 leaks=$3 written=$4 f got ac
	if lists_bitmap "$img" "$name"; then
		image_clean "$img"
		return
	fi
	[ "$written" = 1 ] || { echo "bitmap $name no longer listed by qemu-img info $img"; return 1; }
	f=$(python3 "$E2E_HELPER" qcow2-fields "$img") || return 1
	[[ $f == *$'\n'"exts "*0x23852875* ]] || { echo "$img lost its bitmaps extension: $f"; return 1; }
	[[ $f =~ autoclear\ (0x[0-9a-f]+) ]] && ac=${BASH_REMATCH[1]} || ac=1
	[ $((ac & 1)) = 0 ] || { echo "$img: bitmaps neither listed nor marked stale: $f"; return 1; }
	got=$(check_counts "$img")
	[ "$got" = "0 0 $leaks" ] && return 0
	echo "qemu-img check $img: check errors, corruptions, leaks: $got (want 0 0 $leaks)"
	qemu-img check "$img" 2>&1 | head -n 10
	return 1
}

# snapshot_same IMAGE SNAP RAW [REF]: SNAP of IMAGE reads RAW (if not "") and what it reads in REF
snapshot_same()
{
	qemu-img convert -U -l "snapshot.name=$2" -O raw "$1" "$C.snap.raw" || return 1
	if [ -n "$3" ]; then
		cmp "$C.snap.raw" "$3" || { echo "(snapshot $2 of $1 changed)"; return 1; }
	fi
	[ -n "${4:-}" ] || return 0
	qemu-img convert -U -l "snapshot.name=$2" -O raw "$4" "$C.snap.ref" || return 1
	cmp "$C.snap.raw" "$C.snap.ref" || { echo "(snapshot $2 of $1 differs from QEMU's)"; return 1; }
}

# snapshots_listed IMAGE LIST: `qemu-img snapshot -l` says the same as before
snapshots_listed()
{
	qemu-img snapshot -U -l "$1" >"$C.snaps" || return 1
	cmp -s "$C.snaps" "$2" || { diff "$2" "$C.snaps"; return 1; }
}

# alloc_bytes FILE: the bytes the file system allocated to FILE
alloc_bytes()
{
	echo $(($(stat -c %b "$1") * 512))
}

# ---- qcowctl map, checksum and tree: the chains they read ----

# inspect_images: in the current directory, the chains ctl-map.sh and ctl-checksum.sh read, as
# QEMU builds them; sets IMAGES (their names, df.data aside). A raw base with holes under three
# qcow2 layers (top has a snapshot), compressed clusters, 512 B clusters, extended L2 with
# subclusters and an overlay larger than its backing file, metadata preallocation, an
# external data file, a version 2 image.
inspect_images()
{
	# raw base with holes, then three qcow2 layers of 64 KiB clusters; top has a snapshot
	setup qemu-img create -q -f raw base.raw 4M
	setup qio_raw base.raw "write -P 0x11 0 1M" "write -P 0x12 3M 64k" "write -P 0x13 3200k 4k"
	setup qcreate -b base.raw -F raw l1.qcow2
	setup qio l1.qcow2 "write -P 0x21 512k 256k" "write -z 2M 128k" "discard 0 64k" \
		"write -P 0x22 1536k 192k" "write -z 1536k 64k" "write -z -u 1600k 64k"
	setup qcreate -b l1.qcow2 -F qcow2 l2.qcow2 6M # past 4M: beyond its backing file
	setup qio l2.qcow2 "write -P 0x31 3M 64k" "write -z 64k 64k" "write -P 0x32 5M 4k" \
		"write -P 0x33 100k 8k"
	setup qcreate -b l2.qcow2 -F qcow2 top.qcow2
	setup qio top.qcow2 "write -P 0x41 0 32k" "discard 3M 64k" "write -P 0x42 4160k 64k"
	setup qemu-img snapshot -c s1 top.qcow2
	setup qio top.qcow2 "write -P 0x43 256k 1M" "write -z 4M 512k" "write -P 0x44 5M 8k"

	# compressed clusters (64 KiB and 512 B), and an overlay on compressed data
	setup qcreate src.qcow2 2M
	setup qio src.qcow2 "write -P 0x51 0 1M" "write -P 0x52 1536k 64k" "write -P 0x53 1800k 1k"
	setup qemu-img convert -c -O qcow2 src.qcow2 comp.qcow2
	setup qemu-img convert -c -O qcow2 -o cluster_size=512 src.qcow2 comp512.qcow2
	setup qcreate -b comp.qcow2 -F qcow2 compov.qcow2
	setup qio compov.qcow2 "write -P 0x54 64k 64k" "write -z 512k 64k"

	# 512 B clusters
	setup qcreate -o cluster_size=512 s0.qcow2 1M
	setup qio s0.qcow2 "write -P 0x61 0 3k" "write -P 0x62 1536 1k" "write -z 8k 2k" "write -P 0x63 9k 512"
	setup qcreate -o cluster_size=512 -b s0.qcow2 -F qcow2 s1.qcow2
	setup qio s1.qcow2 "write -P 0x64 1k 512" "discard 8k 512" "write -z 2k 1k"

	# extended L2: subcluster writes, zeros, discards; the overlay is larger than its backing
	setup qcreate -o extended_l2=on x0.qcow2 2M
	setup qio x0.qcow2 "write -P 0x71 8k 4k" "write -z 16k 2k" "write -P 0x72 40k 1k" \
		"write -P 0x73 128k 64k" "discard 130k 2k" "write -z 136k 4k"
	setup qcreate -o extended_l2=on -b x0.qcow2 -F qcow2 x1.qcow2 3M
	setup qio x1.qcow2 "write -P 0x74 10k 2k" "write -z 128k 4k" "write -P 0x75 2112k 2k"

	# metadata preallocation (QEMU then looks at the host file's holes), an external data file,
	# a version 2 image
	setup qcreate -o preallocation=metadata pm.qcow2 1M
	setup qio pm.qcow2 "write -P 0x81 64k 4k"
	setup qcreate -o data_file=df.data df.qcow2 1M
	setup qio df.qcow2 "write -P 0x82 64k 4k" "write -z 128k 64k"
	setup qcreate -o compat=0.10 v2.qcow2 1M
	setup qio v2.qcow2 "write -P 0x83 64k 4k" "write -z 128k 64k"

	IMAGES=(top.qcow2 l2.qcow2 l1.qcow2 base.raw comp.qcow2 comp512.qcow2 compov.qcow2 s0.qcow2
		s1.qcow2 x0.qcow2 x1.qcow2 pm.qcow2 df.qcow2 v2.qcow2)
	# QEMU reads the host files' allocation (st_blocks, SEEK_DATA) to decide whether an image is
	# metadata-preallocated and where its data clusters have holes. Where it zeroed a cluster's
	# copy-on-write part with fallocate, SEEK_DATA finds a hole until something reads that range
	# into the page cache, and a hole again once the kernel drops those pages: so the map tests
	# come first, on files nothing has read, written back (sync) and left alone.
	setup sync "${IMAGES[@]}" df.data
}

# one_line_error TEXT COMMAND...: the command fails with one line on stderr, "qcowctl: ..."
# containing TEXT, and prints nothing on stdout (qcowctl map may print its header line first).
one_line_error()
{
	local text=$1 out=$WORK/error.out err=$WORK/error.err rc
	shift
	"$@" >"$out" 2>"$err" </dev/null
	rc=$?
	if [ $rc = 0 ]; then
		echo "'$*' succeeded"
		return 1
	fi
	if [ "$(wc -l <"$err")" != 1 ] || ! grep -q "^qcowctl: .*$text" "$err"; then
		echo "'$*' (exit $rc) did not print one line naming '$text':"
		cat "$err"
		return 1
	fi
	[ "$1" = "$QCOWCTL" ] && [ "$2" = map ] && return 0 # map prints its header line first
	[ -s "$out" ] && { echo "'$*' printed on stdout:"; cat "$out"; return 1; }
	return 0
}

# ctl_usage_error SUBCOMMAND: `qcowctl SUBCOMMAND` without arguments exits 64 (a usage error),
# and `qcowctl SUBCOMMAND --help` prints its usage line.
ctl_usage_error()
{
	"$QCOWCTL" "$1" >/dev/null 2>&1
	[ $? = 64 ] || { echo "$1 without arguments did not exit 64"; return 1; }
	"$QCOWCTL" "$1" --help | grep -q "^usage: qcowctl $1 " || { echo "$1 --help"; return 1; }
}

# holder_named ARGS...: `qcowctl ARGS` fails, naming qemu-io as the writer.
holder_named()
{
	if "$QCOWCTL" "$@" 2>"$WORK/holder.err"; then
		echo "qcowctl $* succeeded"
		return 1
	fi
	grep -q 'qemu-io' "$WORK/holder.err" || { echo "no holder named:"; cat "$WORK/holder.err"; return 1; }
}

# ---- qcowctl check: images clean and damaged ----

# mk_filled NAME [qemu-img create options...]: a 4 MiB image with data in three places
mk_filled()
{
	local name=$1
	shift
	qemu-img create -q -f qcow2 "$@" "$name" 4M &&
		qio "$name" "write -P 0x11 0 192k" "write -P 0x22 1M 64k" "write -P 0x33 3M 4k"
}

# check_images: in the current directory, the images ctl-check.sh and ctl-repair.sh check:
# clean ones of every kind qemu-img makes (CHECK_CLEAN: their names without .qcow2), ones
# damaged on purpose (CHECK_DAMAGED), with NAME.qemu.qcow2 a copy of each for qemu-img to
# repair, and held.qcow2 (a refcount too low) with its SHA-256 in held.sha.
check_images()
{
	local specs d name from kind off n damage

	# ---- clean images ----

	setup mk_filled plain.qcow2
	setup mk_filled c512.qcow2 -o cluster_size=512
	setup mk_filled r1.qcow2 -o refcount_bits=1
	setup mk_filled r64.qcow2 -o refcount_bits=64
	setup mk_filled ext.qcow2 -o extended_l2=on,cluster_size=16k
	setup mk_filled v2.qcow2 -o compat=0.10
	setup qemu-img convert -c -O qcow2 plain.qcow2 comp.qcow2
	setup qemu-img convert -c -O qcow2 -o cluster_size=512 plain.qcow2 comp512.qcow2
	setup mk_filled snap.qcow2
	setup qemu-img snapshot -c s1 snap.qcow2
	setup qio snap.qcow2 "write -P 0x44 0 64k" "write -P 0x45 2M 128k"
	setup qemu-img snapshot -c s2 snap.qcow2
	setup qio snap.qcow2 "write -P 0x46 1M 4k" "discard 2M 64k"
	setup mk_filled bitmaps.qcow2
	setup qemu-img bitmap --add bitmaps.qcow2 b0
	setup qemu-img bitmap --add -g 65536 bitmaps.qcow2 b1
	setup qio bitmaps.qcow2 "write -P 0x55 512k 64k"
	setup qemu-img create -q -f qcow2 -b plain.qcow2 -F qcow2 overlay.qcow2
	setup qio overlay.qcow2 "write -P 0x66 64k 8k"
	CHECK_CLEAN="plain c512 r1 r64 ext v2 comp comp512 snap bitmaps overlay"

	# ---- damaged images (and, NAME.qemu.qcow2, a copy of each for qemu-img to repair) ----

	# a dirty image: lazy refcounts, and a writer that died before it wrote its refcounts
	setup qemu-img create -q -f qcow2 -o lazy_refcounts=on dirty.qcow2 4M
	(qemu-io -c "write -P 0x77 0 256k" -c "write -P 0x78 2M 64k" -c abort dirty.qcow2; :) \
		>/dev/null 2>&1
	damage="leak:plain:leak refcount:plain:refcount:1M header:plain:header eof:plain:eof:64k
		meta:plain:metadata:128k copied:plain:copied snapcopied:snap:copied:1M
		extrefcount:ext:refcount corrupt:plain:refcount:64k held:plain:refcount:1M"
	specs=()
	for d in $damage; do
		IFS=: read -r name from kind off <<<"$d"
		setup cp "$from.qcow2" "$name.qcow2"
		specs+=("$name.qcow2:$kind:${off:-0}")
	done
	specs+=("corrupt.qcow2:corrupt:0")
	setup python3 "$E2E_HELPER" qcow2-break "${specs[@]}"
	CHECK_DAMAGED="leak refcount header eof meta copied snapcopied extrefcount corrupt dirty"
	for n in $CHECK_DAMAGED; do
		setup cp "$n.qcow2" "$n.qemu.qcow2"
	done
	sha_of held.qcow2 >held.sha
}

# ---- persistent bitmaps ----

# nbd_dirty_map_of IMAGE NAME OUT: what qemu-img map prints of bitmap NAME exported by qemu-nbd -B
nbd_dirty_map_of()
{
	local sock=$WORK/nbd.sock pid n rc
	rm -f "$sock"
	qemu-nbd -r -t -k "$sock" -f qcow2 -B "$2" "$1" 2>"$WORK/nbd.err" &
	pid=$!
	track_pid "$pid"
	for ((n = 0; n < 100; n++)); do
		[ -S "$sock" ] && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	timeout 60 qemu-img map --output=json --image-opts \
		"driver=nbd,server.type=unix,server.path=$sock,x-dirty-bitmap=qemu:dirty-bitmap:$2" \
		>"$3"
	rc=$?
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	[ $rc = 0 ] || { echo "qemu-nbd -B $2 $1 / qemu-img map failed:"; cat "$WORK/nbd.err"; }
	return $rc
}

# dirty_ranges IMAGE NAME: the dirty ranges of bitmap NAME as QEMU exports them (qemu-nbd -B,
# qemu-img map x-dirty-bitmap: a dirty range has "data": false), one "START LENGTH" line each,
# adjacent ranges merged
dirty_ranges()
{
	local m
	m=$(tmpfile .map)
	nbd_dirty_map_of "$1" "$2" "$m" || return 1
	python3 -c 'import json, sys
out = []
for e in json.load(open(sys.argv[1])):
    if e["data"]:
        continue
    if out and out[-1][0] + out[-1][1] == e["start"]:
        out[-1][1] += e["length"]
    else:
        out.append([e["start"], e["length"]])
for s, n in out:
    print(s, n)' "$m"
	local rc=$?
	rm -f "$m"
	return $rc
}

# granule_ranges GRANULARITY SIZE START:LENGTH...: the ranges a bitmap of GRANULARITY marks for
# those guest changes on a disk of SIZE bytes (each rounded out to whole granules, clipped to
# the disk), as dirty_ranges prints them
granule_ranges()
{
	local g=$1 size=$2 r
	shift 2
	for r in "$@"; do
		local s=${r%%:*} n=${r#*:}
		local a=$((s / g * g)) b=$(((s + n + g - 1) / g * g))
		[ $b -gt "$size" ] && b=$size
		echo "$a $b"
	done | sort -n -k1,1 | awk '
		NR == 1 { a = $1; b = $2; next }
		$1 <= b { if ($2 > b) b = $2; next }
		{ print a, b - a; a = $1; b = $2 }
		END { if (NR) print a, b - a }'
}

# ---- encrypted images (encrypt*.sh) ----

# luks_create IMAGE SIZE KEYFILE [OPTIONS]: a LUKS-encrypted qcow2 image made by qemu-img
# (`-o encrypt.format=luks,encrypt.iter-time=10,OPTIONS`, the passphrase the key file's
# content). Retried: qemu-img times PBKDF2 by the thread's CPU clock and gives up at random
# ("Unable to get accurate CPU usage") where that clock is coarse.
luks_create()
{
	local img=$1 size=$2 key=$3 opts=${4:-} i
	for ((i = 0; i < 10; i++)); do
		qemu-img create -q -u -f qcow2 --object "secret,id=k0,file=$key" \
			-o "encrypt.format=luks,encrypt.key-secret=k0,encrypt.iter-time=10${opts:+,$opts}" \
			"$img" "$size" 2>/dev/null && return 0
	done
	echo "qemu-img could not create $img"
	return 1
}

# enc_args IMAGE KEYFILE...: set ENC_ARGS to what qemu-img and qemu-io take to open IMAGE with
# its keys: a secret object each and the --image-opts spec; KEYFILE N is the key of layer N of
# the chain (0 the top), "-" for a layer that is not encrypted.
enc_args()
{
	local img=$1 k i=0 prefix="" spec
	shift
	ENC_ARGS=()
	spec="driver=qcow2,file.filename=$img"
	for k in "$@"; do
		if [ "$k" != - ]; then
			ENC_ARGS+=(--object "secret,id=sec$i,file=$k")
			spec+=",${prefix}encrypt.key-secret=sec$i"
		fi
		prefix+="backing."
		i=$((i + 1))
	done
	ENC_ARGS+=(--image-opts "$spec")
}

# enc_flat IMAGE OUT KEYFILE...: OUT holds `qemu-img convert -O raw` of IMAGE opened with its
# keys (enc_args).
enc_flat()
{
	local img=$1 out=$2
	shift 2
	enc_args "$img" "$@"
	rm -f "$out"
	qemu-img convert -U -O raw "${ENC_ARGS[@]}" "$out"
}

# enc_qio IMAGE KEYS CMD...: qemu-io commands on IMAGE opened with KEYS, the key files of its
# layers separated by spaces (as enc_args takes them, "-" for a plain layer).
enc_qio()
{
	local img=$1 keys=$2 args=() c
	shift 2
	for c in "$@"; do
		args+=(-c "$c")
	done
	# shellcheck disable=SC2086
	enc_args "$img" $keys
	qemu-io "${args[@]}" "${ENC_ARGS[@]}" >/dev/null
}

# enc_same_as_qemu FLAT IMAGE KEYFILE...: the flat view holds exactly what qemu-img convert
# makes of IMAGE opened with its keys.
enc_same_as_qemu()
{
	local flat=$1 img=$2 exp rc
	shift 2
	exp=$(tmpfile .raw)
	enc_flat "$img" "$exp" "$@" || { echo "qemu-img convert of $img failed"; return 1; }
	fs cmp "$exp" "$flat"
	rc=$?
	rm -f "$exp"
	return $rc
}

# no_ciphertext_in FILE IMAGE GUEST_OFF: the 512 bytes of IMAGE's file at the host offset of
# guest GUEST_OFF (its data cluster) are ciphertext, and FILE holds them nowhere (a view that
# served ciphertext would).
no_ciphertext_in()
{
	local host
	host=$(python3 "$E2E_HELPER" host-offset "$2" "$3") || return 1
	fs python3 "$E2E_HELPER" block-absent "$2" "$host" "$1"
}

# enc_image_clean IMAGE KEYFILE...: `qemu-img check` of IMAGE opened with its keys (enc_args)
# finds no error and no leak.
enc_image_clean()
{
	local img=$1 out rc
	shift
	enc_args "$img" "$@"
	out=$(qemu-img check "${ENC_ARGS[@]}" 2>&1)
	rc=$?
	[ $rc = 0 ] && return 0
	echo "qemu-img check $img exited $rc:"
	echo "$out" | head -n 30
	return 1
}

# ---- encrypted images ----

# qcreate_enc KEYFILE FORMAT OPTIONS NAME SIZE: `qemu-img create -f qcow2` of an encrypted image
# (FORMAT luks or aes; OPTIONS more -o options, "" for none) whose passphrase is KEYFILE's
# content. QEMU 7.2 measures PBKDF2 by thread CPU time and gives up now and then on a busy
# machine ("Unable to get accurate CPU usage"): that is retried, up to 30 times.
qcreate_enc()
{
	local key=$1 fmt=$2 opts=$3 name=$4 size=$5 i
	for ((i = 0; i < 30; i++)); do
		qemu-img create -q -f qcow2 --object "secret,id=sec0,file=$key" \
			-o "encrypt.format=$fmt,encrypt.key-secret=sec0${opts:+,$opts}" \
			"$name" "$size" 2>"$WORK/qcreate_enc.err" && return 0
		grep -q "accurate CPU usage" "$WORK/qcreate_enc.err" || break
	done
	cat "$WORK/qcreate_enc.err" >&2
	return 1
}

# qio_enc KEYFILE IMAGE CMD...: qemu-io commands on an encrypted image, quietly.
qio_enc()
{
	local key=$1 img=$2 args=() c
	shift 2
	for c in "$@"; do
		args+=(-c "$c")
	done
	qemu-io --object "secret,id=sec0,file=$key" \
		--image-opts "driver=qcow2,file.filename=$img,encrypt.key-secret=sec0" \
		"${args[@]}" >/dev/null
}

# ---- ACLs ----

# set_acl FILE PERM_OWNER PERM_GROUP PERM_OTHER UID PERM: an access ACL (written as its xattr,
# so that no ACL tool is needed) with a named-user entry for UID, mask = the group's bits.
set_acl()
{
	python3 - "$@" <<'PYEOF'
import os, struct, sys
f, o, g, other, uid, perm = sys.argv[1], *map(int, sys.argv[2:])
ents = [(0x01, o, 0xffffffff), (0x02, perm, uid), (0x04, g, 0xffffffff),
        (0x10, g | perm, 0xffffffff), (0x20, other, 0xffffffff)]
os.setxattr(f, "system.posix_acl_access",
            struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in ents))
PYEOF
}

# ---- the stamped writer (helpers/stamps.py: numbered 4 KiB blocks, each logged once written) ----

# stamp_lines LOG: how many writes LOG records.
stamp_lines()
{
	wc -l <"$1"
}

# stamp_grows LOG N: LOG records at least N writes.
stamp_grows()
{
	[ "$(stamp_lines "$1")" -ge "$2" ]
}

# stamp_writer VIEW LOG SEED FSYNC_EACH BLOCKS: the writer on VIEW in the background
# (WRITER_PID) over its first BLOCKS blocks, until $WORK/stop exists; waits (at most ~10 s)
# for its first 20 writes.
stamp_writer()
{
	local i
	rm -f "$WORK/stop"
	python3 "$E2E_HELPER" stamp-writer "$1" "$2" "$WORK/stop" "$3" "$5" "$4" >"$2.out" 2>&1 &
	WRITER_PID=$!
	track_pid "$WRITER_PID"
	on_cleanup touch "$WORK/stop"
	for ((i = 0; i < 100; i++)); do
		[ -e "$2" ] && stamp_grows "$2" 20 && return 0
		sleep 0.1
	done
	echo "the writer did not start:"
	cat "$2.out"
	return 1
}

# stamp_goes_on LOG: the writer writes 20 more blocks (within ~10 s).
stamp_goes_on()
{
	local n
	n=$(stamp_lines "$1")
	eventually stamp_grows "$1" $((n + 20))
}

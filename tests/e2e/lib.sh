# Common code for the qcowfs end-to-end tests; every tests/e2e/*.sh sources it.
#
# Gives each test: prerequisite checks (exit 77 = skip, or failure under CI=true), a private
# work directory ($WORK), a trap that unmounts every mount, stops every daemon, detaches every
# loop device and removes $WORK whatever happens, mount helpers, the qemu-img oracles
# (expect_same_as_qemu, check_seek_matches_map), helpers for writes through the views (a model
# of the expected bytes: make_model, write_both, view_is_model, image_is_model; image_clean and
# image_not_corrupt from `qemu-img check`; a QEMU writer holding an image: qemu_writer_start)
# and a pass/fail counter whose last line is "N passed, N failed".
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

pass()
{
	_e2e_pass=$((_e2e_pass + 1))
	echo "ok $((_e2e_pass + _e2e_fail)) - $*"
}

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

track_loop()
{
	_e2e_loops+=("$1")
}

track_kmount()
{
	_e2e_kmounts+=("$1")
}

# mount_qcowfs SRC MNT [OPTIONS...]: start the daemon in the foreground (in the background of
# this shell) and wait up to ~10 s for the mount. Sets QCOWFS_PID and QCOWFS_LOG.
_e2e_nmount=0
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

_e2e_ntmp=0
tmpfile()
{
	_e2e_ntmp=$((_e2e_ntmp + 1))
	echo "$WORK/tmp.$_e2e_ntmp${1:-}"
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

expect_exists()
{
	local f
	for f in "$@"; do
		fs test -e "$f" || { echo "$f does not exist"; return 1; }
	done
}

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

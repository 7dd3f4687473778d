#!/bin/bash
# ctl-kill.sh - qcowctl commit and pull killed (SIGKILL) at random moments, and interrupted
# (SIGINT) once (killed or interrupted, every image stays valid and shows the same data;
# running the same command again completes the job). The chain base <- mid <- top holds 121 MiB
# of data in 64 KiB clusters (sparse files), so that a job takes a moment. After every kill
# `qemu-img check` finds no corruption on any image (leaked clusters are allowed after a kill,
# and counted), top's flat view is the original; the same command run again succeeds, the view
# is still the original, and for commit the base holds what `qemu-img commit` gives.
# E2E_SEED=N replays a run, E2E_KILL_ROUNDS=N sets the rounds per command.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${E2E_KILL_ROUNDS:-5}
SEED=${E2E_SEED:-$((RANDOM * 32768 + RANDOM))}
RANDOM=$SEED
echo "# seed $SEED (E2E_SEED=$SEED replays this run), $ROUNDS rounds per command"

cd "$WORK" || exit 1
ORIG=$WORK/orig
mkdir -p "$ORIG"
setup qemu-img create -q -f qcow2 "$ORIG/base.qcow2" 128M
setup qio "$ORIG/base.qcow2" "write -P 0x11 0 40M"
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$ORIG/mid.qcow2"
setup qio "$ORIG/mid.qcow2" "write -P 0x21 24M 40M" "write -z 100M 4M"
setup qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$ORIG/top.qcow2"
setup qio "$ORIG/top.qcow2" "write -P 0x31 56M 40M" "write -z 8M 2M" "write -P 0x32 127M 1M"
setup qemu-img convert -O raw "$ORIG/top.qcow2" "$WORK/view.raw"
# QEMU's commit of the whole chain into the base, on a copy
setup cp -a "$ORIG" "$WORK/ref"
setup qemu-img commit -q -b base.qcow2 "$WORK/ref/top.qcow2"

# check_status_leaks IMAGE: `qemu-img check`'s exit status in CHK_RC, the leaked clusters in CHK_LEAKS
check_status_leaks()
{
	local out re='"leaks": ([0-9]+)'
	out=$(qemu-img check --output=json "$1" 2>/dev/null)
	CHK_RC=$? CHK_LEAKS=0
	[[ $out =~ $re ]] && CHK_LEAKS=${BASH_REMATCH[1]}
	return 0
}

# valid DIR WHAT: `qemu-img check` of every image in DIR finds no corruption (exit 0, or 3 for
# leaks); the leaks are added to LEAKS_<WHAT>
declare -A LEAKS=()
valid()
{
	local f bad=0
	for f in "$1"/*.qcow2; do
		check_status_leaks "$f"
		if [ "$CHK_RC" != 0 ] && [ "$CHK_RC" != 3 ]; then
			echo "qemu-img check $f exited $CHK_RC:"
			qemu-img check "$f" 2>&1 | head -n 20
			bad=1
		fi
		LEAKS[$2]=$((${LEAKS[$2]:-0} + CHK_LEAKS))
	done
	return $bad
}

# all_clean DIR: `qemu-img check` of every image in DIR is clean (exit 0)
all_clean()
{
	local f rc=0
	for f in "$1"/*.qcow2; do
		image_clean "$f" || rc=1
	done
	return $rc
}

top_view_unchanged() { same_content_raw "$1/top.qcow2" "$WORK/view.raw"; }
same_content_raw()
{
	local out
	out=$(qemu-img compare -U -F raw "$1" "$2" 2>&1) && [[ $out != *"size mismatch"* ]] && return 0
	echo "qemu-img compare $1 $2: $out"
	return 1
}
base_is_qemus()
{
	local out
	out=$(qemu-img compare -U "$1/base.qcow2" "$WORK/ref/base.qcow2" 2>&1) && return 0
	echo "qemu-img compare with QEMU's committed base: $out"
	return 1
}

# said_interrupted OUT: the command's last line is "qcowctl: interrupted" (after the progress bar)
said_interrupted()
{
	local t
	IFS= read -r -d '' t <"$1"
	[[ $t == *$'\n'"qcowctl: interrupted"$'\n' ]] && return 0
	echo "output: $t"
	return 1
}

# stands_alone IMAGE: qemu-img info names no backing file
stands_alone()
{
	local out
	out=$(qemu-img info -U "$1") || return 1
	[[ $out != *"backing file:"* ]] && return 0
	echo "$out"
	return 1
}

# job_args JOB DIR: the command's arguments, on a copy in DIR, in ARGS
job_args()
{
	case $1 in
	commit) ARGS=(commit -q --base "$2/base.qcow2" --drop "$2/top.qcow2") ;;
	pull) ARGS=(pull -q "$2/top.qcow2") ;;
	esac
}

# one uninterrupted run of each: its result and how long it takes (the kills fall within that)
declare -A DUR_MS=()
for job in commit pull; do
	rm -rf "$WORK/full" && cp -a "$ORIG" "$WORK/full" || bail "copy"
	job_args $job "$WORK/full"
	t0=${EPOCHREALTIME/./}
	run_out=$("$QCOWCTL" "${ARGS[@]}" 2>&1)
	rc=$?
	ms=$(((${EPOCHREALTIME/./} - t0) / 1000))
	DUR_MS[$job]=$((ms < 50 ? 50 : ms))
	echo "# $job runs in $ms ms"
	check "$job: uninterrupted: exit status 0" test "$rc" = 0 || echo "$run_out" | sed 's/^/#   /'
	check "$job: uninterrupted: the view unchanged" top_view_unchanged "$WORK/full"
	check "$job: uninterrupted: every image clean" all_clean "$WORK/full"
	[ $job = commit ] && check "$job: uninterrupted: the base holds QEMU's bytes" \
		base_is_qemus "$WORK/full"
done

# ---- SIGKILL at random moments ----
# The delays are drawn within the job's duration; a kill that comes after the job ended makes
# the next delays shorter, and rounds go on (up to twice as many) until one kill hit the job.
for job in commit pull; do
	hits=0 maxms=${DUR_MS[$job]}
	for ((round = 1; round <= 2 * ROUNDS; round++)); do
		[ $round -gt "$ROUNDS" ] && [ $hits -ge 1 ] && break
		D=$WORK/k
		rm -rf "$D" && cp -a "$ORIG" "$D" || bail "copy"
		ms=$((10 + RANDOM % maxms))
		job_args $job "$D"
		# qcowctl itself in the background (not a subshell running it), so the kill reaches it
		"$QCOWCTL" "${ARGS[@]}" >"$WORK/job.out" 2>&1 &
		pid=$!
		sleep "$((ms / 1000)).$(printf %03d $((ms % 1000)))"
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		rc=$?
		if [ $rc = 137 ]; then
			hits=$((hits + 1)) state=killed
		else
			state="had ended, exit status $rc" maxms=$((maxms * 2 / 3 + 1))
		fi
		what="$job: kill after $ms ms ($state)"
		l0=${LEAKS[$job-kill]:-0}
		check "$what: no image corrupt" valid "$D" "$job-kill"
		echo "# $what: $((${LEAKS[$job-kill]:-0} - l0)) leaked clusters"
		check "$what: top's view unchanged" top_view_unchanged "$D"
		"$QCOWCTL" "${ARGS[@]}" >"$WORK/job.out" 2>&1
		rc=$?
		check "$what: run again: exit status 0" test $rc = 0 || sed 's/^/#   /' "$WORK/job.out"
		check "$what: run again: top's view unchanged" top_view_unchanged "$D"
		check "$what: run again: no image corrupt" valid "$D" "$job-rerun"
		if [ $job = commit ]; then
			check "$what: run again: the base holds QEMU's bytes" base_is_qemus "$D"
		else
			check "$what: run again: top stands alone" stands_alone "$D/top.qcow2"
		fi
	done
	echo "# $job: $hits of $((round - 1)) kills hit the running job; leaked clusters after the" \
		"kills: ${LEAKS[$job-kill]:-0}, after running again: ${LEAKS[$job-rerun]:-0}"
	check "$job: at least one kill hit the running job" test "$hits" -ge 1
done

# ---- commit --drop run after a commit that left mid out of the chain (commit without --drop):
# nothing is left to copy into base, so mid (still naming base as its backing file) is no reason
# to refuse; the run completes and changes nothing. (The merged layers are deleted right after
# the pointer moves, before the top is emptied, so a kill no longer leaves this state behind
# for a --drop run: only a kill between the header write and the unlink would.) ----
D=$WORK/w
rm -rf "$D" && cp -a "$ORIG" "$D" || bail "copy"
setup "$QCOWCTL" commit -q --base "$D/base.qcow2" "$D/top.qcow2"
sha_of "$D/base.qcow2" "$D/top.qcow2" >"$WORK/w.sha"
job_args commit "$D"
"$QCOWCTL" "${ARGS[@]}" >"$WORK/job.out" 2>&1
rc=$?
what="commit --drop after a commit without --drop"
check "$what: exit status 0" test $rc = 0 || sed 's/^/#   /' "$WORK/job.out"
check "$what: base and top unchanged" sha_unchanged "$WORK/w.sha"
check "$what: top's view unchanged" top_view_unchanged "$D"
check "$what: every image clean" all_clean "$D"

# ---- SIGINT: stops at a safe point, says "interrupted", exits non-zero ----
# Sent once the progress bar shows (the copy has begun), and again until the job ends. A job that
# passed its last safe point first completes, which is right too: then it is tried again on a
# fresh copy (up to 3 times) until one is interrupted.
for job in commit pull; do
	interrupted=0
	for ((try = 1; try <= 3 && !interrupted; try++)); do
		D=$WORK/i
		rm -rf "$D" && cp -a "$ORIG" "$D" || bail "copy"
		job_args $job "$D"
		ARGS[1]=-p
		: >"$WORK/int.out"
		"$QCOWCTL" "${ARGS[@]}" >"$WORK/int.out" 2>&1 &
		pid=$!
		for ((i = 0; i < 1000; i++)); do
			TEXT=""
			IFS= read -r -d '' TEXT <"$WORK/int.out"
			[[ $TEXT == *%* ]] && break
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.005
		done
		for ((i = 0; i < 200; i++)); do
			kill -INT "$pid" 2>/dev/null || break
			sleep 0.05
		done
		wait "$pid"
		rc=$?
		tr '\r' '\n' <"$WORK/int.out" | grep -v '^ *$' | tail -n 2 | sed 's/^/# /'
		what="$job: SIGINT (try $try)"
		if [ $rc = 0 ]; then
			echo "# $what: the job completed before the interrupt reached it"
		else
			interrupted=1
			check "$what: the message says \"interrupted\"" \
				said_interrupted "$WORK/int.out"
		fi
		check "$what: every image clean" all_clean "$D"
		check "$what: top's view unchanged" top_view_unchanged "$D"
	done
	check "$job: SIGINT: interrupted (exit status non-zero) in one of $((try - 1)) tries" \
		test $interrupted = 1
	job_args $job "$D"
	"$QCOWCTL" "${ARGS[@]}" >"$WORK/job.out" 2>&1
	rc=$?
	check "$job: SIGINT: run again: exit status 0" test $rc = 0 || sed 's/^/#   /' "$WORK/job.out"
	check "$job: SIGINT: run again: top's view unchanged" top_view_unchanged "$D"
	check "$job: SIGINT: run again: every image clean" all_clean "$D"
	[ $job = commit ] &&
		check "$job: SIGINT: run again: the base holds QEMU's bytes" base_is_qemus "$D"
done
finish

#!/bin/bash
# write-crash.sh - crash safety of writes: random writes, discards and zeroings with
# fsync/fdatasync every few operations go through two flat views (512 B clusters, where metadata
# changes at almost every write, and 64 KiB clusters), both over a backing file, and the daemon
# is killed with SIGKILL at a random moment; this is repeated over many rounds on the same
# images, every other round mounted with -o writeback (the kernel's writeback cache). After
# every kill `qemu-img check` finds no corruption (leaked clusters are acceptable) and every write fsynced before the kill reads back: each writer keeps a model of its disk
# that it updates only after a successful fsync, and the bytes written since may hold either
# their old or their new value. E2E_SEED=N replays a run, E2E_CRASH_ROUNDS=N sets the rounds.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC=$WORK/src
MNT=$WORK/mnt
MODELS=$WORK/models
mkdir -p "$SRC" "$MODELS"
cd "$SRC" || exit 1

ROUNDS=${E2E_CRASH_ROUNDS:-20}
SEED=${E2E_SEED:-$((RANDOM * 32768 + RANDOM))}
RANDOM=$SEED
echo "# seed $SEED (E2E_SEED=$SEED replays this run), $ROUNDS rounds"

setup qemu-img create -q -f raw "$WORK/base.src" 4M
setup python3 "$E2E_HELPER" apply "$WORK/base.src" w:0:1536k:1 w:2M:1536k:2
setup qemu-img convert -O qcow2 "$WORK/base.src" base.qcow2
IMAGES=(c512 c64k)
setup qemu-img create -q -f qcow2 -o cluster_size=512 -b base.qcow2 -F qcow2 c512.qcow2
setup qemu-img create -q -f qcow2 -o cluster_size=64k -b base.qcow2 -F qcow2 c64k.qcow2
for name in "${IMAGES[@]}"; do
	setup make_model "$name.qcow2" "$MODELS/$name.raw"
done
sha_of base.qcow2 >"$WORK/backing.sha"

# after_crash NAME: no corruption, the image holds every fsynced write (and for the bytes written
# since the last fsync, their old or one of their new values); then the image's bytes become the
# model for the next round
after_crash()
{
	local name=$1 got=$WORK/$1.got
	image_not_corrupt "$SRC/$name.qcow2" || return 1
	qemu-img convert -O raw "$SRC/$name.qcow2" "$got" || { echo "qemu-img convert failed"; return 1; }
	python3 "$E2E_HELPER" crash-verify "$got" "$MODELS/$name.raw" "$WORK/$name.pending" || return 1
	mv "$got" "$MODELS/$name.raw"
}

# after_crash_bg NAME: after_crash in the background; bg_result NAME: its output and status
after_crash_bg()
{
	after_crash "$1" >"$WORK/$1.verify" 2>&1
	echo $? >"$WORK/$1.rc"
}
bg_result()
{
	cat "$WORK/$1.verify"
	return "$(cat "$WORK/$1.rc")"
}

# wait_gone PID SECONDS: wait for a process we started to end; kill it if it does not
wait_gone()
{
	local pid=$1 i
	for ((i = 0; i < $2 * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "# process $pid still running after $2 s: killed"
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		return 1
	fi
	wait "$pid" 2>/dev/null
	return 0
}

ok_rounds=0 total_ops=0 total_syncs=0
for ((round = 1; round <= ROUNDS; round++)); do
	# every other round through the kernel's writeback cache: fsync still makes the writes
	# durable, and a kill loses only what no fsync acknowledged
	opts=()
	((round % 2)) || opts=(-o writeback)
	mount_qcowfs "$SRC" "$MNT" "${opts[@]}" || { fail "round $round: mount"; break; }
	pids=()
	for name in "${IMAGES[@]}"; do
		rm -f "$WORK/$name.pending.ready"
		python3 "$E2E_HELPER" crash-writer "$MNT/$name.raw" "$MODELS/$name.raw" \
			"$WORK/$name.pending" "$((SEED + round * 7 + ${#pids[@]}))" 30 \
			>"$WORK/$name.writer" 2>&1 &
		pids+=($!)
		track_pid "$!"
	done
	# once both write, kill the daemon at a random moment within 0.6 s
	for name in "${IMAGES[@]}"; do
		for ((i = 0; i < 100; i++)); do
			[ -e "$WORK/$name.pending.ready" ] && break
			sleep 0.1
		done
	done
	ms=$((RANDOM % 600))
	sleep "$((ms / 1000)).$(printf %03d $((ms % 1000)))"
	kill -KILL "$QCOWFS_PID"
	wait "$QCOWFS_PID" 2>/dev/null
	writers_ok=1
	for pid in "${pids[@]}"; do
		wait_gone "$pid" 20 || writers_ok=0
	done
	fusermount3 -u -z -q "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null
	summary=""
	for name in "${IMAGES[@]}"; do
		summary+=" $name: $(tr '\n' ' ' <"$WORK/$name.writer")"
		read -r _ n _ m _ < <(grep '^ops ' "$WORK/$name.writer") || n=0 m=0
		total_ops=$((total_ops + ${n:-0})) total_syncs=$((total_syncs + ${m:-0}))
	done
	echo "# round $round:$summary"
	[ "$writers_ok" = 1 ] || fail "round $round: a writer hung after the daemon was killed"
	round_ok=1
	vpids=()
	for name in "${IMAGES[@]}"; do # both images at once
		# no result of the last round is left to be read as this round's
		rm -f "$WORK/$name.verify" "$WORK/$name.rc"
		after_crash_bg "$name" &
		vpids+=($!)
	done
	wait "${vpids[@]}"
	for name in "${IMAGES[@]}"; do
		check "round $round: $name: no corruption and every fsynced write reads back" \
			bg_result "$name" || round_ok=0
	done
	[ "$round_ok" = 1 ] || { echo "# stopping after round $round (seed $SEED)"; break; }
	ok_rounds=$((ok_rounds + 1))
done
check "$ROUNDS rounds of kill -9 survived" test "$ok_rounds" = "$ROUNDS"
echo "# $total_ops operations, $total_syncs fsyncs in all"
check "the writers wrote and fsynced (at least $((ROUNDS * 10)) operations and $ROUNDS fsyncs)" \
	test "$total_ops" -ge $((ROUNDS * 10)) -a "$total_syncs" -ge "$ROUNDS"

# after the crashes: with the leaks repaired, a clean mount, write and unmount leave the images
# clean
for name in "${IMAGES[@]}"; do
	setup qemu-img check -q -r leaks "$name.qcow2"
done
mount_qcowfs "$SRC" "$MNT" || bail "final mount failed"
for name in "${IMAGES[@]}"; do
	check "after the crashes: $name: the view reads the last state" \
		view_is_model "$MNT/$name.raw" "$MODELS/$name.raw"
	check "after the crashes: $name: writes succeed" \
		write_both "$MNT/$name.raw" "$MODELS/$name.raw" w:1000:200000:5 p:1M:100k f
done
check "the daemon unmounts and exits cleanly" umount_qcowfs "$MNT"
check "no sanitizer report in the daemon log" log_clean "$QCOWFS_LOG"
for name in "${IMAGES[@]}"; do
	check "$name: qemu-img check finds no error and no leak" image_clean "$name.qcow2"
	check "$name: qemu-img convert equals the model" image_is_model "$name.qcow2" "$MODELS/$name.raw"
done
check "the backing file is unchanged (SHA-256)" sha_unchanged "$WORK/backing.sha"
finish

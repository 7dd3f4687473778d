#!/bin/bash
# ctl-checksum.sh - qcowctl checksum against QEMU as the oracle: the sha256sum of `qemu-img
# convert -O raw` (of `convert -l` for IMAGE@SNAP, by name and by id, file names containing
# '@'), on the chains of lib.sh's inspect_images; --json and the progress bar; reading only the
# data of an 8 GiB sparse image; stopped by SIGINT; every error is one line and a non-zero
# exit; nothing is written to the images.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

D=$WORK/img
mkdir -p "$D"
cd "$D" || exit 1
inspect_images
sha_of "${IMAGES[@]}" df.data >"$WORK/before.sha"

# sum_same IMAGE [SNAPSHOT]: qcowctl checksum prints what sha256sum prints for the bytes
# qemu-img convert makes (of the snapshot: convert -l), and its own name for the argument.
sum_same()
{
	local img=$1 snap=${2:-} raw=$WORK/sum.raw want got arg=$1
	if [ -n "$snap" ]; then
		arg="$img@$snap"
		qemu-img convert -U -l "snapshot.name=$snap" -O raw "$img" "$raw" ||
			qemu-img convert -U -l "snapshot.id=$snap" -O raw "$img" "$raw" || return 1
	else
		qemu-img convert -U -O raw "$img" "$raw" || return 1
	fi
	want="$(sha256sum <"$raw" | cut -c1-64)  $arg"
	rm -f "$raw"
	got=$("$QCOWCTL" checksum -q "$arg") || return 1
	[ "$got" = "$want" ] || { echo "got  '$got'"; echo "want '$want'"; return 1; }
}

for img in "${IMAGES[@]}"; do
	check "checksum $img equals sha256sum of qemu-img convert" sum_same "$img"
done
check "checksum top.qcow2@s1 (by name) equals convert -l" sum_same top.qcow2 s1
check "checksum top.qcow2@1 (by id) equals convert -l" sum_same top.qcow2 1

setup cp s1.qcow2 at@home.qcow2
setup qemu-img rebase -u -b s0.qcow2 -F qcow2 at@home.qcow2
setup qemu-img snapshot -c 'a@b' at@home.qcow2
setup qio at@home.qcow2 "write -P 0x91 0 64k"
check "a file name with '@' is the image when it exists" sum_same at@home.qcow2
check "IMAGE@SNAP splits at the '@' that leaves an existing file" sum_same at@home.qcow2 'a@b'

checksum_json()
{
	local out=$WORK/sum.json raw=$WORK/sum.raw
	"$QCOWCTL" checksum --json -q x1.qcow2 >"$out" || return 1
	qemu-img convert -U -O raw x1.qcow2 "$raw" || return 1
	python3 - "$out" "$(sha256sum <"$raw" | cut -c1-64)" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
assert j == {"filename": "x1.qcow2", "sha256": sys.argv[2]}, j
EOF
}
check "checksum --json gives filename and sha256" checksum_json

progress_shown()
{
	local err=$WORK/progress.err
	"$QCOWCTL" checksum -p top.qcow2 >/dev/null 2>"$err" || return 1
	grep -q 'checksum \[#*\] 100.0%' "$err" || { echo "no progress bar:"; cat "$err"; return 1; }
	"$QCOWCTL" checksum -q top.qcow2 2>"$err" >/dev/null || return 1
	[ ! -s "$err" ] || { echo "-q printed:"; cat "$err"; return 1; }
}
check "checksum -p draws a progress bar to 100%, -q nothing" progress_shown

# 8 GiB, sparse: a raw file with two 64 KiB patterns and holes, under an overlay with a zeroed
# MiB and a third pattern at the end. The expected value was computed once with Python's
# hashlib (streaming the same bytes) and with `qemu-img convert -O raw | sha256sum`; hashing
# 8 GiB in the test again would double its time.
BIG_SHA=a94a606f362420fff50467f11282e9cb7b1b07994c3bddaa46d4bc7ed93caa71
setup truncate -s 8G big.raw
setup qio_raw big.raw "write -P 0x5a 0 64k" "write -P 0xa5 4G 64k"
setup qcreate -b big.raw -F raw big.qcow2
setup qio big.qcow2 "write -z 6G 1M" "write -P 0x11 8388544k 64k"
big_sum()
{
	local got trace=$WORK/big.trace
	local -a cmd=("$QCOWCTL" checksum -q big.qcow2)
	# the holes (of the raw file too) are hashed, not read: all it reads is the data and the
	# metadata (counted with strace where there is one)
	# (LeakSanitizer cannot run under ptrace)
	command -v strace >/dev/null && cmd=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
		strace -f -qq -e trace=pread64,read -o "$trace" "${cmd[@]}")
	# how fast, against qemu-img, is measured by bench/bench-jobs.sh; here a hang fails
	timeout -k 2 300 "${cmd[@]}" >"$WORK/big.out" 2>"$WORK/big.err" || { cat "$WORK/big.err"; return 1; }
	got=$(<"$WORK/big.out")
	[ "$got" = "$BIG_SHA  big.qcow2" ] || { echo "got $got"; return 1; }
	[ -f "$trace" ] || return 0
	awk -F'= ' '{ n += $NF } END { print n " bytes read"; exit !(n < 4194304) }' "$trace"
}
check "checksum of an 8 GiB sparse image reads only its data and matches" big_sum

interrupted()
{
	local pid err=$WORK/int.err rc t0
	"$QCOWCTL" checksum -q big.qcow2 >/dev/null 2>"$err" &
	pid=$!
	sleep 0.5
	t0=$(date +%s%N)
	kill -INT "$pid"
	wait "$pid"
	rc=$?
	echo "exit $rc after $((($(date +%s%N) - t0) / 1000000)) ms"
	[ $rc != 0 ] && grep -qx 'qcowctl: interrupted' "$err" && [ "$(wc -l <"$err")" = 1 ] ||
		{ cat "$err"; return 1; }
	# a hang guard, not a measure: how soon it stops is bench/bench-jobs.sh's "interrupt"
	[ $((($(date +%s%N) - t0) / 1000000)) -lt 20000 ]
}
check "SIGINT stops checksum with one line and a failure" interrupted
rm -f big.qcow2 big.raw

head -c 1024 top.qcow2 >bad.qcow2
check "checksum of a missing file: one line" one_line_error "missing.qcow2" \
	"$QCOWCTL" checksum missing.qcow2
check "checksum of a malformed qcow2 file: one line" one_line_error "bad.qcow2" \
	"$QCOWCTL" checksum bad.qcow2
check "checksum of a missing snapshot: one line" one_line_error "no snapshot 'nosuch'" \
	"$QCOWCTL" checksum top.qcow2@nosuch
check "checksum of a snapshot of a raw file: one line" one_line_error "raw files have no snapshots" \
	"$QCOWCTL" checksum base.raw@s1
check "checksum: usage errors exit 64, --help describes it" ctl_usage_error checksum

check "no image was changed" sha_unchanged "$WORK/before.sha"
finish

#!/bin/bash
# bench-truth.sh - bench/bench-truth.sh --quick still runs: tiny images, one rep, every reader
# that is installed mounted and read, the writes checked against raw's result, the report
# printed with every row, the scale row through bench-scale.sh on 50 images (no time is
# asserted; the bench itself prints ratios and targets).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root "the bench drops the page cache"
require_cmd fio qemu-storage-daemon bc cc pkg-config
ROOT=$(cd "$E2E_DIR/../.." && pwd)
OUT=$WORK/out
# the report into $OUT, the progress (and any error) on stderr
truth_quick()
{
	env QCOWFS="$QCOWFS" BENCH_DIR="$WORK/bench" BENCH_SCALE_N=50 \
		bash "$ROOT/bench/bench-truth.sh" --quick >"$OUT"
}
check "bench-truth.sh --quick runs" truth_quick
for row in "seq read 1M" "rand read 4k 1 job" "rand read 4k 4 jobs" "chain 8 rand 4k" \
	"rand write 4k +fsync" "seq write 1M +fsync" "Daemon peak memory"; do
	check "the report has the row '$row'" grep -q "^$row" "$OUT"
done
# the ratio table's line: qcowfs/raw is a number
qcowfs_ratio() { grep '^seq read 1M' "$OUT" | tail -n 1 | awk '{ exit !($5 ~ /^[0-9.]+$/) }'; }
check "qcowfs was measured (its ratio to raw is printed)" qcowfs_ratio
check "the conditions are printed" grep -q "read_ahead_kb of each FUSE mount" "$OUT"
check "the scale row ran (bench-scale.sh, 50 images)" grep -q "a directory of 50 images" "$OUT"
finish

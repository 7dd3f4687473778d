#!/bin/bash
# bench-tools.sh - bench/bench-tools.sh --quick still runs: at 16 MiB, one run of each command
# against its qemu-img counterpart, with every result checked against qemu-img's (compare,
# check, checksums) and the -v phases printed under the figures (no time is asserted here; the
# bench itself prints the ratios against the target).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_cmd qemu-img qemu-io bc numfmt python3
ROOT=$(cd "$E2E_DIR/../.." && pwd)
run_to bench.out env QCOWCTL="$QCOWCTL" TMPDIR="$WORK" BENCH_SIZES="16M 32M" \
	bash "$ROOT/bench/bench-tools.sh" --quick
check "bench-tools.sh --quick runs and every result matches qemu-img's" ran_ok bench.out
for op in commit pull copy check checksum copy-c copy-c1; do
	check "a figure for $op at 16M and at 32M, and its trend" \
		grep -Eq "^trend $op +ratio at 32M / ratio at 16M = [0-9.]+$" bench.out
done
for op in commit pull copy checking; do
	check "the phases of qcowctl ${op%ing} -v under its figure" \
		grep -Eq "qcowctl -v: $op: .*; total [0-9.]+ s, other [0-9.]+ s$" bench.out
done
finish

#!/bin/bash
# bench-memory.sh - bench/bench-memory.sh --quick still runs: it reads a 1 TiB-virtual image
# and a two-layer chain over it at random through qcowfs (and qemu-storage-daemon, when
# installed) and prints each daemon's peak memory (no figure is asserted here).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_cmd qemu-img qemu-io fio bc mountpoint
ROOT=$(cd "$E2E_DIR/../.." && pwd)
check "bench-memory.sh --quick runs" \
	env QCOWFS="$QCOWFS" TMPDIR="$WORK" bash "$ROOT/bench/bench-memory.sh" --quick
finish

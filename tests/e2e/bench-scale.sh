#!/bin/bash
# bench-scale.sh - bench/bench-scale.sh --quick still runs: it makes 100 images, mounts them,
# lists them twice and checks every view's name and size (no time is asserted here; the bench
# itself prints the figures against the targets).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_cmd qemu-img bc mountpoint
ROOT=$(cd "$E2E_DIR/../.." && pwd)
check "bench-scale.sh --quick runs and finds every view" \
	env QCOWFS="$QCOWFS" TMPDIR="$WORK" bash "$ROOT/bench/bench-scale.sh" --quick
finish

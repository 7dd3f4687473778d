#!/bin/sh
# Run a libFuzzer target for a bounded time over a fresh corpus of the built-in seeds.
# usage: run-libfuzzer.sh DRIVER FUZZER [libFuzzer options...]
# DRIVER is the target's standalone driver (it writes the seeds); crash reproducers are left
# in the working directory, to be replayed with DRIVER FILE.
set -eu
driver=$1
fuzzer=$2
shift 2
corpus=$(mktemp -d "${TMPDIR:-/tmp}/qcowfs-fuzz-XXXXXX")
trap 'rm -rf "$corpus"' EXIT
"$driver" --write-seeds "$corpus"
"$fuzzer" "$@" "$corpus"

#!/usr/bin/env bash
# test.sh - install, build and run every test of qcowfs.
#
#   bash scripts/test.sh
#
# 1. scripts/setup.sh: packages and the plain build in build/
# 2. every meson test suite in build/ (unit, end-to-end, and the formatting check)
# 3. the same build with ASan and UBSan in build-asan/, and every suite again under it
# 4. the decoder fuzzers, briefly, when the build defines a "fuzz" suite: libFuzzer in a clang
#    build (build-fuzz/), or the standalone drivers of build/ where there is no clang
# It goes on after a failure so one run reports everything, exits non-zero if anything failed,
# and ends with the line "N passed, N failed, N skipped" (tests, plus any build step that failed).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

PASSED=0
FAILED=0
SKIPPED=0
FAILURES=()

log() { printf '\n==> %s\n' "$*"; }

summary() {
	log "summary"
	if [ "${#FAILURES[@]}" -gt 0 ]; then
		printf 'failed: %s\n' "${FAILURES[@]}"
	fi
	printf '%d passed, %d failed, %d skipped\n' "$PASSED" "$FAILED" "$SKIPPED"
	[ "$FAILED" -eq 0 ]
	exit
}

step_failed() { # WHAT
	FAILED=$((FAILED + 1))
	FAILURES+=("$1")
}

# run_suites BUILDDIR LOGBASE WHAT [meson test args...] - run meson tests and count the results
# from the JSON log (one line per test); a meson failure with no failed test counts as one.
run_suites() {
	local dir=$1 logbase=$2 what=$3 rc line p=0 f=0 s=0
	local -a out
	shift 3
	rm -f "$dir/meson-logs/$logbase.json"
	meson test -C "$dir" --print-errorlogs --logbase "$logbase" "$@"
	rc=$?
	if [ -s "$dir/meson-logs/$logbase.json" ]; then
		mapfile -t out < <(python3 - "$dir/meson-logs/$logbase.json" "$what" <<'EOF'
import json, sys
path, what = sys.argv[1:]
ok = bad = skip = 0
failed = []
for line in open(path):
    if not line.strip():
        continue
    t = json.loads(line)
    r = t.get("result")
    if r in ("OK", "EXPECTEDFAIL"):
        ok += 1
    elif r == "SKIP":
        skip += 1
    else:
        bad += 1
        failed.append("%s: %s (%s)" % (what, t.get("name"), r))
print(ok, bad, skip)
for f in failed:
    print(f)
EOF
		)
		read -r p f s <<<"${out[0]:-0 0 0}"
		for line in "${out[@]:1}"; do FAILURES+=("$line"); done
	fi
	PASSED=$((PASSED + p))
	FAILED=$((FAILED + f))
	SKIPPED=$((SKIPPED + s))
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		step_failed "$what: meson test exited $rc"
	fi
	printf -- '--> %s: %d ok, %d failed, %d skipped\n' "$what" "$p" "$f" "$s"
}

log "setup: packages and build/"
if ! bash scripts/setup.sh; then
	step_failed "setup (packages or build)"
	summary
fi

# configure_dir DIR [meson options...] - configure DIR (reconfigure it if it exists) and build.
configure_dir() {
	local dir=$1
	shift
	if [ -f "$dir/build.ninja" ]; then
		meson setup --reconfigure "$dir" "$@" || return 1
	else
		rm -rf "$dir"
		meson setup "$dir" "$@" || return 1
	fi
	ninja -C "$dir"
}

HAS_FUZZ=0
# grep reads the whole list (no -q): an early exit would kill meson with SIGPIPE, and pipefail
# would then report no fuzz suite at random
if meson test -C build --list 2>/dev/null | grep fuzz >/dev/null; then
	HAS_FUZZ=1
fi
NO_FUZZ=()
[ "$HAS_FUZZ" = 1 ] && NO_FUZZ=(--no-suite fuzz)

log "tests: build/"
run_suites build plain "build" "${NO_FUZZ[@]}"

# Every suite again under the sanitizers, the fuzz drivers' mutation runs included (the
# formatting check, which runs no code of ours, only once).
log "ASan/UBSan build: build-asan/"
if configure_dir build-asan -Db_sanitize=address,undefined -Db_lundef=false; then
	log "tests: build-asan/ (ASan, UBSan)"
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		run_suites build-asan asan "build-asan" --timeout-multiplier 3 --no-suite lint
else
	step_failed "build-asan (configure or compile)"
fi

# libFuzzer needs clang: build-fuzz/ is a clang build whose fuzz suite runs the libFuzzer
# binaries for a bounded time. Without clang, the fuzz suite of build/ (standalone drivers).
if [ "$HAS_FUZZ" = 0 ]; then
	log "fuzzers: no 'fuzz' suite in build/, skipped"
elif command -v clang >/dev/null 2>&1; then
	log "fuzzers: clang build in build-fuzz/"
	if CC=clang configure_dir build-fuzz; then
		ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
			UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
			run_suites build-fuzz fuzz "fuzz" --suite fuzz
	else
		step_failed "build-fuzz (configure or compile with clang)"
	fi
else
	log "fuzzers: no clang, running the standalone drivers of build/"
	run_suites build fuzz "fuzz" --suite fuzz
fi

summary

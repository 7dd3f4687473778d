#!/usr/bin/env bash
# check-format.sh - every C file of the tree is formatted as .clang-format says.
#
#   bash scripts/check-format.sh          # report the files that differ (exit 1 if any)
#   bash scripts/check-format.sh --fix    # reformat them in place
#
# Run as the meson test "clang-format". Without clang-format: exit 77 (skipped), a failure
# under CI=true.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

if ! command -v clang-format >/dev/null 2>&1; then
	echo "check-format: clang-format is not installed" >&2
	[ "${CI:-}" = true ] && exit 1
	exit 77
fi

mapfile -t files < <(find format fs tools tests ctl -name '*.[ch]' -not -path '*/build*' | sort)
if [ "${1:-}" = --fix ]; then
	clang-format -i "${files[@]}"
	exit
fi
bad=0
for f in "${files[@]}"; do
	if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
		echo "check-format: $f differs from .clang-format (fix: bash scripts/check-format.sh --fix)" >&2
		bad=1
	fi
done
exit "$bad"

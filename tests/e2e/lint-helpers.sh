#!/bin/bash
# lint-helpers.sh - the e2e scripts share one helper vocabulary, defined in lib.sh: each shell
# function name has one definition and so one meaning. Fails when
#   - a script defines a function that lib.sh defines (a silent redefinition),
#   - two scripts define functions of the same name (one name, two meanings: move the helper
#     into lib.sh, or give the two helpers two names),
#   - a file defines a function twice,
#   - a function of lib.sh (other than an internal _e2e_* one) has no comment line right above
#     it saying what it does.
# It reads the scripts only (it needs no FUSE, no qemu-img), so it never skips.
set -u
set -o pipefail

DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LIB=$DIR/lib.sh
n=0 bad=0

ok() { n=$((n + 1)); echo "ok $n - $*"; }
notok() { n=$((n + 1)); bad=$((bad + 1)); echo "not ok $n - $*"; }

# defs FILE: "LINE NAME" for each function definition in FILE (`name()` or `function name`)
defs()
{
	awk '{
		if (match($0, /^[ \t]*function[ \t]+[A-Za-z_][A-Za-z0-9_]*/)) {
			s = substr($0, RSTART, RLENGTH); sub(/^[ \t]*function[ \t]+/, "", s)
			print NR, s
		} else if (match($0, /^[ \t]*[A-Za-z_][A-Za-z0-9_]*[ \t]*\(\)/)) {
			s = substr($0, RSTART, RLENGTH); gsub(/[ \t()]/, "", s)
			print NR, s
		}
	}' "$1"
}

declare -A lib_line=() first=()
dup=0
while read -r line name; do
	if [ -n "${lib_line[$name]:-}" ]; then
		notok "lib.sh defines $name twice (lines ${lib_line[$name]} and $line)"
		dup=1
	fi
	lib_line[$name]=$line
done < <(defs "$LIB")
[ $dup = 0 ] && ok "lib.sh defines each of its ${#lib_line[@]} functions once"

# every helper of lib.sh has a comment line right above it (or above its opening line)
undoc=()
for name in "${!lib_line[@]}"; do
	[[ $name == _* ]] && continue
	line=${lib_line[$name]}
	above=$(sed -n "$((line - 1))p" "$LIB")
	[[ $above =~ ^[[:space:]]*# ]] || undoc+=("$name (line $line)")
done
if [ ${#undoc[@]} = 0 ]; then
	ok "every helper of lib.sh has a comment line saying what it does"
else
	notok "helpers of lib.sh without a comment line above them: ${undoc[*]}"
fi

for f in "$DIR"/*.sh; do
	[ "$f" = "$LIB" ] && continue
	base=${f##*/}
	errs=()
	declare -A here=()
	while read -r line name; do
		if [ -n "${lib_line[$name]:-}" ]; then
			errs+=("line $line redefines $name, a helper of lib.sh (line ${lib_line[$name]})")
		fi
		if [ -n "${here[$name]:-}" ]; then
			errs+=("line $line defines $name a second time (first at line ${here[$name]})")
		elif [ -n "${first[$name]:-}" ]; then
			errs+=("line $line defines $name, which ${first[$name]} defines too")
		fi
		here[$name]=$line
	done < <(defs "$f")
	for name in "${!here[@]}"; do
		[ -n "${first[$name]:-}" ] || first[$name]="$base (line ${here[$name]})"
	done
	unset here
	if [ ${#errs[@]} = 0 ]; then
		ok "$base: its own helpers have names of their own"
	else
		notok "$base: ${#errs[@]} helper name(s) clash"
		printf '#   %s\n' "${errs[@]}"
	fi
done

echo "$((n - bad)) passed, $bad failed"
[ $bad = 0 ]

#!/bin/bash
# ctl-help.sh - every option a qcowctl command accepts is listed in its --help (the man pages
# and the completion are generated from --help, so an option missing there is missing
# everywhere). Which options a command accepts is asked of qcowctl itself: each letter a-z A-Z
# and each long option name found in any --help or in the option tables of the sources is
# given to each command; an option it does not refuse as unknown must appear in its --help.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$WORK" || exit 1
Q=$QCOWCTL
SRC=$E2E_DIR/../../tools

cmds=(info check map checksum tree commit pull rebase copy convert create resize measure compare amend bitmap
	"snapshot list" "snapshot create" "snapshot apply" "snapshot delete"
	"snapshot create --external" "snapshot -l"
	"snapshot list --tree" "snapshot revert --external" "snapshot delete --external")
# every long option name anywhere: the help texts and the sources' option tables
{
	for c in "${cmds[@]}"; do
		read -ra w <<<"$c"
		"$Q" "${w[0]}" --help
	done | grep -oE -- '--[a-z][a-z-]+' | sed 's/^--//'
	grep -ohE '\{"[a-z][a-z-]+", *(no|required)_argument' "$SRC"/*.c | sed -E 's/\{"([^"]+)".*/\1/'
	echo output
} | sort -u >longs.txt

# documented HELP OPT: OPT ("-x" or "--name") appears in the help text HELP as an option
documented()
{
	grep -qE -- "(^|[^a-zA-Z0-9-])$2([^a-zA-Z0-9-]|\$)" "$1"
}

# help_lists_all CMD...: every option CMD accepts is in `qcowctl CMD --help`
help_lists_all()
{
	local w=("$@") opt missing=() l
	"$Q" "${w[0]}" --help >help.txt || return 1
	for l in {a..z} {A..Z}; do
		[ "$l" = h ] && continue
		opt=-$l
		timeout -k 2 10 "$Q" "${w[@]}" "$opt" x.qcow2 y.qcow2 >/dev/null 2>err.txt </dev/null
		grep -qE "unknown option '$opt'|does not apply here" err.txt && continue
		documented help.txt "$opt" || missing+=("$opt")
	done
	while read -r l; do
		opt=--$l
		timeout -k 2 10 "$Q" "${w[@]}" "$opt" x.qcow2 y.qcow2 >/dev/null 2>err.txt </dev/null
		grep -qE "unknown option '$opt'|ambiguous option|does not apply here" err.txt && continue
		# an unambiguous abbreviation of a listed option (getopt takes those)
		documented help.txt "$opt" || grep -qE -- "$opt[a-z-]" help.txt || missing+=("$opt")
	done <longs.txt
	[ ${#missing[@]} = 0 ] || { echo "accepted but not in --help: ${missing[*]}"; return 1; }
}

for c in "${cmds[@]}"; do
	read -ra w <<<"$c"
	check "qcowctl $c: --help lists every option it accepts" help_lists_all "${w[@]}"
done
check "qcowctl --help lists every command" bash -c "
	for c in info check map checksum tree commit pull rebase copy create resize measure bitmap \
		compare amend snapshot; do '$Q' --help | grep -qE \"^  \$c \" || exit 1; done"

finish

#!/bin/bash
# install.sh - `meson install --destdir` of the build installs exactly: both programs in
# bindir, qcowfs.8 and qcowctl.1 in mandir, the qcowctl completion in bash-completion's
# completions directory (under the prefix), qcowfs@.service in systemd's unit directory
# (/lib/systemd/system with prefix /usr, as systemd.pc says on Debian 12; PREFIX/lib/systemd/
# system otherwise), and no pkg-config file (the library is not installed). The installed
# programs run, the pages format, the completion completes and the unit names the installed
# daemon.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_cmd meson man
BUILD=$(cd "$(dirname "$QCOWFS")/.." && pwd)
[ -f "$BUILD/build.ninja" ] || bail "$BUILD is not a meson build directory"
DEST=$WORK/root

# option NAME: a build option's value
option()
{
	meson introspect --buildoptions "$BUILD" |
		python3 -c 'import json, sys
print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == sys.argv[1]))' "$1"
}
PREFIX=$(option prefix)
BINDIR=$PREFIX/$(option bindir)
MANDIR=$PREFIX/$(option mandir)
COMPDIR=$PREFIX/$(option datadir)/bash-completion/completions
if [ "$PREFIX" = /usr ] && pkg-config --exists systemd 2>/dev/null; then
	UNITDIR=$(pkg-config --variable=systemdsystemunitdir systemd)
else
	UNITDIR=$PREFIX/lib/systemd/system
fi

check "meson install --destdir" meson install -C "$BUILD" --no-rebuild --destdir "$DEST" --quiet

# installed_files: every file and link under $DEST, relative to it, sorted
installed_files()
{
	(cd "$DEST" && find . ! -type d | sed 's|^\.||' | sort)
}
printf '%s\n' "$BINDIR/qcowctl" "$BINDIR/qcowfs" "$MANDIR/man1/qcowctl.1" \
	"$MANDIR/man8/qcowfs.8" "$COMPDIR/qcowctl" "$UNITDIR/qcowfs@.service" | sort >"$WORK/want"
installed_files >"$WORK/got"
check "exactly the programs, the man pages, the completion and the unit are installed" \
	diff -u "$WORK/want" "$WORK/got"
check_not "no pkg-config file" grep -q '\.pc$' "$WORK/got"

check "the installed qcowfs runs" "$DEST$BINDIR/qcowfs" --version
check "the installed qcowctl runs" "$DEST$BINDIR/qcowctl" --version
# page_formats PAGE NAME: man formats PAGE, with the NAME section naming NAME
page_formats()
{
	local out
	out=$(MANWIDTH=80 man -l "$1" 2>&1) || { echo "$out"; return 1; }
	grep -q "^ *$2 - " <<<"$out" || { echo "$out" | head -n 20; return 1; }
}
check "qcowfs.8 formats" page_formats "$DEST$MANDIR/man8/qcowfs.8" qcowfs
check "qcowctl.1 formats" page_formats "$DEST$MANDIR/man1/qcowctl.1" qcowctl
# completes FILE WORD...: COMPREPLY of the completion FILE for the command line WORD...
completes()
{
	local file=$1
	shift
	bash --norc -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
		_qcowctl qcowctl "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]}"
		printf "%s\n" "${COMPREPLY[@]}"' _ "$file" "$@"
}
# completes_che FILE: the completion FILE offers check and checksum for "qcowctl che"
completes_che()
{
	local got
	got=$(completes "$1" qcowctl che | sort | tr '\n' ' ')
	[ "$got" = "check checksum " ] || { echo "got: $got"; return 1; }
}
check "the installed completion offers commands" completes_che "$DEST$COMPDIR/qcowctl"
check "the unit runs the installed daemon in the foreground" \
	grep -qx "ExecStart=$BINDIR/qcowfs -f \$OPTIONS %f \${MOUNTPOINT}" "$DEST$UNITDIR/qcowfs@.service"

finish

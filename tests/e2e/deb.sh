#!/bin/bash
# deb.sh - the Debian package (debian/) as a distribution would ship it: a copy of the source
# tree builds with `dpkg-buildpackage -us -uc -b` (tests not run: DEB_BUILD_OPTIONS=nocheck,
# two jobs), `lintian` finds no error in the .changes (its warnings are printed), `dpkg -i`
# installs it: `qcowfs --version` runs the installed daemon, `man -w qcowfs` finds its page,
# the completion and the systemd unit are in place, and `mount -t fuse.qcowfs` (mount.fuse3
# finding the installed qcowfs) mounts a source whose view is qemu-img's flat image; then
# `dpkg -r` removes every file again. The trap purges the package on every path, so the machine
# is left as it was; the test is skipped where the package (or a file it would overwrite) is
# already there. About a minute on two cores.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root "dpkg -i"
require_cmd dpkg dpkg-buildpackage dpkg-checkbuilddeps lintian man mount tar
TOP=$(cd "$E2E_DIR/../.." && pwd)
[ -f "$TOP/debian/control" ] || bail "no debian/control in $TOP"
if dpkg-query -W -f='${db:Status-Status}' qcowfs 2>/dev/null | grep -q .; then
	[ "$(dpkg-query -W -f='${db:Status-Status}' qcowfs)" = not-installed ] ||
		missing_prereq "a machine without the qcowfs package (it is installed)"
fi
for f in /usr/bin/qcowfs /usr/bin/qcowctl; do
	[ -e "$f" ] && missing_prereq "a machine without $f (the package would overwrite it)"
done
( cd "$TOP" && dpkg-checkbuilddeps ) >"$WORK/builddeps" 2>&1 ||
	missing_prereq "the build dependencies: $(cat "$WORK/builddeps")"

# dpkg_waiting ARGS...: dpkg, waiting (up to 5 minutes) while another dpkg or apt holds its lock
dpkg_waiting()
{
	local i out rc
	for ((i = 0; i < 300; i++)); do
		out=$(dpkg "$@" 2>&1)
		rc=$?
		[ $rc = 0 ] || ! grep -q 'lock' <<<"$out" || { sleep 1; continue; }
		echo "$out"
		return $rc
	done
	echo "$out"
	return 1
}
# purge_package: remove the package, whatever state it is in
purge_package()
{
	dpkg-query -W -f='${db:Status-Status}' qcowfs 2>/dev/null | grep -qv not-installed ||
		return 0
	dpkg_waiting --purge qcowfs >/dev/null
}
on_cleanup purge_package

# ---- build, out of tree: dpkg-buildpackage writes the packages to the parent directory
mkdir -p "$WORK/pkg/qcowfs"
# copy_tree: the files of the tree as it is (uncommitted changes included, ignored files such
# as build directories and images left out) into $WORK/src.tar
copy_tree()
{
	if git -C "$TOP" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		git -C "$TOP" ls-files -z --cached --others --exclude-standard |
			tar -C "$TOP" --null --ignore-failed-read -T - -cf "$WORK/src.tar"
	else
		tar -C "$TOP" --exclude=./build --exclude='./build-*' --exclude=./demo \
			-cf "$WORK/src.tar" .
	fi
}
setup copy_tree
setup tar -C "$WORK/pkg/qcowfs" -xf "$WORK/src.tar"
# build_package: dpkg-buildpackage, its log in $WORK/build.log
build_package()
{
	(cd "$WORK/pkg/qcowfs" && DEB_BUILD_OPTIONS="nocheck parallel=2" timeout 900 \
		dpkg-buildpackage -us -uc -b) >"$WORK/build.log" 2>&1 || {
		tail -n 40 "$WORK/build.log"
		return 1
	}
}
SECONDS=0
check "dpkg-buildpackage -us -uc -b builds the package" build_package
echo "# package built in $SECONDS s"
DEB=$(ls "$WORK"/pkg/qcowfs_*_*.deb 2>/dev/null | head -n 1)
CHANGES=$(ls "$WORK"/pkg/qcowfs_*.changes 2>/dev/null | head -n 1)
[ -n "$DEB" ] && [ -n "$CHANGES" ] || bail "no .deb and .changes in $WORK/pkg"

# lintian_clean: lintian finds no error (warnings are shown, and allowed)
lintian_clean()
{
	local rc
	lintian --fail-on error "$CHANGES" >"$WORK/lintian.out" 2>&1
	rc=$?
	grep -v 'running with root privileges' "$WORK/lintian.out" | sed 's/^/# lintian: /'
	return $rc
}
check "lintian finds no error" lintian_clean

# ---- install, use, remove
check "dpkg -i installs it" dpkg_waiting -i "$DEB"
check "qcowfs --version runs the installed daemon" \
	bash -c '[ "$(command -v qcowfs)" = /usr/bin/qcowfs ] && qcowfs --version'
check "qcowctl --version runs the installed tool" /usr/bin/qcowctl --version
check "man -w qcowfs finds the page" bash -c '[ "$(man -w qcowfs)" = /usr/share/man/man8/qcowfs.8.gz ]'
check "man -w qcowctl finds the page" \
	bash -c '[ "$(man -w qcowctl)" = /usr/share/man/man1/qcowctl.1.gz ]'
check "the completion is installed" test -s /usr/share/bash-completion/completions/qcowctl
check "the systemd unit is installed" test -s "/lib/systemd/system/qcowfs@.service"
# unit_verifies: systemd-analyze verify of an instance of the installed unit says nothing (it
# also finds the installed daemon and the man page the unit names)
unit_verifies()
{
	local out
	out=$(systemd-analyze verify "qcowfs@$(systemd-escape --path "$WORK/src").service" 2>&1) &&
		[ -z "$out" ] || { echo "$out"; return 1; }
}
if command -v systemd-analyze >/dev/null 2>&1; then
	check "systemd-analyze verify accepts the installed unit" unit_verifies
fi

SRC=$WORK/src
MNT=$WORK/mnt
mkdir -p "$SRC" "$MNT"
setup qemu-img create -q -f qcow2 "$SRC/vm.qcow2" 2M
setup qemu-io -c 'write -P 0x3c 64k 1M' "$SRC/vm.qcow2"
setup qemu-img convert -O raw "$SRC/vm.qcow2" "$WORK/vm.expected"
track_mount "$MNT"
check "mount -t fuse.qcowfs runs the installed daemon" \
	timeout 20 mount -t fuse.qcowfs -o ro "$SRC" "$MNT"
check "its view is qemu-img's flat image" fs cmp "$MNT/vm.raw" "$WORK/vm.expected"
check "umount" umount "$MNT"

check "dpkg -r removes it" dpkg_waiting -r qcowfs
# package_files_gone: none of the package's files is left
package_files_gone()
{
	local f left=0
	while read -r f; do
		[ -e "$f" ] && [ ! -d "$f" ] && { echo "left: $f"; left=1; }
	done < <(dpkg -c "$DEB" | awk '{ print substr($6, 2) }')
	return $left
}
check "no file of the package is left" package_files_gone
check_not "qcowfs is no longer found" command -v qcowfs

finish

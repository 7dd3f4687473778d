#!/usr/bin/env bash
# setup.sh - install what qcowfs needs to build and test (Debian 12), then build it in build/.
#
# Idempotent: packages are installed only when one is missing, and an existing build/ is
# reconfigured rather than recreated. Run as root, or as a user with sudo.
#
#   bash scripts/setup.sh            # packages + build
#   bash scripts/setup.sh --deps     # packages only
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Build: compiler, meson, ninja and the libraries. Test: qemu tools, qemu-storage-daemon (in
# qemu-system-common), qemu-system-x86 (its savevm makes snapshots with VM state), fio, ext4
# tools, sfdisk, losetup (in mount), clang and its libFuzzer runtime (libclang-rt-14-dev, only
# recommended by clang), strace, clang-format (the formatting check).
PACKAGES=(
	gcc pkg-config meson ninja-build
	libfuse3-dev fuse3 zlib1g-dev libssl-dev libzstd-dev libcriterion-dev
	qemu-utils qemu-system-common qemu-system-x86 fio e2fsprogs fdisk util-linux mount python3
	clang libclang-rt-14-dev clang-format
	strace
)
# Commands that the build, the tests, the demo and the benchmark call.
COMMANDS=(gcc pkg-config meson ninja fusermount3 qemu-img qemu-io qemu-storage-daemon fio
	clang-format mkfs.ext4 debugfs e2fsck sfdisk losetup mountpoint python3 clang qemu-system-x86_64)
# mistakes.sh: strace kills a command at a chosen write, setpriv runs the daemon without the
# capabilities that let root read any file
COMMANDS+=(strace setpriv)
# The install and packaging tests (docs, install, systemd-unit, fstab, deb): dpkg-buildpackage
# and the build dependencies of debian/control, lintian, the completion's directory
# (bash-completion's pkg-config file), man, systemd-analyze and systemd.pc (systemd).
PACKAGES+=(dpkg-dev build-essential debhelper lintian bash-completion man-db systemd)
COMMANDS+=(dpkg-buildpackage lintian man systemd-analyze systemd-escape unshare)

log() { printf 'setup: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

missing_packages() {
	local p status
	for p in "${PACKAGES[@]}"; do
		status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
		[ "$status" = installed ] || printf '%s\n' "$p"
	done
}

missing_commands() {
	local c
	for c in "${COMMANDS[@]}"; do
		command -v "$c" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$c" \
			>/dev/null 2>&1 || printf '%s\n' "$c"
	done
}

install_packages() {
	local -a need sudo=()
	local cmds

	if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
		cmds=$(missing_commands | tr '\n' ' ')
		[ -z "$cmds" ] && return 0
		die "not a Debian system and these commands are missing: $cmds(install them by hand)"
	fi
	mapfile -t need < <(missing_packages)
	if [ "${#need[@]}" -eq 0 ]; then
		cmds=$(missing_commands | tr '\n' ' ')
		[ -n "$cmds" ] && die "all packages are installed but these commands are missing: $cmds"
		log "all packages present"
		return 0
	fi
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null 2>&1 ||
			die "missing packages (${need[*]}) and not root, with no sudo to install them"
		sudo=(sudo)
	fi
	log "installing: ${need[*]}"
	"${sudo[@]}" apt-get update
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y --no-install-recommends "${need[@]}"
	cmds=$(missing_commands | tr '\n' ' ')
	[ -z "$cmds" ] || die "still missing after install: $cmds"
}

build() {
	if [ -f build/build.ninja ]; then
		log "reconfiguring build/"
		meson setup --reconfigure build
	else
		log "configuring build/"
		rm -rf build
		meson setup build
	fi
	log "building"
	ninja -C build
}

install_packages
[ "${1:-}" = --deps ] || build
log "done"

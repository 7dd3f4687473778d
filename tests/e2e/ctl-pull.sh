#!/bin/bash
# ctl-pull.sh - qcowctl pull [--base B] against `qemu-img rebase -b B` (or -b ""), on copies of
# the chain variants of lib.sh's job_variant_build (ctl-commit.sh checks what they hold).
# Afterwards top reads as QEMU's, its view never changed, its backing pointer is QEMU's, the
# lower layers are unchanged and `qemu-img check` is clean.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$WORK" || exit 1
jobs_setup

# pull [--base B] vs `qemu-img rebase -b B top` (or -b "")
case_pull()
{
	local v=$1 base=${2:-} d
	variant_base "$v"
	[ -n "$base" ] && base=$B
	d="$v: pull${base:+ --base $B}"
	job_fresh "$v-pull${base:+-base}" "$v"
	run_to "$C.out" ctl pull -q ${base:+--base "$B"} "$O/top.qcow2"
	(cd "$R" && qemu-img rebase -b "$base" ${base:+-F "$BF"} top.qcow2) ||
		fail "$v: qemu-img rebase -b '$base' top"
	check "$d: exit status 0" ran_ok "$C.out"
	check "$d: top's view unchanged" variant_view_unchanged "$v" "$O/top.qcow2"
	check "$d: the same view as QEMU's" same_content "$O/top.qcow2" "$R/top.qcow2"
	check "$d: the backing file is '$base' (as qemu-img rebase writes it)" \
		expect_backing "$O/top.qcow2" "$base"
	check "$d: qemu-img check clean" images_clean "$O/top.qcow2"
	check "$d: the lower layers unchanged" cmp "$O/mid.qcow2" "$V/$v/mid.qcow2"
	[ -z "$base" ] || check "$d: the base unchanged" cmp "$O/$B" "$V/$v/$B"
}

job_variants std rawbase short c512 extl2 v2
case_pull std
case_pull std base
case_pull rawbase base
case_pull short
case_pull short base
case_pull c512
case_pull extl2
case_pull v2

finish

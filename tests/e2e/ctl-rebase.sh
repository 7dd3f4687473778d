#!/bin/bash
# ctl-rebase.sh - qcowctl rebase [-u] -b NEW against `qemu-img rebase [-u] -b NEW`, onto an
# unrelated image, onto the base, onto nothing, on copies of the chain variants of lib.sh's
# job_variant_build (ctl-commit.sh checks what they hold). Afterwards top reads as QEMU's, its
# view never changed (a safe rebase) or its own clusters never moved (-u), its backing pointer
# is QEMU's and `qemu-img check` is clean.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$WORK" || exit 1
jobs_setup

# rebase [-u] -b NEW vs `qemu-img rebase [-u] -b NEW`
case_rebase()
{
	local v=$1 new=$2 unsafe=${3:-} fmt=qcow2 tag d
	variant_base "$v"
	[ "$new" = "$B" ] && fmt=$BF
	tag=${new:-none}
	d="$v: rebase${unsafe:+ $unsafe} -b '$new'"
	job_fresh "$v-rebase-${tag%%.*}$unsafe" "$v"
	layer_map "$O/top.qcow2" "$C.map"
	run_to "$C.out" ctl rebase -q $unsafe -b "$new" ${unsafe:+-F "$fmt"} "$O/top.qcow2"
	(cd "$R" && qemu-img rebase -q $unsafe -b "$new" ${new:+-F "$fmt"} top.qcow2) ||
		fail "$v: qemu-img rebase $unsafe -b '$new'"
	check "$d: exit status 0" ran_ok "$C.out"
	check "$d: the same view as QEMU's" same_content "$O/top.qcow2" "$R/top.qcow2"
	if [ -z "$unsafe" ]; then
		check "$d: top's view unchanged" variant_view_unchanged "$v" "$O/top.qcow2"
	else
		check "$d: only the pointer changed (qemu-img map of top alone)" \
			layer_unchanged "$O/top.qcow2" "$C.map"
	fi
	check "$d: the backing file is '$new' (as qemu-img rebase writes it)" \
		expect_backing "$O/top.qcow2" "$new"
	check "$d: qemu-img check clean" images_clean "$O/top.qcow2"
}

job_variants std rawbase c512 extl2 v2
variant_base std
case_rebase std other.qcow2
case_rebase std "$B"
case_rebase std ""
case_rebase std other.qcow2 -u
variant_base rawbase
case_rebase rawbase "$B"
case_rebase c512 other.qcow2
case_rebase extl2 other.qcow2 -u
case_rebase v2 other.qcow2

finish

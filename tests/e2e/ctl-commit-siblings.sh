#!/bin/bash
# ctl-commit-siblings.sh - qcowctl commit refuses to change what other overlays of the chain
# show, naming them, and changes no byte then; --force commits anyway. On a copy of the std
# chain variant of lib.sh's job_variant_build, with sib.qcow2 over base and sib2.qcow2 over mid.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$WORK" || exit 1
jobs_setup
job_variants std

d="siblings"
job_fresh siblings std
(cd "$O" && qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 sib.qcow2 &&
	qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 sib2.qcow2) || bail "sibling overlays"
sha_dir "$O" "$C.sha"
run_to "$C.out" ctl commit --base "$O/base.qcow2" "$O/top.qcow2"
check "$d: commit --base base.qcow2 refused, naming sib.qcow2 and sib2.qcow2" \
	refused_naming "$C.out" sib.qcow2 sib2.qcow2
run_to "$C.out2" ctl commit "$O/top.qcow2"
check "$d: commit into mid.qcow2 refused, naming sib2.qcow2 (and not sib.qcow2)" \
	refused_naming "$C.out2" sib2.qcow2 -- sib.qcow2
# committing mid into base changes nothing sib2 shows (mid covers what base takes in)
run_to "$C.out3" ctl commit --top "$O/mid.qcow2" "$O/top.qcow2"
check "$d: intermediate commit of mid.qcow2 refused, naming sib.qcow2 (not sib2.qcow2)" \
	refused_naming "$C.out3" sib.qcow2 -- sib2.qcow2
check "$d: nothing changed (SHA-256 of every file)" files_unchanged "$O" "$C.sha"
# ... but deleting mid would leave sib2 without its backing file
mv "$O/sib.qcow2" "$C.sib.qcow2"
run_to "$C.out5" ctl commit --top "$O/mid.qcow2" --drop "$O/top.qcow2"
check "$d: intermediate commit --drop refused, naming sib2.qcow2 (its backing file)" \
	refused_naming "$C.out5" sib2.qcow2
check "$d: mid.qcow2 still there" test -e "$O/mid.qcow2"
mv "$C.sib.qcow2" "$O/sib.qcow2"
check "$d: nothing changed (SHA-256 of every file)" files_unchanged "$O" "$C.sha"
run_to "$C.out4" ctl commit -q --force --base "$O/base.qcow2" "$O/top.qcow2"
check "$d: commit --force --base base.qcow2 proceeds" ran_ok "$C.out4"
check "$d: --force: base.qcow2's view is top's" variant_view_unchanged std "$O/base.qcow2"
check "$d: --force: top's view unchanged" variant_view_unchanged std "$O/top.qcow2"
check "$d: --force: qemu-img check clean" images_clean "$O"/*.qcow2

finish

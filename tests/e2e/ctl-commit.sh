#!/bin/bash
# ctl-commit.sh - qcowctl commit against `qemu-img commit`, on copies of chains QEMU built (data,
# zero clusters and discards in every layer, compressed clusters, a raw base, a middle layer
# shorter than the others, 512 B and 64 KiB clusters, an extended-L2 overlay written in
# subclusters, v2 images: the variants of lib.sh's job_variant_build). Afterwards the base holds
# QEMU's bytes, the flat view of the image operated on never changed, the backing pointers are
# QEMU's, `qemu-img check` is clean, and a dry run changes no byte. This script also checks that
# the variants are what they claim to be (ctl-pull.sh and ctl-rebase.sh use the same ones).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$WORK" || exit 1
jobs_setup

# check_fixture VARIANT: the oracle sees what the variant means to build
check_fixture()
{
	case $1 in
	std | c512 | v2)
		check "fixtures: $1: the base has compressed clusters" has_compressed "$V/$1/base.qcow2" ;;
	short)
		check "fixtures: short: the middle layer is 2 MiB, the others 4 MiB" \
			test "$(virtual_size "$V/short/mid.qcow2")" = 2097152
		check "fixtures: short: the view past the middle layer's end is zeros" \
			reads_zero "$V/short/top.qcow2" $((2097152 + 65536)) 65536
		check_not "fixtures: short: ... where the base has data" \
			reads_zero "$V/short/base.qcow2" $((2097152 + 65536)) 65536 ;;
	extl2)
		check "fixtures: extl2: the top has extended L2 entries" \
			info_says "$V/extl2/top.qcow2" "extended l2: true" ;;
	esac
	case $1 in
	v2) check "fixtures: v2: the images are version 2" \
		test "$(qcow2_field "$V/v2/top.qcow2" version)" = 2 ;;
	esac
}

# commit, active, default base (the middle layer) vs `qemu-img commit top`
case_commit_active()
{
	local v=$1 d="$1: commit top"
	job_fresh "$v-active" "$v"
	run_to "$C.out" ctl commit -q "$O/top.qcow2"
	(cd "$R" && qemu-img commit -q top.qcow2) || fail "$v: qemu-img commit top"
	check "$d: exit status 0" ran_ok "$C.out"
	check "$d: mid.qcow2 holds QEMU's bytes" same_content "$O/mid.qcow2" "$R/mid.qcow2"
	check "$d: top's view unchanged" variant_view_unchanged "$v" "$O/top.qcow2"
	check "$d: top is emptied" emptied "$O/top.qcow2"
	check "$d: top still backs onto mid.qcow2" expect_backing "$O/top.qcow2" mid.qcow2
	check "$d: qemu-img check clean" images_clean "$O/mid.qcow2" "$O/top.qcow2"
}

# commit --base B of the 3-layer chain vs `qemu-img commit -b B top`, after a dry run; --drop
case_commit_base()
{
	local v=$1 d
	variant_base "$v"
	d="$v: commit --base $B --drop"
	job_fresh "$v-base" "$v"
	sha_dir "$O" "$C.sha"
	run_to "$C.dry" ctl commit --base "$O/$B" --drop --dry-run --json "$O/top.qcow2"
	check "$d --dry-run --json: exit status 0" ran_ok "$C.dry"
	check "$d --dry-run --json: every file unchanged" files_unchanged "$O" "$C.sha"
	# the plan's JSON, read by python (on two variants: python costs)
	if [ "$v" = std ] || [ "$v" = c512 ]; then
		python3 "$E2E_HELPER" plan "$C.dry" >"$C.plan" 2>&1
		check "$d --dry-run --json: a plan: copy into $B, re-point and empty top, delete mid" \
			has_lines "$C.plan" "dry-run true" "copy $B [1-9]*" "repoint top.qcow2 $B" \
				"empty top.qcow2" "delete mid.qcow2"
	fi
	if [ "$v" = std ]; then
		run_to "$C.dry2" ctl commit --base "$O/$B" --drop --dry-run "$O/top.qcow2"
		check "$d --dry-run: the text plan names the steps" \
			has_lines "$C.dry2" "dry run: nothing changed*" "  copy *[(]*[1-9]* bytes[)] into */$B'" \
				"  repoint */top.qcow2' to *$B'" "  empty */top.qcow2'" "  delete */mid.qcow2'"
		check "$d --dry-run: every file unchanged" files_unchanged "$O" "$C.sha"
	fi
	run_to "$C.out" ctl commit -q --base "$O/$B" --drop "$O/top.qcow2"
	(cd "$R" && qemu-img commit -q -b "$B" top.qcow2) || fail "$v: qemu-img commit -b $B top"
	check "$d: exit status 0" ran_ok "$C.out"
	check "$d: $B holds QEMU's bytes" same_content "$O/$B" "$R/$B"
	check "$d: $B's view is top's original view" variant_view_unchanged "$v" "$O/$B"
	check "$d: top's view unchanged" variant_view_unchanged "$v" "$O/top.qcow2"
	check "$d: top backs onto '$B' (relative, as it was)" expect_backing "$O/top.qcow2" "$B"
	check "$d: top is emptied" emptied "$O/top.qcow2"
	check "$d: mid.qcow2 is deleted" test ! -e "$O/mid.qcow2"
	check "$d: qemu-img check clean" images_clean "$O/$B" "$O/top.qcow2"
}

# commit --top mid (intermediate) vs `qemu-img commit mid` + `qemu-img rebase -u -b B top`
case_commit_mid()
{
	local v=$1 drop=${2:-} d
	variant_base "$v"
	d="$v: commit --top mid${drop:+ $drop}"
	job_fresh "$v-mid$drop" "$v"
	layer_map "$O/top.qcow2" "$C.map"
	run_to "$C.out" ctl commit -q --top "$O/mid.qcow2" $drop "$O/top.qcow2"
	(cd "$R" && qemu-img commit -q mid.qcow2 && qemu-img rebase -u -b "$B" -F "$BF" top.qcow2) ||
		fail "$v: qemu-img commit mid"
	check "$d: exit status 0" ran_ok "$C.out"
	if [ "$v" = short ]; then
		# QEMU commits mid's 2 MiB only, and the base's data past them then shows through top
		# (its view changes); the view must not change: zeros past 2 MiB where top has none
		check "$d: $B holds QEMU's bytes over mid's 2 MiB" \
			same_prefix "$O/$B" "$R/$B" 2097152
	else
		check "$d: $B holds QEMU's bytes" same_content "$O/$B" "$R/$B"
	fi
	check "$d: top's view unchanged" variant_view_unchanged "$v" "$O/top.qcow2"
	check "$d: top backs onto '$B'" expect_backing "$O/top.qcow2" "$B"
	check "$d: top's own clusters untouched (qemu-img map of top alone)" \
		layer_unchanged "$O/top.qcow2" "$C.map"
	if [ -n "$drop" ]; then
		check "$d: mid.qcow2 is deleted" test ! -e "$O/mid.qcow2"
	else
		check "$d: mid.qcow2 is kept" test -e "$O/mid.qcow2"
	fi
	check "$d: qemu-img check clean" images_clean "$O/$B" "$O/top.qcow2"
}

for v in std rawbase short c512 extl2 v2; do
	job_variants "$v"
	check_fixture "$v"
done
case_commit_active std
case_commit_base std
case_commit_mid std
case_commit_mid std --drop
case_commit_base rawbase
case_commit_mid rawbase
case_commit_active short
case_commit_base short
case_commit_mid short
case_commit_active c512
case_commit_base c512
case_commit_active extl2
case_commit_active v2
case_commit_base v2

finish

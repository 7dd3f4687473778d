#!/bin/bash
# ctl-check.sh - `qcowctl check` against `qemu-img check` as the oracle: on clean images of
# every kind qemu-img makes, the same JSON fields and values, the same text report, exit 0; on
# images damaged on purpose (a leak, a refcount too low, an L2 entry into the header, one past
# the end of the file, one into the refcount table, a missing COPIED flag, a dirty image left by
# lazy refcounts, the corrupt bit), the same exit status and counts; an image qemu-io holds for
# writing is checked only with -U. (--repair: ctl-repair.sh.)
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$WORK" || exit 1
Q=$QCOWCTL
H=$E2E_HELPER
check_images

# ---- both checkers on every image, compared in one go ----

declare -A QRC ORC
pairs=()
for n in $CHECK_CLEAN $CHECK_DAMAGED; do
	qemu-img check --output=json "$n.qcow2" >"$n.q.json" 2>"$n.q.err"
	QRC[$n]=$?
	"$Q" check --json "$n.qcow2" >"$n.o.json" 2>"$n.o.err"
	ORC[$n]=$?
	pairs+=("$n.o.json" "$n.q.json")
done
python3 "$H" check-compare "${pairs[@]}" >compare.txt

# same_as_qemu NAME WANT_RC: both checkers exit WANT_RC on NAME.qcow2 and print the same fields
same_as_qemu()
{
	local n=$1
	if [ "${QRC[$n]}" != "${ORC[$n]}" ] || [ "${ORC[$n]}" != "$2" ]; then
		echo "qemu-img check exits ${QRC[$n]}, qcowctl check ${ORC[$n]}, want $2"
		cat "$n.q.err" "$n.o.err"
		return 1
	fi
	grep -qxF "same $n.o.json" compare.txt || { grep -F " $n.o.json" compare.txt; return 1; }
}

for n in $CHECK_CLEAN; do
	check "clean $n.qcow2: exit 0 and the same fields as qemu-img check" same_as_qemu "$n" 0
done

# text_as_qemu IMAGE: the same report on stdout, word for word
text_as_qemu()
{
	diff -u --label "qemu-img check" --label "qcowctl check" \
		<(qemu-img check "$1" 2>/dev/null) <("$Q" check "$1" 2>/dev/null)
}
check "text report as qemu-img's (a clean image)" text_as_qemu snap.qcow2
check "text report as qemu-img's (a damaged one)" text_as_qemu header.qcow2

check "a leaked cluster: exit 3 and the counts of qemu-img" same_as_qemu leak 3
check "a refcount too low: exit 2 and the counts of qemu-img" same_as_qemu refcount 2
check "an L2 entry into the header: exit 2 and the counts of qemu-img" same_as_qemu header 2
check "an L2 entry past the end of the file: exit 2 and the counts of qemu-img" \
	same_as_qemu eof 2
check "an L2 entry into the refcount table: exit 2 and the counts of qemu-img" \
	same_as_qemu meta 2
check "a missing COPIED flag: exit 2 and the counts of qemu-img" same_as_qemu copied 2
check "a missing COPIED flag with snapshots: the counts of qemu-img" same_as_qemu snapcopied 2
check "a refcount too low, extended L2: the counts of qemu-img" same_as_qemu extrefcount 2
check "a dirty image (lazy refcounts): the counts of qemu-img" same_as_qemu dirty 2
check "an image marked corrupt is checked (read-only) as qemu-img does" same_as_qemu corrupt 2
check "the problems are reported in qemu-img's words" \
	grep -qxF "ERROR cluster 0 refcount=1 reference=2" header.o.err

# ---- locks ----

setup qemu_writer_start held.qcow2
check "a check without -U is refused too (as qemu-img check)" _e2e_negate "$Q" check -q held.qcow2
check "a check with -U reads it anyway" eval '"$Q" check -U held.qcow2 >/dev/null; [ $? = 2 ]'
qemu_writer_stop
check "the refused check changed nothing" sha_unchanged held.sha

# ---- usage ----

check "--help exits 0 and tells the exit statuses" \
	eval '"$Q" check --help | grep -q "0 clean, 2 corruptions, 3 leaked clusters only"'
check "no image: a usage error" eval '"$Q" check >/dev/null 2>&1; [ $? = 64 ]'
check "a missing image: exit 1 naming it" \
	eval '"$Q" check nothere.qcow2 2>&1 >/dev/null | grep -q "nothere.qcow2"; [ "${PIPESTATUS[*]}" = "1 0" ]'

finish

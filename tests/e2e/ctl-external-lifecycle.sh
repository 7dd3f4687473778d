#!/bin/bash
# ctl-external-lifecycle.sh - the external snapshot lifecycle offline, on a seed-like chain
# base <- s1 <- s2 <- active with a branch (br on s1) and internal snapshots:
#   - snapshot list --tree: the tree text and JSON asserted exactly (dates from qemu-img);
#   - snapshot revert --external: IMAGE's view becomes SNAP's, the state left is kept as
#     IMAGE.branch-1 whose view is the old IMAGE's (qemu-img convert + cmp), refusals (a QEMU
#     writer, an overlay using IMAGE), --discard;
#   - snapshot delete --external after a revert to a non-leaf point: every view above the
#     deleted file byte-identical, qemu-img check clean, a file with internal snapshots
#     refused; a kill -9 mid-delete, then a rerun completes with identical views.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_cmd qemu-img
require_cmd qemu-io
require_cmd python3
export TZ=UTC
D=$WORK/d
V=$WORK/views
mkdir -p "$D" "$V"
cd "$D" || exit 1

setup qemu-img create -q -f qcow2 base.qcow2 4M
setup qio base.qcow2 "write -P 0x11 0 2M"
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 s1.qcow2
setup qio s1.qcow2 "write -P 0x22 1M 1M"
setup qemu-img create -q -f qcow2 -b s1.qcow2 -F qcow2 s2.qcow2
setup qio s2.qcow2 "write -P 0x33 2M 512k"
setup qemu-img create -q -f qcow2 -b s2.qcow2 -F qcow2 active.qcow2
setup qio active.qcow2 "write -P 0x44 3M 64k"
setup qemu-img create -q -f qcow2 -b s1.qcow2 -F qcow2 br.qcow2
setup qio br.qcow2 "write -P 0x55 512k 64k"
setup qemu-img snapshot -c old base.qcow2
setup qemu-img snapshot -c snapA active.qcow2

# xl_save TAG FILE...: the flat view of each FILE into $V/TAG.FILE.raw
xl_save()
{
	local tag=$1 f
	shift
	for f in "$@"; do
		qemu-img convert -U -O raw "$f" "$V/$tag.$f.raw" || return 1
	done
}

# xl_same FILE RAW: FILE's flat view is RAW, byte for byte
xl_same()
{
	qemu-img convert -U -O raw "$1" "$WORK/cmp.raw" || return 1
	cmp "$WORK/cmp.raw" "$2"
}

# xl_date FILE TAG: the date column qemu-img snapshot -l shows for TAG
xl_date()
{
	qemu-img snapshot -U -l "$1" | awk -v t="$2" '$2 == t { print $5 " " $6 }'
}

setup xl_save v0 base.qcow2 s1.qcow2 s2.qcow2 active.qcow2 br.qcow2

# ---- list --tree ----
cat >"$WORK/tree.want" <<TREE
base.qcow2
  snapshot 1: old ($(xl_date base.qcow2 old), VM state 0 B)
  |
  +- s1.qcow2
      |
      +- br.qcow2
      |
      +- s2.qcow2
          |
          +- active.qcow2 (current)
              snapshot 1: snapA ($(xl_date active.qcow2 snapA), VM state 0 B)
TREE
check "list --tree draws the chain, the branch and the internal snapshots" \
	bash -c '"$1" snapshot list --tree active.qcow2 | diff -u "$2" -' _ "$QCOWCTL" "$WORK/tree.want"
"$QCOWCTL" snapshot list --tree --json active.qcow2 >"$WORK/tree.json" 2>&1
qemu-img info -U --output=json base.qcow2 >"$WORK/base.info"
qemu-img info -U --output=json active.qcow2 >"$WORK/active.info"
check "list --tree --json has the same tree, dates as qemu-img info's" python3 - "$D" "$WORK" <<'PY'
import json, sys
d, w = sys.argv[1], sys.argv[2]
def snaps(info):
    return [{"id": s["id"], "name": s["name"], "date-sec": s["date-sec"],
             "date-nsec": s["date-nsec"], "vm-state-size": s["vm-state-size"]}
            for s in json.load(open(info)).get("snapshots", [])]
def node(name, current=False, chain=True, sn=(), kids=()):
    return {"filename": name, "full-path": d + "/" + name, "current": current,
            "in-chain": chain, "snapshots": list(sn), "children": list(kids)}
want = {"image": d + "/active.qcow2", "tree": [
    node("base.qcow2", sn=snaps(w + "/base.info"), kids=[
        node("s1.qcow2", kids=[
            node("br.qcow2", chain=False),
            node("s2.qcow2", kids=[
                node("active.qcow2", current=True, sn=snaps(w + "/active.info"))])])])]}
got = json.load(open(w + "/tree.json"))
if got != want:
    print("got:", json.dumps(got, indent=1)); print("want:", json.dumps(want, indent=1))
    sys.exit(1)
PY

# ---- revert ----
sha256sum active.qcow2 >"$WORK/active.sha"
if qemu_writer_start active.qcow2; then
	check "revert refused while qemu-io writes IMAGE, naming it" expect_fail_msg \
		"qemu-io|$QEMU_WRITER_PID" "$QCOWCTL" snapshot revert --external active.qcow2 s1.qcow2
	qemu_writer_stop
else
	fail "qemu-io holds active.qcow2"
fi
setup qemu-img create -q -f qcow2 -b active.qcow2 -F qcow2 child.qcow2
check "revert refused while an overlay uses IMAGE, naming it" expect_fail_msg "child.qcow2" \
	"$QCOWCTL" snapshot revert --external active.qcow2 s1.qcow2
rm -f child.qcow2
check "a refused revert changes nothing" sha256sum -c --quiet "$WORK/active.sha"
check_not "no branch after a refusal" test -e active.qcow2.branch-1
out=$("$QCOWCTL" snapshot revert --external --dry-run active.qcow2 s1.qcow2 2>&1)
check "revert --dry-run names the branch it would keep" grep -q "active.qcow2.branch-1" <<<"$out"
check "revert --dry-run changes nothing" sha256sum -c --quiet "$WORK/active.sha"

out=$("$QCOWCTL" snapshot revert --external active.qcow2 s1.qcow2 2>&1)
check "revert to a non-leaf point succeeds, naming the branch" \
	grep -q "kept as 'active.qcow2.branch-1'" <<<"$out"
check "IMAGE now shows SNAP's view" xl_same active.qcow2 "$V/v0.s1.qcow2.raw"
check "IMAGE is a fresh overlay on SNAP" \
	bash -c "qemu-img info -U --output=json active.qcow2 | grep -q '\"backing-filename\": \"s1.qcow2\"'"
check "the branch shows the old IMAGE's view" xl_same active.qcow2.branch-1 "$V/v0.active.qcow2.raw"
check "the branch still backs onto its own base" \
	bash -c "qemu-img info -U --output=json active.qcow2.branch-1 | grep -q '\"backing-filename\": \"s2.qcow2\"'"
check "the branch keeps its internal snapshot" bash -c "qemu-img snapshot -l active.qcow2.branch-1 | grep -q snapA"
for f in active.qcow2 active.qcow2.branch-1; do
	check "$f passes qemu-img check" image_clean "$f"
done
check_not "no temporary file left" bash -c "ls -A | grep -q qcowctl"

# ---- delete after a revert to a non-leaf point ----
setup xl_save v1 active.qcow2 active.qcow2.branch-1 br.qcow2 s2.qcow2
sha256sum base.qcow2 >"$WORK/base.sha"
check "delete of a file with internal snapshots is refused" expect_fail_msg "internal snapshot" \
	"$QCOWCTL" snapshot delete --external active.qcow2 base.qcow2
check "the refused delete changed nothing" sha256sum -c --quiet "$WORK/base.sha"
# the branch's internal snapshot snapA reads s2's data: a pull into the branch would change
# that snapshot's view (a pull fills only the active state), and s2's parent s1 has other
# children (no commit into it): refused until that snapshot is gone
check "delete of s2 refused while the branch's snapshot snapA reads its data" \
	expect_fail_msg "internal snapshot 'snapA' reads data of '.*s2.qcow2'" \
	"$QCOWCTL" snapshot delete --external active.qcow2.branch-1 s2.qcow2
check "... s2 is still there" test -e s2.qcow2
setup qemu-img snapshot -d snapA active.qcow2.branch-1
out=$("$QCOWCTL" snapshot delete --external --dry-run --json active.qcow2.branch-1 s2.qcow2 2>&1)
check "delete --dry-run --json says which way and how many bytes" python3 -c '
import json, sys
p = json.loads(sys.argv[1])
assert p["dry-run"] is True and p["way"] == "pull" and p["pull-bytes"] == 524288, p' "$out"
check "delete --dry-run leaves s2" test -e s2.qcow2
if qemu_writer_start active.qcow2.branch-1; then
	check "delete refused while qemu-io writes a child of SNAP, naming it" expect_fail_msg \
		"qemu-io|$QEMU_WRITER_PID" "$QCOWCTL" snapshot delete --external active.qcow2.branch-1 s2.qcow2
	qemu_writer_stop
else
	fail "qemu-io holds active.qcow2.branch-1"
fi
check "the refused delete left s2 and no journal" \
	bash -c 'test -e s2.qcow2 && ! ls -A | grep -q qcowctl'
check "delete s2 from the branch's chain" "$QCOWCTL" snapshot delete --external -q \
	active.qcow2.branch-1 s2.qcow2
check_not "s2 is gone" test -e s2.qcow2
check "the branch's view is unchanged" xl_same active.qcow2.branch-1 "$V/v1.active.qcow2.branch-1.raw"
check "s1 has three children now; delete it from IMAGE's chain" \
	"$QCOWCTL" snapshot delete --external -q active.qcow2 s1.qcow2
check_not "s1 is gone" test -e s1.qcow2
for f in active.qcow2 active.qcow2.branch-1 br.qcow2; do
	check "$f: view unchanged by the deletes" xl_same "$f" "$V/v1.$f.raw"
	check "$f passes qemu-img check" image_clean "$f"
done
check_not "no journal left" bash -c "ls -A | grep -q qcowctl"

# ---- revert --discard ----
setup qemu-img create -q -f qcow2 -b active.qcow2 -F qcow2 child.qcow2
check "revert --discard refused while an overlay uses IMAGE" expect_fail_msg "child.qcow2" \
	"$QCOWCTL" snapshot revert --external --discard active.qcow2 base.qcow2
rm -f child.qcow2
check "revert --discard" "$QCOWCTL" snapshot revert --external --discard -q active.qcow2 base.qcow2
check "IMAGE shows base's view" xl_same active.qcow2 "$V/v0.base.qcow2.raw"
check_not "no new branch with --discard" test -e active.qcow2.branch-2

# ---- kill -9 mid-delete, then a rerun ----
K=$WORK/k
mkdir -p "$K"
cd "$K" || exit 1
setup qemu-img create -q -f qcow2 k0.qcow2 256M
setup qio k0.qcow2 "write -P 0x61 0 64M"
setup qemu-img create -q -f qcow2 -b k0.qcow2 -F qcow2 k1.qcow2
setup qio k1.qcow2 "write -P 0x62 0 96M"
setup qemu-img create -q -f qcow2 -b k1.qcow2 -F qcow2 k2.qcow2
setup qio k2.qcow2 "write -P 0x63 128M 1M"
setup qemu-img create -q -f qcow2 -b k1.qcow2 -F qcow2 k3.qcow2
setup xl_save k k2.qcow2 k3.qcow2
"$QCOWCTL" snapshot delete --external -q k2.qcow2 k1.qcow2 &
pid=$!
track_pid "$pid"
sleep 0.5
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
if [ -e .k2.qcow2.qcowctl-external-delete ]; then
	echo "# killed mid-delete (journal present)"
fi
for f in k2.qcow2 k3.qcow2; do
	check "$f: view unchanged right after the kill" xl_same "$f" "$V/k.$f.raw"
done
# The kill lands where it lands: mid-delete (the journal, or k1 itself, still there), the rerun
# must finish it; after the end (k1 gone, no journal: a slow or fast machine), there is
# nothing left to finish and k1 is no longer in the chain.
if [ -e .k2.qcow2.qcowctl-external-delete ] || [ -e k1.qcow2 ]; then
	check "the rerun completes the delete" \
		"$QCOWCTL" snapshot delete --external -q k2.qcow2 k1.qcow2
else
	echo "# the first run had finished before the kill"
	check_not "a rerun after the end finds no k1 to delete" \
		"$QCOWCTL" snapshot delete --external -q k2.qcow2 k1.qcow2
fi
check_not "k1 is gone" test -e k1.qcow2
check_not "no journal left" test -e .k2.qcow2.qcowctl-external-delete
for f in k2.qcow2 k3.qcow2; do
	check "$f: view identical after the rerun" xl_same "$f" "$V/k.$f.raw"
	check "$f passes qemu-img check" image_clean "$f"
done
# ---- a child's internal snapshot that reads SNAP's data: a pull cannot keep it ----
setup qemu-img create -q -f qcow2 z-base.qcow2 4M
setup qio z-base.qcow2 "write -P 0x66 1M 64k"
setup qemu-img create -q -f qcow2 -b z-base.qcow2 -F qcow2 z.qcow2
setup qemu-img snapshot -c zs z.qcow2
setup qemu-img convert -l snapshot.name=zs -O raw z.qcow2 "$WORK/zs.raw"
sha256sum z-base.qcow2 z.qcow2 >"$WORK/z.sha"
check "delete of a parentless SNAP whose child's snapshot reads it: refused, naming the snapshot" \
	expect_fail_msg "internal snapshot 'zs' reads data of" ctl snapshot delete --external z.qcow2 z-base.qcow2
check "... changing nothing" sha256sum -c --quiet "$WORK/z.sha"
setup qemu-img create -q -f qcow2 z-p.qcow2 4M
setup qio z-p.qcow2 "write -P 0x77 1M 2M"
setup qemu-img rebase -u -b z-p.qcow2 -F qcow2 z-base.qcow2
setup qemu-img convert -l snapshot.name=zs -O raw z.qcow2 "$WORK/zs.raw"
setup qemu-img convert -O raw z.qcow2 "$WORK/z.raw"
zout=$(ctl snapshot delete --external z.qcow2 z-base.qcow2 2>&1)
check "with a parent, the delete commits into it instead of pulling" \
	eval '[[ "$zout" == "commit:"* ]] && [ ! -e z-base.qcow2 ] || { echo "$zout"; false; }'
check "... the child's snapshot view is unchanged" \
	eval 'qemu-img convert -l snapshot.name=zs -O raw z.qcow2 "$WORK/zs2.raw" && cmp "$WORK/zs.raw" "$WORK/zs2.raw"'
check "... the child's view is unchanged" xl_same z.qcow2 "$WORK/z.raw"
check "... z.qcow2 backs onto the parent" \
	eval '[ "$(qemu-img info --output=json z.qcow2 | python3 -c "import json,sys; print(json.load(sys.stdin)[\"backing-filename\"])")" = z-p.qcow2 ]'
for f in z.qcow2 z-p.qcow2; do
	check "$f passes qemu-img check" image_clean "$f"
done
finish

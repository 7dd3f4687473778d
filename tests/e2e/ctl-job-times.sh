#!/bin/bash
# ctl-job-times.sh - `-v` on commit, pull, copy and check prints where the job's time went:
# one line on stderr naming the phases the job ran (each a name and its seconds, never
# negative), the bytes the copy phase wrote, and "total T s, other O s", where the phases and
# other add up to the total and the copy's reads and writes fit inside the copy. The jobs' results
# are still QEMU's (qemu-img compare against the same job run by qemu-img, qemu-img check clean),
# and without -v nothing of it is printed.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_cmd qemu-img qemu-io python3
cd "$WORK" || exit 1

# A 16 MiB base of data and a top over it with every other MiB written: copies of both on
# each side ("o": qcowctl, "r": qemu-img).
setup qemu-img create -q -f qcow2 base.qcow2 16M
setup qemu-io -c 'write -P 7 0 16M' base.qcow2
setup qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
for ((i = 0; i < 16; i += 2)); do
	setup qemu-io -c "write -P $((i + 1)) ${i}M 1M" top.qcow2
done

# job_times_fresh SIDE: new copies of the chain in SIDE/
job_times_fresh()
{
	rm -rf "$1" && mkdir "$1" && cp base.qcow2 top.qcow2 "$1/"
}

# times_add_up ERR WANT_BYTES PHASE...: the -v line in ERR names every PHASE, each with a time
# >= 0; the phases and "other" add up to "total" (to the printed rounding); with WANT_BYTES,
# the copy phase says it wrote that many bytes and its reads and writes fit inside it.
times_add_up()
{
	python3 - "$@" <<'PY'
import re, sys
err, want, need = sys.argv[1], sys.argv[2], sys.argv[3:]
lines = [l for l in open(err) if "; total " in l]
if len(lines) != 1:
    sys.exit("want one times line, got %d: %r" % (len(lines), open(err).read()))
line = lines[0]
head, tail = line.split("; total ")
m = re.fullmatch(r"([0-9.]+) s, other ([0-9.]+) s\n", tail)
if not m:
    sys.exit("no total/other in %r" % line)
total, other = float(m.group(1)), float(m.group(2))
phases = {}
for p in re.finditer(r"(?:^[a-z]+:|,) ([a-z]+) ([0-9.]+) s", re.sub(r" \([^)]*\)", "", head)):
    phases[p.group(1)] = float(p.group(2))
for n in need:
    if n not in phases:
        sys.exit("phase %s missing from %r" % (n, line))
if any(v < 0 for v in phases.values()) or total < 0 or other < 0:
    sys.exit("a negative time in %r" % line)
s = sum(phases.values()) + other
if abs(s - total) > 0.001 * (len(phases) + 2):
    sys.exit("phases + other = %.3f, total %.3f: %r" % (s, total, line))
if want != "-":
    c = re.search(r" copy ([0-9.]+) s \(([0-9.]+) (B|KiB|MiB|GiB); reads ([0-9.]+) s, writes ([0-9.]+) s\)", line)
    if not c:
        sys.exit("no copy figures in %r" % line)
    mult = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[c.group(3)]
    if round(float(c.group(2)) * mult) != int(want):
        sys.exit("copy wrote %s %s, want %s bytes" % (c.group(2), c.group(3), want))
    if float(c.group(4)) + float(c.group(5)) > float(c.group(1)) + 0.002:
        sys.exit("reads + writes exceed the copy phase: %r" % line)
print(line.strip())
PY
}

# no_times ERR: nothing of -v printed
no_times()
{
	! grep -q "; total " "$1"
}

# commit -v: 8 MiB of top's data copied into base, top emptied
job_times_fresh o
job_times_fresh r
run_to o.commit "$QCOWCTL" commit -q -v o/top.qcow2
(cd r && qemu-img commit -q top.qcow2) || fail "qemu-img commit"
check "commit -v: exit status 0" ran_ok o.commit
check "commit -v: open, plan, copy, flush, sync, pointer, empty timed, adding up" \
	times_add_up o.commit $((8 << 20)) open plan copy flush sync pointer empty
check "commit -v: base as QEMU's" same_content o/base.qcow2 r/base.qcow2
check "commit -v: top as QEMU's" same_content o/top.qcow2 r/top.qcow2
check "commit -v: qemu-img check clean" images_clean o/base.qcow2 o/top.qcow2

# pull -v: the other 8 MiB copied up into top, which then stands alone
job_times_fresh o
job_times_fresh r
run_to o.pull "$QCOWCTL" pull -q -v o/top.qcow2
(cd r && qemu-img rebase -b "" top.qcow2) || fail "qemu-img rebase"
check "pull -v: exit status 0" ran_ok o.pull
check "pull -v: open, plan, copy, flush, sync, pointer timed, adding up" \
	times_add_up o.pull $((8 << 20)) open plan copy flush sync pointer
check "pull -v: top as QEMU's" same_content o/top.qcow2 r/top.qcow2
check "pull -v: qemu-img check clean" images_clean o/top.qcow2

# copy -v (and convert, its other name): 16 MiB into a new image
job_times_fresh o
run_to o.copy "$QCOWCTL" copy -q -v o/top.qcow2 o/out.qcow2
check "copy -v: exit status 0" ran_ok o.copy
check "copy -v: plan, create, copy, flush, sync, rename timed, adding up" \
	times_add_up o.copy $((16 << 20)) plan create copy flush sync rename
check "copy -v: the copy shows top's view" same_content o/out.qcow2 top.qcow2
check "copy -v: qemu-img check clean" images_clean o/out.qcow2
run_to o.convert "$QCOWCTL" convert -q -v o/top.qcow2 o/out2.qcow2
check "convert -v: the same phases" times_add_up o.convert $((16 << 20)) plan create copy flush sync rename

# check -v: the walk, the comparison with the refcounts and the COPIED flags, timed
run_to o.check "$QCOWCTL" check -v top.qcow2
check "check -v: exit status 0" ran_ok o.check
check "check -v: walk, compare, copied timed, adding up" times_add_up o.check - walk compare copied
check "check -v: the report is still qemu-img's" grep -q "No errors were found on the image." o.check

# An active commit drops what it read from the page cache as it goes (its top is emptied
# right after; the punch would otherwise truncate those pages serially): the 12 MiB of data of
# a middle layer it merged, read whole into the page cache first, are no longer cached after (but
# for its metadata and a large folio of the page cache at the end, at most 3 MiB), while
# base shows what QEMU's commit into base makes. fincore is the oracle of the page cache.
if command -v fincore >/dev/null; then
	# cached_below FILE MAX: at most MAX bytes of FILE are in the page cache
	cached_below()
	{
		local n
		n=$(fincore --bytes --noheadings --output RES "$1") || return 1
		echo "$1: $n bytes cached (at most $2 wanted)"
		[ "$n" -le "$2" ]
	}
	for side in o r; do
		rm -rf "$side" && mkdir "$side" && cp base.qcow2 "$side/" &&
			qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$side/mid.qcow2" &&
			qemu-io -c 'write -P 9 0 12M' "$side/mid.qcow2" >/dev/null &&
			qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$side/top.qcow2" &&
			qemu-io -c 'write -P 5 12M 4M' "$side/top.qcow2" >/dev/null ||
			bail "building base <- mid <- top"
	done
	cat o/mid.qcow2 >/dev/null
	run_to o.drop "$QCOWCTL" commit -q --base o/base.qcow2 o/top.qcow2
	(cd r && qemu-img commit -q -b base.qcow2 top.qcow2) || fail "qemu-img commit -b base"
	check "commit --base: exit status 0" ran_ok o.drop
	check "commit --base: base as QEMU's" same_content o/base.qcow2 r/base.qcow2
	check "commit --base: top's view as QEMU's" same_content o/top.qcow2 r/top.qcow2
	check "commit --base: the middle layer's data it read left the page cache" \
		cached_below o/mid.qcow2 $((3 << 20))
fi

# without -v: no times
job_times_fresh o
run_to o.plain "$QCOWCTL" commit -q o/top.qcow2
check "commit without -v: exit status 0" ran_ok o.plain
check "commit without -v: no times printed" no_times o.plain

finish

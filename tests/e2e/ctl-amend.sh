#!/bin/bash
# ctl-amend.sh - `qcowctl amend -o compat=...,lazy_refcounts=...` against `qemu-img amend` on
# twin copies: where qemu-img amends, the same result (qemu-img info's facts, the same view,
# a clean image) for a downgrade (with data, zero clusters, an internal snapshot, zstd without
# compressed clusters, zero clusters over a backing file), an upgrade and lazy refcounts on
# and off; where qemu-img refuses
# (refcount_bits=8, extended L2, an external data file, zstd with compressed clusters,
# snapshots of another size), a refusal with qemu-img's reason and no byte changed. Refused
# where QEMU would lose something: persistent bitmaps. Lazy refcounts dropped by a downgrade
# and a dirty image repaired first, as qemu-img does. --dry-run changes nothing; bad options
# are usage errors.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$WORK" || exit 1
Q=$QCOWCTL

# twin_amend OPTS IMAGE: qemu-img amend -o OPTS on a copy, qcowctl amend -o OPTS on IMAGE: both
# succeed, and qemu-img info (but the name and disk size) and the view are the same, the
# image clean
twin_amend()
{
	local o=$1 f=$2
	cp "$f" "ref-$f" || return 1
	qemu-img amend -o "$o" "ref-$f" || { echo "qemu-img amend failed"; return 1; }
	"$Q" amend -q -o "$o" "$f" || return 1
	diff <(qemu-img info "ref-$f" | grep -vE '^(image|disk size):') \
		<(qemu-img info "$f" | grep -vE '^(image|disk size):') || return 1
	same_content "$f" "ref-$f" && image_clean "$f"
}

# twin_refused OPTS IMAGE WORDS: qemu-img and qcowctl both refuse, qcowctl in one line
# holding WORDS (qemu-img's reason), and IMAGE is unchanged
twin_refused()
{
	local o=$1 f=$2 words=$3
	cp "$f" "ref-$f" || return 1
	sha_of "$f" >"$f.sha"
	! qemu-img amend -o "$o" "ref-$f" 2>/dev/null || { echo "qemu-img amends it"; return 1; }
	! "$Q" amend -o "$o" "$f" 2>err || { echo "qcowctl amends it"; return 1; }
	[ "$(wc -l <err)" = 1 ] && grep -qiF "$words" err || { cat err; return 1; }
	sha_unchanged "$f.sha"
}

setup mk_qcow2 a1.qcow2 4M
setup qio a1.qcow2 "write -P 0x11 0 1M" "write -P 0x12 3M 64k"
check "compat=0.10" twin_amend compat=0.10 a1.qcow2
check "compat=1.1 (upgrade)" twin_amend compat=1.1 a1.qcow2
check "lazy_refcounts=on" twin_amend lazy_refcounts=on a1.qcow2
check "lazy_refcounts=off" twin_amend lazy_refcounts=off a1.qcow2
check "compat=v2 then v3" bash -c "'$Q' amend -q -o compat=v2 a1.qcow2 && '$Q' amend -q -o compat=v3 a1.qcow2"
check "... still the same view" same_content a1.qcow2 ref-a1.qcow2
setup mk_qcow2 a2.qcow2 4M -o lazy_refcounts=on
setup qio a2.qcow2 "write -P 0x21 0 128k"
check "compat=0.10,lazy_refcounts=off" twin_amend compat=0.10,lazy_refcounts=off a2.qcow2
setup mk_qcow2 a3.qcow2 4M
setup qio a3.qcow2 "write -P 0x31 0 256k" "write -z 64k 128k" "write -z 2M 1M"
check "compat=0.10 with zero clusters (now unallocated)" twin_amend compat=0.10 a3.qcow2
setup mk_qcow2 zb.qcow2 4M
setup qio zb.qcow2 "write -P 0x39 0 4M"
setup qemu-img create -q -f qcow2 -b zb.qcow2 -F qcow2 a3b.qcow2
setup qio a3b.qcow2 "write -z 64k 192k" "write -P 0x3a 1M 64k" "write -z 2M 1M"
check "compat=0.10 with zero clusters over a backing file (now data clusters of zeros)" \
	twin_amend compat=0.10 a3b.qcow2
setup mk_qcow2 a4.qcow2 4M
setup qio a4.qcow2 "write -P 0x41 0 1M"
setup qemu-img snapshot -c s1 a4.qcow2
setup qio a4.qcow2 "write -P 0x42 0 64k"
check "compat=0.10 with an internal snapshot" twin_amend compat=0.10 a4.qcow2
check "... the snapshot keeps its content" bash -c "qemu-img snapshot -a s1 a4.qcow2 &&
	qemu-io -c 'read -P 0x41 0 1M' a4.qcow2 | grep -q '^read'"
setup mk_qcow2 a5.qcow2 4M -o compression_type=zstd
check "compat=0.10 of zstd without compressed clusters" twin_amend compat=0.10 a5.qcow2

setup mk_qcow2 r1.qcow2 4M -o refcount_bits=8
check "refused: refcount_bits=8" twin_refused compat=0.10 r1.qcow2 "requires refcount_bits=16"
setup mk_qcow2 r2.qcow2 4M -o extended_l2=on
check "refused: extended L2" twin_refused compat=0.10 r2.qcow2 "incompatible features 0x10"
setup mk_qcow2 r3.qcow2 4M -o data_file=r3.data
check "refused: an external data file" twin_refused compat=0.10 r3.qcow2 "with a data file"
setup mk_qcow2 r4.qcow2 4M -o compression_type=zstd
setup qio r4.qcow2 "write -c -P 0x44 0 64k"
check "refused: zstd with compressed clusters" twin_refused compat=0.10 r4.qcow2 \
	"zstd compression type and existing compressed clusters"
setup mk_qcow2 r5.qcow2 4M
setup qemu-img snapshot -c s1 r5.qcow2
setup qemu-img resize -q r5.qcow2 8M
check "refused: a snapshot of another size" twin_refused compat=0.10 r5.qcow2 \
	"internal snapshots prevent"
check "refused: lazy refcounts on a v2 image" bash -c "
	qemu-img create -q -f qcow2 -o compat=0.10 r6.qcow2 1M &&
	! qemu-img amend -o lazy_refcounts=on r6.qcow2 2>/dev/null &&
	! '$Q' amend -o lazy_refcounts=on r6.qcow2 2>/dev/null"

# where QEMU would lose something
setup mk_qcow2 b1.qcow2 4M
setup qemu-img bitmap --add b1.qcow2 b0
sha_of b1.qcow2 >b1.sha
check "refused: persistent bitmaps (QEMU drops them, leaking their clusters)" bash -c "
	! '$Q' amend -o compat=0.10 b1.qcow2 2>err && grep -q 'persistent bitmaps' err"
check "... unchanged" sha_unchanged b1.sha
setup mk_qcow2 l1.qcow2 4M -o lazy_refcounts=on
check "compat=0.10 of an image with lazy refcounts drops them, as qemu-img" \
	twin_amend compat=0.10 l1.qcow2
# a dirty image (lazy refcounts not written back) is repaired when opened for writing, as
# QEMU repairs it, then downgraded
setup qemu-img create -q -f qcow2 -o lazy_refcounts=on d1.qcow2 4M
(qemu-io -c "write -P 0x77 0 256k" -c abort d1.qcow2; :) >/dev/null 2>&1
check "a dirty image: repaired on open, then downgraded as qemu-img does" \
	twin_amend compat=0.10 d1.qcow2

setup mk_qcow2 n1.qcow2 4M
setup qio n1.qcow2 "write -z 0 1M"
sha_of n1.qcow2 >n1.sha
check "--dry-run says it can, and changes nothing" bash -c "
	'$Q' amend --dry-run -o compat=0.10 n1.qcow2 | grep -q 'can be amended' && sha256sum -c --quiet n1.sha"
for bad in "-o compat=0.9" "-o lazy_refcounts=maybe" "-o cluster_size=4k" "-o foo=bar" ""; do
	read -ra w <<<"$bad"
	check "amend $bad: a usage error" bash -c "'$Q' amend ${w[*]} n1.qcow2 2>err; [ \$? = 64 ] &&
		[ \$(wc -l <err) = 1 ]"
done
check "... unchanged" sha_unchanged n1.sha

finish

#!/bin/bash
# encrypt.sh - encrypted images through qcowfs, read side, with QEMU as the oracle: LUKS images
# made by qemu-img with several ciphers (aes-256-xts-plain64, the default; aes-128-cbc-essiv;
# aes-256-cbc-plain64) and a legacy AES image, their data written by qemu-io; a LUKS overlay on
# a plain base, a plain overlay on a LUKS base, a LUKS overlay on a LUKS base with a key of its
# own. With `--key IMAGE=KEYFILE` every view equals `qemu-img convert` with the secrets byte for
# byte, and holds no block of the ciphertext its image file has at the data's host offset. An
# encrypted image without a key, or with a wrong one, is not listed (nor is a chain through
# it), its refusal logged naming it ("encrypted, no key given (--key IMAGE=KEYFILE)", "wrong
# key for ..."); a legacy AES view is read-only and the reason logged; no passphrase reaches
# the log. qcowctl check needs no key.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC=$WORK/src
MNT=$WORK/mnt
KEYS=$WORK/keys
mkdir -p "$SRC" "$KEYS"
cd "$SRC" || exit 1

printf 'correct horse battery staple' >"$KEYS/k1"
printf 'a second, different passphrase' >"$KEYS/k2"
printf 'not the passphrase' >"$KEYS/bad"
chmod 600 "$KEYS"/*
K1=$KEYS/k1
K2=$KEYS/k2

# fill_enc IMAGE KEYFILE: patterns at aligned and unaligned places, a zeroed range
fill_enc()
{
	enc_qio "$1" "$2" "write -P 0xa1 0 64k" "write -P 0xb2 70000 5000" \
		"write -P 0xc3 1M 192k" "write -P 0xd4 3145216 1536" "write -z 1088k 64k"
}

setup luks_create xts.qcow2 4M "$K1"
setup fill_enc xts.qcow2 "$K1"
# an internal snapshot of a LUKS image, then the active state changed
enc_args xts.qcow2 "$K1"
setup qemu-img snapshot "${ENC_ARGS[@]}" -c s1
setup enc_qio xts.qcow2 "$K1" "write -P 0xe5 0 32k" "write -P 0xe6 2M 64k"
setup luks_create essiv.qcow2 4M "$K1" \
	encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256
setup fill_enc essiv.qcow2 "$K1"
setup luks_create cbc.qcow2 4M "$K2" encrypt.cipher-alg=aes-256,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=plain64
setup fill_enc cbc.qcow2 "$K2"
setup luks_create small.qcow2 4M "$K1" cluster_size=4096
setup fill_enc small.qcow2 "$K1"
setup qemu-img create -q -f qcow2 --object "secret,id=k0,file=$K1" \
	-o encrypt.format=aes,encrypt.key-secret=k0 aes.qcow2 4M
setup fill_enc aes.qcow2 "$K1"

# a LUKS overlay on a plain base
setup mk_qcow2 plainbase.qcow2 4M
setup qio plainbase.qcow2 "write -P 0x51 0 2M" "write -P 0x52 3M 1M"
setup luks_create lukstop.qcow2 4M "$K2" backing_file=plainbase.qcow2,backing_fmt=qcow2
setup enc_qio lukstop.qcow2 "$K2 -" "write -P 0x61 64k 64k" "write -P 0x62 1000000 3000"
# a plain overlay on a LUKS base (the base's key is its own)
setup luks_create lbase.qcow2 4M "$K1"
setup enc_qio lbase.qcow2 "$K1" "write -P 0x71 0 4M"
setup qemu-img create -q -f qcow2 -u -b lbase.qcow2 -F qcow2 plaintop.qcow2 4M
setup enc_qio plaintop.qcow2 "- $K1" "write -P 0x72 512k 64k" "write -z 2M 64k"
# a LUKS overlay on a LUKS base, each with its own key
setup luks_create l2base.qcow2 4M "$K1"
setup enc_qio l2base.qcow2 "$K1" "write -P 0x81 0 4M"
setup luks_create l2top.qcow2 4M "$K2" backing_file=l2base.qcow2,backing_fmt=qcow2
setup enc_qio l2top.qcow2 "$K2 $K1" "write -P 0x82 100k 100k"
# no key given for these; a wrong key for this one
setup luks_create nokey.qcow2 4M "$K1"
setup enc_qio nokey.qcow2 "$K1" "write -P 0x91 0 64k"
setup luks_create wrong.qcow2 4M "$K1"
setup enc_qio wrong.qcow2 "$K1" "write -P 0x92 0 64k"
setup luks_create nobase.qcow2 4M "$K1"
setup enc_qio nobase.qcow2 "$K1" "write -P 0x93 0 64k"
setup qemu-img create -q -f qcow2 -u -b nobase.qcow2 -F qcow2 overnobase.qcow2 4M

# qcowfs_key_refused TEXT ARGS...: qcowfs ARGS exits non-zero before mounting, with one line
# on stderr containing TEXT
qcowfs_key_refused()
{
	local text=$1 err rc=0
	shift
	mkdir -p "$WORK/nomnt"
	err=$(timeout 20 "$QCOWFS" -f "$@" "$SRC" "$WORK/nomnt" 2>&1 >/dev/null) || rc=$?
	[ "$rc" != 0 ] || { echo "qcowfs $* did not fail"; return 1; }
	[ "$(wc -l <<<"$err")" = 1 ] && grep -qF -- "$text" <<<"$err" ||
		{ echo "exit $rc, want one line naming '$text':"; echo "$err"; return 1; }
}
check "--key of an image that does not exist is refused" \
	qcowfs_key_refused "--key 'missing.qcow2'" --key missing.qcow2="$K1"
check "--key with a key file that cannot be read is refused" \
	qcowfs_key_refused "$KEYS/none" --key xts.qcow2="$KEYS/none"
check "--key without =KEYFILE is refused" qcowfs_key_refused "expected IMAGE=KEYFILE" \
	--key xts.qcow2

check "mounts with --key for each encrypted image" mount_qcowfs "$SRC" "$MNT" \
	--key xts.qcow2="$K1" --key essiv.qcow2="$K1" --key cbc.qcow2="$K2" \
	--key small.qcow2="$K1" --key aes.qcow2="$K1" --key lukstop.qcow2="$K2" \
	--key lbase.qcow2="$K1" --key l2base.qcow2="$K1" --key l2top.qcow2="$K2" \
	--key wrong.qcow2="$KEYS/bad"

for v in xts essiv small aes; do
	check "$v: the view equals qemu-img convert with the secret" \
		enc_same_as_qemu "$MNT/$v.raw" "$SRC/$v.qcow2" "$K1"
done
# snap_view_same: the snapshot's view equals qemu-img convert -l of the snapshot
snap_view_same()
{
	local exp rc
	exp=$(tmpfile .raw)
	enc_args "$SRC/xts.qcow2" "$K1"
	qemu-img convert -U -l snapshot.name=s1 -O raw "${ENC_ARGS[@]}" "$exp" || return 1
	fs cmp "$exp" "$MNT/xts@s1.raw"
	rc=$?
	rm -f "$exp"
	return $rc
}
check "the view of a LUKS image's internal snapshot equals qemu-img's" snap_view_same
check "cbc: the view equals qemu-img convert with the secret" \
	enc_same_as_qemu "$MNT/cbc.raw" "$SRC/cbc.qcow2" "$K2"
check "a LUKS overlay on a plain base equals qemu-img" \
	enc_same_as_qemu "$MNT/lukstop.raw" "$SRC/lukstop.qcow2" "$K2" -
check "a plain overlay on a LUKS base equals qemu-img" \
	enc_same_as_qemu "$MNT/plaintop.raw" "$SRC/plaintop.qcow2" - "$K1"
check "a LUKS overlay on a LUKS base, two keys, equals qemu-img" \
	enc_same_as_qemu "$MNT/l2top.raw" "$SRC/l2top.qcow2" "$K2" "$K1"
check "the LUKS base's own view equals qemu-img" \
	enc_same_as_qemu "$MNT/lbase.raw" "$SRC/lbase.qcow2" "$K1"

for v in xts essiv small aes; do
	check "$v: no ciphertext in the view" no_ciphertext_in "$MNT/$v.raw" "$SRC/$v.qcow2" 1M
done
check "cbc: no ciphertext in the view" no_ciphertext_in "$MNT/cbc.raw" "$SRC/cbc.qcow2" 1M
check "lukstop: no ciphertext in the view" \
	no_ciphertext_in "$MNT/lukstop.raw" "$SRC/lukstop.qcow2" 64k
check "plaintop: no ciphertext of its LUKS base in the view" \
	no_ciphertext_in "$MNT/plaintop.raw" "$SRC/lbase.qcow2" 3M
check "l2top: no ciphertext of either layer in the view" \
	no_ciphertext_in "$MNT/l2top.raw" "$SRC/l2top.qcow2" 100k
check "l2top: no ciphertext of its base" \
	no_ciphertext_in "$MNT/l2top.raw" "$SRC/l2base.qcow2" 2M

check "images without a key, or with a wrong one, and chains through them are not listed" \
	expect_absent "$MNT/nokey.raw" "$MNT/wrong.raw" "$MNT/nobase.raw" "$MNT/overnobase.raw"
check "the log names the image without a key" grep -qF \
	"'$SRC/nokey.qcow2': encrypted, no key given (--key IMAGE=KEYFILE)" "$QCOWFS_LOG"
check "the log names the image with a wrong key" grep -qF \
	"wrong key for '$SRC/wrong.qcow2'" "$QCOWFS_LOG"
check "each refusal is logged once" test "$(grep -c "nokey.qcow2" "$QCOWFS_LOG")" = 1
check "a legacy AES view is read-only" expect_not_writable "$MNT/aes.raw"
check "the log says why" grep -qF "'$SRC/aes.qcow2' read-only: legacy AES encryption: read-only" \
	"$QCOWFS_LOG"
check "a LUKS leaf view is writable" expect_writable_mode "$MNT/xts.raw"
check_not "no passphrase in the log" grep -qF -e "correct horse" -e "second, different" \
	-e "not the passphrase" "$QCOWFS_LOG"

check "qcowctl check needs no key" ctl check "$SRC/xts.qcow2"

check "unmounts cleanly" umount_qcowfs "$MNT"
check "no sanitizer report" log_clean "$QCOWFS_LOG"
finish

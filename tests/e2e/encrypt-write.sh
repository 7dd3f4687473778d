#!/bin/bash
# encrypt-write.sh - writes through the views of LUKS images, with QEMU as the oracle: pwrite at
# unaligned offsets and lengths (a partial 512-byte sector is read, merged and encrypted whole),
# across clusters, copy-on-write from a plain base, from a LUKS base with another key and from
# an internal snapshot's shared clusters (moved to a new host offset: decrypted and encrypted
# again), discard and zero-range, preallocation, on aes-256-xts-plain64, aes-128-cbc-essiv and
# extended L2 entries. The test keeps a model of each disk; while mounted the view equals it,
# after unmounting `qemu-img check` is clean, `qemu-img convert` and qemu-io with the secrets
# read the model back, and no data cluster of the image holds plaintext. A legacy AES view
# refuses every write (EROFS).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC=$WORK/src
MNT=$WORK/mnt
MODELS=$WORK/models
KEYS=$WORK/keys
mkdir -p "$SRC" "$MODELS" "$KEYS"
cd "$SRC" || exit 1

printf 'write side passphrase' >"$KEYS/k1"
printf 'base passphrase' >"$KEYS/k2"
chmod 600 "$KEYS"/*
K1=$KEYS/k1
K2=$KEYS/k2

setup luks_create xts.qcow2 4M "$K1"
setup enc_qio xts.qcow2 "$K1" "write -P 0xa1 0 128k" "write -P 0xa2 2M 64k"
setup luks_create essiv.qcow2 4M "$K1" \
	encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256
setup enc_qio essiv.qcow2 "$K1" "write -P 0xb1 64k 64k"
setup luks_create ext.qcow2 4M "$K1" extended_l2=on,cluster_size=32k
setup enc_qio ext.qcow2 "$K1" "write -P 0xc1 0 8k" "write -P 0xc2 40k 4k"
setup mk_qcow2 plainbase.qcow2 4M
setup qio plainbase.qcow2 "write -P 0x51 0 4M"
setup luks_create overplain.qcow2 4M "$K1" backing_file=plainbase.qcow2,backing_fmt=qcow2
setup luks_create lbase.qcow2 4M "$K2"
setup enc_qio lbase.qcow2 "$K2" "write -P 0x61 0 4M"
setup luks_create overluks.qcow2 4M "$K1" backing_file=lbase.qcow2,backing_fmt=qcow2
setup enc_qio overluks.qcow2 "$K1 $K2" "write -P 0x62 1M 64k"
# clusters shared with an internal snapshot: a write copies them to a new host offset
setup luks_create snap.qcow2 4M "$K1"
setup enc_qio snap.qcow2 "$K1" "write -P 0x71 0 1M"
enc_args snap.qcow2 "$K1"
setup qemu-img snapshot "${ENC_ARGS[@]}" -c s1
setup qemu-img create -q -f qcow2 --object "secret,id=k0,file=$K1" \
	-o encrypt.format=aes,encrypt.key-secret=k0 aes.qcow2 4M
setup enc_qio aes.qcow2 "$K1" "write -P 0xe1 0 64k"
sha_of plainbase.qcow2 lbase.qcow2 aes.qcow2 >"$WORK/fixed.sha" || bail "cannot hash the images"

# key_of IMAGE: the key file of the image's own layer; chain_keys IMAGE: of each layer
key_of() { case $1 in lbase) echo "$K2" ;; *) echo "$K1" ;; esac; }
chain_keys()
{
	case $1 in
	overplain) echo "$K1 -" ;;
	overluks) echo "$K1 $K2" ;;
	*) echo "$K1" ;;
	esac
}

IMAGES="xts essiv ext overplain overluks snap"
for v in $IMAGES aes; do
	# shellcheck disable=SC2046
	setup enc_flat "$v.qcow2" "$MODELS/$v.raw" $(chain_keys "$v")
done

check "mounts with the keys" mount_qcowfs "$SRC" "$MNT" --key xts.qcow2="$K1" \
	--key essiv.qcow2="$K1" --key ext.qcow2="$K1" --key overplain.qcow2="$K1" \
	--key overluks.qcow2="$K1" --key lbase.qcow2="$K2" --key snap.qcow2="$K1" \
	--key aes.qcow2="$K1"

OPS=(w:0:4096:1 w:777:1000:2 w:65000:1200:3 w:130000:70000:4 w:1M:64k:5 w:1048577:1:6
	w:2100000:511:7 w:3M:300k:8 p:2M:64k z:70k:10000 a:3500k:100k w:4194303:1:9 f)
for v in $IMAGES; do
	check "$v: unaligned writes, discard, zeroing, preallocation through the view" \
		write_both "$MNT/$v.raw" "$MODELS/$v.raw" "${OPS[@]}"
	check "$v: the view equals the model" view_is_model "$MNT/$v.raw" "$MODELS/$v.raw"
done
check "a legacy AES view refuses writes" expect_not_writable "$MNT/aes.raw"
check "unmounts cleanly" umount_qcowfs "$MNT"
check "no sanitizer report" log_clean "$QCOWFS_LOG"

# enc_model_check IMAGE MODEL KEYFILE...: qemu-img convert with the secrets gives the model
enc_model_check()
{
	local img=$1 model=$2 out rc
	shift 2
	out=$(tmpfile .raw)
	enc_flat "$img" "$out" "$@" || return 1
	cmp "$model" "$out"
	rc=$?
	rm -f "$out"
	return $rc
}
# no_plain_block IMAGE NAME: the image file does not hold the first 512 bytes the view's first
# write put at offset 0 in the clear
no_plain_block()
{
	local block
	block=$(tmpfile .bin)
	dd if="$MODELS/$2.raw" of="$block" bs=4096 count=1 status=none
	python3 - "$block" "$1" <<'PY'
import sys
needle = open(sys.argv[1], "rb").read()[:512]
hay = open(sys.argv[2], "rb").read()
sys.exit("plaintext found in %s" % sys.argv[2] if needle in hay else 0)
PY
}
for v in $IMAGES; do
	# shellcheck disable=SC2046
	check "$v: qemu-img check is clean" enc_image_clean "$v.qcow2" $(chain_keys "$v")
	# shellcheck disable=SC2046
	check "$v: qemu-img convert with the secrets reads the model" \
		enc_model_check "$v.qcow2" "$MODELS/$v.raw" $(chain_keys "$v")
	check "$v: the written data is not in the file in the clear" no_plain_block "$v.qcow2" "$v"
done
# snap_kept: a copy of snap.qcow2 reverted to s1 by qemu-img reads what s1 held
snap_kept()
{
	cp snap.qcow2 "$WORK/snapcopy.qcow2" || return 1
	enc_args "$WORK/snapcopy.qcow2" "$K1"
	qemu-img snapshot "${ENC_ARGS[@]}" -a s1 || return 1
	enc_qio "$WORK/snapcopy.qcow2" "$K1" "read -P 0x71 0 1M"
}
check "the snapshot still shows what it held (its clusters were copied, not changed)" snap_kept
check "backing files and the legacy AES image did not change" sha_unchanged "$WORK/fixed.sha"
finish

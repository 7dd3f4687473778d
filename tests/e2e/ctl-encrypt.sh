#!/bin/bash
# ctl-encrypt.sh - qcowctl on encrypted images, metadata side, against qemu-img: `info` (text
# and --json, with and without --key) shows what `qemu-img info` shows of LUKS images of several
# ciphers and of a legacy AES image ("encrypted: yes", the encrypt block: format, cipher,
# IV generator, hashes, uuid, key slots, payload offset, iterations); a damaged LUKS header
# leaves the other facts and says why; `check` of an encrypted image needs no key; --key
# refuses malformed values and bad key files with one line.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

D=$WORK/d
mkdir -p "$D"
cd "$D" || exit 1
printf 'correct horse battery' >key
printf 'wrong' >bad.key

# ---- images qemu-img makes ----
setup qcreate_enc key luks "encrypt.iter-time=10" luks-default.qcow2 4M
setup qcreate_enc key luks "encrypt.iter-time=10,encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.hash-alg=sha512" \
	luks-essiv.qcow2 4M
setup qcreate_enc key luks "encrypt.iter-time=10,encrypt.cipher-alg=aes-256,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=plain,encrypt.hash-alg=sha1" \
	luks-plain.qcow2 4M
setup qcreate_enc key aes "" aes.qcow2 4M
for i in luks-default luks-essiv luks-plain aes; do
	setup qio_enc key "$i.qcow2" "write -P 0x5a 0 128k"
done

# encrypt_text FILE: the "encrypted:" line and the encrypt block of `info` text output.
encrypt_text()
{
	grep -E '^encrypted:' "$1"
	sed -n '/^    encrypt:/,/^    [a-z]/p' "$1" | sed '$d'
}

# same_info_as_qemu IMAGE [ARGS...]: `qcowctl info ARGS IMAGE` shows qemu-img's encryption
# facts, as text (the encrypt block line for line) and as JSON (field by field).
same_info_as_qemu()
{
	local img=$1
	shift
	ctl info "$@" "$img" >ours.txt || return 1
	qemu-img info "$img" >qemu.txt || return 1
	diff -u <(encrypt_text qemu.txt) <(encrypt_text ours.txt) || return 1
	[ -n "$(encrypt_text ours.txt)" ] || { echo "no encrypt block"; return 1; }
	ctl info --json "$@" "$img" >ours.json || return 1
	qemu-img info --output=json "$img" >qemu.json || return 1
	python3 "$E2E_HELPER" info-compare ours.json qemu.json || return 1
	python3 "$E2E_HELPER" json-get ours.json encrypted | grep -qx True
}

for i in luks-default luks-essiv luks-plain aes; do
	check "info of $i.qcow2 shows qemu-img's encryption facts" same_info_as_qemu "$i.qcow2"
	check "info --key of $i.qcow2 shows the same" same_info_as_qemu "$i.qcow2" \
		--key "$i.qcow2=key"
	check "check of $i.qcow2 needs no key and finds it clean" ctl check "$i.qcow2"
done

# a LUKS header that does not decode: the other facts are still told, with a warning
setup cp luks-default.qcow2 luks-broken.qcow2
CRYPTO_OFF=$(python3 - <<'PY'
import struct
d = open("luks-broken.qcow2", "rb").read(65536)
off = struct.unpack(">I", d[100:104])[0]
while True:
    m, l = struct.unpack(">II", d[off:off + 8])
    if m == 0x0537be77:
        print(struct.unpack(">Q", d[off + 8:off + 16])[0])
        break
    off += 8 + (l + 7) // 8 * 8
PY
)
setup put_be luks-broken.qcow2 $((CRYPTO_OFF + 208 + 44)) 4 7 # slot 0: 7 stripes
# info_warns_of_header: info succeeds, says "encrypted: yes" and warns once naming the file.
info_warns_of_header()
{
	ctl info luks-broken.qcow2 >broken.txt 2>broken.err || return 1
	grep -qx 'encrypted: yes' broken.txt || return 1
	grep -q "luks-broken.qcow2" broken.err && grep -q stripes broken.err
}
check "info of a LUKS image with a damaged header still tells the rest" info_warns_of_header

# ---- --key values ----
check "--key without '=' is refused with one line" \
	expect_fail_msg "invalid --key 'luks-default.qcow2'" ctl info --key luks-default.qcow2 \
	luks-default.qcow2
check "--key with a missing key file is refused with one line" \
	expect_fail_msg "cannot read key file 'nokey'" ctl info --key luks-default.qcow2=nokey \
	luks-default.qcow2
: >empty.key
check "--key with an empty key file is refused with one line" \
	expect_fail_msg "key file 'empty.key' is empty" ctl info \
	--key luks-default.qcow2=empty.key luks-default.qcow2
check "--key given twice for one image (by two names) is refused" \
	expect_fail_msg "given twice" ctl info --key luks-default.qcow2=key \
	--key ./luks-default.qcow2=key luks-default.qcow2

finish

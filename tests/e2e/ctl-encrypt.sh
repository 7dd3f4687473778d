#!/bin/bash
# ctl-encrypt.sh - qcowctl on encrypted images, metadata side, against qemu-img: `info` (text
# and --json, with and without --key) shows what `qemu-img info` shows of LUKS images of several
# ciphers and of a legacy AES image ("encrypted: yes", the encrypt block: format, cipher,
# IV generator, hashes, uuid, key slots, payload offset, iterations); a damaged LUKS header
# leaves the other facts and says why; `check` of an encrypted image needs no key; --key
# refuses malformed values and bad key files with one line. `create -o encrypt.format=luks`
# (several ciphers, modes, IV generators, hashes, cluster sizes): `qemu-img check` (with the
# key) is clean, `qemu-img info` shows the same encrypt block as for qemu-img's image with the
# same options (uuid and measured iterations aside), qemu-io writes and reads it back with the
# key and refuses a wrong one, qemu-img convert reads what it wrote; legacy AES, key-secret,
# a missing --key, ciphers OpenSSL lacks and preallocation are refused with one line, leaving
# no file.
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
	awk '/^    encrypt:/ { on = 1; print; next } on && /^        / { print; next } { on = 0 }' "$1"
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

# ---- create -o encrypt.format=luks ----

# qemu_check_key IMAGE: `qemu-img check` with the key finds no error and no leak.
qemu_check_key()
{
	qemu-img check --object secret,id=sec0,file=key --image-opts \
		"driver=qcow2,file.filename=$1,encrypt.key-secret=sec0"
}

# same_shape OURS QEMUS: the two images' `qemu-img info --output=json` agree on everything
# but the random uuid, the measured iteration counts and the file sizes.
same_shape()
{
	qemu-img info --output=json "$1" >shape-ours.json &&
		qemu-img info --output=json "$2" >shape-qemu.json &&
		python3 - shape-ours.json shape-qemu.json <<'PY'
import json, sys
def norm(path):
    j = json.load(open(path))
    for k in ("filename", "actual-size"):
        j.pop(k, None)
    e = j["format-specific"]["data"]["encrypt"]
    e.pop("uuid")
    e.pop("master-key-iters")
    for s in e["slots"]:
        s.pop("iters", None)
    return j
a, b = norm(sys.argv[1]), norm(sys.argv[2])
if a != b:
    print(json.dumps(a, indent=1, sort_keys=True))
    print(json.dumps(b, indent=1, sort_keys=True))
    sys.exit(1)
PY
}

# reads_back IMAGE: qemu-io writes 1 MiB of 0x5a and reads it back with the key; qemu-img
# convert reads the same; a wrong key is refused.
reads_back()
{
	qio_enc key "$1" "write -P 0x5a 0 1M" "read -P 0x5a 0 1M" "write -P 0x17 3M 64k" ||
		return 1
	qemu-img convert --object secret,id=sec0,file=key --image-opts \
		"driver=qcow2,file.filename=$1,encrypt.key-secret=sec0" -O raw rb.raw || return 1
	python3 -c "
import sys
d = open('rb.raw', 'rb').read()
want = b'\x5a' * (1 << 20) + bytes(2 << 20) + b'\x17' * 65536 + bytes((1 << 20) - 65536)
sys.exit(d != want)" || { echo "convert reads other bytes"; return 1; }
	if qio_enc bad.key "$1" "read 0 512" 2>/dev/null; then
		echo "a wrong key opened it"
		return 1
	fi
}

# crypto_ext IMAGE: "OFFSET LENGTH" of the crypto header extension (the test's own parse).
crypto_ext()
{
	python3 - "$1" <<'PY'
import struct, sys
d = open(sys.argv[1], "rb").read(1 << 16)
v = struct.unpack(">I", d[4:8])[0]
off = struct.unpack(">I", d[100:104])[0] if v >= 3 else 72
while True:
    m, l = struct.unpack(">II", d[off:off + 8])
    if m == 0:
        sys.exit("no crypto header extension")
    if m == 0x0537BE77:
        print(*struct.unpack(">QQ", d[off + 8:off + 24]))
        break
    off += 8 + (l + 7) // 8 * 8
PY
}

# same_crypto_ext A B: the two images' crypto header extensions are the same.
same_crypto_ext()
{
	local a b
	a=$(crypto_ext "$1") && b=$(crypto_ext "$2") || return 1
	[ "$a" = "$b" ] || { echo "$1: $a, $2: $b"; return 1; }
}

n=0
for opts in "" \
	"encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.hash-alg=sha512" \
	"encrypt.cipher-alg=aes-256,encrypt.cipher-mode=ecb,encrypt.hash-alg=sha384" \
	"encrypt.cipher-alg=aes-128,encrypt.ivgen-alg=plain,encrypt.ivgen-hash-alg=sha1" \
	"encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256,cluster_size=512" \
	"encrypt.cipher-mode=ctr,compat=0.10"; do
	n=$((n + 1))
	o="encrypt.iter-time=10${opts:+,$opts}"
	check "create -o encrypt.format=luks,$o" \
		ctl create -q --key "new$n.qcow2=key" -o "encrypt.format=luks,$o" "new$n.qcow2" 4M ||
		continue
	setup qcreate_enc key luks "$o" "qemu$n.qcow2" 4M
	check "[$o] qemu-img check with the key is clean" qemu_check_key "new$n.qcow2"
	check "[$o] qemu-img info shows the shape of qemu-img's image" same_shape \
		"new$n.qcow2" "qemu$n.qcow2"
	check "[$o] qemu-io and qemu-img convert read back what qemu-io wrote" reads_back \
		"new$n.qcow2"
	check "[$o] qemu-img check is clean after the writes" qemu_check_key "new$n.qcow2"
	check "[$o] qcowctl info shows qemu-img's encryption facts" same_info_as_qemu \
		"new$n.qcow2"
	check "[$o] the crypto header lies where qemu-img puts it, as long" \
		same_crypto_ext "new$n.qcow2" "qemu$n.qcow2"
done

# dry_run_creates_nothing: --dry-run of an encrypted create says so and creates nothing.
dry_run_creates_nothing()
{
	ctl create --dry-run --key dry.qcow2=key -o encrypt.format=luks dry.qcow2 1M >dry.out ||
		return 1
	grep -q "encrypted: luks" dry.out && [ ! -e dry.qcow2 ]
}
check "create --dry-run of an encrypted image creates nothing" dry_run_creates_nothing

# an encrypted overlay of a plain image: the base shows through, writes are encrypted
setup mk_qcow2 plain-base.qcow2 4M
setup qio plain-base.qcow2 "write -P 0x33 0 64k"
check "create an encrypted overlay of a plain image" \
	ctl create -q --key over.qcow2=key -b plain-base.qcow2 -F qcow2 \
	-o encrypt.format=luks,encrypt.iter-time=10 over.qcow2
# overlay_reads: qemu-io reads the base through the encrypted overlay and its own writes.
overlay_reads()
{
	qio_enc key over.qcow2 "read -P 0x33 0 64k" "write -P 0x44 64k 64k" \
		"read -P 0x44 64k 64k" && qemu_check_key over.qcow2
}
check "qemu-io reads the base through it and its own writes" overlay_reads

# refusals: one line, no file left
# refused_create PATTERN ARGS...: `qcowctl create ARGS refused.qcow2 1M` fails with one line
# matching PATTERN and leaves no refused.qcow2.
refused_create()
{
	local pat=$1
	shift
	expect_fail_msg "$pat" ctl create "$@" refused.qcow2 1M || return 1
	[ ! -e refused.qcow2 ] || { echo "refused.qcow2 was created"; return 1; }
}
check "encrypt.format=aes is refused" \
	refused_create "legacy AES" --key refused.qcow2=key -o encrypt.format=aes
check "encryption=on (legacy AES) is refused" \
	refused_create "legacy AES" --key refused.qcow2=key -o encryption=on
check "encrypt.key-secret says to use --key" \
	refused_create "use|with --key" -o encrypt.format=luks,encrypt.key-secret=sec0
check "encrypt.format=luks without --key is refused" \
	refused_create "needs the passphrase" -o encrypt.format=luks
check "encrypt.cipher-alg without encrypt.format is refused" \
	refused_create "needs encrypt.format=luks" --key refused.qcow2=key \
	-o encrypt.cipher-alg=aes-128
check "twofish (not in OpenSSL) is refused naming it" \
	refused_create "twofish" --key refused.qcow2=key \
	-o encrypt.format=luks,encrypt.cipher-alg=twofish-256,encrypt.iter-time=10
check "aes-192 in cbc mode (QEMU cannot open it) is refused" \
	refused_create "aes-192" --key refused.qcow2=key \
	-o encrypt.format=luks,encrypt.cipher-alg=aes-192,encrypt.cipher-mode=cbc
check "preallocation of an encrypted image is refused" \
	refused_create "preallocation" --key refused.qcow2=key \
	-o encrypt.format=luks,preallocation=metadata

finish

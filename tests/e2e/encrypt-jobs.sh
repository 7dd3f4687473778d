#!/bin/bash
# encrypt-jobs.sh - qcowctl's data commands on encrypted chains, with QEMU as the oracle:
# checksum, copy (an encrypted source flattened into a plain image, and into a new LUKS image
# with a key of its own), commit of a LUKS overlay
# into a LUKS base with another key (the data decrypted and encrypted again for the base's key
# and host offsets), pull into a LUKS image and into a plain one from a LUKS base, rebase onto
# a LUKS base keeping the flat view, internal snapshots (create, apply) of a LUKS image. Each
# result is read by qemu-img with the secrets and compared with what qemu-img makes of a twin
# copy (commit, pull) or of the chain before the job (views kept); `qemu-img check` with the
# secrets is clean. Without a key a data command fails naming the image; a legacy AES base
# refuses a commit; compression into an encrypted copy is refused; a repair refuses to move an encrypted image's data out of metadata.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

D=$WORK/d
mkdir -p "$D"
cd "$D" || exit 1
printf 'jobs key one' >k1
printf 'jobs key two' >k2
chmod 600 k1 k2
K1=$D/k1
K2=$D/k2

# chain NAME: a LUKS base (k1) and a LUKS overlay (k2), NAME-base.qcow2 and NAME.qcow2
chain()
{
	luks_create "$1-base.qcow2" 4M "$K1" &&
		enc_qio "$1-base.qcow2" "$K1" "write -P 0x11 0 4M" &&
		luks_create "$1.qcow2" 4M "$K2" backing_file="$1-base.qcow2",backing_fmt=qcow2 &&
		enc_qio "$1.qcow2" "$K2 $K1" "write -P 0x22 64k 64k" "write -P 0x23 1000448 5120" \
			"write -z 2M 64k" "write -P 0x24 3M 512"
}
# twin NAME: NAME and its base copied as q-NAME (for qemu-img), the copy pointing at its own base
twin()
{
	cp "$1-base.qcow2" "q-$1-base.qcow2" && cp "$1.qcow2" "q-$1.qcow2" &&
		enc_args "q-$1.qcow2" "$K2" &&
		qemu-img rebase -u -b "q-$1-base.qcow2" -F qcow2 "${ENC_ARGS[@]}"
}

# ---- checksum and copy ----
setup chain c
setup enc_flat c.qcow2 "$WORK/c.raw" "$K2" "$K1"
sum_is()
{
	local got want
	got=$(ctl checksum --key c.qcow2="$K2" --key c-base.qcow2="$K1" c.qcow2 | awk '{print $1}')
	want=$(sha256sum <"$WORK/c.raw" | awk '{print $1}')
	[ "$got" = "$want" ] || { echo "checksum $got, want $want"; return 1; }
}
check "checksum of a two-key chain is that of qemu-img convert with the secrets" sum_is
check "checksum without the base's key fails naming the base" one_line_error \
	"'$D/c-base.qcow2': encrypted, no key given" ctl checksum --key c.qcow2="$K2" c.qcow2
check "checksum with a wrong key fails" one_line_error "wrong key for 'c.qcow2'" \
	ctl checksum --key c.qcow2="$K1" --key c-base.qcow2="$K1" c.qcow2
check "copy flattens the encrypted chain into a plain image" \
	ctl copy -q --key c.qcow2="$K2" --key c-base.qcow2="$K1" c.qcow2 flat.qcow2
copy_is_flat() { flat_of flat.qcow2 "$WORK/flat.raw" && cmp "$WORK/c.raw" "$WORK/flat.raw"; }
check "the copy reads as qemu-img reads the chain" copy_is_flat
check "the copy is clean" image_clean flat.qcow2
expect_no_files() { local f; for f in "$@"; do [ ! -e "$f" ] || { echo "$f exists"; return 1; }; done; }
check "copy without the keys fails" one_line_error "encrypted, no key given" \
	ctl copy -q c.qcow2 flat2.qcow2

# copy into a new LUKS image with a key of its own
printf 'the copy key' >k3
chmod 600 k3
check "copy into a new LUKS image (-o encrypt.format=luks, --key DEST=KEYFILE)" \
	ctl copy -q -o encrypt.format=luks,encrypt.iter-time=10 --key c.qcow2="$K2" \
	--key c-base.qcow2="$K1" --key enc.qcow2="$D/k3" c.qcow2 enc.qcow2
check "qemu-img reads the copy with its secret as the chain" \
	enc_same_as_qemu "$WORK/c.raw" enc.qcow2 "$D/k3"
check "the encrypted copy is clean" enc_image_clean enc.qcow2 "$D/k3"
check "it holds no plaintext of the chain" \
	python3 "$E2E_HELPER" block-absent "$WORK/c.raw" 65536 enc.qcow2
check "copy -c into an encrypted image is refused (as qemu-img)" one_line_error \
	"compression and encryption do not go together" ctl copy -q -c -o encrypt.format=luks \
	--key c.qcow2="$K2" --key c-base.qcow2="$K1" --key enc2.qcow2="$D/k3" c.qcow2 enc2.qcow2
check "copy into a LUKS image without DEST's key is refused" one_line_error \
	"needs the passphrase of 'enc3.qcow2'" ctl copy -q -o encrypt.format=luks \
	--key c.qcow2="$K2" --key c-base.qcow2="$K1" c.qcow2 enc3.qcow2
check "nothing was created by the refused copies" expect_no_files enc2.qcow2 enc3.qcow2

# ---- commit: data re-encrypted for the base's key ----
setup chain m
setup twin m
setup enc_flat m.qcow2 "$WORK/m.raw" "$K2" "$K1"
check "commit of a LUKS overlay into a LUKS base with another key" \
	ctl commit -q --key m.qcow2="$K2" --key m-base.qcow2="$K1" m.qcow2
enc_args q-m.qcow2 "$K2" "$K1"
setup qemu-img commit -q "${ENC_ARGS[@]}"
same_bases()
{
	enc_flat m-base.qcow2 "$WORK/mb.raw" "$K1" && enc_flat q-m-base.qcow2 "$WORK/qmb.raw" "$K1" &&
		cmp "$WORK/qmb.raw" "$WORK/mb.raw" && cmp "$WORK/m.raw" "$WORK/mb.raw"
}
check "the base holds what qemu-img's commit put in its twin" same_bases
check "the overlay still shows the same disk" enc_same_as_qemu "$WORK/m.raw" m.qcow2 "$K2" "$K1"
check "the base is clean" enc_image_clean m-base.qcow2 "$K1"
check "the overlay is clean" enc_image_clean m.qcow2 "$K2" "$K1"

# ---- pull: into a LUKS image from a LUKS base, into a plain one from a LUKS base ----
setup chain p
setup twin p
setup enc_flat p.qcow2 "$WORK/p.raw" "$K2" "$K1"
check "pull into a LUKS overlay from a LUKS base" \
	ctl pull -q --key p.qcow2="$K2" --key p-base.qcow2="$K1" p.qcow2
enc_args q-p.qcow2 "$K2" "$K1"
setup qemu-img rebase -b "" "${ENC_ARGS[@]}"
same_pulls()
{
	enc_flat p.qcow2 "$WORK/pp.raw" "$K2" && enc_flat q-p.qcow2 "$WORK/qpp.raw" "$K2" &&
		cmp "$WORK/qpp.raw" "$WORK/pp.raw" && cmp "$WORK/p.raw" "$WORK/pp.raw"
}
check "the image stands alone and reads as qemu-img's pulled twin" same_pulls
check "it names no backing file" expect_backing p.qcow2 ""
check "it is clean" enc_image_clean p.qcow2 "$K2"

setup luks_create pl-base.qcow2 4M "$K1"
setup enc_qio pl-base.qcow2 "$K1" "write -P 0x31 0 4M"
setup qemu-img create -q -f qcow2 -u -b pl-base.qcow2 -F qcow2 pl.qcow2 4M
setup enc_qio pl.qcow2 "- $K1" "write -P 0x32 128k 4k"
setup enc_flat pl.qcow2 "$WORK/pl.raw" - "$K1"
check "pull into a plain overlay from a LUKS base" ctl pull -q --key pl-base.qcow2="$K1" pl.qcow2
pulled_plain() { flat_of pl.qcow2 "$WORK/pl2.raw" && cmp "$WORK/pl.raw" "$WORK/pl2.raw"; }
check "the plain image holds the base's plaintext" pulled_plain
check "it is clean" image_clean pl.qcow2

# ---- rebase onto a LUKS base, the flat view kept ----
setup mk_qcow2 r-old.qcow2 4M
setup qio r-old.qcow2 "write -P 0x41 0 2M"
setup luks_create r-new.qcow2 4M "$K1"
setup enc_qio r-new.qcow2 "$K1" "write -P 0x42 1M 3M"
setup luks_create r.qcow2 4M "$K2" backing_file=r-old.qcow2,backing_fmt=qcow2
setup enc_qio r.qcow2 "$K2 -" "write -P 0x43 3M 4k"
setup enc_flat r.qcow2 "$WORK/r.raw" "$K2" -
check "rebase of a LUKS image onto a LUKS base" \
	ctl rebase -q --key r.qcow2="$K2" --key r-new.qcow2="$K1" -b r-new.qcow2 -F qcow2 r.qcow2
check "it names the new base" expect_backing r.qcow2 r-new.qcow2
check "its view is the one it had (qemu-img with the secrets)" \
	enc_same_as_qemu "$WORK/r.raw" r.qcow2 "$K2" "$K1"
check "it is clean" enc_image_clean r.qcow2 "$K2" "$K1"

# ---- internal snapshots of a LUKS image ----
setup luks_create s.qcow2 4M "$K1"
setup enc_qio s.qcow2 "$K1" "write -P 0x51 0 1M"
setup enc_flat s.qcow2 "$WORK/s.raw" "$K1"
check "snapshot create with the key" ctl snapshot create --key s.qcow2="$K1" s.qcow2 s1
setup enc_qio s.qcow2 "$K1" "write -P 0x52 0 2M"
check "snapshot apply with the key" ctl snapshot apply --key s.qcow2="$K1" s.qcow2 s1
check "the image shows the snapshot's data again (qemu-img with the secret)" \
	enc_same_as_qemu "$WORK/s.raw" s.qcow2 "$K1"
check "it is clean" enc_image_clean s.qcow2 "$K1"

# ---- refusals ----
setup qemu-img create -q -f qcow2 --object "secret,id=k0,file=$K1" \
	-o encrypt.format=aes,encrypt.key-secret=k0 a-base.qcow2 4M
setup qemu-img create -q -f qcow2 -u -b a-base.qcow2 -F qcow2 a.qcow2 4M
setup enc_qio a.qcow2 "- $K1" "write -P 0x61 0 64k"
sha_of a-base.qcow2 >"$WORK/a.sha" || bail "cannot hash a-base.qcow2"
check "commit into a legacy AES base is refused" one_line_error \
	"legacy AES encryption: read-only" ctl commit -q --key a-base.qcow2="$K1" a.qcow2
check "the legacy AES base did not change" sha_unchanged "$WORK/a.sha"
check "commit into a LUKS base without its key fails naming it" one_line_error \
	"'$D/c-base.qcow2': encrypted, no key given" ctl commit -q --key c.qcow2="$K2" c.qcow2

# ---- a repair never moves ciphertext (its IVs are its host offset) ----
setup luks_create broken.qcow2 4M "$K1"
setup enc_qio broken.qcow2 "$K1" "write -P 0x71 0 256k"
setup python3 "$E2E_HELPER" qcow2-break broken.qcow2:metadata:128k
sha_of broken.qcow2 >"$WORK/broken.sha" || bail "cannot hash broken.qcow2"
enc_repair_refused()
{
	local out rc=0
	out=$(ctl check --repair broken.qcow2 2>&1) && rc=0 || rc=$?
	[ "$rc" != 0 ] || { echo "the repair succeeded:"; echo "$out"; return 1; }
	grep -q "encrypted: data lying in metadata is not moved" <<<"$out" ||
		{ echo "exit $rc, no reason given:"; echo "$out"; return 1; }
}
check "check --repair refuses to move an encrypted image's data out of metadata" enc_repair_refused
check "the image did not change" sha_unchanged "$WORK/broken.sha"
finish

#!/usr/bin/env python3
# The known vector of test_crypto.c's AF merge test, computed with hashlib alone (independent
# of the library): the LUKS1 anti-forensic merge (cryptsetup's on-disk format document) of
# 3 stripes of 40 bytes (stripe byte j of stripe i = (i * 40 + j) * 7 + 3 mod 256) with
# sha256 and with sha1. Run: python3 afsplit_vector.py
import hashlib

def diffuse(h, block):
    d = hashlib.new(h).digest_size
    out = b''
    for i in range(0, len(block), d):
        piece = block[i:i + d]
        out += hashlib.new(h, (i // d).to_bytes(4, 'big') + piece).digest()[:len(piece)]
    return out

def merge(h, stripes):
    d = bytes(len(stripes[0]))
    for s in stripes[:-1]:
        d = diffuse(h, bytes(a ^ b for a, b in zip(d, s)))
    return bytes(a ^ b for a, b in zip(d, stripes[-1]))

n, k = 3, 40
stripes = [bytes(((i * k + j) * 7 + 3) % 256 for j in range(k)) for i in range(n)]
for h in ('sha256', 'sha1'):
    print(h, merge(h, stripes).hex())

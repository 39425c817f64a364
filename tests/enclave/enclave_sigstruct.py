"""SIGSTRUCTs built and signed the way gramine-sgx-sign does, for the measure tests."""

from __future__ import annotations

import hashlib
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# SIGSTRUCT field by field, as Intel's SDM (Vol. 3D, "Enclave Signature Structure") lists them:
# HEADER 16, VENDOR 4, DATE 4, HEADER2 16, SWDEFINED 4, reserved 84, MODULUS 384, EXPONENT 4,
# SIGNATURE 384, MISCSELECT 4, MISCMASK 4, CET attrs/reserved 4, ISVFAMILYID 16, ATTRIBUTES 16,
# ATTRIBUTEMASK 16, ENCLAVEHASH 32, ISVEXTPRODID 16, reserved 16, ISVPRODID 2, ISVSVN 2,
# reserved 12, Q1 384, Q2 384. Sizes, not offsets, so the parser's offsets are checked independently.
SIGSTRUCT_FIELDS = "<16sII16sI84s384sI384sII4s16s16s16s32s16s16sHH12s384s384s"
assert struct.calcsize(SIGSTRUCT_FIELDS) == 1808

MRENCLAVE = hashlib.sha256(b"an enclave build").digest()


def make_sigstruct(key: rsa.RSAPrivateKey, *, debug: bool = False, prod_id: int = 7, svn: int = 3) -> bytes:
    """A SIGSTRUCT signed the way gramine-sgx-sign does (RSA-3072, e=3, PKCS#1 v1.5 SHA-256)."""
    n = key.public_key().public_numbers().n
    flags = 0x04 | (0x02 if debug else 0)  # MODE64BIT (+ DEBUG)
    fields = [
        bytes.fromhex("06000000e10000000000010000000000"), 0, 0x20240619, bytes.fromhex("01010000600000006000000001000000"), 0, bytes(84),
        bytes(384), 3, bytes(384), 0, 0xFFFFFFFF, bytes(4), bytes(16), struct.pack("<QQ", flags, 0x3), struct.pack("<QQ", 0xFFFFFFFFFFFFFFFD, 0xFFFFFFFFFFF9FF1B),
        MRENCLAVE, bytes(16), bytes(16), prod_id, svn, bytes(12), bytes(384), bytes(384),
    ]
    unsigned = struct.pack(SIGSTRUCT_FIELDS, *fields)
    signature = key.sign(unsigned[:128] + unsigned[900:1028], padding.PKCS1v15(), hashes.SHA256())
    s = int.from_bytes(signature, "big")
    q1, q2 = s * s // n, (s * s % n) * s // n
    fields[6] = n.to_bytes(384, "little")
    fields[8] = s.to_bytes(384, "little")
    fields[-2], fields[-1] = q1.to_bytes(384, "little"), q2.to_bytes(384, "little")
    return struct.pack(SIGSTRUCT_FIELDS, *fields)


SIGN_OUTPUT = """Attributes:
    size:        0x400000000
    edmm:        False
    max_threads: 64
    isv_prod_id: 0
    isv_svn:     0
    attr.flags:  0x4
    attr.xfrm:   0x3
    misc_select: 0x0
SGX remote attestation:
    DCAP/ECDSA
Memory:
    000000003fffe000-0000000040000000 [REG:R--] (manifest) measured
Measurement:
    {}
"""

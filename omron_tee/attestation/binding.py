"""The report-data binding of the exchange.

Every TEE lets the enclave put 64 bytes of its choosing into its signed
report. We put a hash that commits to a domain tag, the verifier's fresh
nonce, the miner's hotkey and the enclave's channel keys, so that evidence
proves *these* keys live in *this* enclave *now*, serving *this* hotkey.
Verifiers recompute it and compare. Without the hotkey, a registered miner
with no enclave could relay another miner's enclave and be scored for it.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

DOMAIN_TAG = b"omron-tee/attest/v2"
NONCE_LEN = 32
REPORT_DATA_LEN = 64


@dataclass(frozen=True)
class EnclavePublicKeys:
    """The public halves of the keys an enclave attests to.

    ``kem`` names the HPKE suite the ``hpke_public`` key belongs to, so that a
    key cannot be reinterpreted under another KEM.
    """

    kem: str
    hpke_public: bytes
    signing_public: bytes


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def report_data_for(nonce: bytes, keys: EnclavePublicKeys, hotkey: str) -> bytes:
    """The 64 report-data bytes binding ``nonce``, the miner's ``hotkey`` (ss58) and ``keys`` (SHA-512)."""
    if len(nonce) != NONCE_LEN:
        raise ValueError(f"nonce must be {NONCE_LEN} bytes, got {len(nonce)}")
    if not hotkey:
        raise ValueError("the binding needs the miner's hotkey")
    h = hashlib.sha512()
    for part in (DOMAIN_TAG, nonce, hotkey.encode(), keys.kem.encode(), keys.hpke_public, keys.signing_public):
        h.update(_lp(part))
    return h.digest()


def binding_matches(report_data: bytes, nonce: bytes, keys: EnclavePublicKeys, hotkey: str) -> bool:
    return hmac.compare_digest(report_data, report_data_for(nonce, keys, hotkey))


BATCH_TAG = b"omron-tee/batch-nonce/v1"
MAX_BATCH_NONCES = 64


def batch_nonce(nonces: list[bytes]) -> bytes:
    """The one nonce a batch's evidence binds: a hash over every request's own fresh nonce, in order.

    Evidence for it cannot predate the last of them, so each request of the batch has its own
    proof of freshness from one attestation (docs/ARCHITECTURE.md, "Freshness in a batch")."""
    if not 1 <= len(nonces) <= MAX_BATCH_NONCES or any(len(n) != NONCE_LEN for n in nonces):
        raise ValueError(f"a batch binds 1 to {MAX_BATCH_NONCES} nonces of {NONCE_LEN} bytes")
    return hashlib.sha256(b"".join((BATCH_TAG, len(nonces).to_bytes(2, "big"), *nonces))).digest()

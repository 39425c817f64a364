"""The requester's side of the exchange, without networking.

Used alike by validators (benchmark traffic) and by third-party clients
(their own private requests): check a miner's attestation, seal an input to
the attested key, open the sealed result and check its receipt. Every
failure is an ``OmronTeeError`` whose ``reason`` names it.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

import numpy as np

from omron_tee.attestation.binding import NONCE_LEN, EnclavePublicKeys
from omron_tee.attestation.evidence import Verdict
from omron_tee.attestation.validate.appraise import appraise
from omron_tee.attestation.validate.policy import Policy
from omron_tee.attestation.verify.registry import VerifierRegistry
from omron_tee.channel import HpkeKeyPair, KemSuite, Receipt, key_id, reply_info, request_info, seal
from omron_tee.errors import AttestationError, ChannelError, ProtocolError
from omron_tee.protocol import AttestResponse, InferencePayload, InferenceResult, InferRequest, InferResponse, Tensor
from omron_tee.reasons import Reason

# How long an attested session may be reused before the requester must re-attest.
DEFAULT_SESSION_TTL = 60.0


def new_nonce() -> bytes:
    return os.urandom(NONCE_LEN)


def candidate_nonce(client_nonce: bytes, miner_hotkey: str) -> bytes:
    """The nonce a relayed attestation sends to one candidate miner.

    A third party's one fresh nonce becomes a different, unlinkable nonce per
    miner, so operators of several miners cannot compare nonces to pick out
    third-party traffic from the validator's benchmarks (which use one random
    nonce per miner); the client derives the same value to check the binding.
    """
    return hashlib.sha256(b"omron-tee/candidate-nonce/v1\0" + client_nonce + miner_hotkey.encode()).digest()


@dataclass(frozen=True)
class AttestedSession:
    """Keys a requester has seen attested, and until when it will trust them without re-attesting."""

    keys: EnclavePublicKeys
    evidence_hash: bytes
    verdict: Verdict
    attested_at: float
    expires_at: float
    attest_nonce: bytes

    @property
    def kem(self) -> KemSuite:
        return KemSuite.parse(self.keys.kem)

    @property
    def key_id(self) -> bytes:
        return key_id(self.keys.hpke_public)

    def fresh(self, now: float) -> bool:
        return now < self.expires_at


def check_attestation(
    response: AttestResponse,
    *,
    nonce: bytes,
    hotkey: str,
    policy: Policy,
    registry: VerifierRegistry,
    kem: KemSuite = KemSuite.X25519,
    now: float | None = None,
    ttl: float = DEFAULT_SESSION_TTL,
) -> AttestedSession:
    """An ``AttestedSession`` if the evidence is acceptable, else ``AttestationError`` naming every reason.

    ``hotkey`` is the miner the requester addressed: evidence bound to another hotkey is
    refused, so no miner can present another's enclave. ``kem`` is the suite the requester
    asked for: keys of another suite are refused, so a miner's operator cannot downgrade a
    post-quantum request to classical X25519.
    """
    now = time.time() if now is None else now
    verdict = appraise(response.evidence, nonce=nonce, keys=response.keys, hotkey=hotkey, policy=policy, registry=registry, now=now)
    if not verdict.accepted or verdict.claims is None:
        raise AttestationError("; ".join(verdict.reasons), reason=verdict.reason_code)
    if response.keys.kem != kem.value:
        raise AttestationError(f"the enclave answered with {response.keys.kem!r} keys, not the {kem.value!r} asked for", reason=Reason.KEM_MISMATCH)
    return AttestedSession(
        keys=response.keys,
        # The canonical digest of what was verified: unsigned bytes cannot give the same
        # evidence a second name.
        evidence_hash=verdict.claims.evidence_digest,
        verdict=verdict,
        attested_at=now,
        expires_at=now + ttl,
        attest_nonce=nonce,
    )


@dataclass(frozen=True)
class PendingRequest:
    """What a requester keeps to open and check the answer to one sealed request."""

    session: AttestedSession
    nonce: bytes
    model_id: str
    input_hash: bytes
    reply_key: HpkeKeyPair
    proof_system: str = "tee"


def seal_request(
    session: AttestedSession, model_id: str, x: np.ndarray, *, nonce: bytes | None = None, proof_system: str = "tee"
) -> tuple[InferRequest, PendingRequest]:
    """Seal ``x`` for ``model_id`` to the session's enclave key, with a fresh reply key.

    ``proof_system="zk"`` asks the enclave to also prove the inference; the
    caller checks the proof (``omron_tee.zk.verifier``) on the opened result."""
    tensor = Tensor.from_array(x)
    nonce = new_nonce() if nonce is None else nonce
    reply_key = HpkeKeyPair.generate(session.kem)
    payload = InferencePayload(
        nonce=nonce,
        model_id=model_id,
        input=tensor,
        reply_kem=session.kem.value,
        reply_public=reply_key.public_bytes,
        evidence_hash=session.evidence_hash,
        proof_system=proof_system,
    )
    sealed = seal(session.kem, session.keys.hpke_public, payload.encode(), request_info(session.key_id))
    pending = PendingRequest(session=session, nonce=nonce, model_id=model_id, input_hash=tensor.digest(), reply_key=reply_key, proof_system=proof_system)
    return InferRequest(key_id=session.key_id, sealed=sealed), pending


@dataclass(frozen=True)
class VerifiedResult:
    output: np.ndarray
    receipt: Receipt
    proof: bytes | None = None  # zk requests: the proof, still to be verified by the caller
    prove_ms: float | None = None


def open_result(pending: PendingRequest, response: InferResponse, *, model_hash: bytes) -> VerifiedResult:
    """Open the sealed answer and check that its receipt covers this request and its output."""
    plaintext = pending.reply_key.open(response.sealed, reply_info(pending.nonce))
    try:
        result = InferenceResult.decode(plaintext)
    except (ProtocolError, ChannelError) as e:
        raise ChannelError(f"sealed result is malformed: {e}", reason=Reason.MALFORMED_RESULT) from None
    if result.error is not None:
        raise ChannelError(f"the enclave refused the request: {result.error}", reason=Reason.ENCLAVE_REFUSED)
    if result.output is None or result.receipt is None:
        raise ChannelError("sealed result has no output or no receipt", reason=Reason.MALFORMED_RESULT)
    receipt = result.receipt
    receipt.verify(pending.session.keys.signing_public)
    mismatches = [
        name
        for name, got, want in (
            ("nonce", receipt.nonce, pending.nonce),
            ("model hash", receipt.model_hash, model_hash),
            ("input hash", receipt.input_hash, pending.input_hash),
            ("output hash", receipt.output_hash, result.output.digest()),
            ("evidence hash", receipt.evidence_hash, pending.session.evidence_hash),
        )
        if got != want
    ]
    if mismatches:
        raise ChannelError(f"receipt does not match the request: {', '.join(mismatches)}", reason=Reason.BAD_RECEIPT)
    return VerifiedResult(output=result.output.to_array(), receipt=receipt, proof=result.proof, prove_ms=result.prove_ms)

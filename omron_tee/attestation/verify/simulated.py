"""Verify simulated reports: the Ed25519 signature of a development key."""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from omron_tee.attestation.abi import simulated as abi
from omron_tee.attestation.platform import SimulatedClaims
from omron_tee.attestation.evidence import Claims, Evidence, TeeType, canonical_digest
from omron_tee.errors import VerificationError
from omron_tee.reasons import Reason


class SimulatedVerifier:
    """Accepts reports signed by one of ``trusted_keys`` (raw Ed25519 public keys).

    Trusting a key here says nothing about hardware: whether simulated
    evidence is acceptable at all is the policy's decision, not this one's.
    """

    tee_type = TeeType.SIMULATED

    def __init__(self, trusted_keys: list[bytes]) -> None:
        self._keys = {hashlib.sha256(k).digest(): Ed25519PublicKey.from_public_bytes(k) for k in trusted_keys}

    def verify(self, evidence: Evidence, *, now: float) -> Claims:
        report = abi.parse(evidence.quote)
        key = self._keys.get(report.key_id)
        if key is None:
            raise VerificationError(
                "simulated report is signed by a development key this verifier does not trust",
                reason=Reason.UNTRUSTED_SIGNER,
            )
        try:
            key.verify(report.signature, report.signed_bytes)
        except InvalidSignature:
            raise VerificationError("simulated report signature does not verify", reason=Reason.BAD_SIGNATURE) from None
        return Claims(
            tee_type=TeeType.SIMULATED,
            measurement=report.measurement,
            report_data=report.report_data,
            debug=report.debug,
            tcb_status="Simulated",
            issued_at=report.issued_at_ms / 1000.0,
            platform=SimulatedClaims(report.key_id, report.version),
            evidence_digest=canonical_digest(TeeType.SIMULATED, [report.signed_bytes, report.signature]),
        )

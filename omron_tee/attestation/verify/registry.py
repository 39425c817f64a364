"""The verifier seam: one ``EvidenceVerifier`` per TEE type, looked up by type.

Validators and clients call ``VerifierRegistry.verify``; each backend's
verifier checks its own cryptography and collateral and returns ``Claims``.
A new TEE type plugs in here without touching the protocol.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from omron_tee.attestation.evidence import Claims, Evidence, TeeType, canonical_digest
from omron_tee.errors import VerificationError
from omron_tee.reasons import Reason


class EvidenceVerifier(Protocol):
    tee_type: TeeType

    def verify(self, evidence: Evidence, *, now: float) -> Claims:
        """Check signatures and collateral; raise an ``AttestationError`` subclass if they fail."""
        ...


class VerifierRegistry:
    def __init__(self, verifiers: list[EvidenceVerifier] | None = None) -> None:
        self._by_type: dict[TeeType, EvidenceVerifier] = {}
        for v in verifiers or []:
            self.register(v)

    def register(self, verifier: EvidenceVerifier) -> None:
        self._by_type[verifier.tee_type] = verifier

    def supported(self) -> list[TeeType]:
        return sorted(self._by_type, key=lambda t: t.value)

    def verify(self, evidence: Evidence, *, now: float) -> Claims:
        verifier = self._by_type.get(evidence.tee_type)
        if verifier is None:
            raise VerificationError(
                f"no verifier is configured for {evidence.tee_type.value} evidence",
                reason=Reason.UNSUPPORTED_TEE,
            )
        claims = verifier.verify(evidence, now=now)
        if not claims.evidence_digest:
            raise VerificationError(f"the {evidence.tee_type.value} verifier gave no canonical evidence digest", reason=Reason.EVIDENCE_UNVERIFIED)
        if evidence.attached:
            attached = tuple(self.verify(e, now=now) for e in evidence.attached)
            digest = canonical_digest(claims.tee_type, [claims.evidence_digest], tuple(c.evidence_digest for c in attached))
            claims = dataclasses.replace(claims, attached=attached, evidence_digest=digest)
        return claims

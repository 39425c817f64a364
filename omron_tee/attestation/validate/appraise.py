"""Appraisal: verify layer, then policy, then the exchange's report-data binding."""

from __future__ import annotations

from omron_tee.attestation.binding import EnclavePublicKeys, binding_matches
from omron_tee.attestation.evidence import Evidence, Verdict
from omron_tee.attestation.validate.policy import Policy
from omron_tee.attestation.verify.registry import VerifierRegistry
from omron_tee.errors import AttestationError


def appraise(
    evidence: Evidence,
    *,
    nonce: bytes,
    keys: EnclavePublicKeys,
    policy: Policy,
    registry: VerifierRegistry,
    now: float,
) -> Verdict:
    """Judge ``evidence`` for the exchange that sent ``nonce``; never raises for bad evidence."""
    try:
        claims = registry.verify(evidence, now=now)
    except AttestationError as e:
        return Verdict(accepted=False, claims=None, reasons=(str(e),), reason_codes=(e.reason,))
    reasons = policy.check(claims, now=now)
    if not binding_matches(claims.report_data, nonce, keys):
        reasons.append(("report-data-mismatch", "report data does not bind this exchange's nonce and keys (replayed or forged evidence)"))
    for sub in claims.attached:
        if not binding_matches(sub.report_data, nonce, keys):
            reasons.append(("report-data-mismatch", f"attached {sub.tee_type.value} evidence does not bind this exchange"))
    return Verdict(
        accepted=not reasons,
        claims=claims,
        reasons=tuple(m for _, m in reasons),
        reason_codes=tuple(c for c, _ in reasons),
    )

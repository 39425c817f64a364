"""Appraisal: verify layer, then policy, then the exchange's report-data binding.

CPU TEEs (SGX, TDX, SEV-SNP, simulated) carry the 64-byte binding of
``binding.report_data_for(nonce, keys)`` in their report data. An NVIDIA GPU
signs only a 32-byte SPDM nonce, so a GPU attached to CPU evidence binds the
same exchange through that: its nonce must be ``gpu_nonce_for(report_data)``
= SHA-256 of the CPU binding. The enclave computes the binding, asks the GPU
for measurements with that nonce, and attaches the GPU's evidence; the GPU
thereby vouches for being attested in the same exchange, and the CPU
evidence for the keys. GPU evidence alone binds no keys and is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from omron_tee.attestation.binding import EnclavePublicKeys, report_data_for
from omron_tee.attestation.evidence import Claims, Evidence, TeeType, Verdict
from omron_tee.attestation.validate.policy import Policy
from omron_tee.attestation.validate.releases import ReleaseLog, check_published
from omron_tee.attestation.verify.registry import VerifierRegistry
from omron_tee.errors import LIBRARY_DECODE_ERRORS, AttestationError
from omron_tee.reasons import Reason

GPU_NONCE_LEN = 32
log = logging.getLogger("omron_tee.attestation")


def gpu_nonce_for(report_data: bytes) -> bytes:
    """The SPDM nonce an attached GPU must sign: SHA-256 of the CPU evidence's 64-byte report data."""
    return hashlib.sha256(report_data).digest()


def binding_reasons(claims: Claims, expected: bytes) -> list[tuple[str, str]]:
    """Reasons ``claims`` (and what is attached to it) do not bind ``expected`` report data."""
    reasons: list[tuple[str, str]] = []
    if claims.tee_type is TeeType.NVIDIA:
        reasons.append((Reason.REPORT_DATA_MISMATCH, "GPU evidence alone cannot bind the exchange's keys; attach it to CPU TEE evidence"))
    elif not hmac.compare_digest(claims.report_data, expected):
        reasons.append((Reason.REPORT_DATA_MISMATCH, "report data does not bind this exchange's nonce, the miner's hotkey and the keys (replayed, relayed or forged evidence)"))
    for sub in claims.attached:
        if sub.tee_type is TeeType.NVIDIA:
            if not hmac.compare_digest(sub.report_data, gpu_nonce_for(expected)):
                reasons.append((Reason.REPORT_DATA_MISMATCH, "attached nvidia evidence was not requested with this exchange's GPU nonce"))
        elif not hmac.compare_digest(sub.report_data, expected):
            reasons.append((Reason.REPORT_DATA_MISMATCH, f"attached {sub.tee_type.value} evidence does not bind this exchange"))
    return reasons


def appraise(
    evidence: Evidence,
    *,
    nonce: bytes,
    keys: EnclavePublicKeys,
    hotkey: str,
    policy: Policy,
    registry: VerifierRegistry,
    now: float,
    releases: ReleaseLog | None = None,
) -> Verdict:
    """Judge ``evidence`` for the exchange that sent ``nonce`` to the miner ``hotkey``.

    ``releases`` is what the chain published, as of its current block; it is read only when
    the policy requires published builds (then None refuses with ``releases-unknown``).

    Never raises for bad evidence: whatever a verifier throws on hostile bytes
    (a library's ``ValueError`` included) becomes a refusal with a named reason.
    """
    return appraise_bound(evidence, report_data=report_data_for(nonce, keys, hotkey), policy=policy, registry=registry, now=now, releases=releases)


def appraise_bound(
    evidence: Evidence,
    *,
    report_data: bytes,
    policy: Policy,
    registry: VerifierRegistry,
    now: float,
    releases: ReleaseLog | None = None,
) -> Verdict:
    """``appraise`` given the 64 report-data bytes the evidence must carry (what ``report_data_for``
    makes of the exchange): the verdict as a pure function of evidence, collateral (the registry's
    store), policy, time, binding and releases, which is what the conformance vectors test.
    Evidence of a TEE type the policy has no rules for (itself or attached) is refused before it is verified."""
    unread = [r for r in (policy.refuses_unread(e.tee_type) for e in (evidence, *evidence.attached)) if r is not None]
    if unread:
        return Verdict(accepted=False, claims=None, reasons=tuple(m for _, m in unread), reason_codes=tuple(c for c, _ in unread))
    try:
        claims = registry.verify(evidence, now=now)
    except AttestationError as e:
        return Verdict(accepted=False, claims=None, reasons=(str(e),), reason_codes=(e.reason,))
    except LIBRARY_DECODE_ERRORS as e:
        # Fail closed: a verifier meeting bytes it did not expect is a refusal, not a crash.
        log.warning("the %s verifier failed on malformed evidence: %s", evidence.tee_type.value, type(e).__name__)
        return Verdict(accepted=False, claims=None, reasons=(f"{evidence.tee_type.value} evidence cannot be read ({type(e).__name__})",), reason_codes=(Reason.EVIDENCE_MALFORMED,))
    reasons = policy.check(claims, now=now)
    reasons.extend(binding_reasons(claims, report_data))
    # Last: a verdict's first reason names it, and "too recent" must never mask a forgery.
    reasons.extend(check_published(claims, releases, policy.releases))
    return Verdict(
        accepted=not reasons,
        claims=claims,
        reasons=tuple(m for _, m in reasons),
        reason_codes=tuple(c for c, _ in reasons),
    )

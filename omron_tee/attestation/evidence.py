"""Typed evidence, claims and verdicts shared by every TEE type.

``Evidence`` is what an enclave backend produces and what travels on the
wire. ``Claims`` is what a verifier extracts once the cryptography checks out
(verify layer); ``Verdict`` is what the policy makes of the claims (validate
layer). Nothing here does I/O or cryptography.
"""

from __future__ import annotations

import base64
import enum
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omron_tee.errors import ProtocolError
from omron_tee.reasons import Reason

if TYPE_CHECKING:
    from omron_tee.attestation.platform import PlatformClaims


class TeeType(str, enum.Enum):
    SIMULATED = "simulated"
    SGX = "sgx"
    TDX = "tdx"
    SEV_SNP = "sev-snp"
    NVIDIA = "nvidia"

    @classmethod
    def parse(cls, value: str) -> "TeeType":
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(t.value for t in cls)
            raise ProtocolError(f"unknown TEE type {value!r}; expected one of: {names}") from None


# Bounds on what a peer may send: the largest real evidence (an SNP report with its
# certificate table, an NVIDIA SPDM transcript with a 5-certificate chain) is ~16 KB.
MAX_QUOTE_BYTES = 64 * 1024
MAX_CERTIFICATES_BYTES = 256 * 1024
MAX_ATTACHED = 8


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise ProtocolError(f"{what} is not valid base64") from None


@dataclass(frozen=True)
class Evidence:
    """Raw attestation evidence as produced by one TEE.

    ``quote`` is the platform's own bytes (an SGX/TDX quote, an SNP report, an
    NVIDIA SPDM transcript, a simulated report). ``certificates`` carries what
    the platform hands out beside it (SNP auxblob / VCEK, NVIDIA cert chain),
    possibly empty. ``attached`` holds evidence of further devices bound to
    the same report data, e.g. a confidential GPU beside the CPU TEE.
    """

    tee_type: TeeType
    quote: bytes
    certificates: bytes = b""
    attached: tuple["Evidence", ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tee_type": self.tee_type.value, "quote": _b64(self.quote)}
        if self.certificates:
            out["certificates"] = _b64(self.certificates)
        if self.attached:
            out["attached"] = [e.to_json() for e in self.attached]
        return out

    @classmethod
    def from_json(cls, data: Any, *, _depth: int = 0) -> "Evidence":
        if not isinstance(data, dict):
            raise ProtocolError("evidence must be a JSON object")
        attached = data.get("attached", [])
        if not isinstance(attached, list) or len(attached) > MAX_ATTACHED:
            raise ProtocolError(f"evidence.attached must be a list of at most {MAX_ATTACHED} items")
        if attached and _depth >= 1:
            # Devices attach to the CPU TEE's evidence, never to each other: one level only.
            raise ProtocolError("attached evidence cannot itself carry attached evidence", reason=Reason.TOO_DEEP)
        tee_type = data.get("tee_type")
        if not isinstance(tee_type, str):
            raise ProtocolError("evidence.tee_type must be a string")
        quote = _unb64(data.get("quote"), "evidence.quote")
        certificates = _unb64(data.get("certificates", ""), "evidence.certificates")
        if len(quote) > MAX_QUOTE_BYTES or len(certificates) > MAX_CERTIFICATES_BYTES:
            raise ProtocolError(f"evidence exceeds {MAX_QUOTE_BYTES} bytes of quote or {MAX_CERTIFICATES_BYTES} of certificates", reason=Reason.TOO_LARGE)
        return cls(
            tee_type=TeeType.parse(tee_type[:32]),
            quote=quote,
            certificates=certificates,
            attached=tuple(cls.from_json(a, _depth=_depth + 1) for a in attached),
        )


CANONICAL_TAG = b"omron-tee/evidence/v2\0"


def canonical_digest(tee_type: TeeType, parts: list[bytes], attached: tuple[bytes, ...] = ()) -> bytes:
    """SHA-256 of the length-prefixed ``parts`` a verifier checked, then of attached evidence's digests."""
    h = hashlib.sha256(CANONICAL_TAG)
    h.update(_lp(tee_type.value.encode()))
    h.update(len(parts).to_bytes(4, "big"))
    for part in parts:
        h.update(_lp(part))
    h.update(len(attached).to_bytes(4, "big"))
    for d in attached:
        h.update(_lp(d))
    return h.digest()


def _lp(part: bytes) -> bytes:
    return len(part).to_bytes(8, "big") + part


@dataclass(frozen=True)
class Claims:
    """What verified evidence says, normalised across TEE types.

    ``measurement`` is the value a policy allow-lists (MRENCLAVE, MRTD, SNP
    measurement, simulated build hash). ``platform`` holds the remaining
    fields of that TEE, typed (``attestation.platform``): policy reads them;
    ``details`` is their display form.
    """

    tee_type: TeeType
    measurement: bytes
    report_data: bytes
    debug: bool
    tcb_status: str = "Unknown"
    advisory_ids: tuple[str, ...] = ()
    issued_at: float | None = None
    platform: "PlatformClaims | None" = None
    attached: tuple["Claims", ...] = ()
    # SHA-256 over the canonical form of what was verified (signed bytes, signature,
    # the certificates the chain was built from): the same claims always give the same
    # digest, whatever unsigned bytes (padding, PEM whitespace, unused certificates)
    # travelled with them. Receipts and sessions bind this, never the raw bytes.
    evidence_digest: bytes = b""
    # The hardware's own identity where the evidence proves one (SEV-SNP chip id,
    # Intel PPID, NVIDIA device certificate), so one machine cannot back many hotkeys.
    platform_id: bytes = b""

    @property
    def details(self) -> dict[str, Any]:
        """The platform's fields for display (hex strings); policy reads ``platform``."""
        return self.platform.to_json() if self.platform is not None else {}

    def to_json(self) -> dict[str, Any]:
        return {
            "tee_type": self.tee_type.value,
            "measurement": self.measurement.hex(),
            "report_data": self.report_data.hex(),
            "debug": self.debug,
            "tcb_status": self.tcb_status,
            "advisory_ids": list(self.advisory_ids),
            "issued_at": self.issued_at,
            "details": self.details,
            "attached": [c.to_json() for c in self.attached],
            "evidence_digest": self.evidence_digest.hex(),
            "platform_id": self.platform_id.hex(),
        }


@dataclass(frozen=True)
class Verdict:
    """The outcome of validating claims against a policy.

    ``reasons`` names every refusal (empty when accepted); ``reason_codes``
    holds the matching stable slugs for scoring and summaries.
    """

    accepted: bool
    claims: Claims | None
    reasons: tuple[str, ...] = ()
    reason_codes: tuple[str, ...] = ()

    @property
    def reason_code(self) -> str:
        return self.reason_codes[0] if self.reason_codes else ("accepted" if self.accepted else "rejected")

    def to_json(self) -> dict[str, Any]:
        claims = self.claims.to_json() if self.claims else None
        return {
            "verdict": "accepted" if self.accepted else "rejected",
            "reasons": list(self.reasons),
            "reason_codes": list(self.reason_codes),
            "claims": claims,
        }

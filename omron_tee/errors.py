"""The exception hierarchy of omron-tee.

Every error a user or a peer can cause is an ``OmronTeeError`` whose message
says what was wrong and, where it helps, what to do. Each carries a short
machine-readable ``reason`` (a stable slug) that logs, summaries and scores
use to name why something was refused.
"""

from __future__ import annotations

import struct

from omron_tee.reasons import Reason

# What parsers of other libraries (cryptography's lazy X.509 fields, dcap-qvl, the json
# and struct modules) raise on hostile bytes. Code that hands a peer's bytes to them
# catches these and names a reason, so no such error escapes to a caller.
LIBRARY_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, TypeError, IndexError, KeyError, OverflowError, UnicodeError, RecursionError, struct.error,
)


class OmronTeeError(Exception):
    """Base class of every error omron-tee raises on purpose."""

    reason: str = Reason.ERROR

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class ConfigError(OmronTeeError):
    """A flag, file or setting is missing or invalid."""

    reason = Reason.CONFIG


class ProtocolError(OmronTeeError):
    """A message does not have the shape the protocol requires."""

    reason = Reason.MALFORMED_MESSAGE


class AttestationError(OmronTeeError):
    """Evidence could not be parsed, verified or did not satisfy the policy."""

    reason = Reason.ATTESTATION_FAILED


class ParseError(AttestationError):
    """Evidence bytes are not a well-formed structure (the abi layer)."""

    reason = Reason.EVIDENCE_MALFORMED

    def __init__(self, structure: str, field: str, message: str) -> None:
        super().__init__(f"{structure}: field '{field}': {message}")
        self.structure = structure
        self.field = field


class VerificationError(AttestationError):
    """A signature, certificate chain or collateral check failed (the verify layer)."""

    reason = Reason.EVIDENCE_UNVERIFIED


class CollateralError(VerificationError):
    """Collateral (certificates, CRLs, TCB info) is missing, expired or wrong."""

    reason = Reason.COLLATERAL


class PolicyError(AttestationError):
    """Verified evidence does not satisfy the policy (the validate layer)."""

    reason = Reason.POLICY


class ChannelError(OmronTeeError):
    """A sealed message could not be opened, or a receipt does not verify."""

    reason = Reason.CHANNEL


class EnclaveError(OmronTeeError):
    """The enclave backend could not produce evidence or is not usable here."""

    reason = Reason.ENCLAVE


class ModelError(OmronTeeError):
    """A model is unknown, its file does not match its hash, or its input is invalid."""

    reason = Reason.MODEL


class ChainError(OmronTeeError):
    """The chain could not be reached or refused an operation."""

    reason = Reason.CHAIN


class RateLimited(ChainError):
    """An operation was refused because it came too soon after the last one."""

    reason = Reason.RATE_LIMITED
    retry_after: float | None = None  # seconds until it would be accepted, where the limiter knows


class AuthError(OmronTeeError):
    """A request's btauth/1 signature, freshness or sender was refused."""

    reason = Reason.UNAUTHORIZED


class MinerError(OmronTeeError):
    """A miner failed to answer correctly (down, slow, refused, wrong)."""

    reason = Reason.MINER_FAILED

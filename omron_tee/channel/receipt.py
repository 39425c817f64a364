"""The enclave's signed receipt: built by ``issue``, checked by ``check``, for every workload.

A receipt binds one answer to one request: the requester's per-request
nonce, the model (its file's sha256), the input and output (each workload
hashes its own canonical encoding) and the attestation evidence whose key
signs it. Ed25519 over a fixed-layout, tagged encoding.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, replace

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from omron_tee.errors import ChannelError
from omron_tee.reasons import Reason

_TAG = b"omron-tee/receipt/v1"
_FMT = struct.Struct(">32s32s32s32s32sQ")
_HASHES = ("nonce", "model_hash", "input_hash", "output_hash", "evidence_hash")


@dataclass(frozen=True)
class Binding:
    """What a receipt must cover: the request's nonce, the model, the input, the output, the evidence."""

    nonce: bytes
    model_hash: bytes
    input_hash: bytes
    output_hash: bytes
    evidence_hash: bytes


@dataclass(frozen=True)
class Receipt:
    nonce: bytes
    model_hash: bytes
    input_hash: bytes
    output_hash: bytes
    evidence_hash: bytes
    issued_at_ms: int
    signature: bytes = b""

    @property
    def binding(self) -> Binding:
        return Binding(self.nonce, self.model_hash, self.input_hash, self.output_hash, self.evidence_hash)

    def signed_bytes(self) -> bytes:
        return _TAG + _FMT.pack(self.nonce, self.model_hash, self.input_hash, self.output_hash, self.evidence_hash, self.issued_at_ms)

    def verify(self, signing_public: bytes) -> None:
        """The signature alone (``check`` also compares what it covers)."""
        try:
            Ed25519PublicKey.from_public_bytes(signing_public).verify(self.signature, self.signed_bytes())
        except (InvalidSignature, ValueError):
            raise ChannelError("receipt signature does not verify with the attested enclave key", reason=Reason.BAD_RECEIPT) from None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {k: getattr(self, k).hex() for k in _HASHES}
        out["issued_at_ms"] = self.issued_at_ms
        out["signature"] = self.signature.hex()
        return out

    @classmethod
    def from_json(cls, data: object) -> "Receipt":
        if not isinstance(data, dict):
            raise ChannelError("receipt must be a JSON object", reason=Reason.MALFORMED_MESSAGE)
        try:
            fields = {k: bytes.fromhex(str(data[k])) for k in (*_HASHES, "signature")}
            r = cls(issued_at_ms=int(data["issued_at_ms"]), **fields)
        except (KeyError, ValueError, TypeError):
            raise ChannelError("receipt is missing a field or has a malformed one", reason=Reason.MALFORMED_MESSAGE) from None
        for name in _HASHES:
            if len(getattr(r, name)) != 32:
                raise ChannelError(f"receipt.{name} must be 32 bytes", reason=Reason.MALFORMED_MESSAGE)
        if not 0 <= r.issued_at_ms < 1 << 64:
            raise ChannelError("receipt.issued_at_ms is out of range", reason=Reason.MALFORMED_MESSAGE)
        return r


def issue(binding: Binding, sign: Callable[[bytes], bytes], *, issued_at_ms: int) -> Receipt:
    """The enclave's receipt for ``binding``, signed with its attested key (``sign``)."""
    unsigned = Receipt(binding.nonce, binding.model_hash, binding.input_hash, binding.output_hash, binding.evidence_hash, issued_at_ms)
    return replace(unsigned, signature=sign(unsigned.signed_bytes()))


def check(receipt: Receipt, *, signing_public: bytes, expected: Binding) -> None:
    """``ChannelError`` (bad-receipt) unless ``receipt`` is signed by ``signing_public`` and covers exactly ``expected``."""
    receipt.verify(signing_public)
    mismatches = [name.replace("_", " ") for name in _HASHES if getattr(receipt, name) != getattr(expected, name)]
    if mismatches:
        raise ChannelError(f"receipt does not match the request: {', '.join(mismatches)}", reason=Reason.BAD_RECEIPT)

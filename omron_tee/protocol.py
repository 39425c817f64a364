"""Typed messages of the exchange. No I/O, no cryptography beyond hashing.

Wire messages (JSON, bytes as base64) travel over HTTP between validator and
miner and between a client and the validator's API. Sealed payloads (the
inner plaintexts) are only ever seen by the requester and the enclave.

The exchange::

    requester -> miner    AttestRequest(nonce, kem)
    miner     -> requester AttestResponse(evidence, keys)          # report_data binds nonce + keys
    requester -> miner    InferRequest(key_id, sealed=HPKE(InferencePayload))
    miner     -> requester InferResponse(sealed=HPKE(InferenceResult))  # result + signed receipt
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from omron_tee.attestation.binding import NONCE_LEN, EnclavePublicKeys
from omron_tee.attestation.evidence import Evidence
from omron_tee.channel import Receipt
from omron_tee import untrusted
from omron_tee.errors import ProtocolError
from omron_tee.reasons import Reason

PROTOCOL_VERSION = 1
MAX_TENSOR_BYTES = 4 * 1024 * 1024
_DTYPES = {"float32", "float64", "int64", "int32", "uint8"}
# How a result is proven: "tee" (attested enclave and signed receipt) or "zk" (also an EZKL proof).
PROOF_SYSTEMS = ("tee", "zk")
MAX_PROOF_BYTES = 1024 * 1024


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise ProtocolError(f"{what} is not valid base64") from None


def _field(data: Any, key: str, what: str) -> Any:
    if not isinstance(data, dict):
        raise ProtocolError(f"{what} must be a JSON object")
    if key not in data:
        raise ProtocolError(f"{what} is missing '{key}'")
    return data[key]


def _nonce(value: Any, what: str) -> bytes:
    n = unb64(value, what)
    if len(n) != NONCE_LEN:
        raise ProtocolError(f"{what} must be {NONCE_LEN} bytes")
    return n


def loads(body: bytes, what: str, *, max_bytes: int = untrusted.MAX_JSON_BYTES) -> Any:
    """A peer's JSON, bounded in size, depth and element count (``omron_tee.untrusted``)."""
    return untrusted.loads(body, what, max_bytes=max_bytes)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Tensor:
    """A dense array in a canonical little-endian encoding (what hashes cover)."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes

    @classmethod
    def from_array(cls, array: np.ndarray) -> "Tensor":
        a = np.ascontiguousarray(array)
        if a.dtype.name not in _DTYPES:
            raise ProtocolError(f"unsupported tensor dtype {a.dtype.name}")
        return cls(a.dtype.name, tuple(int(d) for d in a.shape), a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())

    def to_array(self) -> np.ndarray:
        return np.frombuffer(self.data, dtype=np.dtype(self.dtype).newbyteorder("<")).reshape(self.shape)

    def canonical(self) -> bytes:
        header = f"{self.dtype}:{','.join(map(str, self.shape))}".encode()
        return struct.pack(">I", len(header)) + header + self.data

    def digest(self) -> bytes:
        return hashlib.sha256(self.canonical()).digest()

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "shape": list(self.shape), "data": b64(self.data)}

    @classmethod
    def from_json(cls, data: Any) -> "Tensor":
        dtype = _field(data, "dtype", "tensor")
        shape = _field(data, "shape", "tensor")
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise ProtocolError(f"unsupported tensor dtype {str(dtype)[:16]!r}; known: {', '.join(sorted(_DTYPES))}")
        if not isinstance(shape, list) or len(shape) > 8 or not all(type(d) is int and 0 <= d <= 1 << 20 for d in shape):
            raise ProtocolError("tensor shape must be a list of at most 8 integers from 0 to 2^20")
        # Python integers, not np.prod: int64 products of large dimensions wrap around.
        expected = np.dtype(dtype).itemsize
        for d in shape:
            expected *= d
        if expected > MAX_TENSOR_BYTES:
            raise ProtocolError(f"tensor of shape {shape} exceeds {MAX_TENSOR_BYTES} bytes", reason=Reason.TOO_LARGE)
        raw = unb64(_field(data, "data", "tensor"), "tensor.data")
        if len(raw) != expected:
            raise ProtocolError(f"tensor data has {len(raw)} bytes, shape {shape} of {dtype} needs {expected}")
        return cls(dtype, tuple(shape), raw)


# --- miner endpoints ---------------------------------------------------------


MAX_HOTKEY_LEN = 64  # an ss58 address is 48 characters


@dataclass(frozen=True)
class AttestRequest:
    nonce: bytes
    kem: str
    # The miner hotkey the requester addresses; the enclave refuses to attest for any
    # other than its own (it binds its own into the report data either way).
    hotkey: str = ""

    def to_json(self) -> dict[str, Any]:
        out = {"v": PROTOCOL_VERSION, "nonce": b64(self.nonce), "kem": self.kem}
        if self.hotkey:
            out["hotkey"] = self.hotkey
        return out

    @classmethod
    def from_json(cls, data: Any) -> "AttestRequest":
        kem = _field(data, "kem", "attest request")
        hotkey = data.get("hotkey", "")
        if not isinstance(kem, str) or not isinstance(hotkey, str) or len(hotkey) > MAX_HOTKEY_LEN:
            raise ProtocolError("attest request kem and hotkey must be short strings")
        return cls(_nonce(_field(data, "nonce", "attest request"), "attest request nonce"), kem[:64], hotkey)


def keys_to_json(keys: EnclavePublicKeys) -> dict[str, Any]:
    return {"kem": keys.kem, "hpke_public": b64(keys.hpke_public), "signing_public": b64(keys.signing_public)}


def keys_from_json(data: Any) -> EnclavePublicKeys:
    return EnclavePublicKeys(
        kem=str(_field(data, "kem", "enclave keys")),
        hpke_public=unb64(_field(data, "hpke_public", "enclave keys"), "enclave keys.hpke_public"),
        signing_public=unb64(_field(data, "signing_public", "enclave keys"), "enclave keys.signing_public"),
    )


@dataclass(frozen=True)
class AttestResponse:
    evidence: Evidence
    keys: EnclavePublicKeys
    models: tuple[str, ...] = ()
    # Per model, the proof systems this miner offers; a model missing here offers "tee" only.
    proof_systems: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def offers(self, model_id: str, proof_system: str) -> bool:
        return proof_system in self.proof_systems.get(model_id, ("tee",) if model_id in self.models else ())

    def to_json(self) -> dict[str, Any]:
        out = {"evidence": self.evidence.to_json(), "keys": keys_to_json(self.keys), "models": list(self.models)}
        if self.proof_systems:
            out["proof_systems"] = {m: list(p) for m, p in self.proof_systems.items()}
        return out

    @classmethod
    def from_json(cls, data: Any) -> "AttestResponse":
        models = data.get("models", []) if isinstance(data, dict) else []
        if not isinstance(models, list):
            raise ProtocolError("attest response models must be a list")
        offered = data.get("proof_systems", {}) if isinstance(data, dict) else {}
        if not isinstance(offered, dict) or not all(isinstance(p, list) for p in offered.values()):
            raise ProtocolError("attest response proof_systems must map model ids to lists")
        return cls(
            evidence=Evidence.from_json(_field(data, "evidence", "attest response")),
            keys=keys_from_json(_field(data, "keys", "attest response")),
            models=tuple(str(m) for m in models),
            proof_systems={str(m): tuple(str(x) for x in p if x in PROOF_SYSTEMS) for m, p in offered.items()},
        )


@dataclass(frozen=True)
class InferRequest:
    """What a miner's operator sees of a request: which enclave key, and a sealed blob."""

    key_id: bytes
    sealed: bytes

    def to_json(self) -> dict[str, Any]:
        return {"v": PROTOCOL_VERSION, "key_id": b64(self.key_id), "sealed": b64(self.sealed)}

    @classmethod
    def from_json(cls, data: Any) -> "InferRequest":
        return cls(unb64(_field(data, "key_id", "infer request"), "infer request key_id"), unb64(_field(data, "sealed", "infer request"), "infer request sealed"))


@dataclass(frozen=True)
class InferResponse:
    sealed: bytes

    def to_json(self) -> dict[str, Any]:
        return {"v": PROTOCOL_VERSION, "sealed": b64(self.sealed)}

    @classmethod
    def from_json(cls, data: Any) -> "InferResponse":
        return cls(unb64(_field(data, "sealed", "infer response"), "infer response sealed"))


# --- sealed payloads (only requester and enclave see these) ------------------


@dataclass(frozen=True)
class ReplyRoute:
    """Where a sealed request wants its answer: read first, so that a request malformed in
    any other way still gets a sealed, named refusal (the operator learns nothing)."""

    nonce: bytes
    reply_kem: str
    reply_public: bytes

    @classmethod
    def from_dict(cls, d: Any) -> "ReplyRoute":
        kem = _field(d, "reply_kem", "sealed request")
        if not isinstance(kem, str):
            raise ProtocolError("sealed request reply_kem must be a string")
        return cls(
            nonce=_nonce(_field(d, "nonce", "sealed request"), "sealed request nonce"),
            reply_kem=kem[:64],
            reply_public=unb64(_field(d, "reply_public", "sealed request"), "sealed request reply key"),
        )


@dataclass(frozen=True)
class InferencePayload:
    """The plaintext sealed to the enclave: the private input, where to reply, and
    which of the enclave's evidence the requester verified (the receipt names it)."""

    nonce: bytes
    model_id: str
    input: Tensor
    reply_kem: str
    reply_public: bytes
    evidence_hash: bytes
    proof_system: str = "tee"  # "zk": also prove the inference (private input, public output)

    def encode(self) -> bytes:
        return dumps({
            "nonce": b64(self.nonce),
            "model": self.model_id,
            "input": self.input.to_json(),
            "reply_kem": self.reply_kem,
            "reply_public": b64(self.reply_public),
            "evidence_hash": b64(self.evidence_hash),
            "proof_system": self.proof_system,
        })

    @classmethod
    def decode(cls, raw: bytes) -> "InferencePayload":
        return cls.from_dict(loads(raw, "sealed request"))

    @classmethod
    def from_dict(cls, d: Any) -> "InferencePayload":
        proof_system = d.get("proof_system", "tee") if isinstance(d, dict) else "tee"
        if proof_system not in PROOF_SYSTEMS:
            raise ProtocolError(f"sealed request names proof system {str(proof_system)[:16]!r}; known: {', '.join(PROOF_SYSTEMS)}")
        model = _field(d, "model", "sealed request")
        if not isinstance(model, str) or len(model) > 128:
            raise ProtocolError("sealed request model must be a model id (a string)")
        return cls(
            nonce=_nonce(_field(d, "nonce", "sealed request"), "sealed request nonce"),
            model_id=model,
            input=Tensor.from_json(_field(d, "input", "sealed request")),
            reply_kem=str(_field(d, "reply_kem", "sealed request")),
            reply_public=unb64(_field(d, "reply_public", "sealed request"), "sealed request reply key"),
            evidence_hash=unb64(_field(d, "evidence_hash", "sealed request"), "sealed request evidence hash"),
            proof_system=proof_system,
        )


@dataclass(frozen=True)
class InferenceResult:
    """The plaintext sealed back to the requester: output (or error) and receipt."""

    output: Tensor | None
    receipt: Receipt | None
    error: str | None = None
    proof: bytes | None = None  # zk requests: the EZKL proof (public instances are the outputs)
    prove_ms: float | None = None  # how long proving took inside the enclave

    def encode(self) -> bytes:
        out = {
            "output": self.output.to_json() if self.output else None,
            "receipt": self.receipt.to_json() if self.receipt else None,
            "error": self.error,
        }
        if self.proof is not None:
            out["proof"] = b64(self.proof)
            out["prove_ms"] = self.prove_ms
        return dumps(out)

    @classmethod
    def decode(cls, raw: bytes) -> "InferenceResult":
        d = loads(raw, "sealed result")
        if not isinstance(d, dict):
            raise ProtocolError("sealed result must be a JSON object")
        out = d.get("output")
        rec = d.get("receipt")
        err = d.get("error")
        proof = d.get("proof")
        proof_bytes = unb64(proof, "sealed result proof") if proof is not None else None
        if proof_bytes is not None and len(proof_bytes) > MAX_PROOF_BYTES:
            raise ProtocolError(f"proof exceeds {MAX_PROOF_BYTES} bytes")
        prove_ms = d.get("prove_ms")
        return cls(
            output=Tensor.from_json(out) if out is not None else None,
            receipt=Receipt.from_json(rec) if rec is not None else None,
            error=str(err) if err is not None else None,
            proof=proof_bytes,
            prove_ms=float(prove_ms) if isinstance(prove_ms, (int, float)) and not isinstance(prove_ms, bool) else None,
        )


# --- the validator's third-party API (/v1) ------------------------------------

MAX_CANDIDATES = 8
MAX_DEADLINE_MS = 60_000


def _short_str(value: Any, what: str, limit: int = 128) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ProtocolError(f"{what} must be a string of 1 to {limit} characters")
    return value


@dataclass(frozen=True)
class CandidatesRequest:
    """``POST /v1/attest`` and ``/v1/llm/attest``: attest up to ``count`` miners serving ``model``.

    Each candidate is attested with ``exchange.candidate_nonce(nonce, its hotkey)``."""

    model: str
    nonce: bytes
    kem: str
    count: int = 3

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "nonce": b64(self.nonce), "kem": self.kem, "count": self.count}

    @classmethod
    def from_json(cls, data: Any, *, default_kem: str) -> "CandidatesRequest":
        model = _short_str(_field(data, "model", "attest request"), "attest request model")
        nonce = _nonce(_field(data, "nonce", "attest request"), "attest request nonce")
        kem = _short_str(data.get("kem", default_kem), "attest request kem", 64)
        count = data.get("count", 3)
        if type(count) is not int or not 1 <= count <= MAX_CANDIDATES:
            raise ProtocolError(f"count must be an integer from 1 to {MAX_CANDIDATES}")
        return cls(model, nonce, kem, count)


@dataclass(frozen=True)
class Candidate:
    hotkey: str
    uid: int
    attest: AttestResponse


@dataclass(frozen=True)
class Tried:
    """A miner the validator tried (or skipped) for a third party, and what came of it."""

    hotkey: str
    reason: str  # "ok", or the failure's reason (a peer's reason may be one this build does not know)

    def to_json(self) -> dict[str, Any]:
        return {"hotkey": self.hotkey, "reason": self.reason}

    @classmethod
    def from_json(cls, data: Any) -> "Tried":
        return cls(_short_str(_field(data, "hotkey", "tried entry"), "hotkey", MAX_HOTKEY_LEN), _short_str(_field(data, "reason", "tried entry"), "reason", 64))


def _bounded_list(data: Any, key: str, what: str, limit: int) -> list[Any]:
    value = data.get(key, []) if isinstance(data, dict) else None
    if not isinstance(value, list) or len(value) > limit:
        raise ProtocolError(f"{what} must hold a list '{key}' of at most {limit} entries")
    return value


@dataclass(frozen=True)
class CandidatesReply:
    """The validator's answer to a ``CandidatesRequest``: attested candidates (unverified: the client
    verifies each itself), and the miners that did not answer."""

    candidates: tuple[Candidate, ...]
    failures: tuple[Tried, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "candidates": [{"hotkey": c.hotkey, "uid": c.uid, "attest": c.attest.to_json()} for c in self.candidates],
            "failures": [f.to_json() for f in self.failures],
        }

    @classmethod
    def from_json(cls, data: Any) -> tuple["CandidatesReply", list[tuple[str, ProtocolError]]]:
        """The reply, and the candidates whose entries were malformed (hotkey, why) for the caller to report."""
        candidates, broken = [], []
        for c in _bounded_list(data, "candidates", "attest reply", MAX_CANDIDATES):
            hotkey = str(c.get("hotkey"))[:MAX_HOTKEY_LEN] if isinstance(c, dict) else "?"
            try:
                uid = _field(c, "uid", "candidate")
                if type(uid) is not int:
                    raise ProtocolError("candidate uid must be an integer")
                candidates.append(Candidate(_short_str(_field(c, "hotkey", "candidate"), "candidate hotkey", MAX_HOTKEY_LEN), uid,
                                            AttestResponse.from_json(_field(c, "attest", "candidate"))))
            except ProtocolError as e:
                broken.append((hotkey, e))
        failures = tuple(Tried.from_json(f) for f in _bounded_list(data, "failures", "attest reply", 64))
        return cls(tuple(candidates), failures), broken


@dataclass(frozen=True)
class RelayRequest:
    """``POST /v1/infer`` and ``/v1/llm/infer_stream``: one sealed copy per candidate, tried in order within the deadline."""

    deadline_ms: int
    attempts: tuple[tuple[str, InferRequest], ...]  # (miner hotkey, sealed request), in order
    model: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "deadline_ms": self.deadline_ms,
                "attempts": [{"hotkey": h, "request": r.to_json()} for h, r in self.attempts]}

    @classmethod
    def from_json(cls, data: Any, *, default_deadline_ms: int, max_deadline_ms: int = MAX_DEADLINE_MS) -> "RelayRequest":
        deadline_ms = data.get("deadline_ms", default_deadline_ms) if isinstance(data, dict) else default_deadline_ms
        if type(deadline_ms) is not int or not 1 <= deadline_ms <= max_deadline_ms:
            raise ProtocolError(f"deadline_ms must be an integer from 1 to {max_deadline_ms}")
        attempts = _field(data, "attempts", "infer request")
        if not isinstance(attempts, list) or not 1 <= len(attempts) <= MAX_CANDIDATES:
            raise ProtocolError(f"attempts must be a list of 1 to {MAX_CANDIDATES} sealed requests")
        parsed = tuple((_short_str(_field(a, "hotkey", "attempt"), "attempt hotkey", MAX_HOTKEY_LEN), InferRequest.from_json(_field(a, "request", "attempt")))
                       for a in attempts)
        model = data.get("model", "")
        return cls(deadline_ms, parsed, model if isinstance(model, str) else "")


@dataclass(frozen=True)
class RelayReply:
    """The validator's answer to a tensor ``RelayRequest``: which miner answered, its sealed answer, and every miner tried."""

    hotkey: str
    response: InferResponse
    tried: tuple[Tried, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"hotkey": self.hotkey, "response": self.response.to_json(), "tried": [t.to_json() for t in self.tried]}

    @classmethod
    def from_json(cls, data: Any) -> "RelayReply":
        return cls(
            _short_str(_field(data, "hotkey", "infer reply"), "infer reply hotkey", MAX_HOTKEY_LEN),
            InferResponse.from_json(_field(data, "response", "infer reply")),
            tuple(Tried.from_json(t) for t in _bounded_list(data, "tried", "infer reply", MAX_CANDIDATES + 1)),
        )

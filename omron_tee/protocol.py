"""Typed messages of the exchange. No I/O, no cryptography beyond hashing.

Wire messages (JSON, bytes as base64) travel over HTTP between validator and
miner and between a client and the validator's API. Sealed payloads (the
inner plaintexts) are only ever seen by the requester and the enclave.

The exchange, the same for every workload::

    requester -> miner     AttestRequest(nonce, kem, hotkey)
    miner     -> requester AttestResponse(evidence, keys, offer)     # report_data binds nonce, hotkey, keys
    requester -> miner     InferRequest(key_id, sealed=HPKE(SealedRequest))
    miner     -> requester the sealed answer stream (omron_tee.channel.stream): parts, then the signed receipt

What a workload puts inside ``SealedRequest.input`` and inside each part is
that workload's own JSON (``omron_tee.workloads``).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from omron_tee.attestation.binding import NONCE_LEN, EnclavePublicKeys
from omron_tee.attestation.evidence import Evidence
from omron_tee.channel.stream import REPLY_SECRET_LEN
from omron_tee import untrusted
from omron_tee.errors import ProtocolError

PROTOCOL_VERSION = 2
# How a result is proven: "tee" (attested enclave and signed receipt) or "zk" (also an EZKL proof).
PROOF_SYSTEMS = ("tee", "zk")
STREAM_MEDIA_TYPE = "application/vnd.omron-tee.stream"
REQUEST_MEDIA_TYPE = "application/vnd.omron-tee.request"  # an InferRequest as bytes: no base64 around the ciphertext
_REQUEST_MAGIC = b"OTIR\x01"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise ProtocolError(f"{what} is not valid base64") from None


def unhex_id(value: Any, what: str) -> bytes:
    """A 32-byte identifier (a sha256) written as 64 hex digits, or ``ProtocolError``."""
    if not isinstance(value, str) or len(value) != 64:
        raise ProtocolError(f"{what} must be 64 hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ProtocolError(f"{what} must be 64 hex digits") from None


def field_of(data: Any, key: str, what: str) -> Any:
    """``data[key]`` of a JSON object, or ``ProtocolError`` naming what is missing."""
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


def loads(body: bytes, what: str, *, max_bytes: int = untrusted.MAX_JSON_BYTES, max_items: int = untrusted.MAX_JSON_ITEMS) -> Any:
    """A peer's JSON, bounded in size, depth and element count (``omron_tee.untrusted``)."""
    return untrusted.loads(body, what, max_bytes=max_bytes, max_items=max_items)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# Sealed plaintexts with binary attachments (``untrusted.dumps_attached``): a tensor's bytes travel
# after the JSON, not as base64 inside it.
encode_sealed = untrusted.dumps_attached
encode_sealed_parts = untrusted.dumps_attached_parts  # the same bytes unjoined (channel.hpke.pad joins them with its padding)
decode_sealed = untrusted.loads_attached


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
        kem = field_of(data, "kem", "attest request")
        hotkey = data.get("hotkey", "")
        if not isinstance(kem, str) or not isinstance(hotkey, str) or len(hotkey) > MAX_HOTKEY_LEN:
            raise ProtocolError("attest request kem and hotkey must be short strings")
        return cls(_nonce(field_of(data, "nonce", "attest request"), "attest request nonce"), kem[:64], hotkey)


def keys_to_json(keys: EnclavePublicKeys) -> dict[str, Any]:
    return {"kem": keys.kem, "hpke_public": b64(keys.hpke_public), "signing_public": b64(keys.signing_public)}


def keys_from_json(data: Any) -> EnclavePublicKeys:
    return EnclavePublicKeys(
        kem=str(field_of(data, "kem", "enclave keys")),
        hpke_public=unb64(field_of(data, "hpke_public", "enclave keys"), "enclave keys.hpke_public"),
        signing_public=unb64(field_of(data, "signing_public", "enclave keys"), "enclave keys.signing_public"),
    )


@dataclass(frozen=True)
class AttestResponse:
    evidence: Evidence
    keys: EnclavePublicKeys
    models: tuple[str, ...] = ()
    # Per model, the proof systems this miner offers; a model missing here offers "tee" only.
    proof_systems: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Per zk model, the id of the circuit it proves with, so a validator sees a mismatch before
    # it sends a zk probe (zk.circuits.Circuit.circuit_id; each proof carries it too).
    zk_circuits: dict[str, bytes] = field(default_factory=dict)

    def offers(self, model_id: str, proof_system: str) -> bool:
        return proof_system in self.proof_systems.get(model_id, ("tee",) if model_id in self.models else ())

    def to_json(self) -> dict[str, Any]:
        out = {"evidence": self.evidence.to_json(), "keys": keys_to_json(self.keys), "models": list(self.models)}
        if self.proof_systems:
            out["proof_systems"] = {m: list(p) for m, p in self.proof_systems.items()}
        if self.zk_circuits:
            out["zk_circuits"] = {m: c.hex() for m, c in self.zk_circuits.items()}
        return out

    @classmethod
    def from_json(cls, data: Any) -> "AttestResponse":
        models = data.get("models", []) if isinstance(data, dict) else []
        if not isinstance(models, list):
            raise ProtocolError("attest response models must be a list")
        offered = data.get("proof_systems", {}) if isinstance(data, dict) else {}
        if not isinstance(offered, dict) or not all(isinstance(p, list) for p in offered.values()):
            raise ProtocolError("attest response proof_systems must map model ids to lists")
        circuits = data.get("zk_circuits", {}) if isinstance(data, dict) else {}
        if not isinstance(circuits, dict):
            raise ProtocolError("attest response zk_circuits must map model ids to circuit ids")
        return cls(
            evidence=Evidence.from_json(field_of(data, "evidence", "attest response")),
            keys=keys_from_json(field_of(data, "keys", "attest response")),
            models=tuple(str(m) for m in models),
            proof_systems={str(m): tuple(str(x) for x in p if x in PROOF_SYSTEMS) for m, p in offered.items()},
            zk_circuits={str(m): unhex_id(c, "attest response zk circuit id") for m, c in circuits.items()},
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
        return cls(unb64(field_of(data, "key_id", "infer request"), "infer request key_id"), unb64(field_of(data, "sealed", "infer request"), "infer request sealed"))

    def to_bytes(self) -> bytes:
        """The binary frame (``REQUEST_MEDIA_TYPE``): magic, the key id's length and the key id, then the
        ciphertext as it is, a third smaller than in JSON."""
        return _REQUEST_MAGIC + bytes([len(self.key_id)]) + self.key_id + self.sealed

    @classmethod
    def from_bytes(cls, data: bytes) -> "InferRequest":
        n = len(_REQUEST_MAGIC)
        if len(data) < n + 1 or data[:n] != _REQUEST_MAGIC:
            raise ProtocolError("not an omron-tee request frame")
        k = data[n]
        if not 1 <= k <= 64 or len(data) < n + 1 + k + 1:
            raise ProtocolError("request frame too short for its key id and ciphertext")
        return cls(bytes(data[n + 1:n + 1 + k]), bytes(data[n + 1 + k:]))


MAX_BATCH = 64  # requests in one batch (attestation.binding.MAX_BATCH_NONCES)
BATCH_MEDIA_TYPE = "application/vnd.omron-tee.batch"
_BATCH_MAGIC = b"OTIB\x01"
# The kinds of frame in a batch's answer (each frame ``len || kind || data``, as the stream's frames):
BATCH_ANSWER = b"A"  # one request's sealed answer stream, whole
BATCH_REFUSED = b"R"  # one request refused in the clear before its stream (unknown key, unopenable): error JSON
BATCH_EVIDENCE = b"E"  # the batch's evidence, bound to attestation.binding.batch_nonce of its answered requests
BATCH_NO_EVIDENCE = b"X"  # the TEE would not attest the batch: error JSON


@dataclass(frozen=True)
class InferBatch:
    """Several sealed requests to one enclave in one signed HTTP request (``POST /infer/batch``).

    With ``fresh``, the answer ends with one piece of evidence bound to a hash of every answered
    request's own nonce: a proof of freshness per request from one attestation, all of the batch's
    requests sealed to the same attested key. What the operator sees is what it sees of each
    request alone (key id and ciphertext), and how many there are."""

    requests: tuple[InferRequest, ...]
    fresh: bool = False

    def to_bytes(self) -> bytes:
        """Magic, the fresh flag, the count, then each request's binary frame with its 4-byte length."""
        if not 1 <= len(self.requests) <= MAX_BATCH:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH} requests")
        parts = [_BATCH_MAGIC, bytes([1 if self.fresh else 0, len(self.requests)])]
        for r in self.requests:
            b = r.to_bytes()
            parts += [len(b).to_bytes(4, "big"), b]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> "InferBatch":
        n = len(_BATCH_MAGIC)
        if len(data) < n + 2 or data[:n] != _BATCH_MAGIC:
            raise ProtocolError("not an omron-tee batch frame")
        flag, count = data[n], data[n + 1]
        if flag not in (0, 1) or not 1 <= count <= MAX_BATCH:
            raise ProtocolError(f"a batch frame holds 1 to {MAX_BATCH} requests and a fresh flag of 0 or 1")
        view, at, requests = memoryview(data), n + 2, []
        for _ in range(count):
            if len(data) - at < 4:
                raise ProtocolError("batch frame ends inside a request's length")
            size = int.from_bytes(view[at:at + 4], "big")
            at += 4
            if size > len(data) - at:
                raise ProtocolError("batch frame ends inside a request")
            requests.append(InferRequest.from_bytes(bytes(view[at:at + size])))
            at += size
        if at != len(data):
            raise ProtocolError("bytes after the batch's last request")
        batch = cls(tuple(requests), flag == 1)
        if batch.fresh and len({r.key_id for r in requests}) != 1:
            raise ProtocolError("a fresh batch's requests must all be sealed to one key (its evidence binds one)")
        return batch


# --- sealed payloads (only requester and enclave see these) ------------------


@dataclass(frozen=True)
class ReplyRoute:
    """How a sealed request wants its answer sealed: read first, so that a request malformed in
    any other way still gets a sealed, named refusal (the operator learns nothing)."""

    nonce: bytes
    reply_secret: bytes  # the answer's stream key derives from it (channel.stream)

    @classmethod
    def from_dict(cls, d: Any) -> "ReplyRoute":
        secret = unb64(field_of(d, "reply_secret", "sealed request"), "sealed request reply secret")
        if len(secret) != REPLY_SECRET_LEN:
            raise ProtocolError(f"sealed request reply secret must be {REPLY_SECRET_LEN} bytes")
        return cls(nonce=_nonce(field_of(d, "nonce", "sealed request"), "sealed request nonce"), reply_secret=secret)


MAX_MODEL_ID = 128


@dataclass(frozen=True)
class SealedRequest:
    """The plaintext sealed to the enclave: which model and workload, the private input, where to
    reply, and which of the enclave's evidence the requester verified (the receipt names it)."""

    nonce: bytes
    model_id: str
    workload: str
    input: Any  # the workload's JSON (bounded by omron_tee.untrusted), decoded by that workload
    reply_secret: bytes
    evidence_hash: bytes
    fresh: bool = False  # ask for evidence bound to this request's nonce with the answer (one round trip: docs/ARCHITECTURE.md)

    def encode(self) -> bytes:
        return b"".join(self.encode_parts())

    def encode_parts(self) -> list[bytes]:
        """``encode``'s bytes in parts (``channel.hpke.seal`` joins them with the padding: one copy of a large input)."""
        return encode_sealed_parts({
            "v": PROTOCOL_VERSION,
            "nonce": b64(self.nonce),
            "model": self.model_id,
            "workload": self.workload,
            "input": self.input,
            "reply_secret": b64(self.reply_secret),
            "evidence_hash": b64(self.evidence_hash),
            **({"fresh": True} if self.fresh else {}),
        })

    @classmethod
    def from_dict(cls, d: Any, *, route: ReplyRoute | None = None) -> "SealedRequest":
        """``route``: the request's ``ReplyRoute`` when the caller has read it already (the enclave reads it first)."""
        model = field_of(d, "model", "sealed request")
        workload = field_of(d, "workload", "sealed request")
        if not isinstance(model, str) or not 0 < len(model) <= MAX_MODEL_ID or not isinstance(workload, str) or len(workload) > 32:
            raise ProtocolError("sealed request model and workload must be short strings")
        route = route or ReplyRoute.from_dict(d)
        evidence_hash = unb64(field_of(d, "evidence_hash", "sealed request"), "sealed request evidence hash")
        if len(evidence_hash) != 32:
            raise ProtocolError("sealed request evidence hash must be 32 bytes")
        fresh = d.get("fresh", False) if isinstance(d, dict) else False
        if not isinstance(fresh, bool):
            raise ProtocolError("sealed request 'fresh' must be true or false")
        return cls(route.nonce, model, workload, field_of(d, "input", "sealed request"), route.reply_secret, evidence_hash, fresh)


# --- the validator's third-party API (/v1) ------------------------------------

MAX_CANDIDATES = 8
MAX_DEADLINE_MS = 60_000


def _short_str(value: Any, what: str, limit: int = 128) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ProtocolError(f"{what} must be a string of 1 to {limit} characters")
    return value


@dataclass(frozen=True)
class CandidatesRequest:
    """``POST /v1/attest``: attest up to ``count`` miners serving ``model`` (any workload).

    Each candidate is attested with ``exchange.requester.candidate_nonce(nonce, its hotkey)``."""

    model: str
    nonce: bytes
    kem: str
    count: int = 3

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "nonce": b64(self.nonce), "kem": self.kem, "count": self.count}

    @classmethod
    def from_json(cls, data: Any, *, default_kem: str) -> "CandidatesRequest":
        model = _short_str(field_of(data, "model", "attest request"), "attest request model")
        nonce = _nonce(field_of(data, "nonce", "attest request"), "attest request nonce")
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
        return cls(_short_str(field_of(data, "hotkey", "tried entry"), "hotkey", MAX_HOTKEY_LEN), _short_str(field_of(data, "reason", "tried entry"), "reason", 64))


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
                uid = field_of(c, "uid", "candidate")
                if type(uid) is not int:
                    raise ProtocolError("candidate uid must be an integer")
                candidates.append(Candidate(_short_str(field_of(c, "hotkey", "candidate"), "candidate hotkey", MAX_HOTKEY_LEN), uid,
                                            AttestResponse.from_json(field_of(c, "attest", "candidate"))))
            except ProtocolError as e:
                broken.append((hotkey, e))
        failures = tuple(Tried.from_json(f) for f in _bounded_list(data, "failures", "attest reply", 64))
        return cls(tuple(candidates), failures), broken


@dataclass(frozen=True)
class RelayRequest:
    """``POST /v1/infer``: one sealed copy per candidate, tried in order within the deadline."""

    deadline_ms: int
    attempts: tuple[tuple[str, InferRequest], ...]  # (miner hotkey, sealed request), in order
    model: str = ""
    workload: str = ""  # what the client sealed: decides only whether the relay streams or buffers

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "workload": self.workload, "deadline_ms": self.deadline_ms,
                "attempts": [{"hotkey": h, "request": r.to_json()} for h, r in self.attempts]}

    @classmethod
    def from_json(cls, data: Any, *, default_deadline_ms: int, max_deadline_ms: int = MAX_DEADLINE_MS) -> "RelayRequest":
        deadline_ms = data.get("deadline_ms", default_deadline_ms) if isinstance(data, dict) else default_deadline_ms
        if type(deadline_ms) is not int or not 1 <= deadline_ms <= max_deadline_ms:
            raise ProtocolError(f"deadline_ms must be an integer from 1 to {max_deadline_ms}")
        attempts = field_of(data, "attempts", "infer request")
        if not isinstance(attempts, list) or not 1 <= len(attempts) <= MAX_CANDIDATES:
            raise ProtocolError(f"attempts must be a list of 1 to {MAX_CANDIDATES} sealed requests")
        parsed = tuple((_short_str(field_of(a, "hotkey", "attempt"), "attempt hotkey", MAX_HOTKEY_LEN), InferRequest.from_json(field_of(a, "request", "attempt")))
                       for a in attempts)
        model, workload = data.get("model", ""), data.get("workload", "")
        return cls(deadline_ms, parsed, model[:128] if isinstance(model, str) else "", workload[:32] if isinstance(workload, str) else "")


MAX_TRIED_HEADER = 4096


@dataclass(frozen=True)
class RelayReply:
    """The validator's answer to a ``RelayRequest``, in its headers: which miner answered and every miner
    tried. The body is that miner's sealed answer stream, passed on unread."""

    hotkey: str
    tried: tuple[Tried, ...] = ()

    def to_headers(self) -> dict[str, str]:
        return {"X-Omron-Miner": self.hotkey, "X-Omron-Tried": json.dumps([t.to_json() for t in self.tried], separators=(",", ":"))}

    @classmethod
    def from_headers(cls, headers: Any) -> "RelayReply":
        hotkey = _short_str(headers.get("x-omron-miner", ""), "the answering miner's hotkey", MAX_HOTKEY_LEN)
        raw = headers.get("x-omron-tried", "[]")
        if not isinstance(raw, str) or len(raw) > MAX_TRIED_HEADER:
            raise ProtocolError("the list of miners tried is too long")
        tried = tuple(Tried.from_json(t) for t in _bounded_list({"tried": loads(raw.encode(), "miners tried")}, "tried", "infer reply", MAX_CANDIDATES + 1))
        return cls(hotkey, tried)

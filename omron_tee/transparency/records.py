"""What a validator's audit log holds, how its entries are encoded, and what goes on chain.

Every entry is canonical JSON (sorted keys, no spaces, floats as Python's shortest
round-trip repr), so the same entry always hashes the same and an auditor decodes
exactly the numbers the validator scored with. Four kinds:

``outcome``   one benchmark exchange as scoring saw it (miner, verdict inputs, latency,
              the time it was scored), in the order scored
``weights``   one weight set: its block, the uid of each earning hotkey, top-k and the weights
``receipt``   a receipt a client had recorded (its digest, the miner, the model), or one
              the validator's own OpenAI-compatible path issued
``snapshot``  the score records a restarted validator loaded (an auditor checks they are
              what replaying the log before it gives)

Entries are hostile input to an auditor: ``decode`` bounds them and names what is wrong.
After each weight set the validator commits ``otee-audit/1 <log id> <size> <root>`` on chain:
the RFC 9162 root of its log's first ``size`` entries (``transparency.merkle``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from omron_tee import untrusted
from omron_tee.errors import ProtocolError

TAG = "otee-audit/1"
MAX_ENTRY = 64 * 1024
LOG_VERSION = 1


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()


def receipt_digest(receipt_json: dict[str, Any]) -> bytes:
    """The digest that names a signed receipt in the log: SHA-256 of its canonical JSON."""
    return hashlib.sha256(canonical(receipt_json)).digest()


@dataclass(frozen=True)
class OutcomeEntry:
    t: float  # unix time it was scored (the score book's clock)
    hotkey: str
    uid: int
    ok: bool
    reason: str
    latency_s: float | None
    attestation_accepted: bool | None
    correct: bool | None
    kind: str
    latency_class: str
    type: str = field(default="outcome", init=False)


@dataclass(frozen=True)
class WeightsEntry:
    block: int
    version: int  # the weights rule's version (validator.weights.WEIGHTS_VERSION)
    top_k: int
    uids: dict[str, int]  # hotkey -> uid, for every earning hotkey the set considered
    weights: dict[str, float]  # uid (as text: JSON keys) -> weight, as set on chain
    type: str = field(default="weights", init=False)


@dataclass(frozen=True)
class ReceiptEntry:
    t: float
    digest: str  # hex receipt_digest
    miner_hotkey: str
    model_hash: str  # hex
    type: str = field(default="receipt", init=False)


@dataclass(frozen=True)
class SnapshotEntry:
    t: float
    records: dict[str, dict[str, Any]]  # hotkey -> the score record's fields (validator.scoring)
    type: str = field(default="snapshot", init=False)


Entry = OutcomeEntry | WeightsEntry | ReceiptEntry | SnapshotEntry
_KINDS = {"outcome": OutcomeEntry, "weights": WeightsEntry, "receipt": ReceiptEntry, "snapshot": SnapshotEntry}


def encode(entry: Entry) -> bytes:
    return canonical(asdict(entry))


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
    return type(v) is int


def _str(v: Any) -> bool:
    return isinstance(v, str)


def _opt(check: Any) -> Any:
    return lambda v: v is None or check(v)


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _map(key: Any, value: Any) -> Any:
    return lambda v: isinstance(v, dict) and all(key(k) and value(x) for k, x in v.items())


# What each field of each kind must hold: an auditor computes with these numbers, so a string
# where a latency belongs must be a named refusal here, not a crash in the replay.
_FIELD_TYPES: dict[type, dict[str, Any]] = {
    OutcomeEntry: {"t": _num, "hotkey": _str, "uid": _int, "ok": _bool, "reason": _str, "latency_s": _opt(_num),
                   "attestation_accepted": _opt(_bool), "correct": _opt(_bool), "kind": _str, "latency_class": _str},
    WeightsEntry: {"block": _int, "version": _int, "top_k": _int, "uids": _map(_str, _int), "weights": _map(_str, _num)},
    ReceiptEntry: {"t": _num, "digest": _str, "miner_hotkey": _str, "model_hash": _str},
    SnapshotEntry: {"t": _num, "records": _map(_str, lambda v: isinstance(v, dict))},
}


def decode(data: bytes) -> Entry:
    """The entry ``data`` encodes (ProtocolError naming what is wrong: it comes from a validator)."""
    if not isinstance(data, bytes) or len(data) > MAX_ENTRY:
        raise ProtocolError(f"audit entry larger than {MAX_ENTRY} bytes")
    obj = untrusted.loads(data, "audit entry", max_bytes=MAX_ENTRY)
    if not isinstance(obj, dict) or obj.get("type") not in _KINDS:
        raise ProtocolError("audit entry of no known type")
    cls = _KINDS[obj.pop("type")]
    types = _FIELD_TYPES[cls]
    if set(obj) != set(types):
        raise ProtocolError(f"audit {cls.__name__} has fields {sorted(obj)}, not {sorted(types)}")
    bad = sorted(k for k, check in types.items() if not check(obj[k]))
    if bad:
        raise ProtocolError(f"audit {cls.__name__}: {', '.join(bad)} not of the kind the entry holds")
    entry = cls(**obj)
    if encode(entry) != data:
        raise ProtocolError("audit entry is not in canonical form")  # one entry, one encoding, one hash
    return entry


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


@dataclass(frozen=True)
class AuditCommitment:
    """What a validator commits on chain: its log's name, size and RFC 9162 root at that size.

    The name (16 hex digits, made with the log) tells a log apart from one the validator
    started afresh after losing its store: an auditor audits the newest log and says which
    earlier ones it can no longer check."""

    log_id: str
    size: int
    root: bytes

    def to_commitment(self) -> str:
        return f"{TAG} {self.log_id} {self.size} {_b64(self.root)}"

    @classmethod
    def from_commitment(cls, text: str) -> AuditCommitment | None:
        parts = text.split(" ") if isinstance(text, str) and len(text) <= 128 else []
        if len(parts) != 4 or parts[0] != TAG or not parts[2].isdigit() or len(parts[2]) > 15:
            return None
        if len(parts[1]) != 16 or any(ch not in "0123456789abcdef" for ch in parts[1]):
            return None
        try:
            root = base64.urlsafe_b64decode(parts[3] + "=" * (-len(parts[3]) % 4))
        except (ValueError, binascii.Error):
            return None
        return cls(parts[1], int(parts[2]), root) if len(root) == 32 else None


@dataclass(frozen=True)
class InclusionProof:
    """A client's proof that its receipt entry is in a validator's log at a committed size."""

    validator_hotkey: str
    index: int
    size: int
    root: bytes
    path: tuple[bytes, ...]
    entry: bytes  # the encoded entry (a ReceiptEntry)

    def to_json(self) -> dict[str, Any]:
        return {"omron_tee_inclusion": LOG_VERSION, "validator_hotkey": self.validator_hotkey, "index": self.index, "size": self.size,
                "root": self.root.hex(), "path": [p.hex() for p in self.path], "entry": base64.b64encode(self.entry).decode()}

    @classmethod
    def from_json(cls, data: Any) -> InclusionProof:
        if not isinstance(data, dict) or data.get("omron_tee_inclusion") != LOG_VERSION:
            raise ProtocolError(f"not an omron-tee inclusion proof (version {LOG_VERSION})")
        try:
            path = data["path"]
            if not isinstance(path, list) or len(path) > 64:
                raise ProtocolError("the proof's path is not a list of at most 64 hashes")
            out = cls(str(data["validator_hotkey"])[:64], int(data["index"]), int(data["size"]), bytes.fromhex(data["root"]),
                      tuple(bytes.fromhex(p) for p in path), base64.b64decode(data["entry"], validate=True))
        except (KeyError, ValueError, TypeError, binascii.Error) as e:
            raise ProtocolError(f"malformed inclusion proof ({type(e).__name__}: {e})") from None
        if len(out.root) != 32 or any(len(p) != 32 for p in out.path) or len(out.entry) > MAX_ENTRY:
            raise ProtocolError("malformed inclusion proof: hashes are 32 bytes")
        return out


def check_inclusion(proof: InclusionProof, *, receipt_json: Any, miner_hotkey: str,
                    commitments: Any) -> tuple[list[str], int | None]:
    """Problems with ``proof`` for this receipt (empty: it is in the validator's log at a root the
    validator committed on chain), and the block of that commitment. ``commitments``: the chain's
    (hotkey, block, text) triples, as ``Chain.commitments()`` gives them."""
    from omron_tee.transparency.merkle import leaf_hash, verify_inclusion

    problems: list[str] = []
    try:
        entry = decode(proof.entry)
    except ProtocolError as e:
        return [f"the proof's entry is malformed: {e}"], None
    if not isinstance(entry, ReceiptEntry):
        return ["the proof's entry is not a receipt entry"], None
    try:
        digest = receipt_digest(receipt_json).hex()
    except (TypeError, ValueError):
        return ["the receipt file's receipt is not JSON"], None
    if entry.digest != digest:
        problems.append("the proof is for another receipt (digest differs)")
    if entry.miner_hotkey != miner_hotkey:
        problems.append("the proof's entry names another miner than the receipt file")
    if not verify_inclusion(leaf_hash(proof.entry), proof.index, proof.size, list(proof.path), proof.root):
        problems.append("the inclusion path does not lead from the entry to the proof's root")
    block = None
    for hotkey, at, text in commitments:
        c = AuditCommitment.from_commitment(text) if hotkey == proof.validator_hotkey else None
        if c is not None and c.size == proof.size and c.root == proof.root:
            block = at
    if block is None:
        problems.append(f"validator {proof.validator_hotkey} has no root of size {proof.size} equal to the proof's on chain "
                        "(on subtensor only its latest commitment is kept: ask the validator for a fresh proof)")
    return problems, block

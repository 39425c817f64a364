"""The receipt file: one format for every answer this project issues, checked offline by one function.

A file holds the enclave's signed receipt, the evidence whose key signs it
(with the attestation nonce and the miner hotkey it binds), which workload
and model, and optionally the result itself (then its output hash is
checked too). ``omron-tee receipt verify FILE --policy P`` runs
``verify_receipt_file``; receipts from the SDK, from a relayed stream and
from the validator's OpenAI-compatible path are all this format.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omron_tee.attestation.binding import NONCE_LEN, EnclavePublicKeys
from omron_tee.attestation.evidence import Evidence
from omron_tee.attestation.validate.appraise import appraise
from omron_tee.attestation.validate.policy import Policy
from omron_tee.attestation.validate.releases import ReleaseLog, ReleasePolicy
from omron_tee.attestation.verify.registry import VerifierRegistry
from omron_tee.channel.receipt import Receipt
from omron_tee.errors import OmronTeeError, ProtocolError
from omron_tee.exchange.requester import Answer
from omron_tee.models.registry import ModelRegistry
from omron_tee.protocol import keys_from_json, keys_to_json
from omron_tee.workloads.base import Workloads

RECEIPT_FILE_VERSION = 2


@dataclass(frozen=True)
class ReceiptFile:
    workload: str
    model_id: str  # the file's label: unsigned (the receipt signs model_hash)
    miner_hotkey: str  # bound by the evidence's report data (the enclave attests for this hotkey only)
    receipt: Receipt
    evidence: Evidence
    keys: EnclavePublicKeys
    attest_nonce: bytes
    result: Any = None  # the workload's ``result_json``, when the file keeps the output

    @classmethod
    def of(cls, answer: Answer, workloads: Workloads, *, include_output: bool = True) -> "ReceiptFile":
        result = workloads.get(answer.workload).result_json(answer.result) if include_output else None
        s = answer.session
        return cls(answer.workload, answer.model_id, answer.miner_hotkey, answer.receipt, s.evidence, s.keys, s.attest_nonce, result)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "omron_tee_receipt": RECEIPT_FILE_VERSION,
            "workload": self.workload,
            "model_id": self.model_id,
            "miner_hotkey": self.miner_hotkey,
            "receipt": self.receipt.to_json(),
            "evidence": self.evidence.to_json(),
            "keys": keys_to_json(self.keys),
            "attest_nonce": self.attest_nonce.hex(),
        }
        if self.result is not None:
            out["result"] = self.result
        return out

    @classmethod
    def from_json(cls, data: Any) -> "ReceiptFile":
        if not isinstance(data, dict) or data.get("omron_tee_receipt") != RECEIPT_FILE_VERSION:
            raise ProtocolError(f"not an omron-tee receipt file (version {RECEIPT_FILE_VERSION})")
        try:
            nonce = bytes.fromhex(str(data["attest_nonce"]))
            if len(nonce) != NONCE_LEN:
                raise ProtocolError(f"attest_nonce must be {NONCE_LEN} bytes")
            hotkey = data.get("miner_hotkey", "")
            if not isinstance(hotkey, str) or not hotkey:
                raise ProtocolError("it names no miner_hotkey (the evidence binds one)")
            return cls(str(data["workload"])[:32], str(data["model_id"])[:128], hotkey[:64], Receipt.from_json(data["receipt"]),
                       Evidence.from_json(data["evidence"]), keys_from_json(data["keys"]), nonce, data.get("result"))
        except (KeyError, ValueError, TypeError) as e:
            raise ProtocolError(f"missing or malformed field ({type(e).__name__}: {e})") from None

    def save(self, path: str | Path) -> None:
        """Write the file, readable by its owner only (it may hold the output)."""
        write_private(path, json.dumps(self.to_json(), indent=2))


def write_private(path: str | Path, text: str) -> None:
    """Write ``text`` to a file created with mode 0600 (receipts can hold private outputs)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


@dataclass(frozen=True)
class ReceiptCheck:
    ok: bool
    reasons: tuple[str, ...]
    model_id: str
    miner_hotkey: str
    issued_at: float  # the enclave's clock, which the host controls on some TEEs
    model_hash: bytes = b""
    workload: str = ""


def verify_receipt_file(data: Any, *, policy: Policy, verifiers: VerifierRegistry, workloads: Workloads, models: ModelRegistry | None = None,
                        now: float | None = None, model_hash: bytes | None = None, releases: ReleaseLog | None = None) -> ReceiptCheck:
    """Check a saved receipt offline: the evidence against ``policy`` as of ``now`` (default: the
    present, so collateral and TCB status are today's), the key binding, the receipt's signature,
    the output hash when the result is included, and that the file's model id, if ``models``
    knows it, is the model the receipt signs.

    The evidence's age is not checked: it was fresh when the exchange checked it, and the
    receipt's own time comes from the enclave's clock, which the host sets on SGX, so it
    cannot date the evidence either.

    The policy's ``[releases]`` rule is judged only with ``releases`` (the chain's, read by the
    caller), and then without its timelock: a receipt proves which build answered, and that
    build must have been published, but not that it had earned yet. Without ``releases`` the
    rule is not judged (the file alone cannot say what the chain published).
    """
    try:
        f = ReceiptFile.from_json(data)
        workload = workloads.get(f.workload)
    except OmronTeeError as e:
        return ReceiptCheck(False, (f"malformed receipt file: {e}",), "", "", 0.0)
    issued = f.receipt.issued_at_ms / 1000.0
    reasons: list[str] = []
    rule = dataclasses.replace(policy.releases, min_age_blocks=0) if releases is not None else ReleasePolicy()
    ageless = dataclasses.replace(policy, max_evidence_age_seconds=float("inf"), releases=rule)
    verdict = appraise(f.evidence, nonce=f.attest_nonce, keys=f.keys, hotkey=f.miner_hotkey, policy=ageless, registry=verifiers,
                       now=time.time() if now is None else now, releases=releases)
    reasons.extend(f"evidence: {r}" for r in verdict.reasons)
    try:
        f.receipt.verify(f.keys.signing_public)
    except OmronTeeError as e:
        reasons.append(str(e))
    if verdict.claims is not None and f.receipt.evidence_hash != verdict.claims.evidence_digest:
        reasons.append("receipt names other evidence than the one in the file")
    known = models.get(f.model_id) if models is not None and f.model_id in models else None
    if known is not None and known.sha256 != f.receipt.model_hash:
        reasons.append(f"the file says model {f.model_id!r}, but the receipt signs another model's hash")
    if f.result is not None:
        try:
            if workload.output_hash_of(f.result) != f.receipt.output_hash:
                reasons.append("the result in the file is not the one the receipt covers")
        except OmronTeeError as e:
            reasons.append(f"malformed result in the receipt file: {e}")
    if model_hash is not None and model_hash != f.receipt.model_hash:
        reasons.append("receipt is for another model than the one expected")
    return ReceiptCheck(not reasons, tuple(reasons), f.model_id, f.miner_hotkey, issued, f.receipt.model_hash, f.workload)

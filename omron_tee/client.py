"""The third-party SDK: private, verified inference through a validator.

The client asks the validator for candidate miners attested with *its own*
fresh nonce, verifies each one's evidence *itself* against *its own* policy,
seals its input to each accepted enclave (one copy per candidate, so the
validator can fail over without ever being able to read it), and checks the
receipt of whichever answers. The validator relays bytes it cannot read.

    client = PrivateInferenceClient("http://127.0.0.1:8092", validator_hotkey, wallet, policy=policy, verifiers=verifiers)
    result = client.infer_sync("digits-mlp", x, model_hash=spec.sha256)
    result.output, result.receipt
    result.save("receipt.json")   # offline: omron-tee receipt verify receipt.json --policy policy.toml
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bittensor as bt
import numpy as np

from omron_tee.attestation.binding import NONCE_LEN, EnclavePublicKeys
from omron_tee.attestation.evidence import Evidence
from omron_tee.attestation.validate.policy import Policy
from omron_tee.attestation.verify.registry import VerifierRegistry
from omron_tee.channel import KemSuite, Receipt
from omron_tee.errors import AttestationError, MinerError, OmronTeeError, ProtocolError
from omron_tee.exchange import AttestedSession, candidate_nonce, check_attestation, new_nonce, open_result, seal_request
from omron_tee.protocol import AttestResponse, CandidatesReply, CandidatesRequest, RelayReply, RelayRequest, Tensor, keys_from_json, keys_to_json
from omron_tee.wire.auth import Signer
from omron_tee.wire.client import SignedClient
from omron_tee.reasons import Reason

RECEIPT_FILE_VERSION = 1


@dataclass(frozen=True)
class Rejection:
    hotkey: str
    reason: str
    message: str


@dataclass(frozen=True)
class PrivateResult:
    """A verified answer: the output, the enclave's receipt and the evidence that vouches for its key."""

    model_id: str
    output: np.ndarray
    receipt: Receipt
    miner_hotkey: str
    evidence: Evidence
    keys: EnclavePublicKeys
    attest_nonce: bytes
    rejected: tuple[Rejection, ...] = ()

    def to_json(self, *, include_output: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "omron_tee_receipt": RECEIPT_FILE_VERSION,
            "model_id": self.model_id,
            "miner_hotkey": self.miner_hotkey,
            "receipt": self.receipt.to_json(),
            "evidence": self.evidence.to_json(),
            "keys": keys_to_json(self.keys),
            "attest_nonce": self.attest_nonce.hex(),
        }
        if include_output:
            out["output"] = Tensor.from_array(self.output).to_json()
        return out

    def save(self, path: str | Path, *, include_output: bool = True) -> None:
        """Write the receipt file, readable by its owner only (it holds the output unless ``include_output`` is False)."""
        write_private(path, json.dumps(self.to_json(include_output=include_output), indent=2))


def write_private(path: str | Path, text: str) -> None:
    """Write ``text`` to a file created with mode 0600 (receipts can hold private outputs)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


@dataclass(frozen=True)
class Attested:
    """A candidate miner whose evidence this client verified itself, against its own policy."""

    hotkey: str
    session: AttestedSession
    response: AttestResponse


def attested_candidates(reply: Any, *, nonce: bytes, policy: Policy, verifiers: VerifierRegistry, kem: KemSuite,
                        model_id: str | None = None) -> tuple[list[Attested], list[Rejection]]:
    """Verify every candidate in a validator's ``CandidatesReply``: those that pass, and why the others did not.

    The validator is trusted for nothing here: its reply is parsed as hostile input, each
    candidate's evidence must bind ``candidate_nonce(nonce, hotkey)`` and that miner's hotkey,
    and (``model_id``) the miner must say it serves the model."""
    parsed, broken = CandidatesReply.from_json(reply)
    rejected = [Rejection(hotkey, e.reason, str(e)) for hotkey, e in broken]
    accepted: list[Attested] = []
    for c in parsed.candidates:
        try:
            session = check_attestation(c.attest, nonce=candidate_nonce(nonce, c.hotkey), hotkey=c.hotkey, policy=policy, registry=verifiers, kem=kem)
            if model_id is not None and model_id not in c.attest.models:
                raise ProtocolError(f"miner does not serve {model_id}")
        except (AttestationError, ProtocolError) as e:
            rejected.append(Rejection(c.hotkey, e.reason, str(e)))
            continue
        accepted.append(Attested(c.hotkey, session, c.attest))
    rejected.extend(Rejection(f.hotkey, f.reason, "did not answer the attestation request") for f in parsed.failures)
    return accepted, rejected


class PrivateInferenceClient:
    def __init__(
        self,
        validator_url: str,
        validator_hotkey: str,
        wallet: bt.Wallet,
        *,
        policy: Policy,
        verifiers: VerifierRegistry,
        kem: KemSuite = KemSuite.X25519,
        timeout: float = 10.0,
    ) -> None:
        self.url = validator_url.rstrip("/")
        self.validator_hotkey = validator_hotkey
        self.policy = policy
        self.verifiers = verifiers
        self.kem = kem
        self.timeout = timeout
        self._http = SignedClient(Signer(wallet), max_concurrency=8, timeout=timeout)

    async def models(self) -> dict[str, bytes]:
        """The validator's models and their sha256, as it advertises them."""
        import httpx

        async with httpx.AsyncClient(timeout=self.timeout, trust_env=False) as h:
            resp = await h.get(self.url + "/v1/models")
        return {m["id"]: bytes.fromhex(m["sha256"]) for m in resp.json()["models"]}

    async def infer(self, model_id: str, x: np.ndarray, *, model_hash: bytes, candidates: int = 3, deadline_s: float = 10.0) -> PrivateResult:
        """Run ``x`` through ``model_id`` on an attested enclave; ``model_hash`` pins the model's sha256."""
        nonce = new_nonce()
        raw = await self._post("/v1/attest", CandidatesRequest(model_id, nonce, self.kem.value, candidates).to_json())
        accepted, rejected = attested_candidates(raw, nonce=nonce, policy=self.policy, verifiers=self.verifiers, kem=self.kem)
        if not accepted:
            detail = "; ".join(f"{r.hotkey[:8]}…: {r.reason}" for r in rejected) or "the validator offered none"
            raise AttestationError(f"no miner's enclave passed this client's policy ({detail})", reason=Reason.NO_ATTESTED_MINER)
        attempts, pendings = [], {}
        for a in accepted:
            request, pending = seal_request(a.session, model_id, x)
            attempts.append((a.hotkey, request))
            pendings[a.hotkey] = pending
        raw_reply = await self._post("/v1/infer", RelayRequest(int(deadline_s * 1000), tuple(attempts), model_id).to_json(), timeout=deadline_s + 2.0)
        reply = RelayReply.from_json(raw_reply)
        if reply.hotkey not in pendings:
            raise ProtocolError("the validator answered for a miner this client did not seal to")
        result = open_result(pendings[reply.hotkey], reply.response, model_hash=model_hash)
        chosen = next(a for a in accepted if a.hotkey == reply.hotkey)
        return PrivateResult(model_id, result.output, result.receipt, reply.hotkey, chosen.response.evidence, chosen.response.keys,
                             chosen.session.attest_nonce, tuple(rejected))

    def infer_sync(self, model_id: str, x: np.ndarray, **kwargs: Any) -> PrivateResult:
        async def go() -> PrivateResult:
            try:
                return await self.infer(model_id, x, **kwargs)
            finally:
                await self.aclose()

        return asyncio.run(go())

    async def _post(self, path: str, payload: Any, *, timeout: float | None = None) -> Any:
        try:
            return await self._http.post(self.url, path, payload, receiver=self.validator_hotkey, timeout=timeout)
        except MinerError as e:
            # The validator itself refused or failed: say so, not "miner".
            raise OmronTeeError(f"validator: {e}", reason=e.reason) from None

    async def aclose(self) -> None:
        await self._http.aclose()


@dataclass(frozen=True)
class ReceiptCheck:
    ok: bool
    reasons: tuple[str, ...]
    model_id: str  # the file's label: unsigned (the receipt signs model_hash)
    miner_hotkey: str  # bound by the evidence's report data (the enclave attests for this hotkey only)
    issued_at: float  # the enclave's clock, which the host controls on some TEEs
    model_hash: bytes = b""
    kind: str = "tensor"


def verify_receipt_file(data: Any, *, policy: Policy, verifiers: VerifierRegistry, now: float | None = None, model_hash: bytes | None = None) -> ReceiptCheck:
    """Check a saved receipt offline: the evidence against ``policy`` as of ``now`` (default:
    the present, so collateral and TCB status are today's), the key binding, the receipt's
    signature, the output hash when the output is included, and that the file's model id, if
    it names a shipped model, is the model the receipt signs.

    The evidence's age is not checked: it was fresh when the exchange checked it, and the
    receipt's own time comes from the enclave's clock, which the host sets on SGX, so it
    cannot date the evidence either.
    """
    from omron_tee.attestation.validate.appraise import appraise
    from omron_tee.models import ModelRegistry

    try:
        if not isinstance(data, dict) or data.get("omron_tee_receipt") != RECEIPT_FILE_VERSION:
            raise ProtocolError("not an omron-tee receipt file (version 1)")
        receipt = Receipt.from_json(data["receipt"])
        evidence = Evidence.from_json(data["evidence"])
        keys = keys_from_json(data["keys"])
        nonce = bytes.fromhex(str(data["attest_nonce"]))
        if len(nonce) != NONCE_LEN:
            raise ProtocolError(f"attest_nonce must be {NONCE_LEN} bytes")
        model_id = str(data["model_id"])
        hotkey = str(data.get("miner_hotkey", ""))
        kind = str(data.get("kind", "tensor"))
        output = Tensor.from_json(data["output"]) if data.get("output") is not None else None
    except (KeyError, ValueError, TypeError, OmronTeeError) as e:
        return ReceiptCheck(False, (f"malformed receipt file: {e}",), "", "", 0.0)
    issued = receipt.issued_at_ms / 1000.0
    reasons: list[str] = []
    ageless = dataclasses.replace(policy, max_evidence_age_seconds=float("inf"))
    if not hotkey:
        return ReceiptCheck(False, ("malformed receipt file: it names no miner_hotkey (the evidence binds one)",), model_id, "", issued)
    verdict = appraise(evidence, nonce=nonce, keys=keys, hotkey=hotkey, policy=ageless, registry=verifiers, now=time.time() if now is None else now)
    reasons.extend(f"evidence: {r}" for r in verdict.reasons)
    try:
        receipt.verify(keys.signing_public)
    except OmronTeeError as e:
        reasons.append(str(e))
    if verdict.claims is not None and receipt.evidence_hash != verdict.claims.evidence_digest:
        reasons.append("receipt names other evidence than the one in the file")
    if output is not None and output.digest() != receipt.output_hash:
        reasons.append("the output in the file is not the one the receipt covers")
    shipped = ModelRegistry.builtin()
    if model_id in shipped and shipped.get(model_id).sha256 != receipt.model_hash:
        reasons.append(f"the file says model {model_id!r}, but the receipt signs another model's hash")
    if model_hash is not None and model_hash != receipt.model_hash:
        reasons.append("receipt is for another model than the one expected")
    return ReceiptCheck(not reasons, tuple(reasons), model_id, hotkey, issued, receipt.model_hash, kind)


__all__ = ["Attested", "PrivateInferenceClient", "PrivateResult", "Rejection", "ReceiptCheck", "attested_candidates", "verify_receipt_file"]

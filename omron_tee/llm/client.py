"""The third-party SDK for private completions: the validator relays what it cannot read.

The client asks the validator for LLM miners attested with *its own* fresh
nonce, verifies each one's evidence *itself*, seals its prompt to each
accepted enclave (one copy per candidate, so the validator can fail over),
and reads the sealed stream itself: every chunk authenticated, in order, the
final one present, and the enclave's receipt covering the prompt and the
whole output. The validator sees ciphertext, chunk sizes (padded) and timing.

    client = PrivateCompletionClient(url, validator_hotkey, wallet, policy=policy, verifiers=verifiers)
    async for part in client.stream("gemma3-270m", "The capital of France is", max_tokens=16, model_hash=sha):
        if isinstance(part, TokenChunk): print(part.data.decode(errors="ignore"), end="")
        else: completion = part            # verified: text, tokens, receipt, ttft_s, tokens_per_s
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import bittensor as bt

from omron_tee.attestation.validate.policy import Policy
from omron_tee.attestation.verify.registry import VerifierRegistry
from omron_tee.channel import KemSuite
from omron_tee.client import RECEIPT_FILE_VERSION, Rejection, attested_candidates, verify_receipt_file, write_private
from omron_tee.errors import AttestationError, MinerError, OmronTeeError, ProtocolError
from omron_tee.exchange import AttestedSession, new_nonce
from omron_tee.llm.requester import Completion, StreamReader, TokenChunk, seal_completion
from omron_tee.llm.stream import output_hash
from omron_tee.llm.transport import new_http, open_stream, raw_bytes
from omron_tee.protocol import AttestResponse, CandidatesRequest, RelayRequest, b64, keys_to_json
from omron_tee.wire.auth import Signer
from omron_tee.wire.client import SignedClient
from omron_tee.reasons import Reason


class PrivateCompletionClient:
    def __init__(self, validator_url: str, validator_hotkey: str, wallet: bt.Wallet, *, policy: Policy, verifiers: VerifierRegistry,
                 kem: KemSuite = KemSuite.X25519, timeout: float = 30.0) -> None:
        self.url = validator_url.rstrip("/")
        self.validator_hotkey = validator_hotkey
        self.policy = policy
        self.verifiers = verifiers
        self.kem = kem
        self.timeout = timeout
        self._signer = Signer(wallet)
        self._json = SignedClient(self._signer, max_concurrency=8, timeout=timeout)
        self._http = new_http(timeout)
        self.last_rejected: tuple[Rejection, ...] = ()

    async def _attested(self, model_id: str, candidates: int) -> list[tuple[str, AttestedSession, AttestResponse, bytes]]:
        nonce = new_nonce()
        try:
            raw = await self._json.post(self.url, "/v1/llm/attest", CandidatesRequest(model_id, nonce, self.kem.value, candidates).to_json(),
                                        receiver=self.validator_hotkey)
        except MinerError as e:
            raise OmronTeeError(f"validator: {e}", reason=e.reason) from None
        found, rejected = attested_candidates(raw, nonce=nonce, policy=self.policy, verifiers=self.verifiers, kem=self.kem, model_id=model_id)
        accepted = [(a.hotkey, a.session, a.response, a.session.attest_nonce) for a in found]
        self.last_rejected = tuple(rejected)
        if not accepted:
            detail = "; ".join(f"{r.hotkey[:8]}…: {r.reason}" for r in rejected) or "the validator offered none"
            raise AttestationError(f"no LLM miner's enclave passed this client's policy ({detail})", reason=Reason.NO_ATTESTED_MINER)
        return accepted

    async def stream(self, model_id: str, prompt: str, *, max_tokens: int, model_hash: bytes, candidates: int = 3,
                     deadline_s: float = 30.0) -> AsyncIterator[TokenChunk | Completion]:
        """Verified chunks as they arrive, then the checked ``Completion`` (with ``miner_hotkey`` and ``extra['evidence']``)."""
        accepted = await self._attested(model_id, candidates)
        attempts, pendings = [], {}
        for hotkey, session, _, _ in accepted:
            request, pending = seal_completion(session, model_id, prompt, max_tokens)
            attempts.append((hotkey, request))
            pendings[hotkey] = pending
        t0 = time.perf_counter()
        try:
            resp = await open_stream(self._http, self._signer, self.url, "/v1/llm/infer_stream",
                                     RelayRequest(int(deadline_s * 1000), tuple(attempts), model_id).to_json(),
                                     receiver=self.validator_hotkey, timeout=deadline_s)
        except MinerError as e:
            raise OmronTeeError(f"validator: {e}", reason=e.reason) from None
        hotkey = resp.headers.get("x-omron-miner", "")
        if hotkey not in pendings:
            await resp.aclose()
            raise ProtocolError("the validator answered for a miner this client did not seal to")
        reader = StreamReader(pendings[hotkey], model_hash=model_hash, started=t0)
        async for data in raw_bytes(resp, deadline_s=deadline_s):
            for chunk in reader.feed(data):
                yield chunk
        completion = reader.close()
        completion.miner_hotkey = hotkey
        _, session, attest, nonce = next(a for a in accepted if a[0] == hotkey)
        completion.extra.update(evidence=attest.evidence, keys=attest.keys, attest_nonce=nonce)
        yield completion

    async def complete(self, model_id: str, prompt: str, **kwargs: Any) -> Completion:
        final = None
        async for part in self.stream(model_id, prompt, **kwargs):
            final = part
        assert isinstance(final, Completion)
        return final

    def complete_sync(self, model_id: str, prompt: str, **kwargs: Any) -> Completion:
        async def go() -> Completion:
            try:
                return await self.complete(model_id, prompt, **kwargs)
            finally:
                await self.aclose()

        return asyncio.run(go())

    async def aclose(self) -> None:
        await self._json.aclose()
        await self._http.aclose()


def completion_receipt_json(c: Completion, *, include_output: bool = True) -> dict[str, Any]:
    """A receipt file (``omron-tee receipt verify`` checks its evidence and signature; ``verify_completion_file`` also the text)."""
    out: dict[str, Any] = {
        "omron_tee_receipt": RECEIPT_FILE_VERSION,
        "model_id": c.model_id,
        "miner_hotkey": c.miner_hotkey,
        "receipt": c.receipt.to_json(),
        "evidence": c.extra["evidence"].to_json(),
        "keys": keys_to_json(c.extra["keys"]),
        "attest_nonce": c.extra["attest_nonce"].hex(),
        "kind": "llm-completion",
    }
    if include_output:
        out["completion"] = {"tokens": c.tokens, "text_b64": b64(c.raw), "finish_reason": c.finish_reason}
    return out


def save_completion(c: Completion, path: str | Path, *, include_output: bool = True) -> None:
    write_private(path, json.dumps(completion_receipt_json(c, include_output=include_output), indent=2))


def verify_completion_file(data: Any, *, policy: Policy, verifiers: VerifierRegistry, now: float | None = None):
    """``verify_receipt_file`` plus: the completion in the file is the one the receipt's output hash covers."""
    import base64

    check = verify_receipt_file(data, policy=policy, verifiers=verifiers, now=now)
    if check.model_id and check.kind != "llm-completion":
        return dataclasses.replace(check, ok=False, reasons=(*check.reasons, "not a completion receipt: check it with `omron-tee receipt verify`"))
    comp = data.get("completion") if isinstance(data, dict) else None
    if comp is None:
        return check
    reasons = list(check.reasons)
    try:
        tokens = [int(t) for t in comp["tokens"]]
        text = base64.b64decode(comp["text_b64"], validate=True)
        if output_hash(tokens, text) != bytes.fromhex(str(data["receipt"]["output_hash"])):
            reasons.append("the completion in the file is not the one the receipt covers")
    except (KeyError, TypeError, ValueError):
        reasons.append("malformed completion in the receipt file")
    return dataclasses.replace(check, ok=not reasons, reasons=tuple(reasons))

"""The third-party SDK: private, verified inference through a validator, for every workload.

The client asks the validator for candidate miners attested with *its own*
fresh nonce, verifies each one's evidence *itself* against *its own* policy,
seals its input to each accepted enclave (one copy per candidate, so the
validator can fail over without ever being able to read it), and reads the
answer's sealed stream itself: every part authenticated and in order, and the
receipt covering its request and the whole output. The validator relays
bytes it cannot read.

    client = PrivateClient("http://127.0.0.1:8092", validator_hotkey, wallet, policy=policy, verifiers=verifiers)
    answer = await client.infer("digits-mlp", x)              # answer.result.output, answer.receipt
    answer = await client.complete("gemma3-270m", "The capital of France is", max_tokens=16)
    async for part in client.stream("gemma3-270m", prompt, max_tokens=16): ...   # TokenChunk..., then the Answer
    client.receipt_file(answer).save("receipt.json")          # offline: omron-tee receipt verify receipt.json --policy policy.toml
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import bittensor as bt
import numpy as np

from omron_tee.attestation.validate.policy import Policy
from omron_tee.attestation.validate.releases import ReleaseLog
from omron_tee.attestation.verify.registry import VerifierRegistry
from omron_tee.channel.hpke import KemSuite
from omron_tee.errors import AttestationError, MinerError, OmronTeeError, ProtocolError
from omron_tee.exchange.receipt_file import ReceiptFile
from omron_tee.exchange.requester import Answer, AttestedSession, candidate_nonce, check_attestation, new_nonce, seal_request
from omron_tee.models.registry import ModelRegistry
from omron_tee.protocol import AttestResponse, CandidatesReply, CandidatesRequest, RelayReply, RelayRequest
from omron_tee.reasons import Reason
from omron_tee.transparency.records import InclusionProof
from omron_tee.wire.auth import Signer
from omron_tee.wire.client import SignedClient
from omron_tee.workloads import default_workloads
from omron_tee.workloads.base import Workloads
from omron_tee.workloads.llm import Prompt


@dataclass(frozen=True)
class Rejection:
    hotkey: str
    reason: str
    message: str


@dataclass(frozen=True)
class Attested:
    """A candidate miner whose evidence this client verified itself, against its own policy."""

    hotkey: str
    session: AttestedSession
    response: AttestResponse


def attested_candidates(reply: Any, *, nonce: bytes, policy: Policy, verifiers: VerifierRegistry, kem: KemSuite,
                        model_id: str | None = None, releases: ReleaseLog | None = None) -> tuple[list[Attested], list[Rejection]]:
    """Verify every candidate in a validator's ``CandidatesReply``: those that pass, and why the others did not.

    The validator is trusted for nothing here: its reply is parsed as hostile input, each
    candidate's evidence must bind ``candidate_nonce(nonce, hotkey)`` and that miner's hotkey,
    and (``model_id``) the miner must say it serves the model."""
    parsed, broken = CandidatesReply.from_json(reply)
    rejected = [Rejection(hotkey, e.reason, str(e)) for hotkey, e in broken]
    accepted: list[Attested] = []
    for c in parsed.candidates:
        try:
            session = check_attestation(c.attest, nonce=candidate_nonce(nonce, c.hotkey), hotkey=c.hotkey, policy=policy, registry=verifiers, kem=kem,
                                        releases=releases)
            if model_id is not None and model_id not in c.attest.models:
                raise ProtocolError(f"miner does not serve {model_id}")
        except (AttestationError, ProtocolError) as e:
            rejected.append(Rejection(c.hotkey, e.reason, str(e)))
            continue
        accepted.append(Attested(c.hotkey, session, c.attest))
    rejected.extend(Rejection(f.hotkey, f.reason, "did not answer the attestation request") for f in parsed.failures)
    return accepted, rejected


class PrivateClient:
    def __init__(
        self,
        validator_url: str,
        validator_hotkey: str,
        wallet: bt.Wallet,
        *,
        policy: Policy,
        verifiers: VerifierRegistry,
        models: ModelRegistry | None = None,
        workloads: Workloads | None = None,
        kem: KemSuite = KemSuite.X25519,
        timeout: float = 30.0,
        releases: Callable[[], ReleaseLog | None] | None = None,
    ) -> None:
        """``releases``: where a policy with ``[releases]`` gets the chain's published builds (the
        caller reads the chain: e.g. ``validator.releases.ReleaseWatcher(chain, policy.releases).refresh``)."""
        self.url = validator_url.rstrip("/")
        self.validator_hotkey = validator_hotkey
        self.policy = policy
        self.verifiers = verifiers
        # The models this client pins (by sha256): the receipt must sign exactly these.
        self.models = models if models is not None else ModelRegistry.builtin()
        self.workloads = workloads or default_workloads()
        self.kem = kem
        self.timeout = timeout
        self._http = SignedClient(Signer(wallet), max_concurrency=8, timeout=timeout)
        self.last_rejected: tuple[Rejection, ...] = ()
        self.releases = releases or (lambda: None)

    async def infer(self, model_id: str, x: np.ndarray, *, workload: str | None = None, candidates: int = 3, deadline_s: float = 10.0) -> Answer:
        """Run ``x`` through ``model_id`` on an attested enclave (``workload="zk"`` asks for a proof too)."""
        final = None
        async for part in self._exchange(model_id, x, workload=workload, candidates=candidates, deadline_s=deadline_s):
            final = part
        assert isinstance(final, Answer)
        return final

    async def stream(self, model_id: str, prompt: str, *, max_tokens: int, candidates: int = 3, deadline_s: float = 30.0) -> AsyncIterator[Any]:
        """A private completion: verified ``TokenChunk`` parts as they arrive, then the checked ``Answer``."""
        async for part in self._exchange(model_id, Prompt(prompt, max_tokens), workload=None, candidates=candidates, deadline_s=deadline_s):
            yield part

    async def complete(self, model_id: str, prompt: str, *, max_tokens: int, **kwargs: Any) -> Answer:
        final = None
        async for part in self.stream(model_id, prompt, max_tokens=max_tokens, **kwargs):
            final = part
        assert isinstance(final, Answer)
        return final

    def receipt_file(self, answer: Answer, *, include_output: bool = True) -> ReceiptFile:
        """The receipt file of an answer this client received (``omron-tee receipt verify`` checks it offline)."""
        return ReceiptFile.of(answer, self.workloads, include_output=include_output)

    async def _exchange(self, model_id: str, value: Any, *, workload: str | None, candidates: int, deadline_s: float) -> AsyncIterator[Any]:
        spec = self.models.get(model_id)
        w = self.workloads.get(workload) if workload else self.workloads.default_for(spec)
        nonce = new_nonce()
        raw = await self._post("/v1/attest", CandidatesRequest(model_id, nonce, self.kem.value, candidates).to_json())
        accepted, rejected = attested_candidates(raw, nonce=nonce, policy=self.policy, verifiers=self.verifiers, kem=self.kem, model_id=model_id,
                                                  releases=self.releases())
        self.last_rejected = tuple(rejected)
        if not accepted:
            detail = "; ".join(f"{r.hotkey[:8]}…: {r.reason}" for r in rejected) or "the validator offered none"
            raise AttestationError(f"no miner's enclave passed this client's policy ({detail})", reason=Reason.NO_ATTESTED_MINER)
        attempts, readers = [], {}
        for a in accepted:
            request, reader = seal_request(a.session, w, spec, value)
            attempts.append((a.hotkey, request))
            readers[a.hotkey] = reader
        relayed = RelayRequest(int(deadline_s * 1000), tuple(attempts), model_id, w.name)
        try:
            async with self._http.stream(self.url, "/v1/infer", relayed.to_json(), receiver=self.validator_hotkey, timeout=deadline_s + 2.0,
                                         max_bytes=w.max_stream) as body:
                reply = RelayReply.from_headers(body.headers)
                reader = readers.get(reply.hotkey)
                if reader is None:
                    raise ProtocolError("the validator answered for a miner this client did not seal to")
                reader.restart_clock()
                if not w.streamed:
                    reader.feed(await body.read())
                else:
                    async for data in body:
                        for part in reader.feed(data):
                            yield part
        except MinerError as e:
            # The validator itself refused or failed (or the stream it relayed broke): say so, not "miner".
            raise OmronTeeError(f"validator: {e}", reason=e.reason) from None
        answer = reader.close()
        answer.miner_hotkey = reply.hotkey
        yield answer

    def infer_sync(self, model_id: str, x: np.ndarray, **kwargs: Any) -> Answer:
        return self._sync(self.infer(model_id, x, **kwargs))

    def complete_sync(self, model_id: str, prompt: str, **kwargs: Any) -> Answer:
        return self._sync(self.complete(model_id, prompt, **kwargs))

    def _sync(self, coro: Any) -> Answer:
        async def go() -> Answer:
            try:
                return await coro
            finally:
                await self.aclose()

        return asyncio.run(go())

    async def record_receipt(self, receipt: ReceiptFile) -> tuple[int, bytes]:
        """Have the validator log this receipt (never its output): (its entry's index, the receipt's digest).
        Once the validator's next weight set commits its log, ``inclusion_proof(index)`` proves it is there."""
        data = receipt.to_json()
        data.pop("result", None)
        reply = await self._post("/v1/receipts", data)
        try:
            return int(reply["index"]), bytes.fromhex(reply["digest"])
        except (KeyError, TypeError, ValueError):
            raise OmronTeeError("validator: malformed reply to /v1/receipts", reason=Reason.MALFORMED_REPLY) from None

    async def inclusion_proof(self, index: int) -> InclusionProof:
        """The validator's RFC 9162 proof that entry ``index`` is in its log at its last committed size
        (``omron-tee receipt verify --proof`` checks it against the root on chain)."""
        try:
            raw = await self._http.get(self.url, f"/v1/receipts/{int(index)}/proof")
        except MinerError as e:
            raise OmronTeeError(f"validator: {e}", reason=e.reason) from None
        return InclusionProof.from_json(raw)

    async def _post(self, path: str, payload: Any) -> Any:
        try:
            return await self._http.post(self.url, path, payload, receiver=self.validator_hotkey)
        except MinerError as e:
            raise OmronTeeError(f"validator: {e}", reason=e.reason) from None

    async def aclose(self) -> None:
        await self._http.aclose()


__all__ = ["Attested", "PrivateClient", "Rejection", "attested_candidates"]

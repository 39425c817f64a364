"""The validator as an LLM requester: find LLM miners, attest them, stream private completions, score them.

``LlmProber.probe(neuron)`` is one benchmark exchange with an LLM miner:
fresh nonce -> evidence checked against the policy -> a benchmark prompt
sealed to the attested key -> the sealed stream opened chunk by chunk
(order, completeness, receipt) -> the tokens compared with the validator's
own reference completion (``omron_tee.llm.scoring``). Time to first token and
tokens per second feed the latency the score uses. Miners that do not serve
the model are skipped (``None``), not scored down.

The same machinery serves the validator's OpenAI-compatible endpoint, where
the validator itself is the requester (and so reads the prompt).
"""

from __future__ import annotations

import asyncio
import random
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from omron_tee.chain.base import Neuron
from omron_tee.errors import AttestationError, ModelError, OmronTeeError
from omron_tee.exchange import AttestedSession, new_nonce
from omron_tee.llm.model import LlamaRuntime, llm_ids, load_llm
from omron_tee.llm.prompts import BENCH_PROMPTS
from omron_tee.llm.requester import Completion, PendingCompletion, TokenChunk, seal_completion
from omron_tee.llm.scoring import judge
from omron_tee.llm.transport import new_http, open_stream, read_completion
from omron_tee.protocol import AttestRequest, AttestResponse
from omron_tee.validator.forward import MAX_ATTEST_REPLY_BYTES, ProbeResult
from omron_tee.validator.scoring import Outcome
from omron_tee.reasons import Reason

BENCH_MAX_TOKENS = 16


@dataclass
class LlmState:
    """Per-validator LLM state shared by the API and the prober: who serves which model, one HTTP pool."""

    validator: Any
    timeout: float = 30.0
    served: dict[str, tuple[str, ...]] = field(default_factory=dict)  # hotkey -> models, from its latest evidence
    _http: Any = None

    @property
    def http(self):
        if self._http is None:
            self._http = new_http(self.timeout)
        return self._http

    @property
    def prober(self):
        return self.validator.prober

    def llm_models(self) -> list[str]:
        return llm_ids(self.prober.models)

    def candidates(self, model_id: str, count: int) -> list[Neuron]:
        """Miners known to serve ``model_id`` first (best score first), then the not-yet-known ones."""
        scores = self.validator.scores.scores()
        miners = sorted(self.validator.miners(), key=lambda n: scores.get(n.hotkey, 0.0), reverse=True)
        known = [n for n in miners if model_id in self.served.get(n.hotkey, ())]
        unknown = [n for n in miners if n.hotkey not in self.served]
        return (known + unknown)[:count]

    async def attest(self, neuron: Neuron, nonce: bytes) -> AttestResponse:
        assert neuron.endpoint is not None
        raw = await self.prober.client.post(neuron.endpoint.url, "/attest", AttestRequest(nonce, self.prober.kem.value, neuron.hotkey).to_json(),
                                            receiver=neuron.hotkey, timeout=self.prober.timeout, max_bytes=MAX_ATTEST_REPLY_BYTES)
        resp = AttestResponse.from_json(raw)
        self.served[neuron.hotkey] = resp.models
        return resp

    async def session(self, neuron: Neuron, model_id: str) -> AttestedSession:
        """A freshly attested session with ``neuron`` for ``model_id`` (``AttestationError``/``MinerError``/``ModelError``)."""
        nonce = new_nonce()
        resp = await self.attest(neuron, nonce)
        if model_id not in resp.models:  # checked first: a miner is not scored on a model it does not offer
            raise ModelError(f"miner does not serve {model_id!r}", reason=Reason.MODEL_NOT_SERVED)
        return self.prober.verify_attestation(neuron, resp, nonce)

    async def complete(self, neuron: Neuron, session: AttestedSession, model_id: str, prompt: str, max_tokens: int, *,
                       on_chunk=None, timeout: float | None = None) -> Completion:
        assert neuron.endpoint is not None
        request, pending = seal_completion(session, model_id, prompt, max_tokens)
        t0 = time.perf_counter()
        resp = await open_stream(self.http, self.prober.client.signer, neuron.endpoint.url, "/infer_stream", request.to_json(),
                                 receiver=neuron.hotkey, timeout=timeout or self.timeout)
        c = await read_completion(resp, pending, model_hash=self.prober.models.get(model_id).sha256, started=t0, on_chunk=on_chunk)
        c.miner_hotkey = neuron.hotkey
        return c

    async def start(self, neuron: Neuron, session: AttestedSession, model_id: str, prompt: str, max_tokens: int,
                    timeout: float | None = None) -> tuple[Any, PendingCompletion, float]:
        """Send the sealed prompt; the open response (stream not read yet), what is needed to read it, and the start time."""
        assert neuron.endpoint is not None
        request, pending = seal_completion(session, model_id, prompt, max_tokens)
        t0 = time.perf_counter()
        resp = await open_stream(self.http, self.prober.client.signer, neuron.endpoint.url, "/infer_stream", request.to_json(),
                                 receiver=neuron.hotkey, timeout=timeout or self.timeout)
        return resp, pending, t0

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


_STATES: "weakref.WeakKeyDictionary[Any, LlmState]" = weakref.WeakKeyDictionary()


def llm_state(validator: Any) -> LlmState:
    state = _STATES.get(validator)
    if state is None:
        state = _STATES[validator] = LlmState(validator)
    return state


class LlmProber:
    def __init__(self, validator: Any, *, model_id: str | None = None, reference: LlamaRuntime | None = None,
                 prompts: tuple[str, ...] = BENCH_PROMPTS, max_tokens: int = BENCH_MAX_TOKENS, seed: int | None = None) -> None:
        self.state = llm_state(validator)
        ids = self.state.llm_models()
        if model_id is None and not ids:
            raise ModelError("the validator's model registry has no LLM to benchmark")
        self.model_id = model_id or ids[0]
        self.spec = self.state.prober.models.get(self.model_id)
        self._reference = reference
        self.prompts = prompts
        self.max_tokens = max_tokens
        self.rng = random.Random(seed)
        self._cache: dict[tuple[str, int], list[int]] = {}

    @property
    def reference_runtime(self) -> LlamaRuntime:
        if self._reference is None:
            self._reference = load_llm(self.spec)
        return self._reference

    async def reference(self, prompt: str, max_tokens: int) -> list[int]:
        """The validator's own completion (computed once per prompt: greedy decoding is deterministic)."""
        key = (prompt, max_tokens)
        if key not in self._cache:
            toks, _ = await asyncio.to_thread(self.reference_runtime.complete, prompt, max_tokens)
            self._cache[key] = toks
        return self._cache[key]

    async def probe(self, neuron: Neuron, prompt: str | None = None) -> ProbeResult | None:
        """Score one LLM exchange with ``neuron``; ``None`` if it does not serve the model."""
        mid = self.model_id
        if neuron.endpoint is None:
            return None
        if neuron.hotkey in self.state.served and mid not in self.state.served[neuron.hotkey]:
            return None
        prompt = prompt or self.rng.choice(self.prompts)
        expected = await self.reference(prompt, self.max_tokens)  # before timing the miner: no CPU contention
        try:
            session = await self.state.session(neuron, mid)
        except ModelError:
            return None
        except OmronTeeError as e:
            if mid not in self.state.served.get(neuron.hotkey, ()):
                return None  # not known to serve the model: its other failures are the tensor probes' to score
            if isinstance(e, AttestationError):
                return _fail(neuron, mid, e.reason, f"attestation rejected: {e}", False)
            return _fail(neuron, mid, e.reason, str(e), None)
        deadline = self.state.timeout + 1.0
        try:
            # A deadline for the whole stream: a miner that trickles tokens cannot hold the round.
            async with asyncio.timeout(deadline):
                c = await self.state.complete(neuron, session, mid, prompt, self.max_tokens)
        except TimeoutError:
            return _fail(neuron, mid, Reason.TIMEOUT, f"the completion took longer than its {deadline:.1f} s deadline", True)
        except OmronTeeError as e:
            return _fail(neuron, mid, e.reason, str(e), True)
        except Exception as e:  # noqa: BLE001 - our bug met by a miner's bytes: the tensor probes' rule (Prober.validator_fault)
            return self.state.prober.validator_fault(neuron, mid, e, workload="llm")
        self.state.prober.no_fault(neuron.hotkey)
        j = judge(expected, c.tokens, self.max_tokens)
        speed = _speed(c)
        if not j.correct:
            return _fail(neuron, mid, Reason.WRONG_OUTPUT, f"completion differs from the validator's reference: {j.reason}", True, correct=False)
        latency = token_latency(c)
        outcome = Outcome(neuron.hotkey, neuron.uid, True, Reason.OK, latency, True, True, workload="llm")
        return ProbeResult(outcome, mid, f"{len(c.tokens)} tokens match the reference ({j.common_prefix}/{j.reference_len}); {speed}")


def token_latency(c: Completion) -> float:
    """The latency scoring uses for an LLM answer: time to first token plus the mean time per further token."""
    ttft = c.ttft_s if c.ttft_s is not None else c.elapsed_s
    per = (c.elapsed_s - ttft) / (len(c.tokens) - 1) if len(c.tokens) > 1 else 0.0
    return ttft + per


def _speed(c: Completion) -> str:
    tps = c.tokens_per_s
    ttft = f"ttft {c.ttft_s * 1000:.0f} ms" if c.ttft_s is not None else "no tokens"
    return f"{ttft}, {tps:.1f} tok/s" if tps else ttft


def _fail(neuron: Neuron, model_id: str, reason: str, message: str, attested: bool | None, *, correct: bool | None = None) -> ProbeResult:
    return ProbeResult(Outcome(neuron.hotkey, neuron.uid, False, reason, None, attested, correct, workload="llm"), model_id, message)


__all__ = ["LlmProber", "LlmState", "llm_state", "token_latency", "TokenChunk"]

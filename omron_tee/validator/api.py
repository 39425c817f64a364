"""The validator's API for third parties: attest miners for a client, relay sealed requests.

The client verifies the evidence itself and seals its input to the enclave,
so this API only relays bytes it cannot read. Routes (btauth/1-signed for the
validator's hotkey, rate-limited per client hotkey):

``GET  /v1/models``  the models on offer, with their hashes (unsigned)
``POST /v1/attest``  {model, nonce, kem, count} -> {candidates: [{hotkey, uid, attest}], failures}
                     (each candidate is attested with ``exchange.candidate_nonce(nonce, hotkey)``)
``POST /v1/infer``   {model, deadline_ms, attempts: [{hotkey, request}]} -> {hotkey, response, tried}

LLM routes (``/v1/llm/attest``, ``/v1/llm/infer_stream``, the OpenAI-compatible
``/v1/completions``) come from ``validator/llm_api.py``; see docs/LLM.md for
which of them lets the validator read the prompt.

A relayed request whose miner fails is retried with the next attempt (the
client sealed one copy per candidate) while the deadline allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from fastapi import FastAPI

from omron_tee.channel import KemSuite
from omron_tee.errors import AuthError, ConfigError, MinerError, OmronTeeError, ProtocolError, RateLimited
from omron_tee.exchange import candidate_nonce
from omron_tee.protocol import AttestRequest, AttestResponse, Candidate, CandidatesReply, CandidatesRequest, InferResponse, RelayReply, RelayRequest, Tried
from omron_tee.validator.core import Validator
from omron_tee.validator.forward import MAX_ATTEST_REPLY_BYTES
from omron_tee.validator.llm_api import add_llm_api, openai_models
from omron_tee.validator.relay import REQUEST_FAULTS, all_failed, record_failure, record_success, relay_targets
from omron_tee.validator.scoring import Outcome
from omron_tee.wire.auth import Admission, RequestVerifier
from omron_tee.wire.client import SignedClient
from omron_tee.wire.server import json_response, server_config, signed_route
from omron_tee.reasons import Reason

log = logging.getLogger("omron_tee.validator.api")



class RateLimiter:
    """Token buckets by key, each with its own rate and burst (the defaults unless given)."""

    MAX_TRACKED = 10_000

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, *, rate: float | None = None, burst: float | None = None, what: str = "this hotkey") -> None:
        rate = self.rate if rate is None else rate
        burst = self.burst if burst is None else burst
        now = time.monotonic()
        with self._lock:
            if len(self._buckets) >= self.MAX_TRACKED and key not in self._buckets:
                # Forget keys whose bucket has refilled: they are as good as new, so
                # fresh hotkeys cannot grow this table without bound.
                full = (self.burst - 1.0) / self.rate
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full}
            tokens, at = self._buckets.get(key, (burst, now))
            tokens = min(burst, tokens + (now - at) * rate)
            if tokens < 1.0:
                raise RateLimited(f"too many requests from {what}: at most {rate:g}/s (burst {burst:g})")
            self._buckets[key] = (tokens - 1.0, now)


ADMIT_MODES = ("anyone", "registered", "staked")


class ApiQuota:
    """Who may call the API, and how often.

    Every caller spends from its own bucket and from one global bucket, so
    hotkeys made by the thousand share one budget instead of each getting a
    fresh burst. ``admit`` narrows who may call at all: ``registered`` hotkeys
    of the subnet, or ``staked`` ones, whose rate is then their share of the
    subnet's stake times the global rate (never below ``rate_floor``, never
    above the global rate): stake is the natural quota of a validator's API.
    """

    def __init__(self, *, rate: float = 20.0, burst: float = 40.0, global_rate: float = 200.0, global_burst: float = 400.0,
                 admit: str = "anyone", stake_of: Callable[[str], float | None] | None = None, total_stake: Callable[[], float] | None = None,
                 rate_floor: float = 1.0) -> None:
        if admit not in ADMIT_MODES:
            raise ConfigError(f"API admission must be one of {', '.join(ADMIT_MODES)}, not {admit!r}")
        if admit != "anyone" and (stake_of is None or total_stake is None):
            raise ConfigError("registered or staked admission needs the metagraph's stakes")
        self.admit = admit
        self.callers = RateLimiter(rate, burst)
        self.all = RateLimiter(global_rate, global_burst)
        self.global_rate, self.rate_floor = global_rate, rate_floor
        self._stake_of, self._total = stake_of, total_stake

    def take(self, caller: str) -> None:
        rate = burst = None
        if self.admit != "anyone" and not caller.startswith("key:"):  # API keys are admitted by their operator
            stake = self._stake_of(caller)  # type: ignore[misc]
            if stake is None:
                raise AuthError("this API admits registered hotkeys of the subnet only", reason=Reason.CALLER_NOT_REGISTERED)
            if self.admit == "staked":
                if stake <= 0:
                    raise AuthError("this API admits hotkeys with stake only", reason=Reason.CALLER_NOT_STAKED)
                total = max(self._total(), stake)  # type: ignore[misc]
                rate = min(self.global_rate, max(self.rate_floor, self.global_rate * stake / total))
                burst = 2.0 * rate
        self.callers.take(caller, rate=rate, burst=burst)
        self.all.take("*", what="all callers together (the API is busy)")


def metagraph_quota(validator: Validator, **kw: Any) -> ApiQuota:
    """An ``ApiQuota`` reading stakes from the validator's metagraph (re-read when stale)."""

    def stakes() -> dict[str, float]:
        mg = validator.metagraph or validator.sync()
        return {n.hotkey: n.stake for n in mg.neurons}

    return ApiQuota(stake_of=lambda h: stakes().get(h), total_stake=lambda: sum(stakes().values()), **kw)


def build_api(validator: Validator, verifier: RequestVerifier, *, quota: ApiQuota | None = None) -> FastAPI:
    api = FastAPI(title="omron-tee validator API", docs_url=None, redoc_url=None, openapi_url=None)
    limiter = quota or ApiQuota()
    # Relayed traffic gets connections of its own, so a flood of it cannot queue the
    # validator's benchmark probes and skew the latencies that scores compare.
    relay = SignedClient(validator.prober.client.signer, timeout=validator.prober.timeout)
    prober = validator.prober

    def candidates_for(count: int) -> list:
        ranked = sorted(validator.miners(), key=lambda n: validator.scores.scores().get(n.hotkey, 0.0), reverse=True)
        return ranked[:count]

    async def attest(caller: str, body: Any) -> Any:
        limiter.take(caller)
        ask = CandidatesRequest.from_json(body, default_kem=prober.kem.value)
        prober.models.get(ask.model)
        kem = KemSuite.parse(ask.kem).value  # refuse a bad suite here, not at every miner
        targets = candidates_for(ask.count)

        async def one(n) -> Candidate:
            assert n.endpoint is not None
            request = AttestRequest(candidate_nonce(ask.nonce, n.hotkey), kem, n.hotkey)
            raw = await relay.post(n.endpoint.url, "/attest", request.to_json(), receiver=n.hotkey, timeout=prober.timeout, max_bytes=MAX_ATTEST_REPLY_BYTES)
            return Candidate(n.hotkey, n.uid, AttestResponse.from_json(raw))  # parsed, not verified: the client verifies it

        results = await asyncio.gather(*(one(n) for n in targets), return_exceptions=True)
        candidates, failures = [], []
        for n, r in zip(targets, results):
            if isinstance(r, BaseException):
                reason = getattr(r, "reason", Reason.ERROR)
                failures.append(Tried(n.hotkey, reason))
                if reason not in REQUEST_FAULTS:
                    validator.record(Outcome(n.hotkey, n.uid, False, reason, None, None, None, kind="relay"))
            else:
                candidates.append(r)
        return CandidatesReply(tuple(candidates), tuple(failures)).to_json()

    async def infer(caller: str, body: Any) -> Any:
        limiter.take(caller)
        request = RelayRequest.from_json(body, default_deadline_ms=10_000)
        tried: list[Tried] = []
        for hotkey, sealed, neuron, left in relay_targets(validator, request, tried):
            t0 = time.perf_counter()
            try:
                raw = await relay.post(neuron.endpoint.url, "/infer", sealed.to_json(), receiver=hotkey, timeout=min(left, prober.timeout))
                response = InferResponse.from_json(raw)
            except (MinerError, ProtocolError) as e:
                record_failure(validator, neuron, e.reason, tried)
                log.info("relay to uid %d failed (%s); trying the next miner if any", neuron.uid, e.reason)
                continue
            record_success(validator, neuron, t0, tried)
            return RelayReply(hotkey, response, tuple(tried)).to_json()
        raise all_failed(tried)

    api.add_api_route("/v1/attest", signed_route(verifier, attest, log), methods=["POST"])
    api.add_api_route("/v1/infer", signed_route(verifier, infer, log), methods=["POST"])
    add_llm_api(api, validator, verifier, limiter, relay=relay)  # LLM: private streamed relay, and OpenAI-compatible /v1/completions (docs/LLM.md)

    @api.get("/v1/models")
    async def models() -> Any:
        return json_response({
            "validator": verifier.self_hotkey,
            "models": [{"id": s.model_id, "sha256": s.sha256.hex(), "input_shape": list(s.input_shape), "input_dtype": s.input_dtype} for s in prober.models.specs() if s.model_id in prober.model_ids],
            **openai_models(validator),  # the OpenAI shape ("object": "list", "data") and the LLMs on offer
        })

    return api


@contextlib.asynccontextmanager
async def running_api(validator: Validator, *, host: str = "127.0.0.1", port: int) -> AsyncIterator[str]:
    """Serve the API (any client hotkey admitted) until the block ends; yields its URL."""
    api = build_api(validator, RequestVerifier(validator.hotkey, Admission.anyone()))
    server = uvicorn.Server(server_config(api, host=host, port=port))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # the server failed to start: raise its error
                raise OmronTeeError(f"the validator API did not start on {host}:{port}")
            await asyncio.sleep(0.02)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task

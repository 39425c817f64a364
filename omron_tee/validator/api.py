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
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from omron_tee.channel import KemSuite
from omron_tee.errors import MinerError, OmronTeeError, ProtocolError, RateLimited
from omron_tee.exchange import candidate_nonce
from omron_tee.protocol import AttestRequest, AttestResponse, InferResponse, _field, _nonce
from omron_tee.validator.core import Validator
from omron_tee.validator.llm_api import add_llm_api, openai_models
from omron_tee.validator.relay import MAX_CANDIDATES, REQUEST_FAULTS, all_failed, parse_relay_request, record_failure, record_success, relay_targets
from omron_tee.validator.scoring import Outcome
from omron_tee.wire.auth import Admission, RequestVerifier
from omron_tee.wire.client import SignedClient
from omron_tee.wire.server import json_response, signed_route

log = logging.getLogger("omron_tee.validator.api")



class RateLimiter:
    """A token bucket per client hotkey."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    MAX_TRACKED = 10_000

    def take(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._buckets) >= self.MAX_TRACKED and key not in self._buckets:
                # Forget hotkeys whose bucket has refilled: they are as good as new, so
                # fresh hotkeys cannot grow this table without bound.
                full = (self.burst - 1.0) / self.rate
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full}
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens < 1.0:
                raise RateLimited(f"too many requests from this hotkey: at most {self.rate:g}/s (burst {self.burst:g})")
            self._buckets[key] = (tokens - 1.0, now)


def build_api(validator: Validator, verifier: RequestVerifier, *, rate: float = 20.0, burst: float = 40.0) -> FastAPI:
    api = FastAPI(title="omron-tee validator API", docs_url=None, redoc_url=None, openapi_url=None)
    limiter = RateLimiter(rate, burst)
    # Relayed traffic gets connections of its own, so a flood of it cannot queue the
    # validator's benchmark probes and skew the latencies that scores compare.
    relay = SignedClient(validator.prober.client.signer, timeout=validator.prober.timeout)
    prober = validator.prober

    def candidates_for(count: int) -> list:
        ranked = sorted(validator.miners(), key=lambda n: validator.scores.scores().get(n.hotkey, 0.0), reverse=True)
        return ranked[:count]

    async def attest(caller: str, body: Any) -> Any:
        limiter.take(caller)
        model = str(_field(body, "model", "attest request"))
        prober.models.get(model)
        nonce = _nonce(_field(body, "nonce", "attest request"), "attest request nonce")
        kem = KemSuite.parse(str(body.get("kem", prober.kem.value))).value  # refuse a bad suite here, not at every miner
        count = body.get("count", 3)
        if not isinstance(count, int) or not 1 <= count <= MAX_CANDIDATES:
            raise ProtocolError(f"count must be an integer from 1 to {MAX_CANDIDATES}")
        targets = candidates_for(count)

        async def one(n):
            assert n.endpoint is not None
            request = AttestRequest(candidate_nonce(nonce, n.hotkey), kem)
            raw = await relay.post(n.endpoint.url, "/attest", request.to_json(), receiver=n.hotkey, timeout=prober.timeout)
            AttestResponse.from_json(raw)  # shape check only: the client verifies it
            return {"hotkey": n.hotkey, "uid": n.uid, "attest": raw}

        results = await asyncio.gather(*(one(n) for n in targets), return_exceptions=True)
        candidates, failures = [], []
        for n, r in zip(targets, results):
            if isinstance(r, BaseException):
                reason = getattr(r, "reason", "error")
                failures.append({"hotkey": n.hotkey, "reason": reason})
                if reason not in REQUEST_FAULTS:
                    validator.record(Outcome(n.hotkey, n.uid, False, reason, None, None, None, kind="relay"))
            else:
                candidates.append(r)
        return {"candidates": candidates, "failures": failures}

    async def infer(caller: str, body: Any) -> Any:
        limiter.take(caller)
        request = parse_relay_request(body, default_deadline_ms=10_000)
        tried: list[dict[str, str]] = []
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
            return {"hotkey": hotkey, "response": response.to_json(), "tried": tried}
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
    server = uvicorn.Server(uvicorn.Config(api, host=host, port=port, log_level="warning", access_log=False))
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

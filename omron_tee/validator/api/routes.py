"""The validator's API for third parties: attest miners for a client, relay sealed requests, for every workload.

The client verifies the evidence itself and seals its input to the enclave,
so this API only relays bytes it cannot read. Routes (btauth/1-signed for the
validator's hotkey, rate-limited per caller):

``GET  /v1/models``       the models on offer, with their hashes and workloads (unsigned; also in the OpenAI shape)
``POST /v1/attest``       {model, nonce, kem, count} -> {candidates: [{hotkey, uid, attest}], failures}
                          (each candidate is attested with ``exchange.requester.candidate_nonce(nonce, hotkey)``)
``POST /v1/infer``        {model, workload, deadline_ms, attempts: [{hotkey, request}]} -> the sealed answer stream,
                          headers ``X-Omron-Miner`` and ``X-Omron-Tried`` (``protocol.RelayReply``)
``POST /v1/completions``  OpenAI-compatible; the validator reads the prompt (``api.openai``)
``POST /v1/chat/completions``  the same, for chat messages (the model's pinned chat format)
``GET  /metrics``         Prometheus metrics (``validator.metrics``); ``GET /health``, ``GET /status`` (JSON), unsigned,
                          public facts only (scores, weights, reasons: no private data)
``GET  /dashboard``       the live dashboard page; its data at ``GET /v1/dashboard`` (``api.dashboard``), unsigned, public facts only
``/v1/audit``, ``/v1/audit/entries``, ``POST /v1/receipts``, ``/v1/receipts/{index}/proof``: the audit log and receipt
                          inclusion proofs (``api.audit``)
``POST /v1/miner/verdict`` a miner's own verdict, named, in an answer signed by the validator (``api.verdicts``)

Before any route, each request spends from its network address's budget, and the unsigned ones also from
one budget for them all (``quota.AddressQuota``; ``GET /health`` excepted): refused ``429 rate-limited``
with ``Retry-After``, before its body is read or its signature checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from omron_tee.channel.hpke import KemSuite
from omron_tee.errors import ModelError, OmronTeeError, RateLimited
from omron_tee.exchange import transport
from omron_tee.exchange.requester import candidate_nonce
from omron_tee.protocol import AttestRequest, Candidate, CandidatesReply, CandidatesRequest, RelayRequest, Tried, loads
from omron_tee.reasons import Reason
from omron_tee.validator.api import audit, dashboard, verdicts
from omron_tee.validator.api.openai import ChatCompletions, Completions, bearer_keys, openai_error
from omron_tee.validator.api.quota import AddressQuota, ApiQuota
from omron_tee.validator.api.relay import REQUEST_FAULTS, relay
from omron_tee.validator.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from omron_tee.validator.schedule import candidates
from omron_tee.validator.scoring import Outcome
from omron_tee.wire.auth import Admission, RequestVerifier
from omron_tee.wire.client import SignedClient
from omron_tee.wire.server import QuietServer, authenticated, error_response, guarded, json_response, server_config, signed_route

log = logging.getLogger("omron_tee.validator.api")

MAX_DEADLINE_MS = 120_000
UNLIMITED_PATHS = frozenset({"/health"})  # constant work, polled by supervisors: limiting it would save nothing


class AddressLimit:
    """ASGI middleware: ``AddressQuota.take`` for each HTTP request before the app sees it (GET and HEAD are the
    unsigned routes); a refusal is the named ``429`` with ``Retry-After``, counted by ``on_refusal``."""

    def __init__(self, app: Any, *, quota: AddressQuota, on_refusal: Any) -> None:
        self.app, self.quota, self.on_refusal = app, quota, on_refusal

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] not in UNLIMITED_PATHS:
            client = scope.get("client")
            try:
                self.quota.take(client[0] if client else None, public=scope["method"] in ("GET", "HEAD"))
            except RateLimited as e:
                log.info("refused %s %s: %s", scope["method"], scope["path"][:64], e.reason)
                self.on_refusal(e.reason)
                await error_response(e)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_api(validator: Any, verifier: RequestVerifier, *, quota: ApiQuota | None = None, api_keys: list[str] | None = None,
              addresses: AddressQuota | None = None) -> FastAPI:
    """The API; ``quota``: per caller hotkey, after authentication; ``addresses``: per network address, before anything."""
    api = FastAPI(title="omron-tee validator API", docs_url=None, redoc_url=None, openapi_url=None)
    limiter = quota or ApiQuota()
    prober = validator.prober
    # Relayed traffic gets connections of its own, so a flood of it cannot queue the
    # validator's benchmark probes and skew the latencies that scores compare.
    client = SignedClient(prober.client.signer, timeout=prober.timeout)
    keys = api_keys if api_keys is not None else os.environ.get("OMRON_TEE_API_KEYS", "").split(",")

    async def attest(caller: str, body: Any) -> Any:
        limiter.take(caller)
        ask = CandidatesRequest.from_json(body, default_kem=prober.kem.value)
        if ask.model not in prober.model_ids:
            prober.models.get(ask.model)  # unknown-model, named
        kem = KemSuite.parse(ask.kem).value  # refuse a bad suite here, not at every miner
        targets = candidates(await validator.current_miners(), validator.scores.scores(), prober.offers, ask.model, ask.count)

        async def one(n: Any) -> Candidate:
            assert n.endpoint is not None
            response, _ = await transport.attest(client, n.endpoint.url, AttestRequest(candidate_nonce(ask.nonce, n.hotkey), kem, n.hotkey),
                                                 receiver=n.hotkey, timeout=prober.timeout)
            prober.offers[n.hotkey] = response  # parsed, not verified (the client verifies): used to pick candidates only
            return Candidate(n.hotkey, n.uid, response)

        results = await asyncio.gather(*(one(n) for n in targets), return_exceptions=True)
        found, failures = [], []
        for n, r in zip(targets, results):
            if isinstance(r, BaseException):
                reason = r.reason if isinstance(r, OmronTeeError) else Reason.ERROR
                failures.append(Tried(n.hotkey, reason))
                if reason not in REQUEST_FAULTS:
                    validator.record(Outcome(n.hotkey, n.uid, False, reason, None, None, None, kind="relay"))
            else:
                found.append(r)  # whatever it says it serves: the client checks that too
        return CandidatesReply(tuple(found[: ask.count]), tuple(failures)).to_json()

    async def infer(request: Request) -> Response:
        caller, body = await authenticated(request, verifier)
        limiter.take(caller)
        relayed = RelayRequest.from_json(loads(body, "request body"), default_deadline_ms=10_000, max_deadline_ms=MAX_DEADLINE_MS)
        spec = prober.models.get(relayed.model) if relayed.model else None
        # The client says which workload it sealed (it cannot gain by lying): it decides only
        # whether the answer is passed on as it arrives or whole (so a broken one is failed over).
        workload = prober.workloads.get(relayed.workload) if relayed.workload else (prober.workloads.default_for(spec) if spec else None)
        streamed = workload is not None and workload.streamed
        attempt_timeout = prober.timeouts.get(workload.latency_class, prober.timeout) if workload else prober.timeout
        max_bytes = workload.max_stream if workload else 16 * 1024 * 1024
        return await relay(validator, client, relayed, streamed=streamed, attempt_timeout=attempt_timeout, max_bytes=max_bytes)

    refused = validator.metrics.api_refused
    api.add_middleware(AddressLimit, quota=addresses or AddressQuota(), on_refusal=refused)
    api.add_api_route("/v1/attest", signed_route(verifier, attest, log, on_refusal=refused), methods=["POST"])
    api.add_api_route("/v1/infer", guarded(infer, log, on_refusal=refused), methods=["POST"])
    completions = Completions(validator, client, verifier, limiter, bearer_keys(keys))
    api.add_api_route("/v1/completions", guarded(completions, log, on_refusal=refused), methods=["POST"])
    chat = ChatCompletions(validator, client, verifier, limiter, completions.key_digests)
    api.add_api_route("/v1/chat/completions", guarded(chat, log, on_refusal=refused), methods=["POST"])
    audit.add_routes(api, validator, verifier, limiter, refused)
    verdicts.add_routes(api, validator, verifier, limiter, refused)

    @api.get("/metrics")
    async def metrics() -> Response:
        return Response(validator.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    @api.get("/health")
    async def health() -> Any:
        return json_response({"ok": True, "hotkey": validator.hotkey, "miners": len(validator.metagraph.neurons) if validator.metagraph else 0})

    @api.get("/status")
    async def status() -> Any:
        return json_response(status_of(validator))

    @api.get("/dashboard")
    async def dashboard_page() -> Any:
        return Response(content=dashboard.page(), media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"})

    revealed = dashboard.RevealedWeights(validator.chain, every=max(2.0, validator.chain.block_time()))

    @api.get("/v1/dashboard")
    async def dashboard_data() -> Any:
        return json_response(dashboard.dashboard_of(validator, await revealed.get()))

    @api.get("/v1/models")
    async def models() -> Any:
        offered = [prober.models.get(m) for m in prober.model_ids]
        workloads = {m: [w.name for w in prober.workloads if m in prober.judged.get(w.name, ())] for m in prober.model_ids}
        return json_response({
            "validator": verifier.self_hotkey,
            "models": [{"id": s.model_id, "sha256": s.sha256.hex(), "runtime": s.runtime, "workloads": workloads[s.model_id],
                        "input_shape": list(s.input_shape), "input_dtype": s.input_dtype} for s in offered],
            # The OpenAI shape: the models /v1/completions serves (the others take the private relay only).
            "object": "list",
            "data": [openai_model(s) for s in offered if s.model_id in completions.llm_models()],
        })

    @api.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> Response:
        if model_id not in completions.llm_models():
            return openai_error(ModelError(f"no model {model_id[:128]!r} is served on /v1/completions or /v1/chat/completions; GET /v1/models lists them",
                                           reason=Reason.UNKNOWN_MODEL), status=404)
        return json_response(openai_model(prober.models.get(model_id)))

    return api


def openai_model(spec: Any) -> dict[str, Any]:
    return {"id": spec.model_id, "object": "model", "created": 0, "owned_by": "omron-tee", "sha256": spec.sha256.hex(), "runtime": spec.runtime}


def status_of(validator: Any) -> dict[str, Any]:
    """What the validator knows of each miner, as public facts: scores, counts, reasons, the last weights."""
    uid_of = {n.hotkey: n.uid for n in validator.metagraph.neurons} if validator.metagraph else {}
    miners = []
    for hotkey, rec in sorted(validator.scores.records.items(), key=lambda kv: -kv[1].score):
        if hotkey not in uid_of:
            continue
        top = sorted(rec.reasons.items(), key=lambda kv: -kv[1])[:5]
        miners.append({"uid": uid_of[hotkey], "hotkey": hotkey, "score": round(rec.score, 6), "requests": rec.requests, "correct": rec.correct,
                       "incorrect": rec.incorrect, "failures": rec.failures, "reasons": dict(top)})
    return {"validator": validator.hotkey, "last_weights_block": validator.last_weights_block,
            "weights": {str(u): round(w, 6) for u, w in validator.last_weights.items()}, "miners": miners}


@contextlib.asynccontextmanager
async def running_api(validator: Any, *, host: str = "127.0.0.1", port: int, api_keys: list[str] | None = None) -> AsyncIterator[str]:
    """Serve the API (any client hotkey admitted) until the block ends; yields its URL."""
    api = build_api(validator, RequestVerifier(validator.hotkey, Admission.anyone()), api_keys=api_keys)
    server = QuietServer(server_config(api, host=host, port=port))
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

"""The validator's LLM routes: a private streamed relay, and an OpenAI-compatible endpoint.

Two paths, and **only the second lets the validator read the prompt**:

1. Private (``omron_tee.llm.client``): ``POST /v1/llm/attest`` gives the client
   LLM miners' evidence for *its* nonce; the client verifies it and seals its
   prompt to the enclave itself; ``POST /v1/llm/infer_stream`` relays the
   sealed request and streams the sealed chunks back untouched. The validator
   sees ciphertext only (and the number and timing of chunks).
2. OpenAI-compatible (``POST /v1/completions``, ``GET /v1/models``): the
   client sends the prompt *in the clear to the validator*, which seals it to
   an enclave it attested, checks the stream and the receipt, and re-emits
   the text (server-sent events with ``"stream": true``). Use it when the
   validator is yours or trusted; otherwise use path 1.

Authentication: btauth/1 (signed for the validator's hotkey), or for
``/v1/completions`` also ``Authorization: Bearer KEY`` with a key listed in
``OMRON_TEE_API_KEYS`` (comma-separated) or given to ``add_llm_api``. All
rate-limited per hotkey or key, like the rest of the API.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import hmac
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from omron_tee.channel import KemSuite
from omron_tee.errors import AuthError, MinerError, ModelError, OmronTeeError, ProtocolError
from omron_tee.llm.model import MAX_NEW_TOKENS
from omron_tee.llm.requester import Completion, StreamReader, TokenChunk
from omron_tee.llm.transport import open_stream, raw_bytes
from omron_tee.exchange import candidate_nonce
from omron_tee.protocol import MAX_CANDIDATES, AttestRequest, AttestResponse, Candidate, CandidatesReply, CandidatesRequest, RelayRequest, Tried, _field, dumps, loads
from omron_tee.validator.forward import MAX_ATTEST_REPLY_BYTES
from omron_tee.validator.llm_forward import llm_state
from omron_tee.validator.relay import all_failed, record_failure, relay_targets
from omron_tee.validator.scoring import Outcome
from omron_tee.wire.auth import RequestVerifier
from omron_tee.wire.server import error_response, guarded, json_response, read_body
from omron_tee.reasons import Reason

log = logging.getLogger("omron_tee.validator.api")

MAX_DEADLINE_MS = 120_000
STREAM_MEDIA_TYPE = "application/vnd.omron-tee.llm-stream"
DEFAULT_MAX_TOKENS = 16


def openai_models(validator: Any) -> dict[str, Any]:
    """Extra keys for ``GET /v1/models``: the OpenAI shape (``object``/``data``), every model on offer."""
    state = llm_state(validator)
    prober = validator.prober
    ids = [m for m in prober.model_ids] + [m for m in state.llm_models() if m not in prober.model_ids]
    data = []
    for mid in ids:
        spec = prober.models.get(mid)
        data.append({"id": mid, "object": "model", "created": 0, "owned_by": "omron-tee", "sha256": spec.sha256.hex(), "runtime": spec.runtime})
    llm = [{"id": s.model_id, "sha256": s.sha256.hex(), "runtime": s.runtime} for s in (prober.models.get(m) for m in state.llm_models())]
    return {"object": "list", "data": data, "llm_models": llm}


def add_llm_api(api: FastAPI, validator: Any, verifier: RequestVerifier, limiter: Any, *, relay: Any = None, api_keys: list[str] | None = None) -> None:
    state = llm_state(validator)
    keys = [k for k in (api_keys if api_keys is not None else os.environ.get("OMRON_TEE_API_KEYS", "").split(",")) if k.strip()]
    key_digests = {hashlib.sha256(k.strip().encode()).digest() for k in keys}

    async def authenticate(request: Request, body: bytes, *, allow_bearer: bool) -> str:
        auth = request.headers.get("authorization", "")
        if allow_bearer and auth.lower().startswith("bearer "):
            digest = hashlib.sha256(auth[7:].strip().encode()).digest()
            if not any(hmac.compare_digest(digest, d) for d in key_digests):
                raise AuthError("unknown API key", reason=Reason.BAD_API_KEY)
            caller = "key:" + digest.hex()[:16]
        else:
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            caller = verifier.verify(request.headers, body, method=request.method, path=path)
        limiter.take(caller)
        return caller

    def check_model(model: Any) -> str:
        model = str(model)
        if model not in state.llm_models():
            raise ModelError(f"unknown LLM {model!r}; offered: {', '.join(state.llm_models()) or 'none'}", reason=Reason.UNKNOWN_MODEL)
        return model

    # --- path 1: private, the validator relays ciphertext -----------------------------

    async def llm_attest(request: Request) -> Response:
        body = await read_body(request)
        await authenticate(request, body, allow_bearer=False)
        ask = CandidatesRequest.from_json(loads(body, "request body"), default_kem=validator.prober.kem.value)
        model = check_model(ask.model)
        kem = KemSuite.parse(ask.kem).value  # refuse a bad suite here, not at every miner
        prober = validator.prober
        targets = state.candidates(model, MAX_CANDIDATES)

        async def one(n) -> Candidate:
            raw = await (relay or prober.client).post(n.endpoint.url, "/attest", AttestRequest(candidate_nonce(ask.nonce, n.hotkey), kem, n.hotkey).to_json(),
                                                     receiver=n.hotkey, timeout=prober.timeout, max_bytes=MAX_ATTEST_REPLY_BYTES)
            resp = AttestResponse.from_json(raw)  # parsed, not verified: the client verifies it
            state.served[n.hotkey] = resp.models
            return Candidate(n.hotkey, n.uid, resp)

        results = await asyncio.gather(*(one(n) for n in targets), return_exceptions=True)
        candidates, failures = [], []
        for n, r in zip(targets, results):
            if isinstance(r, BaseException):
                failures.append(Tried(n.hotkey, getattr(r, "reason", Reason.ERROR)))
            elif model in r.attest.models:
                candidates.append(r)
        return json_response(CandidatesReply(tuple(candidates[: ask.count]), tuple(failures)).to_json())

    async def llm_infer_stream(request: Request) -> Response:
        body = await read_body(request)
        await authenticate(request, body, allow_bearer=False)
        data = loads(body, "request body")
        relayed = RelayRequest.from_json(data, default_deadline_ms=30_000, max_deadline_ms=MAX_DEADLINE_MS)
        check_model(relayed.model or _field(data, "model", "infer request"))
        tried: list[Tried] = []
        for hotkey, req, neuron, left in relay_targets(validator, relayed, tried):
            t0 = time.perf_counter()
            try:
                resp = await open_stream(state.http, validator.prober.client.signer, neuron.endpoint.url, "/infer_stream", req.to_json(),
                                         receiver=hotkey, timeout=left)
            except MinerError as e:
                record_failure(validator, neuron, e.reason, tried)
                continue
            tried.append(Tried(hotkey, Reason.OK))
            return StreamingResponse(
                _relay(resp, validator, neuron, t0, deadline_s=max(0.05, left - (time.perf_counter() - t0))),
                media_type=STREAM_MEDIA_TYPE,
                headers={"X-Omron-Miner": hotkey, "X-Omron-Tried": json.dumps([t.to_json() for t in tried]), "Cache-Control": "no-store"},
            )
        return error_response(all_failed(tried))

    # --- path 2: OpenAI-compatible, the validator reads the prompt ----------------------

    async def completions(request: Request) -> Response:
        try:
            body = await read_body(request)
            caller = await authenticate(request, body, allow_bearer=True)
            data = loads(body, "request body")
            model, prompt, max_tokens, stream = _openai_request(data, check_model)
        except OmronTeeError as e:
            return _openai_error(e)
        try:
            resp, pending, t0, neuron = await _start_completion(state, validator, model, prompt, max_tokens)
        except OmronTeeError as e:
            return _openai_error(e)
        reader = StreamReader(pending, model_hash=validator.prober.models.get(model).sha256, started=t0)
        cid = "cmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        log.info("completion for %s via uid %d (validator-visible path)", caller[:12], neuron.uid)
        if stream:
            return StreamingResponse(_sse(resp, reader, cid, created, model, neuron, validator), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-store", "X-Omron-Miner": neuron.hotkey})
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            async for raw in raw_bytes(resp):
                for chunk in reader.feed(raw):
                    decoder.decode(chunk.data)
            c = reader.close()
        except OmronTeeError as e:
            validator.record(Outcome(neuron.hotkey, neuron.uid, False, e.reason, None, True, None, kind="relay"))
            return _openai_error(e)
        validator.record(Outcome(neuron.hotkey, neuron.uid, True, Reason.OK, None, True, None, kind="relay"))
        return json_response({
            "id": cid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"text": c.text, "index": 0, "logprobs": None, "finish_reason": c.finish_reason}],
            "usage": _usage(c),
            "omron_tee": _provenance(c, neuron),
        })

    api.add_api_route("/v1/llm/attest", guarded(llm_attest, log), methods=["POST"])
    api.add_api_route("/v1/llm/infer_stream", guarded(llm_infer_stream, log), methods=["POST"])
    api.add_api_route("/v1/completions", guarded(completions, log), methods=["POST"])


async def _relay(resp: Any, validator: Any, neuron: Any, t0: float, *, deadline_s: float) -> AsyncIterator[bytes]:
    ok = False
    try:
        async for data in raw_bytes(resp, deadline_s=deadline_s):  # the client's deadline holds for the whole stream
            yield data
        ok = True
    except MinerError:
        pass  # the client sees the stream end without its final chunk: truncated
    finally:
        validator.record(Outcome(neuron.hotkey, neuron.uid, ok, Reason.OK if ok else Reason.STREAM_TRUNCATED,
                                 None, None, None, kind="relay"))  # an LLM stream's length is not a latency


def _openai_request(data: Any, check_model) -> tuple[str, str, int, bool]:
    if not isinstance(data, dict):
        raise ProtocolError("request body must be a JSON object")
    model = check_model(_field(data, "model", "completion request"))
    prompt = _field(data, "prompt", "completion request")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise ProtocolError("prompt must be one non-empty string")
    max_tokens = data.get("max_tokens", DEFAULT_MAX_TOKENS)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= MAX_NEW_TOKENS:
        raise ProtocolError(f"max_tokens must be an integer from 1 to {MAX_NEW_TOKENS}")
    if data.get("temperature", 0) not in (0, 0.0, None):
        raise ProtocolError("only greedy decoding is served (temperature 0): outputs must be reproducible to be verified", reason=Reason.UNSUPPORTED)
    if data.get("n", 1) != 1 or data.get("best_of", 1) not in (1, None) or data.get("echo") or data.get("logprobs") or data.get("stop") or data.get("suffix"):
        raise ProtocolError("n, best_of, echo, logprobs, stop and suffix are not supported", reason=Reason.UNSUPPORTED)
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise ProtocolError("stream must be true or false")
    return model, prompt, max_tokens, stream


async def _start_completion(state: Any, validator: Any, model: str, prompt: str, max_tokens: int):
    """Attest LLM miners (fresh nonce each), seal the prompt to the first that passes and answers."""
    reasons = []
    for neuron in state.candidates(model, 3):
        try:
            session = await state.session(neuron, model)
            resp, pending, t0 = await state.start(neuron, session, model, prompt, max_tokens)
            return resp, pending, t0, neuron
        except ModelError:
            continue
        except OmronTeeError as e:
            reasons.append(f"uid {neuron.uid}: {e.reason}")
            if model in state.served.get(neuron.hotkey, ()):  # only a known LLM miner is scored on an LLM request
                validator.record(Outcome(neuron.hotkey, neuron.uid, False, e.reason, None, None, None, kind="relay"))
    raise MinerError("no attested miner serving this model answered" + (f" ({'; '.join(reasons)})" if reasons else ""), reason=Reason.ALL_MINERS_FAILED)


async def _sse(resp: Any, reader: StreamReader, cid: str, created: int, model: str, neuron: Any, validator: Any) -> AsyncIterator[bytes]:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def event(obj: Any) -> bytes:
        return b"data: " + dumps(obj) + b"\n\n"

    def chunk_event(text: str, finish: str | None, **extra: Any) -> bytes:
        return event({"id": cid, "object": "text_completion", "created": created, "model": model,
                      "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}], **extra})

    try:
        async for raw in raw_bytes(resp):
            for chunk in reader.feed(raw):
                text = decoder.decode(chunk.data)
                if text:
                    yield chunk_event(text, None)
        c = reader.close()
    except OmronTeeError as e:
        validator.record(Outcome(neuron.hotkey, neuron.uid, False, e.reason, None, True, None, kind="relay"))
        yield event({"error": {"message": str(e), "type": e.reason, "code": e.reason}})
        yield b"data: [DONE]\n\n"
        return
    validator.record(Outcome(neuron.hotkey, neuron.uid, True, Reason.OK, None, True, None, kind="relay"))
    yield chunk_event(decoder.decode(b"", final=True), c.finish_reason, usage=_usage(c), omron_tee=_provenance(c, neuron))
    yield b"data: [DONE]\n\n"


def _usage(c: Completion) -> dict[str, int]:
    p = int(c.extra.get("prompt_tokens", 0))
    return {"prompt_tokens": p, "completion_tokens": len(c.tokens), "total_tokens": p + len(c.tokens)}


def _provenance(c: Completion, neuron: Any) -> dict[str, Any]:
    """Who answered and the enclave's receipt, checked by the validator (the client may keep it)."""
    return {"miner_hotkey": neuron.hotkey, "miner_uid": neuron.uid, "receipt": c.receipt.to_json(), "checked_by": "validator",
            "ttft_ms": round(c.ttft_s * 1000, 1) if c.ttft_s is not None else None}


def _openai_error(e: OmronTeeError) -> Response:
    r = error_response(e)
    return Response(content=dumps({"error": {"message": str(e), "type": e.reason, "code": e.reason}}), status_code=r.status_code, media_type="application/json")


__all__ = ["add_llm_api", "openai_models", "TokenChunk"]

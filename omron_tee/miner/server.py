"""The miner's HTTP server: three routes on the bare ASGI interface (``wire.asgi``) over the trusted app.

No framework: three routes that read their own bodies and write bytes need none of one, and
plain Starlette cost the miner 12-18 % more CPU per request, FastAPI more again
(``bench/bench_miner_http.py`` measures the three side by side).

Routes (POST bodies signed with btauth/1 for this miner's hotkey):
``/attest`` (AttestRequest JSON -> AttestResponse) and ``/infer`` (InferRequest as a binary
frame, ``REQUEST_MEDIA_TYPE``, or JSON ->
the sealed answer stream, ``omron_tee.channel.stream``, for every workload:
sent as the enclave produces it where the workload streams, whole
otherwise). Refusals before the stream starts (auth, unknown key, a request
that does not open) are the usual JSON errors; every later one travels
sealed. ``GET /health`` is unsigned and says only what is public.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from omron_tee.chain.base import Chain
from omron_tee.miner.trusted_app import TrustedApp
from omron_tee.protocol import REQUEST_MEDIA_TYPE, STREAM_MEDIA_TYPE, AttestRequest, InferRequest, dumps, loads
from omron_tee.wire.asgi import HttpRequest, Responder, Router
from omron_tee.wire.auth import Admission, RequestVerifier

log = logging.getLogger("omron_tee.miner")


def validator_admission(chain: Chain, *, refresh_s: float = 12.0, also: frozenset[str] = frozenset()) -> Admission:
    """Admit registered hotkeys holding a validator permit, from a metagraph refreshed every ``refresh_s``,
    and the hotkeys in ``also`` (the miner's own, so its operator's ``omron-tee miner doctor`` can probe it)."""
    state: dict[str, Any] = {"at": 0.0, "permitted": frozenset(), "registered": frozenset()}
    lock = threading.Lock()

    def refresh(force: bool) -> None:
        with lock:
            if not force and time.monotonic() - state["at"] < refresh_s:
                return
            mg = chain.metagraph()
            state["registered"] = frozenset(n.hotkey for n in mg.neurons)
            state["permitted"] = frozenset(n.hotkey for n in mg.neurons if n.validator_permit)
            state["at"] = time.monotonic()

    def check(hotkey: str) -> str | None:
        if hotkey in also:
            return None
        refresh(False)
        if hotkey not in state["permitted"] and time.monotonic() - state["at"] > 1.0:
            refresh(True)  # a newly registered validator should not wait a full period
        if hotkey in state["permitted"]:
            return None
        if hotkey in state["registered"]:
            return "caller is registered but holds no validator permit"
        return "caller is not registered on this subnet"

    return Admission(check)


def build_app(app_core: TrustedApp, verifier: RequestVerifier) -> Router:
    no_store = {"Cache-Control": "no-store"}

    async def authenticated(request: HttpRequest) -> tuple[str, bytes]:
        """(caller hotkey, body) of a btauth/1-signed request; the signature covers the path with its query."""
        body = await request.body()
        return verifier.verify(request.headers, body, method=request.method, path=request.target), body

    async def attest(request: HttpRequest, out: Responder) -> None:
        _, body = await authenticated(request)
        await out.bytes(dumps(app_core.attest(AttestRequest.from_json(loads(body, "request body"))).to_json()))

    async def infer(request: HttpRequest, out: Responder) -> None:
        t0 = time.perf_counter()
        caller, body = await authenticated(request)
        binary = request.media_type == REQUEST_MEDIA_TYPE
        opened = app_core.open(InferRequest.from_bytes(body) if binary else InferRequest.from_json(loads(body, "request body")))
        if opened.streamed:
            log.info("request from %s: sealed, %d bytes in; answer streamed", caller[:10], len(body))
            await out.stream(app_core.answer(opened), request.receive, media_type=STREAM_MEDIA_TYPE, headers=no_store)
            return
        answer = await app_core.answer_whole(opened)
        # What the operator may know: who asked, sizes and time; the request's model, workload and content are sealed.
        log.info("request from %s: sealed, %d bytes in, %d out, %.1f ms", caller[:10], len(body), len(answer), (time.perf_counter() - t0) * 1000)
        await out.bytes(answer, media_type=STREAM_MEDIA_TYPE, headers=no_store)

    async def health(request: HttpRequest, out: Responder) -> None:
        await out.bytes(dumps({"hotkey": verifier.self_hotkey, "tee_type": app_core.backend.tee_type.value, "models": list(app_core.models)}))

    return Router({("POST", "/attest"): attest, ("POST", "/infer"): infer, ("GET", "/health"): health}, log)

"""The miner's HTTP server: Starlette routes over the trusted app, on a Starlette ``Router`` alone.

Starlette, not FastAPI: three routes that read their own bodies need none of FastAPI's
request parsing, which cost the miner CPU on every request. A ``Router``, not a ``Starlette``
application: the application wraps its router in two middlewares (server errors, exception
handlers) whose work ``wire.server.guarded`` already does; without them these routes cost the
miner 3-4 % more CPU per request than the same routes on the bare ASGI interface with no framework,
against 13-19 % with them (``bench/bench_miner_http.py`` measures the three side by side), too
little left to hand-roll Starlette's request, streaming and disconnect handling.

Routes (POST bodies signed with btauth/1 for this miner's hotkey):
``/attest`` (AttestRequest JSON -> AttestResponse) and ``/infer`` (InferRequest as a binary
frame, ``REQUEST_MEDIA_TYPE``, or JSON ->
the sealed answer stream, ``omron_tee.channel.stream``, for every workload:
sent as the enclave produces it where the workload streams, whole
otherwise), and ``/infer/batch`` (``protocol.InferBatch``: several sealed requests in one signed
request, each answer whole, then one evidence for the batch's nonces). Refusals before the stream starts (auth, unknown key, a request
that does not open) are the usual JSON errors; every later one travels
sealed. ``GET /health`` is unsigned and says only what is public.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route, Router

from omron_tee.chain.base import Chain
from omron_tee.miner.trusted_app import TrustedApp
from omron_tee.protocol import BATCH_MEDIA_TYPE, REQUEST_MEDIA_TYPE, STREAM_MEDIA_TYPE, AttestRequest, InferBatch, InferRequest, loads
from omron_tee.wire.auth import Admission, RequestVerifier
from omron_tee.wire.server import authenticated, guarded, json_response, signed_route

log = logging.getLogger("omron_tee.miner")


def validator_admission(chain: Chain, *, refresh_s: float = 12.0, also: frozenset[str] = frozenset(),
                        retry_unknown_s: float = 1.0, wait_s: float = 3.0) -> Admission:
    """Admit registered hotkeys holding a validator permit, and the hotkeys in ``also`` (the miner's own, so its
    operator's ``omron-tee miner doctor`` can probe it).

    The metagraph is read once here (the miner is not serving yet), then in a worker thread, never on the event
    loop: a subtensor node takes seconds to answer, and a request naming an unknown hotkey (anyone can send one,
    signed or not) would otherwise hold the miner's loop that long, as often as it likes. A read starts every
    ``refresh_s``, and when a caller not known to hold a permit asks, at most once per ``retry_unknown_s``; one
    read at a time. ``check`` answers from the last read at once; ``fresher`` (what a request's pre-check awaits
    before refusing) waits up to ``wait_s`` for the read that asking started, so a validator that just got its
    permit is admitted on first contact."""
    state: dict[str, Any] = {"at": float("-inf"), "tried": float("-inf"), "busy": False,
                             "permitted": frozenset(), "registered": frozenset(), "waiters": []}
    lock = threading.Lock()

    def read() -> None:
        try:
            mg = chain.metagraph()
            state["registered"] = frozenset(n.hotkey for n in mg.neurons)
            state["permitted"] = frozenset(n.hotkey for n in mg.neurons if n.validator_permit)
            state["at"] = time.monotonic()
        except Exception as e:  # noqa: BLE001 - the chain unreachable, or anything else: keep the last read
            log.warning("could not read the metagraph for admission (keeping the last one read): %s", type(e).__name__)
        finally:
            with lock:
                state["busy"], waiters, state["waiters"] = False, state["waiters"], []
            for loop, done in waiters:
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits there
                    loop.call_soon_threadsafe(lambda d=done: d.done() or d.set_result(None))

    def read_soon(now: float) -> None:
        with lock:
            if state["busy"] or now - state["tried"] < retry_unknown_s:
                return
            state["busy"], state["tried"] = True, now
        threading.Thread(target=read, name="admission-metagraph", daemon=True).start()

    state["busy"], state["tried"] = True, time.monotonic()
    read()

    def check(hotkey: str) -> str | None:
        if hotkey in also:
            return None
        now = time.monotonic()
        permitted = hotkey in state["permitted"]
        if now - state["at"] >= refresh_s or not permitted:
            read_soon(now)
        if permitted:
            return None
        if hotkey in state["registered"]:
            return "caller is registered but holds no validator permit"
        return "caller is not registered on this subnet"

    async def fresher() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        with lock:
            if not state["busy"]:
                return  # no read in flight (one just completed, or none is due yet): the last one stands
            state["waiters"].append((loop, done))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done, wait_s)

    return Admission(check, fresher)


def build_app(app_core: TrustedApp, verifier: RequestVerifier) -> Router:

    async def attest(caller: str, body: Any) -> Any:
        return app_core.attest(AttestRequest.from_json(body)).to_json()

    async def infer(request: Request) -> Response:
        t0 = time.perf_counter()
        caller, body = await authenticated(request, verifier)
        binary = request.headers.get("content-type", "").split(";")[0].strip() == REQUEST_MEDIA_TYPE
        opened = app_core.open(InferRequest.from_bytes(body) if binary else InferRequest.from_json(loads(body, "request body")))
        headers = {"Cache-Control": "no-store"}
        if opened.streamed:
            log.info("request from %s: sealed, %d bytes in; answer streamed", caller[:10], len(body))
            return StreamingResponse(app_core.answer(opened), media_type=STREAM_MEDIA_TYPE, headers=headers)
        answer = await app_core.answer_whole(opened)
        # What the operator may know: who asked, sizes and time; the request's model, workload and content are sealed.
        log.info("request from %s: sealed, %d bytes in, %d out, %.1f ms", caller[:10], len(body), len(answer), (time.perf_counter() - t0) * 1000)
        return Response(answer, media_type=STREAM_MEDIA_TYPE, headers=headers)

    async def infer_batch(request: Request) -> Response:
        t0 = time.perf_counter()
        caller, body = await authenticated(request, verifier)
        batch = InferBatch.from_bytes(body)
        answer = await app_core.answer_batch(batch)
        log.info("batch from %s: %d sealed requests, %d bytes in, %d out, %.1f ms", caller[:10], len(batch.requests), len(body), len(answer),
                 (time.perf_counter() - t0) * 1000)
        return Response(answer, media_type=BATCH_MEDIA_TYPE, headers={"Cache-Control": "no-store"})

    async def health(request: Request) -> Response:
        return json_response({"hotkey": verifier.self_hotkey, "tee_type": app_core.backend.tee_type.value, "models": list(app_core.models)})

    # A Router alone, not a Starlette application: the application would wrap it in two middlewares (server-error and
    # exception handling) that ``guarded`` already does the work of; measured, they were most of the difference between
    # these routes and the same ones on the bare ASGI interface (bench/bench_miner_http.py).
    return Router(routes=[
        Route("/attest", signed_route(verifier, attest, log), methods=["POST"]),
        Route("/infer", guarded(infer, log), methods=["POST"]),
        Route("/infer/batch", guarded(infer_batch, log), methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ])

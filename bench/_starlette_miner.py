"""The miner's routes on plain Starlette, as shipped until the bare-ASGI ``miner.server`` replaced them:
kept for ``bench_miner_http`` to measure the two (and FastAPI, built from these routes) side by side."""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from omron_tee.protocol import REQUEST_MEDIA_TYPE, STREAM_MEDIA_TYPE, AttestRequest, InferRequest, loads
from omron_tee.wire.server import authenticated, guarded, json_response, signed_route

log = logging.getLogger("omron_tee.miner")


def build_app(app_core: Any, verifier: Any) -> Starlette:

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
        log.info("request from %s: sealed, %d bytes in, %d out, %.1f ms", caller[:10], len(body), len(answer), (time.perf_counter() - t0) * 1000)
        return Response(answer, media_type=STREAM_MEDIA_TYPE, headers=headers)

    async def health(request: Request) -> Response:
        return json_response({"hotkey": verifier.self_hotkey, "tee_type": app_core.backend.tee_type.value, "models": list(app_core.models)})

    return Starlette(routes=[
        Route("/attest", signed_route(verifier, attest, log), methods=["POST"]),
        Route("/infer", guarded(infer, log), methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ])

"""The miner's streamed LLM route: ``POST /infer_stream`` (btauth/1-signed, like ``/infer``).

Body: an ``InferRequest`` whose sealed payload is a completion request.
Answer: ``application/octet-stream``, the sealed frames of
``omron_tee.llm.stream`` as the enclave produces them (one chunk per token).
Refusals before the stream starts (auth, unknown key, tampered request) are
the usual JSON errors; failures after it started end it with a sealed final
chunk carrying the error. The operator only ever handles ciphertext.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from omron_tee.errors import OmronTeeError
from omron_tee.llm.enclave import LlmService
from omron_tee.protocol import InferRequest, loads
from omron_tee.wire.auth import RequestVerifier
from omron_tee.wire.server import error_response, read_body

log = logging.getLogger("omron_tee.miner")

STREAM_MEDIA_TYPE = "application/vnd.omron-tee.llm-stream"


def add_llm_routes(api: FastAPI, app_core: Any, verifier: RequestVerifier) -> LlmService:
    service = LlmService(app_core)

    async def infer_stream(request: Request) -> Response:
        try:
            body = await read_body(request)
            verifier.verify(request.headers, body, method=request.method, path=request.url.path)
            opened = service.open(InferRequest.from_json(loads(body, "request body")))
        except OmronTeeError as e:
            log.info("refused POST /infer_stream: %s (%s)", e.reason, e)
            return error_response(e)
        return StreamingResponse(service.frames(opened), media_type=STREAM_MEDIA_TYPE, headers={"Cache-Control": "no-store"})

    api.add_api_route("/infer_stream", infer_stream, methods=["POST"])
    return service

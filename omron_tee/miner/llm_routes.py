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

from omron_tee.llm.enclave import LlmService
from omron_tee.protocol import InferRequest, loads
from omron_tee.wire.auth import RequestVerifier
from omron_tee.wire.server import authenticated, guarded

log = logging.getLogger("omron_tee.miner")

STREAM_MEDIA_TYPE = "application/vnd.omron-tee.llm-stream"


def add_llm_routes(api: FastAPI, app_core: Any, verifier: RequestVerifier) -> LlmService:
    service = LlmService(app_core)

    async def infer_stream(request: Request) -> Response:
        _, body = await authenticated(request, verifier)
        opened = service.open(InferRequest.from_json(loads(body, "request body")))
        return StreamingResponse(service.frames(opened), media_type=STREAM_MEDIA_TYPE, headers={"Cache-Control": "no-store"})

    api.add_api_route("/infer_stream", guarded(infer_stream, log), methods=["POST"])
    return service

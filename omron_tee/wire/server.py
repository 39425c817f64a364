"""Server side: a FastAPI route helper that authenticates, parses and maps errors.

Every refusal is a JSON body ``{"error": {"reason": slug, "message": text}}``
with a fitting status code, never a traceback: peers and users see what was
wrong, logs see the reason, nobody sees private data.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from omron_tee.errors import AuthError, ChannelError, MinerError, ModelError, OmronTeeError, ProtocolError, RateLimited
from omron_tee.protocol import dumps, loads
from omron_tee.wire.auth import RequestVerifier

MAX_BODY = 8 * 1024 * 1024

_STATUS: list[tuple[type, int]] = [
    (AuthError, 401),
    (RateLimited, 429),
    (ProtocolError, 400),
    (ChannelError, 400),
    (ModelError, 422),
    (MinerError, 502),
]


def error_response(e: OmronTeeError) -> JSONResponse:
    if e.reason == "too-large":
        return JSONResponse({"error": {"reason": e.reason, "message": str(e)}}, status_code=413)
    status = 500
    for cls, code in _STATUS:
        if isinstance(e, cls):
            status = code
            break
    if status == 401 and e.reason == "caller-not-permitted":
        status = 403
    return JSONResponse({"error": {"reason": e.reason, "message": str(e)}}, status_code=status)


def json_response(obj: Any) -> Response:
    return Response(content=dumps(obj), media_type="application/json")


Handler = Callable[[str, Any], Awaitable[Any]]


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The request body, refused as soon as it exceeds ``limit`` (before authentication,
    so an oversized body must never be read into memory whole)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise ProtocolError(f"request body exceeds {limit} bytes", reason="too-large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(f"request body exceeds {limit} bytes", reason="too-large")
        chunks.append(chunk)
    return b"".join(chunks)


def signed_route(verifier: RequestVerifier, handler: Handler, log: logging.Logger) -> Callable[[Request], Awaitable[Response]]:
    """Wrap ``handler(caller_hotkey, parsed_json) -> json-able`` with btauth/1 and error mapping."""

    async def route(request: Request) -> Response:
        try:
            body = await read_body(request)
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            caller = verifier.verify(request.headers, body, method=request.method, path=path)
            return json_response(await handler(caller, loads(body, "request body")))
        except OmronTeeError as e:
            log.info("refused %s %s: %s (%s)", request.method, request.url.path, e.reason, e)
            return error_response(e)
        except Exception as e:  # a bug of ours: still a JSON error, and no message that might carry data
            log.error("internal error on %s %s: %s", request.method, request.url.path, type(e).__name__)
            return error_response(OmronTeeError(f"internal error ({type(e).__name__})", reason="internal-error"))

    return route

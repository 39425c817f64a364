"""The miner's routes on the bare ASGI interface, no framework: the alternative ``bench_miner_http`` measures.

Complete enough to be a fair rival to the shipped Starlette routes (``miner.server``): bodies
bounded before they are read whole, named JSON refusals, routes guarded and logged as shipped,
the lifespan protocol, and a streamed answer stopped when its client goes away (what Starlette's
``StreamingResponse`` does by listening for ``http.disconnect``). Not shipped: measured side by
side against the shipped routes on a Starlette ``Router`` alone it saves the miner 3-4 % of its
CPU per request (docs/BENCHMARKS.md), too little to hand-roll what a well-kept library does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import time

from omron_tee.errors import OmronTeeError, ProtocolError
from omron_tee.protocol import REQUEST_MEDIA_TYPE, STREAM_MEDIA_TYPE, AttestRequest, InferRequest, dumps, loads
from omron_tee.reasons import Reason
from omron_tee.wire.server import MAX_BODY, error_response

log = logging.getLogger("omron_tee.miner")


def error_body(e: OmronTeeError) -> bytes:
    return error_response(e).body


def error_status(e: OmronTeeError) -> int:
    return error_response(e).status_code

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
JSON = "application/json"


class ClientGone(Exception):
    """The client disconnected before its request was read: nobody to answer."""


@dataclass(frozen=True)
class HttpRequest:
    """What a route sees of a request: method, the path with its query as sent (what btauth/1 signs),
    headers (names lower-case; a repeated name keeps its first value, as Starlette's did), and how to read more."""

    method: str
    target: str
    headers: dict[str, str]
    receive: Receive

    @classmethod
    def of(cls, scope: Scope, receive: Receive) -> "HttpRequest":
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:
            headers.setdefault(k.decode("latin-1"), v.decode("latin-1"))  # uvicorn gives names lower-case
        query = scope.get("query_string", b"")
        target = scope["path"] + ("?" + query.decode("latin-1") if query else "")
        return cls(scope["method"], target, headers, receive)

    @property
    def media_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()

    async def body(self, limit: int = MAX_BODY) -> bytes:
        """The body, refused (too-large) as soon as it exceeds ``limit``: by its declared length before
        a byte is read, else as it arrives, so an oversized body is never held whole."""
        declared = self.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise ProtocolError(f"request body exceeds {limit} bytes", reason=Reason.TOO_LARGE)
        chunks, size = [], 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ProtocolError(f"request body exceeds {limit} bytes", reason=Reason.TOO_LARGE)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _head(status: int, media_type: str, headers: dict[str, str], length: int | None) -> dict[str, Any]:
    raw = [(b"content-type", media_type.encode("latin-1"))]
    if length is not None:
        raw.append((b"content-length", str(length).encode("latin-1")))
    raw.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
    return {"type": "http.response.start", "status": status, "headers": raw}


class Responder:
    """Sends one response, and knows whether it has begun (after that, an error can only end the connection)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def bytes(self, body: bytes, *, status: int = 200, media_type: str = JSON, headers: dict[str, str] | None = None) -> None:
        self.started = True
        await self._send(_head(status, media_type, headers or {}, len(body)))
        await self._send({"type": "http.response.body", "body": body})

    async def error(self, e: OmronTeeError) -> None:
        await self.bytes(error_body(e), status=error_status(e))

    async def stream(self, chunks: AsyncIterator[bytes], receive: Receive, *, media_type: str, headers: dict[str, str] | None = None) -> None:
        """Each chunk as it is produced; the producer is cancelled (and closed) when the client disconnects."""
        self.started = True
        await self._send(_head(200, media_type, headers or {}, None))

        async def pump() -> None:
            async for chunk in chunks:
                await self._send({"type": "http.response.body", "body": chunk, "more_body": True})
            await self._send({"type": "http.response.body", "body": b""})

        async def gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        writer, watcher = asyncio.ensure_future(pump()), asyncio.ensure_future(gone())
        try:
            done, _ = await asyncio.wait((writer, watcher), return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when we are cancelled ourselves (the server stopping): nothing left running
            watcher.cancel()
            writer.cancel()
            await asyncio.gather(writer, watcher, return_exceptions=True)
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        if writer in done:
            writer.result()  # a producer's error, for the route's guard (the client gone: nothing to raise)


Route = Callable[[HttpRequest, Responder], Awaitable[None]]


async def lifespan(receive: Receive, send: Send) -> None:
    """ASGI's lifespan protocol, with nothing to start or stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class Router:
    """An ASGI application of exact ``(method, path)`` routes, each guarded: an ``OmronTeeError`` becomes its
    named JSON refusal, anything else (a bug of ours) a JSON internal-error with no message that could
    carry data; the log gets the reason only, never a body or a traceback. Unknown paths and methods
    are named refusals too (no-route, 404 and 405)."""

    def __init__(self, routes: dict[tuple[str, str], Route], log: logging.Logger) -> None:
        self._routes = routes
        self._paths = {path for _, path in routes}
        self._log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":  # websockets: not served; returning closes the connection
            return
        request = HttpRequest.of(scope, receive)
        out = Responder(send)
        path = scope["path"]
        route = self._routes.get((request.method, path))
        if route is None and request.method == "HEAD":
            route = self._routes.get(("GET", path))
        if route is None:
            refusal = OmronTeeError(f"no route for {request.method} {path[:64]}", reason=Reason.UNSUPPORTED)
            await out.bytes(error_body(refusal), status=405 if path in self._paths else 404)
            return
        try:
            await route(request, out)
        except ClientGone:
            return
        except OmronTeeError as e:
            self._log.info("refused %s %s: %s (%s)", request.method, path[:64], e.reason, e)
            if not out.started:
                await out.error(e)
        except Exception as e:  # noqa: BLE001
            self._log.error("internal error on %s %s: %s", request.method, path[:64], type(e).__name__)
            if not out.started:
                await out.error(OmronTeeError(f"internal error ({type(e).__name__})", reason=Reason.INTERNAL_ERROR))


def build_app(app_core: Any, verifier: Any) -> Router:
    no_store = {"Cache-Control": "no-store"}

    async def authenticated(request: HttpRequest) -> tuple[str, bytes]:
        """(caller hotkey, body) of a btauth/1-signed request; the signature covers the path with its query."""
        await verifier.precheck(request.headers)  # as the shipped routes: a sender who may not call, refused unread
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

"""Server side: a FastAPI route helper that authenticates, parses and maps errors.

Every refusal is a JSON body ``{"error": {"reason": slug, "message": text}}``
with a fitting status code, never a traceback: peers and users see what was
wrong, logs see the reason, nobody sees private data.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from omron_tee.errors import AuthError, ChannelError, MinerError, ModelError, OmronTeeError, ProtocolError, RateLimited
from omron_tee.protocol import dumps, loads
from omron_tee.wire.auth import RequestVerifier
from omron_tee.wire.client import SERVER_KEEP_ALIVE_S
from omron_tee.reasons import Reason
from omron_tee.wire.ratelimit import address_key

MAX_BODY = 8 * 1024 * 1024

_STATUS: list[tuple[type, int]] = [
    (AuthError, 401),
    (RateLimited, 429),
    (ProtocolError, 400),
    (ChannelError, 400),
    (ModelError, 422),
    (MinerError, 502),
]


# A request's head and body must arrive within this of the connection opening, or of the previous answer on it.
REQUEST_READ_S = 30.0
# Connections one network address (IPv6: its /64) may hold open at once; a validator uses 8 per miner.
MAX_CONNECTIONS_PER_ADDRESS = 128
_OPEN: weakref.WeakKeyDictionary[Any, collections.Counter[str]] = weakref.WeakKeyDictionary()  # per server: address -> connections


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the two bounds it lacks, which a peer could otherwise use to hold a server's
    connections (and file descriptors) without end: a deadline for each request to arrive whole (uvicorn times
    nothing until its first request is answered: an idle connection, or a head sent one byte at a time, stays open
    for ever), and a cap on the connections one address holds open. Not hand-rolled HTTP: the parsing and the
    protocol are uvicorn's; this only arms a timer on its callbacks and counts connections."""

    _guard_key: str | None = None
    _read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        key = address_key(self.client[0] if self.client else None)
        open_here = _OPEN.setdefault(self.server_state, collections.Counter())
        if open_here[key] >= MAX_CONNECTIONS_PER_ADDRESS:
            transport.close()
            return
        open_here[key] += 1
        self._guard_key = key
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._guard_key is not None:
            open_here = _OPEN.get(self.server_state)
            if open_here is not None:
                open_here[self._guard_key] -= 1
                if open_here[self._guard_key] <= 0:
                    del open_here[self._guard_key]
            self._guard_key = None
        super().connection_lost(exc)

    def on_message_complete(self) -> None:
        self._disarm()  # the request is in: answering it may take as long as its workload does
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection, if any, has the same deadline

    def _arm(self) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(REQUEST_READ_S, self._too_slow)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _too_slow(self) -> None:
        self._read_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def server_config(app: Any, *, host: str, port: int, max_concurrency: int | None = None) -> uvicorn.Config:
    """How every omron-tee HTTP server runs: quiet, and keeping idle connections open
    longer than our clients reuse them (``wire.client``), so reuse never races a close;
    each request bounded in the time it takes to arrive and each address in the connections it holds
    (``GuardedHttpProtocol``). ``max_concurrency``: connections and requests in flight together, past
    which uvicorn answers 503."""
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, timeout_keep_alive=SERVER_KEEP_ALIVE_S,
                          limit_concurrency=max_concurrency, http=GuardedHttpProtocol)


class QuietServer(uvicorn.Server):
    """uvicorn's server, waking once a second when idle instead of ten times, and still stopping at once.

    uvicorn's main loop polls its exit flag every 0.1 s: an idle miner spent 3.4 ms of CPU a second
    on it, 0.5 ms with this loop (``bench/bench_idle.py``). Setting ``should_exit`` (uvicorn's signal
    handler does, and so do callers that stop a server) wakes the loop, so shutdown waits for nothing.
    """

    _exit_flag = False
    _wake: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    @property  # type: ignore[override]
    def should_exit(self) -> bool:
        return self._exit_flag

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._exit_flag = value
        if value and self._wake is not None:
            loop, event = self._wake
            with contextlib.suppress(RuntimeError):  # the loop is already closed: nothing to wake
                loop.call_soon_threadsafe(event.set)  # safe from a signal handler too

    async def main_loop(self) -> None:
        event = asyncio.Event()
        self._wake = (asyncio.get_running_loop(), event)
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864000  # a tick is a second here; on_tick refreshes the Date header every 10 counts
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=1.0)
            should_exit = await self.on_tick(counter)


def error_response(e: OmronTeeError) -> JSONResponse:
    if e.reason == Reason.TOO_LARGE:
        return JSONResponse({"error": {"reason": e.reason, "message": str(e)}}, status_code=413)
    status = 500
    for cls, code in _STATUS:
        if isinstance(e, cls):
            status = code
            break
    if status == 401 and e.reason == Reason.CALLER_NOT_PERMITTED:
        status = 403
    headers = {"Retry-After": str(max(1, math.ceil(e.retry_after)))} if isinstance(e, RateLimited) and e.retry_after is not None else None
    return JSONResponse({"error": {"reason": e.reason, "message": str(e)}}, status_code=status, headers=headers)


def json_response(obj: Any) -> Response:
    return Response(content=dumps(obj), media_type="application/json")


Handler = Callable[[str, Any], Awaitable[Any]]


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The request body, refused as soon as it exceeds ``limit`` (before authentication,
    so an oversized body must never be read into memory whole)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise ProtocolError(f"request body exceeds {limit} bytes", reason=Reason.TOO_LARGE)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(f"request body exceeds {limit} bytes", reason=Reason.TOO_LARGE)
        chunks.append(chunk)
    return b"".join(chunks)


Route = Callable[[Request], Awaitable[Response]]


def guarded(handler: Route, log: logging.Logger, *, on_refusal: Callable[[str], None] | None = None) -> Route:
    """The one path every route takes: an ``OmronTeeError`` becomes its named JSON refusal
    (and ``on_refusal(reason)``, for metrics), anything else (a bug of ours) a JSON
    ``internal-error`` with no message that might carry data, and the log gets the reason
    only, never a traceback or a body."""

    async def route(request: Request) -> Response:
        try:
            return await handler(request)
        except OmronTeeError as e:
            log.info("refused %s %s: %s (%s)", request.method, request.url.path, e.reason, e)
            if on_refusal is not None:
                on_refusal(e.reason)
            return error_response(e)
        except Exception as e:  # noqa: BLE001
            log.error("internal error on %s %s: %s", request.method, request.url.path, type(e).__name__)
            return error_response(OmronTeeError(f"internal error ({type(e).__name__})", reason=Reason.INTERNAL_ERROR))

    return route


async def authenticated(request: Request, verifier: RequestVerifier) -> tuple[str, bytes]:
    """(caller hotkey, body) of a btauth/1-signed request; the signature covers the path with its query.
    A sender who may not call, or an address whose requests keep failing authentication, is refused on its
    headers, before its body is read (``RequestVerifier.precheck``)."""
    address = request.client.host if request.client else None
    await verifier.precheck(request.headers, address)
    body = await read_body(request)
    # From the scope, not ``request.url``: building the URL object costs more than the rest of this function.
    query = request.scope.get("query_string", b"")
    path = request.scope["path"] + ("?" + query.decode("latin-1") if query else "")
    return verifier.verify(request.headers, body, method=request.method, path=path, address=address), body


def signed_route(verifier: RequestVerifier, handler: Handler, log: logging.Logger, *, on_refusal: Callable[[str], None] | None = None) -> Route:
    """Wrap ``handler(caller_hotkey, parsed_json) -> json-able`` with btauth/1 and error mapping."""

    async def route(request: Request) -> Response:
        caller, body = await authenticated(request, verifier)
        return json_response(await handler(caller, loads(body, "request body")))

    return guarded(route, log, on_refusal=on_refusal)

"""Client side: signed JSON requests over httpx, bounded in time and size.

A peer is hostile until its answer is checked, so every request here has:

- a deadline for the whole exchange (connect, send, every byte of the answer),
  not httpx's per-read timeouts, which a peer that trickles one byte a second
  never trips;
- a cap on the answer's size, enforced while reading (the declared length
  first, then the bytes counted as they arrive), with compressed encodings
  refused rather than inflated;
- keep-alive connections that expire well before the server side's, and one
  retry when a reused connection turns out to have been closed under us, so
  the race between our reuse and the peer's idle close is never charged to an
  honest peer;
- one TLS context for every peer's pool (each would otherwise build its own:
  about 16 ms per peer, ``bench/bench_wire.py``).

Sending each request in one write (httpcore writes headers and body apart) was
measured too, through httpcore's network-backend interface: no gain on loopback
(0.88 to 1.22 of the time, no better), so it is not done.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from omron_tee.errors import MinerError, ProtocolError
from omron_tee.protocol import dumps, loads
from omron_tee.wire.auth import Signer
from omron_tee.reasons import Reason

# Peers (uvicorn) close idle connections after SERVER_KEEP_ALIVE_S; we stop reusing
# ours after CLIENT_KEEP_ALIVE_S, so we never send on a connection being closed.
SERVER_KEEP_ALIVE_S = 15.0
CLIENT_KEEP_ALIVE_S = 4.0
MAX_REPLY_BYTES = 16 * 1024 * 1024
MAX_ERROR_BYTES = 16 * 1024

# Transport failures that mean "the connection went away before an answer": worth one
# retry on a fresh connection (a closed keep-alive connection looks exactly like this).
_RETRYABLE = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class ReplyTooLarge(Exception):
    pass


@functools.lru_cache(maxsize=1)
def shared_tls_context() -> ssl.SSLContext:
    """The one TLS context (system trust store, certificate checks on) every peer's pool shares."""
    return ssl.create_default_context()


def get_json(url: str, *, max_bytes: int, timeout: float) -> Any:
    """``GET url`` (unsigned, blocking) and its JSON, bounded: ``timeout`` for the whole answer, ``max_bytes``
    read at most, decoded by ``untrusted.loads``; ``MinerError`` with a reason otherwise. For the few
    synchronous callers (a neuron's start-up check, the command line)."""
    deadline = time.monotonic() + timeout
    try:
        with httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0)), trust_env=False, headers={"Accept-Encoding": "identity"}) as h:
            with h.stream("GET", url) as resp:
                if resp.status_code != 200:
                    raise MinerError(f"{url} answered HTTP {resp.status_code}", reason=Reason.HTTP_ERROR)
                body = bytearray()
                for chunk in resp.iter_raw():
                    body += chunk
                    if len(body) > max_bytes:
                        raise MinerError(f"the answer from {url} exceeds {max_bytes} bytes", reason=Reason.TOO_LARGE)
                    if time.monotonic() > deadline:
                        raise MinerError(f"no whole answer from {url} within {timeout:g} s", reason=Reason.TIMEOUT)
    except httpx.TimeoutException:
        raise MinerError(f"no answer from {url} within {timeout:g} s", reason=Reason.TIMEOUT) from None
    except httpx.HTTPError as e:
        raise MinerError(f"cannot reach {url}: {type(e).__name__}", reason=Reason.UNREACHABLE) from None
    return _decoded(bytes(body), max_bytes)


def _decoded(raw: bytes, limit: int) -> Any:
    """A peer's JSON answer (``untrusted.loads``), or ``MinerError``: too-deep, too-large or malformed-reply."""
    try:
        return loads(raw, "reply", max_bytes=limit)
    except ProtocolError as e:
        reason = e.reason if e.reason in (Reason.TOO_DEEP, Reason.TOO_LARGE) else Reason.MALFORMED_REPLY
        raise MinerError(str(e), reason=reason) from None


async def read_capped(resp: httpx.Response, limit: int) -> bytes:
    """The raw body of ``resp``, refused (``ReplyTooLarge``) past ``limit`` bytes without reading further.
    (The headers, encoding and declared length, are ``SignedClient._open``'s to check.)"""
    chunks, size = [], 0
    async for chunk in resp.aiter_raw():
        size += len(chunk)
        if size > limit:
            raise ReplyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class SignedClient:
    """Keep-alive httpx pools, one per peer; every request is signed for its receiver.

    One small pool per peer rather than one large shared pool: httpcore scans
    every connection of a pool for every request it queues, which made a
    64-connection pool cost the validator more CPU than all its cryptography.
    """

    def __init__(self, signer: Signer, *, max_concurrency: int = 64, per_peer: int = 8, timeout: float = 10.0,
                 max_reply_bytes: int = MAX_REPLY_BYTES) -> None:
        self.signer = signer
        self._limit = asyncio.Semaphore(max_concurrency)
        self._per_peer = per_peer
        self._timeout = timeout
        self._max_reply = max_reply_bytes
        self._pools: dict[str, httpx.AsyncClient] = {}

    def _pool(self, base_url: str) -> httpx.AsyncClient:
        pool = self._pools.get(base_url)
        if pool is None:
            pool = httpx.AsyncClient(
                # The deadline below bounds the whole exchange; these only end a dead connection sooner.
                timeout=httpx.Timeout(self._timeout, connect=min(self._timeout, 3.0)),
                limits=httpx.Limits(max_connections=self._per_peer, max_keepalive_connections=self._per_peer, keepalive_expiry=CLIENT_KEEP_ALIVE_S),
                verify=shared_tls_context(),
                # trust_env=False: no proxies from the environment for peer-to-peer calls.
                trust_env=False,
                headers={"Accept-Encoding": "identity"},
            )
            self._pools[base_url] = pool
        return pool

    async def post(self, base_url: str, path: str, payload: Any, *, receiver: str | None, timeout: float | None = None,
                   max_bytes: int | None = None) -> Any:
        """POST ``payload`` as JSON; the parsed reply, or ``MinerError`` with a reason.

        ``timeout`` is a deadline for the whole exchange; ``max_bytes`` caps the reply.
        Reasons: timeout, unreachable, disconnected, too-large, malformed-reply, http-error,
        or the peer's own reason for refusing.
        """
        limit = self._max_reply if max_bytes is None else max_bytes
        async with self.stream(base_url, path, payload, receiver=receiver, timeout=timeout, max_bytes=limit, broken=Reason.DISCONNECTED) as body:
            raw = await body.read()
        return _decoded(raw, limit)

    @contextlib.asynccontextmanager
    async def stream(self, base_url: str, path: str, payload: Any, *, receiver: str | None, timeout: float | None = None,
                     max_bytes: int | None = None, broken: Reason = Reason.STREAM_TRUNCATED,
                     body: bytes | None = None, content_type: str = "application/json") -> AsyncIterator["ByteStream"]:
        """POST ``payload`` as JSON and read the answer as it arrives: ``async with client.stream(...) as s:
        async for data in s``. One deadline for the whole exchange (every byte included), the size
        cap, the peer's named refusals, and one retry when a reused keep-alive connection turns out
        closed before the answer began (the race with the peer's idle close: never the peer's
        fault). An answer that breaks off after it began is ``broken``. ``body`` (with its
        ``content_type``) sends bytes as they are instead of ``payload`` as JSON."""
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        limit = self._max_reply if max_bytes is None else max_bytes
        body = dumps(payload) if body is None else body
        async with self._limit:
            for attempt in (0, 1):
                headers = self.signer.headers("POST", path, body, receiver)
                headers["Content-Type"] = content_type
                try:
                    resp = await self._open(base_url, path, body, headers, deadline, limit)
                except _RETRYABLE as e:
                    if attempt == 0 and deadline - time.monotonic() > 0.05:
                        continue
                    raise MinerError(f"{base_url} closed the connection before answering ({type(e).__name__})", reason=Reason.DISCONNECTED) from None
                try:
                    yield ByteStream(resp, base_url, deadline, limit, broken)
                finally:
                    await resp.aclose()
                return

    async def get(self, base_url: str, path: str, *, timeout: float | None = None, max_bytes: int | None = None) -> Any:
        """GET a public (unsigned) route: the parsed JSON reply, with the same deadline, cap and named refusals as ``post``."""
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        limit = self._max_reply if max_bytes is None else max_bytes
        async with self._limit:
            resp = await self._open(base_url, path, b"", {}, deadline, limit, method="GET")
            try:
                raw = await ByteStream(resp, base_url, deadline, limit, Reason.DISCONNECTED).read()
            finally:
                await resp.aclose()
        return _decoded(raw, limit)

    async def _open(self, base_url: str, path: str, body: bytes, headers: dict[str, str], deadline: float, limit: int,
                    method: str = "POST") -> httpx.Response:
        left = deadline - time.monotonic()
        if left <= 0:
            raise MinerError(f"no answer from {base_url} within the deadline", reason=Reason.TIMEOUT)
        pool = self._pool(base_url)
        req = pool.build_request(method, base_url + path, content=body if method == "POST" else None, headers=headers, timeout=httpx.Timeout(left, connect=min(left, 3.0)))
        try:
            async with asyncio.timeout(left):
                resp = await pool.send(req, stream=True)
        except TimeoutError:
            raise MinerError(f"no answer from {base_url} within the deadline", reason=Reason.TIMEOUT) from None
        except httpx.TimeoutException:
            raise MinerError(f"no answer from {base_url} within the timeout", reason=Reason.TIMEOUT) from None
        except _RETRYABLE:
            raise
        except httpx.TransportError as e:
            raise MinerError(f"cannot reach {base_url}: {type(e).__name__}", reason=Reason.UNREACHABLE) from None
        try:
            if resp.status_code != 200:
                async with asyncio.timeout(max(0.01, deadline - time.monotonic())):
                    raw = await _read_error(resp)
                raise refusal(base_url, path, resp.status_code, raw)
            encoding = resp.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise MinerError(f"the answer uses content encoding {encoding[:16]!r}; only identity is accepted", reason=Reason.MALFORMED_REPLY)
            declared = resp.headers.get("content-length")
            if declared is not None and (not declared.strip().isdigit() or int(declared) > limit):
                raise MinerError(f"the answer from {base_url} exceeds {limit} bytes", reason=Reason.TOO_LARGE)
        except BaseException as e:
            await resp.aclose()
            if isinstance(e, (TimeoutError, httpx.HTTPError)):
                raise MinerError(f"no usable answer from {base_url} within the deadline", reason=Reason.TIMEOUT) from None
            raise
        return resp

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()


class ByteStream:
    """An answer's bytes as they arrive, within the exchange's deadline and size cap (``MinerError`` past either)."""

    def __init__(self, resp: httpx.Response, base_url: str, deadline: float, limit: int, broken: Reason = Reason.STREAM_TRUNCATED) -> None:
        self.headers = resp.headers
        self._broken = broken
        self._resp = resp
        self._base_url = base_url
        self._deadline = deadline
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        chunks = self._resp.aiter_raw().__aiter__()
        while True:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise MinerError(f"the answer from {self._base_url} ran past its deadline", reason=Reason.TIMEOUT)
            try:
                data = await asyncio.wait_for(chunks.__anext__(), left)
            except StopAsyncIteration:
                return
            except (TimeoutError, httpx.TimeoutException):
                raise MinerError(f"the answer from {self._base_url} ran past its deadline", reason=Reason.TIMEOUT) from None
            except httpx.TransportError as e:
                raise MinerError(f"the answer from {self._base_url} broke off ({type(e).__name__})", reason=self._broken) from None
            size += len(data)
            if size > self._limit:
                raise MinerError(f"the answer from {self._base_url} exceeds {self._limit} bytes", reason=Reason.TOO_LARGE)
            yield data

    async def read(self) -> bytes:
        """The whole answer (capped and within the deadline): one timer for the whole body, not one per chunk."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise MinerError(f"the answer from {self._base_url} ran past its deadline", reason=Reason.TIMEOUT)
        try:
            async with asyncio.timeout(left):
                return await read_capped(self._resp, self._limit)
        except (TimeoutError, httpx.TimeoutException):
            raise MinerError(f"the answer from {self._base_url} ran past its deadline", reason=Reason.TIMEOUT) from None
        except ReplyTooLarge:
            raise MinerError(f"the answer from {self._base_url} exceeds {self._limit} bytes", reason=Reason.TOO_LARGE) from None
        except httpx.TransportError as e:
            raise MinerError(f"the answer from {self._base_url} broke off ({type(e).__name__})", reason=self._broken) from None


async def _read_error(resp: httpx.Response) -> bytes:
    try:
        return await read_capped(resp, MAX_ERROR_BYTES)
    except ReplyTooLarge:
        return b""


def refusal(base_url: str, path: str, status: int, raw: bytes) -> MinerError:
    """The peer's named refusal (``{"error": {"reason", "message"}}``), or ``http-error``."""
    reason, message = Reason.HTTP_ERROR, f"HTTP {status}"
    try:
        err = loads(raw, "error body", max_bytes=MAX_ERROR_BYTES)["error"]
        r, m = err["reason"], err["message"]
        if isinstance(r, str) and isinstance(m, str) and 0 < len(r) <= 64:
            reason, message = r, m[:500]
    except (ProtocolError, KeyError, TypeError):
        pass
    return MinerError(f"{base_url}{path} refused: {message}", reason=reason)

"""Client side: signed requests over aiohttp, bounded in time and size.

A peer is hostile until its answer is checked, so every request here has:

- a deadline for the whole exchange (connect, send, every byte of the answer),
  not per-read timeouts, which a peer that trickles one byte a second never
  trips;
- a cap on the answer's size, enforced while reading (the declared length
  first, then the bytes counted as they arrive), with compressed encodings
  refused rather than inflated, and the head bounded by aiohttp's parser
  (``MAX_HEADERS`` fields of at most ``MAX_FIELD_BYTES``);
- no redirects followed (a miner could otherwise point the validator's signed
  requests at any address it likes), no cookies kept, no proxies from the
  environment;
- keep-alive connections that expire well before the server side's, and one
  retry when a reused connection turns out to have been closed under us, so
  the race between our reuse and the peer's idle close is never charged to an
  honest peer;
- one TLS context for every peer (each would otherwise build its own: about
  16 ms per peer, ``bench/bench_wire.py``).

Why aiohttp, not httpx (which this module used before): measured side by side
in one run (``bench/bench_wire.py``, its "client library" lines), httpx cost the
validator 2.6x aiohttp's CPU for a signed POST and 3.8x for a bare round trip,
and aiohttp's C parser bounds the head for us.
One connector serves every peer: it keeps idle connections per host in a
deque, so unlike httpcore's pool it does not scan every connection per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import httpx

from omron_tee.errors import MinerError, ProtocolError
from omron_tee.protocol import dumps, loads
from omron_tee.reasons import Reason
from omron_tee.untrusted import MAX_JSON_ITEMS
from omron_tee.wire.auth import Signer

# Peers (uvicorn) close idle connections after SERVER_KEEP_ALIVE_S; we stop reusing
# ours after CLIENT_KEEP_ALIVE_S, so we never send on a connection being closed.
SERVER_KEEP_ALIVE_S = 15.0
CLIENT_KEEP_ALIVE_S = 4.0
MAX_REPLY_BYTES = 16 * 1024 * 1024
MAX_ERROR_BYTES = 16 * 1024
# An answer's head: our own headers (btauth/1, the relay's list of miners tried) need a
# dozen fields of under 4 KiB; aiohttp refuses more as a malformed answer.
MAX_HEADERS = 32
MAX_FIELD_BYTES = 8190


class ReplyTooLarge(Exception):
    pass


class _Closed(Exception):
    """The connection went away before an answer began: worth one retry on a fresh connection
    (a keep-alive connection closed under us looks exactly like this)."""


@functools.lru_cache(maxsize=1)
def shared_tls_context() -> ssl.SSLContext:
    """The one TLS context (system trust store, certificate checks on) every peer's connections share."""
    return ssl.create_default_context()


def get_json(url: str, *, max_bytes: int, timeout: float) -> Any:
    """``GET url`` (unsigned, blocking) and its JSON, bounded: ``timeout`` for the whole answer, ``max_bytes``
    read at most, decoded by ``untrusted.loads``; ``MinerError`` with a reason otherwise. For the few
    synchronous callers (a neuron's start-up check, the command line), so on httpx's blocking client:
    aiohttp has none, and these callers may already be inside an event loop."""
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


def _decoded(raw: bytes, limit: int, max_items: int = MAX_JSON_ITEMS) -> Any:
    """A peer's JSON answer (``untrusted.loads``), or ``MinerError``: too-deep, too-large or malformed-reply."""
    try:
        return loads(raw, "reply", max_bytes=limit, max_items=max_items)
    except ProtocolError as e:
        reason = e.reason if e.reason in (Reason.TOO_DEEP, Reason.TOO_LARGE) else Reason.MALFORMED_REPLY
        raise MinerError(str(e), reason=reason) from None


async def read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The raw body of ``resp``, refused (``ReplyTooLarge``) past ``limit`` bytes without reading further.
    (The headers, encoding and declared length, are ``SignedClient._open``'s to check.)"""
    chunks, size = [], 0
    while data := await resp.content.readany():
        size += len(data)
        if size > limit:
            raise ReplyTooLarge
        chunks.append(data)
    return b"".join(chunks)


def _lowercased(headers: Mapping[str, str]) -> dict[str, str]:
    """An answer's headers as a plain dict of lower-case names (what ``http_auth.verify`` and our parsers read);
    a repeated field is joined with ", ", as HTTP defines."""
    out: dict[str, str] = {}
    for k, v in headers.items():
        k = k.lower()
        out[k] = f"{out[k]}, {v}" if k in out else v
    return out


class SignedClient:
    """Keep-alive connections to every peer (at most ``per_peer`` each); every request is signed for its receiver."""

    def __init__(self, signer: Signer, *, max_concurrency: int = 64, per_peer: int = 8, timeout: float = 10.0,
                 max_reply_bytes: int = MAX_REPLY_BYTES) -> None:
        self.signer = signer
        self._limit = asyncio.Semaphore(max_concurrency)
        self._max_concurrency = max_concurrency
        self._per_peer = per_peer
        self._timeout = timeout
        self._max_reply = max_reply_bytes
        self._http: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _session(self) -> aiohttp.ClientSession:
        """The session, made on first use in the running loop (aiohttp's belong to the loop that made them)."""
        loop = asyncio.get_running_loop()
        if self._http is None or self._http.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(limit=self._max_concurrency, limit_per_host=self._per_peer, ssl=shared_tls_context(),
                                             keepalive_timeout=CLIENT_KEEP_ALIVE_S)
            self._http = aiohttp.ClientSession(
                connector=connector,
                headers={"Accept-Encoding": "identity"},
                skip_auto_headers=("User-Agent",),
                auto_decompress=False,  # a compressed answer is refused, never inflated
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,  # no proxies from the environment for peer-to-peer calls
                max_headers=MAX_HEADERS, max_field_size=MAX_FIELD_BYTES, max_line_size=MAX_FIELD_BYTES,
            )
            self._loop = loop
        return self._http

    async def post(self, base_url: str, path: str, payload: Any, *, receiver: str | None, timeout: float | None = None,
                   max_bytes: int | None = None, max_items: int = MAX_JSON_ITEMS) -> Any:
        """POST ``payload`` as JSON; the parsed reply, or ``MinerError`` with a reason.

        ``timeout`` is a deadline for the whole exchange; ``max_bytes`` caps the reply, ``max_items`` its
        JSON's elements (refused on its bytes, before it is decoded).
        Reasons: timeout, unreachable, disconnected, too-large, malformed-reply, http-error,
        or the peer's own reason for refusing.
        """
        limit = self._max_reply if max_bytes is None else max_bytes
        async with self.stream(base_url, path, payload, receiver=receiver, timeout=timeout, max_bytes=limit, broken=Reason.DISCONNECTED) as body:
            raw = await body.read()
        return _decoded(raw, limit, max_items)

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

        def signed() -> dict[str, str]:  # signed again for a retry: btauth/1 refuses a replayed signature
            headers = self.signer.headers("POST", path, body, receiver)
            headers["Content-Type"] = content_type
            return headers

        async with self._limit:
            stream = ByteStream(await self._answer(base_url, path, body, signed, deadline, limit), base_url, deadline, limit, broken)
            try:
                yield stream
            finally:
                stream.close()

    async def get(self, base_url: str, path: str, *, timeout: float | None = None, max_bytes: int | None = None) -> Any:
        """GET a public (unsigned) route: the parsed JSON reply, with the same deadline, cap and named refusals as ``post``."""
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        limit = self._max_reply if max_bytes is None else max_bytes
        async with self._limit:
            stream = ByteStream(await self._answer(base_url, path, b"", dict, deadline, limit, method="GET"), base_url, deadline, limit, Reason.DISCONNECTED)
            try:
                raw = await stream.read()
            finally:
                stream.close()
        return _decoded(raw, limit)

    async def _answer(self, base_url: str, path: str, body: bytes, headers: Callable[[], dict[str, str]], deadline: float, limit: int,
                      method: str = "POST") -> aiohttp.ClientResponse:
        """``_open``, once more on a fresh connection when the first closed before the answer began (the race
        between our reuse of a keep-alive connection and the peer's idle close: never the peer's fault);
        ``headers()`` gives each attempt's headers."""
        retry = True
        while True:
            try:
                return await self._open(base_url, path, body, headers(), deadline, limit, method)
            except _Closed as e:
                if not retry or deadline - time.monotonic() <= 0.05:
                    raise MinerError(f"{base_url} closed the connection before answering ({e})", reason=Reason.DISCONNECTED) from None
                retry = False

    async def _open(self, base_url: str, path: str, body: bytes, headers: dict[str, str], deadline: float, limit: int,
                    method: str = "POST") -> aiohttp.ClientResponse:
        left = deadline - time.monotonic()
        if left <= 0:
            raise MinerError(f"no answer from {base_url} within the deadline", reason=Reason.TIMEOUT)
        session = self._session()
        try:
            async with asyncio.timeout(left):
                resp = await session.request(method, base_url + path, data=body if method == "POST" else None, headers=headers,
                                             allow_redirects=False, timeout=aiohttp.ClientTimeout(total=None, sock_connect=min(left, 3.0)))
        except TimeoutError:
            raise MinerError(f"no answer from {base_url} within the deadline", reason=Reason.TIMEOUT) from None
        except aiohttp.ClientConnectorError as e:  # before ClientOSError, its base: nothing was sent
            raise MinerError(f"cannot reach {base_url}: {type(e).__name__}", reason=Reason.UNREACHABLE) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
            raise _Closed(type(e).__name__) from None
        except aiohttp.ClientResponseError as e:  # a head aiohttp's parser refused (too long, too many fields, not HTTP)
            raise MinerError(f"{base_url} sent a malformed answer (HTTP parser: {e.message[:80]!s})", reason=Reason.MALFORMED_REPLY) from None
        except (aiohttp.ClientError, ValueError) as e:  # an unusable address, among others
            raise MinerError(f"cannot reach {base_url}: {type(e).__name__}", reason=Reason.UNREACHABLE) from None
        try:
            if resp.status != 200:
                async with asyncio.timeout(max(0.01, deadline - time.monotonic())):
                    raw = await _read_error(resp)
                raise refusal(base_url, path, resp.status, raw)
            encoding = resp.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise MinerError(f"the answer uses content encoding {encoding[:16]!r}; only identity is accepted", reason=Reason.MALFORMED_REPLY)
            declared = resp.headers.get("content-length")
            if declared is not None and (not declared.strip().isdigit() or int(declared) > limit):
                raise MinerError(f"the answer from {base_url} exceeds {limit} bytes", reason=Reason.TOO_LARGE)
        except BaseException as e:
            resp.close()
            if isinstance(e, (TimeoutError, aiohttp.ClientError)):
                raise MinerError(f"no usable answer from {base_url} within the deadline", reason=Reason.TIMEOUT) from None
            raise
        return resp

    async def aclose(self) -> None:
        http, self._http = self._http, None
        if http is not None and self._loop is asyncio.get_running_loop():
            await http.close()


class ByteStream:
    """An answer's bytes as they arrive, within the exchange's deadline and size cap (``MinerError`` past either).
    ``headers``: the answer's, with lower-case names."""

    def __init__(self, resp: aiohttp.ClientResponse, base_url: str, deadline: float, limit: int, broken: Reason = Reason.STREAM_TRUNCATED) -> None:
        self.headers = _lowercased(resp.headers)
        self._broken = broken
        self._resp = resp
        self._base_url = base_url
        self._deadline = deadline
        self._limit = limit
        self._whole = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        content = self._resp.content
        while True:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise self._late()
            try:
                async with asyncio.timeout(left):
                    data = await content.readany()
            except TimeoutError:
                raise self._late() from None
            except aiohttp.ClientError as e:
                raise self._broke(e) from None
            if not data:
                self._whole = True
                return
            size += len(data)
            if size > self._limit:
                raise self._too_large()
            yield data

    async def read(self) -> bytes:
        """The whole answer (capped and within the deadline): one timer for the whole body, not one per chunk."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise self._late()
        try:
            async with asyncio.timeout(left):
                raw = await read_capped(self._resp, self._limit)
        except TimeoutError:
            raise self._late() from None
        except ReplyTooLarge:
            raise self._too_large() from None
        except aiohttp.ClientError as e:
            raise self._broke(e) from None
        self._whole = True
        return raw

    def close(self) -> None:
        """Back to the pool when read to its end; otherwise the connection is closed (what is left of a
        broken or abandoned answer must not be read as the next one's)."""
        if self._whole:
            self._resp.release()
        else:
            self._resp.close()

    def _too_large(self) -> MinerError:
        return MinerError(f"the answer from {self._base_url} exceeds {self._limit} bytes", reason=Reason.TOO_LARGE)

    def _late(self) -> MinerError:
        return MinerError(f"the answer from {self._base_url} ran past its deadline", reason=Reason.TIMEOUT)

    def _broke(self, e: Exception) -> MinerError:
        return MinerError(f"the answer from {self._base_url} broke off ({type(e).__name__})", reason=self._broken)


async def _read_error(resp: aiohttp.ClientResponse) -> bytes:
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

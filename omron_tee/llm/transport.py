"""Signed, streamed HTTP for the LLM path: POST a btauth/1-signed JSON body, read the answer as it comes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from omron_tee.errors import ChannelError, MinerError
from omron_tee.llm.requester import Completion, PendingCompletion, StreamReader, TokenChunk
from omron_tee.protocol import dumps
from omron_tee.wire.auth import Signer
from omron_tee.wire.client import CLIENT_KEEP_ALIVE_S, MAX_ERROR_BYTES, ReplyTooLarge, read_capped, refusal
from omron_tee.reasons import Reason


def new_http(timeout: float = 30.0, max_connections: int = 64) -> httpx.AsyncClient:
    # Keep-alive shorter than the servers' (no reuse racing a close) and no compressed
    # encodings (no inflating a peer's bomb): as wire.client's pools.
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0)),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections, keepalive_expiry=CLIENT_KEEP_ALIVE_S),
        trust_env=False,
        headers={"Accept-Encoding": "identity"},
    )


async def open_stream(http: httpx.AsyncClient, signer: Signer, base_url: str, path: str, payload: Any, *, receiver: str | None,
                      timeout: float | None = None) -> httpx.Response:
    """Send the signed request; the response (status 200, body not read yet) or ``MinerError`` with the peer's reason."""
    body = dumps(payload)
    headers = signer.headers("POST", path, body, receiver)
    headers["Content-Type"] = "application/json"
    kwargs: dict[str, Any] = {}
    if timeout is not None:
        kwargs["timeout"] = httpx.Timeout(timeout, connect=min(timeout, 3.0))
    req = http.build_request("POST", base_url + path, content=body, headers=headers, **kwargs)
    try:
        resp = await http.send(req, stream=True)
    except httpx.TimeoutException:
        raise MinerError(f"no answer from {base_url} within the timeout", reason=Reason.TIMEOUT) from None
    except httpx.TransportError as e:
        raise MinerError(f"cannot reach {base_url}: {type(e).__name__}", reason=Reason.UNREACHABLE) from None
    if resp.status_code != 200:
        try:
            raw = await read_capped(resp, MAX_ERROR_BYTES)
        except (ReplyTooLarge, MinerError, httpx.HTTPError):
            raw = b""
        finally:
            await resp.aclose()
        raise refusal(base_url, path, resp.status_code, raw)
    return resp


# A whole completion (at most the runtime's token limit, each chunk padded to its bucket) is
# far below this; a stream past it is a miner filling our memory, not an answer.
MAX_STREAM_BYTES = 8 * 1024 * 1024
STREAM_DEADLINE_S = 120.0


async def raw_bytes(resp: httpx.Response, *, deadline_s: float = STREAM_DEADLINE_S, max_bytes: int = MAX_STREAM_BYTES) -> AsyncIterator[bytes]:
    """The body's bytes as they arrive, within ``deadline_s`` for the whole stream and ``max_bytes``
    in all (a miner that trickles or never stops is cut off); failures become ``MinerError``."""
    end = time.monotonic() + deadline_s
    size = 0
    chunks = resp.aiter_raw().__aiter__()
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise MinerError(f"the stream ran past its {deadline_s:g} s deadline", reason=Reason.TIMEOUT)
            try:
                data = await asyncio.wait_for(chunks.__anext__(), left)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise MinerError(f"the stream ran past its {deadline_s:g} s deadline", reason=Reason.TIMEOUT) from None
            size += len(data)
            if size > max_bytes:
                raise MinerError(f"the stream exceeds {max_bytes} bytes", reason=Reason.TOO_LARGE)
            yield data
    except httpx.TimeoutException:
        raise MinerError("the stream stalled past the timeout", reason=Reason.TIMEOUT) from None
    except httpx.TransportError as e:
        raise MinerError(f"the stream broke: {type(e).__name__}", reason=Reason.STREAM_TRUNCATED) from None
    finally:
        await resp.aclose()


async def read_completion(resp: httpx.Response, pending: PendingCompletion, *, model_hash: bytes, started: float | None = None,
                          on_chunk: Callable[[TokenChunk], Any] | None = None) -> Completion:
    """Open and check a sealed completion stream to the end."""
    reader = StreamReader(pending, model_hash=model_hash, started=started if started is not None else time.perf_counter())
    async for data in raw_bytes(resp):
        for chunk in reader.feed(data):
            if on_chunk is not None:
                r = on_chunk(chunk)
                if hasattr(r, "__await__"):
                    await r
    return reader.close()


async def iter_completion(resp: httpx.Response, pending: PendingCompletion, *, model_hash: bytes,
                          started: float | None = None) -> AsyncIterator[TokenChunk | Completion]:
    """Verified chunks as they arrive, then the checked ``Completion`` last."""
    reader = StreamReader(pending, model_hash=model_hash, started=started if started is not None else time.perf_counter())
    async for data in raw_bytes(resp):
        for chunk in reader.feed(data):
            yield chunk
    yield reader.close()


__all__ = ["ChannelError", "new_http", "open_stream", "raw_bytes", "read_completion", "iter_completion"]

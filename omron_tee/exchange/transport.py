"""Moving one exchange's bytes over HTTP: the requester's state machine (``requester``) decides, this only carries.

Requests to the miner, signed (btauth/1) for its hotkey: ``POST /attest``
(JSON), ``POST /infer`` (the sealed request; the answer is the sealed
stream, read as it arrives and fed to the ``AnswerReader``) and ``POST /infer/batch``
(several sealed requests; the answer is read whole and fed to the ``BatchReader``). Deadlines and
size caps are ``SignedClient``'s.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

from omron_tee.errors import OmronTeeError
from omron_tee.exchange.requester import Answer, AnswerReader, BatchReader
from omron_tee.protocol import BATCH_MEDIA_TYPE, REQUEST_MEDIA_TYPE, AttestRequest, AttestResponse, InferBatch, InferRequest
from omron_tee.wire.client import SignedClient

async def _once(data: bytes):
    yield data


# Evidence with every attachment allowed is well under this; a reply past it is refused unread.
MAX_ATTEST_REPLY_BYTES = 1024 * 1024
# and its JSON's elements: a real one has tens (evidence, keys, the models offered); past this it is refused on
# its bytes, before a hostile miner's million small arrays are decoded on the validator's one event loop.
MAX_ATTEST_REPLY_ITEMS = 4096


async def attest(client: SignedClient, url: str, request: AttestRequest, *, receiver: str, timeout: float) -> tuple[AttestResponse, float]:
    """The miner's (parsed, unverified) attestation and the round trip it took."""
    t0 = time.perf_counter()
    raw = await client.post(url, "/attest", request.to_json(), receiver=receiver, timeout=timeout, max_bytes=MAX_ATTEST_REPLY_BYTES,
                            max_items=MAX_ATTEST_REPLY_ITEMS)
    return AttestResponse.from_json(raw), time.perf_counter() - t0


def infer(client: SignedClient, url: str, request: InferRequest, *, receiver: str, timeout: float, max_bytes: int):
    """The miner's answer stream to ``request`` (``async with``), the request sent as a binary frame."""
    return client.stream(url, "/infer", None, body=request.to_bytes(), content_type=REQUEST_MEDIA_TYPE, receiver=receiver, timeout=timeout,
                         max_bytes=max_bytes)


async def answer(client: SignedClient, url: str, request: InferRequest, reader: AnswerReader, *, receiver: str, timeout: float,
                 on_part: Callable[[Any], Any] | None = None) -> Answer:
    """Send the sealed request and feed the answer's bytes to ``reader`` until it is verified."""
    reader.restart_clock()
    async with infer(client, url, request, receiver=receiver, timeout=timeout, max_bytes=reader.workload.max_stream) as body:
        # An answer that does not stream is read whole (one timer); a streamed one part by part.
        chunks = body if reader.workload.streamed else _once(await body.read())
        async for data in chunks:
            for part in reader.feed(data):
                if on_part is not None:
                    r = on_part(part)
                    if inspect.isawaitable(r):
                        await r
    result = reader.close()
    result.miner_hotkey = receiver
    return result


async def answer_batch(client: SignedClient, url: str, batch: InferBatch, reader: BatchReader, *, receiver: str,
                       timeout: float) -> list[Answer | OmronTeeError]:
    """Send the batch (one signed request) and give each of its requests' verified answer or refusal, in order."""
    reader.restart_clock()
    async with client.stream(url, "/infer/batch", None, body=batch.to_bytes(), content_type=BATCH_MEDIA_TYPE, receiver=receiver, timeout=timeout,
                             max_bytes=reader.max_bytes) as body:
        reader.feed(await body.read())
    results = reader.close()
    for r in results:
        if isinstance(r, Answer):
            r.miner_hotkey = receiver
    return results

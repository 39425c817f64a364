"""Relaying a third party's sealed request to the miners it sealed copies for, for every workload.

The client sealed one copy of its request per candidate miner; the validator
tries them in order within the client's deadline, skipping miners that no
longer serve, and passes the first answer on unread: whole when the
workload's answer is one part (so a miner that breaks off half-way is
failed over), as it arrives when the workload streams. A miner's failure is
counted against it only when it is the miner's fault, and relayed traffic
never moves scores (``validator.scoring``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi.responses import Response, StreamingResponse

from omron_tee.chain.base import Neuron
from omron_tee.errors import MinerError
from omron_tee.exchange import transport
from omron_tee.protocol import STREAM_MEDIA_TYPE, InferRequest, RelayReply, RelayRequest, Tried
from omron_tee.reasons import Reason
from omron_tee.validator.scoring import Outcome
from omron_tee.wire.client import SignedClient
from omron_tee.wire.server import error_response

log = logging.getLogger("omron_tee.validator.api")

# Refusals caused by the client's own request (bad ciphertext, stale key...), not by the
# miner: not even counted against it in the summaries.
REQUEST_FAULTS = frozenset({Reason.TAMPERED_CIPHERTEXT, Reason.MALFORMED_MESSAGE, Reason.BAD_KEY, Reason.UNKNOWN_KEY, Reason.UNSUPPORTED_SUITE, Reason.TOO_LARGE})


def relay_targets(miners: list[Neuron], request: RelayRequest, tried: list[Tried]) -> Iterator[tuple[str, InferRequest, Neuron, float]]:
    """The attempts still worth making among ``miners``, with the seconds left; skipped ones are noted in ``tried``."""
    by_hotkey = {n.hotkey: n for n in miners}
    deadline = time.monotonic() + request.deadline_ms / 1000
    for hotkey, sealed in request.attempts:
        neuron = by_hotkey.get(hotkey)
        left = deadline - time.monotonic()
        if left <= 0.05:
            tried.append(Tried(hotkey, Reason.DEADLINE))
            return
        if neuron is None or neuron.endpoint is None:
            tried.append(Tried(hotkey, Reason.NOT_SERVING))
            continue
        yield hotkey, sealed, neuron, left


def record_failure(validator: Any, neuron: Neuron, reason: str, tried: list[Tried]) -> None:
    """Count a relay failure (scoring never holds relayed traffic against a miner: see scoring)."""
    tried.append(Tried(neuron.hotkey, reason))
    if reason not in REQUEST_FAULTS:
        validator.record(Outcome(neuron.hotkey, neuron.uid, False, reason, None, None, None, kind="relay"))


def all_failed(tried: list[Tried]) -> MinerError:
    return MinerError("no miner answered within the deadline: " + ", ".join(f"{t.hotkey[:8]}…:{t.reason}" for t in tried), reason=Reason.ALL_MINERS_FAILED)


async def relay(validator: Any, client: SignedClient, request: RelayRequest, *, streamed: bool, attempt_timeout: float, max_bytes: int) -> Response:
    """The first miner's sealed answer stream, with ``RelayReply`` headers, or a named JSON refusal."""
    tried: list[Tried] = []
    for hotkey, sealed, neuron, left in relay_targets(await validator.current_miners(), request, tried):
        assert neuron.endpoint is not None
        timeout = left if streamed else min(left, attempt_timeout)
        stack = contextlib.AsyncExitStack()
        try:
            body = await stack.enter_async_context(transport.infer(client, neuron.endpoint.url, sealed, receiver=hotkey, timeout=timeout,
                                                                   max_bytes=max_bytes))
            if not streamed:
                data = await body.read()
        except MinerError as e:
            await stack.aclose()
            record_failure(validator, neuron, e.reason, tried)
            log.info("relay to uid %d failed (%s); trying the next miner if any", neuron.uid, e.reason)
            continue
        tried.append(Tried(hotkey, Reason.OK))
        headers = {**RelayReply(hotkey, tuple(tried)).to_headers(), "Cache-Control": "no-store"}
        if not streamed:
            await stack.aclose()
            validator.record(Outcome(neuron.hotkey, neuron.uid, True, Reason.OK, None, None, None, kind="relay"))
            return Response(data, media_type=STREAM_MEDIA_TYPE, headers=headers)
        return StreamingResponse(_pass_on(validator, neuron, body, stack), media_type=STREAM_MEDIA_TYPE, headers=headers)
    return error_response(all_failed(tried))


async def _pass_on(validator: Any, neuron: Neuron, body: Any, stack: contextlib.AsyncExitStack) -> AsyncIterator[bytes]:
    ok = False
    try:
        async for data in body:  # the client's deadline holds for the whole stream
            yield data
        ok = True
    except MinerError:
        pass  # the client sees the stream end without its final chunk: truncated
    finally:
        await stack.aclose()
        validator.record(Outcome(neuron.hotkey, neuron.uid, ok, Reason.OK if ok else Reason.STREAM_TRUNCATED, None, None, None, kind="relay"))

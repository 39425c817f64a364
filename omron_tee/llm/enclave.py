"""The trusted app's LLM service: open a sealed prompt, generate, stream sealed chunks, sign the receipt.

It runs beside (and shares the keys, models and faults of) the miner's
``TrustedApp``: the prompt is opened with the same attested HPKE key, and the
receipt is signed with the same attested signing key. Nothing here logs a
prompt or a completion.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from omron_tee.channel import KemSuite, Receipt, request_info, seal
from omron_tee.errors import LIBRARY_DECODE_ERRORS, ChannelError, ModelError, OmronTeeError, ProtocolError
from omron_tee.llm.model import RUNTIME
from omron_tee.llm.stream import KEY_LEN, ChunkSealer, CompletionPayload, frame, output_hash, prompt_hash, stream_info
from omron_tee.protocol import InferRequest, ReplyRoute, b64, dumps, loads
from omron_tee.reasons import Reason

# The dev fault "wrong output" (simulated enclaves only) changes the completion from this token on.
WRONG_OUTPUT_FROM = 2


@dataclass(frozen=True)
class OpenedRequest:
    route: ReplyRoute
    payload: CompletionPayload | None  # None: refused, for ``refusal``, inside the sealed stream
    keys: Any  # the EnclaveKeys the request was sealed to
    reply_kem: KemSuite
    refusal: str | None = None


class LlmService:
    def __init__(self, app: Any) -> None:
        self.app = app  # the miner's TrustedApp: keys (by key id), specs, runtimes, dev faults

    def llm_models(self) -> list[str]:
        return [m for m, s in self.app.specs.items() if s.runtime == RUNTIME]

    def open(self, request: InferRequest) -> OpenedRequest:
        """Open a sealed completion request; errors before the stream starts (``ChannelError``)."""
        keys = self.app.keys(request.key_id)
        plaintext = keys.hpke.open(request.sealed, request_info(request.key_id))
        try:
            fields = loads(plaintext, "sealed completion request")
            route = ReplyRoute.from_dict(fields)
            kem = KemSuite.parse(route.reply_kem)
            # Sealing the header now proves the reply key usable before the stream starts.
            seal(kem, route.reply_public, b"", stream_info(route.nonce))
        except (ProtocolError, ChannelError):
            # Answered in the clear (no usable reply key): say nothing of what was inside.
            raise ProtocolError("the sealed request is not a well-formed completion request") from None
        try:
            return OpenedRequest(route, CompletionPayload.from_dict(fields), keys, kem)
        except (OmronTeeError, *LIBRARY_DECODE_ERRORS) as e:
            reason = e.reason if isinstance(e, OmronTeeError) else Reason.MALFORMED_MESSAGE
            return OpenedRequest(route, None, keys, kem, refusal=f"{reason}: {e}")

    async def frames(self, opened: OpenedRequest) -> AsyncIterator[bytes]:
        """The sealed stream: header, then one chunk per token, then the final chunk with the receipt."""
        route = opened.route
        key = os.urandom(KEY_LEN)
        header = dumps({"key": b64(key), "model": opened.payload.model_id if opened.payload else ""})
        yield frame(seal(opened.reply_kem, route.reply_public, header, stream_info(route.nonce)))
        sealer = ChunkSealer(key, route.nonce)
        if opened.payload is None:  # malformed inside: a named refusal, sealed like any answer
            yield sealer.seal({"t": [], "b": "", "n_tokens": 0, "n_prompt": 0, "finish": "error", "error": opened.refusal}, final=True)
            return
        p = opened.payload
        faults = getattr(self.app, "faults", None)
        if faults is not None and faults.delay_s:
            await asyncio.sleep(faults.delay_s)
        tokens: list[int] = []
        pieces: list[bytes] = []
        error: str | None = None
        finish = "length"
        n_prompt = 0
        try:
            spec = self.app.specs.get(p.model_id)
            if spec is None or spec.runtime != RUNTIME:
                raise ModelError(f"model {p.model_id!r} is not an LLM served here (serving: {', '.join(self.llm_models()) or 'none'})", reason=Reason.UNKNOWN_MODEL)
            runtime = self.app.runtimes[p.model_id]
            n_prompt = len(runtime.check_request(p.prompt, p.max_tokens))
            wrong = bool(faults is not None and faults.wrong_output)
            gen = _in_thread(runtime, p.prompt, p.max_tokens)
            try:
                async for tok, piece in gen:
                    if wrong and len(tokens) >= WRONG_OUTPUT_FROM:
                        tok = (tok + 1) % runtime.n_vocab
                        piece = runtime.piece(tok)
                    tokens.append(tok)
                    pieces.append(piece)
                    yield sealer.seal({"t": [tok], "b": b64(piece)})
            finally:
                await gen.aclose()  # the requester went away (or we are done): stop generating now
            if len(tokens) < p.max_tokens:
                finish = "stop"
        except OmronTeeError as e:
            error = f"{e.reason}: {e}"
        except Exception as e:  # a runtime failure must still end the stream properly
            error = f"runtime-error: {type(e).__name__}"
        text = b"".join(pieces)
        receipt = Receipt(
            nonce=p.nonce,
            model_hash=self.app.specs[p.model_id].sha256 if p.model_id in self.app.specs else bytes(32),
            input_hash=prompt_hash(p.model_id, p.prompt, p.max_tokens),
            output_hash=output_hash(tokens, text),
            evidence_hash=p.evidence_hash,
            issued_at_ms=int(time.time() * 1000),
        )
        signed = Receipt(**{**receipt.__dict__, "signature": opened.keys.sign(receipt.signed_bytes())})
        final: dict[str, Any] = {"t": [], "b": "", "n_tokens": len(tokens), "n_prompt": n_prompt, "finish": finish}
        if error is not None:
            final["error"] = error
        else:
            final["receipt"] = signed.to_json()
        yield sealer.seal(final, final=True)


async def _in_thread(runtime: Any, prompt: str, max_tokens: int) -> AsyncIterator[tuple[int, bytes]]:
    """Run the blocking generator in a thread, handing tokens to the event loop as they come."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()
    done = object()

    def post(item: object) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone: nobody is listening
            stop.set()

    def work() -> None:
        try:
            for item in runtime.stream(prompt, max_tokens, stop):
                post(item)
                if stop.is_set():
                    break
        except BaseException as e:  # handed to the consumer
            post(e)
        finally:
            post(done)

    thread = threading.Thread(target=work, name="llm-generate", daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # the requester went away (or the stream ended): stop generating
        if thread.is_alive():
            await asyncio.to_thread(thread.join, 10.0)  # at most one token's time: the model is free again after this

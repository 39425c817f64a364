"""The requester's side of a private completion, without networking.

``seal_completion`` seals a prompt to an attested session (as
``exchange.seal_request`` does for tensors); ``StreamReader`` opens the
sealed stream as its bytes arrive: the header with the stream key, then each
chunk in order, and at the end checks that the final chunk came and that its
receipt is signed by the attested enclave key and covers this request and
every token received. Any failure is a ``ChannelError`` naming it.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field

from omron_tee.channel import HpkeKeyPair, Receipt, request_info, seal
from omron_tee.errors import ChannelError, OmronTeeError
from omron_tee.exchange import AttestedSession, new_nonce
from omron_tee.llm.stream import KEY_LEN, ChunkOpener, CompletionPayload, FrameReader, output_hash, prompt_hash, stream_info
from omron_tee.protocol import InferRequest, loads, unb64
from omron_tee.reasons import Reason


@dataclass(frozen=True)
class PendingCompletion:
    session: AttestedSession
    nonce: bytes
    model_id: str
    max_tokens: int
    input_hash: bytes
    reply_key: HpkeKeyPair


def seal_completion(session: AttestedSession, model_id: str, prompt: str, max_tokens: int, *, nonce: bytes | None = None) -> tuple[InferRequest, PendingCompletion]:
    """Seal ``prompt`` for ``model_id`` to the session's enclave key, with a fresh reply key."""
    nonce = new_nonce() if nonce is None else nonce
    reply_key = HpkeKeyPair.generate(session.kem)
    payload = CompletionPayload(
        nonce=nonce,
        model_id=model_id,
        prompt=prompt,
        max_tokens=max_tokens,
        reply_kem=session.kem.value,
        reply_public=reply_key.public_bytes,
        evidence_hash=session.evidence_hash,
    )
    sealed = seal(session.kem, session.keys.hpke_public, payload.encode(), request_info(session.key_id))
    pending = PendingCompletion(session, nonce, model_id, max_tokens, prompt_hash(model_id, prompt, max_tokens), reply_key)
    return InferRequest(key_id=session.key_id, sealed=sealed), pending


@dataclass(frozen=True)
class TokenChunk:
    index: int  # 1-based chunk number
    tokens: tuple[int, ...]
    data: bytes  # the bytes of these tokens (UTF-8, possibly a partial character)


@dataclass
class Completion:
    """A verified completion: the whole text, its tokens, the receipt, and how fast it came."""

    model_id: str
    text: str
    tokens: list[int]
    receipt: Receipt
    finish_reason: str
    ttft_s: float | None
    elapsed_s: float
    miner_hotkey: str = ""
    raw: bytes = b""  # the exact bytes the receipt's output hash covers (``text`` is their UTF-8 decoding)
    extra: dict = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float | None:
        """Decode speed: tokens after the first, over the time after the first."""
        if self.ttft_s is None or len(self.tokens) < 2 or self.elapsed_s <= self.ttft_s:
            return None
        return (len(self.tokens) - 1) / (self.elapsed_s - self.ttft_s)


class StreamReader:
    """Feed it the reply's bytes as they come; it yields verified chunks and ends with a ``Completion``."""

    def __init__(self, pending: PendingCompletion, *, model_hash: bytes, started: float | None = None) -> None:
        self.pending = pending
        self.model_hash = model_hash
        self.started = time.perf_counter() if started is None else started
        self._frames = FrameReader()
        self._opener: ChunkOpener | None = None
        self.tokens: list[int] = []
        self._data: list[bytes] = []
        self.ttft_s: float | None = None
        self.result: Completion | None = None

    def feed(self, data: bytes) -> list[TokenChunk]:
        out = []
        for f in self._frames.feed(data):
            chunk = self._on_frame(f)
            if chunk is not None:
                out.append(chunk)
        return out

    def _on_frame(self, data: bytes) -> TokenChunk | None:
        if self._opener is None:
            header = loads(self.pending.reply_key.open(data, stream_info(self.pending.nonce)), "stream header")
            try:
                key = base64.b64decode(header["key"], validate=True)
            except (KeyError, TypeError, ValueError):
                key = b""
            if len(key) != KEY_LEN:
                raise ChannelError("stream header carries no valid stream key", reason=Reason.STREAM_MALFORMED)
            self._opener = ChunkOpener(key, self.pending.nonce)
            return None
        if self.result is not None:
            raise ChannelError("data after the final chunk of the stream", reason=Reason.STREAM_TAMPERED)
        chunk, final = self._opener.open(data)
        try:
            toks = tuple(int(t) for t in chunk.get("t", []))
            piece = unb64(chunk.get("b", ""), "stream chunk bytes")
        except (TypeError, ValueError, OmronTeeError):
            raise ChannelError("stream chunk has malformed tokens", reason=Reason.STREAM_MALFORMED) from None
        if final:
            self._finish(chunk)
            return None
        if self.ttft_s is None and toks:
            self.ttft_s = time.perf_counter() - self.started
        if len(self.tokens) + len(toks) > self.pending.max_tokens:
            # Anyone can seal a stream to our reply key: only the receipt at the end is the
            # enclave's, so the stream is bounded by what was asked for, before that.
            raise ChannelError(f"the stream carries more than the {self.pending.max_tokens} tokens asked for", reason=Reason.STREAM_MALFORMED)
        self.tokens.extend(toks)
        self._data.append(piece)
        return TokenChunk(self._opener.seq, toks, piece)

    def _finish(self, chunk: dict) -> None:
        elapsed = time.perf_counter() - self.started
        if chunk.get("error"):
            raise ChannelError(f"the enclave refused the request: {chunk['error']}", reason=Reason.ENCLAVE_REFUSED)
        if chunk.get("n_tokens") != len(self.tokens):
            raise ChannelError(f"the final chunk counts {chunk.get('n_tokens')} tokens, {len(self.tokens)} arrived", reason=Reason.STREAM_TRUNCATED)
        try:
            receipt = Receipt.from_json(chunk.get("receipt"))
        except OmronTeeError:
            raise ChannelError("the final chunk has no valid receipt", reason=Reason.BAD_RECEIPT) from None
        receipt.verify(self.pending.session.keys.signing_public)
        text = b"".join(self._data)
        mismatches = [
            name
            for name, got, want in (
                ("nonce", receipt.nonce, self.pending.nonce),
                ("model hash", receipt.model_hash, self.model_hash),
                ("input hash", receipt.input_hash, self.pending.input_hash),
                ("output hash", receipt.output_hash, output_hash(self.tokens, text)),
                ("evidence hash", receipt.evidence_hash, self.pending.session.evidence_hash),
            )
            if got != want
        ]
        if mismatches:
            raise ChannelError(f"receipt does not match the request: {', '.join(mismatches)}", reason=Reason.BAD_RECEIPT)
        self.result = Completion(
            model_id=self.pending.model_id,
            text=text.decode("utf-8", errors="replace"),
            tokens=list(self.tokens),
            receipt=receipt,
            finish_reason=str(chunk.get("finish", "length")),
            ttft_s=self.ttft_s,
            elapsed_s=elapsed,
            raw=text,
            extra={"prompt_tokens": int(chunk.get("n_prompt", 0) or 0)},
        )

    def close(self) -> Completion:
        """The verified completion; ``ChannelError`` (stream-truncated) if the stream ended early."""
        if self.result is None:
            got = "no header" if self._opener is None else f"{len(self.tokens)} tokens and no final chunk"
            raise ChannelError(f"the stream ended before its final chunk ({got})", reason=Reason.STREAM_TRUNCATED)
        if self._frames.pending:
            raise ChannelError("trailing bytes after the final chunk", reason=Reason.STREAM_TAMPERED)
        return self.result

"""The sealed completion stream: request payload, frames, chunk sealing, hashes.

Request: the prompt travels HPKE-sealed to the attested enclave key in an
ordinary ``InferRequest`` (same padding buckets as every other request), as a
``CompletionPayload`` with the requester's one-time reply key.

Reply: a byte stream of frames, each ``len (4 bytes, big-endian) || frame``:

* frame 0, the *header*: HPKE-sealed to the reply key (info
  ``omron-tee/llm-stream/v1 || 0 || nonce``); it carries a fresh 32-byte
  stream key chosen by the enclave. Only the holder of the reply key learns it.
* frames 1..n, the *chunks*: ``flag (1 byte) || ChaCha20-Poly1305(stream key,
  nonce = chunk number (12 bytes), padded JSON, aad = tag || request nonce ||
  chunk number || flag)``. ``flag`` is 1 on the last chunk only. The chunk
  number is not sent: the reader counts, so a dropped, repeated or reordered
  chunk fails authentication, and a stream without its final chunk is
  truncated. The final chunk carries the enclave's signed receipt, whose
  output hash covers every token of the whole completion.

Chunk plaintexts are padded to power-of-two buckets (at least 128 bytes) so
token lengths do not show in the ciphertext sizes; the number of chunks and
their timing (one per token) do show, as in any streamed completion.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from omron_tee.errors import ChannelError
from omron_tee.protocol import _field, _nonce, b64, dumps, loads, unb64
from omron_tee.reasons import Reason

STREAM_INFO = b"omron-tee/llm-stream/v1"
CHUNK_TAG = b"omron-tee/llm-chunk/v1"
PROMPT_TAG = b"omron-tee/llm-prompt/v1"
OUTPUT_TAG = b"omron-tee/llm-output/v1"
KEY_LEN = 32
MAX_FRAME = 64 * 1024
MIN_CHUNK_BUCKET = 128
FLAG_MORE = 0
FLAG_FINAL = 1


def stream_info(nonce: bytes) -> bytes:
    return STREAM_INFO + b"\0" + nonce


def prompt_hash(model_id: str, prompt: str, max_tokens: int) -> bytes:
    """What the receipt's ``input_hash`` covers: the model id, the token budget and the prompt."""
    mid = model_id.encode()
    return hashlib.sha256(PROMPT_TAG + struct.pack(">I", len(mid)) + mid + struct.pack(">I", max_tokens) + prompt.encode("utf-8")).digest()


def output_hash(tokens: list[int], text: bytes) -> bytes:
    """What the receipt's ``output_hash`` covers: every token id, in order, and the bytes of the whole text."""
    ids = b"".join(struct.pack("<i", t) for t in tokens)
    return hashlib.sha256(OUTPUT_TAG + struct.pack(">I", len(tokens)) + ids + struct.pack(">I", len(text)) + text).digest()


MAX_TOKENS_FIELD = 1 << 16
MAX_PROMPT_CHARS = 1 << 20


@dataclass(frozen=True)
class CompletionPayload:
    """The plaintext sealed to the enclave for one private completion."""

    nonce: bytes
    model_id: str
    prompt: str
    max_tokens: int
    reply_kem: str
    reply_public: bytes
    evidence_hash: bytes

    def encode(self) -> bytes:
        return dumps({
            "kind": "completion",
            "nonce": b64(self.nonce),
            "model": self.model_id,
            "prompt": self.prompt,
            "max_tokens": self.max_tokens,
            "reply_kem": self.reply_kem,
            "reply_public": b64(self.reply_public),
            "evidence_hash": b64(self.evidence_hash),
        })

    @classmethod
    def decode(cls, raw: bytes) -> "CompletionPayload":
        return cls.from_dict(loads(raw, "sealed completion request"))

    @classmethod
    def from_dict(cls, d: Any) -> "CompletionPayload":
        what = "sealed completion request"
        if _field(d, "kind", what) != "completion":
            raise ChannelError("sealed request is not a completion request", reason=Reason.MALFORMED_MESSAGE)
        prompt = _field(d, "prompt", what)
        max_tokens = _field(d, "max_tokens", what)
        model = _field(d, "model", what)
        if not isinstance(prompt, str) or not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not isinstance(model, str):
            raise ChannelError("sealed completion request has a malformed prompt, model or max_tokens", reason=Reason.MALFORMED_MESSAGE)
        if not 1 <= max_tokens <= MAX_TOKENS_FIELD or len(prompt) > MAX_PROMPT_CHARS:
            # The runtime has tighter limits of its own; these keep the receipt's encoding in range.
            raise ChannelError(f"max_tokens must be 1 to {MAX_TOKENS_FIELD} and the prompt at most {MAX_PROMPT_CHARS} characters", reason=Reason.BAD_INPUT)
        return cls(
            nonce=_nonce(_field(d, "nonce", what), f"{what} nonce"),
            model_id=model[:128],
            prompt=prompt,
            max_tokens=max_tokens,
            reply_kem=str(_field(d, "reply_kem", what)),
            reply_public=unb64(_field(d, "reply_public", what), f"{what} reply key"),
            evidence_hash=unb64(_field(d, "evidence_hash", what), f"{what} evidence hash"),
        )


# --- framing -------------------------------------------------------------------------


def frame(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


class FrameReader:
    """Splits a byte stream (arriving in arbitrary pieces) into frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out = []
        while len(self._buf) >= 4:
            (n,) = struct.unpack_from(">I", self._buf)
            if n > MAX_FRAME:
                raise ChannelError(f"stream frame of {n} bytes exceeds {MAX_FRAME}", reason=Reason.STREAM_MALFORMED)
            if len(self._buf) < 4 + n:
                break
            out.append(bytes(self._buf[4 : 4 + n]))
            del self._buf[: 4 + n]
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)


def _pad(plaintext: bytes) -> bytes:
    size = MIN_CHUNK_BUCKET
    while size < len(plaintext) + 4:
        size *= 2
    return struct.pack(">I", len(plaintext)) + plaintext + bytes(size - 4 - len(plaintext))


def _unpad(padded: bytes) -> bytes:
    if len(padded) < 4:
        raise ChannelError("stream chunk is too short", reason=Reason.STREAM_MALFORMED)
    (n,) = struct.unpack_from(">I", padded)
    if n > len(padded) - 4:
        raise ChannelError("stream chunk has an impossible length", reason=Reason.STREAM_MALFORMED)
    return padded[4 : 4 + n]


def _aad(nonce: bytes, seq: int, flag: int) -> bytes:
    return CHUNK_TAG + nonce + struct.pack(">QB", seq, flag)


class ChunkSealer:
    """The enclave's side of one stream: numbers and seals chunks under the stream key."""

    def __init__(self, key: bytes, nonce: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)
        self._nonce = nonce
        self.seq = 0
        self.closed = False

    def seal(self, chunk: dict[str, Any], *, final: bool = False) -> bytes:
        if self.closed:
            raise ChannelError("stream already ended", reason=Reason.STREAM_CLOSED)
        self.seq += 1
        flag = FLAG_FINAL if final else FLAG_MORE
        body = dumps({"i": self.seq, **chunk})
        ct = self._aead.encrypt(self.seq.to_bytes(12, "big"), _pad(body), _aad(self._nonce, self.seq, flag))
        self.closed = final
        return frame(bytes([flag]) + ct)


class ChunkOpener:
    """The requester's side: opens chunks in order; any gap, repeat, swap or change fails."""

    def __init__(self, key: bytes, nonce: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)
        self._nonce = nonce
        self.seq = 0
        self.final = False

    def open(self, data: bytes) -> tuple[dict[str, Any], bool]:
        if self.final:
            raise ChannelError("data after the final chunk of the stream", reason=Reason.STREAM_TAMPERED)
        if len(data) < 1 + 16 or data[0] not in (FLAG_MORE, FLAG_FINAL):
            raise ChannelError("malformed stream chunk", reason=Reason.STREAM_MALFORMED)
        flag = data[0]
        seq = self.seq + 1
        try:
            padded = self._aead.decrypt(seq.to_bytes(12, "big"), data[1:], _aad(self._nonce, seq, flag))
        except InvalidTag:
            raise ChannelError(f"stream chunk {seq} does not authenticate (tampered, reordered or missing chunk)", reason=Reason.STREAM_TAMPERED) from None
        chunk = loads(_unpad(padded), "stream chunk")
        if not isinstance(chunk, dict) or chunk.get("i") != seq:
            raise ChannelError(f"stream chunk {seq} is numbered wrongly", reason=Reason.STREAM_TAMPERED)
        self.seq = seq
        self.final = flag == FLAG_FINAL
        return chunk, self.final

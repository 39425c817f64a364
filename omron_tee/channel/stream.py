"""The sealed answer stream every exchange replies with (a tensor answer is a stream of one part).

A byte stream of frames, each ``len (4 bytes, big-endian) || frame``:

* frame 0, the *header*: 32 random bytes the enclave draws for this answer (its
  *response nonce*, in the clear). The stream key is
  ``HKDF-SHA256(salt = response nonce, ikm = reply secret, info = omron-tee/stream/v2 || 0 || request nonce)``,
  the reply secret being 32 random bytes the requester put inside its sealed request:
  only the requester and the enclave that opened the request know it (as OHTTP,
  RFC 9458 section 4.4, derives its response key; the trade-off is in docs/ARCHITECTURE.md).
  The response nonce makes each answer's key its own, so an operator replaying one
  sealed request never gets two answers under one key and chunk number.
* frames 1..n, the *chunks*: ``flag (1 byte) || AES-256-GCM(stream key,
  nonce = chunk number (12 bytes), padded JSON, aad = tag || request nonce ||
  chunk number || flag)``. ``flag`` is 1 on the last chunk only. The chunk
  number is not sent: the reader counts, so a dropped, repeated or reordered
  chunk fails authentication, and a stream without its final chunk is
  truncated. The final chunk carries the enclave's signed receipt.

Chunk plaintexts are padded to power-of-two buckets (at least 128 bytes; the
final chunk at least 2 KiB, so a refusal looks like a small answer), so sizes
do not show what a chunk holds; the number of chunks and their timing
do show, as in any streamed answer.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from omron_tee import untrusted
from omron_tee.channel.hpke import pad, unpad
from omron_tee.errors import ChannelError, ProtocolError
from omron_tee.reasons import Reason

STREAM_INFO = b"omron-tee/stream/v2"
CHUNK_TAG = b"omron-tee/chunk/v1"
KEY_LEN = 32
REPLY_SECRET_LEN = 32
RESPONSE_NONCE_LEN = 32
DEFAULT_MAX_FRAME = 64 * 1024
MIN_CHUNK_BUCKET = 128
# The final chunk (a receipt, an answer that does not stream, or a refusal) has a larger floor,
# so that a refusal and a small answer are the same size.
MIN_FINAL_BUCKET = 2048
FLAG_MORE = 0
FLAG_FINAL = 1


def stream_info(nonce: bytes) -> bytes:
    return STREAM_INFO + b"\0" + nonce


def new_reply_secret() -> bytes:
    """The requester's secret for one request's answer, sealed inside the request."""
    return os.urandom(REPLY_SECRET_LEN)


def stream_key(reply_secret: bytes, response_nonce: bytes, nonce: bytes) -> bytes:
    """The key of one answer's stream: the request's reply secret, extracted with the answer's own
    response nonce as salt, expanded for the request's nonce."""
    return HKDF(hashes.SHA256(), KEY_LEN, salt=response_nonce, info=stream_info(nonce)).derive(reply_secret)


def frame(data: bytes, flag: bytes = b"") -> bytes:
    """``len || flag || data`` (``flag``: a chunk's one byte), joined in one copy."""
    return b"".join((struct.pack(">I", len(flag) + len(data)), flag, data))


def seal_header(reply_secret: bytes, nonce: bytes) -> tuple[bytes, bytes]:
    """(stream key, the header frame: a fresh response nonce), the enclave's side."""
    response_nonce = os.urandom(RESPONSE_NONCE_LEN)
    return stream_key(reply_secret, response_nonce, nonce), frame(response_nonce)


def open_header(reply_secret: bytes, data: bytes, nonce: bytes) -> bytes:
    """The stream key from the header frame, or ``ChannelError``."""
    if len(data) != RESPONSE_NONCE_LEN:
        raise ChannelError("stream header is not a response nonce", reason=Reason.STREAM_MALFORMED)
    return stream_key(reply_secret, data, nonce)


class FrameReader:
    """Splits a byte stream (arriving in arbitrary pieces) into frames of at most ``max_frame`` bytes."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes) -> list[bytes]:
        # With nothing held back (a whole answer, or pieces that end on a frame boundary) the frames are cut
        # from ``data`` itself; otherwise ``data`` joins what is held, which grows in place (amortised linear).
        held = bool(self._buf)
        if held:
            self._buf += data
        buf = self._buf if held else data
        out, at = [], 0
        view = memoryview(buf)
        try:
            while len(view) - at >= 4:
                (n,) = struct.unpack_from(">I", view, at)
                if n > self.max_frame:
                    raise ChannelError(f"stream frame of {n} bytes exceeds {self.max_frame}", reason=Reason.STREAM_MALFORMED)
                if len(view) - at < 4 + n:
                    break
                out.append(bytes(view[at + 4 : at + 4 + n]))
                at += 4 + n
        finally:
            view.release()  # before the buffer is resized
        if held:
            del self._buf[:at]
        else:
            self._buf = bytearray(buf[at:])  # a partial frame: kept for the next piece
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)


def _aad(nonce: bytes, seq: int, flag: int) -> bytes:
    return CHUNK_TAG + nonce + struct.pack(">QB", seq, flag)


class ChunkSealer:
    """The enclave's side of one stream: numbers and seals chunks under the stream key."""

    def __init__(self, key: bytes, nonce: bytes) -> None:
        self._aead = AESGCM(key)
        self._nonce = nonce
        self.seq = 0
        self.closed = False

    def seal(self, chunk: dict[str, Any], *, final: bool = False) -> bytes:
        if self.closed:
            raise ChannelError("stream already ended", reason=Reason.STREAM_CLOSED)
        self.seq += 1
        flag = FLAG_FINAL if final else FLAG_MORE
        body = untrusted.dumps_attached_parts({"i": self.seq, **chunk})  # bytes in a part travel as attachments
        padded = pad(body, MIN_FINAL_BUCKET if final else MIN_CHUNK_BUCKET)
        ct = self._aead.encrypt(self.seq.to_bytes(12, "big"), padded, _aad(self._nonce, self.seq, flag))
        self.closed = final
        return frame(ct, bytes([flag]))


class ChunkOpener:
    """The requester's side: opens chunks in order; any gap, repeat, swap or change fails."""

    def __init__(self, key: bytes, nonce: bytes, *, max_chunk: int = DEFAULT_MAX_FRAME) -> None:
        self._aead = AESGCM(key)
        self._nonce = nonce
        self._max_chunk = max_chunk
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
            padded = self._aead.decrypt(seq.to_bytes(12, "big"), memoryview(data)[1:], _aad(self._nonce, seq, flag))  # no copy of the ciphertext
        except InvalidTag:
            raise ChannelError(f"stream chunk {seq} does not authenticate (tampered, reordered or missing chunk)", reason=Reason.STREAM_TAMPERED) from None
        try:
            chunk = untrusted.loads_attached(unpad(padded, reason=Reason.STREAM_MALFORMED, view=True), "stream chunk", max_bytes=self._max_chunk)
        except ProtocolError as e:
            # Authenticated, so the enclave's own bytes: still the miner's fault, named.
            raise ChannelError(f"stream chunk {seq} is malformed: {e}", reason=Reason.STREAM_MALFORMED) from None
        if not isinstance(chunk, dict) or chunk.get("i") != seq:
            raise ChannelError(f"stream chunk {seq} is numbered wrongly", reason=Reason.STREAM_TAMPERED)
        self.seq = seq
        self.final = flag == FLAG_FINAL
        return chunk, self.final

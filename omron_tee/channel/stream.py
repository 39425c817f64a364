"""The sealed answer stream every exchange replies with (a tensor answer is a stream of one part).

A byte stream of frames, each ``len (4 bytes, big-endian) || frame``:

* frame 0, the *header*: a fresh 32-byte stream key chosen by the enclave,
  HPKE-sealed to the requester's one-time reply key (info
  ``omron-tee/stream/v1 || 0 || nonce``). Only the holder of the reply key learns it.
* frames 1..n, the *chunks*: ``flag (1 byte) || ChaCha20-Poly1305(stream key,
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
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from omron_tee import untrusted
from omron_tee.channel.hpke import HpkeKeyPair, KemSuite, pad, seal, unpad
from omron_tee.errors import ChannelError, ProtocolError
from omron_tee.reasons import Reason

STREAM_INFO = b"omron-tee/stream/v1"
CHUNK_TAG = b"omron-tee/chunk/v1"
KEY_LEN = 32
DEFAULT_MAX_FRAME = 64 * 1024
MIN_CHUNK_BUCKET = 128
# The final chunk (a receipt, an answer that does not stream, or a refusal) has a larger floor,
# so that a refusal and a small answer are the same size.
MIN_FINAL_BUCKET = 2048
FLAG_MORE = 0
FLAG_FINAL = 1


def stream_info(nonce: bytes) -> bytes:
    return STREAM_INFO + b"\0" + nonce


def frame(data: bytes, flag: bytes = b"") -> bytes:
    """``len || flag || data`` (``flag``: a chunk's one byte), joined in one copy."""
    return b"".join((struct.pack(">I", len(flag) + len(data)), flag, data))


def seal_header(kem: KemSuite, reply_public: bytes, nonce: bytes) -> tuple[bytes, bytes]:
    """(stream key, the header frame: the key itself, HPKE-sealed to the reply key)."""
    key = os.urandom(KEY_LEN)
    return key, frame(seal(kem, reply_public, key, stream_info(nonce)))


def open_header(reply_key: HpkeKeyPair, data: bytes, nonce: bytes) -> bytes:
    """The stream key from the header frame, or ``ChannelError``."""
    key = reply_key.open(data, stream_info(nonce))
    if len(key) != KEY_LEN:
        raise ChannelError("stream header carries no valid stream key", reason=Reason.STREAM_MALFORMED)
    return key


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
        self._aead = ChaCha20Poly1305(key)
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
        self._aead = ChaCha20Poly1305(key)
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

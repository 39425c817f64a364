"""Decoding bytes that came from a peer: bounded in size, depth and element count.

Every JSON body that arrives from the network (a miner's reply, a client's
request, evidence, a receipt file, a zk proof) is decoded here and nowhere
else. The standard library's decoder recurses once per nesting level and
raises ``RecursionError`` (not a ``ValueError``) for deep input, which used to
escape every handler; it also happily builds millions of objects. Here every
failure is a ``ProtocolError`` with a stable reason, before the value reaches
code that walks it.

Depth and element count are bounded on the bytes, before decoding (counting
brackets and commas outside string literals, ``structure``), so the decoder
never recurses past the limit nor builds past it, and a hostile body costs a
pass over its bytes, not a decode and a walk of what it built: a peer's
oversized answer must not hold the validator's one event loop, on which every
other miner's answer is being timed.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from omron_tee.errors import ProtocolError
from omron_tee.reasons import Reason

MAX_JSON_BYTES = 16 * 1024 * 1024
MAX_JSON_DEPTH = 32  # our deepest message (a relayed attestation of attached evidence) is under 8
MAX_JSON_ITEMS = 200_000  # members of containers, all levels together


_JSON_STRING = re.compile(rb'"[^"]*"')  # a string literal, once its escaped backslashes and quotes are gone
_STEP = np.zeros(256, dtype=np.int8)  # +1 opens a container, -1 closes one
_STEP[list(b"[{")] = 1
_STEP[list(b"]}")] = -1
_MEMBER = np.zeros(256, dtype=np.uint8)  # what bounds the members: commas and openings
_MEMBER[list(b",[{")] = 1
_QUOTE = ord('"')
# Below this many strings the expression is the faster way past them; above it a mask over every byte
# (measured on 1 MiB: 350k empty strings cost the expression 94 ms, the mask 20 ms; one base64 string 3 and 14).
_REGEX_UP_TO_QUOTES = 40_000


def structure(body: bytes) -> tuple[int, int]:
    """(the deepest nesting of ``[``/``{``, an upper bound on the members of all containers together), counted
    on the bytes outside string literals: what the decoder would recurse to and build.

    Decided before decoding, because recursing near the interpreter's limit is itself the harm (any
    finaliser the garbage collector runs at that moment fails too), and a value walked after decoding
    costs the whole decode first. Exact for any text the decoder accepts as UTF-8 JSON; on any other
    text the decoder stops at the first byte where the two readings part, before which they agree,
    so the depth counted here still bounds its recursion. Members: a container's are its commas
    plus one, so all of them together are at most the commas plus the containers."""
    # Escaped backslashes, then escaped quotes, dropped first (at memchr speed; left to right, a run of
    # backslashes keeps only its parity): every quote left delimits a string.
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    if unescaped.count(b'"') < _REGEX_UP_TO_QUOTES:
        structural = np.frombuffer(_JSON_STRING.sub(b"", unescaped), dtype=np.uint8)
    else:  # many strings: each match of the expression costs a step of its own, a mask over the bytes does not
        a = np.frombuffer(unescaped, dtype=np.uint8)
        quote = a == _QUOTE
        outside = (np.cumsum(quote, dtype=np.int32) & 1) == 0  # an opening quote makes the count odd until its closing one
        outside &= ~quote
        structural = a[outside]
    depth = int(np.cumsum(_STEP[structural], dtype=np.int32).max(initial=0))
    return depth, int(np.count_nonzero(_MEMBER[structural]))


def check_structure(raw: bytes, what: str, *, max_depth: int = MAX_JSON_DEPTH, max_items: int = MAX_JSON_ITEMS) -> None:
    """``ProtocolError`` (too-deep, too-large) unless the JSON text ``raw`` nests at most ``max_depth`` deep
    and holds at most ``max_items`` members, decided on its bytes (``structure``), before any decoder runs."""
    # Fast path, counting in string literals too (an upper bound, at memchr speed): fewer brackets than the
    # depth limit cannot nest past it, fewer commas and brackets than the element limit cannot hold more
    # members. A long base64 or escaped string, the usual large body, never needs the pass below.
    brackets = raw.count(b"[") + raw.count(b"{")
    if brackets > max_depth or brackets + raw.count(b",") > max_items:
        depth, members = structure(raw)
        if depth > max_depth:
            raise ProtocolError(f"{what} is nested deeper than {max_depth} levels", reason=Reason.TOO_DEEP)
        if members > max_items:
            raise ProtocolError(f"{what} has more than {max_items} elements", reason=Reason.TOO_LARGE)


def loads(body: bytes | str, what: str, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH, max_items: int = MAX_JSON_ITEMS) -> Any:
    """``body`` decoded as JSON, or ``ProtocolError`` (reasons: malformed-message, too-deep, too-large)."""
    if len(body) > max_bytes:
        raise ProtocolError(f"{what} exceeds {max_bytes} bytes", reason=Reason.TOO_LARGE)
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body)
    if not isinstance(body, str) and json.detect_encoding(raw) not in ("utf-8", "utf-8-sig"):
        # JSON between systems is UTF-8 (RFC 8259, 8.1); the decoder would also take UTF-16 and UTF-32,
        # whose bytes the structure below does not read.
        raise ProtocolError(f"{what} is not UTF-8 JSON", reason=Reason.MALFORMED_MESSAGE)
    check_structure(raw, what, max_depth=max_depth, max_items=max_items)
    try:
        value = json.loads(body)
    except RecursionError:
        raise ProtocolError(f"{what} is nested deeper than {max_depth} levels", reason=Reason.TOO_DEEP) from None
    except MemoryError:
        raise ProtocolError(f"{what} is too large to decode", reason=Reason.TOO_LARGE) from None
    except (ValueError, UnicodeDecodeError, TypeError):
        raise ProtocolError(f"{what} is not valid JSON", reason=Reason.MALFORMED_MESSAGE) from None
    return value


# JSON with binary attachments: ``bytes`` values travel as they are after the JSON, not as base64
# inside it (a tensor's data: a third smaller, and no base64 work on either side).
_ATTACHED_MAGIC = b"OTSB\x01"
MAX_ATTACHMENTS = 16


def dumps_attached(obj: Any) -> bytes:
    """``obj`` as compact JSON, or, when it holds ``bytes`` values, as magic ‖ u32 header length ‖ header
    ‖ the blobs; the header is ``{"b": [blob lengths], "j": obj}`` with each value ``{"$blob": i}``."""
    return b"".join(dumps_attached_parts(obj))


def dumps_attached_parts(obj: Any) -> list[bytes]:
    """``dumps_attached``'s bytes in parts, not joined (``hpke.pad`` joins them with its padding, in one copy)."""
    blobs: list[bytes] = []

    def attach(v: Any) -> Any:
        # The encoder calls this for what JSON cannot hold, in document order: the walk is the C encoder's,
        # not a copy of ``obj`` built in Python first (which cost each side of an exchange about 5 % of its CPU).
        if isinstance(v, (bytes, bytearray, memoryview)):
            blobs.append(bytes(v))
            return {"$blob": len(blobs) - 1}
        raise TypeError(f"{type(v).__name__} is not JSON serializable")

    body = json.dumps(obj, separators=(",", ":"), default=attach)
    if not blobs:
        return [body.encode()]
    if len(blobs) > MAX_ATTACHMENTS:
        raise ProtocolError(f"at most {MAX_ATTACHMENTS} binary attachments")
    header = ('{"b":' + json.dumps([len(b) for b in blobs], separators=(",", ":")) + ',"j":' + body + "}").encode()
    return [_ATTACHED_MAGIC + len(header).to_bytes(4, "big") + header, *blobs]


def loads_attached(data: bytes | memoryview, what: str, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """``dumps_attached``'s inverse, bounded like every peer's JSON (``loads``): at most ``max_bytes``
    in all, the header's size, depth and elements, at most ``MAX_ATTACHMENTS`` attachments whose
    lengths add up to what follows; plain JSON is read as ``loads`` reads it. ``data`` may be a view
    (``hpke.unpad``'s): each attachment is then its one copy, as ``bytes``."""
    if len(data) > max_bytes:
        raise ProtocolError(f"{what} exceeds {max_bytes} bytes", reason=Reason.TOO_LARGE)
    n = len(_ATTACHED_MAGIC)
    if bytes(data[:n]) != _ATTACHED_MAGIC:
        return loads(bytes(data), what, max_bytes=max_bytes)
    if len(data) < n + 4:
        raise ProtocolError(f"{what} is cut short")
    size = int.from_bytes(data[n:n + 4], "big")
    if n + 4 + size > len(data):
        raise ProtocolError(f"{what} has an impossible header length")
    header = loads(bytes(data[n + 4:n + 4 + size]), what, max_bytes=max_bytes)
    lengths = header.get("b") if isinstance(header, dict) else None
    if (not isinstance(lengths, list) or len(lengths) > MAX_ATTACHMENTS or not all(type(x) is int and x >= 0 for x in lengths)
            or sum(lengths) != len(data) - n - 4 - size or "j" not in header):
        raise ProtocolError(f"{what}'s attachments do not match its header")
    blobs, at = [], n + 4 + size
    for length in lengths:
        blobs.append(bytes(data[at:at + length]))
        at += length
    used: set[int] = set()

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            if len(v) == 1 and "$blob" in v:
                i = v["$blob"]
                if type(i) is not int or not 0 <= i < len(blobs) or i in used:
                    raise ProtocolError(f"{what} names an attachment it does not carry")
                used.add(i)
                return blobs[i]
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    out = walk(header["j"])
    if len(used) != len(blobs):
        raise ProtocolError(f"{what} carries attachments it does not name")
    return out

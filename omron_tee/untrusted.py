"""Decoding bytes that came from a peer: bounded in size, depth and element count.

Every JSON body that arrives from the network (a miner's reply, a client's
request, evidence, a receipt file, a zk proof) is decoded here and nowhere
else. The standard library's decoder recurses once per nesting level and
raises ``RecursionError`` (not a ``ValueError``) for deep input, which used to
escape every handler; it also happily builds millions of objects. Here every
failure is a ``ProtocolError`` with a stable reason, before the value reaches
code that walks it.

Depth is checked on the bytes before decoding (counting brackets outside
string literals, so the decoder never recurses past the limit), and again on
the decoded value, iteratively, with the element count, unless the bytes alone
prove both bounds (fewer brackets than the depth limit, fewer bytes than the
element limit): the element bound caps the cost of that second walk.
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
MAX_JSON_ITEMS = 200_000  # containers and their members, all levels together


def check_shape(value: Any, what: str, *, max_depth: int = MAX_JSON_DEPTH, max_items: int = MAX_JSON_ITEMS) -> None:
    """Refuse a decoded value nested deeper than ``max_depth`` or with more than ``max_items`` members."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    items = 0
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            members = node.values()
        elif isinstance(node, list):
            members = node
        else:
            continue
        if depth > max_depth:
            raise ProtocolError(f"{what} is nested deeper than {max_depth} levels", reason=Reason.TOO_DEEP)
        items += len(node)
        if items > max_items:
            raise ProtocolError(f"{what} has more than {max_items} elements", reason=Reason.TOO_LARGE)
        stack.extend((m, depth + 1) for m in members if isinstance(m, (dict, list)))


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # a string literal, escapes included (unrolled: linear time)
_OPEN, _CLOSE = frozenset(b"[{"), frozenset(b"]}")


def nesting_depth(body: bytes) -> int:
    """The deepest nesting of ``[``/``{`` outside string literals (what the decoder would recurse to).

    Decided before decoding, because recursing near the interpreter's limit is itself the
    harm: any finaliser that the garbage collector runs at that moment fails too."""
    structural = _JSON_STRING.sub(b"", body)
    steps = np.frombuffer(structural, dtype=np.uint8)
    delta = np.isin(steps, list(_OPEN)).astype(np.int32) - np.isin(steps, list(_CLOSE)).astype(np.int32)
    return int(np.cumsum(delta).max(initial=0))


def loads(body: bytes | str, what: str, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH, max_items: int = MAX_JSON_ITEMS) -> Any:
    """``body`` decoded as JSON, or ``ProtocolError`` (reasons: malformed-message, too-deep, too-large)."""
    if len(body) > max_bytes:
        raise ProtocolError(f"{what} exceeds {max_bytes} bytes", reason=Reason.TOO_LARGE)
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body)
    # Fast path: fewer brackets than the depth limit cannot nest past it.
    brackets = raw.count(b"[") + raw.count(b"{")
    if brackets > max_depth and nesting_depth(raw) > max_depth:
        raise ProtocolError(f"{what} is nested deeper than {max_depth} levels", reason=Reason.TOO_DEEP)
    try:
        value = json.loads(body)
    except RecursionError:
        raise ProtocolError(f"{what} is nested deeper than {max_depth} levels", reason=Reason.TOO_DEEP) from None
    except MemoryError:
        raise ProtocolError(f"{what} is too large to decode", reason=Reason.TOO_LARGE) from None
    except (ValueError, UnicodeDecodeError, TypeError):
        raise ProtocolError(f"{what} is not valid JSON", reason=Reason.MALFORMED_MESSAGE) from None
    if len(raw) > max_items or brackets > max_depth:
        # Otherwise both bounds are already proven: fewer brackets than max_depth cannot nest deeper, and
        # every member of a container starts at its own byte, so there are fewer members than bytes.
        check_shape(value, what, max_depth=max_depth, max_items=max_items)
    return value


# JSON with binary attachments: ``bytes`` values travel as they are after the JSON, not as base64
# inside it (a tensor's data: a third smaller, and no base64 work on either side).
_ATTACHED_MAGIC = b"OTSB\x01"
MAX_ATTACHMENTS = 16


def dumps_attached(obj: Any) -> bytes:
    """``obj`` as compact JSON, or, when it holds ``bytes`` values, as magic ‖ u32 header length ‖ header
    ‖ the blobs; the header is ``{"b": [blob lengths], "j": obj}`` with each value ``{"$blob": i}``."""
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
        return body.encode()
    if len(blobs) > MAX_ATTACHMENTS:
        raise ProtocolError(f"at most {MAX_ATTACHMENTS} binary attachments")
    header = ('{"b":' + json.dumps([len(b) for b in blobs], separators=(",", ":")) + ',"j":' + body + "}").encode()
    return _ATTACHED_MAGIC + len(header).to_bytes(4, "big") + header + b"".join(blobs)


def loads_attached(data: bytes, what: str, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """``dumps_attached``'s inverse, bounded like every peer's JSON (``loads``): at most ``max_bytes``
    in all, the header's size, depth and elements, at most ``MAX_ATTACHMENTS`` attachments whose
    lengths add up to what follows; plain JSON is read as ``loads`` reads it."""
    if len(data) > max_bytes:
        raise ProtocolError(f"{what} exceeds {max_bytes} bytes", reason=Reason.TOO_LARGE)
    if not data.startswith(_ATTACHED_MAGIC):
        return loads(data, what, max_bytes=max_bytes)
    n = len(_ATTACHED_MAGIC)
    if len(data) < n + 4:
        raise ProtocolError(f"{what} is cut short")
    size = int.from_bytes(data[n:n + 4], "big")
    if n + 4 + size > len(data):
        raise ProtocolError(f"{what} has an impossible header length")
    header = loads(data[n + 4:n + 4 + size], what, max_bytes=max_bytes)
    lengths = header.get("b") if isinstance(header, dict) else None
    if (not isinstance(lengths, list) or len(lengths) > MAX_ATTACHMENTS or not all(type(x) is int and x >= 0 for x in lengths)
            or sum(lengths) != len(data) - n - 4 - size or "j" not in header):
        raise ProtocolError(f"{what}'s attachments do not match its header")
    blobs, at = [], n + 4 + size
    for length in lengths:
        blobs.append(data[at:at + length])
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

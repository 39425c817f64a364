"""Decoding bytes that came from a peer: bounded in size, depth and element count.

Every JSON body that arrives from the network (a miner's reply, a client's
request, evidence, a receipt file, a zk proof) is decoded here and nowhere
else. The standard library's decoder recurses once per nesting level and
raises ``RecursionError`` (not a ``ValueError``) for deep input, which used to
escape every handler; it also happily builds millions of objects. Here every
failure is a ``ProtocolError`` with a stable reason, before the value reaches
code that walks it.

Depth is checked twice: on the bytes before decoding (counting brackets outside
string literals, so the decoder never recurses past the limit) and on the
decoded value, iteratively; the element bound caps the cost of the second.
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
    if raw.count(b"[") + raw.count(b"{") > max_depth and nesting_depth(raw) > max_depth:
        raise ProtocolError(f"{what} is nested deeper than {max_depth} levels", reason=Reason.TOO_DEEP)
    try:
        value = json.loads(body)
    except RecursionError:
        raise ProtocolError(f"{what} is nested deeper than {max_depth} levels", reason=Reason.TOO_DEEP) from None
    except MemoryError:
        raise ProtocolError(f"{what} is too large to decode", reason=Reason.TOO_LARGE) from None
    except (ValueError, UnicodeDecodeError, TypeError):
        raise ProtocolError(f"{what} is not valid JSON", reason=Reason.MALFORMED_MESSAGE) from None
    check_shape(value, what, max_depth=max_depth, max_items=max_items)
    return value

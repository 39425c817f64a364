"""A bounds-checked little-endian reader shared by the abi parsers.

Every read names the field it reads, so that a short or malformed buffer
becomes a ``ParseError`` saying which structure and which field is at fault
(never an ``IndexError`` or ``struct.error``).
"""

from __future__ import annotations

from omron_tee.errors import ParseError


class Reader:
    """Reads fields from ``data[start:end]`` in order, little-endian."""

    __slots__ = ("data", "pos", "end", "structure")

    def __init__(self, data: bytes, structure: str, *, start: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = start
        self.end = len(data) if end is None else end
        self.structure = structure

    def error(self, field: str, message: str) -> ParseError:
        return ParseError(self.structure, field, message)

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def bytes(self, n: int, field: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise self.error(
                field,
                f"needs {n} bytes at offset {self.pos}, only {max(self.end - self.pos, 0)} left",
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self, n: int, field: str) -> int:
        return int.from_bytes(self.bytes(n, field), "little")

    def u8(self, field: str) -> int:
        return self.uint(1, field)

    def u16(self, field: str) -> int:
        return self.uint(2, field)

    def u32(self, field: str) -> int:
        return self.uint(4, field)

    def u64(self, field: str) -> int:
        return self.uint(8, field)

    def zeros(self, n: int, field: str) -> None:
        """Reserved bytes that the format requires to be zero."""
        if any(self.bytes(n, field)):
            raise self.error(field, "reserved bytes must be zero")

    def expect_end(self, field: str) -> None:
        if self.pos != self.end:
            raise self.error(field, f"{self.end - self.pos} unexpected trailing bytes")


def require_bytes(data: object, structure: str) -> bytes:
    """Reject non-bytes input with a ParseError (parsers accept bytes-like only)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise ParseError(structure, "input", f"expected bytes, got {type(data).__name__}")

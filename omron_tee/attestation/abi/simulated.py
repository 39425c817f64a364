"""The simulated attestation report: a development stand-in for a quote.

Layout (all integers big-endian)::

    0   6   magic  b"OTSIM\\x01"
    6   2   version (1)
    8   2   flags  (bit 0: debug)
    10  8   issued_at, milliseconds since the Unix epoch
    18  48  measurement (SHA-384 of the trusted app: code and model hashes)
    66  64  report_data
    130 32  key_id: SHA-256 of the raw Ed25519 public key that signs
    162 64  Ed25519 signature over bytes 0..162

It mirrors what real reports carry (measurement, report data, debug flag)
so that the same policy code handles it; it proves nothing about hardware,
which is why validators accept it only on a local network.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from omron_tee.errors import ParseError

MAGIC = b"OTSIM\x01"
VERSION = 1
FLAG_DEBUG = 0x0001
SIGNED_LEN = 162
TOTAL_LEN = SIGNED_LEN + 64
_HEADER = struct.Struct(">6sHHQ48s64s32s")
assert _HEADER.size == SIGNED_LEN


@dataclass(frozen=True)
class SimulatedReport:
    version: int
    flags: int
    issued_at_ms: int
    measurement: bytes
    report_data: bytes
    key_id: bytes
    signature: bytes
    signed_bytes: bytes

    @property
    def debug(self) -> bool:
        return bool(self.flags & FLAG_DEBUG)


def encode_body(*, flags: int, issued_at_ms: int, measurement: bytes, report_data: bytes, key_id: bytes) -> bytes:
    """The signed part of a report (the signer appends its 64-byte signature)."""
    return _HEADER.pack(MAGIC, VERSION, flags, issued_at_ms, measurement, report_data, key_id)


def parse(data: bytes) -> SimulatedReport:
    if len(data) != TOTAL_LEN:
        raise ParseError("simulated report", "length", f"expected {TOTAL_LEN} bytes, got {len(data)}")
    magic, version, flags, issued_at_ms, measurement, report_data, key_id = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ParseError("simulated report", "magic", "not a simulated report")
    if version != VERSION:
        raise ParseError("simulated report", "version", f"unsupported version {version}")
    if flags & ~FLAG_DEBUG:
        raise ParseError("simulated report", "flags", f"unknown flag bits 0x{flags:04x}")
    return SimulatedReport(
        version=version,
        flags=flags,
        issued_at_ms=issued_at_ms,
        measurement=measurement,
        report_data=report_data,
        key_id=key_id,
        signature=data[SIGNED_LEN:],
        signed_bytes=data[:SIGNED_LEN],
    )

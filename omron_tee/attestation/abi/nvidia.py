"""NVIDIA Hopper GPU attestation report: SPDM 1.1 GET_MEASUREMENTS + MEASUREMENTS.

The driver hands out the requester's message followed by the GPU's response
(DMTF DSP0274 1.1, all integers little-endian)::

    request (37):  SPDMVersion 0x11 | code 0xE0 | param1 (bit 0: signature
                   requested) | param2 (0xFF: all measurements) |
                   nonce (32) | slot id (1)
    response:      SPDMVersion | code 0x60 | param1 | param2 (slot id) |
                   number of blocks (1) | record length (3) | record |
                   nonce (32, the responder's) | opaque length (2) |
                   opaque data | signature (96: r || s, big-endian P-384)

Each measurement block is ``index (1) | spec (1, bit 0 = DMTF) | size (2) |
value type (1) | value size (2) | value``. NVIDIA's opaque data is a list of
``type (2) | size (2) | value`` fields (driver and VBIOS versions, FWID...).

The signature covers request || response without its last 96 bytes; this
module only parses (see verify.nvidia).
"""

from __future__ import annotations

from dataclasses import dataclass

from omron_tee.attestation.abi.binary import Reader, require_bytes
from omron_tee.errors import ParseError

STRUCTURE = "NVIDIA SPDM report"
SPDM_VERSION_1_1 = 0x11
GET_MEASUREMENTS = 0xE0
MEASUREMENTS = 0x60
REQUEST_LEN = 37
NONCE_LEN = 32
MAX_TRAILING_LEN = 4096
SIGNATURE_LEN = 96  # ECDSA P-384, r || s
MAX_OPAQUE_LEN = 1024  # DSP0274: OpaqueLength shall not exceed 1024
DMTF_MEASUREMENT_SPEC = 0x01

OPAQUE_FIELD_NAMES = {
    1: "cert_issuer_name",
    2: "cert_authority_key_identifier",
    3: "driver_version",
    4: "gpu_info",
    5: "sku",
    6: "vbios_version",
    7: "manufacturer_id",
    8: "tamper_detection",
    9: "smc",
    10: "vpr",
    11: "nvdec0_status",
    12: "msrscnt",
    13: "cprinfo",
    14: "board_id",
    15: "chip_sku",
    16: "chip_sku_mod",
    17: "project",
    18: "project_sku",
    19: "project_sku_mod",
    20: "fwid",
    21: "protected_pcie_status",
    22: "switch_pdi",
    23: "floorswept_ports",
    24: "position_id",
    25: "lock_switch_status",
    32: "gpu_link_conn",
    33: "sys_enable_status",
    34: "opaque_data_version",
    35: "chip_info",
    36: "feature_flag",
}


@dataclass(frozen=True)
class GetMeasurementsRequest:
    spdm_version: int
    param1: int
    param2: int
    nonce: bytes
    slot_id: int

    @property
    def signature_requested(self) -> bool:
        return bool(self.param1 & 1)


@dataclass(frozen=True)
class MeasurementBlock:
    index: int
    spec: int
    value_type: int
    value: bytes

    @property
    def raw_bitstream(self) -> bool:
        return bool(self.value_type & 0x80)


@dataclass(frozen=True)
class OpaqueField:
    field_type: int
    value: bytes

    @property
    def name(self) -> str:
        return OPAQUE_FIELD_NAMES.get(self.field_type, f"type_{self.field_type}")


@dataclass(frozen=True)
class MeasurementsResponse:
    spdm_version: int
    param1: int
    param2: int
    blocks: tuple[MeasurementBlock, ...]
    nonce: bytes
    opaque: tuple[OpaqueField, ...]
    signature: bytes

    def opaque_value(self, name: str) -> bytes | None:
        for f in self.opaque:
            if f.name == name:
                return f.value
        return None


@dataclass(frozen=True)
class NvidiaReport:
    request: GetMeasurementsRequest
    response: MeasurementsResponse
    signed_bytes: bytes  # request || response minus the signature

    @property
    def nonce(self) -> bytes:
        """The verifier's nonce, from the (signed) request."""
        return self.request.nonce

    def measurements(self) -> dict[int, bytes]:
        return {b.index: b.value for b in self.response.blocks}

    @property
    def driver_version(self) -> str | None:
        v = self.response.opaque_value("driver_version")
        return None if v is None else v.split(b"\0", 1)[0].decode("ascii", "replace")

    @property
    def vbios_version(self) -> str | None:
        """As NVIDIA formats it for RIM ids: e.g. 96.00.9F.00.01."""
        v = self.response.opaque_value("vbios_version")
        if v is None or len(v) != 8:
            return None
        h = f"{int.from_bytes(v, 'little'):016X}"
        digits = h[8:] + h[6:8]
        return ".".join(digits[i : i + 2] for i in range(0, len(digits), 2))

    @property
    def fwid(self) -> bytes | None:
        return self.response.opaque_value("fwid")

    def opaque_text(self, name: str) -> str | None:
        v = self.response.opaque_value(name)
        return None if v is None else v.split(b"\0", 1)[0].decode("ascii", "replace")


def _parse_request(r: Reader) -> GetMeasurementsRequest:
    version = r.u8("request.spdm_version")
    if version != SPDM_VERSION_1_1:
        raise r.error("request.spdm_version", f"unsupported SPDM version 0x{version:02x} (expected 0x11)")
    code = r.u8("request.code")
    if code != GET_MEASUREMENTS:
        raise r.error("request.code", f"0x{code:02x} is not GET_MEASUREMENTS (0xe0)")
    param1 = r.u8("request.param1")
    if not param1 & 1:
        raise r.error("request.param1", "the request did not ask for a signed response")
    param2 = r.u8("request.param2")
    nonce = r.bytes(NONCE_LEN, "request.nonce")
    slot = r.u8("request.slot_id")
    if slot > 7:
        raise r.error("request.slot_id", f"slot {slot} is out of range 0..7")
    return GetMeasurementsRequest(version, param1, param2, nonce, slot)


def _parse_blocks(r: Reader, count: int) -> tuple[MeasurementBlock, ...]:
    blocks = []
    seen = set()
    for i in range(count):
        f = f"response.measurement_record[{i}]"
        index = r.u8(f"{f}.index")
        spec = r.u8(f"{f}.spec")
        size = r.u16(f"{f}.size")
        if not spec & DMTF_MEASUREMENT_SPEC:
            raise r.error(f"{f}.spec", f"measurement specification 0x{spec:02x} is not DMTF")
        if index in seen or index == 0:
            raise r.error(f"{f}.index", f"index {index} is zero or repeated")
        seen.add(index)
        if size < 3:
            raise r.error(f"{f}.size", f"{size} bytes cannot hold a DMTF measurement")
        value_type = r.u8(f"{f}.value_type")
        value_size = r.u16(f"{f}.value_size")
        if value_size != size - 3:
            raise r.error(f"{f}.value_size", f"{value_size} does not match block size {size}")
        blocks.append(MeasurementBlock(index, spec, value_type, r.bytes(value_size, f"{f}.value")))
    r.expect_end("response.measurement_record")
    return tuple(blocks)


def _parse_opaque(r: Reader) -> tuple[OpaqueField, ...]:
    fields = []
    i = 0
    while r.remaining:
        t = r.u16(f"response.opaque[{i}].type")
        n = r.u16(f"response.opaque[{i}].size")
        fields.append(OpaqueField(t, r.bytes(n, f"response.opaque[{i}].value")))
        i += 1
    return tuple(fields)


def parse(data: bytes) -> NvidiaReport:
    data = require_bytes(data, STRUCTURE)
    if len(data) <= REQUEST_LEN + 8 + NONCE_LEN + 2 + SIGNATURE_LEN:
        raise ParseError(STRUCTURE, "length", f"{len(data)} bytes is too short for a request and a signed response")
    r = Reader(data, STRUCTURE)
    request = _parse_request(r)
    version = r.u8("response.spdm_version")
    if version != request.spdm_version:
        raise r.error("response.spdm_version", f"0x{version:02x} differs from the request's 0x{request.spdm_version:02x}")
    code = r.u8("response.code")
    if code != MEASUREMENTS:
        raise r.error("response.code", f"0x{code:02x} is not MEASUREMENTS (0x60)")
    param1 = r.u8("response.param1")
    param2 = r.u8("response.param2")
    if (param2 & 0x0F) != request.slot_id:
        raise r.error("response.param2", f"slot {param2 & 0x0F} differs from the requested slot {request.slot_id}")
    count = r.u8("response.number_of_blocks")
    record_len = r.uint(3, "response.measurement_record_length")
    if record_len > r.remaining:
        raise r.error("response.measurement_record_length", f"declares {record_len} bytes, {r.remaining} remain")
    if count == 0:
        raise r.error("response.number_of_blocks", "a signed response for all measurements carries no block")
    rec = Reader(data, STRUCTURE, start=r.pos, end=r.pos + record_len)
    blocks = _parse_blocks(rec, count)
    r.pos += record_len
    nonce = r.bytes(NONCE_LEN, "response.nonce")
    opaque_len = r.u16("response.opaque_length")
    if opaque_len > MAX_OPAQUE_LEN:
        raise r.error("response.opaque_length", f"{opaque_len} exceeds the SPDM limit of {MAX_OPAQUE_LEN}")
    if opaque_len > r.remaining:
        raise r.error("response.opaque_length", f"declares {opaque_len} bytes, {r.remaining} remain")
    opaque = _parse_opaque(Reader(data, STRUCTURE, start=r.pos, end=r.pos + opaque_len))
    r.pos += opaque_len
    if r.remaining < SIGNATURE_LEN:
        raise r.error("response.signature", f"expected {SIGNATURE_LEN} bytes (ECDSA P-384), found {r.remaining}")
    signed_end = r.pos
    signature = r.bytes(SIGNATURE_LEN, "response.signature")
    # Drivers may hand the transcript over with bytes after the signature: nothing signs
    # them, so they are skipped (as NVIDIA's verifier slices the signature by length).
    if r.remaining > MAX_TRAILING_LEN:
        raise r.error("trailing", f"{r.remaining} bytes after the signature exceed {MAX_TRAILING_LEN}")
    response = MeasurementsResponse(version, param1, param2, blocks, nonce, opaque, signature)
    return NvidiaReport(request, response, data[:signed_end])


def decode_report_text(text: str | bytes) -> bytes:
    """The bytes of a report given as hex text (as NVIDIA's tools write it)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise ParseError(STRUCTURE, "hex", "report text is not ASCII hex") from None
    cleaned = "".join(text.split())
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise ParseError(STRUCTURE, "hex", "report text is not hex") from None

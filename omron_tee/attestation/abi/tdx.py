"""Intel TDX quote, versions 4 and 5: parse only.

v4: header (48) | TD report 1.0 (584) | signature data
v5: header (48) | u16 body type | u32 body size | body | signature data,
    body type 2 = TD report 1.0 (584 bytes), 3 = TD report 1.5 (648 bytes).

TD report 1.0::

    tee_tcb_svn 16 | mr_seam 48 | mr_signer_seam 48 | seam_attributes 8 |
    td_attributes 8 | xfam 8 | mr_td 48 | mr_config_id 48 | mr_owner 48 |
    mr_owner_config 48 | rtmr0..3 4x48 | report_data 64

TD report 1.5 appends tee_tcb_svn2 16 | mr_servicetd 48.
The quote signature covers everything before the signature data length.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from omron_tee.attestation.abi import dcap_common as dc
from omron_tee.attestation.abi.binary import Reader, require_bytes

STRUCTURE = "TDX quote"
TD_REPORT10_LEN = 584
TD_REPORT15_LEN = 648
BODY_TYPE_TD10 = 2
BODY_TYPE_TD15 = 3

# TD_ATTRIBUTES bits.
TD_ATTR_DEBUG = 1 << 0
TD_ATTR_TUD_RESERVED = 0xFE  # bits 1..7 of the TD-under-debug byte
TD_ATTR_SEPT_VE_DISABLE = 1 << 28
TD_ATTR_PKS = 1 << 30
TD_ATTR_KL = 1 << 31
TD_ATTR_PERFMON = 1 << 63


@dataclass(frozen=True)
class TdReport:
    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn2: bytes | None = None  # TD report 1.5 only
    mr_servicetd: bytes | None = None  # TD report 1.5 only

    @property
    def td_attribute_bits(self) -> int:
        return int.from_bytes(self.td_attributes, "little")

    @property
    def debug(self) -> bool:
        return bool(self.td_attribute_bits & TD_ATTR_DEBUG)

    @property
    def sept_ve_disable(self) -> bool:
        return bool(self.td_attribute_bits & TD_ATTR_SEPT_VE_DISABLE)


@dataclass(frozen=True)
class TdxQuote:
    header: dc.QuoteHeader
    body_type: int
    report: TdReport
    signature_data: dc.SignatureData
    signed_bytes: bytes

    @property
    def debug(self) -> bool:
        return self.report.debug

    @property
    def pck_chain_pem(self) -> bytes | None:
        return self.signature_data.pck_chain_pem


_TD10 = struct.Struct("<16s48s48s8s8s8s48s48s48s48s48s48s48s48s64s")
_TD15_EXTRA = struct.Struct("<16s48s")
assert _TD10.size == TD_REPORT10_LEN and _TD10.size + _TD15_EXTRA.size == TD_REPORT15_LEN


def _parse_td_report(r: Reader, v15: bool) -> TdReport:
    if r.remaining >= (TD_REPORT15_LEN if v15 else TD_REPORT10_LEN):  # fast path, same fields as below
        v = _TD10.unpack_from(r.data, r.pos)
        r.pos += TD_REPORT10_LEN
        svn2 = servicetd = None
        if v15:
            svn2, servicetd = _TD15_EXTRA.unpack_from(r.data, r.pos)
            r.pos += _TD15_EXTRA.size
        return TdReport(*v[:10], (v[10], v[11], v[12], v[13]), v[14], svn2, servicetd)
    f = "td_report"
    tee_tcb_svn = r.bytes(16, f"{f}.tee_tcb_svn")
    mr_seam = r.bytes(48, f"{f}.mr_seam")
    mr_signer_seam = r.bytes(48, f"{f}.mr_signer_seam")
    seam_attributes = r.bytes(8, f"{f}.seam_attributes")
    td_attributes = r.bytes(8, f"{f}.td_attributes")
    xfam = r.bytes(8, f"{f}.xfam")
    mr_td = r.bytes(48, f"{f}.mr_td")
    mr_config_id = r.bytes(48, f"{f}.mr_config_id")
    mr_owner = r.bytes(48, f"{f}.mr_owner")
    mr_owner_config = r.bytes(48, f"{f}.mr_owner_config")
    rtmrs = tuple(r.bytes(48, f"{f}.rtmr{i}") for i in range(4))
    report_data = r.bytes(64, f"{f}.report_data")
    svn2 = r.bytes(16, f"{f}.tee_tcb_svn2") if v15 else None
    servicetd = r.bytes(48, f"{f}.mr_servicetd") if v15 else None
    return TdReport(
        tee_tcb_svn, mr_seam, mr_signer_seam, seam_attributes, td_attributes, xfam, mr_td,
        mr_config_id, mr_owner, mr_owner_config, rtmrs, report_data, svn2, servicetd,  # type: ignore[arg-type]
    )


def parse(data: bytes) -> TdxQuote:
    data = require_bytes(data, STRUCTURE)
    r = Reader(data, STRUCTURE)
    header = dc.parse_header(r)
    if header.version not in (4, 5):
        raise r.error("header.version", f"unsupported TDX quote version {header.version} (expected 4 or 5)")
    if header.tee_type != dc.TEE_TYPE_TDX:
        raise r.error("header.tee_type", f"0x{header.tee_type:08x} is not TDX (0x00000081)")
    if header.version == 4:
        body_type = BODY_TYPE_TD10
        report = _parse_td_report(r, v15=False)
    else:
        body_type = r.u16("body.type")
        size = r.u32("body.size")
        expected = {BODY_TYPE_TD10: TD_REPORT10_LEN, BODY_TYPE_TD15: TD_REPORT15_LEN}.get(body_type)
        if expected is None:
            raise r.error("body.type", f"unsupported v5 body type {body_type} (expected 2, TD report 1.0, or 3, TD report 1.5)")
        if size != expected:
            raise r.error("body.size", f"body type {body_type} must be {expected} bytes, header says {size}")
        report = _parse_td_report(r, v15=body_type == BODY_TYPE_TD15)
    signed = data[: r.pos]
    sig = dc.parse_signature_data(r, header.version)
    return TdxQuote(header, body_type, report, sig, signed)

"""Structures shared by Intel DCAP quotes (SGX v3, TDX v4/v5).

Layout per Intel's "SGX ECDSA Quote Library API" (quote v3) and "TDX DCAP
Quoting Library API" (quote v4 and v5); all integers little-endian.

Quote::

    header (48)  | body (v3/v4: fixed by TEE type; v5: u16 type, u32 size, body)
    u32 signature_data_len | signature data | unsigned trailing bytes (ignored)

Signature data for attestation key type 2 (ECDSA-256 with P-256)::

    v3:    sig(64) att_key(64) qe_report(384) qe_report_sig(64)
           qe_auth(u16 len + data) certification_data
    v4/v5: sig(64) att_key(64) certification_data(type 6 = QE report
           certification data, whose body is: qe_report(384)
           qe_report_sig(64) qe_auth(u16 + data) certification_data)

Certification data is ``u16 type, u32 size, data``; type 5 is the PCK
certificate chain in PEM (leaf, Platform/Processor CA, Root CA). This module
parses only: no signature or certificate is checked here (see verify.dcap).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from omron_tee.attestation.abi.binary import Reader
from omron_tee.errors import ParseError

HEADER_LEN = 48
ENCLAVE_REPORT_LEN = 384
ATT_KEY_TYPE_ECDSA_P256 = 2
TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

# SGX ATTRIBUTES.FLAGS bits (first 8 bytes of the 16-byte attributes).
SGX_FLAG_INIT = 1 << 0
SGX_FLAG_DEBUG = 1 << 1
SGX_FLAG_MODE64BIT = 1 << 2
SGX_FLAG_PROVISIONKEY = 1 << 4
SGX_FLAG_EINITTOKENKEY = 1 << 5
SGX_FLAG_KSS = 1 << 7

MAX_CERT_DATA_LEN = 64 * 1024  # a PEM chain of three certificates is ~3.7 KB


class CertDataType(enum.IntEnum):
    PPID_CLEARTEXT = 1
    PPID_RSA2048 = 2
    PPID_RSA3072 = 3
    PCK_CERT = 4
    PCK_CERT_CHAIN = 5
    QE_REPORT_CERT_DATA = 6
    PLATFORM_MANIFEST = 7


@dataclass(frozen=True)
class QuoteHeader:
    version: int
    attestation_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes

    @property
    def is_tdx(self) -> bool:
        return self.tee_type == TEE_TYPE_TDX


@dataclass(frozen=True)
class EnclaveReport:
    """SGX REPORT_BODY (384 bytes): an enclave's report, also the QE's report."""

    cpu_svn: bytes
    misc_select: int
    isv_ext_prod_id: bytes
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    isv_family_id: bytes
    report_data: bytes

    @property
    def attribute_flags(self) -> int:
        return int.from_bytes(self.attributes[:8], "little")

    @property
    def xfrm(self) -> int:
        return int.from_bytes(self.attributes[8:], "little")

    @property
    def debug(self) -> bool:
        return bool(self.attribute_flags & SGX_FLAG_DEBUG)


@dataclass(frozen=True)
class CertificationData:
    cert_type: int
    data: bytes

    @property
    def pck_chain_pem(self) -> bytes | None:
        """The PEM chain when this is type 5 (trailing NULs removed), else None."""
        if self.cert_type != CertDataType.PCK_CERT_CHAIN:
            return None
        return self.data.rstrip(b"\0")


@dataclass(frozen=True)
class QeReportCertificationData:
    qe_report: EnclaveReport
    qe_report_raw: bytes
    qe_report_signature: bytes
    qe_auth_data: bytes
    certification_data: CertificationData


@dataclass(frozen=True)
class SignatureData:
    """ECDSA-256 quote signature data, normalised across v3 and v4/v5."""

    signature: bytes  # r || s, 32 bytes each, big-endian
    attestation_key: bytes  # x || y of the P-256 key, 64 bytes
    qe: QeReportCertificationData

    @property
    def pck_chain_pem(self) -> bytes | None:
        return self.qe.certification_data.pck_chain_pem


_HEADER = struct.Struct("<HHIHH16s20s")
_REPORT = struct.Struct("<16sI12s16s16s32s32s32s32s64sHHH42s16s64s")
assert _HEADER.size == HEADER_LEN and _REPORT.size == ENCLAVE_REPORT_LEN


def parse_header(r: Reader) -> QuoteHeader:
    if r.remaining >= HEADER_LEN:  # fast path: one unpack; the slow path below names a short field
        version, key_type, tee_type, qe_svn, pce_svn, vendor, user_data = _HEADER.unpack_from(r.data, r.pos)
        r.pos += HEADER_LEN
        if key_type != ATT_KEY_TYPE_ECDSA_P256:
            raise r.error("header.attestation_key_type", f"unsupported attestation key type {key_type} (only 2, ECDSA-256 with P-256)")
        return QuoteHeader(version, key_type, tee_type, qe_svn, pce_svn, vendor, user_data)
    version = r.u16("header.version")
    key_type = r.u16("header.attestation_key_type")
    tee_type = r.u32("header.tee_type")
    qe_svn = r.u16("header.qe_svn")
    pce_svn = r.u16("header.pce_svn")
    vendor = r.bytes(16, "header.qe_vendor_id")
    user_data = r.bytes(20, "header.user_data")
    if key_type != ATT_KEY_TYPE_ECDSA_P256:
        raise r.error("header.attestation_key_type", f"unsupported attestation key type {key_type} (only 2, ECDSA-256 with P-256)")
    return QuoteHeader(version, key_type, tee_type, qe_svn, pce_svn, vendor, user_data)


def parse_enclave_report(r: Reader, prefix: str) -> EnclaveReport:
    if r.remaining >= ENCLAVE_REPORT_LEN:  # fast path, same fields as below
        f = _REPORT.unpack_from(r.data, r.pos)
        r.pos += ENCLAVE_REPORT_LEN
        return EnclaveReport(f[0], f[1], f[3], f[4], f[5], f[7], f[9], f[10], f[11], f[12], f[14], f[15])
    cpu_svn = r.bytes(16, f"{prefix}.cpu_svn")
    misc_select = r.u32(f"{prefix}.misc_select")
    r.bytes(12, f"{prefix}.reserved1")
    isv_ext_prod_id = r.bytes(16, f"{prefix}.isv_ext_prod_id")
    attributes = r.bytes(16, f"{prefix}.attributes")
    mr_enclave = r.bytes(32, f"{prefix}.mr_enclave")
    r.bytes(32, f"{prefix}.reserved2")
    mr_signer = r.bytes(32, f"{prefix}.mr_signer")
    r.bytes(32, f"{prefix}.reserved3")
    config_id = r.bytes(64, f"{prefix}.config_id")
    isv_prod_id = r.u16(f"{prefix}.isv_prod_id")
    isv_svn = r.u16(f"{prefix}.isv_svn")
    config_svn = r.u16(f"{prefix}.config_svn")
    r.bytes(42, f"{prefix}.reserved4")
    isv_family_id = r.bytes(16, f"{prefix}.isv_family_id")
    report_data = r.bytes(64, f"{prefix}.report_data")
    return EnclaveReport(
        cpu_svn=cpu_svn,
        misc_select=misc_select,
        isv_ext_prod_id=isv_ext_prod_id,
        attributes=attributes,
        mr_enclave=mr_enclave,
        mr_signer=mr_signer,
        config_id=config_id,
        isv_prod_id=isv_prod_id,
        isv_svn=isv_svn,
        config_svn=config_svn,
        isv_family_id=isv_family_id,
        report_data=report_data,
    )


def _parse_cert_data(r: Reader, prefix: str) -> CertificationData:
    cert_type = r.u16(f"{prefix}.type")
    size = r.u32(f"{prefix}.size")
    if cert_type not in CertDataType.__members__.values():
        raise r.error(f"{prefix}.type", f"unknown certification data type {cert_type}")
    if size > MAX_CERT_DATA_LEN:
        raise r.error(f"{prefix}.size", f"{size} bytes exceeds the {MAX_CERT_DATA_LEN}-byte limit")
    return CertificationData(cert_type, r.bytes(size, f"{prefix}.data"))


def _parse_qe_report_cert_data(r: Reader, prefix: str) -> QeReportCertificationData:
    start = r.pos
    qe_report = parse_enclave_report(r, f"{prefix}.qe_report")
    qe_report_raw = r.data[start : r.pos]
    qe_sig = r.bytes(64, f"{prefix}.qe_report_signature")
    auth_len = r.u16(f"{prefix}.qe_auth_data.size")
    auth = r.bytes(auth_len, f"{prefix}.qe_auth_data")
    cert = _parse_cert_data(r, f"{prefix}.certification_data")
    return QeReportCertificationData(qe_report, qe_report_raw, qe_sig, auth, cert)


_U32 = struct.Struct("<I")
_CERT_HDR = struct.Struct("<HI")
_AUTH_LEN = struct.Struct("<H")
_KNOWN_CERT_TYPES = frozenset(int(t) for t in CertDataType)


class _Unusual(Exception):
    """The fast path met something unusual: the field-by-field parser decides (and names the field)."""


def _fast_signature_data(data: bytes, pos: int, end_of_data: int, version: int) -> SignatureData:
    """The common case in a few unpacks; every check of the slow path, or ``_Unusual``."""
    try:
        (length,) = _U32.unpack_from(data, pos)
        start = pos + 4
        end = start + length
        if end > end_of_data:
            raise _Unusual
        p = start + 128
        if version != 3:
            outer, size = _CERT_HDR.unpack_from(data, p)
            p += 6
            if outer != CertDataType.QE_REPORT_CERT_DATA or size != end - p:
                raise _Unusual
        if p + ENCLAVE_REPORT_LEN + 66 > end:
            raise _Unusual
        f = _REPORT.unpack_from(data, p)
        qe_report = EnclaveReport(f[0], f[1], f[3], f[4], f[5], f[7], f[9], f[10], f[11], f[12], f[14], f[15])
        qe_raw = data[p : p + ENCLAVE_REPORT_LEN]
        p += ENCLAVE_REPORT_LEN
        qe_sig = data[p : p + 64]
        (auth_len,) = _AUTH_LEN.unpack_from(data, p + 64)
        p += 66
        auth = data[p : p + auth_len]
        p += auth_len
        cert_type, cert_size = _CERT_HDR.unpack_from(data, p)
        p += 6
        if cert_type not in _KNOWN_CERT_TYPES or cert_size > MAX_CERT_DATA_LEN or p + cert_size != end:
            raise _Unusual
        cert = CertificationData(cert_type, data[p:end])
    except struct.error:
        raise _Unusual from None
    qe = QeReportCertificationData(qe_report, qe_raw, qe_sig, auth, cert)
    return SignatureData(data[start : start + 64], data[start + 64 : start + 128], qe)


def parse_signature_data(r: Reader, version: int) -> SignatureData:
    """Parse the ``u32 length | signature data`` section and its zero padding."""
    try:
        out = _fast_signature_data(r.data, r.pos, r.end, version)
        r.pos = r.end
        return out
    except _Unusual:
        pass
    length = r.u32("signature_data_len")
    if length > r.remaining:
        raise r.error("signature_data_len", f"declares {length} bytes, only {r.remaining} present")
    end = r.pos + length
    s = Reader(r.data, r.structure, start=r.pos, end=end)
    signature = s.bytes(64, "signature_data.signature")
    att_key = s.bytes(64, "signature_data.attestation_key")
    if version == 3:
        qe = _parse_qe_report_cert_data(s, "signature_data")
    else:
        outer = s.u16("signature_data.certification_data.type")
        size = s.u32("signature_data.certification_data.size")
        if outer != CertDataType.QE_REPORT_CERT_DATA:
            raise s.error("signature_data.certification_data.type", f"expected 6 (QE report certification data), got {outer}")
        if size != s.remaining:
            raise s.error("signature_data.certification_data.size", f"declares {size} bytes, {s.remaining} remain in the signature data")
        qe = _parse_qe_report_cert_data(s, "signature_data.qe_report_certification_data")
    s.expect_end("signature_data")
    r.pos = end
    # Quote generation may hand back a fixed-size buffer, and quotes from real
    # Sapphire Rapids hosts carry bytes after the signature data: no signature
    # covers them, so they are skipped (as dcap-qvl and go-tdx-guest do) and the
    # canonical evidence digest leaves them out.
    r.pos = r.end
    return SignatureData(signature, att_key, qe)


def peek_version_and_tee(data: bytes) -> tuple[int, int]:
    """(version, tee_type) of a DCAP quote header, for dispatch."""
    if len(data) < HEADER_LEN:
        raise ParseError("DCAP quote", "header", f"needs {HEADER_LEN} bytes, got {len(data)}")
    version = int.from_bytes(data[0:2], "little")
    tee = int.from_bytes(data[4:8], "little")
    return version, tee


def looks_like_dcap_quote(data: bytes) -> bool:
    if len(data) < HEADER_LEN:
        return False
    version, tee = peek_version_and_tee(data)
    key_type = int.from_bytes(data[2:4], "little")
    return version in (3, 4, 5) and key_type == ATT_KEY_TYPE_ECDSA_P256 and tee in (TEE_TYPE_SGX, TEE_TYPE_TDX)

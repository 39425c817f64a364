"""AMD SEV-SNP: the trusted app runs in an SNP guest; reports come from configfs-tsm.

The guest kernel's ``sev-guest`` driver sends an extended report request
(MSG_REPORT_REQ through SNP_GUEST_REQUEST, encrypted with the VMPCK) to the
AMD secure processor; configfs-tsm hands us the signed report as ``outblob``
and, when the host supplies them, the certificates (VCEK or VLEK, ASK, ARK)
as ``auxblob`` in the GHCB certificate-table format (SEV-ES GHCB
specification 2.03, section 4.1.8.1): entries of (GUID, offset, length)
ending with an all-zero entry, offsets counted from the table's start.

The evidence carries those certificates as PEM (VCEK or VLEK first, then
ASK, ARK), not as the raw table: a PEM chain is unambiguous, while the
table's GUID byte order is a known trap (AMD's tools and go-sev-guest write
RFC 4122 order; a mixed-endian reader misses every entry). The DER bytes are
wrapped, not re-encoded: AMD's VCEKs have serial number 0, which newer
``cryptography`` releases will refuse to parse.

The legacy ``/dev/sev-guest`` ioctls (SNP_GET_REPORT / SNP_GET_EXT_REPORT)
reach the same firmware call; configfs-tsm is the kernel's supported
interface for it since 6.7, so that is the one used here.
"""

from __future__ import annotations

import base64
import logging
import struct
import uuid
from dataclasses import dataclass

from omron_tee.attestation.evidence import Evidence, TeeType
from omron_tee.enclave.base import Availability, EnclaveBackend
from omron_tee.enclave.configfs_tsm import PRIVLEVEL_MAX, ConfigfsTsm, tsm_availability
from omron_tee.enclave.host import DeviceFiles, HostPaths
from omron_tee.enclave.tdx import MEASUREMENT_PROBE
from omron_tee.errors import EnclaveError
from omron_tee.reasons import Reason

log = logging.getLogger("omron_tee.enclave")

PROVIDER = "sev_guest"
REPORT_LEN = 0x4A0  # 1184 bytes: ATTESTATION_REPORT in SEV-SNP ABI spec, table "ATTESTATION_REPORT Structure"

# Offsets in the attestation report.
_VERSION = 0x00
_POLICY = 0x08
_VMPL = 0x30
_REPORT_DATA = 0x50
_MEASUREMENT = 0x90
_HOST_DATA = 0xC0
_CHIP_ID = 0x1A0
POLICY_DEBUG_BIT = 19

# GUIDs of the certificate table (GHCB spec; VLEK is the cloud-provisioned alternative to VCEK).
CERT_GUIDS: dict[uuid.UUID, str] = {
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "vcek",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"): "vlek",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ask",
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ark",
    uuid.UUID("92f81bc3-5811-4d3d-97ff-d19f88dc67ea"): "crl",
}
_ENTRY = struct.Struct("<16sII")


@dataclass(frozen=True)
class SnpReportSummary:
    """The fields of an SNP attestation report a miner or an operator looks at (not a verification)."""

    version: int
    policy: int
    vmpl: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    chip_id: bytes

    @property
    def debug(self) -> bool:
        return bool(self.policy >> POLICY_DEBUG_BIT & 1)


def summarize_snp_report(report: bytes) -> SnpReportSummary:
    if len(report) < REPORT_LEN:
        raise EnclaveError(f"SEV-SNP report is {len(report)} bytes, shorter than {REPORT_LEN}", reason=Reason.ENCLAVE_BAD_OUTPUT)
    (version,) = struct.unpack_from("<I", report, _VERSION)
    if version < 2:
        raise EnclaveError(f"SEV-SNP report version {version} is older than 2 (not an SNP report)", reason=Reason.ENCLAVE_BAD_OUTPUT)
    (policy,) = struct.unpack_from("<Q", report, _POLICY)
    (vmpl,) = struct.unpack_from("<I", report, _VMPL)
    return SnpReportSummary(
        version=version,
        policy=policy,
        vmpl=vmpl,
        report_data=report[_REPORT_DATA : _REPORT_DATA + 64],
        measurement=report[_MEASUREMENT : _MEASUREMENT + 48],
        host_data=report[_HOST_DATA : _HOST_DATA + 32],
        chip_id=report[_CHIP_ID : _CHIP_ID + 64],
    )


@dataclass(frozen=True)
class CertEntry:
    guid: uuid.UUID
    data: bytes

    @property
    def name(self) -> str:
        return CERT_GUIDS.get(self.guid, str(self.guid))


def _guid(raw: bytes) -> uuid.UUID:
    # AMD's tools write GUIDs in RFC 4122 (string) byte order; accept the
    # little-endian mixed form some hosts write, if that is what names a known cert.
    be = uuid.UUID(bytes=raw)
    if be in CERT_GUIDS:
        return be
    le = uuid.UUID(bytes_le=raw)
    return le if le in CERT_GUIDS else be


def parse_cert_table(blob: bytes) -> list[CertEntry]:
    """The entries of a GHCB certificate table; EnclaveError if it is malformed."""
    entries: list[CertEntry] = []
    pos = 0
    while True:
        if pos + _ENTRY.size > len(blob):
            raise EnclaveError("SNP certificate table has no terminating all-zero entry", reason=Reason.ENCLAVE_BAD_OUTPUT)
        raw, offset, length = _ENTRY.unpack_from(blob, pos)
        pos += _ENTRY.size
        if raw == bytes(16) and offset == 0 and length == 0:
            return entries
        if offset < pos or offset + length > len(blob) or length == 0:
            raise EnclaveError(
                f"SNP certificate table entry {len(entries)} points at bytes {offset}..{offset + length} outside the table's data",
                reason=Reason.ENCLAVE_BAD_OUTPUT,
            )
        entries.append(CertEntry(_guid(raw), blob[offset : offset + length]))


def build_cert_table(entries: list[tuple[uuid.UUID, bytes]]) -> bytes:
    """A GHCB certificate table (GUIDs in RFC 4122 byte order, as AMD's tools write them)."""
    header_len = (len(entries) + 1) * _ENTRY.size
    table = bytearray()
    data = bytearray()
    for guid, blob in entries:
        table += _ENTRY.pack(guid.bytes, header_len + len(data), len(blob))
        data += blob
    table += _ENTRY.pack(bytes(16), 0, 0)
    return bytes(table + data)


_PEM_ORDER = ("vcek", "vlek", "ask", "ark")


def der_to_pem(der: bytes) -> bytes:
    """PEM armour around DER bytes, without parsing them."""
    b64 = base64.b64encode(der).decode("ascii")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return ("-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n").encode("ascii")


def cert_table_to_pem(entries: list[CertEntry]) -> bytes:
    """The table's signing chain as PEM, leaf (VCEK or VLEK) first; other entries (CRLs, unknown GUIDs) are left out."""
    by_name: dict[str, bytes] = {}
    for e in entries:
        if e.name in _PEM_ORDER and e.name not in by_name:
            if not e.data.startswith(b"\x30"):
                raise EnclaveError(f"SNP certificate table entry {e.name} is not DER (does not start with a SEQUENCE)", reason=Reason.ENCLAVE_BAD_OUTPUT)
            by_name[e.name] = e.data
    return b"".join(der_to_pem(by_name[n]) for n in _PEM_ORDER if n in by_name)


class SevSnpBackend(EnclaveBackend):
    """Reports for this SNP guest through configfs-tsm (``sev_guest`` provider).

    ``privlevel`` is the VMPL the report is requested for; None uses the
    guest's floor (its own VMPL), which is what a guest without an SVSM wants.
    """

    tee_type = TeeType.SEV_SNP

    def __init__(
        self,
        *,
        paths: HostPaths | None = None,
        files: DeviceFiles | None = None,
        privlevel: int | None = None,
        attempts: int = 3,
        backoff_s: float = 0.05,
    ) -> None:
        if privlevel is not None and not 0 <= privlevel <= PRIVLEVEL_MAX:
            raise EnclaveError(f"SNP privlevel (VMPL) must be 0 to {PRIVLEVEL_MAX}, got {privlevel}", reason=Reason.CONFIG)
        self.paths = paths or HostPaths()
        self.privlevel = privlevel
        self._tsm = ConfigfsTsm(PROVIDER, paths=self.paths, files=files, attempts=attempts, backoff_s=backoff_s)
        self._measurement: bytes | None = None

    def attest(self, report_data: bytes) -> Evidence:
        if len(report_data) != 64:
            raise EnclaveError(f"report data must be 64 bytes, got {len(report_data)}")
        result = self._tsm.report(report_data, privlevel=self.privlevel, auxblob=True, min_outblob=REPORT_LEN)
        summary = summarize_snp_report(result.outblob)
        if summary.report_data != report_data:
            log.warning("the SNP report's report data differs from the one requested: the platform returned another request's report")
        certificates = b""
        if result.auxblob:
            try:
                entries = parse_cert_table(result.auxblob)
                certificates = cert_table_to_pem(entries)
                log.debug("SNP certificates from the host: %s", ", ".join(e.name for e in entries) or "none")
            except EnclaveError as e:
                # A validator can still fetch the VCEK from AMD's KDS by chip id and TCB.
                log.warning("dropping the host's SNP certificate table: %s", e)
        return Evidence(tee_type=TeeType.SEV_SNP, quote=result.outblob, certificates=certificates)

    def measurement(self) -> bytes:
        """The launch measurement, read from a probe report (then cached)."""
        if self._measurement is None:
            self._measurement = summarize_snp_report(self.attest(MEASUREMENT_PROBE).quote).measurement
        return self._measurement

    @classmethod
    def detect(cls, *, paths: HostPaths | None = None) -> Availability:
        paths = paths or HostPaths()
        device = (paths.dev / "sev-guest").exists()
        flag = "sev_snp" in paths.cpu_flags()
        if not device and not flag:
            return Availability(TeeType.SEV_SNP, False, "not an SEV-SNP guest (no /dev/sev-guest, no sev_snp CPU flag): run the miner inside an SNP VM")
        if not device:
            return Availability(
                TeeType.SEV_SNP,
                False,
                "the CPU reports SEV-SNP but /dev/sev-guest is missing: inside an SNP guest, load the driver (modprobe sev-guest); "
                "on an SNP host, run the miner inside an SNP guest VM instead",
            )
        ok, detail = tsm_availability(PROVIDER, paths)
        if not ok:
            return Availability(TeeType.SEV_SNP, False, detail + "; the legacy /dev/sev-guest ioctls are not used (configfs-tsm is the supported interface)")
        return Availability(TeeType.SEV_SNP, True, f"SEV-SNP guest; reports through configfs-tsm at {paths.tsm_report}")

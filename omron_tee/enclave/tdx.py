"""Intel TDX: the trusted app runs in a TD (a confidential VM); quotes come from configfs-tsm.

The guest kernel's ``tdx_guest`` driver turns our 64 bytes into a TDREPORT
(TDG.MR.REPORT) and asks the host's Quote Generation Service for a quote
(TDG.VP.VMCALL<GetQuote>); configfs-tsm hands us that quote as ``outblob``.

The legacy ``/dev/tdx_guest`` ioctl (TDX_CMD_GET_REPORT0) returns only the
TDREPORT, which is MAC'd for the local platform and not verifiable remotely;
turning it into a quote needs the host's QGS through a channel the kernel
owns (its GetQuote path was only ever exposed through configfs-tsm). So that
device is detected and reported, never used: configfs-tsm is the interface.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from dataclasses import dataclass

from omron_tee.attestation.evidence import Evidence, TeeType
from omron_tee.enclave.base import Availability, EnclaveBackend
from omron_tee.enclave.configfs_tsm import ConfigfsTsm, tsm_availability
from omron_tee.enclave.host import DeviceFiles, HostPaths
from omron_tee.errors import EnclaveError
from omron_tee.reasons import Reason

log = logging.getLogger("omron_tee.enclave")

PROVIDER = "tdx_guest"
TDX_TEE_TYPE = 0x81
HEADER_LEN = 48
TD10_BODY_LEN = 584
# v5 quotes put a 6-byte body descriptor (type u16, size u32) between header and body.
V5_DESCRIPTOR_LEN = 6
MIN_QUOTE_LEN = HEADER_LEN + TD10_BODY_LEN + 4  # header, TD report body, signature-data length

# Offsets inside the TD report body (TDX DCAP Quote Library API, appendix "TD Quote Body").
_TD_ATTRIBUTES = 120
_MRTD = 136
_MRCONFIGID = 184
_MROWNER = 232
_MROWNERCONFIG = 280
_RTMR0 = 328
_REPORT_DATA = 520
_MR = 48

MEASUREMENT_PROBE = hashlib.sha512(b"omron-tee/measurement-probe/v1").digest()


@dataclass(frozen=True)
class TdQuoteSummary:
    """The fields of a TDX quote a miner or an operator looks at (not a verification)."""

    version: int
    mrtd: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    mrconfigid: bytes
    mrowner: bytes
    mrownerconfig: bytes
    report_data: bytes
    debug: bool


def summarize_td_quote(quote: bytes) -> TdQuoteSummary:
    """Read the TD report body of a v4/v5 TDX quote; EnclaveError if it is not one."""
    if len(quote) < MIN_QUOTE_LEN:
        raise EnclaveError(f"TDX quote is {len(quote)} bytes, shorter than the minimum {MIN_QUOTE_LEN}", reason=Reason.ENCLAVE_BAD_OUTPUT)
    version, _key_type, tee_type = struct.unpack_from("<HHI", quote, 0)
    if tee_type != TDX_TEE_TYPE:
        raise EnclaveError(f"quote tee_type is {tee_type:#x}, not TDX ({TDX_TEE_TYPE:#x})", reason=Reason.ENCLAVE_BAD_OUTPUT)
    if version == 4:
        base = HEADER_LEN
    elif version == 5:
        base = HEADER_LEN + V5_DESCRIPTOR_LEN
        if len(quote) < base + TD10_BODY_LEN + 4:
            raise EnclaveError(f"TDX v5 quote is {len(quote)} bytes, too short for its body", reason=Reason.ENCLAVE_BAD_OUTPUT)
    else:
        raise EnclaveError(f"TDX quote version {version} is not 4 or 5", reason=Reason.ENCLAVE_BAD_OUTPUT)

    def mr(off: int) -> bytes:
        return quote[base + off : base + off + _MR]

    return TdQuoteSummary(
        version=version,
        mrtd=mr(_MRTD),
        rtmrs=tuple(mr(_RTMR0 + i * _MR) for i in range(4)),  # type: ignore[arg-type]
        mrconfigid=mr(_MRCONFIGID),
        mrowner=mr(_MROWNER),
        mrownerconfig=mr(_MROWNERCONFIG),
        report_data=quote[base + _REPORT_DATA : base + _REPORT_DATA + 64],
        debug=bool(quote[base + _TD_ATTRIBUTES] & 0x01),  # TUD.DEBUG: td_attributes byte 0 bit 0
    )


class TdxBackend(EnclaveBackend):
    """Quotes for this TD through configfs-tsm (``tdx_guest`` provider)."""

    tee_type = TeeType.TDX

    def __init__(self, *, paths: HostPaths | None = None, files: DeviceFiles | None = None, attempts: int = 3, backoff_s: float = 0.05) -> None:
        self.paths = paths or HostPaths()
        self._tsm = ConfigfsTsm(PROVIDER, paths=self.paths, files=files, attempts=attempts, backoff_s=backoff_s)
        self._measurement: bytes | None = None

    def attest(self, report_data: bytes) -> Evidence:
        if len(report_data) != 64:
            raise EnclaveError(f"report data must be 64 bytes, got {len(report_data)}")
        report = self._tsm.report(report_data, min_outblob=MIN_QUOTE_LEN)
        summary = summarize_td_quote(report.outblob)
        if summary.report_data != report_data:
            # Not fatal here: the validator refuses it for the binding, with the same conclusion.
            log.warning("the TDX quote's report data differs from the one requested: the platform returned another request's quote")
        return Evidence(tee_type=TeeType.TDX, quote=report.outblob)

    def measurement(self) -> bytes:
        """MRTD, read from a probe quote (one quote generation, then cached)."""
        if self._measurement is None:
            self._measurement = summarize_td_quote(self.attest(MEASUREMENT_PROBE).quote).mrtd
        return self._measurement

    @classmethod
    def detect(cls, *, paths: HostPaths | None = None) -> Availability:
        paths = paths or HostPaths()
        flags = paths.cpu_flags()
        device = (paths.dev / "tdx_guest").exists()
        if "tdx_guest" not in flags and not device:
            return Availability(TeeType.TDX, False, "not a TDX guest (no tdx_guest CPU flag, no /dev/tdx_guest): run the miner inside a TD")
        ok, detail = tsm_availability(PROVIDER, paths)
        if not ok:
            if device:
                detail += "; /dev/tdx_guest (the legacy ioctl) is present but yields only a TDREPORT, not a quote: not supported"
            return Availability(TeeType.TDX, False, detail)
        if not device:
            return Availability(TeeType.TDX, False, "TDX guest, but the tdx_guest driver is not loaded (it provides the quotes): modprobe tdx_guest")
        return Availability(TeeType.TDX, True, f"TDX guest; quotes through configfs-tsm at {paths.tsm_report}")

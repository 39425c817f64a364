"""Intel SGX with Gramine: the whole miner runs inside an SGX enclave under ``gramine-sgx``.

Gramine exposes attestation as pseudo-files under ``/dev/attestation/``:
``attestation_type`` ("none", "epid" or "dcap", from the manifest's
``sgx.remote_attestation``), ``user_report_data`` (write 64 bytes),
``quote`` (read: a quote over the last user_report_data, produced through the
host's AESM/quoting enclave), ``my_target_info`` (this enclave's
TARGETINFO, which starts with its MRENCLAVE), and ``target_info``/``report``
for local attestation. Outside Gramine the directory does not exist.

``user_report_data`` is one value per enclave, so writing it and reading the
quote must not interleave between threads: a lock makes the pair atomic.
"""

from __future__ import annotations

import errno
import logging
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from omron_tee.attestation.evidence import Evidence, TeeType
from omron_tee.enclave.base import Availability, EnclaveBackend
from omron_tee.enclave.host import DeviceFiles, HostPaths, OsDeviceFiles
from omron_tee.errors import EnclaveError
from omron_tee.reasons import Reason

log = logging.getLogger("omron_tee.enclave")

QUOTE_HEADER_LEN = 48
REPORT_BODY_LEN = 384
MIN_QUOTE_LEN = QUOTE_HEADER_LEN + REPORT_BODY_LEN + 4
TARGET_INFO_LEN = 512
# Offsets in the SGX report body (sgx_report_body_t).
_ATTRIBUTES = 48
_MRENCLAVE = 64
_MRSIGNER = 128
_ISVPRODID = 256
_ISVSVN = 258
_REPORT_DATA = 320
SGX_FLAGS_DEBUG = 0x02


@dataclass(frozen=True)
class SgxQuoteSummary:
    """The fields of an SGX quote a miner or an operator looks at (not a verification)."""

    version: int
    mrenclave: bytes
    mrsigner: bytes
    isv_prod_id: int
    isv_svn: int
    attributes: bytes
    report_data: bytes

    @property
    def debug(self) -> bool:
        return bool(self.attributes[0] & SGX_FLAGS_DEBUG)


def summarize_sgx_quote(quote: bytes) -> SgxQuoteSummary:
    if len(quote) < MIN_QUOTE_LEN:
        raise EnclaveError(f"SGX quote is {len(quote)} bytes, shorter than the minimum {MIN_QUOTE_LEN}", reason=Reason.ENCLAVE_BAD_OUTPUT)
    version, _key_type, tee_type = struct.unpack_from("<HHI", quote, 0)
    if tee_type != 0 or version not in (3, 4):
        raise EnclaveError(f"not an SGX quote (version {version}, tee_type {tee_type:#x})", reason=Reason.ENCLAVE_BAD_OUTPUT)
    body = quote[QUOTE_HEADER_LEN : QUOTE_HEADER_LEN + REPORT_BODY_LEN]
    prod_id, svn = struct.unpack_from("<HH", body, _ISVPRODID)
    return SgxQuoteSummary(
        version=version,
        mrenclave=body[_MRENCLAVE : _MRENCLAVE + 32],
        mrsigner=body[_MRSIGNER : _MRSIGNER + 32],
        isv_prod_id=prod_id,
        isv_svn=svn,
        attributes=body[_ATTRIBUTES : _ATTRIBUTES + 16],
        report_data=body[_REPORT_DATA : _REPORT_DATA + 64],
    )


_TYPE_ADVICE = {
    "none": 'the enclave was built without remote attestation: set sgx.remote_attestation = "dcap" in the manifest and rebuild (gramine/)',
    "epid": 'the enclave uses EPID attestation, which Intel has retired and validators do not accept: set sgx.remote_attestation = "dcap" and rebuild (gramine/)',
}


class GramineSgxBackend(EnclaveBackend):
    """DCAP quotes from inside a Gramine SGX enclave."""

    tee_type = TeeType.SGX

    def __init__(self, *, paths: HostPaths | None = None, files: DeviceFiles | None = None) -> None:
        self.paths = paths or HostPaths()
        self.dir = self.paths.gramine_attestation
        self.files = files if files is not None else OsDeviceFiles()
        self._lock = threading.Lock()
        self._measurement: bytes | None = None
        kind = self._attestation_type()
        if kind != "dcap":
            raise EnclaveError(
                f"Gramine reports attestation type {kind!r}: {_TYPE_ADVICE.get(kind, 'only dcap is supported')}",
                reason=Reason.ENCLAVE_UNAVAILABLE,
            )

    def _path(self, name: str) -> Path:
        return self.dir / name

    def _attestation_type(self) -> str:
        path = self._path("attestation_type")
        try:
            raw = self.files.read(path)
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise EnclaveError(
                    f"{path} does not exist: this process is not running inside Gramine; start the miner with "
                    "gramine-sgx (see gramine/README.md)",
                    reason=Reason.ENCLAVE_UNAVAILABLE,
                ) from None
            raise self._error(e, "reading", path) from None
        return raw.decode("ascii", "replace").strip("\0 \n")

    def attest(self, report_data: bytes) -> Evidence:
        if len(report_data) != 64:
            raise EnclaveError(f"report data must be 64 bytes, got {len(report_data)}")
        with self._lock:
            self._write("user_report_data", report_data)
            quote = self._read("quote")
        if not quote:
            raise EnclaveError(
                "Gramine returned an empty quote: the host's quoting service failed; check that the host runs the AESM "
                "service with the DCAP quote provider (libsgx-dcap-ql) and that its PCCS is reachable",
                reason=Reason.ENCLAVE_BAD_OUTPUT,
            )
        summary = summarize_sgx_quote(quote)
        if summary.report_data != report_data:
            log.warning("the SGX quote's report data differs from the one requested: the platform returned another request's quote")
        return Evidence(tee_type=TeeType.SGX, quote=quote)

    def measurement(self) -> bytes:
        """MRENCLAVE, from this enclave's TARGETINFO (no quote needed)."""
        if self._measurement is None:
            info = self._read("my_target_info")
            if len(info) < 32:
                raise EnclaveError(f"{self._path('my_target_info')} is {len(info)} bytes, expected {TARGET_INFO_LEN}", reason=Reason.ENCLAVE_BAD_OUTPUT)
            self._measurement = info[:32]
        return self._measurement

    def _read(self, name: str) -> bytes:
        path = self._path(name)
        try:
            return self.files.read(path)
        except OSError as e:
            raise self._error(e, "reading", path) from None

    def _write(self, name: str, data: bytes) -> None:
        path = self._path(name)
        try:
            self.files.write(path, data)
        except OSError as e:
            raise self._error(e, "writing", path) from None

    def _error(self, e: OSError, action: str, path: Path) -> EnclaveError:
        if e.errno in (errno.EACCES, errno.EPERM):
            return EnclaveError(f"permission denied {action} {path}: Gramine refused access; check the manifest's attestation settings", reason=Reason.ENCLAVE_PERMISSION)
        if e.errno == errno.ENOENT:
            return EnclaveError(
                f"{path} does not exist: the manifest has no DCAP remote attestation (set sgx.remote_attestation = \"dcap\")",
                reason=Reason.ENCLAVE_UNAVAILABLE,
            )
        return EnclaveError(
            f"{action} {path} failed: {e.strerror or e}. Gramine gets quotes from the host's AESM service: check that "
            "aesmd runs with the DCAP quote provider and that the PCCS it is configured for (/etc/sgx_default_qcnl.conf) answers",
            reason=Reason.ENCLAVE_IO,
        )

    @classmethod
    def detect(cls, *, paths: HostPaths | None = None) -> Availability:
        paths = paths or HostPaths()
        att = paths.gramine_attestation
        if (att / "attestation_type").exists():
            try:
                kind = (att / "attestation_type").read_bytes().decode("ascii", "replace").strip("\0 \n")
            except OSError as e:
                return Availability(TeeType.SGX, False, f"inside Gramine, but {att / 'attestation_type'} is unreadable: {e.strerror}")
            if kind == "dcap":
                return Availability(TeeType.SGX, True, "inside a Gramine SGX enclave with DCAP attestation")
            return Availability(TeeType.SGX, False, f"inside Gramine with attestation type {kind!r}: {_TYPE_ADVICE.get(kind, 'only dcap is supported')}")
        dev = paths.dev
        if (dev / "sgx_enclave").exists() or (dev / "sgx" / "enclave").exists():
            return Availability(
                TeeType.SGX,
                False,
                "SGX is available on this machine, but this process is not inside Gramine: build the enclave and start "
                "the miner with gramine-sgx (see gramine/README.md)",
            )
        if (dev / "isgx").exists():
            return Availability(TeeType.SGX, False, "only the out-of-tree SGX driver (/dev/isgx) is present; Gramine needs the in-kernel driver (Linux 5.11+, /dev/sgx_enclave)")
        if "sgx" in paths.cpu_flags():
            return Availability(TeeType.SGX, False, "the CPU has SGX but no /dev/sgx_enclave: enable SGX (and flexible launch control) in the BIOS and use Linux 5.11+")
        return Availability(TeeType.SGX, False, "no SGX device (/dev/sgx_enclave) and not inside Gramine")

"""Linux configfs-tsm: the kernel's one interface for TDX quotes and SEV-SNP reports.

ABI (Documentation/ABI/testing/configfs-tsm, kernel 6.7+): under
``/sys/kernel/config/tsm/report/`` each ``mkdir`` creates a report entry with
the attributes ``inblob`` (write up to 64 bytes), ``outblob`` (read: the
report, generated on first read), ``auxblob`` (read: SNP certificates, may be
empty), ``provider`` (``tdx_guest`` or ``sev_guest``), ``generation`` (counts
every write to the entry) and, on SNP, ``privlevel``/``privlevel_floor``.

The kernel advises: read ``generation`` before writing, and after reading
``outblob`` check that it moved by exactly the number of our writes; anything
else means another writer changed the request between our write and our read,
so the report may carry someone else's data. We use a fresh, uniquely named
entry per report (which already keeps other well-behaved users out), check
the generation anyway, retry on a conflict, and always remove the entry.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from omron_tee.enclave.host import DeviceFiles, HostPaths, OsDeviceFiles
from omron_tee.errors import EnclaveError
from omron_tee.reasons import Reason

log = logging.getLogger("omron_tee.enclave")

INBLOB_MAX = 64  # TSM_INBLOB_MAX
PRIVLEVEL_MAX = 3  # TSM_PRIVLEVEL_MAX
CONFIGFS_TSM_KERNEL = (6, 7)

# Errors worth another attempt with a fresh entry: the kernel's "busy" answers
# (a quote request in flight, too many writes without a read) and interruptions.
_TRANSIENT = {errno.EBUSY, errno.EAGAIN, errno.EINTR}


@dataclass(frozen=True)
class TsmReport:
    """What one configfs-tsm report entry produced."""

    provider: str
    outblob: bytes
    auxblob: bytes
    generation: int


class _Retry(Exception):
    """Internal: this attempt hit a transient condition; try again with a fresh entry."""


def _hint(provider: str) -> str:
    module = {"tdx_guest": "tdx_guest", "sev_guest": "sev-guest"}.get(provider, provider)
    return module


class ConfigfsTsm:
    """Reports from one configfs-tsm provider (``tdx_guest`` or ``sev_guest``).

    ``paths`` defaults to the production tree (reports under
    ``/sys/kernel/config/tsm/report``); ``files`` is the seam tests use to
    stand in a fake kernel.
    """

    def __init__(
        self,
        provider: str,
        *,
        paths: HostPaths | None = None,
        files: DeviceFiles | None = None,
        attempts: int = 3,
        backoff_s: float = 0.05,
        name_prefix: str = "omron-tee",
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.provider = provider
        self.paths = paths or HostPaths()
        self.report_dir = self.paths.tsm_report
        self.files = files if files is not None else OsDeviceFiles()
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.name_prefix = name_prefix

    # -- public --------------------------------------------------------------

    def report(self, inblob: bytes, *, privlevel: int | None = None, auxblob: bool = False, min_outblob: int = 1) -> TsmReport:
        """One report for ``inblob``; ``privlevel`` (SNP VMPL) None means the provider's floor."""
        if not 0 < len(inblob) <= INBLOB_MAX:
            raise EnclaveError(f"configfs-tsm inblob must be 1 to {INBLOB_MAX} bytes, got {len(inblob)}")
        if privlevel is not None and not 0 <= privlevel <= PRIVLEVEL_MAX:
            raise EnclaveError(f"privlevel must be 0 to {PRIVLEVEL_MAX}, got {privlevel}")
        last = ""
        for attempt in range(1, self.attempts + 1):
            try:
                return self._attempt(inblob, privlevel, auxblob, min_outblob)
            except _Retry as r:
                last = str(r)
                log.warning("configfs-tsm attempt %d/%d: %s", attempt, self.attempts, last)
                if attempt < self.attempts and self.backoff_s:
                    time.sleep(self.backoff_s * attempt)
        raise EnclaveError(
            f"configfs-tsm: no consistent report after {self.attempts} attempts ({last}). "
            "Another process is writing to this miner's report entries or the quote service stays busy; "
            "make sure only one attestation agent runs in this VM, then retry.",
            reason=Reason.ENCLAVE_BUSY,
        )

    # -- one attempt -----------------------------------------------------------

    def _attempt(self, inblob: bytes, privlevel: int | None, want_aux: bool, min_outblob: int) -> TsmReport:
        entry = self.report_dir / f"{self.name_prefix}-{os.getpid()}-{secrets.token_hex(8)}"
        self._mkdir(entry)
        try:
            provider = self._read_text(entry, "provider")
            if provider != self.provider:
                raise EnclaveError(
                    f"configfs-tsm provider is {provider!r}, expected {self.provider!r}: this VM is not the "
                    f"kind of TEE this backend speaks for (pick the matching --enclave, or use auto)",
                    reason=Reason.ENCLAVE_WRONG_PLATFORM,
                )
            before = self._read_int(entry, "generation")
            writes = 0
            level = privlevel if privlevel is not None else self._floor(entry)
            if level is not None:
                self._write(entry, "privlevel", f"{level}\n".encode())
                writes += 1
            self._write(entry, "inblob", inblob)
            writes += 1
            try:
                outblob = self._read(entry, "outblob")
                aux = b""
                if want_aux and self.files.exists(entry / "auxblob"):
                    aux = self._read(entry, "auxblob")
            except EnclaveError:
                # A dropped or foreign write makes the read fail too (EINVAL without an
                # inblob): if the generation says so, that is the conflict, not the driver.
                self._check_generation(entry, before, writes)
                raise
            self._check_generation(entry, before, writes)
            if not outblob:
                raise EnclaveError(
                    f"configfs-tsm returned an empty outblob from {entry}: the {self.provider} driver produced no report; "
                    "check the kernel log (dmesg) for the driver's error",
                    reason=Reason.ENCLAVE_BAD_OUTPUT,
                )
            if len(outblob) < min_outblob:
                raise EnclaveError(
                    f"configfs-tsm outblob is {len(outblob)} bytes, but a {self.provider} report is at least {min_outblob}: "
                    "the report was truncated; check the kernel log (dmesg) and the host's quote service",
                    reason=Reason.ENCLAVE_BAD_OUTPUT,
                )
            return TsmReport(provider=provider, outblob=outblob, auxblob=aux, generation=before + writes)
        finally:
            try:
                self.files.rmdir(entry)
            except OSError as e:
                log.warning("could not remove configfs-tsm entry %s: %s", entry, e.strerror or e)

    def _check_generation(self, entry: Path, before: int, writes: int) -> None:
        after = self._read_int(entry, "generation")
        if after != before + writes:
            # Another writer changed the request, or one of our writes was dropped
            # (configfs commits binary attributes on close and ignores errors there).
            raise _Retry(f"generation went {before} -> {after} across our {writes} write(s): the report may not be ours")

    def _floor(self, entry: Path) -> int | None:
        """The privlevel to write when none was asked for: the floor, if the provider has one above 0."""
        if not self.files.exists(entry / "privlevel_floor"):
            return None
        floor = self._read_int(entry, "privlevel_floor")
        return floor if floor > 0 else None

    # -- file operations with errors that say what to do -------------------------

    def _mkdir(self, entry: Path) -> None:
        try:
            self.files.mkdir(entry)
        except FileExistsError:
            raise _Retry(f"entry {entry.name} already exists") from None
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise EnclaveError(
                    f"configfs-tsm is not available: {self.report_dir} does not exist. {tsm_missing_advice(self.provider, self.paths)}",
                    reason=Reason.ENCLAVE_UNAVAILABLE,
                ) from None
            if e.errno == errno.ENXIO:
                raise EnclaveError(
                    f"configfs-tsm has no report provider registered: load the guest driver (modprobe {_hint(self.provider)}); "
                    "if it refuses to load, this VM is not a confidential guest of that kind",
                    reason=Reason.ENCLAVE_UNAVAILABLE,
                ) from None
            raise self._error(e, "creating a report entry in", entry) from None

    def _read(self, entry: Path, name: str) -> bytes:
        path = entry / name
        try:
            return self.files.read(path)
        except OSError as e:
            raise self._error(e, "reading", path) from None

    def _read_text(self, entry: Path, name: str) -> str:
        raw = self._read(entry, name)
        try:
            return raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise EnclaveError(f"configfs-tsm attribute {entry / name} is not text", reason=Reason.ENCLAVE_BAD_OUTPUT) from None

    def _read_int(self, entry: Path, name: str) -> int:
        text = self._read_text(entry, name)
        try:
            return int(text, 10)
        except ValueError:
            raise EnclaveError(f"configfs-tsm attribute {entry / name} holds {text!r}, not a number", reason=Reason.ENCLAVE_BAD_OUTPUT) from None

    def _write(self, entry: Path, name: str, data: bytes) -> None:
        path = entry / name
        try:
            self.files.write(path, data)
        except OSError as e:
            if name == "privlevel" and e.errno == errno.EINVAL:
                raise EnclaveError(
                    f"the {self.provider} provider refused privlevel {data.decode().strip()}: it must lie between "
                    f"privlevel_floor (this guest's VMPL) and {PRIVLEVEL_MAX}",
                    reason=Reason.CONFIG,
                ) from None
            raise self._error(e, "writing", path) from None

    def _error(self, e: OSError, action: str, path: Path) -> Exception:
        code = e.errno
        if code in _TRANSIENT:
            return _Retry(f"{action} {path}: {os.strerror(code)}")
        if code in (errno.EACCES, errno.EPERM):
            return EnclaveError(
                f"permission denied {action} {path}: configfs-tsm is writable by root only; run the miner as root "
                "inside the confidential VM (or give its user ownership of the report directory)",
                reason=Reason.ENCLAVE_PERMISSION,
            )
        if code == errno.ENOENT:
            return EnclaveError(
                f"{path} does not exist: this kernel's configfs-tsm lacks the '{path.name}' attribute "
                f"(needs Linux {CONFIGFS_TSM_KERNEL[0]}.{CONFIGFS_TSM_KERNEL[1]}+ with the {_hint(self.provider)} driver)",
                reason=Reason.ENCLAVE_UNAVAILABLE,
            )
        if code == errno.EINVAL and path.name in ("outblob", "auxblob"):
            return EnclaveError(
                f"the {self.provider} driver refused the report request ({action} {path}: invalid argument); "
                "the kernel log (dmesg) says why (for SNP: a VMPCK that is disabled or a privlevel below the floor)",
                reason=Reason.ENCLAVE_REFUSED,
            )
        if code == errno.EIO:
            extra = (
                "the host's TDX quote service is not answering: the host must run Intel's Quote Generation Service "
                "(QGS) and expose it to this TD (qemu -object tdx-guest,quote-generation-socket=...)"
                if self.provider == "tdx_guest"
                else "the platform firmware or the host failed the request; see dmesg"
            )
            return EnclaveError(f"I/O error {action} {path}: {extra}", reason=Reason.ENCLAVE_IO)
        if code == errno.ETIMEDOUT:
            return EnclaveError(
                f"timed out {action} {path}: the host did not produce a quote in time (TDX waits 30 s for the host's QGS); "
                "check the host's quote service and its PCCS",
                reason=Reason.ENCLAVE_IO,
            )
        return EnclaveError(f"{action} {path} failed: {e.strerror or e}", reason=Reason.ENCLAVE_IO)


def tsm_missing_advice(provider: str, paths: HostPaths) -> str:
    """Why configfs-tsm might be missing, in the order worth checking."""
    version = paths.kernel_version()
    need = f"{CONFIGFS_TSM_KERNEL[0]}.{CONFIGFS_TSM_KERNEL[1]}"
    if version is not None and version < CONFIGFS_TSM_KERNEL:
        return (
            f"This kernel is {paths.kernel_release()}, older than {need}, which introduced configfs-tsm: "
            f"boot a guest kernel {need} or newer (e.g. Ubuntu 24.04) with CONFIG_TSM_REPORTS"
        )
    mounted = paths.configfs_mounted()
    if mounted is False:
        return "configfs is not mounted: mount -t configfs none /sys/kernel/config"
    return (
        f"The kernel lacks CONFIG_TSM_REPORTS, or its guest driver is not loaded: modprobe {_hint(provider)} "
        "(plus the configfs-tsm module itself where the kernel builds it as one: tsm, or tsm_report on newer kernels)"
    )


def tsm_availability(provider: str, paths: HostPaths) -> tuple[bool, str]:
    """Whether configfs-tsm is there and writable by us (without creating an entry)."""
    report_dir = paths.tsm_report
    if not report_dir.is_dir():
        return False, f"no configfs-tsm ({report_dir} missing). {tsm_missing_advice(provider, paths)}"
    if not os.access(report_dir, os.W_OK | os.X_OK):
        return False, f"{report_dir} is not writable by this user: configfs-tsm reports need root"
    return True, f"configfs-tsm at {report_dir}"

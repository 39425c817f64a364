"""NVIDIA confidential-computing GPUs (Hopper, Blackwell): GPU evidence bound to the CPU evidence.

A GPU in CC mode answers an SPDM GET_MEASUREMENTS request carrying a 32-byte
nonce with a signed MEASUREMENTS response; its certificate chain leads to
NVIDIA's device identity root. NVML exposes both
(``nvmlDeviceGetConfComputeGpuAttestationReport``,
``nvmlDeviceGetConfComputeGpuCertificate``), and NVIDIA's Python binding of
NVML, ``nvidia-ml-py`` (module ``pynvml``), is what NVIDIA's own
``nv-local-gpu-verifier``/``nv-attestation-sdk`` use to collect evidence. We
call NVML through it directly: those two packages are deprecated (end of
support 2026-09-15) and pin ``cryptography==43``, which this project cannot
install beside its own; verification is the validator's job, not the miner's.

Binding: the GPU nonce is SHA-256 of the 64-byte CPU report data, so one
exchange's nonce and keys bind both the CPU and every GPU. A GPU alone is not
a TEE for the trusted app (its keys live in CPU memory), so GPU evidence is
always attached to CPU evidence (``Evidence.attached``) by
``CompositeBackend``; NVIDIA CC itself requires a confidential VM (TDX or
SEV-SNP) on the CPU side.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

from omron_tee.attestation.evidence import Evidence, TeeType
from omron_tee.enclave.base import Availability, EnclaveBackend
from omron_tee.enclave.host import HostPaths
from omron_tee.errors import EnclaveError
from omron_tee.reasons import Reason

log = logging.getLogger("omron_tee.enclave")

GPU_NONCE_LEN = 32
# The SPDM 1.1 GET_MEASUREMENTS request NVIDIA GPUs record: version 0x11, code 0xE0,
# param1 (signature requested), param2 (0xFF: all measurements), nonce, slot id.
SPDM_REQUEST_LEN = 37
_SPDM_VERSION_11 = 0x11
_SPDM_GET_MEASUREMENTS = 0xE0
MAX_GPUS = 8  # Evidence.from_json accepts at most 8 attached items

PIP_HINT = "pip install nvidia-ml-py"


def gpu_nonce(report_data: bytes) -> bytes:
    """The 32-byte SPDM nonce for the GPUs: SHA-256 of the CPU's 64-byte report data."""
    if len(report_data) != 64:
        raise EnclaveError(f"report data must be 64 bytes, got {len(report_data)}")
    return hashlib.sha256(report_data).digest()


@dataclass(frozen=True)
class GpuEvidence:
    """One GPU's evidence as NVML returns it."""

    index: int
    report: bytes  # SPDM GET_MEASUREMENTS request (37 bytes) followed by the signed response
    cert_chain: bytes  # PEM certificates, leaf first, ending with NVIDIA's device root

    def request_nonce(self) -> bytes:
        return self.report[4 : 4 + GPU_NONCE_LEN]


class GpuEvidenceSource(Protocol):
    def collect(self, nonce: bytes) -> list[GpuEvidence]:
        """Evidence of every CC GPU in this VM for ``nonce`` (32 bytes)."""
        ...


def _import_nvml() -> ModuleType:
    return importlib.import_module("pynvml")


def _nvml_error_text(nvml: Any, e: Exception) -> str:
    code = getattr(e, "value", None)
    if code == getattr(nvml, "NVML_ERROR_LIBRARY_NOT_FOUND", object()):
        return "the NVIDIA driver's NVML library (libnvidia-ml.so) is not installed"
    if code == getattr(nvml, "NVML_ERROR_DRIVER_NOT_LOADED", object()):
        return "the NVIDIA kernel driver is not loaded"
    if code == getattr(nvml, "NVML_ERROR_NOT_SUPPORTED", object()):
        return "this GPU or driver does not support confidential computing (needs Hopper or newer and driver R535+)"
    if code == getattr(nvml, "NVML_ERROR_FUNCTION_NOT_FOUND", object()):
        return "this NVIDIA driver is too old for confidential computing (needs R535+)"
    return str(e) or type(e).__name__


def _nvml_errors(nvml: Any) -> tuple[type[BaseException], ...]:
    """What a call into NVML raises: the binding's NVMLError (all its codes), or a ctypes/OS failure."""
    err = getattr(nvml, "NVMLError", None)
    base: tuple[type[BaseException], ...] = (err,) if isinstance(err, type) else ()
    return (*base, OSError, AttributeError, TypeError, ValueError)


@dataclass(frozen=True)
class GpuStatus:
    """What NVML says about confidential computing on this machine."""

    usable: bool
    detail: str
    gpus: int = 0


class NvmlEvidenceSource:
    """GPU evidence through NVML (``nvidia-ml-py``); ``nvml`` injects the module (tests)."""

    def __init__(self, nvml: ModuleType | Any | None = None, *, importer: Callable[[], Any] = _import_nvml) -> None:
        self._nvml = nvml
        self._importer = importer

    def _module(self) -> Any:
        if self._nvml is None:
            try:
                self._nvml = self._importer()
            except ImportError:
                raise EnclaveError(f"NVIDIA GPU evidence needs NVIDIA's NVML binding: {PIP_HINT}", reason=Reason.ENCLAVE_UNAVAILABLE) from None
        return self._nvml

    def status(self) -> GpuStatus:
        """Driver, GPUs and CC mode, as NVML reports them; never raises."""
        try:
            nvml = self._module()
        except EnclaveError as e:
            return GpuStatus(False, str(e))
        errors = _nvml_errors(nvml)
        try:
            nvml.nvmlInit()
        except errors as e:
            return GpuStatus(False, f"NVML cannot start: {_nvml_error_text(nvml, e)}")
        try:
            count = int(nvml.nvmlDeviceGetCount())
            if count == 0:
                return GpuStatus(False, "the NVIDIA driver is loaded but sees no GPU")
            try:
                state = nvml.nvmlSystemGetConfComputeState()
            except errors as e:
                return GpuStatus(False, f"{count} GPU(s), but confidential computing state is unavailable: {_nvml_error_text(nvml, e)}", count)
            if not state.ccFeature:
                return GpuStatus(
                    False,
                    f"{count} GPU(s), confidential computing mode is off: enable CC mode on the host "
                    "(NVIDIA gpu-admin-tools: nvidia_gpu_tools.py --set-cc-mode=on) and pass the GPU to a TDX or SNP VM",
                    count,
                )
            mode = "production" if getattr(state, "environment", 0) == getattr(nvml, "NVML_CC_SYSTEM_ENVIRONMENT_PROD", 2) else "simulation/unknown environment"
            dev = ", DevTools mode on (validators treat it like debug)" if getattr(state, "devToolsMode", 0) else ""
            if self._ppcie(nvml):
                return GpuStatus(False, f"{count} GPU(s) in protected-PCIe (multi-GPU) mode: that mode needs NVSwitch attestation too, not supported yet", count)
            return GpuStatus(True, f"{count} GPU(s) in confidential computing mode ({mode}{dev})", count)
        except errors as e:
            return GpuStatus(False, f"NVML query failed: {_nvml_error_text(nvml, e)}")
        finally:
            self._shutdown(nvml)

    @staticmethod
    def _ppcie(nvml: Any) -> bool:
        settings_cls = getattr(nvml, "c_nvmlSystemConfComputeSettings_v1_t", None)
        getter = getattr(nvml, "nvmlSystemGetConfComputeSettings", None)
        if settings_cls is None or getter is None:
            return False
        try:
            import ctypes

            settings = settings_cls()
            if getter(ctypes.byref(settings)) != 0:
                return False
            return getattr(settings, "multiGpuMode", 0) == 1
        except _nvml_errors(nvml):  # older drivers lack the call: then not in that mode
            return False

    @staticmethod
    def _shutdown(nvml: Any) -> None:
        try:
            nvml.nvmlShutdown()
        except _nvml_errors(nvml) as e:
            log.debug("nvmlShutdown: %s", e)

    def collect(self, nonce: bytes) -> list[GpuEvidence]:
        if len(nonce) != GPU_NONCE_LEN:
            raise EnclaveError(f"GPU nonce must be {GPU_NONCE_LEN} bytes, got {len(nonce)}")
        nvml = self._module()
        errors = _nvml_errors(nvml)
        try:
            nvml.nvmlInit()
        except errors as e:
            raise EnclaveError(f"NVML cannot start: {_nvml_error_text(nvml, e)}", reason=Reason.ENCLAVE_UNAVAILABLE) from None
        try:
            state = nvml.nvmlSystemGetConfComputeState()
            if not state.ccFeature:
                raise EnclaveError("the GPUs are not in confidential computing mode: enable CC mode on the host and restart the VM", reason=Reason.ENCLAVE_UNAVAILABLE)
            count = int(nvml.nvmlDeviceGetCount())
            if count == 0:
                raise EnclaveError("NVML sees no GPU", reason=Reason.ENCLAVE_UNAVAILABLE)
            if count > MAX_GPUS:
                raise EnclaveError(f"{count} GPUs: evidence can carry at most {MAX_GPUS}", reason=Reason.CONFIG)
            out: list[GpuEvidence] = []
            for i in range(count):
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                rep = nvml.nvmlDeviceGetConfComputeGpuAttestationReport(handle, nonce)
                report = bytes(rep.attestationReport[: rep.attestationReportSize])
                cert = nvml.nvmlDeviceGetConfComputeGpuCertificate(handle)
                chain = bytes(cert.attestationCertChain[: cert.attestationCertChainSize])
                out.append(GpuEvidence(index=i, report=report, cert_chain=chain))
            return out
        except errors as e:
            raise EnclaveError(f"collecting GPU evidence failed: {_nvml_error_text(nvml, e)}", reason=Reason.ENCLAVE_IO) from None
        finally:
            self._shutdown(nvml)


def check_gpu_evidence(ev: GpuEvidence, nonce: bytes) -> None:
    """Shape checks a miner can do before sending (the validator verifies the signatures)."""
    if len(ev.report) <= SPDM_REQUEST_LEN or ev.report[0] != _SPDM_VERSION_11 or ev.report[1] != _SPDM_GET_MEASUREMENTS:
        raise EnclaveError(
            f"GPU {ev.index} returned {len(ev.report)} bytes that do not start with an SPDM 1.1 GET_MEASUREMENTS request",
            reason=Reason.ENCLAVE_BAD_OUTPUT,
        )
    if b"-----BEGIN CERTIFICATE-----" not in ev.cert_chain:
        raise EnclaveError(f"GPU {ev.index} returned no PEM certificate chain", reason=Reason.ENCLAVE_BAD_OUTPUT)
    if ev.request_nonce() != nonce:
        log.warning("GPU %d's evidence carries another nonce than the one requested: validators will refuse it", ev.index)


class NvidiaGpus:
    """Evidence of this VM's CC GPUs for a CPU report data."""

    def __init__(self, source: GpuEvidenceSource | None = None) -> None:
        self.source = source if source is not None else NvmlEvidenceSource()

    def attest(self, report_data: bytes) -> tuple[Evidence, ...]:
        nonce = gpu_nonce(report_data)
        collected = self.source.collect(nonce)
        if not collected:
            raise EnclaveError("no GPU evidence was returned", reason=Reason.ENCLAVE_UNAVAILABLE)
        out = []
        for ev in collected:
            check_gpu_evidence(ev, nonce)
            out.append(Evidence(tee_type=TeeType.NVIDIA, quote=ev.report, certificates=ev.cert_chain))
        return tuple(out)

    @classmethod
    def detect(cls, *, paths: HostPaths | None = None, source: NvmlEvidenceSource | None = None) -> Availability:
        paths = paths or HostPaths()
        if source is None:
            if not (paths.dev / "nvidiactl").exists() and not (paths.proc / "driver/nvidia").exists():
                return Availability(TeeType.NVIDIA, False, "no NVIDIA driver loaded (no /dev/nvidiactl, no /proc/driver/nvidia)")
            source = NvmlEvidenceSource()
        status = source.status()
        return Availability(TeeType.NVIDIA, status.usable, status.detail)


class CompositeBackend(EnclaveBackend):
    """A CPU TEE's evidence with this VM's GPU evidence attached, all bound to one report data."""

    def __init__(self, cpu: EnclaveBackend, gpus: NvidiaGpus) -> None:
        if cpu.tee_type not in (TeeType.TDX, TeeType.SEV_SNP, TeeType.SIMULATED):
            raise EnclaveError(f"NVIDIA CC GPUs work inside TDX or SEV-SNP VMs, not with {cpu.tee_type.value}", reason=Reason.CONFIG)
        self.cpu = cpu
        self.gpus = gpus
        self.tee_type = cpu.tee_type

    def attest(self, report_data: bytes) -> Evidence:
        cpu = self.cpu.attest(report_data)
        gpus = self.gpus.attest(report_data)
        if len(cpu.attached) + len(gpus) > MAX_GPUS:
            raise EnclaveError(f"evidence can carry at most {MAX_GPUS} attached items", reason=Reason.CONFIG)
        return dataclasses.replace(cpu, attached=cpu.attached + gpus)

    def measurement(self) -> bytes | None:
        return self.cpu.measurement()

    @classmethod
    def detect(cls, *, paths: HostPaths | None = None) -> Availability:
        return NvidiaGpus.detect(paths=paths)

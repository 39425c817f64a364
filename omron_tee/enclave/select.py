"""Choosing the enclave backend for ``--enclave auto|sgx|tdx|sev-snp|nvidia|simulated``.

``auto`` takes the real hardware present: inside Gramine, SGX; in a TD, TDX;
in an SNP guest, SEV-SNP; with NVIDIA CC GPUs beside a TDX/SNP VM, their
evidence attached. It never falls back to the simulated enclave on ``test``
or ``finney`` (validators there refuse simulated evidence, and a miner that
silently served it would just fail every check); on ``embedded``/``local``
it may, with a warning, when the caller supplies the simulated backend.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from omron_tee.attestation.evidence import TeeType
from omron_tee.enclave.base import Availability, EnclaveBackend
from omron_tee.enclave.host import HostPaths
from omron_tee.enclave.nvidia_gpu import CompositeBackend, GpuEvidenceSource, NvidiaGpus, NvmlEvidenceSource
from omron_tee.enclave.sev_snp import SevSnpBackend
from omron_tee.enclave.sgx_gramine import GramineSgxBackend
from omron_tee.enclave.simulated import SimulatedBackend
from omron_tee.enclave.tdx import TdxBackend
from omron_tee.errors import EnclaveError
from omron_tee.reasons import Reason

log = logging.getLogger("omron_tee.enclave")

KINDS = ("auto", "sgx", "tdx", "sev-snp", "nvidia", "simulated")
# Networks where a development (simulated) enclave may stand in for hardware.
FALLBACK_NETWORKS = frozenset({"embedded", "local"})

_CPU_BACKENDS: dict[TeeType, type[EnclaveBackend]] = {
    TeeType.SGX: GramineSgxBackend,
    TeeType.TDX: TdxBackend,
    TeeType.SEV_SNP: SevSnpBackend,
}


def detect_all(*, paths: HostPaths | None = None, gpu_source: NvmlEvidenceSource | None = None) -> list[Availability]:
    """What this machine offers, one entry per TEE type, each with the reason it is or is not usable."""
    paths = paths or HostPaths()
    return [
        GramineSgxBackend.detect(paths=paths),
        TdxBackend.detect(paths=paths),
        SevSnpBackend.detect(paths=paths),
        NvidiaGpus.detect(paths=paths, source=gpu_source),
        SimulatedBackend.detect(),
    ]


def _make_cpu(tee: TeeType, paths: HostPaths) -> EnclaveBackend:
    cls = _CPU_BACKENDS[tee]
    return cls(paths=paths)  # type: ignore[call-arg]


def _unusable(tee: TeeType, found: Availability) -> EnclaveError:
    return EnclaveError(f"--enclave {tee.value}: not usable on this machine: {found.detail}", reason=Reason.ENCLAVE_UNAVAILABLE)


def select_backend(
    kind: str,
    *,
    network: str,
    paths: HostPaths | None = None,
    simulated: Callable[[], EnclaveBackend] | None = None,
    gpus: bool | None = None,
    gpu_source: GpuEvidenceSource | None = None,
) -> EnclaveBackend:
    """The backend for ``kind`` on ``network``.

    ``simulated`` builds the simulated backend (it needs the local network's
    development key and the trusted app's measurement, which the caller
    holds); ``gpus`` None attaches NVIDIA GPU evidence when CC GPUs are
    usable, True requires them, False never attaches. ``paths`` and
    ``gpu_source`` root the detection elsewhere (tests).
    """
    paths = paths or HostPaths()
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise EnclaveError(f"unknown --enclave {kind!r}; expected one of: {', '.join(KINDS)}", reason=Reason.CONFIG)
    if kind == "simulated":
        return _simulated(network, simulated, why="--enclave simulated")
    nvml = gpu_source if isinstance(gpu_source, NvmlEvidenceSource) else None

    def gpu_status() -> Availability:
        if gpu_source is not None and nvml is None:
            return Availability(TeeType.NVIDIA, True, "injected GPU evidence source")
        return NvidiaGpus.detect(paths=paths, source=nvml)

    def with_gpus(cpu: EnclaveBackend, required: bool) -> EnclaveBackend:
        if gpus is False and not required:
            return cpu
        status = gpu_status()
        if status.usable:
            if cpu.tee_type not in (TeeType.TDX, TeeType.SEV_SNP):
                if required:
                    raise EnclaveError(f"NVIDIA CC GPUs attest inside TDX or SEV-SNP VMs, not beside {cpu.tee_type.value}", reason=Reason.CONFIG)
                return cpu
            log.info("attaching NVIDIA GPU evidence: %s", status.detail)
            return CompositeBackend(cpu, NvidiaGpus(gpu_source))
        if required or gpus is True:
            raise EnclaveError(f"NVIDIA GPU evidence was required but is not available: {status.detail}", reason=Reason.ENCLAVE_UNAVAILABLE)
        return cpu

    if kind in ("sgx", "tdx", "sev-snp"):
        tee = TeeType(kind)
        found = _CPU_BACKENDS[tee].detect(paths=paths)  # type: ignore[call-arg]
        if not found.usable:
            raise _unusable(tee, found)
        return with_gpus(_make_cpu(tee, paths), required=False)

    found_all = {tee: cls.detect(paths=paths) for tee, cls in _CPU_BACKENDS.items()}  # type: ignore[call-arg]
    usable = [tee for tee, a in found_all.items() if a.usable]

    if kind == "nvidia":
        cpu_tees = [t for t in usable if t in (TeeType.TDX, TeeType.SEV_SNP)]
        if not cpu_tees:
            reasons = "; ".join(f"{t.value}: {found_all[t].detail}" for t in (TeeType.TDX, TeeType.SEV_SNP))
            raise EnclaveError(
                "--enclave nvidia needs a confidential VM (TDX or SEV-SNP) around the GPU: the trusted app's keys live in "
                f"CPU memory, and NVIDIA CC mode only runs inside one. Found: {reasons}",
                reason=Reason.ENCLAVE_UNAVAILABLE,
            )
        return with_gpus(_make_cpu(cpu_tees[0], paths), required=True)

    # auto
    if usable:
        tee = usable[0]  # SGX first: being inside Gramine is an explicit choice of the operator
        log.info("--enclave auto: using %s (%s)", tee.value, found_all[tee].detail)
        return with_gpus(_make_cpu(tee, paths), required=False)
    reasons = "; ".join(f"{t.value}: {a.detail}" for t, a in found_all.items())
    return _simulated(network, simulated, why=f"--enclave auto found no TEE hardware ({reasons})")


def _simulated(network: str, factory: Callable[[], EnclaveBackend] | None, *, why: str) -> EnclaveBackend:
    if network not in FALLBACK_NETWORKS:
        raise EnclaveError(
            f"{why}; the simulated enclave is refused on network '{network}' (validators there accept only hardware "
            "evidence): run the miner on SGX (Gramine), TDX or SEV-SNP hardware, see docs/ENCLAVES.md",
            reason=Reason.ENCLAVE_UNAVAILABLE,
        )
    if factory is None:
        raise EnclaveError(f"{why}; the simulated enclave needs its development key and measurement, which were not given", reason=Reason.CONFIG)
    if not why.startswith("--enclave simulated"):
        log.warning("%s: falling back to the SIMULATED enclave (development only, network '%s')", why, network)
    return factory()

"""Faithful fakes of the platform interfaces, rooted in a temporary directory.

``FakeTsmKernel`` behaves like drivers/virt/coco/tsm.c (configfs-tsm) with a
provider behind it: ``mkdir`` creates an entry whose attributes depend on the
provider (TDX: inblob, outblob, generation, provider; SNP adds auxblob,
privlevel, privlevel_floor); every write to inblob or privlevel advances
``generation`` (and a write that the kernel would refuse with EBUSY is
dropped silently, since configfs commits binary attributes on close and
ignores errors there); ``outblob`` is generated on first read after a write
(EINVAL without an inblob, EINVAL unless inblob is 64 bytes, as both drivers
demand); ``rmdir`` removes the entry. Files on disk mirror the state, so the
tree can be inspected. Its "hardware" returns the real evidence bytes it is
given: it cannot sign for another report data, so the evidence keeps the
report data it was made with, exactly as a replayed report would.

``FakeGramine`` is Gramine's ``/dev/attestation``: attestation_type,
user_report_data (64-byte writes only), quote, my_target_info, report and
target_info.

Each has fault switches: errors per operation, a concurrent writer, short
reads, missing attributes.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from omron_tee.enclave.host import HostPaths

VECTORS_ENV = "OMRON_TEE_TESTVECTORS"


def vectors_dir() -> Path:
    env = os.environ.get(VECTORS_ENV)
    if env:
        return Path(env)
    # ../shared/testvectors relative to the project root (tests/enclave/ -> root).
    return Path(__file__).resolve().parents[2].parent / "shared" / "testvectors"


def _err(code: int, path: Path) -> OSError:
    return OSError(code, os.strerror(code), str(path))


@dataclass
class _Entry:
    write_gen: int = 0
    read_gen: int = 0
    inblob: bytes | None = None
    privlevel: int = 0
    outblob: bytes | None = None
    auxblob: bytes = b""
    reads: int = 0


@dataclass
class FakeTsmKernel:
    """configfs-tsm with a ``tdx_guest`` or ``sev_guest`` provider, under ``root``.

    ``evidence(inblob, privlevel)`` returns (outblob, auxblob): the platform.
    """

    root: Path
    provider: str | None
    evidence: Callable[[bytes, int], tuple[bytes, bytes]]
    privlevel_floor: int = 0
    fail: dict[str, OSError] = field(default_factory=dict)  # op name ("mkdir", "read:outblob", "write:inblob", "rmdir") -> error
    fail_times: dict[str, int] = field(default_factory=dict)  # how many times each failure fires (default: always)
    concurrent_writes: int = 0  # how many of our reports another writer disturbs after our inblob write
    drop_inblob_writes: int = 0  # inblob writes the kernel refuses (EBUSY) at close, silently
    short_outblob: int | None = None  # truncate outblob to this many bytes
    hide: frozenset[str] = frozenset()  # attributes this kernel does not have
    entries: dict[str, _Entry] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.paths = HostPaths.under(self.root)
        self.report_dir = self.paths.tsm_report
        self.report_dir.mkdir(parents=True, exist_ok=True)
        (self.paths.proc / "sys/kernel").mkdir(parents=True, exist_ok=True)
        (self.paths.proc / "sys/kernel/osrelease").write_text("6.8.0-49-generic\n")
        (self.paths.proc / "mounts").write_text("configfs /sys/kernel/config configfs rw,relatime 0 0\n")
        self.paths.dev.mkdir(parents=True, exist_ok=True)
        if self.provider == "tdx_guest":
            (self.paths.dev / "tdx_guest").write_bytes(b"")
            (self.paths.proc / "cpuinfo").write_text("processor\t: 0\nflags\t\t: fpu sse2 tdx_guest\n")
        elif self.provider == "sev_guest":
            (self.paths.dev / "sev-guest").write_bytes(b"")
            (self.paths.proc / "cpuinfo").write_text("processor\t: 0\nflags\t\t: fpu sse2 sev sev_es sev_snp\n")

    # -- helpers ----------------------------------------------------------------

    def _maybe_fail(self, op: str, path: Path) -> None:
        e = self.fail.get(op)
        if e is None:
            return
        left = self.fail_times.get(op)
        if left is not None:
            if left <= 0:
                return
            self.fail_times[op] = left - 1
        raise e

    def _attrs(self) -> list[str]:
        names = ["inblob", "outblob", "generation", "provider"]
        if self.provider == "sev_guest":
            names += ["auxblob", "privlevel", "privlevel_floor"]
        return [n for n in names if n not in self.hide]

    def _entry(self, path: Path) -> tuple[_Entry, str]:
        if path.parent.parent != self.report_dir or path.parent.name not in self.entries:
            raise _err(errno.ENOENT, path)
        if path.name not in self._attrs():
            raise _err(errno.ENOENT, path)
        return self.entries[path.parent.name], path.name

    def _sync(self, name: str) -> None:
        e = self.entries[name]
        (self.report_dir / name / "generation").write_text(f"{e.write_gen}\n")

    def _advance(self, e: _Entry, path: Path) -> None:
        if e.write_gen == e.read_gen - 1:
            raise _err(errno.EBUSY, path)
        e.write_gen += 1

    # -- DeviceFiles -------------------------------------------------------------

    def exists(self, path: Path) -> bool:
        try:
            self._entry(path)
            return True
        except OSError:
            return path.exists()

    def mkdir(self, path: Path) -> None:
        self.log.append(f"mkdir {path.name}")
        self._maybe_fail("mkdir", path)
        if not self.report_dir.is_dir() or path.parent != self.report_dir:
            raise _err(errno.ENOENT, path)
        if self.provider is None:
            raise _err(errno.ENXIO, path)
        if path.name in self.entries:
            raise _err(errno.EEXIST, path)
        path.mkdir()
        self.entries[path.name] = _Entry()
        self.created.append(path.name)
        for attr in self._attrs():
            (path / attr).write_bytes(b"")
        if "provider" in self._attrs():
            (path / "provider").write_text(f"{self.provider}\n")
        if "privlevel_floor" in self._attrs():
            (path / "privlevel_floor").write_text(f"{self.privlevel_floor}\n")
        self._sync(path.name)

    def rmdir(self, path: Path) -> None:
        self.log.append(f"rmdir {path.name}")
        self._maybe_fail("rmdir", path)
        if path.name not in self.entries:
            raise _err(errno.ENOENT, path)
        for child in path.iterdir():
            child.unlink()
        path.rmdir()
        del self.entries[path.name]

    def read(self, path: Path) -> bytes:
        e, name = self._entry(path)
        self.log.append(f"read {name}")
        self._maybe_fail(f"read:{name}", path)
        if name == "provider":
            return f"{self.provider}\n".encode()
        if name == "generation":
            return f"{e.write_gen}\n".encode()
        if name == "privlevel_floor":
            return f"{self.privlevel_floor}\n".encode()
        if name in ("inblob", "privlevel"):
            raise _err(errno.EACCES, path)  # write-only attributes
        # outblob / auxblob: tsm_report_read()
        if not e.inblob:
            raise _err(errno.EINVAL, path)
        if e.outblob is None or e.read_gen != e.write_gen:
            if len(e.inblob) != 64:
                raise _err(errno.EINVAL, path)  # both drivers require exactly 64 bytes
            e.outblob, e.auxblob = self.evidence(e.inblob, e.privlevel)
            e.read_gen = e.write_gen
        data = e.outblob if name == "outblob" else e.auxblob
        if name == "outblob" and self.short_outblob is not None:
            data = data[: self.short_outblob]
        (path.parent / name).write_bytes(data)
        return data

    def write(self, path: Path, data: bytes) -> None:
        e, name = self._entry(path)
        self.log.append(f"write {name}")
        self._maybe_fail(f"write:{name}", path)
        if name == "inblob":
            if len(data) > 64:
                raise _err(errno.EFBIG, path)
            if self.drop_inblob_writes > 0:
                self.drop_inblob_writes -= 1  # EBUSY at release(): configfs ignores it
                return
            self._advance(e, path)
            e.inblob = bytes(data)
            self._sync(path.parent.name)
            if self.concurrent_writes > 0:
                self.concurrent_writes -= 1
                self._foreign_write(e, path)
            return
        if name == "privlevel":
            try:
                value = int(data.decode().strip(), 0)
            except ValueError:
                raise _err(errno.EINVAL, path) from None
            if value < self.privlevel_floor or value > 3:
                raise _err(errno.EINVAL, path)
            self._advance(e, path)
            e.privlevel = value
            self._sync(path.parent.name)
            return
        raise _err(errno.EACCES, path)  # read-only attributes

    def _foreign_write(self, e: _Entry, path: Path) -> None:
        """Another process writes the same entry right after us."""
        self.log.append("foreign write inblob")
        e.write_gen += 1
        e.inblob = b"\xee" * 64
        self._sync(path.parent.name)


@dataclass
class FakeGramine:
    """Gramine's /dev/attestation under ``root``."""

    root: Path
    quote: bytes
    attestation_type: str = "dcap"
    mrenclave: bytes = bytes(32)
    fail: dict[str, OSError] = field(default_factory=dict)  # "read:quote", "write:user_report_data", ...
    short_quote: int | None = None
    user_report_data: bytes = bytes(64)
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.paths = HostPaths.under(self.root)
        self.dir = self.paths.gramine_attestation
        self.dir.mkdir(parents=True, exist_ok=True)
        # Gramine writes the type without a newline.
        (self.dir / "attestation_type").write_text(self.attestation_type)
        if self.attestation_type != "none":
            for name in ("user_report_data", "quote", "my_target_info", "target_info", "report"):
                (self.dir / name).write_bytes(b"")

    def _check(self, path: Path) -> str:
        if path.parent != self.dir or not path.exists():
            raise _err(errno.ENOENT, path)
        return path.name

    def exists(self, path: Path) -> bool:
        return path.exists()

    def mkdir(self, path: Path) -> None:
        raise _err(errno.EPERM, path)

    def rmdir(self, path: Path) -> None:
        raise _err(errno.EPERM, path)

    def read(self, path: Path) -> bytes:
        name = self._check(path)
        self.log.append(f"read {name}")
        if f"read:{name}" in self.fail:
            raise self.fail[f"read:{name}"]
        if name == "attestation_type":
            return self.attestation_type.encode()
        if name == "quote":
            data = self.quote if self.short_quote is None else self.quote[: self.short_quote]
            return data
        if name == "my_target_info":
            return self.mrenclave + bytes(512 - 32)
        if name == "user_report_data":
            return self.user_report_data
        raise _err(errno.EACCES, path)

    def write(self, path: Path, data: bytes) -> None:
        name = self._check(path)
        self.log.append(f"write {name}")
        if f"write:{name}" in self.fail:
            raise self.fail[f"write:{name}"]
        if name == "user_report_data":
            if len(data) != 64:
                raise _err(errno.EINVAL, path)
            self.user_report_data = bytes(data)
            (self.dir / name).write_bytes(data)
            return
        if name == "target_info":
            if len(data) != 512:
                raise _err(errno.EINVAL, path)
            return
        raise _err(errno.EACCES, path)


@dataclass
class FakeGpuSource:
    """GPU evidence source returning real Hopper evidence (it carries the nonce it was made with)."""

    report: bytes
    cert_chain: bytes
    gpus: int = 1
    nonces: list[bytes] = field(default_factory=list)

    def collect(self, nonce: bytes):
        from omron_tee.enclave.nvidia_gpu import GpuEvidence

        self.nonces.append(nonce)
        return [GpuEvidence(index=i, report=self.report, cert_chain=self.cert_chain) for i in range(self.gpus)]


class FakeNvmlError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


class FakeNvml:
    """The part of pynvml (nvidia-ml-py) the NVML source uses, with NVML's constants and result shapes."""

    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_DRIVER_NOT_LOADED = 9
    NVML_ERROR_LIBRARY_NOT_FOUND = 12
    NVML_ERROR_FUNCTION_NOT_FOUND = 13
    NVML_CC_SYSTEM_ENVIRONMENT_PROD = 2
    NVMLError = FakeNvmlError

    def __init__(self, *, report: bytes, cert_chain: bytes, gpus: int = 1, cc: bool = True, init_error: int | None = None,
                 cc_error: int | None = None, devtools: bool = False) -> None:
        self.report, self.cert_chain, self.gpus, self.cc = report, cert_chain, gpus, cc
        self.init_error, self.cc_error, self.devtools = init_error, cc_error, devtools
        self.calls: list[str] = []
        self.initialized = 0

    def nvmlInit(self) -> None:
        self.calls.append("init")
        if self.init_error is not None:
            raise FakeNvmlError(self.init_error)
        self.initialized += 1

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")
        self.initialized -= 1

    def nvmlDeviceGetCount(self) -> int:
        return self.gpus

    def nvmlSystemGetConfComputeState(self):
        from types import SimpleNamespace

        if self.cc_error is not None:
            raise FakeNvmlError(self.cc_error)
        return SimpleNamespace(environment=2, ccFeature=1 if self.cc else 0, devToolsMode=1 if self.devtools else 0)

    def nvmlDeviceGetHandleByIndex(self, i: int):
        return ("gpu", i)

    def nvmlDeviceGetConfComputeGpuAttestationReport(self, handle, nonce: bytes):
        from types import SimpleNamespace

        self.calls.append(f"report {handle[1]} {bytes(nonce).hex()}")
        buf = list(self.report) + [0] * (0x2000 - len(self.report))  # NVML fills a fixed 8 KiB array
        return SimpleNamespace(attestationReportSize=len(self.report), attestationReport=buf)

    def nvmlDeviceGetConfComputeGpuCertificate(self, handle):
        from types import SimpleNamespace

        buf = list(self.cert_chain) + [0] * (0x1400 - len(self.cert_chain))
        return SimpleNamespace(attestationCertChainSize=len(self.cert_chain), attestationCertChain=buf)

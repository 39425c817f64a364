"""Where the platform's attestation interfaces live, and the file operations on them.

Every hardware backend reaches its platform through a handful of special
files (configfs-tsm attributes, Gramine's ``/dev/attestation``, ``/proc``).
``HostPaths`` names them, rooted at ``/`` in production; tests root them in a
temporary directory. ``DeviceFiles`` is the one seam through which backends
touch those files, so that a test can stand in a faithful fake of the kernel
or of Gramine (whose pseudo-files react to writes, which plain files cannot).
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# configfs-tsm caps outblob at 32 KiB (TSM_OUTBLOB_MAX); Gramine's quotes are < 8 KiB.
MAX_BLOB = 64 * 1024


@dataclass(frozen=True)
class HostPaths:
    """The production locations of every interface the backends use, under ``root``."""

    root: Path = Path("/")

    @classmethod
    def under(cls, root: str | Path) -> HostPaths:
        return cls(Path(root))

    def _p(self, rel: str) -> Path:
        return self.root / rel

    @property
    def configfs(self) -> Path:
        return self._p("sys/kernel/config")

    @property
    def tsm_report(self) -> Path:
        return self._p("sys/kernel/config/tsm/report")

    @property
    def gramine_attestation(self) -> Path:
        return self._p("dev/attestation")

    @property
    def dev(self) -> Path:
        return self._p("dev")

    @property
    def proc(self) -> Path:
        return self._p("proc")

    def kernel_release(self) -> str | None:
        """The running kernel's release string (``/proc/sys/kernel/osrelease``), if readable."""
        try:
            return (self.proc / "sys/kernel/osrelease").read_text().strip() or None
        except OSError:
            return None

    def kernel_version(self) -> tuple[int, int] | None:
        release = self.kernel_release()
        m = re.match(r"(\d+)\.(\d+)", release or "")
        return (int(m.group(1)), int(m.group(2))) if m else None

    def cpu_flags(self) -> frozenset[str]:
        """The flags of the first CPU in ``/proc/cpuinfo`` (empty if unreadable)."""
        try:
            text = (self.proc / "cpuinfo").read_text()
        except OSError:
            return frozenset()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags":
                return frozenset(value.split())
        return frozenset()

    def configfs_mounted(self) -> bool | None:
        """Whether configfs is mounted at its usual place (None when /proc/mounts is unreadable)."""
        try:
            text = (self.proc / "mounts").read_text()
        except OSError:
            return None
        for line in text.splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[2] == "configfs" and fields[1] == "/sys/kernel/config":
                return True
        return False


class DeviceFiles(Protocol):
    """The file operations backends perform on platform interfaces.

    Errors are ``OSError`` with the errno the kernel (or Gramine) returns, so
    that callers can say what went wrong.
    """

    def exists(self, path: Path) -> bool: ...

    def mkdir(self, path: Path) -> None: ...

    def rmdir(self, path: Path) -> None: ...

    def read(self, path: Path) -> bytes: ...

    def write(self, path: Path, data: bytes) -> None: ...


class OsDeviceFiles:
    """The real thing: unbuffered reads and single-``write`` writes.

    configfs binary attributes are read whole on the first ``read`` and
    committed when the file is closed, and Gramine's pseudo-files act per
    ``write``; so each write is one ``os.write`` of all the bytes, then close.
    """

    def exists(self, path: Path) -> bool:
        return os.path.exists(path)

    def mkdir(self, path: Path) -> None:
        os.mkdir(path, 0o700)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def read(self, path: Path) -> bytes:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks: list[bytes] = []
            total = 0
            while True:
                chunk = os.read(fd, 16384)
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
                if total > MAX_BLOB:
                    raise OSError(errno.EFBIG, f"{path} is larger than {MAX_BLOB} bytes")
            return b"".join(chunks)
        finally:
            os.close(fd)

    def write(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            n = os.write(fd, data)
            if n != len(data):
                raise OSError(errno.EIO, f"short write to {path}: {n} of {len(data)} bytes")
        finally:
            os.close(fd)

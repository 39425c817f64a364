"""Child processes of a development network: free loopback ports, waiting until they serve, stopping them all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable

import httpx


def free_port() -> int:
    """A port on 127.0.0.1 with nothing listening at the time of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_all(procs: list[subprocess.Popen], *, grace_s: float = 5.0) -> None:
    """SIGTERM every process group still running, then SIGKILL those that outlive ``grace_s``."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=grace_s)


class StartFailed(RuntimeError):
    pass


def wait_serving(ports: dict[str, int], procs: dict[str, subprocess.Popen], *, timeout: float, tail: Callable[[str], str]) -> None:
    """Wait until every named server answers ``GET /health`` on its loopback port.

    ``procs`` maps a name to the process that serves it (several names may share one); a
    process that exits meanwhile, or a name still silent after ``timeout`` seconds, raises
    ``StartFailed`` with ``tail(name)`` (the end of its log) in the message."""
    deadline = time.monotonic() + timeout
    pending = dict(ports)
    while pending:
        for name in list(pending):
            proc = procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise StartFailed(f"{name} exited during start-up:\n{tail(name)}")
            try:
                if httpx.get(f"http://127.0.0.1:{pending[name]}/health", timeout=0.5, trust_env=False).status_code == 200:
                    del pending[name]
            except httpx.HTTPError:
                pass
        if pending:
            if time.monotonic() > deadline:
                first = next(iter(pending))
                raise StartFailed(f"{sorted(pending)} did not start within {timeout:.0f}s:\n{tail(first)}")
            time.sleep(0.1)

"""Child processes of a development network: free loopback ports, and stopping them all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess


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

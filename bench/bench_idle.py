"""What an idle miner costs: CPU per second at rest, uvicorn's own server against ``wire.server.QuietServer``.

    .venv/bin/python bench/bench_idle.py [--seconds 30]

Starts two real miner processes on one embedded chain (simulated enclaves, no zk), side by side:
one served by uvicorn's ``Server`` as shipped (its main loop wakes every 0.1 s), one by
``QuietServer`` (what the neurons use: once a second, woken at once to stop). Nobody calls them.
After start-up it reads each process's time on CPU from ``/proc/<pid>/schedstat`` (nanoseconds,
the kernel's own counter) over the same ``--seconds`` and prints both, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omron_tee.config import create_wallet  # noqa: E402
from omron_tee.devnet.processes import free_port, wait_serving  # noqa: E402

# The shipped uvicorn loop, for comparison: the miner's entry point with QuietServer put back to uvicorn's.
SHIPPED = """
import sys, uvicorn
import omron_tee.miner.neuron as n
n.QuietServer = uvicorn.Server
sys.exit(n.main(sys.argv[1:]))
"""


def cpu_ns(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        total += int((task / "schedstat").read_text().split()[0])
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        procs, ports = {}, {}
        try:
            for name, entry in (("uvicorn.Server", ["-c", SHIPPED]), ("QuietServer", ["-m", "omron_tee.miner"])):
                create_wallet(name, "default", root / "w")
                ports[name] = free_port()
                cmd = [sys.executable, *entry, "--netuid", "1", "--subtensor.network", "embedded", "--chain.path", str(root / "chain.sqlite"),
                       "--chain.create", "--wallet.name", name, "--wallet.hotkey", "default", "--wallet.path", str(root / "w"),
                       "--axon.port", str(ports[name]), "--enclave", "simulated", "--zk.off"]
                procs[name] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            wait_serving(ports, procs, timeout=60, tail=lambda name: "")
            time.sleep(3.0)  # past start-up
            before = {n: cpu_ns(p.pid) for n, p in procs.items()}
            time.sleep(args.seconds)
            after = {n: cpu_ns(p.pid) for n, p in procs.items()}
        finally:
            for p in procs.values():
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGTERM)
            for p in procs.values():
                p.wait(timeout=10)
    per_s = {n: (after[n] - before[n]) / args.seconds / 1e6 for n in procs}
    print(f"idle miner, CPU per second of rest over {args.seconds:.0f} s (both at once, /proc schedstat):")
    for n, v in per_s.items():
        print(f"  {n:<15} {v:6.3f} ms/s")
    print(f"  ratio            {per_s['uvicorn.Server'] / max(per_s['QuietServer'], 1e-9):6.1f}x less with QuietServer")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

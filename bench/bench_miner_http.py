"""The miner's CPU per request: its routes on plain Starlette (shipped) against the same routes on FastAPI, one run.

    .venv/bin/python bench/bench_miner_http.py [--requests 1500]

Starts two miner servers (simulated enclave, the shipped models, uvicorn through
``wire.server.QuietServer``), one with ``miner.server.build_app`` as shipped and one with the
very same route functions registered on FastAPI (``add_api_route``: what the miner ran before).
One validator-side client (btauth/1-signed, httpx) sends both the same requests, interleaved:
a fresh attestation then a sealed tensor request (two round trips), and a request on a reused
session. Each server's CPU comes from ``/proc/<pid>/schedstat`` (the kernel's counter), so the
figures are per request of that process alone; medians of ``--rounds`` interleaved rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from omron_tee.config import create_wallet, run_async  # noqa: E402
from omron_tee.devnet.processes import free_port, wait_serving  # noqa: E402

HOTKEY = "5BenchMinerHotkey000000000000000000000000000000"
SERVER = """
import sys
from fastapi import FastAPI
from omron_tee.enclave.measurement import trusted_app_measurement
from omron_tee.enclave.simulated import SimulatedBackend
from omron_tee.miner.server import build_app
from omron_tee.miner.trusted_app import TrustedApp
from omron_tee.models.registry import ModelRegistry
from omron_tee.wire.auth import Admission, RequestVerifier
from omron_tee.wire.server import QuietServer, server_config

variant, key, port, hotkey = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
models = ModelRegistry.builtin()
core = TrustedApp(SimulatedBackend(key, trusted_app_measurement([(s.model_id, s.sha256) for s in models.specs()])), models, hotkey=hotkey)
app = build_app(core, RequestVerifier(hotkey, Admission.anyone()))
if variant == "fastapi":
    before = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    for r in app.routes:
        before.add_api_route(r.path, r.endpoint, methods=sorted(r.methods - {"HEAD"}))
    app = before
QuietServer(server_config(app, host="127.0.0.1", port=port)).run()
"""


def cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


async def drive(urls: dict[str, str], pids: dict[str, int], rounds: int, per_round: int, wallet) -> dict[str, dict[str, float]]:
    from omron_tee.enclave.measurement import trusted_app_measurement
    from omron_tee.exchange import transport
    from omron_tee.exchange.requester import check_attestation, new_nonce, seal_request
    from omron_tee.attestation.validate.policy import Policy, SimulatedPolicy
    from omron_tee.enclave.simulated import dev_public_key
    from omron_tee.models.registry import ModelRegistry
    from omron_tee.protocol import AttestRequest
    from omron_tee.validator.neuron import build_verifiers
    from omron_tee.wire.auth import Signer
    from omron_tee.wire.client import SignedClient
    from omron_tee.workloads.tensor import TensorWorkload, sample_input

    models = ModelRegistry.builtin()
    spec = models.get("digits-mlp")
    policy = Policy(simulated=SimulatedPolicy(True, frozenset([dev_public_key(KEY_PATH)]),
                                              frozenset([trusted_app_measurement([(s.model_id, s.sha256) for s in models.specs()])])))
    verifiers = build_verifiers(policy)
    client = SignedClient(Signer(wallet), timeout=10.0)
    tensor = TensorWorkload()
    x = sample_input(spec, np.random.default_rng(0))
    sessions = {}

    async def fresh(url):
        nonce = new_nonce()
        resp, _ = await transport.attest(client, url, AttestRequest(nonce, "x25519-hkdf-sha256-chacha20poly1305", HOTKEY), receiver=HOTKEY, timeout=10.0)
        s = check_attestation(resp, nonce=nonce, hotkey=HOTKEY, policy=policy, registry=verifiers)
        req, reader = seal_request(s, tensor, spec, x, nonce=nonce)
        await transport.answer(client, url, req, reader, receiver=HOTKEY, timeout=10.0)
        return s

    async def reused(url):
        req, reader = seal_request(sessions[url], tensor, spec, x)
        await transport.answer(client, url, req, reader, receiver=HOTKEY, timeout=10.0)

    for name, url in urls.items():
        sessions[url] = await fresh(url)  # warm up: connections, sessions
    out = {name: {"fresh": [], "reused": []} for name in urls}
    for _ in range(rounds):
        for name, url in urls.items():
            for mode, fn in (("fresh", fresh), ("reused", reused)):
                before = cpu_ns(pids[name])
                for _ in range(per_round):
                    await fn(url)
                out[name][mode].append((cpu_ns(pids[name]) - before) / per_round / 1000)
    await client.aclose()
    return {name: {mode: statistics.median(v) for mode, v in modes.items()} for name, modes in out.items()}


KEY_PATH = ""


def main() -> None:
    global KEY_PATH
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--per-round", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        KEY_PATH = str(Path(d) / "dev.key")
        wallet = create_wallet("bench", "default", Path(d) / "wallets")
        procs, urls, pids = {}, {}, {}
        try:
            for name in ("starlette", "fastapi"):
                port = free_port()
                procs[name] = subprocess.Popen([sys.executable, "-c", SERVER, name, KEY_PATH, str(port), HOTKEY], start_new_session=True,
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                urls[name], pids[name] = f"http://127.0.0.1:{port}", procs[name].pid
                wait_serving({name: port}, {name: procs[name]}, timeout=60, tail=lambda n: "")
            got = run_async(drive(urls, pids, args.rounds, args.per_round, wallet))
        finally:
            for p in procs.values():
                with __import__("contextlib").suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
            for p in procs.values():
                p.wait(timeout=10)
    print(f"miner CPU per request (µs, median of {args.rounds} interleaved rounds of {args.per_round}):")
    for mode, label in (("fresh", "fresh attestation + request (2 trips)"), ("reused", "request on a reused session")):
        a, b = got["starlette"][mode], got["fastapi"][mode]
        print(f"  {label:<40} Starlette {a:7.0f}   FastAPI {b:7.0f}   ratio {a / b:.2f}")


if __name__ == "__main__":
    main()

"""The validator's wire, side by side in one run: verified requests beside a bare HTTP round trip, and one
TLS context for every peer's pool against one each.

    .venv/bin/python bench/bench_wire.py [--rounds 20] [--per-round 50] [--peers 128]

One miner server (simulated enclave, shipped Starlette routes) in its own process; in this
process the validator's ``SignedClient``, interleaved: a bare round trip (an unsigned
``GET /health`` through the same client stack), a verified request on a reused session (one
round trip), the same with its proof of freshness in band (one round trip), and a fresh
attestation plus request (two). Medians of wall time per request, this process's CPU per
request (``time.process_time``) and the miner's (``/proc/<pid>/schedstat``). Then the CPU
cost of building ``--peers`` per-peer pools with one shared TLS context against one each
(tracemalloc cannot see OpenSSL's own memory, so no memory figure is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from omron_tee.config import create_wallet, run_async  # noqa: E402
from omron_tee.devnet.processes import free_port, wait_serving  # noqa: E402

HOTKEY = "5BenchMinerHotkey000000000000000000000000000000"
SERVER = """
import sys
from omron_tee.enclave.measurement import trusted_app_measurement
from omron_tee.enclave.simulated import SimulatedBackend
from omron_tee.miner.server import build_app
from omron_tee.miner.trusted_app import TrustedApp
from omron_tee.models.registry import ModelRegistry
from omron_tee.wire.auth import Admission, RequestVerifier
from omron_tee.wire.server import QuietServer, server_config
key, port, hotkey = sys.argv[1], int(sys.argv[2]), sys.argv[3]
models = ModelRegistry.builtin()
core = TrustedApp(SimulatedBackend(key, trusted_app_measurement([(s.model_id, s.sha256) for s in models.specs()])), models, hotkey=hotkey)
QuietServer(server_config(build_app(core, RequestVerifier(hotkey, Admission.anyone())), host="127.0.0.1", port=port)).run()
"""


def cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


async def drive(url: str, pid: int, key_path: str, wallet, rounds: int, per_round: int) -> dict:
    from omron_tee.attestation.validate.policy import Policy, SimulatedPolicy
    from omron_tee.enclave.measurement import trusted_app_measurement
    from omron_tee.enclave.simulated import dev_public_key
    from omron_tee.exchange import transport
    from omron_tee.exchange.requester import check_attestation, fresh_check, new_nonce, seal_request
    from omron_tee.models.registry import ModelRegistry
    from omron_tee.protocol import AttestRequest
    from omron_tee.validator.neuron import build_verifiers
    from omron_tee.wire.auth import Signer
    from omron_tee.wire.client import SignedClient
    from omron_tee.workloads.tensor import TensorWorkload, sample_input

    models = ModelRegistry.builtin()
    spec = models.get("digits-mlp")
    policy = Policy(simulated=SimulatedPolicy(True, frozenset([dev_public_key(key_path)]),
                                              frozenset([trusted_app_measurement([(s.model_id, s.sha256) for s in models.specs()])])))
    verifiers = build_verifiers(policy)
    tensor = TensorWorkload()
    x = sample_input(spec, np.random.default_rng(0))
    c = SignedClient(Signer(wallet))
    sessions = {}

    async def fresh(c):
        nonce = new_nonce()
        resp, _ = await transport.attest(c, url, AttestRequest(nonce, "x25519-hkdf-sha256-chacha20poly1305", HOTKEY), receiver=HOTKEY, timeout=10.0)
        s = check_attestation(resp, nonce=nonce, hotkey=HOTKEY, policy=policy, registry=verifiers)
        req, reader = seal_request(s, tensor, spec, x, nonce=nonce)
        await transport.answer(c, url, req, reader, receiver=HOTKEY, timeout=10.0)
        return s

    async def reused(c):
        req, reader = seal_request(sessions["s"], tensor, spec, x)
        await transport.answer(c, url, req, reader, receiver=HOTKEY, timeout=10.0)

    async def in_band(c):
        check = fresh_check(sessions["s"], hotkey=HOTKEY, policy=policy, registry=verifiers)
        req, reader = seal_request(sessions["s"], tensor, spec, x, fresh=check)
        await transport.answer(c, url, req, reader, receiver=HOTKEY, timeout=10.0)

    async def bare(c):
        await c.get(url, "/health")

    sessions["s"] = await fresh(c)
    modes = (("bare", bare), ("reused", reused), ("in_band", in_band), ("fresh", fresh))
    out: dict = {m: {"wall": [], "cpu": [], "miner": []} for m, _ in modes}
    for _ in range(rounds):
        for mode, fn in modes:
            w0, c0, m0 = time.perf_counter(), time.process_time(), cpu_ns(pid)
            for _ in range(per_round):
                await fn(c)
            o = out[mode]
            o["wall"].append((time.perf_counter() - w0) / per_round * 1e3)
            o["cpu"].append((time.process_time() - c0) / per_round * 1e3)
            o["miner"].append((cpu_ns(pid) - m0) / per_round / 1e6)
    await c.aclose()
    return {m: {k: statistics.median(v) for k, v in d.items()} for m, d in out.items()}


def tls_cost(peers: int) -> dict[str, tuple[float, float]]:
    from omron_tee.wire.client import shared_tls_context

    out = {}
    for name, verify in (("shared context", lambda: shared_tls_context()), ("a context each", lambda: True)):
        tracemalloc.start()
        t = time.process_time()
        clients = [httpx.AsyncClient(verify=verify(), trust_env=False) for _ in range(peers)]
        spent = time.process_time() - t
        mem = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        out[name] = (spent * 1000 / peers, mem / peers / 1e6)
        del clients
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--per-round", type=int, default=50)
    ap.add_argument("--peers", type=int, default=128)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        key = str(Path(d) / "dev.key")
        wallet = create_wallet("bench", "default", Path(d) / "wallets")
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-c", SERVER, key, str(port), HOTKEY], start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_serving({"miner": port}, {"miner": proc}, timeout=60, tail=lambda n: "")
            got = run_async(drive(f"http://127.0.0.1:{port}", proc.pid, key, wallet, args.rounds, args.per_round))
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
    tls = tls_cost(args.peers)
    bare = got["bare"]
    print(f"loopback HTTP to one miner, medians of {args.rounds} interleaved rounds of {args.per_round}, ms per request "
          "(wall; this validator process's CPU; the miner's CPU):")
    for mode, label in (("bare", "bare round trip (GET /health)"), ("reused", "verified request, reused session"),
                        ("in_band", "verified, fresh in band (1 trip)"), ("fresh", "fresh attestation + request (2 trips)")):
        r = got[mode]
        print(f"  {label:<40} {r['wall']:6.3f} wall {r['cpu']:6.3f} validator {r['miner']:6.3f} miner   {r['wall'] / bare['wall']:5.2f}x the bare trip")
    print(f"{args.peers} per-peer pools: " + "; ".join(f"{k} {ms:.2f} ms CPU per peer" for k, (ms, _) in tls.items()))


if __name__ == "__main__":
    main()

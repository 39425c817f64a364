"""What the benches that talk to one miner process share: starting it, reading its CPU, and the exchanges.

``start(variant, key_path)`` runs a miner server (simulated enclave, the shipped models,
``wire.server.QuietServer``) in its own process: ``variant`` "shipped" is ``miner.server.build_app``
(plain Starlette), "unlimited-auth" the same with no limit on an address's failed authentications, "fastapi" the same route functions on FastAPI (what the miner ran before), "asgi"
the routes on the bare ASGI interface with no framework (``_asgi_miner``: measured, not shipped). ``cpu_ns(pid)`` is the process's time on CPU (``/proc/<pid>/schedstat``).
``Exchanges`` makes the validator-side requests: a bare round trip, a fresh attestation plus
request, a request on a reused session, and one proving freshness in band.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from omron_tee.devnet.processes import free_port, wait_serving

HOTKEY = "5BenchMinerHotkey000000000000000000000000000000"
EXTRA_MODEL_ID = "bench-extra"  # what ``start``'s and ``Exchanges``' extra_model is served and asked as
_SERVER = """
import sys
from fastapi import FastAPI
from omron_tee.enclave.measurement import trusted_app_measurement
from omron_tee.enclave.simulated import SimulatedBackend
from omron_tee.miner.server import build_app
from omron_tee.miner.trusted_app import TrustedApp
from omron_tee.models.registry import ModelRegistry
from omron_tee.wire.auth import Admission, RequestVerifier
from omron_tee.wire.server import QuietServer, server_config

sys.path.insert(0, {bench!r})
import _one_miner

variant, key, port, hotkey = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
models = ModelRegistry.builtin()
if len(sys.argv) > 5:  # an extra ONNX model and its id
    models.add_file(sys.argv[5], sys.argv[6])
core = TrustedApp(SimulatedBackend(key, trusted_app_measurement([(s.model_id, s.sha256) for s in models.specs()])), models, hotkey=hotkey)
app = build_app(core, RequestVerifier(hotkey, Admission.anyone()))
if variant == "unlimited-auth":  # the shipped routes with no limit on an address's failed authentications
    from omron_tee.wire.ratelimit import RateLimiter
    app = build_app(core, RequestVerifier(hotkey, Admission.anyone(), failures=RateLimiter(1e9, 1e9)))
if variant == "asgi":
    import _asgi_miner
    app = _asgi_miner.build_app(core, RequestVerifier(hotkey, Admission.anyone()))
if variant == "fastapi":
    before = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    for r in app.routes:
        before.add_api_route(r.path, r.endpoint, methods=sorted(r.methods - {"HEAD"}))
    app = before
_one_miner.tune_allocator_as_neurons_do()
QuietServer(server_config(app, host="127.0.0.1", port=port)).run()
""".replace("{bench!r}", repr(os.path.dirname(os.path.abspath(__file__))))


def tune_allocator_as_neurons_do() -> bool:
    """``config.tune_allocator`` in this process, as the neurons do, unless ``OMRON_TEE_BENCH_DEFAULT_ALLOCATOR``
    is set (then the miners started here skip it too): the one switch for an A/B of glibc's own behaviour."""
    from omron_tee.config import tune_allocator

    return False if os.environ.get("OMRON_TEE_BENCH_DEFAULT_ALLOCATOR") else tune_allocator()


def cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def start(variant: str, key_path: str, extra_model: str | None = None) -> tuple[subprocess.Popen, str]:
    """A serving miner process and its URL (stop it with ``stop``); ``extra_model``, an ONNX file it also serves
    as ``EXTRA_MODEL_ID``."""
    port = free_port()
    extra = [extra_model, EXTRA_MODEL_ID] if extra_model else []
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, variant, key_path, str(port), HOTKEY, *extra], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_serving({variant: port}, {variant: proc}, timeout=60, tail=lambda n: "")
    except BaseException:
        stop([proc])
        raise
    return proc, f"http://127.0.0.1:{port}"


async def measure(url: str, pid: int, modes, rounds: int, per_round: int) -> dict[str, dict[str, float]]:
    """Each of ``modes`` (``(name, async fn(url))``) ``per_round`` times in turn, ``rounds`` times over (interleaved,
    so noise hits all alike): per mode, the medians of ms per call of wall time, of this process's CPU
    (``time.process_time``) and of the miner's (``cpu_ns(pid)``)."""
    out: dict[str, dict[str, list[float]]] = {m: {"wall": [], "cpu": [], "miner": []} for m, _ in modes}
    for _ in range(rounds):
        for mode, fn in modes:
            w0, c0, m0 = time.perf_counter(), time.process_time(), cpu_ns(pid)
            for _ in range(per_round):
                await fn(url)
            o = out[mode]
            o["wall"].append((time.perf_counter() - w0) / per_round * 1e3)
            o["cpu"].append((time.process_time() - c0) / per_round * 1e3)
            o["miner"].append((cpu_ns(pid) - m0) / per_round / 1e6)
    return {m: {k: statistics.median(v) for k, v in d.items()} for m, d in out.items()}


def in_process_enclave(key_path: str, models):
    """The bench miner's trusted app in this process: the same simulated enclave key, models and hotkey as ``start``'s."""
    from omron_tee.enclave.measurement import trusted_app_measurement
    from omron_tee.enclave.simulated import SimulatedBackend
    from omron_tee.miner.trusted_app import TrustedApp

    return TrustedApp(SimulatedBackend(key_path, trusted_app_measurement([(s.model_id, s.sha256) for s in models.specs()])), models, hotkey=HOTKEY)


@contextlib.contextmanager
def bench_dir() -> Iterator[tuple[Path, str, object]]:
    """A temporary folder, the path of a development attestation key in it, and a validator's wallet."""
    from omron_tee.config import create_wallet

    with tempfile.TemporaryDirectory() as d:
        yield Path(d), str(Path(d) / "dev.key"), create_wallet("bench", "default", Path(d) / "wallets")


@contextlib.contextmanager
def serving(variants: list[str], key_path: str, extra_model: str | None = None) -> Iterator[dict[str, tuple[str, int]]]:
    """Miner processes (``start``), one per variant: variant -> (URL, pid); all stopped on the way out."""
    procs: list[subprocess.Popen] = []
    out: dict[str, tuple[str, int]] = {}
    try:
        for v in variants:
            proc, url = start(v, key_path, extra_model)
            procs.append(proc)
            out[v] = (url, proc.pid)
        yield out
    finally:
        stop(procs)


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        p.wait(timeout=10)


class Exchanges:
    """A validator's requests to bench miners, signed by ``wallet``, judged by a policy trusting ``key_path``;
    with ``extra_model`` (the file given to ``start``), they ask for that model with ``x``."""

    def __init__(self, wallet, key_path: str, extra_model: str | None = None, x: np.ndarray | None = None) -> None:
        from omron_tee.attestation.validate.policy import Policy, SimulatedPolicy
        from omron_tee.enclave.measurement import trusted_app_measurement
        from omron_tee.enclave.simulated import dev_public_key
        from omron_tee.models.registry import ModelRegistry
        from omron_tee.validator.neuron import build_verifiers
        from omron_tee.wire.auth import Signer
        from omron_tee.wire.client import SignedClient
        from omron_tee.workloads.tensor import TensorWorkload, sample_input

        self.key_path = key_path
        models = ModelRegistry.builtin()
        if extra_model:
            models.add_file(extra_model, EXTRA_MODEL_ID)
        self.models = models
        self.spec = models.get(EXTRA_MODEL_ID if extra_model else "digits-mlp")
        self.policy = Policy(simulated=SimulatedPolicy(True, frozenset([dev_public_key(key_path)]),
                                                       frozenset([trusted_app_measurement([(s.model_id, s.sha256) for s in models.specs()])])))
        self.verifiers = build_verifiers(self.policy)
        self.client = SignedClient(Signer(wallet), timeout=30.0)
        self.tensor = TensorWorkload()
        self.x = sample_input(self.spec, np.random.default_rng(0)) if x is None else x
        self.sessions: dict[str, object] = {}

    async def bare(self, url: str) -> None:
        await self.client.get(url, "/health")

    async def fresh(self, url: str) -> None:
        """A fresh attestation, then the request (two round trips); the session is kept for the others."""
        from omron_tee.channel.hpke import KemSuite
        from omron_tee.exchange import transport
        from omron_tee.exchange.requester import check_attestation, new_nonce, seal_request
        from omron_tee.protocol import AttestRequest

        nonce = new_nonce()
        resp, _ = await transport.attest(self.client, url, AttestRequest(nonce, KemSuite.X25519.value, HOTKEY), receiver=HOTKEY,
                                         timeout=10.0)
        s = check_attestation(resp, nonce=nonce, hotkey=HOTKEY, policy=self.policy, registry=self.verifiers)
        req, reader = seal_request(s, self.tensor, self.spec, self.x, nonce=nonce)
        await transport.answer(self.client, url, req, reader, receiver=HOTKEY, timeout=10.0)
        self.sessions[url] = s

    async def reused(self, url: str) -> None:
        await self._on_session(url, in_band=False)

    async def in_band(self, url: str) -> None:
        await self._on_session(url, in_band=True)

    async def _on_session(self, url: str, *, in_band: bool) -> None:
        from omron_tee.exchange import transport
        from omron_tee.exchange.requester import fresh_check, seal_request

        s = self.sessions[url]
        check = fresh_check(s, hotkey=HOTKEY, policy=self.policy, registry=self.verifiers) if in_band else None
        req, reader = seal_request(s, self.tensor, self.spec, self.x, fresh=check)
        await transport.answer(self.client, url, req, reader, receiver=HOTKEY, timeout=10.0)

    async def batch(self, url: str, size: int, *, in_band: bool) -> None:
        """``size`` requests on the session in one signed ``/infer/batch``; in band, one evidence for them all."""
        from omron_tee.exchange import transport
        from omron_tee.exchange.requester import fresh_check, seal_batch

        s = self.sessions[url]
        check = fresh_check(s, hotkey=HOTKEY, policy=self.policy, registry=self.verifiers) if in_band else None
        batch, reader = seal_batch(s, [(self.tensor, self.spec, self.x)] * size, fresh=check)
        failed = [r for r in await transport.answer_batch(self.client, url, batch, reader, receiver=HOTKEY, timeout=10.0)
                  if isinstance(r, Exception)]
        if failed:
            raise SystemExit(f"benchmark batch failed: {failed[0]}")

    async def aclose(self) -> None:
        await self.client.aclose()

"""zk over real processes: miner subprocesses (simulated enclaves) prove from the shared circuit
cache, an in-process validator probes them over signed HTTP on loopback, verifies and scores."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from omron_tee.chain.embedded import EmbeddedChain
from omron_tee.config import create_wallet
from omron_tee.enclave.measurement import code_digest
from omron_tee.models.registry import ModelRegistry
from omron_tee.validator.prober import Prober
from omron_tee.validator.neuron import build_verifiers, local_dev_policy
from omron_tee.validator.scoring import ScoreBook
from omron_tee.wire.auth import Signer
from omron_tee.wire.client import SignedClient

ZK_MODEL = "diabetes-mlp"
ROLES = {"honest": (), "bad-proof": ("--dev.bad_proof",)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def zknet(tmp_path_factory, circuit, zk_cache):
    d = tmp_path_factory.mktemp("zknet")
    chain_path, wallets = d / "chain.sqlite", d / "wallets"
    chain = EmbeddedChain(1, path=chain_path, block_time=0.05)
    validator = create_wallet("validator", "default", wallets)
    chain.register(validator, stake=1000.0)
    procs, hotkeys = [], {}
    try:
        for role, flags in ROLES.items():
            w = create_wallet(f"miner-{role}", "default", wallets)
            chain.register(w)
            hotkeys[role] = w.hotkey.ss58_address
            port = _free_port()
            cmd = [sys.executable, "-m", "omron_tee.miner", "--netuid", "1", "--subtensor.network", "embedded", "--chain.path", str(chain_path),
                   "--wallet.name", f"miner-{role}", "--wallet.hotkey", "default", "--wallet.path", str(wallets),
                   "--axon.port", str(port), "--enclave", "simulated", "--zk.circuits", str(zk_cache), *flags]
            log = open(d / f"{role}.log", "wb")
            procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True), port, d / f"{role}.log"))
        deadline = time.monotonic() + 60
        for p, port, log in procs:
            while True:
                assert p.poll() is None, log.read_text()[-2000:]
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5, trust_env=False).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "miner did not start"
                time.sleep(0.1)
        code_digest.cache_clear()
        yield chain, chain_path, validator, hotkeys, d
    finally:
        for p, _, _ in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p, _, _ in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        chain.close()


def test_zk_over_real_processes(zknet, separate_circuit, foreign_circuit, tmp_path) -> None:
    """The miners prove from one cache; the validator verifies with a circuit it built in another."""
    from omron_tee.zk.verifier import ZkVerifier

    verifier = ZkVerifier(separate_circuit)
    chain, chain_path, validator, hotkeys, d = zknet
    models = ModelRegistry.builtin()
    policy = local_dev_policy(chain_path, models)
    scores = ScoreBook(tmp_path / "scores.sqlite")

    async def run():
        client = SignedClient(Signer(validator), timeout=30.0)
        from omron_tee.workloads import default_workloads

        prober = Prober(client, policy=policy, verifiers=build_verifiers(policy), models=models, workloads=default_workloads(zk_verifiers={ZK_MODEL: verifier}),
                        timeout=5.0, timeouts={"zk": 60.0}, seed=1)
        mg = chain.metagraph()
        try:
            out = {}
            for role, hk in hotkeys.items():
                tee = await prober.probe(mg.by_hotkey(hk), ZK_MODEL)
                zk = await prober.probe(mg.by_hotkey(hk), ZK_MODEL, workload="zk")
                out[role] = (tee, zk)
            # A validator whose circuit differs (another SRS) sees it in the attestation: named, not charged.
            other = Prober(client, policy=policy, verifiers=build_verifiers(policy), models=models,
                           workloads=default_workloads(zk_verifiers={ZK_MODEL: ZkVerifier(foreign_circuit)}), timeout=5.0, seed=1)
            out["mismatch"] = (None, await other.probe(mg.by_hotkey(hotkeys["honest"]), ZK_MODEL, workload="zk"))
            return out
        finally:
            await client.aclose()

    out = asyncio.run(run())
    _, mismatch = out.pop("mismatch")
    assert mismatch.outcome.reason == "circuit-mismatch" and "not charged" in mismatch.message, mismatch.message
    assert scores.update(mismatch.outcome) == (0.0, 0.0) and scores.records[hotkeys["honest"]].strikes == 0
    for role, (tee, zk) in out.items():
        assert tee.outcome.ok, (role, tee.message)
        before = scores.update(tee.outcome)[1]
        old, new = scores.update(zk.outcome)
        if role == "honest":
            assert zk.outcome.ok and zk.outcome.reason == "ok" and zk.outcome.latency_class == "zk" and "proving" in zk.message, zk.message
            assert new >= old > 0  # scored as verified (the first zk answer has nothing to be compared with)
        else:
            # The circuits agree, so a proof that does not verify is a forgery: a strike.
            assert zk.outcome.reason == "zk-proof-invalid", zk.message
            assert zk.outcome.verdict.value == "strike" and new == 0.0 < old == before
    logs = "".join(p.read_text(errors="replace") for p in d.glob("*.log"))
    assert "zk proofs (EZKL, private input, public output) for diabetes-mlp" in logs
    assert "Traceback" not in logs

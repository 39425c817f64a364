"""Real processes on loopback: a validator neuron and an LLM miner neuron on an embedded chain, a third-party client."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import httpx

from omron_tee.chain.embedded import EmbeddedChain
from omron_tee.config import create_wallet
from omron_tee.client import PrivateClient
from omron_tee.models.llama import DEFAULT_MODEL_ID as MODEL
from omron_tee.models.registry import ModelRegistry
from omron_tee.protocol import dumps
from omron_tee.validator.neuron import add_llms, build_verifiers, local_dev_policy
from omron_tee.wire.auth import Signer

from omron_tee.devnet.processes import free_port

PROMPT = "A prime number is a number that"


def _start(args: list[str], log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait(url: str, procs, deadline_s: float = 90.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for p in procs:
            assert p.poll() is None, "a neuron exited during start-up"
        try:
            httpx.get(url, timeout=0.5, trust_env=False)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not come up")


def test_neurons_serve_and_score_private_completions(tmp_path, real_llm_runtime) -> None:
    llm_runtime = real_llm_runtime
    chain_path = tmp_path / "chain.sqlite"
    chain = EmbeddedChain(1, path=chain_path, block_time=0.05)
    wallets = tmp_path / "wallets"
    vw = create_wallet("v", "default", wallets)
    chain.register(vw, stake=1000.0)
    create_wallet("m", "default", wallets)
    cw = create_wallet("c", "default", wallets)
    common = ["--netuid", "1", "--subtensor.network", "embedded", "--chain.path", str(chain_path), "--wallet.path", str(wallets), "--wallet.hotkey", "default"]
    mport, vport = free_port(), free_port()
    logs = {n: open(tmp_path / f"{n}.log", "wb") for n in ("miner", "validator")}
    procs = []
    try:
        procs.append(_start(["omron_tee.miner", *common, "--wallet.name", "m", "--axon.port", str(mport), "--enclave", "simulated", "--llm"], logs["miner"]))
        procs.append(_start(["omron_tee.validator", *common, "--wallet.name", "v", "--validator.api_port", str(vport), "--validator.interval", "0.3",
                             "--validator.llm", "on", "--validator.llm_share", "1.0", "--validator.llm_tokens", "8",
                             "--neuron.data_dir", str(tmp_path / "vdata")], logs["validator"]))
        _wait(f"http://127.0.0.1:{mport}/health", procs)
        _wait(f"http://127.0.0.1:{vport}/v1/models", procs)
        models = ModelRegistry.builtin()
        policy = add_llms(argparse.Namespace(validator_llm="on", llm_gguf=[]), models, local_dev_policy(chain_path, models), local=True)
        verifiers = build_verifiers(policy)

        async def go():
            c = PrivateClient(f"http://127.0.0.1:{vport}", vw.hotkey.ss58_address, cw, policy=policy, verifiers=verifiers, models=models)
            try:
                private = await c.complete(MODEL, PROMPT, max_tokens=8)
            finally:
                await c.aclose()
            body = dumps({"model": MODEL, "prompt": PROMPT, "max_tokens": 8})
            headers = Signer(cw).headers("POST", "/v1/completions", body, vw.hotkey.ss58_address)
            headers["Content-Type"] = "application/json"
            async with httpx.AsyncClient(trust_env=False, timeout=30) as h:
                r = await h.post(f"http://127.0.0.1:{vport}/v1/completions", content=body, headers=headers)
            return private, r.status_code, r.json()

        private, status, openai = asyncio.run(go())
        expected = llm_runtime.complete(PROMPT, 8)
        assert list(private.result.tokens) == expected[0] and private.result.raw == expected[1]
        assert status == 200 and openai["choices"][0]["text"] == expected[1].decode()
        (tmp_path / "openai.json").write_text(json.dumps(openai))  # a whole OpenAI-path response, checked below
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline:
            text = (tmp_path / "validator.log").read_text()
            if "tokens match the reference" in text:
                break
            time.sleep(0.3)
        assert "tokens match the reference" in text, text[-2000:]
        assert PROMPT not in text and expected[1].decode() not in text  # no prompt or completion in the logs
        # the same from the command line: streamed to stdout, receipt saved and checked offline
        from omron_tee.attestation.validate.policy import simulated_policy_toml as policy_toml

        (tmp_path / "policy.toml").write_text(policy_toml(policy))
        cli = [sys.executable, "-m", "omron_tee.cli", "llm"]
        out = subprocess.run([*cli, "complete", PROMPT, "--validator", f"http://127.0.0.1:{vport}", "--validator-hotkey", vw.hotkey.ss58_address,
                              "--policy", str(tmp_path / "policy.toml"), "--max-tokens", "8", "--receipt", str(tmp_path / "r.json"),
                              "--wallet.name", "c", "--wallet.path", str(wallets)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.rstrip("\n") == expected[1].decode().rstrip("\n") and "receipt verified" in out.stderr
        for receipt in ("r.json", "openai.json"):  # one command checks every receipt, the OpenAI path's included
            check = subprocess.run([sys.executable, "-m", "omron_tee.cli", "receipt", "verify", str(tmp_path / receipt), "--policy", str(tmp_path / "policy.toml")],
                                   capture_output=True, text=True, timeout=60)
            assert check.returncode == 0 and "llm receipt: VALID" in check.stdout, (receipt, check.stdout, check.stderr)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        chain.close()

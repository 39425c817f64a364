"""Private streamed LLM completion against raw llama.cpp, in one run.

    .venv/bin/python bench/bench_llm.py [--tokens 64] [--rounds 6]

Starts an embedded chain, one LLM miner process (simulated enclave, the
default gemma-3-270m, ``--llm``), and the validator's API in this process;
then alternates, round by round (so machine noise hits both alike):

  raw      llama-cpp-python in this process: the same GGUF, the same pinned
           greedy settings and thread count, tokens taken as llama.cpp yields them;
  private  a third-party client through the validator: attest the miner (its
           own nonce, its own policy check), seal the prompt to the enclave,
           the validator relays the sealed stream, the client opens and checks
           every chunk and the receipt.

Prints the medians of time to first token and decode tokens per second
(tokens after the first over the time after the first), and the ratio of
private to raw tokens per second (target >= 95 %).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvicorn

from omron_tee.attestation.validate.policy import Policy, SimulatedPolicy
from omron_tee.chain.embedded import EmbeddedChain
from omron_tee.config import create_wallet, dev_attestation_key_path, run_async
from omron_tee.enclave.simulated import dev_public_key
from omron_tee.client import PrivateClient
from omron_tee.devnet.llm_demo import llm_miner_measurement
from omron_tee.devnet.processes import StartFailed, free_port, wait_serving
from omron_tee.exchange.requester import Answer
from omron_tee.models.llama import DEFAULT_MODEL_ID, PINNED, default_spec, load_llm
from omron_tee.workloads.llm import BENCH_PROMPTS
from omron_tee.models.registry import ModelRegistry
from omron_tee.validator.api.routes import build_api
from omron_tee.validator.core import Validator
from omron_tee.validator.prober import Prober
from omron_tee.validator.neuron import build_verifiers
from omron_tee.validator.scoring import ScoreBook
from omron_tee.wire.auth import Admission, RequestVerifier, Signer
from omron_tee.wire.client import SignedClient


def raw_run(rt, prompt: str, n: int) -> tuple[float, float, int]:
    """llama.cpp directly: (ttft s, decode tok/s, tokens)."""
    llm = rt._llm
    toks = llm.tokenize(prompt.encode(), add_bos=PINNED.add_bos, special=False)
    eos = llm.token_eos()
    t0 = time.perf_counter()
    first = None
    count = 0
    llm.reset()
    for tok in llm.generate(toks, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
        if tok == eos:
            break
        llm.detokenize([tok])  # the text of each token, as a streaming caller needs it
        count += 1
        if first is None:
            first = time.perf_counter() - t0
        if count >= n:
            break
    el = time.perf_counter() - t0
    return first, (count - 1) / (el - first), count


async def main_async(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="omron-tee-bench-llm-"))
    chain_path = work / "chain.sqlite"
    chain = EmbeddedChain(1, path=chain_path, block_time=0.05)
    wallets = work / "wallets"
    vw = create_wallet("bench-validator", "default", wallets)
    chain.register(vw, stake=1000.0)
    mw = create_wallet("bench-llm-miner", "default", wallets)
    chain.register(mw)
    cw = create_wallet("bench-client", "default", wallets)
    port = free_port()
    env = dict(os.environ)
    log = open(work / "miner.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "omron_tee.miner", "--netuid", "1", "--subtensor.network", "embedded", "--chain.path", str(chain_path),
         "--wallet.name", "bench-llm-miner", "--wallet.hotkey", "default", "--wallet.path", str(wallets),
         "--axon.port", str(port), "--enclave", "simulated", "--models", DEFAULT_MODEL_ID, "--miner.allow_any_caller"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
    )
    try:
        rt = await asyncio.to_thread(load_llm, default_spec())
        try:
            await asyncio.to_thread(wait_serving, {"miner": port}, {"miner": proc}, timeout=90.0,
                                    tail=lambda _: (work / "miner.log").read_text()[-1500:])
        except StartFailed as e:
            raise SystemExit(str(e)) from None
        registry = ModelRegistry.builtin()
        registry.add(default_spec())
        spec = registry.get(DEFAULT_MODEL_ID)
        measurement = llm_miner_measurement(registry)  # the image ships the ONNX models and the LLM
        policy = Policy(simulated=SimulatedPolicy(allow=True, trusted_keys=frozenset([dev_public_key(dev_attestation_key_path(chain_path))]),
                                                  measurements=frozenset([measurement])))
        verifiers = build_verifiers(policy)
        prober = Prober(SignedClient(Signer(vw), timeout=30), policy=policy, verifiers=verifiers, models=registry, timeout=30)
        validator = Validator(chain=chain, wallet=vw, prober=prober, scores=ScoreBook(work / "scores.sqlite"))
        validator.sync()
        api_port = free_port()
        server = uvicorn.Server(uvicorn.Config(build_api(validator, RequestVerifier(validator.hotkey, Admission.anyone())),
                                               host="127.0.0.1", port=api_port, log_level="warning", access_log=False))
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.02)
        client = PrivateClient(f"http://127.0.0.1:{api_port}", validator.hotkey, cw, policy=policy, verifiers=verifiers, models=registry)

        async def private(prompt: str) -> tuple[float, float, int, float]:
            t0 = time.perf_counter()
            a = await client.complete(DEFAULT_MODEL_ID, prompt, max_tokens=args.tokens, candidates=1)
            assert isinstance(a, Answer) and a.ttft_s is not None
            n = len(a.result.tokens)
            tps = (n - 1) / (a.elapsed_s - a.ttft_s) if n > 1 and a.elapsed_s > a.ttft_s else 0.0
            return a.ttft_s, tps, n, time.perf_counter() - t0

        print(f"model {DEFAULT_MODEL_ID} ({spec.sha256.hex()[:16]}…), {args.tokens} new tokens per request, "
              f"llama.cpp threads {rt.n_threads} (miner and raw alike), {os.cpu_count()} cores; {args.rounds} rounds, interleaved")
        await asyncio.to_thread(raw_run, rt, BENCH_PROMPTS[0], 4)  # warm-up both
        await private(BENCH_PROMPTS[0])
        raw, priv = [], []
        for i in range(args.rounds):
            prompt = BENCH_PROMPTS[i % len(BENCH_PROMPTS)]
            if i % 2 == 0:
                raw.append(await asyncio.to_thread(raw_run, rt, prompt, args.tokens))
                priv.append(await private(prompt))
            else:
                priv.append(await private(prompt))
                raw.append(await asyncio.to_thread(raw_run, rt, prompt, args.tokens))
        await client.aclose()
        server.should_exit = True
        await task

        def med(xs):
            return statistics.median(xs)

        raw_tps, priv_tps = med([r[1] for r in raw]), med([p[1] for p in priv])
        raw_ttft, priv_ttft = med([r[0] for r in raw]), med([p[0] for p in priv])
        total = med([p[3] for p in priv])
        print(f"{'':<10} {'ttft ms':>9} {'tokens/s':>9}")
        print(f"{'raw':<10} {raw_ttft * 1000:>9.1f} {raw_tps:>9.1f}   llama-cpp-python in process")
        print(f"{'private':<10} {priv_ttft * 1000:>9.1f} {priv_tps:>9.1f}   client -> validator relay -> miner enclave, sealed chunks checked")
        print(f"private / raw tokens/s: {priv_tps / raw_tps * 100:.1f} %  (target >= 95 %)")
        print(f"private time to first token adds {(priv_ttft - raw_ttft) * 1000:.1f} ms (sealing, two HTTP hops, opening the stream header)")
        print(f"private request end to end incl. the attestation round trip: median {total * 1000:.0f} ms for {args.tokens} tokens")
        per_round = [f"{r[1]:.0f}/{p[1]:.0f}" for r, p in zip(raw, priv)]
        print("per round raw/private tok/s: " + " ".join(per_round))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
        chain.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=64, help="new tokens per request (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=6, help="interleaved rounds (default: %(default)s)")
    run_async(main_async(p.parse_args()))


if __name__ == "__main__":
    main()

"""Cost of a verified private request, side by side with the raw model call, in one run.

    .venv/bin/python bench/bench_exchange.py [--miners 16] [--seconds 8] [--rounds 300]

Prints medians (interleaved rounds, so machine noise hits every variant alike):
  1. raw onnxruntime call;
  2. the exchange in process (no network): fresh attestation (two round trips), reused session
     (one, no per-request freshness), and fresh in band (one: a reused session whose every
     answer carries evidence for its own nonce);
  3. the exchange over loopback HTTP to one miner process (btauth/1, Starlette, aiohttp), the same three,
     beside a bare round trip (an unsigned GET /health through the same client) in the same rounds;
     and in band in batches of --batch (``Prober.probe_batch``: one signed request, one evidence for the batch),
     per request;
and then the validator's verified requests per second against --miners local miner
processes, the same three ways, beside bare round trips per second at the same concurrency
(what the HTTP stack alone allows on this machine).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from omron_tee.config import dev_attestation_key_path, run_async, tune_allocator
from omron_tee.enclave.measurement import trusted_app_measurement
from omron_tee.enclave.simulated import SimulatedBackend
from omron_tee.exchange.requester import check_attestation, fresh_check, new_nonce, seal_batch, seal_request
from omron_tee.devnet.localnet import LocalNet, Console
from omron_tee.miner.trusted_app import TrustedApp
from omron_tee.models.registry import ModelRegistry
from omron_tee.workloads.tensor import TensorWorkload, sample_input
from omron_tee.protocol import AttestRequest, InferBatch
from omron_tee.validator.prober import Prober
from omron_tee.validator.neuron import build_verifiers, local_dev_policy
from omron_tee.wire.auth import Signer
from omron_tee.wire.client import SignedClient

import _one_miner as one  # noqa: E402  (bench/ is on the path when this runs as a script)

MODEL = "digits-mlp"
BENCH_HOTKEY = "5BenchMinerHotkey000000000000000000000000000000"


def med_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


async def in_process(rounds: int, workdir: Path, batch_size: int) -> dict[str, float]:
    models = ModelRegistry.builtin()
    spec = models.get(MODEL)
    chain_path = workdir / "bench-chain.sqlite"
    policy = local_dev_policy(chain_path, models)
    verifiers = build_verifiers(policy)
    measurement = trusted_app_measurement([(s.model_id, s.sha256) for s in models.specs()])
    app = TrustedApp(SimulatedBackend(dev_attestation_key_path(chain_path), measurement), models, hotkey=BENCH_HOTKEY)
    raw_model = models.runtime(MODEL)
    tensor = TensorWorkload()

    async def answer(req, reader):
        reader.feed(await app.answer_whole(app.open(req)))
        return reader.close()
    rng = np.random.default_rng(0)
    x = sample_input(spec, rng)
    session = None
    t_raw, t_fresh, t_reuse, t_band, t_batch = [], [], [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        raw_model.run(x)
        t_raw.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        nonce = new_nonce()
        resp = app.attest(AttestRequest(nonce, "x25519-hkdf-sha256-aes256gcm"))
        session = check_attestation(resp, hotkey=BENCH_HOTKEY, nonce=nonce, policy=policy, registry=verifiers)
        req, pending = seal_request(session, tensor, spec, x, nonce=nonce)
        out = await answer(req, pending)
        raw_model.run(x)  # the validator's own recomputation
        t_fresh.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        req, pending = seal_request(session, tensor, spec, x)
        out = await answer(req, pending)
        raw_model.run(x)
        t_reuse.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        req, pending = seal_request(session, tensor, spec, x, fresh=fresh_check(session, hotkey=BENCH_HOTKEY, policy=policy, registry=verifiers))
        out = await answer(req, pending)
        raw_model.run(x)
        t_band.append(time.perf_counter() - t0)
        assert pending.fresh_verdict is not None and pending.fresh_verdict.accepted

        t0 = time.perf_counter()
        check = fresh_check(session, hotkey=BENCH_HOTKEY, policy=policy, registry=verifiers)
        batch, breader = seal_batch(session, [(tensor, spec, x)] * batch_size, fresh=check)
        breader.feed(await app.answer_batch(InferBatch.from_bytes(batch.to_bytes())))
        outs = breader.close()
        for _ in outs:
            raw_model.run(x)
        t_batch.append((time.perf_counter() - t0) / batch_size)
        assert breader.fresh_verdict is not None and all(not isinstance(o, Exception) for o in outs)
    assert out.result.output.shape == tuple(spec.output_shape)
    return {"raw": med_ms(t_raw), "fresh": med_ms(t_fresh), "reuse": med_ms(t_reuse), "band": med_ms(t_band), "batch": med_ms(t_batch)}


async def over_http(net: LocalNet, rounds: int, seconds: float, batch_size: int) -> dict[str, float]:
    models = ModelRegistry.builtin()
    policy = local_dev_policy(net.chain_path, models)
    verifiers = build_verifiers(policy)
    client = SignedClient(Signer(net.validator_wallet), max_concurrency=64, timeout=10.0)
    fresh = Prober(client, policy=policy, verifiers=verifiers, models=models, model_ids=[MODEL], seed=1)
    reuse = Prober(client, policy=policy, verifiers=verifiers, models=models, model_ids=[MODEL], seed=2, reuse_sessions=True)
    band = Prober(client, policy=policy, verifiers=verifiers, models=models, model_ids=[MODEL], seed=3, reuse_sessions=True, fresh_in_band=True)
    miners = [n for n in net.chain.metagraph().neurons if n.endpoint is not None and not n.validator_permit]
    first = miners[0]
    t_fresh, t_reuse, t_band, t_bare, t_batch = [], [], [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await client.get(first.endpoint.url, "/health")
        t_bare.append(time.perf_counter() - t0)
        for prober, acc in ((fresh, t_fresh), (reuse, t_reuse), (band, t_band)):
            t0 = time.perf_counter()
            r = await prober.probe(first)
            acc.append(time.perf_counter() - t0)
            if not r.outcome.ok:
                raise SystemExit(f"benchmark request failed: {r.outcome.reason}: {r.message}")
        t0 = time.perf_counter()
        rs = await band.probe_batch(first, batch_size)
        t_batch.append((time.perf_counter() - t0) / batch_size)
        if not all(r.outcome.ok for r in rs):
            raise SystemExit(f"benchmark batch failed: {[r.message for r in rs if not r.outcome.ok][:1]}")
    result = {"http_fresh": med_ms(t_fresh), "http_reuse": med_ms(t_reuse), "http_band": med_ms(t_band), "http_bare": med_ms(t_bare),
              "http_batch": med_ms(t_batch)}

    def verified(prober: Prober):
        async def ask(neuron) -> int:
            r = await prober.probe(neuron)
            if not r.outcome.ok:
                raise SystemExit(f"benchmark request failed: {r.outcome.reason}: {r.message}")
            return 1
        return ask

    async def batched(neuron) -> int:
        rs = await band.probe_batch(neuron, batch_size)
        if not all(r.outcome.ok for r in rs):
            raise SystemExit(f"benchmark batch failed: {[r.message for r in rs if not r.outcome.ok][:1]}")
        return len(rs)

    async def bare_trip(neuron) -> int:  # the HTTP stack's own ceiling
        await client.get(neuron.endpoint.url, "/health")
        return 1

    def miners_cpu_s() -> float:
        return sum(one.cpu_ns(p.pid) for p in net.procs) / 1e9

    cpu: dict[str, tuple[float, float]] = {}

    async def throughput(ask, concurrency: int, name: str) -> float:
        """Requests per second of ``ask(miner)``; ``cpu[name]``: ms of CPU per request, this validator's and all miners'."""
        done = 0
        stop = time.perf_counter() + seconds
        c0, m0 = time.process_time(), miners_cpu_s()

        async def worker(i: int) -> None:
            nonlocal done
            while time.perf_counter() < stop:
                n = await ask(miners[(i + done) % len(miners)])
                done += n  # after the await: ``done += await ...`` would add to the count read before it

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        rate = done / (time.perf_counter() - t0)
        cpu[name] = ((time.process_time() - c0) / done * 1000, (miners_cpu_s() - m0) / done * 1000)
        return rate

    for name, ask in (("bare", bare_trip), ("fresh", verified(fresh)), ("reuse", verified(reuse)), ("band", verified(band)), ("batch", batched)):
        result[f"rps_{name}"] = await throughput(ask, 2 * len(miners), name)
    await client.aclose()
    result["cpu"] = cpu
    return result


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--miners", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--batch", type=int, default=8, help="requests per batch in the batched rows (default: %(default)s)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        inproc = await in_process(args.rounds, work, args.batch)
        net = LocalNet(work / "net", args.miners, Console(quiet=True), roles=[])  # every bench miner is honest
        try:
            net.setup()
            net.start_miners()
            net.wait_for_miners(timeout=120)
            http = await over_http(net, max(50, args.rounds // 3), args.seconds, args.batch)
        finally:
            net.stop()
    raw = inproc["raw"]
    print()
    print(f"model {MODEL}; medians over interleaved rounds; one run, this machine ({sys.platform}, 2 cores expected)")
    print(f"  raw onnxruntime call                     {raw:8.3f} ms")
    print(f"  in process, fresh attestation            {inproc['fresh']:8.3f} ms   overhead {inproc['fresh'] - raw:7.3f} ms  ({inproc['fresh'] / raw:6.1f}x raw)")
    print(f"  in process, reused session               {inproc['reuse']:8.3f} ms   overhead {inproc['reuse'] - raw:7.3f} ms  ({inproc['reuse'] / raw:6.1f}x raw)")
    print(f"  in process, fresh in band (1 trip)       {inproc['band']:8.3f} ms   overhead {inproc['band'] - raw:7.3f} ms  ({inproc['band'] / raw:6.1f}x raw)")
    print(f"  in process, fresh in band, batch of {args.batch:<3d}  {inproc['batch']:8.3f} ms   overhead {inproc['batch'] - raw:7.3f} ms  "
          f"({inproc['batch'] / raw:6.1f}x raw; per request, one evidence per batch)")
    bare = http["http_bare"]
    print(f"  loopback HTTP, bare round trip           {bare:8.3f} ms")
    for key, label in (("http_fresh", "fresh attestation       "), ("http_reuse", "reused session          "), ("http_band", "fresh in band (1 trip)  "),
                       ("http_batch", f"in band, batch of {args.batch:<3d}   ")):
        print(f"  loopback HTTP, {label} {http[key]:8.3f} ms   overhead {http[key] - raw:7.3f} ms  ({http[key] / bare:5.2f}x the bare trip)")
    def cpu_of(name: str) -> str:
        v, m = http["cpu"][name]
        return f"  CPU per request: validator {v:5.2f} ms, miners {m:5.2f} ms"
    print(f"  validator vs {args.miners} miners, bare round trips   {http['rps_bare']:8.1f} per second (no signing, no sealing: the HTTP stack's ceiling)"
          + cpu_of("bare"))
    print(f"  validator vs {args.miners} miners, fresh attestation  {http['rps_fresh']:8.1f} verified requests/s" + cpu_of("fresh"))
    print(f"  validator vs {args.miners} miners, reused sessions    {http['rps_reuse']:8.1f} verified requests/s" + cpu_of("reuse"))
    print(f"  validator vs {args.miners} miners, fresh in band      {http['rps_band']:8.1f} verified requests/s" + cpu_of("band")
          + " (a proof of freshness per request)")
    print(f"  validator vs {args.miners} miners, in band, batch of {args.batch:<3d}{http['rps_batch']:8.1f} verified requests/s" + cpu_of("batch")
          + " (a proof of freshness per request, one evidence per batch)")
    print(f"  ratio in-band/two-trip fresh throughput  {http['rps_band'] / http['rps_fresh']:8.2f}")
    print(f"  ratio batched/one-by-one in band         {http['rps_batch'] / http['rps_band']:8.2f}")
    print(f"  ratio reused/fresh throughput            {http['rps_reuse'] / http['rps_fresh']:8.2f}")


if __name__ == "__main__":
    tune_allocator()  # as the neurons do (the miners here are neurons)
    run_async(main())

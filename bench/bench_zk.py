"""The same small model three ways, in one process and one run: raw, TEE, zk.

    .venv/bin/python bench/bench_zk.py [--rounds 200] [--zk-rounds 10] [--cache DIR]

1. raw onnxruntime call;
2. the TEE path: simulated enclave, fresh attestation (nonce -> evidence ->
   appraisal), sealed request, sealed answer, receipt check, and the
   validator's own recomputation, in process through omron_tee.exchange and
   the TrustedApp;
3. the zk path: EZKL witness + proof (private input, public output) + verify,
   including the check that the proof's outputs are the claimed ones;
and, for reference, 4. both at once: the enclave proves, the validator checks
the attestation, the receipt and the proof.

Rounds are interleaved so machine noise hits every variant alike. The circuit
is built once (development SRS: local benchmarking only) and cached.
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

from omron_tee.config import dev_attestation_key_path
from omron_tee.enclave.measurement import trusted_app_measurement
from omron_tee.enclave.simulated import SimulatedBackend
from omron_tee.exchange.requester import check_attestation, new_nonce, seal_request
from omron_tee.miner.trusted_app import TrustedApp
from omron_tee.models.registry import ModelRegistry
from omron_tee.workloads import default_workloads
from omron_tee.workloads.tensor import outputs_match, sample_input
from omron_tee.protocol import AttestRequest
from omron_tee.validator.neuron import build_verifiers, local_dev_policy
from omron_tee.zk.circuits import build_circuit
from omron_tee.zk.prover import ZkProver
from omron_tee.zk.verifier import ZkVerifier

MODEL = "diabetes-mlp"  # the smallest shipped model that declares zk
BENCH_HOTKEY = "5BenchMinerHotkey000000000000000000000000000000"
KEM = "x25519-hkdf-sha256-aes256gcm"


def med_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


async def bench(rounds: int, zk_rounds: int, cache: Path | None, workdir: Path) -> dict[str, float]:
    models = ModelRegistry.builtin()
    spec = models.get(MODEL)
    t0 = time.perf_counter()
    circuit = build_circuit(spec, cache_dir=cache, dev_network="embedded")
    build_s = time.perf_counter() - t0
    prover, verifier = ZkProver(circuit), ZkVerifier(circuit)

    chain_path = workdir / "bench-chain.sqlite"
    policy = local_dev_policy(chain_path, models)
    verifiers = build_verifiers(policy)
    measurement = trusted_app_measurement([(s.model_id, s.sha256) for s in models.specs()])
    app = TrustedApp(SimulatedBackend(dev_attestation_key_path(chain_path), measurement), models, hotkey=BENCH_HOTKEY, provers={MODEL: prover})
    raw_model = models.runtime(MODEL)
    workloads = default_workloads()
    rng = np.random.default_rng(0)
    xs = [sample_input(spec, rng) for _ in range(16)]

    async def tee(x: np.ndarray, proof_system: str = "tee") -> None:
        nonce = new_nonce()
        session = check_attestation(app.attest(AttestRequest(nonce, KEM)), hotkey=BENCH_HOTKEY, nonce=nonce, policy=policy, registry=verifiers)
        req, pending = seal_request(session, workloads.get("zk" if proof_system == "zk" else "tensor"), spec, x, nonce=nonce)
        pending.feed(await app.answer_whole(app.open(req)))
        out = pending.close().result
        if proof_system == "zk":
            verifier.verify(out.proof, out.output)
        assert outputs_match(spec, raw_model.run(x), out.output)  # the validator's own recomputation

    t_raw, t_tee, t_zk, t_wit, t_prove, t_verify, t_both = [], [], [], [], [], [], []
    per_zk = max(1, rounds // max(1, zk_rounds))
    for i in range(max(rounds, zk_rounds)):
        x = xs[i % len(xs)]
        t0 = time.perf_counter()
        raw_model.run(x)
        t_raw.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await tee(x)
        t_tee.append(time.perf_counter() - t0)

        if i % per_zk == 0 and len(t_zk) < zk_rounds:
            claimed = raw_model.run(x)
            t0 = time.perf_counter()
            p = prover.prove(x)  # witness + prove
            t1 = time.perf_counter()
            verifier.verify(p.proof, claimed)
            t2 = time.perf_counter()
            t_zk.append(t2 - t0)
            t_wit.append(p.witness_s)
            t_prove.append(t1 - t0 - p.witness_s)
            t_verify.append(t2 - t1)

            t0 = time.perf_counter()
            await tee(x, "zk")
            t_both.append(time.perf_counter() - t0)
    return {
        "build_s": build_s,
        "logrows": circuit.logrows,
        "raw": med_ms(t_raw),
        "tee": med_ms(t_tee),
        "zk": med_ms(t_zk),
        "witness": med_ms(t_wit),
        "prove": med_ms(t_prove),
        "verify": med_ms(t_verify),
        "both": med_ms(t_both),
        "n_raw": len(t_raw),
        "n_zk": len(t_zk),
        "proof_bytes": len(p.proof),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=200, help="raw and TEE rounds (default: %(default)s)")
    ap.add_argument("--zk-rounds", type=int, default=10, help="zk rounds, spread among the others (default: %(default)s)")
    ap.add_argument("--cache", default=None, help="circuit cache (default: $OMRON_TEE_CIRCUITS or ~/.omron-tee/circuits)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = asyncio.run(bench(args.rounds, args.zk_rounds, Path(args.cache) if args.cache else None, Path(tmp)))
    print()
    print(f"model {MODEL} (MLP 10-16-1); circuit 2^{r['logrows']} rows, ready in {r['build_s']:.1f}s (cached after the first build)")
    print(f"medians, interleaved rounds ({r['n_raw']} raw/TEE, {r['n_zk']} zk); one run, this machine ({sys.platform})")
    print(f"  raw onnxruntime call                              {r['raw']:10.3f} ms")
    print(f"  TEE path: fresh attestation, sealed, recomputed   {r['tee']:10.3f} ms   ({r['tee'] / r['raw']:8.1f}x raw)")
    print(f"  zk path: witness + prove + verify                 {r['zk']:10.3f} ms   ({r['zk'] / r['raw']:8.0f}x raw)")
    print(f"      witness {r['witness']:.2f} ms, prove {r['prove']:.1f} ms, verify {r['verify']:.2f} ms; proof {r['proof_bytes']} bytes")
    print(f"  both: the enclave proves, the validator verifies  {r['both']:10.3f} ms")
    print(f"  ratio zk/TEE                                      {r['zk'] / r['tee']:10.0f}x")


if __name__ == "__main__":
    main()

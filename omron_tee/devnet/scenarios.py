"""The local network's scenarios (``omron-tee localnet``): benchmark rounds, zk requests, a third party, the LLM part.

The validator runs in this process so every request, verdict and score change
can be shown as it happens; the miners are real processes (``devnet.localnet``).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from omron_tee.attestation.validate.policy import simulated_policy_toml
from omron_tee.chain.base import Endpoint
from omron_tee.client import PrivateClient
from omron_tee.devnet import llm_demo
from omron_tee.devnet.localnet import Console, LocalNet
from omron_tee.devnet.processes import free_port
from omron_tee.devnet.summary import build_summary, print_summary
from omron_tee.errors import OmronTeeError
from omron_tee.exchange.receipt_file import verify_receipt_file
from omron_tee.models.llama import default_llm_missing
from omron_tee.models.registry import ModelRegistry
from omron_tee.reasons import Reason
from omron_tee.validator.api.routes import running_api
from omron_tee.validator.core import Event, ProbeEvent, Validator, WeightsEvent
from omron_tee.validator.neuron import build_verifiers, local_dev_policy
from omron_tee.validator.prober import Prober
from omron_tee.validator.scoring import ScoreBook
from omron_tee.wire.auth import Signer
from omron_tee.wire.client import SignedClient
from omron_tee.workloads import default_workloads
from omron_tee.workloads.tensor import sample_input


async def run_localnet(args: Any) -> dict[str, Any]:
    console = Console(quiet=args.quiet)
    t_start = time.monotonic()
    net = LocalNet(Path(args.dir).expanduser(), args.miners, console)
    try:
        net.setup()
        if getattr(args, "zk_requests", 0) > 0:
            net.zk_circuits = _prepare_zk(console)
        net.start_miners()
        net.wait_for_miners()
        return await _drive(net, args, console, t_start)
    finally:
        net.stop()


async def _drive(net: LocalNet, args: Any, console: Console, t_start: float) -> dict[str, Any]:
    models = ModelRegistry.builtin()
    policy = local_dev_policy(net.chain_path, models)
    with_llm = getattr(args, "llm", False) and not default_llm_missing()
    if with_llm:
        policy = llm_demo.prepare(models, policy)  # the validator judges the LLM too (probed in the LLM part, docs/LLM.md)
    verifiers = build_verifiers(policy)
    (net.dir / "policy.toml").write_text(simulated_policy_toml(policy))
    signer = Signer(net.validator_wallet)
    client = SignedClient(signer, max_concurrency=64, timeout=5.0)
    zk_verifiers = {}
    if net.zk_circuits is not None:
        from omron_tee.zk.service import load_verifiers

        zk_verifiers = load_verifiers(models, cache_dir=net.zk_circuits, network="embedded")
    prober = Prober(client, policy=policy, verifiers=verifiers, models=models, workloads=default_workloads(zk_verifiers=zk_verifiers),
                    timeout=5.0, timeouts={"zk": 60.0, "llm": 30.0}, seed=args.seed)
    scores = ScoreBook(net.dir / "validator-scores.sqlite")
    done = {"n": 0}

    def show(ev: Event) -> None:
        if isinstance(ev, ProbeEvent):
            done["n"] += 1
            o = ev.result.outcome
            role = net.roles.get(o.hotkey)
            verdict = "attestation accepted" if o.attestation_accepted else ("attestation REJECTED" if o.attestation_accepted is False else "no attestation")
            console.event(
                f"[{done['n']:>4}/{args.requests}] uid {o.uid} {role.name if role else '?':<10} {ev.result.model_id:<16} "
                f"{verdict:<20} {o.reason:<24} score {ev.old_score:.3f} -> {ev.new_score:.3f}",
                o.ok,
            )
        elif isinstance(ev, WeightsEvent):
            if ev.error:
                console.say(f"  weights not set at block {ev.block}: {ev.error}")
            else:
                console.say(f"  weights set at block {ev.block}: " + ", ".join(f"uid {u} {w:.3f}" for u, w in ev.weights.as_dict().items()))

    validator = Validator(chain=net.chain, wallet=net.validator_wallet, prober=prober, scores=scores, weights_interval=20, on_event=show)
    validator.sync()
    console.step(f"validator probing {len(validator.miners())} miners: {args.requests} requests, each with a fresh nonce and attestation")
    remaining = args.requests
    rounds = 0
    while remaining > 0:
        n = min(remaining, len(validator.miners()) * args.parallel)
        await validator.step(n)
        remaining -= n
        rounds += 1
        if rounds % 10 == 0 and validator.due_for_weights():
            validator.set_weights()
    zk = await _zk_round(net, validator, getattr(args, "zk_requests", 0), console) if zk_verifiers else None
    third_party = await _third_party_demo(net, validator, models, policy, verifiers, console)
    llm = await llm_demo.run_llm_demo(net, validator, models, console, port_of=free_port) if getattr(args, "llm", False) else None  # docs/LLM.md

    console.step("final weights (every miner's score so far, the LLM miners' included)")
    while True:
        ev = validator.set_weights()
        if ev.error is None or "no miner" in ev.error:
            break
        await asyncio.sleep(net.block_time * max(1, net.chain.blocks_until_weights_allowed(validator.hotkey)))

    console.step("waiting one epoch for emissions")
    await asyncio.sleep(net.block_time * (net.chain.params.tempo + 2))
    summary = build_summary(net, validator, scores, time.monotonic() - t_start, third_party, zk=zk)
    summary.update({"llm": llm} if llm is not None else {})
    print_summary(summary, console)
    scores.close()
    await client.aclose()
    return summary


def _prepare_zk(console: Console) -> Path | None:
    """Build (once; then from the cache) the circuits of the zk models, with the development SRS."""
    try:
        from omron_tee.zk.circuits import DEV_SRS_WARNING, default_cache_dir, ezkl_module
        from omron_tee.zk.service import load_circuits, zk_model_ids

        ezkl_module()
    except OmronTeeError as e:
        console.say(f"  zk proofs off: {e}")
        return None
    models = ModelRegistry.builtin()
    ids = zk_model_ids(models)
    if not ids:
        return None
    cache = default_cache_dir()
    t0 = time.monotonic()
    circuits = load_circuits(models, cache_dir=cache, network="embedded", build=True)
    console.step(f"zk circuits of {', '.join(circuits) or 'no model'} ready in {time.monotonic() - t0:.1f}s (EZKL, cached by model sha256 in {cache})")
    console.say(f"  !! {DEV_SRS_WARNING}")
    return cache if circuits else None


async def _zk_round(net: LocalNet, validator: Validator, n: int, console: Console) -> dict[str, Any] | None:
    """``n`` zk probes, round-robin over the miners: proven in the enclave, verified and recomputed by the validator."""
    prober = validator.prober
    if n <= 0 or not prober.judged.get("zk"):
        return None
    model_id = sorted(prober.judged["zk"])[0]
    console.step(f"zk: {n} requests for {model_id}, proven with EZKL inside each enclave (private input, public output); "
                 "the validator verifies the proof, its outputs against the claimed ones, and recomputes")
    done, results = 0, []
    while done < n:
        targets = validator.pick(min(n - done, len(validator.miners())))
        if not targets:
            break
        for r in await asyncio.gather(*(prober.probe(m, model_id, workload="zk") for m in targets)):
            done += 1
            o = r.outcome
            role = net.roles.get(o.hotkey)
            if o.reason == Reason.ZK_UNSUPPORTED:  # it never offered zk: not a fault, not scored
                console.event(f"[zk {done:>2}/{n}] uid {o.uid} {role.name if role else '?':<10} {model_id:<16} skipped: offers the TEE proof system only", True)
                continue
            old, new = validator.record(o)
            results.append(o)
            console.event(f"[zk {done:>2}/{n}] uid {o.uid} {role.name if role else '?':<10} {model_id:<16} {o.reason:<24} {r.message[:70]:<70} score {old:.3f} -> {new:.3f}", o.ok)
        validator.scores.flush()
    ok = [o for o in results if o.ok]
    refused: dict[str, int] = {}
    for o in results:
        if not o.ok:
            refused[o.reason] = refused.get(o.reason, 0) + 1
    return {
        "model": model_id,
        "requests": len(results),
        "verified": len(ok),
        "refused": refused,
        "median_latency_ms": round(statistics.median(o.latency_s for o in ok) * 1000, 1) if ok else None,
    }


async def _third_party_demo(net: LocalNet, validator: Validator, models: ModelRegistry, policy: Any, verifiers: Any, console: Console) -> dict[str, Any]:
    console.step("third-party client: a private request through the validator's API (end-to-end encrypted to the enclave)")
    spec = models.specs()[0]
    result: dict[str, Any] = {"model": spec.model_id}
    port = free_port()
    async with running_api(validator, port=port) as url:
        net.chain.serve(net.validator_wallet, Endpoint("127.0.0.1", port))
        c = PrivateClient(url, validator.hotkey, net.client_wallet, policy=policy, verifiers=verifiers, models=models)
        try:
            x = sample_input(spec, np.random.default_rng(7))
            r = await c.infer(spec.model_id, x, candidates=4)
            path = net.dir / "receipt.json"
            c.receipt_file(r).save(path)
            check = verify_receipt_file(json.loads(path.read_text()), policy=policy, verifiers=verifiers, workloads=c.workloads, models=models)
            for rej in c.last_rejected:
                console.say(f"    client refused {rej.hotkey[:10]}… ({rej.reason})")
            console.say(f"    answered by uid {net.uids.get(r.miner_hotkey)}; output shape {tuple(r.result.output.shape)}; receipt signed by the attested enclave key")
            console.say(f"    receipt saved to {path}; offline check: {'valid' if check.ok else 'INVALID: ' + '; '.join(check.reasons)}")
            result.update(ok=True, miner_uid=net.uids.get(r.miner_hotkey), rejected=[{"hotkey": j.hotkey, "reason": j.reason} for j in c.last_rejected],
                          receipt=str(path), receipt_valid=check.ok)
        except OmronTeeError as e:
            console.say(f"    third-party request failed: {e}")
            result.update(ok=False, error=str(e), reason=e.reason)
        finally:
            await c.aclose()
    return result

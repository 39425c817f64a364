"""The local network's scenarios (``omron-tee localnet``): benchmark rounds, zk requests, a third party, the LLM part.

The validator runs in this process so every request, verdict and score change
can be shown as it happens; the miners are real processes (``devnet.localnet``).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from omron_tee.attestation.validate.policy import simulated_policy_toml
from omron_tee.attestation.validate.releases import OWNER, ReleasePolicy
from omron_tee.chain.base import Endpoint
from omron_tee.client import PrivateClient
from omron_tee.devnet import llm_demo
from omron_tee.devnet.localnet import RELEASE_TIMELOCK_BLOCKS, TEMPO, REVEAL_PERIOD, Console, LocalNet
from omron_tee.devnet.processes import free_port
from omron_tee.devnet.summary import build_summary, print_summary
from omron_tee.errors import OmronTeeError
from omron_tee.exchange.receipt_file import verify_receipt_file
from omron_tee.models.llama import default_llm_missing
from omron_tee.models.registry import ModelRegistry
from omron_tee.protocol import MAX_CANDIDATES
from omron_tee.reasons import Reason
from omron_tee.transparency.records import check_inclusion
from omron_tee.validator.api.routes import running_api
from omron_tee.validator.core import Event, ProbeEvent, Validator, WeightsEvent
from omron_tee.validator.neuron import build_verifiers, local_dev_policy
from omron_tee.validator.prober import Prober
from omron_tee.validator.scoring import ScoreBook
from omron_tee.validator.releases import ReleaseWatcher
from omron_tee.wire.auth import Signer
from omron_tee.wire.client import SignedClient
from omron_tee.workloads import default_workloads
from omron_tee.workloads.tensor import sample_input


async def run_localnet(args: Any) -> dict[str, Any]:
    console = Console(quiet=args.quiet)
    t_start = time.monotonic()
    net = LocalNet(Path(args.dir).expanduser(), args.miners, console, n_validators=getattr(args, "validators", 2))
    try:
        net.setup()
        if getattr(args, "zk_requests", 0) > 0:
            net.zk_circuits = _prepare_zk(console)
        net.start_miners()
        net.wait_for_miners()
        return await _drive(net, args, console, t_start)
    finally:
        net.stop()


# Pause between two probes of one miner on one validator's lane: enough that the validators, which
# share this machine's cores with the miners, are not saturated (a saturated event loop adds its
# own queueing to the latencies it measures).
BENCH_INTERVAL_S = 0.05
MIN_PROBES_PER_MINER = 3  # each validator probes every miner at least this often (failing ones are backed off)
BENCH_CAP_S = 120.0  # the benchmark phase ends by then whatever the counts


async def _drive(net: LocalNet, args: Any, console: Console, t_start: float) -> dict[str, Any]:
    models = ModelRegistry.builtin()
    policy = replace(local_dev_policy(net.chain_path, models), releases=ReleasePolicy(True, OWNER, RELEASE_TIMELOCK_BLOCKS))
    with_llm = getattr(args, "llm", False) and not default_llm_missing()
    if with_llm:
        policy = llm_demo.prepare(models, policy)  # the validator judges the LLM too (probed in the LLM part, docs/LLM.md)
    verifiers = build_verifiers(policy)
    (net.dir / "policy.toml").write_text(simulated_policy_toml(policy))
    zk_verifiers = {}
    if net.zk_circuits is not None:
        from omron_tee.zk.service import load_verifiers

        zk_verifiers = load_verifiers(models, cache_dir=net.zk_circuits, network="embedded")
    seen: list[dict[str, int]] = [{} for _ in net.validator_wallets]  # per validator: probes of each miner
    validators: list[Validator] = []
    for i, wallet in enumerate(net.validator_wallets):
        client = SignedClient(Signer(wallet), max_concurrency=64, timeout=5.0)
        prober = Prober(client, policy=policy, verifiers=verifiers, models=models, workloads=default_workloads(zk_verifiers=zk_verifiers),
                        timeout=5.0, timeouts={"zk": 60.0, "llm": 30.0}, seed=None if args.seed is None else args.seed + i)
        scores = ScoreBook(net.dir / ("validator-scores.sqlite" if i == 0 else f"validator{i + 1}-scores.sqlite"))
        validators.append(Validator(chain=net.chain, wallet=wallet, prober=prober, scores=scores, weights_interval=TEMPO,
                                    on_event=_shower(net, console, i, seen[i], args.requests)))
    validator = validators[0]  # serves the third-party API and runs the zk and LLM parts
    for v in validators:
        v.sync()
    names = ", ".join(f"uid {net.validator_uids[i]}" for i in range(len(validators)))
    console.step(f"{len(validators)} validator(s) ({names}) probing {len(validator.miners())} miners continuously, each miner on its own lane, "
                 f"about {args.requests} requests per validator, each with a fresh nonce and attestation")
    await _benchmark(net, validators, seen, args.requests)
    zk = await _zk_round(net, validator, getattr(args, "zk_requests", 0), console) if zk_verifiers else None
    third_party = await _third_party_demo(net, validator, models, policy, verifiers, console)
    llm = await llm_demo.run_llm_demo(net, validator, models, console, port_of=free_port) if getattr(args, "llm", False) else None  # docs/LLM.md

    console.step("final weights from every validator (committed; the chain reveals them one epoch later)")
    for v in validators:
        while True:
            ev = await v.set_weights()
            if ev.error is None or "no miner" in ev.error:
                break
            await asyncio.sleep(net.block_time * max(1, net.chain.blocks_until_weights_allowed(v.hotkey)))
    console.step("waiting for the reveal and one epoch of Yuma consensus")
    await _await_reveal_and_epoch(net)
    summary = build_summary(net, validators, time.monotonic() - t_start, third_party, zk=zk)
    summary.update({"llm": llm} if llm is not None else {})
    print_summary(summary, console)
    for v in validators:
        v.scores.close()
        await v.prober.client.aclose()
    return summary


def _shower(net: LocalNet, console: Console, index: int, seen: dict[str, int], target: int) -> Any:
    """What validator ``index`` prints for each event, counting its probes of each miner in ``seen``."""
    tag = f"v{net.validator_uids[index]}"

    def show(ev: Event) -> None:
        if isinstance(ev, ProbeEvent):
            o = ev.result.outcome
            seen[o.hotkey] = seen.get(o.hotkey, 0) + 1
            role = net.roles.get(o.hotkey)
            verdict = "attestation accepted" if o.attestation_accepted else ("attestation REJECTED" if o.attestation_accepted is False else "no attestation")
            console.event(
                f"{tag} [{sum(seen.values()):>4}/{target}] uid {o.uid} {role.name if role else '?':<10} {ev.result.model_id:<16} "
                f"{verdict:<20} {o.reason:<24} "
                + (f"score {ev.old_score:.3f}, scored once the weights being set are in" if ev.held else f"score {ev.old_score:.3f} -> {ev.new_score:.3f}"),
                o.ok,
            )
        elif isinstance(ev, WeightsEvent):
            if ev.error:
                console.say(f"  {tag} weights not set at block {ev.block}: {ev.error}")
            else:
                console.say(f"  {tag} weights committed at block {ev.block}: " + ", ".join(f"uid {u} {w:.3f}" for u, w in ev.weights.as_dict().items()))

    return show


async def _benchmark(net: LocalNet, validators: list[Validator], seen: list[dict[str, int]], target: int) -> None:
    """Every validator probes every miner on its own lanes (``Validator.probe_continuously``) and sets
    weights when due, until each has sent ``target`` requests and probed each miner a few times."""
    stop = asyncio.Event()
    lanes = [asyncio.create_task(v.probe_continuously(stop, interval=BENCH_INTERVAL_S)) for v in validators]
    miners = {n.hotkey for n in validators[0].miners()}
    deadline = time.monotonic() + BENCH_CAP_S
    try:
        while time.monotonic() < deadline:
            for v in validators:
                if await asyncio.to_thread(v.due_for_weights):
                    await v.set_weights()  # as the neuron does: the lanes probe on while the chain takes the weights
            done = all(sum(s.values()) >= target and all(s.get(h, 0) >= MIN_PROBES_PER_MINER for h in miners) for s in seen)
            if done or any(t.done() for t in lanes):
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*lanes)


async def _await_reveal_and_epoch(net: LocalNet) -> None:
    """Until every commit is revealed and an epoch has been paid with it (or a bound passes)."""
    chain = net.chain
    deadline = time.monotonic() + net.block_time * TEMPO * (REVEAL_PERIOD + 3)
    reveal = max(chain.pending_reveals().values(), default=chain.block())
    paid_at = chain.next_epoch_boundary(reveal)  # the end of the epoch that starts at the reveal
    while time.monotonic() < deadline and (chain.pending_reveals() or chain.block() < paid_at):
        await asyncio.sleep(net.block_time)


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


async def _receipt_on_chain(net: LocalNet, validator: Validator, c: PrivateClient, receipt: Any, console: Console) -> dict[str, Any]:
    """The client has its receipt logged by the validator, which commits its log's root on chain (it does
    after every weight set; here at once), and checks the inclusion proof against that root."""
    index, _ = await c.record_receipt(receipt)
    committed = await validator.commit_audit()
    proof = await c.inclusion_proof(index)
    problems, block = check_inclusion(proof, receipt_json=receipt.receipt.to_json(), miner_hotkey=receipt.miner_hotkey,
                                      commitments=[(x.hotkey, x.block, x.data) for x in net.chain.commitments()])
    path = net.dir / "receipt-proof.json"
    path.write_text(json.dumps(proof.to_json(), indent=2))
    console.say(f"    receipt logged by the validator as entry {index}; root of {committed.size if committed else proof.size} entries committed on chain "
                f"at block {block}; inclusion proof ({len(proof.path)} hashes) {'verified' if not problems else 'INVALID: ' + '; '.join(problems)}: {path}")
    return {"receipt_entry": index, "receipt_proof": str(path), "receipt_included": not problems, "proof_hashes": len(proof.path)}


async def _doctor_demo(net: LocalNet, validator: Validator, console: Console) -> dict[str, Any]:
    """The operator of the unapproved miner runs ``omron-tee miner doctor``: the validators' appraisal, run
    as its own hotkey, and the validator's own verdict on it, signed."""
    from omron_tee.doctor import diagnose

    i = next((i for i, w in enumerate(net.miner_wallets) if net.roles[w.hotkey.ss58_address].name == "unapproved"), None)
    if i is None:
        return {}
    name, wallet = f"localnet-miner{i}", net.miner_wallets[i]
    d = await diagnose(net.chain, wallet, policy=validator.prober.policy, models=validator.prober.models, timeout=5.0)
    console.step(f"miner doctor: the operator of uid {d.uid} (unapproved) asks what validators conclude (`omron-tee miner doctor --wallet.name {name}`)")
    for f in ([d.local] if d.local else []) + list(d.validators):
        who = "its own machine, the validators' appraisal" if f is d.local else f"validator {f.source[:10]}… (signed answer)"
        console.say(f"    {who}: {f.verdict} — {f.reason}; what to do: {f.advice}")
    return {"local": d.local.reason if d.local else None, "validators": {f.source: (f.reason, f.signed) for f in d.validators}}


async def _third_party_demo(net: LocalNet, validator: Validator, models: ModelRegistry, policy: Any, verifiers: Any, console: Console) -> dict[str, Any]:
    console.step("third-party client: a private request through the validator's API (end-to-end encrypted to the enclave)")
    spec = models.specs()[0]
    result: dict[str, Any] = {"model": spec.model_id}
    port = free_port()
    async with running_api(validator, port=port) as url:
        net.chain.serve(net.validator_wallet, Endpoint("127.0.0.1", port))
        c = PrivateClient(url, validator.hotkey, net.client_wallet, policy=policy, verifiers=verifiers, models=models,
                          releases=ReleaseWatcher(net.chain, policy.releases).refresh)  # a third party reads the chain itself
        try:
            x = sample_input(spec, np.random.default_rng(7))
            r = await c.infer(spec.model_id, x, candidates=min(MAX_CANDIDATES, len(validator.miners())))
            path = net.dir / "receipt.json"
            c.receipt_file(r).save(path)
            check = verify_receipt_file(json.loads(path.read_text()), policy=policy, verifiers=verifiers, workloads=c.workloads, models=models)
            for rej in c.last_rejected:
                console.say(f"    client refused {rej.hotkey[:10]}… ({rej.reason})")
            console.say(f"    answered by uid {net.uids.get(r.miner_hotkey)}; output shape {tuple(r.result.output.shape)}; receipt signed by the attested enclave key")
            console.say(f"    receipt saved to {path}; offline check: {'valid' if check.ok else 'INVALID: ' + '; '.join(check.reasons)}")
            result.update(ok=True, miner_uid=net.uids.get(r.miner_hotkey), rejected=[{"hotkey": j.hotkey, "reason": j.reason} for j in c.last_rejected],
                          receipt=str(path), receipt_valid=check.ok)
            result.update(await _receipt_on_chain(net, validator, c, c.receipt_file(r), console))
            result["doctor"] = await _doctor_demo(net, validator, console)
        except OmronTeeError as e:
            console.say(f"    third-party request failed: {e}")
            result.update(ok=False, error=str(e), reason=e.reason)
        finally:
            await c.aclose()
    return result

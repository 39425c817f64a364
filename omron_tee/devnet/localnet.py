"""A whole subnet on one machine: embedded chain, miners as real processes, a validator, a client.

Miner roles in the default network (4 miners):
  uid 1 honest      a simulated enclave of this release, correct and fast
  uid 2 slow        same build, but adds --dev.delay to every answer
  uid 3 wrong       same build, but returns wrong outputs
  uid 4 unapproved  a build whose measurement is not in the validator's policy
Further miners are honest. The validator (uid 0) runs in this process so that
every request, verdict and score change can be shown as it happens.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from omron_tee.attestation.validate.policy import simulated_policy_toml
from omron_tee.chain.base import Endpoint
from omron_tee.chain.embedded import EmbeddedChain
from omron_tee.client import PrivateClient
from omron_tee.config import create_wallet, run_async
from omron_tee.devnet import llm_demo
from omron_tee.devnet.llm_demo import add_localnet_args as add_llm_args, run_llm_demo
from omron_tee.devnet.processes import StartFailed, free_port, stop_all, wait_serving
from omron_tee.errors import ConfigError, OmronTeeError
from omron_tee.exchange.receipt_file import verify_receipt_file
from omron_tee.models.registry import ModelRegistry
from omron_tee.validator.api.routes import running_api
from omron_tee.validator.core import Event, ProbeEvent, Validator, WeightsEvent
from omron_tee.validator.neuron import build_verifiers, local_dev_policy
from omron_tee.validator.prober import Prober
from omron_tee.workloads import default_workloads
from omron_tee.workloads.tensor import sample_input
from omron_tee.validator.scoring import ScoreBook
from omron_tee.wire.auth import Signer
from omron_tee.wire.client import SignedClient
from omron_tee.reasons import Reason

NETUID = 1
VALIDATOR_STAKE = 1000.0
SLOW_DELAY_S = 0.03


@dataclass(frozen=True)
class MinerRole:
    name: str
    flags: tuple[str, ...]
    description: str


ROLES = [
    MinerRole("honest", (), "correct and fast"),
    MinerRole("slow", ("--dev.delay", str(SLOW_DELAY_S)), f"correct, {SLOW_DELAY_S * 1000:.0f} ms slower"),
    MinerRole("wrong", ("--dev.wrong_output",), "returns wrong outputs"),
    MinerRole("unapproved", ("--dev.measurement_variant", "unapproved-build"), "measurement not in policy"),
]


def role_for(i: int, roles: list[MinerRole] = ROLES) -> MinerRole:
    return roles[i] if i < len(roles) else MinerRole(f"honest-{i}", (), "correct and fast")


class Console:
    """Live, plain output: one line per event, colour only on a terminal."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.tty = sys.stdout.isatty()

    def _c(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.tty else text

    def say(self, text: str = "") -> None:
        print(text, flush=True)

    def step(self, text: str) -> None:
        self.say(self._c("1", "==> ") + text)

    def event(self, text: str, ok: bool) -> None:
        if not self.quiet:
            self.say(("  " + self._c("32", "✓") if ok else "  " + self._c("31", "✗")) + " " + text)


class LocalNet:
    def __init__(self, workdir: Path, n_miners: int, console: Console, *, block_time: float = 0.05, roles: list[MinerRole] = ROLES) -> None:
        self.dir = workdir
        self.role_list = roles
        self.n = n_miners
        self.console = console
        self.block_time = block_time
        self.procs: list[subprocess.Popen] = []
        self.roles: dict[str, MinerRole] = {}
        self.uids: dict[str, int] = {}
        self.zk_circuits: Path | None = None  # circuit cache the miners prove from (None: TEE only)

    def setup(self) -> None:
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.chain_path = self.dir / "chain.sqlite"
        self.wallet_path = self.dir / "wallets"
        self.chain = EmbeddedChain(NETUID, path=self.chain_path, block_time=self.block_time, tempo=20, weights_rate_limit=10)
        self.console.step(f"embedded chain at {self.chain_path} (development chain: {self.block_time * 1000:.0f} ms blocks, tempo 20)")
        self.validator_wallet = create_wallet("localnet-validator", "default", self.wallet_path)
        self.chain.register(self.validator_wallet, stake=VALIDATOR_STAKE)
        self.client_wallet = create_wallet("localnet-client", "default", self.wallet_path)
        self.miner_wallets = []
        for i in range(self.n):
            w = create_wallet(f"localnet-miner{i}", "default", self.wallet_path)
            uid = self.chain.register(w)
            self.miner_wallets.append(w)
            self.roles[w.hotkey.ss58_address] = role_for(i, self.role_list)
            self.uids[w.hotkey.ss58_address] = uid
        self.console.step(f"registered validator (uid 0, {VALIDATOR_STAKE:.0f} TAO stake, permit) and {self.n} miners; keys in {self.wallet_path}")

    def start_miners(self) -> None:
        self.console.step(f"starting {self.n} miner processes (simulated enclaves)")
        self.ports = []
        logs = self.dir / "logs"
        logs.mkdir(exist_ok=True)
        for i, w in enumerate(self.miner_wallets):
            port = free_port()
            role = role_for(i, self.role_list)
            cmd = [
                sys.executable, "-m", "omron_tee.miner",
                "--netuid", str(NETUID), "--subtensor.network", "embedded", "--chain.path", str(self.chain_path),
                "--wallet.name", f"localnet-miner{i}", "--wallet.hotkey", "default", "--wallet.path", str(self.wallet_path),
                "--axon.port", str(port), "--enclave", "simulated", *role.flags,
                *(("--zk.circuits", str(self.zk_circuits)) if self.zk_circuits else ("--zk.off",)),
            ]
            out = open(logs / f"miner{i}.log", "wb")
            self.procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
            self.ports.append(port)
            self.console.say(f"    uid {self.uids[w.hotkey.ss58_address]}  {role.name:<11} {role.description:<28} port {port}  log {logs / f'miner{i}.log'}")

    def wait_for_miners(self, timeout: float = 60.0) -> None:
        try:
            wait_serving({f"miner {i}": port for i, port in enumerate(self.ports)}, {f"miner {i}": p for i, p in enumerate(self.procs)},
                         timeout=timeout, tail=lambda name: (self.dir / "logs" / f"miner{name.split()[-1]}.log").read_text()[-800:])
        except StartFailed as e:
            raise OmronTeeError(f"{e} (see {self.dir / 'logs'})") from None
        self.console.step("all miners serving")

    def stop(self) -> None:
        stop_all(self.procs)
        if hasattr(self, "chain"):
            self.chain.close()


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
    with_llm = getattr(args, "llm", False) and not llm_demo.missing_packages()
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
    llm = await run_llm_demo(net, validator, models, console, port_of=free_port) if getattr(args, "llm", False) else None  # docs/LLM.md

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


def build_summary(net: LocalNet, validator: Validator, scores: ScoreBook, elapsed: float, third_party: dict[str, Any], *, zk: dict[str, Any] | None = None) -> dict[str, Any]:
    mg = net.chain.metagraph()
    weights = validator.last_weights or {}
    miners = []
    for n in mg.neurons:
        if n.hotkey == validator.hotkey:
            continue
        rec = scores.records.get(n.hotkey)
        med = rec.median_latency() if rec else None
        if med is None and rec is not None and rec.llm_latencies:
            med = statistics.median(rec.llm_latencies)  # an LLM-only miner: its completions' latency
        role = net.roles.get(n.hotkey)
        miners.append({
            "uid": n.uid,
            "hotkey": n.hotkey,
            "role": role.name if role else None,
            "enclave_type": "simulated",
            "requests": rec.requests if rec else 0,
            "attestations_accepted": rec.attestations_accepted if rec else 0,
            "attestations_rejected": rec.attestations_rejected if rec else 0,
            "correct": rec.correct if rec else 0,
            "incorrect": rec.incorrect if rec else 0,
            "failures": rec.failures if rec else 0,
            "reasons": dict(rec.reasons) if rec else {},
            "median_latency_ms": round(med * 1000, 3) if med is not None else None,
            "score": round(rec.score, 4) if rec else 0.0,
            "weight": round(weights.get(n.uid, 0.0), 4),
            "incentive": round(n.incentive, 4),
            "emission_tao": round(n.emission, 6),
        })
    totals = {k: sum(m[k] for m in miners) for k in ("requests", "attestations_accepted", "attestations_rejected", "correct", "incorrect", "failures")}
    lat = [m["median_latency_ms"] for m in miners if m["median_latency_ms"] is not None]
    totals["median_latency_ms"] = round(statistics.median(lat), 3) if lat else None
    summary = {"network": "embedded", "netuid": NETUID, "block": mg.block, "elapsed_s": round(elapsed, 2), "miners": miners, "totals": totals, "third_party": third_party}
    if zk is not None:
        summary["zk"] = zk
        for m in miners:
            rec = scores.records.get(m["hotkey"])
            zmed = rec.median_zk_latency() if rec else None
            m["zk_median_latency_ms"] = round(zmed * 1000, 1) if zmed is not None else None
    return summary


def print_summary(summary: dict[str, Any], console: Console) -> None:
    console.step(f"summary after {summary['elapsed_s']:.1f}s (block {summary['block']})")
    console.say(f"  {'uid':>3} {'role':<11} {'reqs':>4} {'att ok':>6} {'att ✗':>5} {'correct':>7} {'wrong':>5} {'median ms':>9} {'score':>6} {'weight':>6} {'emission':>9}  top reason")
    for m in sorted(summary["miners"], key=lambda m: -m["weight"]):
        top = max(m["reasons"].items(), key=lambda kv: kv[1])[0] if m["reasons"] else "-"
        med = f"{m['median_latency_ms']:.2f}" if m["median_latency_ms"] is not None else "-"
        console.say(
            f"  {m['uid']:>3} {str(m['role']):<11} {m['requests']:>4} {m['attestations_accepted']:>6} {m['attestations_rejected']:>5} "
            f"{m['correct']:>7} {m['incorrect']:>5} {med:>9} {m['score']:>6.3f} {m['weight']:>6.3f} {m['emission_tao']:>9.4f}  {top}"
        )
    earners = [m for m in summary["miners"] if m["emission_tao"] > 0]
    if earners:
        best = max(earners, key=lambda m: m["emission_tao"])
        console.say(f"  who earns: {len(earners)} of {len(summary['miners'])} miners; most: uid {best['uid']} ({best['role']}) with {best['emission_tao']:.4f} TAO")
    else:
        console.say("  who earns: nobody yet (no epoch has closed since weights were set)")
    zk = summary.get("zk")
    if zk:
        refused = ", ".join(f"{k} {v}" for k, v in zk["refused"].items()) or "none"
        med = f"median {zk['median_latency_ms']:.0f} ms per verified request, proving included" if zk["median_latency_ms"] is not None else "none verified"
        console.say(f"  zk ({zk['model']}): {zk['verified']}/{zk['requests']} proofs verified, {med}; refused: {refused}")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "localnet",
        help="run a whole subnet on this machine: embedded chain, miners, a validator, a third-party client",
        description="Run a local network doing private verified inference and show what happens: each request, "
        "each attestation verdict, each score change, then the weights set and who earns.",
    )
    p.add_argument("--miners", type=int, default=4, help="number of miners (default: %(default)s; the first four have distinct roles)")
    p.add_argument("--requests", type=int, default=200, help="benchmark requests the validator sends (default: %(default)s)")
    p.add_argument("--json", default=None, help="write the summary as JSON to this file")
    p.add_argument("--dir", default=str(Path.home() / ".omron-tee" / "localnet"), help="working folder, recreated on each run (default: %(default)s)")
    p.add_argument("--parallel", type=int, default=2, help="requests per miner per round (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="seed for the benchmark inputs")
    p.add_argument("--quiet", action="store_true", help="do not print one line per request")
    p.add_argument("--zk-requests", dest="zk_requests", type=int, default=4,
                   help="requests proven with EZKL (zk) beside the TEE ones, for the models that declare zk; 0: none (default: %(default)s)")
    add_llm_args(p)
    p.set_defaults(handler=cmd_localnet)


def cmd_localnet(args: Any) -> int:
    if args.miners < 1 or args.requests < 1:
        raise ConfigError("--miners and --requests must be at least 1")
    summary = run_async(run_localnet(args))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
        print(f"summary written to {args.json}")
    return 0

"""The incentive simulator: the real scoring, weights and chain code, driven by synthetic miners.

    .venv/bin/python bench/bench_incentives.py [--intervals 60] [--probes 60] [--seed 1]

Nothing here re-implements the rule. Each validator is a real ``validator.core.Validator`` with
its own ``ScoreBook`` (docs/SCORING.md) and sets weights through ``Validator.set_weights`` on a
real ``EmbeddedChain`` with commit-reveal on, whose epochs run Yuma consensus (``chain.yuma``).
Only the network is synthetic: each probe's ``Outcome`` comes from a model of the miner (its
latency distribution, as every validator sees it with its own network offset, and its
behaviour), and the clock is simulated, so a run of many weight intervals takes seconds.

Miners: honest ones of several speeds, two equal twins, a slow one, one offline at times, one
that turns to cheating (wrong 5 % of the time) part-way through, and one that relays another
miner's enclave (its evidence is bound to the other miner's hotkey: ``report-data-mismatch``,
what the real verifier says, tests/hostile). Validators: three honest ones of different stakes
and one that copies the largest validator's revealed weights instead of probing.

It prints, in one run, beside their goals:
  * the coefficient of variation of the equal twins' weights across successive weight sets;
  * the share of the miners' emission that reached honest miners;
  * the weight intervals from the cheater's first wrong answer until its weight is below 1 %;
  * the rank correlation (Spearman) between speed and weight among the honest, always-on miners;
and, for the validators, each one's consensus trust and dividends per unit of stake.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omron_tee.attestation.validate.policy import Policy  # noqa: E402
from omron_tee.chain.embedded import EmbeddedChain  # noqa: E402
from omron_tee.chain.yuma import DEFAULT_KAPPA, consensus_of  # noqa: E402
from omron_tee.config import create_wallet  # noqa: E402
from omron_tee.reasons import Reason  # noqa: E402
from omron_tee.validator.core import Validator  # noqa: E402
from omron_tee.validator.identity import IdentityRegistry  # noqa: E402
from omron_tee.validator.scoring import Outcome, ScoreBook  # noqa: E402
from omron_tee.validator.weights import WEIGHTS_VERSION  # noqa: E402

BLOCK_TIME = 12.0
TEMPO = 30  # blocks per epoch; one weight set per validator per epoch
LATENCY_SIGMA = 0.2  # log-normal spread of one miner's latencies
CHEAT_FROM = 0.25  # share of the intervals after which the cheater starts cheating
CHEAT_RATE = 0.05


@dataclass(frozen=True)
class SimMiner:
    name: str
    latency_ms: float
    behaviour: str = "honest"  # "honest", "offline-at-times", "cheater", "relay"

    @property
    def honest(self) -> bool:
        return self.behaviour in ("honest", "offline-at-times")


MINERS = [
    SimMiner("fast", 8.0),
    SimMiner("twin-a", 12.0),
    SimMiner("twin-b", 12.0),
    SimMiner("steady", 16.0),
    SimMiner("middling", 22.0),
    SimMiner("slow", 40.0),
    SimMiner("offline", 14.0, "offline-at-times"),
    SimMiner("cheater", 10.0, "cheater"),
    SimMiner("relay", 13.0, "relay"),
]
VALIDATORS = [("v-large", 50_000.0, 0.0), ("v-medium", 30_000.0, 0.6), ("v-small", 15_000.0, 1.5)]  # name, stake, network offset ms
COPIER = ("v-copier", 10_000.0)


class _NoProbes:
    """The prober slot of a ``Validator`` that is driven here: only its identity registry and its policy's release
    rule (none required) are read."""

    identities = IdentityRegistry()
    policy = Policy()


class Sim:
    def __init__(self, root: Path, intervals: int, probes: int, seed: int) -> None:
        self.now = 1_800_000_000.0
        self.rng = np.random.default_rng(seed)
        self.intervals, self.probes = intervals, probes
        self.chain = EmbeddedChain(1, path=root / "chain.sqlite", clock=lambda: self.now, block_time=BLOCK_TIME, tempo=TEMPO,
                                   weights_rate_limit=TEMPO // 2, commit_reveal=True, reveal_period=1)
        wallets = root / "wallets"
        self.validators: list[tuple[Validator, float]] = []
        for name, stake, offset in VALIDATORS:
            w = create_wallet(name, "default", wallets)
            self.chain.register(w, stake=stake)
            v = Validator(chain=self.chain, wallet=w, prober=_NoProbes(), scores=ScoreBook(root / f"{name}.sqlite", clock=lambda: self.now),  # type: ignore[arg-type]
                          weights_interval=TEMPO, top_k=16)
            self.validators.append((v, offset))
        self.copier = create_wallet(COPIER[0], "default", wallets)
        self.chain.register(self.copier, stake=COPIER[1])
        self.uid: dict[str, int] = {}
        self.hotkey: dict[str, str] = {}
        for m in MINERS:
            w = create_wallet(f"m-{m.name}", "default", wallets)
            self.uid[m.name] = self.chain.register(w)
            self.hotkey[m.name] = w.hotkey.ss58_address
        self.cheat_from = int(intervals * CHEAT_FROM)
        self.first_wrong: int | None = None
        self.weight_sets: list[dict[str, dict[str, float]]] = []  # per interval: validator -> miner -> weight
        self.emission_by_interval: list[dict[str, float]] = []  # per interval: miner -> TAO

    def offline(self, m: SimMiner, interval: int) -> bool:
        return m.behaviour == "offline-at-times" and interval % 10 in (4, 5)  # offline 20 % of the time, two intervals at a time

    def outcome(self, m: SimMiner, interval: int, offset_ms: float) -> Outcome:
        hk, uid = self.hotkey[m.name], self.uid[m.name]
        if self.offline(m, interval):
            return Outcome(hk, uid, False, Reason.UNREACHABLE, None, None, None)
        if m.behaviour == "relay":
            return Outcome(hk, uid, False, Reason.REPORT_DATA_MISMATCH, None, False, None)
        latency = (m.latency_ms * float(self.rng.lognormal(0.0, LATENCY_SIGMA)) + offset_ms) / 1000.0
        if m.behaviour == "cheater" and interval >= self.cheat_from and self.rng.random() < CHEAT_RATE:
            if self.first_wrong is None:
                self.first_wrong = interval
            return Outcome(hk, uid, False, Reason.WRONG_OUTPUT, latency, True, False)
        return Outcome(hk, uid, True, Reason.OK, latency, True, True)

    def run(self) -> None:
        interval_s = TEMPO * BLOCK_TIME
        for k in range(self.intervals):
            before = self.chain.emissions()
            for p in range(self.probes):
                self.now += interval_s / self.probes
                for v, offset in self.validators:
                    for m in MINERS:
                        v.record(self.outcome(m, k, offset))
            sets: dict[str, dict[str, float]] = {}
            for (v, _), (name, _, _) in zip(self.validators, VALIDATORS):
                ev = asyncio.run(v.set_weights())
                by_uid = ev.weights.as_dict() if ev.error is None else {}
                sets[name] = {m.name: by_uid.get(self.uid[m.name], 0.0) for m in MINERS}
            self.copy_weights()
            self.weight_sets.append(sets)
            after = self.chain.emissions()
            self.emission_by_interval.append({m.name: after.of(self.hotkey[m.name]) - before.of(self.hotkey[m.name]) for m in MINERS}
                                             )

    def vnames(self) -> list[str]:
        return [n for n, _, _ in VALIDATORS] + [COPIER[0]]

    def vhotkey(self, name: str) -> str:
        if name == COPIER[0]:
            return self.copier.hotkey.ss58_address
        return next(v.hotkey for (v, _), (n, _, _) in zip(self.validators, VALIDATORS) if n == name)

    def copy_weights(self) -> None:
        """The copier sets the largest validator's weights as revealed on chain (it cannot see a commit)."""
        revealed = self.chain.weights().get(self.chain.metagraph().by_hotkey(self.validators[0][0].hotkey).uid)
        if revealed and self.chain.blocks_until_weights_allowed(self.copier.hotkey.ss58_address) == 0:
            self.chain.set_weights(self.copier, list(revealed), list(revealed.values()), version_key=WEIGHTS_VERSION)


def spearman(x: list[float], y: list[float]) -> float:
    def ranks(v: list[float]) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for val in set(v):  # ties share their mean rank
            idx = [i for i, a in enumerate(v) if a == val]
            r[idx] = np.mean(r[idx])
        return r
    rx, ry = ranks(x), ranks(y)
    return float(np.corrcoef(rx, ry)[0, 1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--intervals", type=int, default=60, help="weight intervals (epochs) to simulate (default: %(default)s)")
    ap.add_argument("--probes", type=int, default=60, help="probes of each miner by each validator per interval (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        sim = Sim(Path(d), args.intervals, args.probes, args.seed)
        sim.run()
        report(sim)
        mg = sim.chain.metagraph()
        print("\nvalidators (consensus trust; dividends per 1000 staked, last epoch):")
        for name in sim.vnames():
            n = mg.by_hotkey(sim.vhotkey(name))
            print(f"  {name:<9} stake {n.stake:>8.0f}  validator trust {n.validator_trust:.3f}  dividends/1000 stake {n.dividends / n.stake * 1000:.4f}")
        sim.chain.close()
    print(f"\n({args.intervals} intervals x {args.probes} probes x {len(MINERS)} miners x {len(VALIDATORS)} validators in {time.perf_counter() - t0:.1f} s)")
    return 0


def report(sim: Sim) -> None:
    warm = max(4, sim.intervals // 6)  # past the new miners' MIN_SAMPLES and the EMA's ramp
    sets = sim.weight_sets[warm:]
    # The twins against each other: each one's weight over the pair's mean in the same set, so
    # what the other miners do (one going offline raises everyone's share) is not counted as unfairness.
    pairs = [(s[v]["twin-a"], s[v]["twin-b"]) for s in sets for v in s]
    rel = [x / ((a + b) / 2) for a, b in pairs if a + b > 0 for x in (a, b)]
    cv = statistics.pstdev(rel) if rel else math.inf
    raw = [x for p in pairs for x in p]
    raw_cv = statistics.pstdev(raw) / statistics.fmean(raw) if raw and statistics.fmean(raw) > 0 else math.inf
    # From the first epoch paid by weights set after the cheater turned (commit-reveal delays weights
    # by one reveal period, so the epoch right after the turn still pays weights it earned honestly).
    emitted = sim.emission_by_interval[max(warm, sim.cheat_from + 1):]
    honest = sum(e[m.name] for e in emitted for m in MINERS if m.honest)
    total = sum(e[m.name] for e in emitted for m in MINERS)
    share = honest / total if total else 0.0
    # Yuma's view: the cheater's consensus weight is the stake-weighted median of the validators'
    # weights on it; once validators holding half the stake give it < 1 %, consensus clips it there.
    stakes = {name: stake for name, stake, _ in VALIDATORS}
    below = None
    if sim.first_wrong is not None:
        for k in range(sim.first_wrong, sim.intervals):
            column = [(stakes[v], w["cheater"]) for v, w in sim.weight_sets[k].items()]
            if consensus_of([(st / sum(stakes.values()), w) for st, w in column], DEFAULT_KAPPA) < 0.01:
                below = k - sim.first_wrong + 1
                break
    always_on = [m for m in MINERS if m.behaviour == "honest"]
    mean_w = [statistics.fmean(s[v][m.name] for s in sets for v in s) for m in always_on]
    rho = spearman([-m.latency_ms for m in always_on], mean_w)
    print(f"incentive simulator: {sim.intervals} weight intervals, {len(MINERS)} miners, {len(VALIDATORS)} validators + 1 weight copier, "
          f"commit-reveal on; figures from interval {warm} on\n")
    print(f"  {'figure':<72} {'measured':>10} {'goal':>8}  met")
    rows = [
        ("equal twins: coefficient of variation of their weights", f"{cv * 100:.2f} %", "<= 5 %", cv <= 0.05),
        ("  (the same, not corrected for the other miners' changes)", f"{raw_cv * 100:.2f} %", "", raw_cv <= 0.05),
        ("share of the miners' emission reaching honest miners (once weights could see the turn)", f"{share * 100:.2f} %", ">= 99 %", share >= 0.99),
        ("intervals from the cheater's first wrong answer to consensus weight < 1 %",
         str(below) if below is not None else "never", "<= 1", below is not None and below <= 1),
        ("rank correlation of speed and weight (honest, always on)", f"{rho:.3f}", ">= 0.9", rho >= 0.9),
    ]
    for label, got, goal, ok in rows:
        print(f"  {label:<72} {got:>10} {goal:>8}  {('yes' if ok else 'NO') if goal else ''}")
    print("\nmean weight per miner (honest validators' sets) and its share of the miners' emission:")
    for m in MINERS:
        w = statistics.fmean(s[v][m.name] for s in sets for v in s)
        e = sum(x[m.name] for x in emitted) / total if total else 0.0  # from the cheater's turn on
        print(f"  {m.name:<9} {m.latency_ms:>5.1f} ms  {m.behaviour:<17} weight {w:.4f}  emission {e * 100:6.2f} %")
    if sim.first_wrong is not None:
        print(f"\n  the cheater turned at interval {sim.cheat_from}; its first wrong answer came in interval {sim.first_wrong}")


if __name__ == "__main__":
    raise SystemExit(main())

"""The local network's summary: per miner, what the validator saw, scored, weighted and what it earned."""

from __future__ import annotations

import statistics
from typing import Any

from omron_tee.devnet.localnet import NETUID, Console, LocalNet
from omron_tee.validator.core import Validator
from omron_tee.validator.scoring import ScoreBook


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

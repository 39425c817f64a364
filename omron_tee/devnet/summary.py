"""The local network's summary: per miner, what the validators saw, scored and weighted, the consensus
the chain reached and what each miner earned; per validator, its stake, its agreement and its dividends."""

from __future__ import annotations

import statistics
from typing import Any

from omron_tee.devnet.localnet import NETUID, Console, LocalNet
from omron_tee.validator.core import Validator
from omron_tee.validator.weights import cosine

COUNTS = ("requests", "attestations_accepted", "attestations_rejected", "correct", "incorrect", "failures")


def build_summary(net: LocalNet, validators: list[Validator], elapsed: float, third_party: dict[str, Any], *,
                  zk: dict[str, Any] | None = None) -> dict[str, Any]:
    mg = net.chain.metagraph()
    main = validators[0]
    vkeys = {v.hotkey for v in validators}
    tags = {v.hotkey: f"v{mg.by_hotkey(v.hotkey).uid}" for v in validators}
    miners = []
    for n in mg.neurons:
        if n.hotkey in vkeys or n.hotkey == getattr(net, "owner_hotkey", None):
            continue  # validators, and the subnet owner (it publishes releases, it does not mine)
        recs = [v.scores.records.get(n.hotkey) for v in validators]
        rec = recs[0]
        med = rec.median_latency() if rec else None
        if med is None and rec is not None and rec.llm_latencies:
            med = statistics.median(rec.llm_latencies)  # an LLM-only miner: its completions' latency
        role = net.roles.get(n.hotkey)
        reasons: dict[str, int] = {}
        for r in recs:
            for k, c in (r.reasons.items() if r else ()):
                reasons[k] = reasons.get(k, 0) + c
        m = {
            "uid": n.uid,
            "hotkey": n.hotkey,
            "role": role.name if role else None,
            "enclave_type": "simulated",
            **{k: sum(getattr(r, k) for r in recs if r) for k in COUNTS},
            "reasons": reasons,
            "median_latency_ms": round(med * 1000, 3) if med is not None else None,
            "score": round(rec.score, 4) if rec else 0.0,
            "weight": round(main.last_weights.get(n.uid, 0.0), 4),
            "scores_by_validator": {tags[v.hotkey]: round(r.score, 4) if r else 0.0 for v, r in zip(validators, recs)},
            "weights_by_validator": {tags[v.hotkey]: round(v.last_weights.get(n.uid, 0.0), 4) for v in validators},
            "consensus": round(n.consensus, 4),
            "trust": round(n.trust, 4),
            "incentive": round(n.incentive, 4),
            "emission_tao": round(n.emission, 6),
        }
        miners.append(m)
    totals: dict[str, Any] = {k: sum(m[k] for m in miners) for k in COUNTS}
    lat = [m["median_latency_ms"] for m in miners if m["median_latency_ms"] is not None]
    totals["median_latency_ms"] = round(statistics.median(lat), 3) if lat else None
    vals = []
    for v in validators:
        n = mg.by_hotkey(v.hotkey)
        others = [o for o in validators if o is not v and o.last_weights]
        stake = sum(mg.by_hotkey(o.hotkey).stake for o in others)
        mean = {u: sum(mg.by_hotkey(o.hotkey).stake * o.last_weights.get(u, 0.0) for o in others) / stake
                for u in {u for o in others for u in o.last_weights}} if stake > 0 else {}
        agree = cosine(v.last_weights, mean)
        vals.append({
            "uid": n.uid, "hotkey": v.hotkey, "name": tags[v.hotkey], "stake": n.stake,
            "weights": {str(u): round(w, 4) for u, w in sorted(v.last_weights.items())},
            "agreement": round(agree, 4) if agree is not None else None,  # cosine with the others' stake-weighted weights
            "validator_trust": round(n.validator_trust, 4), "dividends": round(n.dividends, 4), "emission_tao": round(n.emission, 6),
        })
    summary = {"network": "embedded", "netuid": NETUID, "block": mg.block, "elapsed_s": round(elapsed, 2), "miners": miners,
               "validators": vals, "totals": totals, "third_party": third_party}
    twins = _twins(miners)
    if twins:
        summary["equal_miners"] = twins
    summary["audits"] = [audit_of(net, v, tags[v.hotkey]) for v in validators]
    if zk is not None:
        summary["zk"] = zk
        for m in miners:
            rec = main.scores.records.get(m["hotkey"])
            zmed = rec.median_zk_latency() if rec else None
            m["zk_median_latency_ms"] = round(zmed * 1000, 1) if zmed is not None else None
    return summary


def audit_of(net: LocalNet, v: Validator, name: str) -> dict[str, Any]:
    """What an auditor concludes of validator ``v`` from its committed log and the chain (``omron-tee audit weights``)."""
    from omron_tee.transparency.records import AuditCommitment
    from omron_tee.validator.audit import audit

    commitments = [(c.block, a) for c in net.chain.commitments() if c.hotkey == v.hotkey and (a := AuditCommitment.from_commitment(c.data))]
    mg = net.chain.metagraph()
    committed = max((a.size for _, a in commitments if a.log_id == v.scores.store.log_id()), default=0)
    report = audit(v.scores.store.audit_entries(0, committed), validator_hotkey=v.hotkey, commitments=commitments,
                   chain_weights=net.chain.weights().get(mg.by_hotkey(v.hotkey).uid, {}), registered={n.hotkey: n.uid for n in mg.neurons},
                   log_id=v.scores.store.log_id())
    return {"name": name, "ok": report.ok, "entries": report.entries, "commits": len(commitments), "weight_sets": len(report.weight_sets),
            "chain_matches_entry": report.chain_match, "problems": list(report.problems)}


def _twins(miners: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The honest miner and its twin: how far apart their consensus incentives are."""
    by_role = {m["role"]: m for m in miners}
    a, b = by_role.get("honest"), by_role.get("twin")
    if not a or not b:
        return None
    mean = (a["incentive"] + b["incentive"]) / 2
    return {"miners": [a["uid"], b["uid"]], "incentive": [a["incentive"], b["incentive"]],
            "apart_percent": round(abs(a["incentive"] - b["incentive"]) / mean * 100, 2) if mean > 0 else None}


def print_summary(summary: dict[str, Any], console: Console) -> None:
    console.step(f"summary after {summary['elapsed_s']:.1f}s (block {summary['block']})")
    vnames = [v["name"] for v in summary["validators"]]
    wcols = " ".join(f"{'w ' + n:>7}" for n in vnames)
    console.say(f"  {'uid':>3} {'role':<11} {'reqs':>4} {'att ok':>6} {'att ✗':>5} {'correct':>7} {'wrong':>5} {'median ms':>9} {'score':>6} "
                f"{wcols} {'consens':>7} {'incent':>6} {'emission':>9}  top reason")
    for m in sorted(summary["miners"], key=lambda m: (-m["incentive"], -m["weight"])):
        top = max(m["reasons"].items(), key=lambda kv: kv[1])[0] if m["reasons"] else "-"
        med = f"{m['median_latency_ms']:.2f}" if m["median_latency_ms"] is not None else "-"
        ws = " ".join(f"{m['weights_by_validator'].get(n, 0.0):>7.3f}" for n in vnames)
        console.say(
            f"  {m['uid']:>3} {str(m['role']):<11} {m['requests']:>4} {m['attestations_accepted']:>6} {m['attestations_rejected']:>5} "
            f"{m['correct']:>7} {m['incorrect']:>5} {med:>9} {m['score']:>6.3f} {ws} {m['consensus']:>7.3f} {m['incentive']:>6.3f} "
            f"{m['emission_tao']:>9.4f}  {top}"
        )
    console.say("  validators (agreement: cosine of its weights with the others' stake-weighted ones; trust: its weight that consensus kept):")
    for v in summary["validators"]:
        agree = f"{v['agreement']:.3f}" if v["agreement"] is not None else "-"
        console.say(f"    {v['name']:<4} uid {v['uid']} stake {v['stake']:>6.0f}  agreement {agree:>5}  validator trust {v['validator_trust']:.3f}  "
                    f"dividends {v['dividends']:.3f}  emission {v['emission_tao']:.4f} TAO")
    twins = summary.get("equal_miners")
    if twins and twins["apart_percent"] is not None:
        console.say(f"  equal miners: uid {twins['miners'][0]} and uid {twins['miners'][1]} (honest and its twin) hold "
                    f"{twins['incentive'][0]:.3f} and {twins['incentive'][1]:.3f} of the incentive, {twins['apart_percent']:.1f} % apart")
    earners = [m for m in summary["miners"] if m["emission_tao"] > 0]
    if earners:
        best = max(earners, key=lambda m: m["emission_tao"])
        console.say(f"  who earns: {len(earners)} of {len(summary['miners'])} miners; most: uid {best['uid']} ({best['role']}) with {best['emission_tao']:.4f} TAO")
    else:
        console.say("  who earns: nobody yet (no epoch has closed since weights were revealed)")
    for a in summary.get("audits", []):
        verdict = "accounted for" if a["ok"] else "NOT accounted for: " + "; ".join(a["problems"])
        console.say(f"  audit {a['name']}: {a['entries']} entries under {a['commits']} root(s) on chain; replaying them gives its {a['weight_sets']} "
                    f"weight set(s), and the chain holds entry {a['chain_matches_entry']}'s: {verdict}")
    zk = summary.get("zk")
    if zk:
        refused = ", ".join(f"{k} {v}" for k, v in zk["refused"].items()) or "none"
        med = f"median {zk['median_latency_ms']:.0f} ms per verified request, proving included" if zk["median_latency_ms"] is not None else "none verified"
        console.say(f"  zk ({zk['model']}): {zk['verified']}/{zk['requests']} proofs verified, {med}; refused: {refused}")

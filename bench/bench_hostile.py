"""Honest miners' probe rate with and without hostile miners beside them, side by side in one run.

    .venv/bin/python bench/bench_hostile.py [--honest 4] [--seconds 6] [--pairs 2] [--interval 0.05]

Starts one local network of real processes (omron_tee.devnet.network): honest
miners and one process serving every hostile behaviour of
omron_tee.devnet.hostile (deep JSON, a flipped PCK certificate, trickling,
200 MB and endless replies, garbage, closing mid-reply, relaying another
enclave, another nonce, deep JSON from /infer, one enclave behind two
hotkeys). An in-process validator probes continuously (one lane per miner,
``Validator.probe_continuously``) in alternating phases: honest miners only,
then honest and hostile miners together, ``--pairs`` times. It prints per
phase the honest miners' verified probes per second, the validator's CPU per
verified honest probe (from its own process counters), its resident memory,
and every hostile miner's named reasons; then the ratio of the honest rate
with attackers to without (goal: at least 90 %).

Two paces: ``--interval`` (each miner probed about every interval seconds, the
validator far from saturated) and ``--interval 0`` (as fast as the CPUs allow:
attackers then compete for the validator's CPU with honest probes).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omron_tee.attestation.testing import vectors  # noqa: E402
from omron_tee.devnet import network  # noqa: E402
from omron_tee.validator.core import ProbeEvent  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def phase(net: network.HostileNet, scores: Path, *, hostile: bool, seconds: float, interval: float) -> dict:
    allowed = {m.hotkey for m in net.members.values() if hostile or m.behaviour == "honest"}
    honest = {m.hotkey for m in net.members.values() if m.behaviour == "honest"}
    events: list[ProbeEvent] = []
    v = net.validator(scores, timeout=1.0)
    base_miners = v.miners
    v.miners = lambda: [n for n in base_miners() if n.hotkey in allowed]  # type: ignore[method-assign]
    v.on_event = lambda ev: events.append(ev) if isinstance(ev, ProbeEvent) else None
    stop = asyncio.Event()
    cpu0, t0 = time.process_time(), time.monotonic()
    task = asyncio.create_task(v.probe_continuously(stop, interval=interval))
    await asyncio.sleep(seconds)
    stop.set()
    await task
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    await v.prober.client.aclose()
    v.scores.close()
    ok_honest = [e for e in events if e.result.outcome.hotkey in honest and e.result.outcome.ok]
    # Attacks: every probe of a hostile miner that failed (the sybil keeping the shared
    # enclave answers correctly: counted in verified_rate, not here).
    bad = [e for e in events if e.result.outcome.hotkey not in honest and not e.result.outcome.ok]
    return {
        "hostile": hostile,
        "honest_rate": len(ok_honest) / wall,
        # Every verified probe (the sybil that keeps the shared enclave answers correctly too).
        "verified_rate": sum(1 for e in events if e.result.outcome.ok) / wall,
        "honest_failures": sum(1 for e in events if e.result.outcome.hotkey in honest and not e.result.outcome.ok),
        "cpu_ms_per_honest": 1000 * cpu / max(1, len(ok_honest)),
        "cpu_share": cpu / wall,
        "rss_mb": rss_mb(),
        "attacks": len(bad),
        "reasons": Counter((net.by_hotkey(e.result.outcome.hotkey).behaviour, e.result.outcome.reason) for e in bad),
    }


async def run(args: argparse.Namespace) -> int:
    d = Path(tempfile.mkdtemp(prefix="omron-bench-hostile-"))
    print(f"starting {args.honest} honest miners and {len(network.HOSTILE)} hostile ones in {d} ...", flush=True)
    net = network.start(d, honest=args.honest, vectors_dir=vectors.TESTVECTORS if vectors.available() else None)
    try:
        for interval in args.intervals:
            results = []
            for i in range(args.pairs):
                for hostile in (False, True):
                    r = await phase(net, d / f"scores-{interval}-{i}-{hostile}.sqlite", hostile=hostile, seconds=args.seconds, interval=interval)
                    results.append(r)
                    print(f"  interval {interval:>5} s  {'with   ' if hostile else 'without'} attackers: honest {r['honest_rate']:7.1f} verified/s "
                          f"({r['honest_failures']} honest failures), validator CPU {r['cpu_ms_per_honest']:.2f} ms per honest probe, "
                          f"{100 * r['cpu_share']:.0f}% of a core, RSS {r['rss_mb']:.0f} MB, {r['attacks']} attacks", flush=True)
            without = statistics.mean(r["honest_rate"] for r in results if not r["hostile"])
            with_ = statistics.mean(r["honest_rate"] for r in results if r["hostile"])
            reasons = sum((r["reasons"] for r in results if r["hostile"]), Counter())
            verified_with = statistics.mean(r["verified_rate"] for r in results if r["hostile"])
            print(f"interval {interval} s: honest probe rate with attackers / without = {with_:.1f} / {without:.1f} = {100 * with_ / without:.1f} % (goal >= 90 %); "
                  f"all verified probes with attackers / without = {verified_with:.1f} / {without:.1f} = {100 * verified_with / without:.1f} %")
            print(f"  attacks tried: {sum(reasons.values())}; named reasons:")
            for (behaviour, reason), n in sorted(reasons.items()):
                print(f"    {behaviour:<16} {reason:<22} {n}")
        alive = all(p.poll() is None for p in net.procs)
        print(f"validator: alive through every phase; miner processes all alive: {alive}")
    finally:
        net.stop()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--honest", type=int, default=4)
    p.add_argument("--seconds", type=float, default=6.0, help="length of one phase")
    p.add_argument("--pairs", type=int, default=2, help="how many (without, with) phase pairs per pace")
    p.add_argument("--intervals", type=float, nargs="+", default=[0.05, 0.0], help="per-miner probe intervals to measure at")
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())

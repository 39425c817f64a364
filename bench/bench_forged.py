"""A miner under a flood of forged requests, with and without its limit on failed authentications, in one run.

    .venv/bin/python bench/bench_forged.py [--seconds 4] [--pairs 2] [--connections 8]

Two miner processes (``_one_miner``, simulated enclave, every hotkey admitted as a validator would be): the
shipped routes ("shipped": an address whose requests fail btauth/1 more than ``FAILED_AUTH_RATE`` times a second
is refused on arrival, unread) and the same routes with that limit lifted ("unlimited-auth"). A forger process
sends ``POST /infer`` as fast as ``--connections`` keep-alive connections allow, from 127.0.0.2 (another
address than the validator's), each with a 1 KiB body, an admitted hotkey and a well-formed but false signature: what anyone
can send to cost a miner a body read, a hash and an sr25519 verification. Meanwhile this process plays the
honest validator from 127.0.0.1: verified requests on a reused session, one at a time. Per miner and phase
(no flood, flood), ``--pairs`` times in turn: the honest requests' median wall time and rate, the miner's share
of a core (``/proc/<pid>/schedstat``), and the forger's answers per second by status (401: verified and
refused; 429: refused unread). On 2 cores the forger also competes with both for the CPUs: the shipped
miner's row under flood against the unlimited one's is what the limit buys.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _one_miner as one  # noqa: E402

from omron_tee.config import run_async  # noqa: E402

FLOODER = Path(__file__).resolve().parent / "_flooder.py"


async def phase(url: str, pid: int, ex: one.Exchanges, *, flood: bool, seconds: float, connections: int) -> dict:
    forger = None
    if flood:
        forger = subprocess.Popen([sys.executable, str(FLOODER), url + "/infer", "--connections", str(connections), "--seconds", str(seconds),
                                   "--from", "127.0.0.2", "--forge-for", one.HOTKEY, "--hotkey", ex.client.signer.hotkey],
                                  stdout=subprocess.PIPE, text=True)
        await asyncio.sleep(0.3)  # the forger's interpreter starting: its flood, not its start-up, is measured
    walls: list[float] = []
    m0, t0 = one.cpu_ns(pid), time.monotonic()
    end = t0 + (seconds - 0.6 if flood else seconds)
    while time.monotonic() < end:
        w = time.perf_counter()
        await ex.reused(url)
        walls.append(time.perf_counter() - w)
    span = time.monotonic() - t0
    share = (one.cpu_ns(pid) - m0) / 1e9 / span
    counts = {}
    if forger is not None:
        out, _ = await asyncio.to_thread(forger.communicate)
        counts = json.loads(out or "{}")
    return {"ms": 1000 * statistics.median(walls), "rate": len(walls) / span, "share": share,
            "401": counts.get("401", 0) / seconds, "429": counts.get("429", 0) / seconds,
            "other": sum(n for k, n in counts.items() if k not in ("401", "429")) / seconds}


async def drive(miners: dict[str, tuple[str, int]], ex: one.Exchanges, pairs: int, seconds: float, connections: int) -> dict:
    for url, _ in miners.values():
        await ex.fresh(url)  # a session with each
    out: dict[tuple[str, bool], list[dict]] = {}
    try:
        for _ in range(pairs):
            for name, (url, pid) in miners.items():
                for flood in (False, True):
                    out.setdefault((name, flood), []).append(await phase(url, pid, ex, flood=flood, seconds=seconds, connections=connections))
                    await asyncio.sleep(2.5)  # the forger's address bucket refills between phases as it would
    finally:
        await ex.aclose()
    return {k: {f: statistics.median(r[f] for r in rs) for f in rs[0]} for k, rs in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--connections", type=int, default=8)
    args = ap.parse_args()
    one.tune_allocator_as_neurons_do()
    with one.bench_dir() as (_, key, wallet), one.serving(["shipped", "unlimited-auth"], key) as miners:
        got = run_async(drive(miners, one.Exchanges(wallet, key), args.pairs, args.seconds, args.connections))
    print(f"honest verified requests (reused session, one at a time) to a miner, alone and under a flood of forged requests from "
          f"another address ({args.connections} connections); medians of {args.pairs} phases of {args.seconds:g} s:")
    for name, label in (("shipped", "shipped (failed-auth limit)"), ("unlimited-auth", "limit lifted")):
        alone, flooded = got[(name, False)], got[(name, True)]
        print(f"  {label:<28} alone {alone['ms']:6.3f} ms {alone['rate']:6.0f}/s miner {alone['share']:4.2f} core   "
              f"flooded {flooded['ms']:6.3f} ms {flooded['rate']:6.0f}/s miner {flooded['share']:4.2f} core   "
              f"{flooded['ms'] / alone['ms']:5.2f}x the latency   forged: {flooded['401']:6.0f}/s verified, {flooded['429']:6.0f}/s refused unread"
              + (f", {flooded['other']:.0f}/s other" if flooded["other"] else ""))


if __name__ == "__main__":
    main()

"""The miner's CPU per request: its routes on plain Starlette (shipped) against FastAPI and the bare ASGI interface, one run.

    .venv/bin/python bench/bench_miner_http.py [--rounds 15] [--per-round 50]

Starts three miner servers (``_one_miner``): ``miner.server.build_app`` as shipped (plain Starlette),
the very same route functions registered on FastAPI (``add_api_route``: what the miner ran before),
and the routes on the bare ASGI interface with no framework (``_asgi_miner``: the leanest handler
uvicorn can run, as complete as the shipped one). One validator-side client (btauth/1-signed, ``SignedClient``) sends both the same requests,
interleaved: a bare round trip (unsigned ``GET /health``), a fresh attestation then a sealed tensor
request (two round trips), and a request on a reused session. Each server's CPU comes from ``/proc/<pid>/schedstat`` (the kernel's counter),
so the figures are per request of that process alone; medians of ``--rounds`` interleaved rounds (the
servers' order turns each round), and each ratio the median of the rounds' own ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _one_miner as one  # noqa: E402

from omron_tee.config import run_async  # noqa: E402


async def drive(urls: dict[str, str], pids: dict[str, int], rounds: int, per_round: int, ex: one.Exchanges) -> dict[str, dict[str, list[float]]]:
    """Per server and mode, µs of its CPU per request in each round (the servers' order turns each round)."""
    for url in urls.values():
        await ex.fresh(url)  # warm up: connections, sessions
    out: dict[str, dict[str, list[float]]] = {name: {"bare": [], "fresh": [], "reused": []} for name in urls}
    names = list(urls)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            url = urls[name]
            for mode, fn in (("bare", ex.bare), ("fresh", ex.fresh), ("reused", ex.reused)):
                before = one.cpu_ns(pids[name])
                for _ in range(per_round):
                    await fn(url)
                out[name][mode].append((one.cpu_ns(pids[name]) - before) / per_round / 1000)
    await ex.aclose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--per-round", type=int, default=50)
    args = ap.parse_args()
    with one.bench_dir() as (_, key, wallet), one.serving(["shipped", "fastapi", "asgi"], key) as miners:
        urls = {name: url for name, (url, _) in miners.items()}
        pids = {name: pid for name, (_, pid) in miners.items()}
        got = run_async(drive(urls, pids, args.rounds, args.per_round, one.Exchanges(wallet, key)))
    print(f"miner CPU per request (µs, median of {args.rounds} interleaved rounds of {args.per_round}):")
    for mode, label in (("bare", "bare round trip (GET /health)"), ("fresh", "fresh attestation + request (2 trips)"),
                        ("reused", "request on a reused session")):
        a, b, c = (statistics.median(got[n][mode]) for n in ("shipped", "fastapi", "asgi"))
        # The ratio is the median of each round's own ratio: a slow moment slows all three servers of a round.
        rb, rc = (statistics.median(x / y for x, y in zip(got[n][mode], got["shipped"][mode])) for n in ("fastapi", "asgi"))
        print(f"  {label:<40} Starlette (shipped) {a:7.0f}   FastAPI {b:7.0f} ({rb:.2f}x)   bare ASGI {c:7.0f} ({rc:.2f}x)")


if __name__ == "__main__":
    main()

"""The validator's wire, side by side in one run: verified requests beside a bare HTTP round trip, and one
TLS context for every peer's pool against one each.

    .venv/bin/python bench/bench_wire.py [--rounds 20] [--per-round 50] [--peers 128]

One miner server (``_one_miner``: simulated enclave, shipped Starlette routes) in its own process;
in this process the validator's ``SignedClient``, interleaved: a bare round trip (an unsigned
``GET /health`` through the same client stack), a verified request on a reused session (one
round trip), the same with its proof of freshness in band (one round trip), and a fresh
attestation plus request (two). Medians of wall time per request, this process's CPU per
request (``time.process_time``) and the miner's (``/proc/<pid>/schedstat``). Then the CPU
cost of building ``--peers`` per-peer pools with one shared TLS context against one each
(OpenSSL's own memory is out of Python's sight, so no memory figure is printed).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

import _one_miner as one  # noqa: E402

from omron_tee.config import create_wallet, run_async  # noqa: E402


async def drive(url: str, pid: int, ex: one.Exchanges, rounds: int, per_round: int) -> dict:
    await ex.fresh(url)  # warm up: the connection, the session
    modes = (("bare", ex.bare), ("reused", ex.reused), ("in_band", ex.in_band), ("fresh", ex.fresh))
    got = await one.measure(url, pid, modes, rounds, per_round)
    await ex.aclose()
    return got


def tls_cost(peers: int) -> dict[str, float]:
    """ms of CPU per per-peer pool, built with the shared TLS context and with one of its own each."""
    from omron_tee.wire.client import shared_tls_context

    out = {}
    for name, verify in (("shared context", shared_tls_context), ("a context each", lambda: True)):
        t = time.process_time()
        clients = [httpx.AsyncClient(verify=verify(), trust_env=False) for _ in range(peers)]
        out[name] = (time.process_time() - t) * 1000 / peers
        del clients
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--per-round", type=int, default=50)
    ap.add_argument("--peers", type=int, default=128)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        key = str(Path(d) / "dev.key")
        wallet = create_wallet("bench", "default", Path(d) / "wallets")
        proc, url = one.start("starlette", key)
        try:
            got = run_async(drive(url, proc.pid, one.Exchanges(wallet, key), args.rounds, args.per_round))
        finally:
            one.stop([proc])
    tls = tls_cost(args.peers)
    bare = got["bare"]
    print(f"loopback HTTP to one miner, medians of {args.rounds} interleaved rounds of {args.per_round}, ms per request "
          "(wall; this validator process's CPU; the miner's CPU):")
    for mode, label in (("bare", "bare round trip (GET /health)"), ("reused", "verified request, reused session"),
                        ("in_band", "verified, fresh in band (1 trip)"), ("fresh", "fresh attestation + request (2 trips)")):
        r = got[mode]
        print(f"  {label:<40} {r['wall']:6.3f} wall {r['cpu']:6.3f} validator {r['miner']:6.3f} miner   {r['wall'] / bare['wall']:5.2f}x the bare trip")
    print(f"{args.peers} per-peer pools: " + "; ".join(f"{k} {ms:.2f} ms CPU per peer" for k, ms in tls.items()))


if __name__ == "__main__":
    main()

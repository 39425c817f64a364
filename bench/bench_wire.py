"""The validator's wire, side by side in one run: verified requests beside a bare HTTP round trip, and one
TLS context for every peer's pool against one each.

    .venv/bin/python bench/bench_wire.py [--rounds 20] [--per-round 50] [--peers 128]

One miner server (``_one_miner``: simulated enclave, shipped Starlette routes) in its own process;
in this process the validator's ``SignedClient``, interleaved: a bare round trip (an unsigned
``GET /health`` through the same client stack), a verified request on a reused session (one
round trip), the same with its proof of freshness in band (one round trip), and a fresh
attestation plus request (two). Medians of wall time per request, this process's CPU per
request (``time.process_time``) and the miner's (``/proc/<pid>/schedstat``).

The client library, side by side in the same rounds: the bare round trip and a signed
``/attest`` (a fresh nonce each, btauth/1 as shipped) through ``SignedClient`` (aiohttp) and
through httpx's ``AsyncClient``, configured as ``SignedClient`` was before it moved to aiohttp
(identity encoding, no proxies, keep-alive). Then the CPU cost of a TLS context for each of
``--peers`` peers against the one shared context (OpenSSL's own memory is out of Python's
sight, so no memory figure is printed).
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


def attest_body() -> bytes:
    from omron_tee.channel.hpke import KemSuite
    from omron_tee.exchange.requester import new_nonce
    from omron_tee.protocol import AttestRequest, dumps

    return dumps(AttestRequest(new_nonce(), KemSuite.X25519.value, one.HOTKEY).to_json())


async def drive(url: str, pid: int, ex: one.Exchanges, rounds: int, per_round: int) -> dict:
    await ex.fresh(url)  # warm up: the connection, the session
    signer = ex.client.signer
    hx = httpx.AsyncClient(trust_env=False, headers={"Accept-Encoding": "identity"},
                           limits=httpx.Limits(max_connections=8, max_keepalive_connections=8, keepalive_expiry=4.0))

    async def attest_aiohttp(u: str) -> None:
        body = attest_body()
        async with ex.client.stream(u, "/attest", None, receiver=one.HOTKEY, body=body) as s:
            await s.read()

    async def bare_httpx(u: str) -> None:
        (await hx.get(u + "/health")).raise_for_status()

    async def attest_httpx(u: str) -> None:
        body = attest_body()
        headers = signer.headers("POST", "/attest", body, one.HOTKEY)
        headers["Content-Type"] = "application/json"
        (await hx.post(u + "/attest", content=body, headers=headers)).raise_for_status()

    modes = (("bare", ex.bare), ("reused", ex.reused), ("in_band", ex.in_band), ("fresh", ex.fresh),
             ("bare_httpx", bare_httpx), ("attest", attest_aiohttp), ("attest_httpx", attest_httpx))
    for _, fn in modes:
        await fn(url)
    try:
        return await one.measure(url, pid, modes, rounds, per_round)
    finally:
        await ex.aclose()
        await hx.aclose()


def tls_cost(peers: int) -> dict[str, float]:
    """ms of CPU per peer: a TLS context built for each (what a client per peer does by default) against the shared one."""
    import ssl

    from omron_tee.wire.client import shared_tls_context

    out = {}
    for name, make in (("shared context", shared_tls_context), ("a context each", ssl.create_default_context)):
        t = time.process_time()
        contexts = [make() for _ in range(peers)]
        out[name] = (time.process_time() - t) * 1000 / peers
        del contexts
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
    print("the client library, same rounds (validator CPU, ms per request; httpx / aiohttp):")
    for a, h, label in (("bare", "bare_httpx", "bare round trip (GET /health)"), ("attest", "attest_httpx", "signed POST /attest")):
        ra, rh = got[a], got[h]
        print(f"  {label:<40} aiohttp {ra['wall']:6.3f} wall {ra['cpu']:6.3f} CPU   httpx {rh['wall']:6.3f} wall {rh['cpu']:6.3f} CPU   "
              f"{rh['cpu'] / ra['cpu']:5.2f}x the CPU, {rh['wall'] / ra['wall']:5.2f}x the wall")
    print(f"{args.peers} peers: " + "; ".join(f"{k} {ms:.2f} ms CPU per peer" for k, ms in tls.items()))


if __name__ == "__main__":
    main()

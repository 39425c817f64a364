"""A flood of requests from one process, for the benches that measure what one costs (``bench_api_flood``,
``bench_forged``): as fast as ``--connections`` keep-alive connections allow, for ``--seconds``; prints the
answers' counts by status as JSON.

    python bench/_flooder.py URL --connections 16 --seconds 5 [--from 127.0.0.2] [--forge-for RECEIVER --hotkey HOTKEY]

``--forge-for``: ``POST`` a 1 KiB body with btauth/1 headers claiming ``--hotkey`` for ``RECEIVER`` and a
well-formed but false sr25519 signature (schnorrkel's marker bit set, so it is verified in full rather than
refused on its form); otherwise ``GET``. ``--from``: the local address to send from.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import time

import aiohttp


async def flood(url: str, connections: int, seconds: float, local: str | None, forge_for: str | None, hotkey: str) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    end = time.monotonic() + seconds
    body, sig = b"\x00" * 1024, (bytes(63) + b"\x80").hex()
    connector = aiohttp.TCPConnector(limit=connections, local_addr=(local, 0) if local else None)
    async with aiohttp.ClientSession(connector=connector) as s:

        def request():
            if forge_for is None:
                return s.get(url)
            headers = {"Content-Type": "application/octet-stream", "X-Bittensor-Version": "1", "X-Bittensor-Hotkey": hotkey,
                       "X-Bittensor-Nonce": str(time.time_ns()), "X-Bittensor-Receiver": forge_for, "X-Bittensor-Signature": "0x" + sig}
            return s.post(url, data=body, headers=headers)

        async def one() -> None:
            while time.monotonic() < end:
                try:
                    async with request() as r:
                        await r.read()
                        counts[str(r.status)] += 1
                except aiohttp.ClientError:
                    counts["error"] += 1

        await asyncio.gather(*(one() for _ in range(connections)))
    return dict(counts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("url")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--from", dest="local", default=None)
    ap.add_argument("--forge-for", default=None)
    ap.add_argument("--hotkey", default="")
    a = ap.parse_args()
    print(json.dumps(asyncio.run(flood(a.url, a.connections, a.seconds, a.local, a.forge_for, a.hotkey))))


if __name__ == "__main__":
    main()

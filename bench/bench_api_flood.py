"""Honest probing while the validator's API is flooded, with and without its address limits, side by side in one run.

    .venv/bin/python bench/bench_api_flood.py [--honest 4] [--seconds 5] [--pairs 2] [--path /v1/dashboard] [--connections 16]

One local network of honest miner processes (``omron_tee.devnet.network``, no hostile ones) and an
in-process validator probing continuously (one lane per miner, as fast as it can: ``interval`` 0)
with its third-party API served in the same event loop, as the neuron runs them. A flooder process
sends ``GET --path`` from one address as fast as ``--connections`` keep-alive connections allow
(aiohttp). Four phases, ``--pairs`` times in turn: no flood; the flood aimed at another process (a
bare uvicorn app that refuses everything with 429: what the flood costs this machine's CPUs without
touching the validator); the flood against the shipped limits (``AddressQuota``'s defaults, what
``--validator.api_address_rate`` and ``--validator.api_public_rate`` default to); the same flood with
the limits lifted. Per phase: the honest miners' verified probes per second and their median latency
(what scores compare), the validator's share of a core, and the flooder's answers per second by
status (200 served, 429 refused). On a machine with few cores the flooder and the miners compete
for them as well: the second phase shows how much of the loss that is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omron_tee.devnet import network  # noqa: E402
from omron_tee.devnet.processes import free_port, wait_serving  # noqa: E402
from omron_tee.validator.api.quota import AddressQuota  # noqa: E402
from omron_tee.validator.core import ProbeEvent  # noqa: E402

FLOODER = Path(__file__).resolve().parent / "_flooder.py"

_ELSEWHERE = r"""
import sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    health = scope["path"] == "/health"
    body = b'{"ok":true}' if health else b'{"error":{"reason":"rate-limited","message":"elsewhere"}}'
    await send({"type": "http.response.start", "status": 200 if health else 429, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False, lifespan="off")
"""

LIFTED = AddressQuota(rate=1e9, burst=1e9, public_rate=1e9, public_burst=1e9)


async def phase(net: network.HostileNet, scores: Path, *, flood: str | None, seconds: float, path: str, connections: int) -> dict:
    from omron_tee.validator.api.routes import build_api
    from omron_tee.wire.auth import Admission, RequestVerifier
    from omron_tee.wire.server import QuietServer, server_config

    v = net.validator(scores, timeout=1.0)
    v.sync()
    events: list[ProbeEvent] = []
    v.on_event = lambda ev: events.append(ev) if isinstance(ev, ProbeEvent) else None
    port = free_port()
    api = build_api(v, RequestVerifier(v.hotkey, Admission.anyone()), addresses=LIFTED if flood == "lifted" else AddressQuota())
    server = QuietServer(server_config(api, host="127.0.0.1", port=port, max_concurrency=512))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    flooder = elsewhere = None
    target = port
    if flood == "elsewhere":
        target = free_port()
        elsewhere = subprocess.Popen([sys.executable, "-c", _ELSEWHERE, str(target)])
        wait_serving({"elsewhere": target}, {"elsewhere": elsewhere}, timeout=30, tail=lambda name: "")
    if flood:
        flooder = subprocess.Popen([sys.executable, str(FLOODER), f"http://127.0.0.1:{target}{path}", "--connections", str(connections), "--seconds", str(seconds)],
                                   stdout=subprocess.PIPE, text=True)
    stop = asyncio.Event()
    cpu0, t0 = time.process_time(), time.monotonic()
    lanes = asyncio.create_task(v.probe_continuously(stop, interval=0.0))
    await asyncio.sleep(seconds)
    stop.set()
    await lanes
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    counts = {}
    if flooder is not None:
        out, _ = await asyncio.to_thread(flooder.communicate)
        counts = json.loads(out or "{}")
    if elsewhere is not None:
        elsewhere.terminate()
        elsewhere.wait(timeout=10)
    server.should_exit = True
    await serving
    await v.prober.client.aclose()
    v.scores.close()
    ok = [e.result.outcome for e in events if e.result.outcome.ok]
    return {"rate": len(ok) / wall, "latency_ms": 1000 * statistics.median(o.latency_s for o in ok) if ok else float("nan"),
            "failed": sum(1 for e in events if not e.result.outcome.ok), "cpu_share": cpu / wall,
            "served": counts.get("200", 0) / seconds, "refused": counts.get("429", 0) / seconds,
            "other": sum(n for k, n in counts.items() if k not in ("200", "429")) / seconds}


async def run(args: argparse.Namespace) -> int:
    d = Path(tempfile.mkdtemp(prefix="omron-bench-flood-"))
    print(f"starting {args.honest} honest miners in {d} ...", flush=True)
    net = network.start(d, honest=args.honest, hostile={})
    labels = {None: "no flood", "elsewhere": "flood aimed at another process", "limited": f"flood of GET {args.path}, shipped limits", "lifted": f"flood of GET {args.path}, no limits"}
    got: dict[str | None, list[dict]] = {k: [] for k in labels}
    try:
        for i in range(args.pairs):
            for flood in labels:
                r = await phase(net, d / f"scores-{i}-{flood}.sqlite", flood=flood, seconds=args.seconds, path=args.path,
                                connections=args.connections)
                got[flood].append(r)
                print(f"  {labels[flood]:<46} honest {r['rate']:6.1f} verified/s, median latency {r['latency_ms']:6.2f} ms, "
                      f"{r['failed']} failed; validator {100 * r['cpu_share']:3.0f}% of a core; flooder served {r['served']:7.1f}/s, "
                      f"refused {r['refused']:7.1f}/s, other {r['other']:5.1f}/s", flush=True)
    finally:
        net.stop()
    base = statistics.mean(r["rate"] for r in got[None])
    base_lat = statistics.median(r["latency_ms"] for r in got[None])
    print(f"means over {args.pairs} round(s), beside no flood ({base:.1f} verified/s, median latency {base_lat:.2f} ms):")
    for flood in ("elsewhere", "limited", "lifted"):
        rate = statistics.mean(r["rate"] for r in got[flood])
        lat = statistics.median(r["latency_ms"] for r in got[flood])
        served = statistics.mean(r["served"] for r in got[flood])
        print(f"  {labels[flood]:<46} probes {100 * rate / base:5.1f} % of the rate, latency {lat / base_lat:4.2f}x; flood served {served:.1f}/s")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--honest", type=int, default=4)
    p.add_argument("--seconds", type=float, default=5.0, help="length of one phase")
    p.add_argument("--pairs", type=int, default=2, help="how many rounds of the three phases")
    p.add_argument("--path", default="/v1/dashboard", help="the unsigned route the flooder asks for")
    p.add_argument("--connections", type=int, default=16, help="the flooder's keep-alive connections")
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())

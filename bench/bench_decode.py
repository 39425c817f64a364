"""What a peer's JSON body costs to decode with its bounds (``untrusted.loads``), beside the bare decoder, one run.

    .venv/bin/python bench/bench_decode.py [--mib 1] [--rounds 9]

Bodies of ``--mib`` MiB as a hostile or an ordinary peer would send them on the validator's one
event loop: evidence-like (one long base64 string), a string of escapes, escapes with commas
(which forces the pass outside string literals), many small arrays, many empty strings and many
keys (each past the attestation reply's element bound: refused on its bytes), deep nesting and
random bytes. For each, the CPU of
``untrusted.loads`` with the attestation reply's bounds (``exchange.transport``) beside
``json.loads`` alone on the same bytes (which, for deep bodies, is what a crash looks like:
RecursionError), medians of ``--rounds``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omron_tee import untrusted  # noqa: E402
from omron_tee.errors import ProtocolError  # noqa: E402
from omron_tee.exchange.transport import MAX_ATTEST_REPLY_ITEMS  # noqa: E402


def bodies(n: int) -> dict[str, bytes]:
    return {
        "one long base64 string": json.dumps({"a": base64.b64encode(os.urandom(n * 3 // 4 - 100)).decode()}).encode(),
        "a string of escapes": b'{"a":"' + b"\\n" * (n // 2 - 8) + b'"}',
        "escapes with commas": b'{"a":"' + b"\\n," * (n // 3 - 8) + b'"}',
        "many small arrays": b"[" + b"[0]," * (n // 4 - 2) + b"[0]]",
        "many empty strings": b"[" + b'"",' * (n // 3 - 2) + b'""]',
        "many keys": b"{" + b'"a":1,' * (n // 6 - 2) + b'"b":1}',
        "deep nesting": b"[" * (n // 2) + b"]" * (n // 2),
        "random bytes": os.urandom(n),
    }


def cpu_ms(fn, body: bytes) -> tuple[float, str]:
    t = time.process_time()
    try:
        fn(body)
        outcome = "decoded"
    except ProtocolError as e:
        outcome = f"refused: {e.reason}"
    except RecursionError:
        outcome = "RecursionError"
    except ValueError:
        outcome = "not JSON"
    return (time.process_time() - t) * 1000, outcome


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    bounded = lambda b: untrusted.loads(b, "reply", max_items=MAX_ATTEST_REPLY_ITEMS)  # noqa: E731
    got: dict[str, dict[str, list[float]]] = {}
    outcomes: dict[tuple[str, str], str] = {}
    for _ in range(args.rounds):
        for name, body in bodies(int(args.mib * 1024 * 1024)).items():
            for how, fn in (("bounded", bounded), ("json.loads", json.loads)):
                ms, outcome = cpu_ms(fn, body)
                got.setdefault(name, {}).setdefault(how, []).append(ms)
                outcomes[name, how] = outcome
    print(f"a {args.mib:g} MiB body, median CPU of {args.rounds} rounds (untrusted.loads with the attestation reply's bounds; json.loads alone):")
    for name, d in got.items():
        b, j = statistics.median(d["bounded"]), statistics.median(d["json.loads"])
        print(f"  {name:<24} bounded {b:7.1f} ms ({outcomes[name, 'bounded']:<20}) json.loads {j:7.1f} ms ({outcomes[name, 'json.loads']})")


if __name__ == "__main__":
    main()

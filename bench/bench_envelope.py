"""The JSON envelope's codec: the standard library (shipped) against orjson and msgpack, one run.

    .venv/bin/pip install -e '.[bench]'      # orjson and msgpack, for this bench only
    .venv/bin/python bench/bench_envelope.py [--rounds 15] [--per-round 2000]

What the wire carries as JSON on every fresh attestation: the validator's ``AttestRequest`` and the
enclave's ``AttestResponse`` (evidence, keys, models), built here by the shipped code on the simulated
backend. Each codec encodes what one side sends and decodes it, bounded as every peer's bytes are
(the JSON codecs by ``untrusted``'s size, depth and element bounds on the bytes; msgpack, which is not
JSON text, by its own per-container limits); msgpack carries the byte fields raw (no base64), the
JSON codecs as the protocol writes them. CPU from ``time.process_time``, medians of interleaved rounds,
printed beside a bare HTTP round trip to a miner measured in the same run (``bench_wire``'s first row),
so the saving can be read as a share of what a request costs anyway.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _one_miner as one  # noqa: E402

from omron_tee import untrusted  # noqa: E402
from omron_tee.config import run_async  # noqa: E402
from omron_tee.protocol import dumps, loads  # noqa: E402


def envelopes(key: str) -> dict[str, Any]:
    """A real attest request and response, as the shipped code writes them (JSON-able dicts)."""
    from omron_tee.channel.hpke import KemSuite
    from omron_tee.exchange.requester import new_nonce
    from omron_tee.models.registry import ModelRegistry
    from omron_tee.protocol import AttestRequest

    core = one.in_process_enclave(key, ModelRegistry.builtin())
    req = AttestRequest(new_nonce(), KemSuite.X25519.value, one.HOTKEY)
    return {"attest request": req.to_json(), "attest response": core.attest(req).to_json()}


def raw_bytes(obj: Any) -> Any:
    """``obj`` with its base64 strings as bytes: what msgpack would carry (a binary type, no base64)."""
    if isinstance(obj, dict):
        return {k: raw_bytes(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [raw_bytes(v) for v in obj]
    if isinstance(obj, str) and len(obj) >= 16:
        try:
            return base64.b64decode(obj, validate=True)
        except ValueError:
            return obj
    return obj


def codecs() -> dict[str, tuple[Any, Any, bool]]:
    """name -> (encode, bounded decode, carries bytes raw); orjson and msgpack only where installed."""
    out: dict[str, tuple[Any, Any, bool]] = {"json (stdlib, shipped)": (dumps, lambda b: loads(b, "bench"), False)}
    try:
        import orjson

        def orjson_loads(b: bytes) -> Any:
            if len(b) > untrusted.MAX_JSON_BYTES:
                raise ValueError("too large")
            untrusted.check_structure(b, "bench")  # the same bounds on the bytes as the shipped decoder
            return orjson.loads(b)

        out["orjson"] = (orjson.dumps, orjson_loads, False)
    except ImportError:
        print("orjson not installed: .venv/bin/pip install -e '.[bench]'")
    try:
        import msgpack

        def msgpack_loads(b: bytes) -> Any:
            if len(b) > untrusted.MAX_JSON_BYTES:
                raise ValueError("too large")
            # Not JSON text, so bounded by msgpack's own per-container and per-value limits instead.
            limit = untrusted.MAX_JSON_ITEMS
            return msgpack.unpackb(b, raw=False, max_array_len=limit, max_map_len=limit, max_bin_len=len(b), max_str_len=len(b))

        out["msgpack (bytes raw)"] = (msgpack.packb, msgpack_loads, True)
    except ImportError:
        print("msgpack not installed: .venv/bin/pip install -e '.[bench]'")
    return out


def per_op_us(fn: Any, arg: Any, n: int) -> float:
    t0 = time.process_time()
    for _ in range(n):
        fn(arg)
    return (time.process_time() - t0) / n * 1e6


async def bare_round_trip_us(url: str, pid: int, wallet: Any, key: str, rounds: int) -> float:
    ex = one.Exchanges(wallet, key)
    await ex.bare(url)
    try:
        return (await one.measure(url, pid, (("bare", ex.bare),), rounds, 50))["bare"]["cpu"] * 1000
    finally:
        await ex.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--per-round", type=int, default=2000)
    args = ap.parse_args()
    with one.bench_dir() as (_, key, wallet):
        with one.serving(["shipped"], key) as miners:
            bare = run_async(bare_round_trip_us(*miners["shipped"], wallet, key, args.rounds))
        docs = envelopes(key)
    table = codecs()
    times: dict[tuple[str, str, str], list[float]] = {}
    sizes: dict[tuple[str, str], int] = {}
    for _ in range(args.rounds):
        for name, (enc, dec, raw) in table.items():
            for what, doc in docs.items():
                doc = raw_bytes(doc) if raw else doc
                wire = enc(doc)
                assert dec(wire) == doc, (name, what)  # a codec that does not round-trip measures nothing
                sizes[name, what] = len(wire)
                times.setdefault((name, what, "encode"), []).append(per_op_us(enc, doc, args.per_round))
                times.setdefault((name, what, "decode"), []).append(per_op_us(dec, wire, args.per_round))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"bare HTTP round trip, validator CPU: {bare:.0f} µs (same run)")
    print(f"envelope codec CPU (µs, median of {args.rounds} interleaved rounds of {args.per_round}):")
    base = "json (stdlib, shipped)"
    for name in table:
        total = sum(med[name, w, op] for w in docs for op in ("encode", "decode"))
        ref = sum(med[base, w, op] for w in docs for op in ("encode", "decode"))
        parts = "  ".join(f"{w} {sizes[name, w]:5d} B enc {med[name, w, 'encode']:5.1f} dec {med[name, w, 'decode']:5.1f}" for w in docs)
        print(f"  {name:<24} {parts}   all {total:5.1f} µs ({total / ref:.2f}× shipped; {(ref - total) / bare * 100:+.1f} % of a bare round trip saved)")


if __name__ == "__main__":
    main()

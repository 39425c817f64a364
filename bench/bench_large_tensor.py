"""A 1 MiB tensor on the wire: bytes and CPU to seal and open it, power-of-two buckets against Padmé, in one run.

    .venv/bin/python bench/bench_large_tensor.py [--mib 1] [--rounds 20]

Seals a float32 tensor of ``--mib`` MiB as the requester does (the tensor workload's JSON
encoding inside the sealed request, HPKE to an enclave key, the InferRequest's JSON) and
opens it as the enclave does, with the shipped padding (``channel.hpke.bucket_size``: powers
of two up to 64 KiB, Padmé above) and with powers of two all the way (the padding before it),
side by side; prints the bytes on the wire and the median CPU time of each, and their ratio.
The tensor still travels as base64 inside JSON, twice (the binary frames of issue 13 are not built).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omron_tee.channel import hpke  # noqa: E402
from omron_tee.channel.hpke import HpkeKeyPair, KemSuite, key_id, request_info, seal  # noqa: E402
from omron_tee.protocol import InferRequest, SealedRequest, dumps  # noqa: E402
from omron_tee.workloads.tensor import Tensor  # noqa: E402


def power_of_two(n: int, floor: int = 1024) -> int:
    size = floor
    while size < n + 4:
        size *= 2
    return size


def once(x: np.ndarray, enclave: HpkeKeyPair, reply: HpkeKeyPair) -> tuple[int, float, float]:
    kid = key_id(enclave.public_bytes)
    t = time.process_time()
    payload = SealedRequest(b"\1" * 32, "big", "tensor", Tensor.from_array(x).to_json(), KemSuite.X25519.value, reply.public_bytes, b"\2" * 32)
    wire = dumps(InferRequest(kid, seal(KemSuite.X25519, enclave.public_bytes, payload.encode(), request_info(kid))).to_json())
    sealed_s = time.process_time() - t
    t = time.process_time()
    req = InferRequest.from_json(__import__("json").loads(wire))
    plain = enclave.open(req.sealed, request_info(kid))
    opened_s = time.process_time() - t
    assert len(plain) > x.nbytes
    return len(wire), sealed_s, opened_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    x = np.random.default_rng(0).standard_normal(int(args.mib * 2**20) // 4).astype(np.float32)
    enclave, reply = HpkeKeyPair.generate(KemSuite.X25519), HpkeKeyPair.generate(KemSuite.X25519)
    shipped = hpke.bucket_size
    results: dict[str, list[tuple[int, float, float]]] = {"padme": [], "pow2": []}
    for _ in range(args.rounds):  # interleaved
        for name, fn in (("padme", shipped), ("pow2", power_of_two)):
            hpke.bucket_size = fn
            try:
                results[name].append(once(x, enclave, reply))
            finally:
                hpke.bucket_size = shipped
    print(f"a {x.nbytes / 2**20:.2f} MiB float32 tensor, {args.rounds} interleaved rounds, median CPU:")
    for name, label in (("pow2", "powers of two (before)"), ("padme", "Padmé above 64 KiB (shipped)")):
        rs = results[name]
        wire = rs[0][0]
        print(f"  {label:<30} {wire / 2**20:6.2f} MiB on the wire ({wire / x.nbytes:4.2f}x the tensor); "
              f"seal + encode {statistics.median(r[1] for r in rs) * 1000:6.1f} ms, decode + open {statistics.median(r[2] for r in rs) * 1000:6.1f} ms")
    print(f"  wire bytes, Padmé / powers of two: {results['padme'][0][0] / results['pow2'][0][0]:.2f}")


if __name__ == "__main__":
    main()

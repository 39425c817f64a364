"""A 1 MiB tensor on the wire: bytes and CPU to seal and open it, as before and as shipped, in one run.

    .venv/bin/python bench/bench_large_tensor.py [--mib 1] [--rounds 20]

Seals a float32 tensor of ``--mib`` MiB as the requester does (the tensor workload's JSON
encoding inside the sealed request, HPKE to an enclave key, then the InferRequest) and opens it
as the enclave does, four ways side by side: as before (padding by powers of two, the
InferRequest as JSON with the ciphertext in base64, the tensor in base64 inside the seal), then
with Padmé padding above 64 KiB, then with the InferRequest as a binary frame
(``protocol.REQUEST_MEDIA_TYPE``), then as shipped, with the tensor's bytes as an attachment inside
the seal (``protocol.encode_sealed``); prints the bytes on the wire and the median CPU of each,
opening included (the tensor decoded as the enclave does).
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
from omron_tee.protocol import InferRequest, SealedRequest, decode_sealed, dumps  # noqa: E402
from omron_tee.workloads.tensor import Tensor  # noqa: E402


def power_of_two(n: int, floor: int = 1024) -> int:
    size = floor
    while size < n + 4:
        size *= 2
    return size


def once(x: np.ndarray, enclave: HpkeKeyPair, reply: HpkeKeyPair, binary: bool, attached: bool) -> tuple[int, float, float]:
    kid = key_id(enclave.public_bytes)
    t = time.process_time()
    t_ = Tensor.from_array(x)
    payload = SealedRequest(b"\1" * 32, "big", "tensor", t_.to_wire() if attached else t_.to_json(), KemSuite.X25519.value, reply.public_bytes, b"\2" * 32)
    request = InferRequest(kid, seal(KemSuite.X25519, enclave.public_bytes, payload.encode(), request_info(kid)))
    wire = request.to_bytes() if binary else dumps(request.to_json())
    sealed_s = time.process_time() - t
    t = time.process_time()
    req = InferRequest.from_bytes(wire) if binary else InferRequest.from_json(__import__("json").loads(wire))
    plain = enclave.open(req.sealed, request_info(kid))
    Tensor.from_json(decode_sealed(plain, "sealed request")["input"])
    opened_s = time.process_time() - t
    assert len(plain) >= x.nbytes
    return len(wire), sealed_s, opened_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    x = np.random.default_rng(0).standard_normal(int(args.mib * 2**20) // 4).astype(np.float32)
    enclave, reply = HpkeKeyPair.generate(KemSuite.X25519), HpkeKeyPair.generate(KemSuite.X25519)
    shipped = hpke.bucket_size
    variants = (("before: pow2, JSON, base64", power_of_two, False, False), ("Padmé, JSON, base64", shipped, False, False),
                ("Padmé, binary frame, base64", shipped, True, False), ("shipped: + attachment", shipped, True, True))
    results: dict[str, list[tuple[int, float, float]]] = {name: [] for name, *_ in variants}
    for _ in range(args.rounds):  # interleaved
        for name, fn, binary, attached in variants:
            hpke.bucket_size = fn
            try:
                results[name].append(once(x, enclave, reply, binary, attached))
            finally:
                hpke.bucket_size = shipped
    print(f"a {x.nbytes / 2**20:.2f} MiB float32 tensor, {args.rounds} interleaved rounds, median CPU:")
    for name, *_ in variants:
        rs = results[name]
        wire = rs[0][0]
        print(f"  {name:<30} {wire / 2**20:6.2f} MiB on the wire ({wire / x.nbytes:4.2f}x the tensor); "
              f"seal + encode {statistics.median(r[1] for r in rs) * 1000:6.1f} ms, decode + open {statistics.median(r[2] for r in rs) * 1000:6.1f} ms")
    first, last = results[variants[0][0]][0][0], results[variants[-1][0]][0][0]
    print(f"  wire bytes, shipped / before: {last / first:.2f}")


if __name__ == "__main__":
    main()

"""A 1 MiB tensor on the wire: bytes and CPU to seal and open it, as before and as shipped, in one run.

    .venv/bin/python bench/bench_large_tensor.py [--mib 1] [--rounds 20] [--default-allocator]

Seals a float32 tensor of ``--mib`` MiB as the requester does (the tensor workload's JSON
encoding inside the sealed request, HPKE to an enclave key, then the InferRequest) and opens it
as the enclave does, four ways side by side: as before (padding by powers of two, the
InferRequest as JSON with the ciphertext in base64, the tensor in base64 inside the seal), then
with Padmé padding above 64 KiB, then with the InferRequest as a binary frame
(``protocol.REQUEST_MEDIA_TYPE``), then as shipped, with the tensor's bytes as an attachment inside
the seal (``protocol.encode_sealed``); prints the bytes on the wire and the median CPU of each,
opening included (the tensor decoded as the enclave does). Then the AEAD alone over the tensor,
the two candidates side by side (ChaCha20-Poly1305, and AES-256-GCM, which ``channel`` uses), as HPKE
seals and opens it and as the answer stream seals a chunk.

Then the same tensor end to end: a model whose input and output are ``--mib`` MiB each (an ONNX
``Mul`` by 2, built here) served by one miner process (``_one_miner``: simulated enclave, shipped
routes), asked by the validator's ``SignedClient`` over loopback HTTP, interleaved with the raw
onnxruntime call and a bare round trip: the wall time per verified request (the answer opened
and its receipt checked) on a reused session, with freshness in band, and with a fresh
attestation first, beside issue 13's goal (4x the raw call plus 10 ms). Both processes keep freed
large buffers as the neurons do (``config.tune_allocator``); ``--default-allocator`` leaves glibc's
thresholds as they come, for the A/B.
"""

from __future__ import annotations

import argparse
import os
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


def once(x: np.ndarray, enclave: HpkeKeyPair, binary: bool, attached: bool) -> tuple[int, float, float]:
    kid = key_id(enclave.public_bytes)
    t = time.process_time()
    t_ = Tensor.from_array(x)
    payload = SealedRequest(b"\1" * 32, "big", "tensor", t_.to_wire() if attached else t_.to_json(), b"\3" * 32, b"\2" * 32)
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


def aead_rows(data: bytes, rounds: int) -> None:
    """Median CPU of each AEAD over ``data``: HPKE seal and open (X25519, HKDF-SHA256), and one stream chunk's seal."""
    from cryptography.hazmat.primitives import hpke as lib
    from cryptography.hazmat.primitives.asymmetric import x25519
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

    key = x25519.X25519PrivateKey.generate()
    rows = {}
    for name, aead, chunk in (("ChaCha20-Poly1305", lib.AEAD.CHACHA20_POLY1305, ChaCha20Poly1305(os.urandom(32))),
                              ("AES-256-GCM (shipped)", lib.AEAD.AES_256_GCM, AESGCM(os.urandom(32)))):
        suite = lib.Suite(lib.KEM.X25519, lib.KDF.HKDF_SHA256, aead)
        ct = suite.encrypt(data, key.public_key(), info=b"i")
        rows[name] = (suite, ct, chunk, [], [], [])
    for _ in range(rounds):  # interleaved
        for suite, ct, chunk, seal_t, open_t, chunk_t in rows.values():
            t = time.process_time()
            suite.encrypt(data, key.public_key(), info=b"i")
            seal_t.append(time.process_time() - t)
            t = time.process_time()
            suite.decrypt(ct, key, info=b"i")
            open_t.append(time.process_time() - t)
            t = time.process_time()
            chunk.encrypt(bytes(12), data, b"a")
            chunk_t.append(time.process_time() - t)
    print(f"the AEAD over the {len(data) / 2**20:.2f} MiB tensor, median CPU of {rounds} interleaved rounds:")
    for name, (_, _, _, seal_t, open_t, chunk_t) in rows.items():
        print(f"  {name:<24} HPKE seal {statistics.median(seal_t) * 1000:5.2f} ms, open {statistics.median(open_t) * 1000:5.2f} ms; "
              f"stream chunk seal {statistics.median(chunk_t) * 1000:5.2f} ms")


def mul_model(path: Path, n: int) -> None:
    """An ONNX model y = 2x over float32[1, n]: as cheap as a model of that size gets, so what is left is the exchange."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])], "bench-mul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


async def end_to_end(ex, url: str, pid: int, rounds: int, per_round: int) -> dict[str, dict[str, float]]:
    import _one_miner as one

    await ex.fresh(url)  # warm up: the connection, the session
    raw = ex.models.runtime(ex.spec.model_id)

    async def raw_call(_: str) -> None:
        raw.run(ex.x)
    modes = (("raw", raw_call), ("bare", ex.bare), ("reused", ex.reused), ("in_band", ex.in_band), ("fresh", ex.fresh))
    got = await one.measure(url, pid, modes, rounds, per_round)
    await ex.aclose()
    return got


def run_end_to_end(x: np.ndarray, rounds: int) -> None:
    import _one_miner as one
    from omron_tee.config import run_async

    tuned = one.tune_allocator_as_neurons_do()
    with one.bench_dir() as (d, key, wallet):
        model = d / "mul.onnx"
        mul_model(model, x.size)
        with one.serving(["shipped"], key, str(model)) as miners:
            url, pid = miners["shipped"]
            got = run_async(end_to_end(one.Exchanges(wallet, key, str(model), x.reshape(1, -1)), url, pid, rounds, 5))
    goal = 4 * got["raw"]["wall"] + 10
    print(f"end to end, loopback HTTP to one miner, a model of {x.nbytes / 2**20:.2f} MiB in and out, medians of {rounds} "
          f"interleaved rounds, ms per request (wall; this validator process's CPU; the miner's CPU); goal 4x raw + 10 ms = {goal:.2f} ms; "
          f"{'malloc thresholds tuned as the neurons do' if tuned else 'glibc malloc as it comes'}:")
    for mode, label in (("raw", "raw onnxruntime call (in this process)"), ("bare", "bare round trip (GET /health)"),
                        ("reused", "verified request, reused session"), ("in_band", "verified, fresh in band (1 trip)"),
                        ("fresh", "fresh attestation + request (2 trips)")):
        r = got[mode]
        tail = f"   {r['wall'] / goal:4.2f}x the goal" if mode not in ("raw", "bare") else ""
        print(f"  {label:<40} {r['wall']:7.2f} wall {r['cpu']:7.2f} validator {r['miner']:7.2f} miner{tail}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--no-end-to-end", action="store_true", help="only the seal/open comparison")
    ap.add_argument("--default-allocator", action="store_true",
                    help="leave glibc's malloc thresholds as they are, in this process and the miner's (the neurons tune them)")
    args = ap.parse_args()
    if args.default_allocator:
        os.environ["OMRON_TEE_BENCH_DEFAULT_ALLOCATOR"] = "1"
    x = np.random.default_rng(0).standard_normal(int(args.mib * 2**20) // 4).astype(np.float32)
    enclave = HpkeKeyPair.generate(KemSuite.X25519)
    shipped = hpke.bucket_size
    variants = (("before: pow2, JSON, base64", power_of_two, False, False), ("Padmé, JSON, base64", shipped, False, False),
                ("Padmé, binary frame, base64", shipped, True, False), ("shipped: + attachment", shipped, True, True))
    results: dict[str, list[tuple[int, float, float]]] = {name: [] for name, *_ in variants}
    for _ in range(args.rounds):  # interleaved
        for name, fn, binary, attached in variants:
            hpke.bucket_size = fn
            try:
                results[name].append(once(x, enclave, binary, attached))
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
    aead_rows(x.tobytes(), args.rounds)
    if not args.no_end_to_end:
        run_end_to_end(x, args.rounds)


if __name__ == "__main__":
    main()

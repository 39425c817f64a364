"""The validator's wire, side by side in one run: verified requests beside a bare HTTP round trip, and one
TLS context for every peer's pool against one each.

    .venv/bin/python bench/bench_wire.py [--rounds 20] [--per-round 50] [--peers 128] [--batch 8]

One miner server (``_one_miner``: simulated enclave, shipped Starlette routes) in its own process;
in this process the validator's ``SignedClient``, interleaved: a bare round trip (an unsigned
``GET /health`` through the same client stack), a verified request on a reused session (one
round trip), the same with its proof of freshness in band (one round trip), a fresh
attestation plus request (two), and ``--batch`` requests in one signed ``/infer/batch`` on the
session, without and with one evidence for the batch (printed per request). Medians of wall time per request, this process's CPU per
request (``time.process_time``) and the miner's (``/proc/<pid>/schedstat``).

The client library, side by side in the same rounds: the bare round trip and a signed
``/attest`` (a fresh nonce each, btauth/1 as shipped) through ``SignedClient`` (aiohttp) and
through httpx's ``AsyncClient``, configured as ``SignedClient`` was before it moved to aiohttp
(identity encoding, no proxies, keep-alive). Then the CPU cost of a TLS context for each of
``--peers`` peers against the one shared context (OpenSSL's own memory is out of Python's
sight, so no memory figure is printed).

The cryptography floor, same run: the primitives one verified request asks of the validator and
nothing else (``crypto_floor``), on the sizes of a real request and answer captured from the miner
in this run: the btauth/1 signature (sha-256 of the body, sr25519), the HPKE seal of the request,
the stream key's derivation from the reply secret (HKDF-SHA256), the AES-256-GCM open of each
chunk, the receipt's Ed25519 signature and the input's and output's sha-256; in band and fresh, also
the evidence's signature (simulated evidence: one Ed25519 signature; a hardware quote costs more),
and fresh, the ``/attest`` request's signature. Timed in the same interleaved rounds as the requests,
and printed as the validator's CPU over that floor.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Awaitable, Callable
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

import _one_miner as one  # noqa: E402

from omron_tee.config import run_async  # noqa: E402


def attest_body() -> bytes:
    from omron_tee.channel.hpke import KemSuite
    from omron_tee.exchange.requester import new_nonce
    from omron_tee.protocol import AttestRequest, dumps

    return dumps(AttestRequest(new_nonce(), KemSuite.X25519.value, one.HOTKEY).to_json())


async def drive(url: str, pid: int, ex: one.Exchanges, rounds: int, per_round: int, batch: int) -> dict:
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

    async def batch_reused(u: str) -> None:
        await ex.batch(u, batch, in_band=False)

    async def batch_in_band(u: str) -> None:
        await ex.batch(u, batch, in_band=True)

    modes = (("bare", ex.bare), ("reused", ex.reused), ("in_band", ex.in_band), ("fresh", ex.fresh),
             ("batch_reused", batch_reused), ("batch_in_band", batch_in_band),
             ("bare_httpx", bare_httpx), ("attest", attest_aiohttp), ("attest_httpx", attest_httpx))
    for _, fn in modes:
        await fn(url)

    def timed(ops: Callable[[], None]) -> Callable[[str], Awaitable[None]]:
        async def run(u: str) -> None:
            ops()
        return run

    floors = tuple((f"floor_{m}", timed(ops)) for m, ops in crypto_floor(await capture(url, ex), ex, batch).items())
    no_http, validator_ms = without_http(ex)
    try:
        got = await one.measure(url, pid, modes + floors + (("no_http", no_http),), rounds, per_round)
        got["no_http"]["cpu"] = statistics.median(validator_ms)  # the validator's part alone, not the in-process enclave's
        return got
    finally:
        await ex.aclose()
        await hx.aclose()


def without_http(ex: one.Exchanges) -> tuple[Callable[[str], Awaitable[None]], list[float]]:
    """A request on a session, with the enclave in this process and no HTTP between: the validator's own
    work of sealing and checking (``seal_request``, ``AnswerReader``), its CPU per request collected apart
    from the enclave's into the returned list (ms)."""
    from omron_tee.channel.hpke import KemSuite
    from omron_tee.exchange.requester import check_attestation, new_nonce, seal_request
    from omron_tee.protocol import AttestRequest

    core = one.in_process_enclave(ex.key_path, ex.models)
    nonce = new_nonce()
    session = check_attestation(core.attest(AttestRequest(nonce, KemSuite.X25519.value, one.HOTKEY)), nonce=nonce, hotkey=one.HOTKEY,
                                policy=ex.policy, registry=ex.verifiers)
    spent: list[float] = []

    async def run(u: str) -> None:
        t0 = time.process_time()
        req, reader = seal_request(session, ex.tensor, ex.spec, ex.x)
        t1 = time.process_time()
        answer = await core.answer_whole(core.open(req))
        t2 = time.process_time()
        reader.feed(answer)
        reader.close()
        spent.append((t1 - t0 + time.process_time() - t2) * 1000)

    return run, spent


async def capture(url: str, ex: one.Exchanges) -> dict[str, list[bytes]]:
    """The frames of a real answer, on the reused session and with evidence in band (what the floor opens)."""
    from omron_tee.channel.stream import FrameReader
    from omron_tee.exchange import transport
    from omron_tee.exchange.requester import fresh_check, seal_request

    s = ex.sessions[url]
    out = {}
    for mode, check in (("reused", None), ("in_band", fresh_check(s, hotkey=one.HOTKEY, policy=ex.policy, registry=ex.verifiers))):
        req, _ = seal_request(s, ex.tensor, ex.spec, ex.x, fresh=check)
        async with transport.infer(ex.client, url, req, receiver=one.HOTKEY, timeout=10.0, max_bytes=1 << 24) as body:
            out[mode] = [len(req.sealed), *FrameReader().feed(await body.read())]
    return out


def crypto_floor(frames: dict[str, list], ex: one.Exchanges, batch: int) -> dict[str, Callable[[], None]]:
    """Per mode, the cryptography alone of one request (the module docstring lists it); the batch modes', of
    one batch of ``batch``: one btauth/1 signature, in band one evidence, and each request's own seal and opens."""
    import hashlib
    import os

    from bittensor import http_auth
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from omron_tee.channel.hpke import KemSuite
    from omron_tee.channel.stream import stream_key

    suite = KemSuite.X25519.suite
    signer = ex.client.signer._signer  # the primitive alone, not bittensor's wrapper around it
    enclave = X25519PrivateKey.generate()
    ed = Ed25519PrivateKey.generate()
    ed_pub = ed.public_key()
    receipt_msg = os.urandom(180)
    receipt_sig = ed.sign(receipt_msg)
    evidence_msg = os.urandom(200)
    evidence_sig = ed.sign(evidence_msg)
    tensor = ex.x.tobytes()
    nonce = os.urandom(32)

    def request_ops(sizes: list, *, signed: bool = True) -> Callable[[], None]:
        sealed_len, header, *chunks = sizes
        body = os.urandom(sealed_len + 40)  # the request frame: magic, key id, ciphertext
        plaintext = os.urandom(sealed_len - 48)  # HPKE's X25519 enc (32) and tag (16) come on top
        reply_secret, response_nonce = os.urandom(32), os.urandom(len(header))
        key = os.urandom(32)
        chunk_cts = [AESGCM(key).encrypt(bytes(12), os.urandom(len(c) - 17), b"a") for c in chunks]
        enclave_pub = enclave.public_key()

        def ops() -> None:
            if signed:
                signer.sign(http_auth.build_payload(scheme="sr25519", method="POST", path="/infer", body=body, nonce_ns=1,
                                                    sender_ss58=signer.ss58_address, receiver_ss58=one.HOTKEY))
            suite.encrypt(plaintext, enclave_pub, info=b"i")
            stream_key(reply_secret, response_nonce, nonce)
            aead = AESGCM(key)
            for ct in chunk_cts:
                aead.decrypt(bytes(12), ct, b"a")
            ed_pub.verify(receipt_sig, receipt_msg)
            hashlib.sha256(tensor).digest()
            hashlib.sha256(tensor).digest()
        return ops

    def evidence() -> None:
        ed_pub.verify(evidence_sig, evidence_msg)
        hashlib.sha256(evidence_msg).digest()

    attest_body = os.urandom(165)
    reused, in_band = request_ops(frames["reused"]), request_ops(frames["in_band"])

    def fresh() -> None:
        signer.sign(http_auth.build_payload(scheme="sr25519", method="POST", path="/attest", body=attest_body, nonce_ns=1,
                                            sender_ss58=signer.ss58_address, receiver_ss58=one.HOTKEY))
        evidence()
        reused()

    item = request_ops(frames["reused"], signed=False)  # a batched request's answer carries no evidence of its own
    batch_body = os.urandom((frames["reused"][0] + 40 + 4) * batch)  # each request's frame (as ``body`` above) and its length

    def batch_reused() -> None:
        signer.sign(http_auth.build_payload(scheme="sr25519", method="POST", path="/infer/batch", body=batch_body, nonce_ns=1,
                                            sender_ss58=signer.ss58_address, receiver_ss58=one.HOTKEY))
        for _ in range(batch):
            item()

    return {"reused": reused, "in_band": lambda: (evidence(), in_band()), "fresh": fresh,
            "batch_reused": batch_reused, "batch_in_band": lambda: (evidence(), batch_reused())}


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
    ap.add_argument("--batch", type=int, default=8, help="requests per batch in the batched rows (default: %(default)s)")
    args = ap.parse_args()
    one.tune_allocator_as_neurons_do()
    with one.bench_dir() as (_, key, wallet), one.serving(["shipped"], key) as miners:
        url, pid = miners["shipped"]
        got = run_async(drive(url, pid, one.Exchanges(wallet, key), args.rounds, args.per_round, args.batch))
    tls = tls_cost(args.peers)
    bare = got["bare"]
    print(f"loopback HTTP to one miner, medians of {args.rounds} interleaved rounds of {args.per_round}, ms per request "
          "(wall; this validator process's CPU; the miner's CPU):")
    for mode, label in (("bare", "bare round trip (GET /health)"), ("reused", "verified request, reused session"),
                        ("in_band", "verified, fresh in band (1 trip)"), ("fresh", "fresh attestation + request (2 trips)"),
                        ("batch_reused", f"reused session, batch of {args.batch}, per request"),
                        ("batch_in_band", f"fresh in band, batch of {args.batch}, per request")):
        r, f = got[mode], got.get(f"floor_{mode}", {}).get("cpu")
        if mode.startswith("batch_"):  # measured per batch; printed per request
            r, f = {k: v / args.batch for k, v in r.items()}, f / args.batch
        floor_s = f"   crypto floor {f:5.3f}, validator {r['cpu'] / f:4.2f}x it" if f else ""
        print(f"  {label:<40} {r['wall']:6.3f} wall {r['cpu']:6.3f} validator {r['miner']:6.3f} miner   {r['wall'] / bare['wall']:5.2f}x the bare trip"
              + floor_s)
    nh, fl = got["no_http"]["cpu"], got["floor_reused"]["cpu"]
    print(f"  {'the same, enclave in-process, no HTTP':<40} {'':>11} {nh:6.3f} validator {'':>16} crypto floor {fl:5.3f}, validator {nh / fl:4.2f}x it")
    print("the client library, same rounds (validator CPU, ms per request; httpx / aiohttp):")
    for a, h, label in (("bare", "bare_httpx", "bare round trip (GET /health)"), ("attest", "attest_httpx", "signed POST /attest")):
        ra, rh = got[a], got[h]
        print(f"  {label:<40} aiohttp {ra['wall']:6.3f} wall {ra['cpu']:6.3f} CPU   httpx {rh['wall']:6.3f} wall {rh['cpu']:6.3f} CPU   "
              f"{rh['cpu'] / ra['cpu']:5.2f}x the CPU, {rh['wall'] / ra['wall']:5.2f}x the wall")
    print(f"{args.peers} peers: " + "; ".join(f"{k} {ms:.2f} ms CPU per peer" for k, ms in tls.items()))


if __name__ == "__main__":
    main()

"""Hostile miners: one process, one loopback port per misbehaviour, for the hostile-miner suite.

Each behaviour is what a registered miner of a permissionless subnet can do
to a validator. They speak raw HTTP/1.1 over asyncio streams (no web
framework) so that they can do what a framework would not let them: trickle
a reply, declare 200 MB, never end, close half-way, answer garbage. Those
that need a genuine enclave (to relay one, or to attest for the wrong nonce)
run the simulated trusted app in process, with this network's development
key and this release's measurement, so that their evidence is as good as an
honest miner's and only the misbehaviour can give them away.

Run: ``python -m omron_tee.devnet.hostile CONFIG.json``; the config names the
development key, the test vectors folder, and for each miner its behaviour,
hotkey, optionally a port (default: one the kernel picks) and (for ``relay``)
its victim's hotkey. Once every port listens it writes hotkey -> port to
``ports_file`` and prints ``ready``. Loopback only: it binds 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omron_tee.attestation.binding import report_data_for
from omron_tee.channel.hpke import KemSuite
from omron_tee.channel.stream import RESPONSE_NONCE_LEN, ChunkSealer, frame, stream_key
from omron_tee.enclave.measurement import trusted_app_measurement
from omron_tee.enclave.simulated import SimulatedBackend
from omron_tee.miner.trusted_app import TrustedApp
from omron_tee.models.registry import ModelRegistry
from omron_tee.protocol import BATCH_ANSWER, AttestRequest, AttestResponse, InferBatch, InferRequest, dumps
from omron_tee.workloads import default_workloads

HOST = "127.0.0.1"
DEEP = 100_000  # nesting levels of the deep-JSON replies
HUGE = 200 * 1024 * 1024  # bytes the oversized reply declares (and sends, if anyone reads)
WIDE = 250_000  # small arrays in the wide-JSON reply: under the attestation reply's byte cap, past the element bound

# behaviour -> what the validator must name it (the reason its probe fails with)
EXPECTED_REASONS: dict[str, str] = {
    "deep-json": "too-deep",
    "wide-json": "too-large",  # within the byte cap, but more elements than any message has: refused on its bytes
    "bad-certificate": "bad-certificate",
    "trickle": "timeout",
    "oversized": "too-large",
    "endless": "too-large",
    "garbage": "malformed-reply",
    "close-mid-reply": "disconnected",
    "relay": "report-data-mismatch",
    "other-nonce": "report-data-mismatch",
    "deep-infer": "stream-malformed",  # deep JSON where the sealed answer stream belongs
    "outside-enclave": "stream-tampered",  # an answer made up by the operator, who cannot open the request
    "shared-enclave": "enclave-shared",  # the second of two hotkeys presenting one enclave
}
BEHAVIOURS = tuple(EXPECTED_REASONS)


@dataclass
class Request:
    method: str
    path: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def infer(self) -> InferRequest:
        """The sealed request, as a binary frame (what validators send) or JSON."""
        return InferRequest.from_bytes(self.body) if self.body[:4] == b"OTIR" else InferRequest.from_json(self.json())


@dataclass
class Ctx:
    behaviour: str
    hotkey: str
    enclave: TrustedApp | None = None  # a genuine simulated enclave (own, victim's, or shared)
    vectors: Path | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)


Handler = Callable[[Ctx, Request, asyncio.StreamWriter], Awaitable[bool]]  # True: keep the connection


def _head(status: int, length: int | None, extra: str = "") -> bytes:
    reason = {200: "OK", 404: "Not Found"}.get(status, "Error")
    size = f"Content-Length: {length}\r\n" if length is not None else ""
    return f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n{size}{extra}\r\n".encode()


async def send(writer: asyncio.StreamWriter, body: bytes, status: int = 200) -> bool:
    writer.write(_head(status, len(body)) + body)
    await writer.drain()
    return True


def deep_json() -> bytes:
    return b"[" * DEEP + b"]" * DEEP


def flipped_pck_issuer(quote: bytes) -> bytes:
    """The SGX quote with one bit flipped in its PCK leaf certificate's issuer (the first RDN's SET tag).

    cryptography parses names lazily: this certificate loads, and reading its issuer raises
    ``ValueError``, which once escaped the verifier and ended the validator."""
    from cryptography import x509

    m = re.search(rb"-----BEGIN CERTIFICATE-----\n?(.+?)-----END CERTIFICATE-----", quote, re.S)
    if m is None:
        raise ValueError("no PEM certificate in the quote")
    b64 = m.group(1)
    der = bytearray(base64.b64decode(b64.replace(b"\n", b"")))
    cert = x509.load_der_x509_certificate(bytes(der))
    issuer = cert.issuer.public_bytes()
    at = bytes(der).index(issuer)
    assert der[at + 2] == 0x31  # SEQUENCE tag, length, then the first RDN: SET (0x31)
    der[at + 2] ^= 0x01
    lines = base64.b64encode(bytes(der))
    wrapped = b"\n".join(lines[i : i + 64] for i in range(0, len(lines), 64)) + b"\n"
    out = quote[: m.start(1)] + wrapped + quote[m.end(1) :]
    if len(out) != len(quote):  # keep every length field of the quote right
        raise ValueError("re-encoded PEM changed length")
    return out


def attest_json(ctx: Ctx, req: Request, *, hotkey: str | None = None, nonce: bytes | None = None) -> bytes:
    """A genuine attestation from ``ctx.enclave``, bound to ``hotkey`` and ``nonce`` (default: as asked)."""
    assert ctx.enclave is not None
    ask = AttestRequest.from_json(req.json())
    app = ctx.enclave
    keys = app._keys_for(KemSuite.parse(ask.kem))  # noqa: SLF001 - a hostile miner reaches inside its own enclave
    rd = report_data_for(nonce or ask.nonce, keys.public, hotkey or app.hotkey)
    evidence = app.backend.attest(rd)
    return dumps(AttestResponse(evidence, keys.public, app.models, app.proof_systems).to_json())


async def infer_json(ctx: Ctx, req: Request) -> bytes:
    """The genuine enclave's sealed answer stream, or a batch's answer (the name is historical: the body is frames, not JSON)."""
    assert ctx.enclave is not None
    if req.path == "/infer/batch":
        return await ctx.enclave.answer_batch(InferBatch.from_bytes(req.body))
    return await ctx.enclave.answer_whole(ctx.enclave.open(req.infer()))


# --- behaviours ---------------------------------------------------------------


async def b_deep_json(ctx: Ctx, req: Request, w: asyncio.StreamWriter) -> bool:
    return await send(w, deep_json())


async def b_wide_json(ctx: Ctx, req: Request, w: asyncio.StreamWriter) -> bool:
    return await send(w, b"[" + b"[0]," * WIDE + b"[0]]")


async def b_bad_certificate(ctx: Ctx, req: Request, w: asyncio.StreamWriter) -> bool:
    assert ctx.vectors is not None
    quote = flipped_pck_issuer((ctx.vectors / "intel-sgx" / "sgx_quote").read_bytes())
    key = base64.b64encode(os.urandom(32)).decode()
    body = {"evidence": {"tee_type": "sgx", "quote": base64.b64encode(quote).decode()},
            "keys": {"kem": KemSuite.X25519.value, "hpke_public": key, "signing_public": key}, "models": []}
    return await send(w, dumps(body))


async def b_trickle(ctx: Ctx, req: Request, w: asyncio.StreamWriter) -> bool:
    w.write(_head(200, 1000))
    for _ in range(1000):
        w.write(b" ")
        await w.drain()
        await asyncio.sleep(1.0)
    return False


async def b_oversized(ctx: Ctx, req: Request, w: asyncio.StreamWriter) -> bool:
    w.write(_head(200, HUGE))
    chunk = b"x" * 65536
    for _ in range(HUGE // len(chunk)):
        w.write(chunk)
        await w.drain()
    return False


async def b_endless(ctx: Ctx, req: Request, w: asyncio.StreamWriter) -> bool:
    w.write(_head(200, None, "Transfer-Encoding: chunked\r\n"))
    chunk = b"[" * 65536
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    while True:  # until the validator hangs up
        w.write(frame)
        await w.drain()


async def b_garbage(ctx: Ctx, req: Request, w: asyncio.StreamWriter) -> bool:
    return await send(w, b"\xff\xfe" + os.urandom(4094))


async def b_close_mid_reply(ctx: Ctx, req: Request, w: asyncio.StreamWriter) -> bool:
    w.write(_head(200, 1000) + b'{"evidence": {"tee_type": "simul')
    await w.drain()
    return False


async def b_relay(ctx: Ctx, req: Request, w: asyncio.StreamWriter) -> bool:
    """No enclave of its own: asks the victim's enclave, as the victim (its hotkey), and passes the answers on."""
    if req.path == "/attest":
        assert ctx.enclave is not None
        ask = AttestRequest.from_json(req.json())
        relayed = AttestRequest(ask.nonce, ask.kem, ctx.enclave.hotkey)  # the victim attests for the victim only
        return await send(w, dumps(ctx.enclave.attest(relayed).to_json()))
    return await send(w, await infer_json(ctx, req))


async def b_other_nonce(ctx: Ctx, req: Request, w: asyncio.StreamWriter) -> bool:
    if req.path == "/attest":
        return await send(w, attest_json(ctx, req, nonce=os.urandom(32)))
    return await send(w, await infer_json(ctx, req))


async def b_deep_infer(ctx: Ctx, req: Request, w: asyncio.StreamWriter) -> bool:
    if req.path == "/attest":
        return await send(w, attest_json(ctx, req))
    return await send(w, deep_json())


def made_up_stream() -> bytes:
    """An answer stream as an operator can make one without its enclave: it never learns the request's
    reply secret or nonce (both sealed inside), so it draws its own and seals a plausible final chunk."""
    header = os.urandom(RESPONSE_NONCE_LEN)
    sealer = ChunkSealer(stream_key(os.urandom(32), header, os.urandom(32)), os.urandom(32))
    return frame(header) + sealer.seal({"n": 0, "meta": {}, "ps": [], "receipt": {}}, final=True)


async def b_outside_enclave(ctx: Ctx, req: Request, w: asyncio.StreamWriter) -> bool:
    """Attests genuinely, then answers from outside its enclave (skipping the model): made-up streams."""
    if req.path == "/attest":
        return await send(w, attest_json(ctx, req))
    if req.path == "/infer/batch":
        batch = InferBatch.from_bytes(req.body)
        return await send(w, b"".join(frame(made_up_stream(), BATCH_ANSWER) for _ in batch.requests))
    return await send(w, made_up_stream())


async def b_shared_enclave(ctx: Ctx, req: Request, w: asyncio.StreamWriter) -> bool:
    """One (modified) enclave serving several hotkeys: same keys, evidence bound to whichever hotkey is asked."""
    if req.path == "/attest":
        return await send(w, attest_json(ctx, req, hotkey=ctx.hotkey))
    return await send(w, await infer_json(ctx, req))


HANDLERS: dict[str, Handler] = {
    "deep-json": b_deep_json,
    "wide-json": b_wide_json,
    "bad-certificate": b_bad_certificate,
    "trickle": b_trickle,
    "oversized": b_oversized,
    "endless": b_endless,
    "garbage": b_garbage,
    "close-mid-reply": b_close_mid_reply,
    "relay": b_relay,
    "other-nonce": b_other_nonce,
    "deep-infer": b_deep_infer,
    "outside-enclave": b_outside_enclave,
    "shared-enclave": b_shared_enclave,
}
assert set(HANDLERS) == set(BEHAVIOURS)


async def read_request(reader: asyncio.StreamReader) -> Request:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return Request(method, path.split("?", 1)[0], body)


async def serve_connection(ctx: Ctx, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            req = await read_request(reader)
            if req.method == "GET" and req.path == "/health":
                keep = await send(writer, dumps({"hostile": ctx.behaviour, "hotkey": ctx.hotkey}))
            else:
                keep = await HANDLERS[ctx.behaviour](ctx, req, writer)
            if not keep:
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


def build_contexts(config: dict[str, Any]) -> list[tuple[Ctx, int]]:
    registry = ModelRegistry.builtin()
    measurement = trusted_app_measurement([(s.model_id, s.sha256) for s in registry.specs()])
    backend = SimulatedBackend(Path(config["dev_key"]), measurement)
    vectors = Path(config["vectors"]) if config.get("vectors") else None
    shared: TrustedApp | None = None
    workloads = default_workloads()
    out = []
    for m in config["miners"]:
        b, hotkey = m["behaviour"], m["hotkey"]
        enclave = None
        if b == "relay":
            enclave = TrustedApp(backend, registry, hotkey=m["victim"], workloads=workloads)
        elif b in ("other-nonce", "deep-infer", "outside-enclave"):
            enclave = TrustedApp(backend, registry, hotkey=hotkey, workloads=workloads)
        elif b == "shared-enclave":
            shared = shared or TrustedApp(backend, registry, hotkey=hotkey, workloads=workloads)
            enclave = shared
        out.append((Ctx(b, hotkey, enclave, vectors), int(m.get("port", 0))))
    return out


async def serve(config: dict[str, Any]) -> None:
    servers, ports = [], {}
    for ctx, port in build_contexts(config):
        # Port 0: the kernel picks a free one (a port picked by the parent could be taken meanwhile).
        server = await asyncio.start_server(lambda r, w, c=ctx: serve_connection(c, r, w), HOST, port, limit=1 << 20)
        servers.append(server)
        ports[ctx.hotkey] = server.sockets[0].getsockname()[1]
    if config.get("ports_file"):
        tmp = Path(config["ports_file"] + ".tmp")
        tmp.write_text(json.dumps(ports))
        tmp.replace(config["ports_file"])
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m omron_tee.devnet.hostile CONFIG.json", file=sys.stderr)
        return 2
    config = json.loads(Path(args[0]).read_text())
    unknown = sorted({m["behaviour"] for m in config["miners"]} - set(BEHAVIOURS))
    if unknown:
        print(f"unknown behaviour(s) {unknown}; known: {', '.join(BEHAVIOURS)}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(config))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

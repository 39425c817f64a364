"""The miner's HTTP surface: btauth/1 admission, replay/receiver/freshness/signature refusals,
JSON error bodies; and the signed httpx client against a real uvicorn on loopback."""

from __future__ import annotations

import asyncio
import threading
import time
import warnings

import numpy as np
import pytest
import uvicorn
from bittensor import http_auth

from omron_tee.chain.embedded import EmbeddedChain
from omron_tee.channel.hpke import KemSuite
from omron_tee.errors import MinerError
from omron_tee.exchange.requester import check_attestation, new_nonce, seal_request
from omron_tee.miner.server import build_app, validator_admission
from omron_tee.enclave.dev_faults import DevFaults
from omron_tee.workloads.tensor import sample_input
from omron_tee.protocol import AttestRequest, AttestResponse, b64, dumps
from omron_tee.workloads.tensor import TensorWorkload

TENSOR = TensorWorkload()
from omron_tee.wire.auth import Admission, RequestVerifier, Signer
from omron_tee.wire.client import SignedClient

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about its httpx-based test client
    from fastapi.testclient import TestClient


@pytest.fixture
def net(tmp_path, make_wallet, sim):
    """An embedded chain with a permitted validator, a stake-less registered hotkey, an outsider, and a miner app."""
    chain = EmbeddedChain(1, path=tmp_path / "chain.sqlite", block_time=0.05)
    miner = make_wallet("miner")
    validator = make_wallet("validator")
    plain = make_wallet("plain")
    outsider = make_wallet("outsider")
    chain.register(miner)
    chain.register(validator, stake=1000.0)
    chain.register(plain)
    mg = chain.metagraph()
    assert mg.by_hotkey(validator.hotkey.ss58_address).validator_permit
    assert not mg.by_hotkey(plain.hotkey.ss58_address).validator_permit
    app = sim.app(hotkey=miner.hotkey.ss58_address)
    verifier = RequestVerifier(miner.hotkey.ss58_address, validator_admission(chain))
    client = TestClient(build_app(app, verifier), raise_server_exceptions=False)
    ns = type("Net", (), dict(chain=chain, miner=miner, validator=validator, plain=plain, outsider=outsider, app=app, client=client, sim=sim))
    yield ns
    client.close()
    chain.close()


def _attest_body(nonce: bytes | None = None) -> bytes:
    return dumps(AttestRequest(nonce or new_nonce(), KemSuite.X25519.value).to_json())


def _post(net, path: str, body: bytes, headers: dict[str, str]):
    return net.client.post(path, content=body, headers={**headers, "Content-Type": "application/json"})


def _signed(wallet, body: bytes, receiver: str | None, path: str = "/attest", **kw) -> dict[str, str]:
    return http_auth.sign(wallet, method="POST", path=path, body=body, receiver_ss58=receiver, **kw)


def _refused(resp, status: int, reason: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert "Traceback" not in resp.text
    err = resp.json()["error"]
    assert set(err) == {"reason", "message"}
    assert err["reason"] == reason, err
    assert err["message"]
    return err


def test_permitted_validator_gets_verifiable_evidence(net) -> None:
    nonce = new_nonce()
    body = _attest_body(nonce)
    resp = _post(net, "/attest", body, _signed(net.validator, body, net.miner.hotkey.ss58_address))
    assert resp.status_code == 200, resp.text
    session = check_attestation(AttestResponse.from_json(resp.json()), hotkey=net.miner.hotkey.ss58_address, nonce=nonce, policy=net.sim.policy, registry=net.sim.verifiers)
    assert session.verdict.accepted


def test_unregistered_caller_is_refused(net) -> None:
    body = _attest_body()
    err = _refused(_post(net, "/attest", body, _signed(net.outsider, body, net.miner.hotkey.ss58_address)), 403, "caller-not-permitted")
    assert "not registered" in err["message"]


def test_registered_without_permit_is_refused(net) -> None:
    body = _attest_body()
    err = _refused(_post(net, "/attest", body, _signed(net.plain, body, net.miner.hotkey.ss58_address)), 403, "caller-not-permitted")
    assert "permit" in err["message"]
    # Once it has stake (and so a permit), the same hotkey is admitted.
    net.chain.add_stake(net.plain, 10.0)
    time.sleep(1.05)  # admission re-reads the metagraph for a caller without a permit at most once a second
    body = _attest_body()  # the first request after it waits for that read (off the loop), and is admitted
    assert _post(net, "/attest", body, _signed(net.plain, body, net.miner.hotkey.ss58_address)).status_code == 200


class _SlowChain:
    """A chain whose metagraph takes as long as a subtensor node's may: what admission must never wait for."""

    def __init__(self, inner, delay: float) -> None:
        self.inner, self.delay, self.reads, self.in_flight, self.most_in_flight = inner, delay, 0, 0, 0
        self._lock = threading.Lock()

    def metagraph(self):
        with self._lock:
            self.reads += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(self.delay)
        try:
            return self.inner.metagraph()
        finally:
            with self._lock:
                self.in_flight -= 1


def test_admission_never_waits_on_the_chain_however_often_strangers_ask(net, make_wallet) -> None:
    """A caller naming an unknown hotkey (anyone can) once held the miner's event loop for a whole metagraph read,
    at most once a second: seconds each time against a subtensor node. Now the read runs in a worker thread, one
    at a time, at most once per retry period; the check answers from the last read at once."""
    slow = _SlowChain(net.chain, delay=0.5)
    admission = validator_admission(slow, retry_unknown_s=0.2)  # the first read, before serving, may wait
    assert slow.reads == 1 and admission.check(net.validator.hotkey.ss58_address) is None
    strangers = [make_wallet(f"stranger-{i}").hotkey.ss58_address for i in range(3)]
    t0, worst = time.monotonic(), 0.0
    while time.monotonic() - t0 < 1.5:
        for s in strangers:
            t = time.monotonic()
            assert admission.check(s) == "caller is not registered on this subnet"
            worst = max(worst, time.monotonic() - t)
        time.sleep(0.01)
    assert worst < 0.05, worst  # never a read's 0.5 s
    assert slow.most_in_flight == 1  # one read at a time
    assert 2 <= slow.reads <= 5, slow.reads  # 1.5 s of asking, reads of 0.5 s, at most one per 0.2 s
    # A validator registered meanwhile is admitted on its first request: the pre-check awaits the read its asking
    # started (on the event loop's terms: other requests are served meanwhile), then admits it.
    late = make_wallet("late-validator")
    while slow.in_flight:  # the strangers' last read done (it could otherwise read the registration below)
        time.sleep(0.01)
    net.chain.register(late, stake=1000.0)
    time.sleep(0.25)  # past the retry period

    async def first_contact():
        from looptime import ticking

        verifier = RequestVerifier(net.miner.hotkey.ss58_address, admission)
        async with ticking() as ticks:
            t = time.monotonic()
            await verifier.precheck({"X-Bittensor-Hotkey": late.hotkey.ss58_address})  # raises if refused
            took = time.monotonic() - t
        return took, ticks.count

    took, ticks = asyncio.run(first_contact())
    assert 0.3 <= took <= 3.0 and ticks >= 15, (took, ticks)  # it waited for the 0.5 s read, and the loop ran on


def test_replayed_request_is_refused(net) -> None:
    body = _attest_body()
    headers = _signed(net.validator, body, net.miner.hotkey.ss58_address)
    assert _post(net, "/attest", body, headers).status_code == 200
    _refused(_post(net, "/attest", body, headers), 401, "replayed-request")


def test_wrong_or_missing_receiver(net) -> None:
    body = _attest_body()
    _refused(_post(net, "/attest", body, _signed(net.validator, body, net.plain.hotkey.ss58_address)), 401, "wrong-receiver")
    _refused(_post(net, "/attest", body, _signed(net.validator, body, None)), 401, "wrong-receiver")


def test_stale_and_future_requests(net) -> None:
    body = _attest_body()
    old = time.time_ns() - 60 * 10**9
    _refused(_post(net, "/attest", body, _signed(net.validator, body, net.miner.hotkey.ss58_address, nonce_ns=old)), 401, "stale-request")
    future = time.time_ns() + 3600 * 10**9
    _refused(_post(net, "/attest", body, _signed(net.validator, body, net.miner.hotkey.ss58_address, nonce_ns=future)), 401, "stale-request")


def test_bad_signature(net) -> None:
    body = _attest_body()
    headers = _signed(net.validator, body, net.miner.hotkey.ss58_address)
    # The body changed after signing.
    _refused(_post(net, "/attest", _attest_body(), headers), 401, "bad-signature")
    # Signed for another path.
    headers = _signed(net.validator, body, net.miner.hotkey.ss58_address, path="/infer")
    _refused(_post(net, "/attest", body, headers), 401, "bad-signature")
    # A signature by another hotkey claiming to be the validator.
    headers = _signed(net.outsider, body, net.miner.hotkey.ss58_address)
    headers[http_auth.HEADER_HOTKEY] = net.validator.hotkey.ss58_address
    _refused(_post(net, "/attest", body, headers), 401, "bad-signature")


def test_malformed_or_missing_auth(net) -> None:
    body = _attest_body()
    _refused(_post(net, "/attest", body, {}), 401, "malformed-auth")
    headers = _signed(net.validator, body, net.miner.hotkey.ss58_address)
    headers[http_auth.HEADER_SIGNATURE] = "0xnothex"
    _refused(_post(net, "/attest", body, headers), 401, "malformed-auth")


def test_bad_bodies_get_json_errors(net) -> None:
    rcv = net.miner.hotkey.ss58_address
    for body, reason in (
        (b"{not json", "malformed-message"),
        (dumps({"nonce": b64(b"short"), "kem": KemSuite.X25519.value}), "malformed-message"),
        (dumps({"nonce": b64(new_nonce()), "kem": "rsa"}), "unsupported-suite"),
    ):
        _refused(_post(net, "/attest", body, _signed(net.validator, body, rcv)), 400, reason)
    body = dumps({"key_id": b64(b"\x00" * 16), "sealed": b64(b"junk")})
    _refused(_post(net, "/infer", body, _signed(net.validator, body, rcv, path="/infer")), 400, "unknown-key")


def test_sealed_request_over_http(net, registry) -> None:
    rcv = net.miner.hotkey.ss58_address
    nonce = new_nonce()
    body = _attest_body(nonce)
    session = check_attestation(AttestResponse.from_json(_post(net, "/attest", body, _signed(net.validator, body, rcv)).json()),
                                hotkey=rcv, nonce=nonce, policy=net.sim.policy, registry=net.sim.verifiers)
    spec = registry.get("breast-cancer-mlp")
    x = sample_input(spec, np.random.default_rng(0))
    request, pending = seal_request(session, TENSOR, spec, x)
    body = dumps(request.to_json())
    resp = _post(net, "/infer", body, _signed(net.validator, body, rcv, path="/infer"))
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/vnd.omron-tee.stream"
    pending.feed(resp.content)
    out = pending.close()
    np.testing.assert_allclose(out.result.output, registry.runtime(spec.model_id).run(x), rtol=1e-6)
    # A tampered sealed request is a named refusal, not a crash.
    req = request.to_json()
    sealed = bytearray(request.sealed)
    sealed[40] ^= 1
    req["sealed"] = b64(bytes(sealed))
    body = dumps(req)
    _refused(_post(net, "/infer", body, _signed(net.validator, body, rcv, path="/infer")), 400, "tampered-ciphertext")


def test_a_reply_secret_of_the_wrong_length_is_a_named_refusal(net, registry) -> None:
    """A requester whose reply secret is not 32 bytes gets a JSON refusal that names nothing of its input,
    and the miner keeps serving."""
    from omron_tee.channel.hpke import request_info, seal
    from omron_tee.protocol import InferRequest, SealedRequest
    from omron_tee.workloads.tensor import Tensor

    rcv = net.miner.hotkey.ss58_address
    nonce = new_nonce()
    body = _attest_body(nonce)
    session = check_attestation(AttestResponse.from_json(_post(net, "/attest", body, _signed(net.validator, body, rcv)).json()),
                                hotkey=rcv, nonce=nonce, policy=net.sim.policy, registry=net.sim.verifiers)
    spec = registry.get("digits-mlp")
    payload = SealedRequest(new_nonce(), spec.model_id, "tensor", Tensor.from_array(sample_input(spec, np.random.default_rng(0))).to_json(),
                            bytes(5), session.evidence_hash)
    req = InferRequest(session.key_id, seal(session.kem, session.keys.hpke_public, payload.encode(), request_info(session.key_id)))
    body = dumps(req.to_json())
    err = _refused(_post(net, "/infer", body, _signed(net.validator, body, rcv, path="/infer")), 400, "malformed-message")
    assert "float32" not in err["message"] and "digits" not in err["message"]
    assert net.client.get("/health").status_code == 200


def test_unexpected_errors_are_json_too(sim, make_wallet) -> None:
    """A bug in a handler still answers the documented JSON error body, without its message."""
    import logging

    from fastapi import FastAPI

    from omron_tee.wire.server import signed_route

    me, caller = make_wallet("server"), make_wallet("caller")

    async def broken(hotkey, body):
        raise RuntimeError("secret 1234.5678 in a message")

    app = FastAPI()
    app.add_api_route("/x", signed_route(RequestVerifier(me.hotkey.ss58_address, Admission.anyone()), broken, logging.getLogger("t")), methods=["POST"])
    with TestClient(app, raise_server_exceptions=False) as c:
        body = b"{}"
        r = c.post("/x", content=body, headers=http_auth.sign(caller, method="POST", path="/x", body=body, receiver_ss58=me.hotkey.ss58_address))
    assert r.status_code == 500
    assert r.json()["error"]["reason"] == "internal-error"
    assert "1234.5678" not in r.text and "Traceback" not in r.text


def test_health_is_public(net) -> None:
    r = net.client.get("/health")
    assert r.status_code == 200
    assert r.json()["hotkey"] == net.miner.hotkey.ss58_address
    assert r.json()["tee_type"] == "simulated"


# --- the signed client against a real server ------------------------------------------------


class _Server:
    def __init__(self, app, port: int) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=5)


def test_signed_client_against_uvicorn(sim, make_wallet, free_port) -> None:
    miner, caller = make_wallet("m"), make_wallet("c")
    slow = sim.app(faults=DevFaults(delay_s=1.0))
    fast = sim.app()
    only_caller = Admission(lambda hk: None if hk == caller.hotkey.ss58_address else "caller is not registered on this subnet")

    async def go(fast_url: str, slow_url: str, dead_url: str) -> None:
        client = SignedClient(Signer(caller), timeout=5.0)
        stranger = SignedClient(Signer(make_wallet("s")), timeout=5.0)
        try:
            nonce = new_nonce()
            raw = await client.post(fast_url, "/attest", AttestRequest(nonce, KemSuite.X25519.value).to_json(), receiver=miner.hotkey.ss58_address)
            check_attestation(AttestResponse.from_json(raw), hotkey=sim.hotkey, nonce=nonce, policy=sim.policy, registry=sim.verifiers)
            # Keep-alive: a second signed request on the same client works (fresh nonce each time).
            await client.post(fast_url, "/attest", AttestRequest(new_nonce(), KemSuite.X25519.value).to_json(), receiver=miner.hotkey.ss58_address)
            with pytest.raises(MinerError) as e:
                await stranger.post(fast_url, "/attest", AttestRequest(new_nonce(), KemSuite.X25519.value).to_json(), receiver=miner.hotkey.ss58_address)
            assert e.value.reason == "caller-not-permitted"
            with pytest.raises(MinerError) as e:
                await client.post(fast_url, "/attest", AttestRequest(new_nonce(), KemSuite.X25519.value).to_json(), receiver=caller.hotkey.ss58_address)
            assert e.value.reason == "wrong-receiver"
            with pytest.raises(MinerError) as e:
                await client.post(dead_url, "/attest", AttestRequest(new_nonce(), KemSuite.X25519.value).to_json(), receiver=miner.hotkey.ss58_address)
            assert e.value.reason == "unreachable"
            # Slow: the attestation is quick, the inference is not.
            nonce = new_nonce()
            raw = await client.post(slow_url, "/attest", AttestRequest(nonce, KemSuite.X25519.value).to_json(), receiver=miner.hotkey.ss58_address)
            session = check_attestation(AttestResponse.from_json(raw), hotkey=sim.hotkey, nonce=nonce, policy=sim.policy, registry=sim.verifiers)
            spec = sim.registry.get("digits-mlp")
            request, _ = seal_request(session, TENSOR, spec, sample_input(spec, np.random.default_rng(0)))
            t0 = time.monotonic()
            with pytest.raises(MinerError) as e:
                await client.post(slow_url, "/infer", request.to_json(), receiver=miner.hotkey.ss58_address, timeout=0.3)
            assert e.value.reason == "timeout"
            assert time.monotonic() - t0 < 0.9
        finally:
            await client.aclose()
            await stranger.aclose()

    fast_port, slow_port, dead_port = free_port(), free_port(), free_port()
    with _Server(build_app(fast, RequestVerifier(miner.hotkey.ss58_address, only_caller)), fast_port) as f, \
         _Server(build_app(slow, RequestVerifier(miner.hotkey.ss58_address, only_caller)), slow_port) as s:
        asyncio.run(go(f.url, s.url, f"http://127.0.0.1:{dead_port}"))


def test_a_sender_who_may_not_call_is_refused_before_its_body_is_read(sim, make_wallet, free_port) -> None:
    """A request claiming a hotkey the miner does not admit, with a forged signature and a 4 MiB body it never
    sends, is refused at once (caller-not-permitted, on its headers: neither the body read nor the signature
    checked); the same forgery claiming an admitted hotkey must send its body, and is refused for its signature."""
    import socket

    miner, caller, stranger = make_wallet("m"), make_wallet("c"), make_wallet("s")
    only_caller = Admission(lambda hk: None if hk == caller.hotkey.ss58_address else "caller is not registered on this subnet")

    def ask(claimed: str, *, send_body: bool) -> tuple[bytes, float]:
        body = b"x" * (4 << 20)
        head = (f"POST /infer HTTP/1.1\r\nHost: m\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                f"X-Bittensor-Version: 1\r\nX-Bittensor-Hotkey: {claimed}\r\nX-Bittensor-Nonce: {time.time_ns()}\r\n"
                f"X-Bittensor-Receiver: {miner.hotkey.ss58_address}\r\nX-Bittensor-Signature: 0x{'00' * 64}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            t0 = time.monotonic()
            s.sendall(head)
            if send_body:
                s.sendall(body)
            s.settimeout(5)
            got = b""
            while b"\r\n\r\n" not in got or b"}}" not in got:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            return got, time.monotonic() - t0

    port = free_port()
    with _Server(build_app(sim.app(), RequestVerifier(miner.hotkey.ss58_address, only_caller)), port):
        refused, took = ask(stranger.hotkey.ss58_address, send_body=False)
        assert refused.startswith(b"HTTP/1.1 403") and b'"caller-not-permitted"' in refused, refused[:300]
        assert took < 2.0  # answered without waiting for the 4 MiB that never came
        forged, _ = ask(caller.hotkey.ss58_address, send_body=True)
        assert forged.startswith(b"HTTP/1.1 401") and b'"bad-signature"' in forged, forged[:300]


def test_an_address_whose_requests_keep_failing_authentication_is_refused_unread(sim, make_wallet) -> None:
    """Forged requests naming a hotkey the miner admits each cost it a body read and an sr25519 verification; past
    ``FAILED_AUTH_BURST`` failures from one address (an IPv6 address by its /64) its requests are refused on
    arrival (rate-limited, 429 with Retry-After), the signature no longer checked, while the admitted validator,
    elsewhere, is served as before."""
    import httpx

    from omron_tee.wire.auth import FAILED_AUTH_BURST

    miner, caller = make_wallet("m"), make_wallet("c")
    only_caller = Admission(lambda hk: None if hk == caller.hotkey.ss58_address else "caller is not registered on this subnet")
    verifier = RequestVerifier(miner.hotkey.ss58_address, only_caller)
    checked = []
    real = verifier._verify  # noqa: SLF001
    verifier._verify = lambda *a, **k: checked.append(1) or real(*a, **k)  # type: ignore[method-assign]  # noqa: SLF001
    app = build_app(sim.app(), verifier)

    def forged() -> dict[str, str]:
        h = _signed(caller, _attest_body(), miner.hotkey.ss58_address)
        return h | {"X-Bittensor-Signature": "0x" + "00" * 64, "Content-Type": "application/json"}

    async def go() -> None:
        def client(host: str) -> httpx.AsyncClient:
            return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(host, 40000)), base_url="http://m")

        async with client("2001:db8:7:7::1") as forger, client("2001:db8:7:7::2") as neighbour, client("198.51.100.2") as honest:
            for _ in range(int(FAILED_AUTH_BURST)):
                r = await forger.post("/attest", content=_attest_body(), headers=forged())
                assert r.status_code == 401 and r.json()["error"]["reason"] == "bad-signature"
            assert len(checked) == FAILED_AUTH_BURST
            for who in (forger, neighbour):  # the same /64
                r = await who.post("/attest", content=_attest_body(), headers=forged())
                assert r.status_code == 429 and r.json()["error"]["reason"] == "rate-limited" and int(r.headers["retry-after"]) >= 1
            assert len(checked) == FAILED_AUTH_BURST  # refused unread: no signature checked
            body = _attest_body()
            r = await honest.post("/attest", content=body,
                                  headers=_signed(caller, body, miner.hotkey.ss58_address) | {"Content-Type": "application/json"})
            assert r.status_code == 200, r.text

    asyncio.run(go())


def test_rate_limiter_forgets_idle_hotkeys() -> None:
    from omron_tee.wire.ratelimit import RateLimiter

    rl = RateLimiter(rate=1000.0, burst=2.0)
    rl.MAX_TRACKED = 100
    for i in range(1000):
        rl.take(f"hotkey-{i}")
    assert len(rl._buckets) <= 1000  # noqa: SLF001
    import time as _t

    _t.sleep(0.01)  # every bucket refills within 1 ms at this rate
    # The table is pruned when a new key finds it full; wherever the loop left it, a table's
    # worth of newcomers triggers a prune, and the refilled old hotkeys are forgotten.
    for j in range(100):
        rl.take(f"newcomer-{j}")
    assert len(rl._buckets) <= 100  # noqa: SLF001
    assert not [k for k in rl._buckets if k.startswith("hotkey-")]  # noqa: SLF001


def test_oversized_bodies_are_refused_before_being_read_whole() -> None:
    import asyncio

    from omron_tee.errors import ProtocolError
    from omron_tee.wire.server import read_body

    class FakeRequest:
        def __init__(self, chunks, declared=None):
            self._chunks = chunks
            self.headers = {} if declared is None else {"content-length": str(declared)}
            self.read = 0

        async def stream(self):
            for c in self._chunks:
                self.read += len(c)
                yield c

    big = FakeRequest([b"x" * 1024] * 100, declared=100 * 1024)
    with pytest.raises(ProtocolError) as e:
        asyncio.run(read_body(big, limit=4096))
    assert e.value.reason == "too-large" and big.read == 0  # refused on the declared length alone
    chunked = FakeRequest([b"x" * 1024] * 100)  # no length declared: stop at the limit
    with pytest.raises(ProtocolError):
        asyncio.run(read_body(chunked, limit=4096))
    assert chunked.read <= 5 * 1024
    assert asyncio.run(read_body(FakeRequest([b"ab", b"cd"], declared=4), limit=4096)) == b"abcd"


def test_blocking_get_json_is_bounded_against_a_hostile_peer() -> None:
    """wire.client.get_json (a miner's start-up check of an old endpoint, `omron-tee status`): size, time and garbage, each named."""
    import http.server
    import threading

    from omron_tee.wire.client import get_json

    class Hostile(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):  # quiet
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            if self.path == "/huge":
                for _ in range(64):
                    self.wfile.write(b"[" * 65536)
            elif self.path == "/trickle":
                for _ in range(20):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.2)
            elif self.path == "/deep":
                self.wfile.write(b"[" * 5000 + b"]" * 5000)
            elif self.path == "/garbage":
                self.wfile.write(b"\xff\xfe not json")
            else:
                self.wfile.write(b'{"hotkey": "5Miner"}')

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert get_json(base + "/ok", max_bytes=4096, timeout=2.0) == {"hotkey": "5Miner"}
        for path, reason in (("/huge", "too-large"), ("/trickle", "timeout"), ("/deep", "too-deep"), ("/garbage", "malformed-reply")):
            t0 = time.monotonic()
            with pytest.raises(MinerError) as e:
                get_json(base + path, max_bytes=64 * 1024, timeout=1.0)
            assert e.value.reason == reason, (path, e.value.reason)
            assert time.monotonic() - t0 < 2.5, path
    finally:
        server.shutdown()


def test_the_quiet_server_serves_and_stopping_it_wakes_its_loop() -> None:
    """QuietServer ticks once a second when idle (bench/bench_idle.py measures what that saves);
    setting should_exit, as uvicorn's signal handler and our callers do, wakes it rather than waiting."""
    import asyncio

    import httpx
    from fastapi import FastAPI

    from omron_tee.devnet.processes import free_port
    from omron_tee.wire.server import QuietServer, server_config

    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict:
        return {"ok": True}

    async def go():
        port = free_port()
        server = QuietServer(server_config(app, host="127.0.0.1", port=port))
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(trust_env=False) as c:
            r = await c.get(f"http://127.0.0.1:{port}/ping")
        assert r.json() == {"ok": True} and "date" in r.headers
        assert server.should_exit is False
        server.should_exit = True
        await asyncio.sleep(0)  # the wake-up is scheduled on the loop (call_soon_threadsafe): let it run
        woken = server._wake[1].is_set()
        await asyncio.wait_for(task, timeout=10)
        return woken

    assert asyncio.run(go()) is True


def test_every_peer_shares_one_tls_context() -> None:
    from omron_tee.wire.client import SignedClient, shared_tls_context

    async def go():
        signer = type("S", (), {"headers": lambda self, m, p, b, r: {}})()
        client = SignedClient(signer)
        try:
            return client._session().connector._ssl  # noqa: SLF001: one connector for every peer, with this context
        finally:
            await client.aclose()

    assert asyncio.run(go()) is shared_tls_context()


def test_a_server_closes_requests_that_never_arrive_and_caps_connections_per_address(free_port, monkeypatch) -> None:
    """uvicorn alone keeps an idle connection, or one sending its head a byte at a time, open for ever: a peer could
    hold every file descriptor a miner has. Ours: a request must arrive whole within REQUEST_READ_S of the connection
    (or of the previous answer), while a request that arrived may take as long as its answer does; and one address
    holds at most MAX_CONNECTIONS_PER_ADDRESS connections (more are closed on arrival, none refused once one closes)."""
    import socket

    from omron_tee.wire import server as wire_server
    from omron_tee.wire.server import QuietServer, server_config

    monkeypatch.setattr(wire_server, "REQUEST_READ_S", 0.5)
    monkeypatch.setattr(wire_server, "MAX_CONNECTIONS_PER_ADDRESS", 3)

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await asyncio.sleep(1.0)  # longer than the deadline to arrive: answering is not arriving
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    def closed_within(s: socket.socket, seconds: float) -> bool:
        s.settimeout(seconds)
        try:
            return s.recv(100) == b""
        except socket.timeout:
            return False

    async def go(port: int) -> None:
        def connect() -> socket.socket:
            return socket.create_connection(("127.0.0.1", port), timeout=5)

        idle, trickle = connect(), connect()
        trickle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        slow_answer = connect()
        slow_answer.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        extra = connect()  # the fourth from this address
        assert await asyncio.to_thread(closed_within, extra, 0.3)
        assert await asyncio.to_thread(closed_within, idle, 3.0) and await asyncio.to_thread(closed_within, trickle, 3.0)
        slow_answer.settimeout(5)
        assert (await asyncio.to_thread(slow_answer.recv, 200)).startswith(b"HTTP/1.1 200")  # came after 1 s: not cut at 0.5 s
        served = connect()  # the closed ones no longer count
        served.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        served.settimeout(5)
        assert (await asyncio.to_thread(served.recv, 200)).startswith(b"HTTP/1.1 200")
        for s in (idle, trickle, slow_answer, extra, served):
            s.close()

    async def main() -> None:
        port = free_port()
        server = QuietServer(server_config(app, host="127.0.0.1", port=port))
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        try:
            await go(port)
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, timeout=10)

    asyncio.run(main())

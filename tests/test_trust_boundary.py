"""The trust boundary piece by piece: what the enclave, the routes, the API quota, the identity
registry and the signed client do with hostile input (the hostile-miner suite runs them together)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from bittensor import http_auth

from omron_tee.attestation.binding import EnclavePublicKeys
from omron_tee.attestation.evidence import Claims, TeeType
from omron_tee.channel.hpke import KemSuite, request_info, seal
from omron_tee.errors import AuthError, ChannelError, MinerError, RateLimited
from omron_tee.exchange.requester import check_attestation, new_nonce, seal_request
from omron_tee.miner.server import build_app
from omron_tee.models.registry import ModelRegistry
from omron_tee.protocol import AttestRequest, InferRequest, SealedRequest, b64, dumps
from omron_tee.workloads.tensor import Tensor, TensorWorkload
from omron_tee.validator.api.quota import ApiQuota
from omron_tee.validator.identity import Identity, IdentityRegistry, identities_of
from omron_tee.wire.auth import Admission, RequestVerifier, Signer
from omron_tee.wire.client import SignedClient

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


def _session(sim, app, kem=KemSuite.X25519):
    nonce = new_nonce()
    return check_attestation(app.attest(AttestRequest(nonce, kem.value, sim.hotkey)), hotkey=sim.hotkey, nonce=nonce,
                             policy=sim.policy, registry=sim.verifiers, kem=kem)


def session_registry() -> ModelRegistry:
    return ModelRegistry.builtin()


def _sealed(session, fields: dict) -> tuple[InferRequest, object]:
    """A sealed request whose plaintext is ``fields`` over a genuine request's reply route."""
    spec = session_registry().get("digits-mlp")
    good_req, pending = seal_request(session, TensorWorkload(), spec, np.zeros((1, 64), dtype=np.float32))
    good = SealedRequest(pending.nonce, "digits-mlp", "tensor", Tensor.from_array(np.zeros((1, 64), dtype=np.float32)).to_json(),
                         pending._reply_secret, session.evidence_hash)
    doc = {**__import__("json").loads(good.encode()), **fields}
    sealed = seal(session.kem, session.keys.hpke_public, dumps(doc), request_info(session.key_id))
    return InferRequest(session.key_id, sealed), pending


# --- the enclave: every malformed sealed payload gets a sealed, named refusal -------------------


@pytest.mark.parametrize(("fields", "reason"), [
    ({"input": {"dtype": "float32", "shape": [2**20] * 4, "data": ""}}, "too-large"),
    ({"input": {"dtype": ["float32"], "shape": [1, 64], "data": b64(bytes(256))}}, "malformed-message"),
    ({"input": {"dtype": "float32", "shape": [1, 63], "data": b64(bytes(252))}}, "model"),  # the model's input is (1, 64)
    ({"model": ["digits-mlp"]}, "malformed-message"),
    ({"workload": {"x": 1}}, "malformed-message"),
    ({"workload": "alchemy"}, "unsupported"),
    ({"workload": "llm"}, "unsupported"),  # a tensor model does not run as an LLM
    ({"evidence_hash": 5}, "malformed-message"),
])
def test_malformed_sealed_payloads_get_sealed_named_refusals(sim, fields, reason, caplog) -> None:
    app = sim.app()
    session = _session(sim, app)
    request, pending = _sealed(session, fields)
    response = asyncio.run(app.answer_whole(app.open(request)))  # no exception: an answer, sealed to the requester
    with pytest.raises(ChannelError) as e:
        pending.feed(response)
    assert e.value.reason == "enclave-refused" and reason in str(e.value)
    assert "Traceback" not in caplog.text and "float32" not in caplog.text


def test_a_sealed_request_without_a_reply_route_is_refused_in_the_clear_saying_nothing(sim) -> None:
    app = sim.app()
    session = _session(sim, app)
    sealed = seal(session.kem, session.keys.hpke_public, dumps({"input": {"shape": [1, 2, 3]}}), request_info(session.key_id))
    with pytest.raises(Exception) as e:
        app.open(InferRequest(session.key_id, sealed))
    assert getattr(e.value, "reason", None) == "malformed-message" and "shape" not in str(e.value)


def test_the_enclave_refuses_to_attest_for_another_hotkey(sim) -> None:
    with pytest.raises(AuthError) as e:
        sim.app().attest(AttestRequest(new_nonce(), KemSuite.X25519.value, "5SomeOtherMiner"))
    assert e.value.reason == "hotkey-mismatch"


@pytest.mark.parametrize("max_tokens", [-1, 0, 2**70, 1 << 17, 300])
def test_completion_requests_out_of_range_end_in_a_sealed_refusal(llm_sim, max_tokens) -> None:
    """max_tokens of -1 or 2^70 once aborted the stream after its header with a struct.error traceback."""
    import json

    from omron_tee.workloads.llm import LlmWorkload, Prompt

    app = llm_sim.app()
    session = _session(llm_sim, app)
    spec = llm_sim.registry.get("fake-llm")
    _, reader = seal_request(session, LlmWorkload(), spec, Prompt("hello", 8))
    good = SealedRequest(reader.nonce, spec.model_id, "llm", {"prompt": "hello", "max_tokens": max_tokens},
                         reader._reply_secret, session.evidence_hash)
    request = InferRequest(session.key_id, seal(session.kem, session.keys.hpke_public, good.encode(), request_info(session.key_id)))
    assert json.loads(good.encode())["input"]["max_tokens"] == max_tokens
    with pytest.raises(ChannelError) as e:
        reader.feed(asyncio.run(app.answer_whole(app.open(request))))
    assert e.value.reason == "enclave-refused" and "bad-input" in str(e.value)


# --- every route goes through one guarded path --------------------------------------------------


def test_deep_json_on_every_miner_route_is_a_json_refusal(sim, make_wallet) -> None:
    me, caller = make_wallet("m"), make_wallet("c")
    app = sim.app(hotkey=me.hotkey.ss58_address)
    client = TestClient(build_app(app, RequestVerifier(me.hotkey.ss58_address, Admission.anyone())), raise_server_exceptions=False)
    body = b"[" * 100_000 + b"]" * 100_000
    for path in ("/attest", "/infer"):
        headers = http_auth.sign(caller, method="POST", path=path, body=body, receiver_ss58=me.hotkey.ss58_address)
        r = client.post(path, content=body, headers={**headers, "Content-Type": "application/json"})
        assert r.status_code == 400 and r.headers["content-type"].startswith("application/json"), (path, r.text[:200])
        assert r.json()["error"]["reason"] == "too-deep"


# --- the validator API's quota ------------------------------------------------------------------


def test_fresh_hotkeys_share_one_global_budget() -> None:
    """128 self-made hotkeys used to see no 429 at all: each had its own fresh burst."""
    q = ApiQuota(rate=20, burst=40, global_rate=0.001, global_burst=50)
    refused = 0
    for i in range(128):
        try:
            q.take(f"5Fresh{i}")
        except RateLimited:
            refused += 1
    assert refused == 128 - 50


def test_registered_and_staked_admission() -> None:
    stakes = {"5Registered": 0.0, "5Whale": 900.0, "5Minnow": 100.0}
    q = ApiQuota(admit="registered", stake_of=stakes.get, total_stake=lambda: sum(stakes.values()))
    q.take("5Registered")
    with pytest.raises(AuthError) as e:
        q.take("5Stranger")
    assert e.value.reason == "caller-not-registered"
    staked = ApiQuota(admit="staked", global_rate=100, global_burst=10_000, stake_of=stakes.get, total_stake=lambda: sum(stakes.values()))
    with pytest.raises(AuthError) as e:
        staked.take("5Registered")
    assert e.value.reason == "caller-not-staked"

    def burst(hotkey: str) -> int:
        n = 0
        try:
            while n < 10_000:
                staked.take(hotkey)
                n += 1
        except RateLimited:
            pass
        return n

    # The stake share sets the rate (and a burst of twice that): 90 % and 10 % of 100/s.
    assert 180 <= burst("5Whale") <= 181 and 20 <= burst("5Minnow") <= 21


# --- one enclave, one hotkey --------------------------------------------------------------------


def _claims(platform: bytes) -> Claims:
    return Claims(TeeType.SEV_SNP, bytes(48), bytes(64), False, platform_id=platform, evidence_digest=bytes(32))


def test_identity_registry_refuses_a_second_hotkey_for_one_machine_or_key() -> None:
    reg = IdentityRegistry()
    keys_a = EnclavePublicKeys("k", os.urandom(32), os.urandom(32))
    keys_b = EnclavePublicKeys("k", os.urandom(32), os.urandom(32))
    chip = os.urandom(64)
    assert reg.claim("A", identities_of(keys_a, _claims(chip))) is None
    assert reg.claim("A", identities_of(keys_a, _claims(chip))) is None  # the same miner again: fine
    conflict = reg.claim("B", identities_of(keys_b, _claims(chip)))  # new keys, same chip
    assert conflict is not None and "hardware" in conflict
    assert "enclave keys" in reg.claim("B", identities_of(keys_a, _claims(os.urandom(64))))  # same keys, another chip
    reg.retain({"B"})  # A deregistered: its machine may serve B now
    assert reg.claim("B", identities_of(keys_b, _claims(chip))) is None
    assert reg.owner(Identity("platform:sev-snp", chip)) == "B"


def test_identity_registry_is_bounded_per_hotkey() -> None:
    reg = IdentityRegistry()
    for _ in range(500):  # an enclave restarting forever: new keys each time
        assert reg.claim("A", identities_of(EnclavePublicKeys("k", os.urandom(32), os.urandom(32)), _claims(b""))) is None
    assert len(reg._owner) <= 64  # noqa: SLF001


# --- the signed client: the keep-alive race, retried on a fresh connection ----------------------


async def _against(handle, go, make_wallet):
    """``go(url, client)`` against a raw asyncio server running ``handle`` on a loopback port."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    client = SignedClient(Signer(make_wallet("c")), timeout=2.0)
    try:
        return await go(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", client)
    finally:
        await client.aclose()
        server.close()


@pytest.mark.parametrize("method", ["post", "get"])
def test_a_connection_closed_under_a_reused_request_is_retried_not_charged(make_wallet, method) -> None:
    """The server answers the first request on each connection, then closes the next one unanswered
    (what an idle close racing our reuse looks like): the client retries once, on a new connection,
    for a signed POST and for a public GET alike."""
    served = {"connections": 0}

    async def handle(reader, writer):
        served["connections"] += 1
        first = True
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next((line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0))
                await reader.readexactly(length)
                if not first:
                    break  # close without answering
                first = False
                body = b'{"ok": true}'
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def go(url: str, client: SignedClient):
        ask = (lambda: client.post(url, "/x", {}, receiver=None)) if method == "post" else (lambda: client.get(url, "/x"))
        assert await ask() == {"ok": True}
        assert await ask() == {"ok": True}  # reused, closed, retried
        return served["connections"]

    assert asyncio.run(_against(handle, go, make_wallet)) == 2


async def _reason_against(reply: bytes, make_wallet, linger: float = 0.0) -> str:
    """The reason ``SignedClient.post`` names against a peer that reads a request's head, writes ``reply``,
    waits ``linger`` seconds and closes."""
    async def handle(reader, writer):
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(reply)
            await writer.drain()
            await asyncio.sleep(linger)
        writer.close()

    async def go(url: str, client: SignedClient):
        with pytest.raises(MinerError) as e:
            await client.post(url, "/x", {}, receiver=None)
        return e.value.reason

    return await _against(handle, go, make_wallet)


def test_a_peer_that_always_closes_mid_reply_is_named(make_wallet) -> None:
    assert asyncio.run(_reason_against(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"a\":", make_wallet)) == "disconnected"


# --- the signed client against a hostile head: nothing followed, inflated or buffered unbounded --


_HOSTILE_HEADS = {
    # a compressed answer would be inflated past the size cap: refused, never decoded
    "gzip": (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 20\r\n\r\n" + b"\x1f\x8b" + bytes(18), "malformed-reply"),
    "declared-too-large": (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n{}", "too-large"),
    "many-headers": (b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(1000)) + b"Content-Length: 2\r\n\r\n{}", "malformed-reply"),
    "long-header": (b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 100_000 + b"\r\nContent-Length: 2\r\n\r\n{}", "malformed-reply"),
    "not-http": (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "malformed-reply"),
    "two-lengths": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{}", "malformed-reply"),
}


@pytest.mark.parametrize("behaviour", sorted(_HOSTILE_HEADS))
def test_a_hostile_head_is_a_named_refusal(make_wallet, behaviour) -> None:
    head, reason = _HOSTILE_HEADS[behaviour]
    assert asyncio.run(_reason_against(head, make_wallet, linger=0.5)) == reason


def test_a_redirect_is_not_followed(make_wallet) -> None:
    """A miner answering 307 to another address must not turn the validator's signed request into one
    sent wherever the miner likes: the redirect is the miner's refusal, and the target hears nothing."""
    target = {"connections": 0}

    async def elsewhere(reader, writer):
        target["connections"] += 1
        writer.close()

    async def go():
        other = await asyncio.start_server(elsewhere, "127.0.0.1", 0)
        there = f"http://127.0.0.1:{other.sockets[0].getsockname()[1]}/steal".encode()
        try:
            return await _reason_against(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % there, make_wallet)
        finally:
            other.close()

    assert asyncio.run(go()) == "http-error"
    assert target["connections"] == 0


# --- onnxruntime's telemetry is off -------------------------------------------------------------


def test_onnxruntime_writes_no_telemetry(tmp_path: Path) -> None:
    code = "from omron_tee.models.registry import ModelRegistry; ModelRegistry.builtin().runtime('digits-mlp')"
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("ORT_DISABLE_TELEMETRY", None)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    assert not (tmp_path / ".cache" / "Microsoft").exists()
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


# --- a bug of ours is not the miner's fault, unless one miner keeps triggering it ----------------


def test_validator_faults_are_not_charged_until_one_miner_repeats_them(sim, tmp_path) -> None:
    from omron_tee.chain.base import Endpoint, Neuron
    from omron_tee.validator.prober import MAX_UNCHARGED_FAULTS, Prober
    from omron_tee.validator.scoring import ScoreBook

    from omron_tee.workloads import default_workloads

    prober = Prober(None, policy=sim.policy, verifiers=sim.verifiers, models=sim.registry, workloads=default_workloads(), model_ids=["digits-mlp"],  # type: ignore[arg-type]
                    seed=0)
    neuron = Neuron(1, sim.hotkey, "5Cold", 0.0, False, Endpoint("127.0.0.1", 9), 0.0, 0.0, 0.0, 0)
    book = ScoreBook(tmp_path / "scores.sqlite")
    book.record(neuron.hotkey, 1).score = 0.5

    async def buggy(*args, **kwargs):
        raise RuntimeError("a bug of ours")

    prober._probe = buggy  # type: ignore[method-assign]
    outcomes = [asyncio.run(prober.probe(neuron)).outcome for _ in range(MAX_UNCHARGED_FAULTS)]
    scores = [book.update(o)[1] for o in outcomes]
    assert [o.reason for o in outcomes] == ["validator-fault"] * (MAX_UNCHARGED_FAULTS - 1) + ["internal-error"]
    assert scores[: MAX_UNCHARGED_FAULTS - 1] == [0.5] * (MAX_UNCHARGED_FAULTS - 1)  # not charged
    assert scores[-1] < 0.5  # the same miner every time: charged


def test_evidence_of_a_type_the_policy_has_no_rules_for_is_refused_unread(sim) -> None:
    """SEV-SNP evidence before a validator whose policy accepts only simulated enclaves: refused as unsupported-tee
    without being verified, so the collateral store (here one that would fetch from AMD KDS) is never asked."""
    from omron_tee.attestation.collateral.store import CollateralStore
    from omron_tee.attestation.defaults import default_registry
    from omron_tee.attestation.testing.snp import SnpTestPki
    from omron_tee.attestation.validate.appraise import appraise_bound

    asked = []

    class Kds:
        def fetch_vcek(self, product, chip_id, tcb):
            asked.append(chip_id)
            raise AssertionError("asked")

    pki = SnpTestPki(1_790_000_000.0)
    registry = default_registry(simulated_keys=[sim.dev_public], collateral=CollateralStore(amd_client=Kds()))  # type: ignore[arg-type]
    verdict = appraise_bound(pki.evidence(version=3, certificates=b""), report_data=bytes(64), policy=sim.policy, registry=registry,
                             now=1_790_000_000.0)
    assert not verdict.accepted and verdict.reason_code == "unsupported-tee" and asked == []


def test_evidence_naming_a_new_chip_each_probe_never_holds_the_validator_nor_a_score(sim, tmp_path) -> None:
    """A miner answering every attestation with SEV-SNP evidence for a chip no one has heard of, a new chip each
    time and no VCEK: the validator's store fetches in the background, so no probe waits for AMD KDS (held here
    for the whole test); the first probes are not charged (collateral-pending: the validator cannot judge yet),
    then the miner is unavailable each time (its score decays; no strike, since nothing was judged)."""
    import threading

    from omron_tee.attestation.collateral.store import CollateralStore
    from omron_tee.attestation.defaults import default_registry
    from omron_tee.attestation.evidence import Evidence
    from dataclasses import replace

    from omron_tee.attestation.testing.snp import SnpTestPki
    from omron_tee.attestation.validate.policy import SnpPolicy
    from omron_tee.chain.base import Endpoint, Neuron
    from omron_tee.validator.prober import MAX_UNCHARGED_FAULTS, Prober
    from omron_tee.validator.scoring import ScoreBook

    from tests.inprocess import InProcessClient

    pki = SnpTestPki(1_790_000_000.0)
    held = threading.Event()
    asked: list[bytes] = []

    class HeldKds:
        def fetch_vcek(self, product, chip_id, tcb):
            asked.append(chip_id)
            held.wait(30)
            raise AssertionError("KDS is held for the whole test")

    def unknown_chip(attestation: dict) -> dict:
        report = pki.report(chip_id=os.urandom(64), version=3, report_data=bytes(64))
        return attestation | {"evidence": Evidence(TeeType.SEV_SNP, report, certificates=b"").to_json()}

    store = CollateralStore(amd_client=HeldKds(), background=True)  # type: ignore[arg-type]
    verifiers = default_registry(simulated_keys=[sim.dev_public], collateral=store)
    client = InProcessClient({"http://127.0.0.1:1": sim.app()}, corrupt_attest=unknown_chip)
    # A validator that accepts SEV-SNP (evidence of a type its policy has no rules for is refused unread).
    policy = replace(sim.policy, sev_snp=SnpPolicy(measurements=frozenset([bytes(48)])))
    prober = Prober(client, policy=policy, verifiers=verifiers, models=sim.registry, model_ids=["digits-mlp"], seed=0)  # type: ignore[arg-type]
    neuron = Neuron(1, sim.hotkey, "5Cold", 0.0, False, Endpoint("127.0.0.1", 1), 0.0, 0.0, 0.0, 0)
    book = ScoreBook(tmp_path / "scores.sqlite")
    book.record(neuron.hotkey, 1).score = 0.5
    try:
        outcomes = [asyncio.run(prober.probe(neuron)).outcome for _ in range(MAX_UNCHARGED_FAULTS + 1)]
        assert not held.is_set()  # every probe above ended while KDS had not answered once
    finally:
        held.set()
    verdicts = [book.update(o) for o in outcomes]
    assert [o.reason for o in outcomes] == ["collateral-pending"] * (MAX_UNCHARGED_FAULTS - 1) + ["unjudged-too-often"] * 2
    assert [s for _, s in verdicts[: MAX_UNCHARGED_FAULTS - 1]] == [0.5] * (MAX_UNCHARGED_FAULTS - 1)  # not charged
    assert 0 < verdicts[-1][1] < verdicts[-2][1] < 0.5  # then decaying, as an outage: not struck to zero
    assert book.records[neuron.hotkey].strikes == 0 and len(asked) <= 1


# --- streamed answers (LLM) are bounded too -----------------------------------------------------


@pytest.mark.parametrize(("behaviour", "reason"), [("trickle", "timeout"), ("flood", "too-large")])
def test_a_streamed_answer_is_cut_off_at_its_deadline_or_size(make_wallet, behaviour, reason) -> None:
    from omron_tee.wire.auth import Signer
    from omron_tee.wire.client import SignedClient

    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(10_000):
                data = b"x" if behaviour == "trickle" else b"y" * 65536
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                await writer.drain()
                if behaviour == "trickle":
                    await asyncio.sleep(0.2)  # a byte at a time: no read ever times out
        except ConnectionError:
            pass
        writer.close()

    async def go():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/s"
        try:
            client = SignedClient(Signer(make_wallet("v")))
            try:
                with pytest.raises(MinerError) as e:
                    async with client.stream(url.rsplit("/", 1)[0], "/s", {}, receiver=None, timeout=1.0, max_bytes=1 << 20) as body:
                        async for _ in body:
                            pass
                return e.value.reason
            finally:
                await client.aclose()
        finally:
            server.close()

    assert asyncio.run(go()) == reason


def test_an_attestation_reply_of_many_small_elements_is_refused_on_its_bytes(make_wallet) -> None:
    """Within the reply's byte cap but with more elements than any attestation has: too-large, before it is
    decoded on the validator's event loop (what a hostile miner would use to stall the others' probes)."""
    from omron_tee.exchange import transport
    from omron_tee.protocol import AttestRequest

    body = b"[" + b"[0]," * (transport.MAX_ATTEST_REPLY_ITEMS // 2) + b"[0]]"
    assert len(body) < transport.MAX_ATTEST_REPLY_BYTES

    async def handle(reader, writer):
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
        writer.close()

    async def go(url: str, client: SignedClient):
        with pytest.raises(MinerError) as e:
            await transport.attest(client, url, AttestRequest(b"\0" * 32, "x25519-hkdf-sha256-aes256gcm"), receiver=None, timeout=2.0)
        return e.value.reason

    assert asyncio.run(_against(handle, go, make_wallet)) == "too-large"

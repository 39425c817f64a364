"""Third parties through the validator's API: verified private results, client-side policy,
fail-over within the deadline, rate limits, saved receipts checked by the CLI, and no private
data in any log."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from bittensor import http_auth

from omron_tee.client import PrivateClient
from omron_tee.errors import AttestationError, MinerError, OmronTeeError
from omron_tee.exchange.receipt_file import verify_receipt_file
from omron_tee.exchange.requester import candidate_nonce, check_attestation, new_nonce, seal_request
from omron_tee.protocol import RelayReply
from omron_tee.workloads import default_workloads
from omron_tee.attestation.validate.policy import simulated_policy_toml as policy_toml
from omron_tee.models.registry import ModelRegistry
from omron_tee.protocol import AttestResponse, b64, dumps
from omron_tee.validator.api.quota import AddressQuota
from omron_tee.wire.ratelimit import address_key
from omron_tee.validator.api.routes import ApiQuota, build_api
from omron_tee.validator.neuron import build_verifiers
from omron_tee.wire.auth import Admission, RequestVerifier, Signer
from omron_tee.wire.client import SignedClient

MODELS = ModelRegistry.builtin()


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    """An in-process validator with its third-party API served by uvicorn in the running loop."""

    def __init__(self, net, scores_path: Path, **api_kw) -> None:
        self.net = net
        self.v = net.validator(scores_path)
        self.v.sync()
        self.api = build_api(self.v, RequestVerifier(self.v.hotkey, Admission.anyone()), **api_kw)
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.policy = self.v.prober.policy
        self.verifiers = self.v.prober.verifiers

    async def __aenter__(self) -> "Api":
        self.server = uvicorn.Server(uvicorn.Config(self.api, host="127.0.0.1", port=self.port, log_level="warning", access_log=False))
        self.task = asyncio.create_task(self.server.serve())
        t0 = time.monotonic()
        while not self.server.started:
            assert time.monotonic() - t0 < 10
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.should_exit = True
        await self.task
        await self.v.prober.client.aclose()
        self.v.scores.close()

    def client(self, **kw) -> PrivateClient:
        kw.setdefault("policy", self.policy)
        kw.setdefault("verifiers", self.verifiers)
        return PrivateClient(self.url, self.v.hotkey, self.net.client_wallet, **kw)


WORKLOADS = default_workloads()


def _verify(data, policy, verifiers, **kw):
    return verify_receipt_file(data, policy=policy, verifiers=verifiers, workloads=WORKLOADS, models=MODELS, **kw)


def _secret_input(spec) -> np.ndarray:
    """A recognisable private input: digits of pi and e, nothing a benchmark would send."""
    n = int(np.prod(spec.input_shape))
    return np.linspace(-3.1415926, 2.7182818, n, dtype=np.float32).reshape(spec.input_shape)


def _fingerprints(a: np.ndarray) -> list[str]:
    raw = np.ascontiguousarray(a).tobytes()
    return [
        base64.b64encode(raw).decode()[:40],
        base64.b64encode(raw[1:]).decode()[4:40],
        base64.b64encode(raw[2:]).decode()[4:40],
        raw.hex()[:40],
        repr(a)[:60],
        np.array2string(a.reshape(-1)[:4]),
        repr(float(a.reshape(-1)[0])),
    ]


def test_private_inference_through_the_validator(net, tmp_path, caplog, capfd) -> None:
    caplog.set_level(logging.DEBUG)
    spec = MODELS.get("digits-mlp")
    x = _secret_input(spec)

    async def go():
        async with Api(net, tmp_path / "scores.sqlite") as api:
            c = api.client()
            try:
                # Fresh scores rank miners by uid: slow, honest, wrong, unapproved.
                r = await c.infer(spec.model_id, x, candidates=4, deadline_s=8.0)
            finally:
                await c.aclose()
            return r, c, {h: dict(rec.reasons) for h, rec in api.v.scores.records.items()}, api

    t0 = time.monotonic()
    r, c, relay_reasons, api = asyncio.run(go())
    elapsed = time.monotonic() - t0
    m = net.miners
    # Verified, and the output is what the model gives.
    np.testing.assert_allclose(r.result.output, MODELS.runtime(spec.model_id).run(x), rtol=1e-6, atol=1e-6)
    assert r.miner_hotkey == m["honest"].hotkey
    r.receipt.verify(r.session.keys.signing_public)
    # The receipt names the canonical digest of the evidence the client verified.
    claims = api.verifiers.verify(r.session.evidence, now=time.time())
    assert r.receipt.evidence_hash == claims.evidence_digest
    # The client itself refused the unapproved build's evidence.
    assert [(j.hotkey, j.reason) for j in c.last_rejected] == [(m["unapproved"].hotkey, "measurement-not-allowed")]
    # The slow miner was tried first and timed out; the relay moved on within the deadline.
    assert relay_reasons[m["slow"].hotkey] == {"timeout": 1}
    assert relay_reasons[m["honest"].hotkey] == {"ok": 1}
    assert m["wrong"].hotkey not in relay_reasons  # never needed
    assert elapsed < 8.0
    # The saved receipt checks offline.
    path = tmp_path / "receipt.json"
    c.receipt_file(r).save(path)
    check = _verify(json.loads(path.read_text()), api.policy, api.verifiers, model_hash=spec.sha256)
    assert check.ok, check.reasons
    # No private input or output in any log: miners' files, this process's logs and output.
    out, err = capfd.readouterr()
    logs = {"miners": net.miner_logs(), "caplog": caplog.text, "stdout": out, "stderr": err}
    assert "relay to uid" in caplog.text  # the validator did log the fail-over...
    for name, text in logs.items():
        for fp in _fingerprints(x) + _fingerprints(r.result.output):
            assert fp not in text, f"private data ({fp!r}) in {name}"


def test_client_policy_refuses_every_candidate(net, tmp_path) -> None:
    """A client whose own policy trusts no build refuses them all, whatever the validator offers."""
    spec = MODELS.get("diabetes-mlp")

    async def go():
        async with Api(net, tmp_path / "scores.sqlite") as api:
            strict = api.policy.__class__(simulated=api.policy.simulated.__class__(allow=True, trusted_keys=api.policy.simulated.trusted_keys, measurements=frozenset()))
            c = api.client(policy=strict)
            try:
                with pytest.raises(AttestationError) as e:
                    await c.infer(spec.model_id, np.zeros(spec.input_shape, np.float32), candidates=3)
            finally:
                await c.aclose()
            return e.value

    e = asyncio.run(go())
    assert e.reason == "no-attested-miner"
    assert "measurement-not-allowed" in str(e)


def test_relay_fails_over_and_says_what_it_tried(net, tmp_path) -> None:
    spec = MODELS.get("breast-cancer-mlp")
    m = net.miners

    async def go():
        async with Api(net, tmp_path / "scores.sqlite") as api:
            http = SignedClient(Signer(net.client_wallet), timeout=10)
            try:
                nonce = new_nonce()
                raw = await http.post(api.url, "/v1/attest", {"model": spec.model_id, "nonce": b64(nonce), "count": 8}, receiver=api.v.hotkey)
                cands = {c["hotkey"]: AttestResponse.from_json(c["attest"]) for c in raw["candidates"]}
                failures = {f["hotkey"]: f["reason"] for f in raw["failures"]}
                sessions = {h: check_attestation(cands[h], hotkey=h, nonce=candidate_nonce(nonce, h), policy=api.policy, registry=api.verifiers) for h in (m["slow"].hotkey, m["honest"].hotkey)}
                x = _secret_input(spec)
                reqs = {h: seal_request(s, WORKLOADS.get("tensor"), spec, x) for h, s in sessions.items()}
                attempts = [
                    {"hotkey": m["slow"].hotkey, "request": reqs[m["slow"].hotkey][0].to_json()},
                    {"hotkey": m["down"].hotkey, "request": reqs[m["honest"].hotkey][0].to_json()},
                    {"hotkey": "5NotAMiner", "request": reqs[m["honest"].hotkey][0].to_json()},
                    {"hotkey": m["honest"].hotkey, "request": reqs[m["honest"].hotkey][0].to_json()},
                ]
                async with http.stream(api.url, "/v1/infer", {"model": spec.model_id, "deadline_ms": 8000, "attempts": attempts}, receiver=api.v.hotkey) as body:
                    reply = RelayReply.from_headers(body.headers)
                    reader = reqs[reply.hotkey][1]
                    reader.feed(await body.read())
                result = reader.close()
                # A deadline too short for the only (slow) miner: a named failure, not a hang.
                t0 = time.monotonic()
                with pytest.raises(MinerError) as e:
                    async with http.stream(api.url, "/v1/infer", {"model": spec.model_id, "deadline_ms": 400, "attempts": attempts[:1]}, receiver=api.v.hotkey):
                        pass
                short = time.monotonic() - t0
            finally:
                await http.aclose()
            return failures, reply, result, x, e.value, short

    failures, reply, result, x, err, short = asyncio.run(go())
    assert failures.get(m["down"].hotkey) == "unreachable"
    assert reply.hotkey == m["honest"].hotkey
    assert [t.to_json() for t in reply.tried] == [
        {"hotkey": m["slow"].hotkey, "reason": "timeout"},
        {"hotkey": m["down"].hotkey, "reason": "unreachable"},
        {"hotkey": "5NotAMiner", "reason": "not-serving"},
        {"hotkey": m["honest"].hotkey, "reason": "ok"},
    ]
    np.testing.assert_allclose(result.result.output, MODELS.runtime(spec.model_id).run(x), rtol=1e-6, atol=1e-6)
    assert err.reason == "all-miners-failed"
    assert short < 2.0


def test_api_rate_limit_and_auth(net, tmp_path, make_wallet) -> None:
    spec = MODELS.get("digits-mlp")

    async def go():
        async with Api(net, tmp_path / "scores.sqlite", quota=ApiQuota(rate=0.01, burst=2)) as api:
            def signed(wallet, body, receiver):
                h = http_auth.sign(wallet, method="POST", path="/v1/attest", body=body, receiver_ss58=receiver)
                return {**h, "Content-Type": "application/json"}

            out = []
            async with httpx.AsyncClient(trust_env=False, timeout=10) as h:
                for _ in range(3):
                    body = dumps({"model": spec.model_id, "nonce": b64(new_nonce()), "count": 1})
                    out.append(await h.post(api.url + "/v1/attest", content=body, headers=signed(net.client_wallet, body, api.v.hotkey)))
                # Another client has its own bucket.
                body = dumps({"model": spec.model_id, "nonce": b64(new_nonce()), "count": 1})
                out.append(await h.post(api.url + "/v1/attest", content=body, headers=signed(make_wallet("other-client"), body, api.v.hotkey)))
                # Unsigned, and signed for another receiver.
                out.append(await h.post(api.url + "/v1/attest", content=body, headers={"Content-Type": "application/json"}))
                out.append(await h.post(api.url + "/v1/attest", content=body, headers=signed(net.client_wallet, body, net.miners["honest"].hotkey)))
                # An unknown model and a bad count are named refusals.
                for payload in ({"model": "gpt-9", "nonce": b64(new_nonce())}, {"model": spec.model_id, "nonce": b64(new_nonce()), "count": 99}):
                    body = dumps(payload)
                    out.append(await h.post(api.url + "/v1/attest", content=body, headers=signed(make_wallet("third"), body, api.v.hotkey)))
                models = await h.get(api.url + "/v1/models")
            return out, models

    out, models = asyncio.run(go())
    assert [r.status_code for r in out[:4]] == [200, 200, 429, 200]
    for r, status, reason in ((out[2], 429, "rate-limited"), (out[4], 401, "malformed-auth"), (out[5], 401, "wrong-receiver"), (out[7], 400, "malformed-message")):
        assert r.status_code == status, r.text
        assert r.json()["error"]["reason"] == reason
        assert "Traceback" not in r.text
    assert out[6].status_code in (400, 404, 422) and "error" in out[6].json()
    ids = {m["id"]: m["sha256"] for m in models.json()["models"]}
    assert ids == {s.model_id: s.sha256.hex() for s in MODELS.specs()}


def test_a_flood_from_one_address_is_refused_before_it_is_read(net, tmp_path) -> None:
    """Per address, before anything is done for a request: the fourth GET /status of a burst of three is 429 with
    Retry-After; so is an unsigned POST (refused as rate-limited, not as unsigned: its signature was never looked at);
    /health is never limited; another address has its own bucket; and the unsigned routes of every address
    together share one budget."""

    def from_address(ip: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(trust_env=False, timeout=10, transport=httpx.AsyncHTTPTransport(local_address=ip))

    async def go():
        addresses = AddressQuota(rate=0.01, burst=3, public_rate=0.01, public_burst=6)
        async with Api(net, tmp_path / "scores.sqlite", addresses=addresses) as api:
            async with from_address("127.0.0.1") as a, from_address("127.0.0.2") as b, from_address("127.0.0.3") as c:
                first = [await a.get(api.url + "/status") for _ in range(4)]
                unsigned_post = await a.post(api.url + "/v1/attest", content=b"{}", headers={"Content-Type": "application/json"})
                health = [await a.get(api.url + "/health") for _ in range(5)]
                other = [await b.get(api.url + "/v1/audit") for _ in range(2)]
                third = [await c.get(api.url + "/v1/dashboard") for _ in range(2)]  # the shared budget of 6: 3 + 2 + 1
            metrics = api.v.metrics.render().decode()
        return first, unsigned_post, health, other, third, metrics

    first, unsigned_post, health, other, third, metrics = asyncio.run(go())
    assert [r.status_code for r in first] == [200, 200, 200, 429]
    for r in (first[3], unsigned_post):
        assert r.status_code == 429 and r.json()["error"]["reason"] == "rate-limited", r.text
        assert "this address" in r.json()["error"]["message"] and int(r.headers["retry-after"]) >= 1
    assert [r.status_code for r in health] == [200] * 5
    assert [r.status_code for r in other] == [200, 200]
    assert [r.status_code for r in third] == [200, 429]
    assert "all callers of the unsigned routes" in third[1].json()["error"]["message"]
    assert 'omron_tee_api_refusals_total{reason="rate-limited"} 3.0' in metrics


def test_an_address_bucket_is_an_ipv4_address_or_an_ipv6_64() -> None:
    assert address_key("203.0.113.7") == "ip:203.0.113.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff::9") == "ip:2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:203.0.113.7") == "ip:203.0.113.7"
    assert address_key(None) == address_key("testclient") == "addr:unknown"


def test_metrics_health_and_status_are_scraped(net, tmp_path, make_wallet, capsys) -> None:
    """/metrics (Prometheus text), /health and /status after real probes, a relayed request and API refusals."""
    from prometheus_client.parser import text_string_to_metric_families

    spec = MODELS.get("digits-mlp")

    async def go():
        async with Api(net, tmp_path / "scores.sqlite", quota=ApiQuota(rate=0.01, burst=2)) as api:
            for _ in range(2):
                await api.v.step(len(api.v.miners()))
            await api.v.set_weights()
            c = api.client()
            try:
                await c.infer(spec.model_id, _secret_input(spec), candidates=4, deadline_s=8.0)  # one relayed exchange (and the burst spent)
                with pytest.raises(OmronTeeError):
                    await c.infer(spec.model_id, _secret_input(spec), candidates=4)  # rate-limited
            finally:
                await c.aclose()
            async with httpx.AsyncClient(trust_env=False, timeout=10) as h:
                metrics, health, status = [await h.get(api.url + p) for p in ("/metrics", "/health", "/status")]
            from omron_tee.cli import main

            capsys.readouterr()
            rc = await asyncio.to_thread(main, ["status", "--chain.path", str(net.chain_path), "--validator", api.url, "--json"])
            return api, metrics, health.json(), status.json(), rc, json.loads(capsys.readouterr().out)

    api, metrics, health, status, rc, table = asyncio.run(go())
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(metrics.text):
        for s in family.samples:
            samples.setdefault(s.name, []).append(s)

    def total(name, **labels):
        return sum(s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))

    m = net.miners
    assert total("omron_tee_probes_total", reason="ok", latency_class="tee") >= 2
    for reason in ("wrong-output", "measurement-not-allowed", "timeout", "unreachable"):
        assert total("omron_tee_probes_total", reason=reason) >= 2, reason
    assert total("omron_tee_attestations_total", verdict="accepted") >= 6 and total("omron_tee_attestations_total", verdict="rejected") >= 2
    assert total("omron_tee_probe_latency_seconds_count", latency_class="tee") >= 2
    assert total("omron_tee_relayed_total", reason="ok") >= 1
    assert total("omron_tee_api_refusals_total", reason="rate-limited") >= 1
    assert total("omron_tee_weight_settings_total") >= 1
    scores = {s.labels["uid"]: s.value for s in samples["omron_tee_miner_score"]}
    assert scores[str(m["honest"].uid)] > 0 and scores[str(m["wrong"].uid)] == 0
    if total("omron_tee_weight_settings_total", result="ok"):
        assert {s.labels["uid"] for s in samples["omron_tee_miner_weight"]} >= {str(m["honest"].uid)}
    assert "secret" not in metrics.text and "3.14159" not in metrics.text
    assert health["ok"] is True and health["hotkey"] == api.v.hotkey
    by_uid = {row["uid"]: row for row in status["miners"]}
    assert by_uid[m["wrong"].uid]["reasons"].get("wrong-output", 0) >= 2 and by_uid[m["honest"].uid]["score"] > 0
    # `omron-tee status` shows the same, beside the metagraph.
    rows = {r["uid"]: r for r in table["neurons"]}
    assert rc == 0 and rows[m["honest"].uid]["score"] == by_uid[m["honest"].uid]["score"] and rows[m["wrong"].uid]["top_reason"] == "wrong-output"


def test_metrics_labels_stay_bounded_whatever_miners_answer() -> None:
    """A miner choosing a new refusal reason per probe cannot grow the metrics: unknown reasons are 'other'."""
    from omron_tee.validator.metrics import ValidatorMetrics
    from omron_tee.validator.scoring import Outcome

    metrics = ValidatorMetrics()
    for i in range(500):
        metrics.outcome(Outcome("5Miner", 1, False, f"made-up-{i}", None, True, None), 0.0)
    text = metrics.render().decode()
    assert "made-up" not in text and 'reason="other"' in text
    assert text.count("omron_tee_probes_total{") == 1


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "omron_tee.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_saved_receipt_verified_by_cli(net, tmp_path) -> None:
    spec = MODELS.get("digits-mlp")
    x = _secret_input(spec)

    async def go():
        async with Api(net, tmp_path / "scores.sqlite") as api:
            c = api.client()
            try:
                return await c.infer(spec.model_id, x, candidates=2), c, api.policy
            finally:
                await c.aclose()

    r, c, policy = asyncio.run(go())
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(policy_toml(policy))
    other_policy = tmp_path / "other.toml"
    other_policy.write_text(policy_toml(policy).replace(policy.simulated.measurements.__iter__().__next__().hex(), "00" * 48))
    good = tmp_path / "receipt.json"
    c.receipt_file(r).save(good)
    no_output = tmp_path / "receipt-no-output.json"
    c.receipt_file(r, include_output=False).save(no_output)
    assert "result" not in json.loads(no_output.read_text())
    data = json.loads(good.read_text())

    def variant(name, mutate):
        d = json.loads(json.dumps(data))
        mutate(d)
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(d))
        return p

    def flip_b64(s: str) -> str:
        raw = bytearray(base64.b64decode(s))
        raw[0] ^= 1
        return base64.b64encode(bytes(raw)).decode()

    tampered = {
        "output": variant("t-output", lambda d: d["result"]["output"].update(data=flip_b64(d["result"]["output"]["data"]))),
        "signature": variant("t-sig", lambda d: d["receipt"].update(signature=("00" if d["receipt"]["signature"][:2] != "00" else "11") + d["receipt"]["signature"][2:])),
        "input_hash": variant("t-input", lambda d: d["receipt"].update(input_hash="ab" * 32)),
        "evidence": variant("t-evidence", lambda d: d["evidence"].update(quote=flip_b64(d["evidence"]["quote"]))),
        "keys": variant("t-keys", lambda d: d["keys"].update(signing_public=b64(b"\x01" * 32))),
    }
    # Every variant through the library function the CLI calls...
    def check(path, pol=policy, model_hash=None):
        return _verify(json.loads(Path(path).read_text()), pol, build_verifiers(pol), model_hash=model_hash)

    assert check(good).ok and check(no_output, model_hash=spec.sha256).ok
    assert not check(good, model_hash=b"\0" * 32).ok
    from omron_tee.attestation.validate.policy import Policy

    assert not check(good, pol=Policy.load(other_policy)).ok
    for k, p in tampered.items():
        c = check(p)
        assert not c.ok and c.reasons, k
    # ...and the CLI itself, as a user runs it (a few processes: each one imports the stack).
    procs = {
        "good": _cli("receipt", "verify", str(good), "--policy", str(policy_file)),
        "tampered": _cli("receipt", "verify", str(tampered["output"]), "--policy", str(policy_file), "--json"),
        "not_json": _cli("receipt", "verify", str(policy_file), "--policy", str(policy_file)),
    }
    res = {k: (p.wait(timeout=60), p.stdout.read(), p.stderr.read()) for k, p in procs.items()}
    for k, (rc, out, err) in res.items():
        assert "Traceback" not in out + err, (k, err)
    assert res["good"][0] == 0 and "VALID" in res["good"][1], res["good"]
    assert res["tampered"][0] == 1, res["tampered"]
    assert json.loads(res["tampered"][1])["valid"] is False
    rc, out, err = res["not_json"]
    assert rc == 2, res["not_json"]
    assert len(err.strip().splitlines()) == 1 and "error" in err


def test_validator_down_is_a_named_error(net, tmp_path) -> None:
    """A client whose validator is gone gets a named error quickly."""
    spec = MODELS.get("digits-mlp")

    async def go():
        c = PrivateClient(f"http://127.0.0.1:{_port()}", net.validator_wallet.hotkey.ss58_address, net.client_wallet,
                                   policy=net.policy(), verifiers=build_verifiers(net.policy()), timeout=2.0)
        try:
            with pytest.raises(OmronTeeError) as e:
                await c.infer(spec.model_id, np.zeros(spec.input_shape, np.float32))
        finally:
            await c.aclose()
        return e.value

    assert asyncio.run(go()).reason == "unreachable"


def test_a_clients_bad_requests_do_not_cost_miners_score(net, tmp_path) -> None:
    """Refusals caused by the client's own request (bad suite, garbage sealed bytes, unknown key)
    are relayed back to it, and are not held against the miner."""
    spec = MODELS.get("digits-mlp")
    honest = net.miners["honest"].hotkey

    async def go():
        async with Api(net, tmp_path / "scores.sqlite") as api:
            http = SignedClient(Signer(net.client_wallet), timeout=10)
            try:
                with pytest.raises(MinerError) as bad_kem:
                    await http.post(api.url, "/v1/attest", {"model": spec.model_id, "nonce": b64(new_nonce()), "kem": "rsa-2048", "count": 4}, receiver=api.v.hotkey)
                nonce = new_nonce()
                raw = await http.post(api.url, "/v1/attest", {"model": spec.model_id, "nonce": b64(nonce), "count": 2}, receiver=api.v.hotkey)
                att = next(AttestResponse.from_json(c["attest"]) for c in raw["candidates"] if c["hotkey"] == honest)
                session = check_attestation(att, hotkey=honest, nonce=candidate_nonce(nonce, honest), policy=api.policy, registry=api.verifiers)
                garbage = {"key_id": b64(session.key_id), "sealed": b64(b"\x00" * 1100)}
                unknown = {"key_id": b64(b"\x01" * 16), "sealed": b64(b"\x00" * 1100)}
                tried = []
                for req in (garbage, unknown):
                    with pytest.raises(MinerError) as e:
                        async with http.stream(api.url, "/v1/infer", {"model": spec.model_id, "attempts": [{"hotkey": honest, "request": req}]}, receiver=api.v.hotkey):
                            pass
                    tried.append(e.value)
            finally:
                await http.aclose()
            return bad_kem.value, tried, dict(api.v.scores.records[honest].reasons) if honest in api.v.scores.records else {}, api.v.scores.records.get(honest)

    bad_kem, tried, reasons, rec = asyncio.run(go())
    assert bad_kem.reason == "unsupported-suite"
    assert [t.reason for t in tried] == ["all-miners-failed", "all-miners-failed"]
    assert "tampered-ciphertext" in str(tried[0]) and "unknown-key" in str(tried[1])
    assert rec is None or rec.failures == 0, reasons

"""Hostile bytes from peers never crash a validator, a client or the receipt checker.

Each genuine message is mutated field by field (wrong types, huge or negative
numbers, bad hex/base64, missing keys) and fed to the code that parses it:
the result must be a named refusal, never an unexpected exception."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import numpy as np
import pytest

from omron_tee.chain.base import Endpoint, Neuron
from omron_tee.exchange.receipt_file import ReceiptFile, verify_receipt_file
from omron_tee.exchange.requester import check_attestation, new_nonce, seal_request
from omron_tee.workloads.tensor import sample_input
from omron_tee.protocol import AttestRequest
from omron_tee.workloads import default_workloads
from omron_tee.validator.prober import Prober

WEIRD: list[Any] = [None, 0, -1, 2**70, 1.5, "", "zz", "AAAA", [], {}, True, "00" * 32, [1, 2]]

SIM_HOTKEY = "5SimulatedMinerHotkeyForTheTestSuite00000000000"  # conftest.SimEnv.hotkey: what sim.app() attests for


def _walk(doc, path):
    for k in path[:-1]:
        doc = doc[k]
    return doc


def _set(doc, path, value):
    _walk(doc, path)[path[-1]] = value


def _del(doc, path):
    del _walk(doc, path)[path[-1]]


def all_mutations(root: Any) -> list[tuple[tuple, Any]]:
    """(path, mutated copy of ``root``) for every node replaced by each weird value, and every key removed.
    The path ends with the replacement's repr, or "deleted"."""
    out: list[tuple[tuple, Any]] = []

    def visit(node: Any, path: tuple) -> None:
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node)) if isinstance(node, list) else []
        for k, v in items:
            for w in WEIRD:
                m = copy.deepcopy(root)
                _set(m, path + (k,), w)
                out.append((path + (k, repr(w)), m))
            if isinstance(node, dict):
                m = copy.deepcopy(root)
                _del(m, path + (k,))
                out.append((path + (k, "deleted"), m))
            visit(v, path + (k,))

    visit(root, ())
    return out


from inprocess import InProcessClient  # noqa: E402

WORKLOADS = default_workloads()


def _genuine(sim, registry):
    app = sim.app()
    nonce = new_nonce()
    attest = app.attest(AttestRequest(nonce, "x25519-hkdf-sha256-aes256gcm"))
    session = check_attestation(attest, hotkey=sim.hotkey, nonce=nonce, policy=sim.policy, registry=sim.verifiers)
    spec = registry.get("digits-mlp")
    x = sample_input(spec, np.random.default_rng(0))
    request, pending = seal_request(session, WORKLOADS.get("tensor"), spec, x)
    response = asyncio.run(app.answer_whole(app.open(request)))
    return app, attest, nonce, spec, pending, response


def _file(pending, response) -> ReceiptFile:
    pending.feed(response)
    answer = pending.close()
    answer.miner_hotkey = SIM_HOTKEY
    return ReceiptFile.of(answer, WORKLOADS)


def _check(doc, sim, **kw):
    return verify_receipt_file(doc, policy=sim.policy, verifiers=sim.verifiers, workloads=WORKLOADS, models=sim.registry, **kw)


def test_receipt_file_checker_never_crashes(sim, registry) -> None:
    app, attest, nonce, spec, pending, response = _genuine(sim, registry)
    doc = _file(pending, response).to_json()
    assert _check(json.loads(json.dumps(doc)), sim).ok
    harmless = {"miner_hotkey", "model_id"}
    n = 0
    for path, m in all_mutations(doc):
        check = _check(m, sim)
        n += 1
        if path[0] not in harmless and path not in {("result", "deleted"), ("result", "None")}:
            assert not check.ok, path
            assert check.reasons
    assert n > 300


def FakeTransport(app, corrupt_attest=None, corrupt_infer=None) -> InProcessClient:
    """Answers from a real trusted app, then lets a test corrupt the reply."""
    return InProcessClient({_neuron().endpoint.url: app}, corrupt_attest=corrupt_attest, corrupt_infer=corrupt_infer)


def _neuron() -> Neuron:
    return Neuron(1, SIM_HOTKEY, "5Cold", 0.0, False, Endpoint("127.0.0.1", 9), 0.0, 0.0, 0.0, 0)


def _prober(sim, transport) -> Prober:
    return Prober(transport, policy=sim.policy, verifiers=sim.verifiers, models=sim.registry, workloads=WORKLOADS, model_ids=["digits-mlp"], seed=0)  # type: ignore[arg-type]


def test_prober_survives_hostile_attest_replies(sim, registry) -> None:
    app = sim.app()
    sample = app.attest(AttestRequest(new_nonce(), "x25519-hkdf-sha256-aes256gcm")).to_json()
    muts = all_mutations(sample)
    assert len(muts) > 50

    async def go():
        out = []
        for path, m in muts:
            def corrupt(genuine, path=path, m=m):
                # Apply the same mutation to this request's genuine reply.
                g = copy.deepcopy(genuine)
                try:
                    val = _walk(m, path[:-1])[path[-2]] if path[-1] != "deleted" else None
                except (KeyError, IndexError, TypeError):
                    return m
                if path[-1] == "deleted":
                    _del(g, path[:-1])
                else:
                    _set(g, path[:-1], val)
                return g
            p = _prober(sim, FakeTransport(app, corrupt_attest=corrupt))
            out.append((path, await p.probe(_neuron())))
        return out

    results = asyncio.run(go())
    for path, r in results:
        if path[0] not in ("evidence", "keys"):
            continue  # what a miner advertises beside them (models, ...) is informational
        assert not r.outcome.ok, path
        assert r.outcome.reason not in ("ok", "error"), (path, r.outcome.reason)


def test_prober_survives_hostile_infer_replies(sim, registry) -> None:
    app = sim.app()
    genuine = lambda g: g  # noqa: E731
    replies = [lambda g: b"", lambda g: b"\x00\x00\x00\x05abc", lambda g: b"\xff" * 64, lambda g: g[: len(g) // 2], lambda g: g[:-1],
               lambda g: g + b"\x00", lambda g: g[:20] + bytes([g[20] ^ 1]) + g[21:], lambda g: g[:-5] + bytes([g[-5] ^ 1]) + g[-4:],
               lambda g: b"\x00\x00\x00\x00" + g, lambda g: g[:4] + g]
    assert genuine

    async def go():
        out = []
        for bad in replies:
            p = _prober(sim, FakeTransport(app, corrupt_infer=bad))
            out.append((bad, await p.probe(_neuron())))
        return out

    for bad, r in asyncio.run(go()):
        assert not r.outcome.ok, bad
        assert r.outcome.attestation_accepted is True
        assert r.outcome.reason in ("stream-malformed", "stream-truncated", "stream-tampered", "tampered-ciphertext"), r.outcome.reason


@pytest.mark.parametrize("issued", [-1, 2**64, 2**70])
def test_receipt_with_out_of_range_time_is_malformed(issued) -> None:
    from omron_tee.channel.receipt import Receipt
    from omron_tee.errors import ChannelError

    doc = {k: "00" * 32 for k in ("nonce", "model_hash", "input_hash", "output_hash", "evidence_hash")}
    with pytest.raises(ChannelError) as e:
        Receipt.from_json({**doc, "signature": "00" * 64, "issued_at_ms": issued})
    assert e.value.reason == "malformed-message"


def test_prober_survives_a_receipt_it_cannot_even_encode(sim, registry, monkeypatch) -> None:
    """An enclave build that answers a receipt with an impossible timestamp: a named failure."""
    import dataclasses


    from omron_tee.miner import trusted_app

    real = trusted_app.issue_receipt
    monkeypatch.setattr(trusted_app, "issue_receipt", lambda b, sign, **kw: dataclasses.replace(real(b, sign, **kw), issued_at_ms=2**70))
    app = sim.app()

    async def go():
        return await _prober(sim, FakeTransport(app)).probe(_neuron())

    r = asyncio.run(go())
    assert not r.outcome.ok
    assert r.outcome.reason == "bad-receipt"


def test_receipt_file_labels_cannot_name_another_model_and_files_are_private(sim, registry, tmp_path) -> None:
    import os
    import stat

    app, attest, nonce, spec, pending, response = _genuine(sim, registry)
    path = tmp_path / "r.json"
    _file(pending, response).save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    doc = json.loads(path.read_text())
    check = _check(doc, sim)
    assert check.ok and check.model_hash == spec.sha256
    doc["model_id"] = "breast-cancer-mlp"  # a shipped model the receipt does not sign
    check = _check(doc, sim)
    assert not check.ok and any("another model" in r for r in check.reasons)


def test_receipt_evidence_is_judged_now_not_at_the_enclaves_time(sim, registry) -> None:
    """The receipt's time is the enclave's clock (host-controlled on SGX): it neither dates the
    evidence (no age check offline) nor chooses when collateral is judged (now, unless asked)."""
    app, attest, nonce, spec, pending, response = _genuine(sim, registry)
    doc = _file(pending, response).to_json()
    import time as _time

    later = _time.time() + 10 * sim.policy.max_evidence_age_seconds
    assert _check(doc, sim, now=later).ok

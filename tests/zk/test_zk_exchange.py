"""The zk proof system through the exchange: a validator's Prober and ScoreBook against in-process trusted apps.

The trusted app proves inside the (simulated) enclave: the input arrives
sealed, the proof keeps it private and makes the output public, and the proof
travels back inside the sealed result. The validator verifies the proof, that
it proves the claimed output, and recomputes the output itself.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from omron_tee.chain.base import Endpoint, Neuron
from omron_tee.channel.hpke import KemSuite
from omron_tee.enclave.dev_faults import DevFaults
from omron_tee.exchange.requester import check_attestation, new_nonce, seal_request
from omron_tee.miner.trusted_app import TrustedApp
from omron_tee.protocol import AttestRequest, AttestResponse, InferRequest
from omron_tee.workloads import default_workloads
from omron_tee.workloads.tensor import sample_input
from omron_tee.validator.prober import Prober
from omron_tee.validator.scoring import ScoreBook

from inprocess import InProcessClient  # noqa: E402

ZK_MODEL = "diabetes-mlp"
WORKLOADS = default_workloads()


def answer(app, request, reader):
    reader.feed(asyncio.run(app.answer_whole(app.open(InferRequest.from_json(request.to_json())))))
    return reader.close()


@pytest.fixture
def net(sim, registry, prover, verifier, tmp_path):
    client = InProcessClient()
    prober = Prober(client, policy=sim.policy, verifiers=sim.verifiers, models=registry, workloads=default_workloads(zk_verifiers={ZK_MODEL: verifier}),
                    timeouts={"zk": 60.0}, seed=0)
    scores = ScoreBook(tmp_path / "scores.sqlite")
    miners: dict[str, Neuron] = {}

    def add(name: str, faults: DevFaults = DevFaults(), zk: bool = True) -> Neuron:
        uid = len(miners) + 1
        n = Neuron(uid, f"hotkey-{name}", "coldkey", 0.0, False, Endpoint("127.0.0.1", 9000 + uid), 0.0, 0.0, 0.0, 0)
        client.apps[n.endpoint.url] = TrustedApp(sim.backend(faults=faults), registry, None, hotkey=n.hotkey, provers={ZK_MODEL: prover} if zk else None)
        miners[name] = n
        return n

    def probe(name: str, workload: str = "zk", model_id: str | None = ZK_MODEL):
        r = asyncio.run(prober.probe(miners[name], model_id, workload=workload))
        old, new = scores.update(r.outcome)
        return r, old, new

    return add, probe, scores


def test_miner_advertises_proof_systems(sim, registry, prover) -> None:
    app = TrustedApp(sim.backend(), registry, None, hotkey=sim.hotkey, provers={ZK_MODEL: prover, "digits-mlp": prover})
    resp = AttestResponse.from_json(app.attest(AttestRequest(new_nonce(), KemSuite.X25519.value)).to_json())
    assert resp.proof_systems[ZK_MODEL] == ("tee", "zk")
    assert resp.proof_systems["digits-mlp"] == ("tee",)  # it does not declare zk: no prover taken
    assert resp.offers(ZK_MODEL, "zk") and resp.offers("digits-mlp", "tee") and not resp.offers("digits-mlp", "zk")
    # An older miner's answer (no proof_systems) offers "tee" for its models.
    old = dict(resp.to_json())
    old.pop("proof_systems")
    assert AttestResponse.from_json(old).offers(ZK_MODEL, "tee") and not AttestResponse.from_json(old).offers(ZK_MODEL, "zk")


def test_zk_served_and_verified_end_to_end(sim, registry, prover, verifier) -> None:
    """Requester side by hand: the input stays sealed, the proof comes back sealed and verifies."""
    app = TrustedApp(sim.backend(), registry, None, hotkey=sim.hotkey, provers={ZK_MODEL: prover})
    nonce = new_nonce()
    session = check_attestation(AttestResponse.from_json(app.attest(AttestRequest(nonce, KemSuite.X25519.value)).to_json()), hotkey=sim.hotkey, nonce=nonce, policy=sim.policy, registry=sim.verifiers)
    spec = registry.get(ZK_MODEL)
    x = sample_input(spec, np.random.default_rng(5))
    request, pending = seal_request(session, WORKLOADS.get("zk"), spec, x)
    assert x.tobytes() not in request.sealed
    result = answer(app, request, pending).result
    assert result.proof is not None and result.prove_ms and result.prove_ms > 0
    assert x.tobytes() not in result.proof
    verdict = verifier.verify(result.proof, result.output)
    np.testing.assert_allclose(result.output, registry.runtime(ZK_MODEL).run(x), rtol=1e-6)
    assert np.abs(verdict.proven_output - result.output).max() <= verifier.circuit.atol
    # A TEE request to the same app carries no proof.
    request, pending = seal_request(session, WORKLOADS.get("tensor"), spec, x)
    assert answer(app, request, pending).result.proof is None


def test_prober_scores_zk_like_response_time(net) -> None:
    add, probe, scores = net
    add("honest")
    r, old, new = probe("honest", "tensor", "digits-mlp")
    assert r.outcome.ok and r.outcome.latency_class == "tee"
    r, old2, new2 = probe("honest")
    o = r.outcome
    assert (o.ok, o.reason, o.latency_class, o.attestation_accepted, o.correct) == (True, "ok", "zk", True, True)
    assert "proof verified" in r.message and "proving" in r.message
    assert new2 == old2 == new == 1.0  # the first answers of each class: nothing to compare with, full quality
    rec = scores.records["hotkey-honest"]
    # Proof time is timed like response time, against zk times only: the tee pool keeps its milliseconds.
    assert list(rec.zk_latencies) == [o.latency_s] and len(rec.latencies) == 1 and rec.latencies[0] < o.latency_s
    scores.flush()
    reopened = ScoreBook(scores.path)
    assert list(reopened.records["hotkey-honest"].zk_latencies) == [o.latency_s]


@pytest.mark.parametrize(
    "faults, reason",
    [
        (DevFaults(bad_proof=True), "zk-proof-invalid"),
        (DevFaults(mismatched_proof=True), "zk-output-mismatch"),
        (DevFaults(wrong_output=True), "wrong-output"),  # +0.5: within the circuit's tolerance, caught by recomputation
    ],
    ids=["flipped-proof", "proof-of-other-output", "wrong-claim"],
)
def test_bad_zk_answers_are_refused_and_decay(net, faults, reason) -> None:
    add, probe, scores = net
    add("faulty", faults)
    if not faults.wrong_output:
        r, _, before = probe("faulty", "tensor", ZK_MODEL)  # the TEE path is fine: earn some score first
        assert r.outcome.ok and before > 0
    else:
        scores.record("hotkey-faulty", 1).score = 0.5
        before = 0.5
    r, old, new = probe("faulty")
    assert not r.outcome.ok and r.outcome.reason == reason, r.message
    assert r.outcome.attestation_accepted is True and r.outcome.latency_class == "zk"
    assert old == before and new < old
    assert scores.records["hotkey-faulty"].reasons[reason] == 1


def test_zk_unsupported_miner(net) -> None:
    add, probe, scores = net
    add("tee-only", zk=False)
    r, _, _ = probe("tee-only")
    assert r.outcome.reason == "zk-unsupported"


def test_zk_answer_fields_roundtrip() -> None:
    """The zk part (output, proof, proving time) through the workload's own encoding."""
    import base64

    from omron_tee.workloads.tensor import Tensor

    t = Tensor.from_array(np.zeros((1, 10), dtype=np.float32))
    zk = WORKLOADS.get("zk")
    part = {"output": t.to_json(), "proof": base64.b64encode(b'{"proof":[1]}').decode(), "prove_ms": 12.5}
    back = zk.collector(None, None).part(json.loads(json.dumps(part)))  # type: ignore[arg-type]
    assert (back.proof, back.prove_ms) == (b'{"proof":[1]}', 12.5)
    assert WORKLOADS.get("tensor").collector(None, None).part({"output": t.to_json()}).proof is None  # type: ignore[arg-type]


def test_an_oversized_proof_is_a_malformed_result() -> None:
    """A proof past 1 MiB is refused when the answer is read, before any verifier sees it."""
    import base64

    from omron_tee.errors import ChannelError
    from omron_tee.workloads.tensor import MAX_PROOF_BYTES, Tensor

    t = Tensor.from_array(np.zeros((1, 1), dtype=np.float32))
    part = {"output": t.to_json(), "proof": base64.b64encode(bytes(MAX_PROOF_BYTES + 1)).decode()}
    with pytest.raises(ChannelError) as e:
        WORKLOADS.get("zk").collector(None, None).part(part)  # type: ignore[arg-type]
    assert e.value.reason == "malformed-result"

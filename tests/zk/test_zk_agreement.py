"""zk circuits that agree: the development SRS is the same everywhere, a circuit is named by its
settings and verifying key, a mismatch is named and never charged, a forgery under an agreed
circuit is a strike, and the verified fraction of proofs is configurable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from omron_tee.attestation.binding import EnclavePublicKeys
from omron_tee.attestation.evidence import Evidence, TeeType
from omron_tee.errors import ProtocolError

from omron_tee.models.registry import ModelRegistry
from omron_tee.protocol import AttestResponse, unhex_id
from omron_tee.reasons import Reason
from omron_tee.validator.reward import Verdict
from omron_tee.validator.scoring import Outcome
from omron_tee.workloads.tensor import TensorResult
from omron_tee.workloads.zk import ZkWorkload
from omron_tee.zk import dev_srs
from omron_tee.zk.prover import tamper_proof
from omron_tee.zk.verifier import ZkVerifier

ZK_MODEL = "diabetes-mlp"  # the smallest shipped zk model, as in conftest.py


def test_the_development_srs_is_derived_the_same_everywhere(circuit, separate_circuit) -> None:
    a, b = circuit.srs.path.read_bytes(), separate_circuit.srs.path.read_bytes()
    assert a == b == dev_srs.srs_bytes(circuit.logrows)
    n = 1 << circuit.logrows
    assert len(a) == 4 + 2 * n * 64 + 2 * 128 and int.from_bytes(a[:4], "little") == circuit.logrows
    assert a[4:68] == dev_srs._fq(1) + dev_srs._fq(2)  # tau^0 G is the generator


def test_circuits_built_in_separate_caches_have_one_id_and_verify_each_others_proofs(circuit, separate_circuit, proven) -> None:
    assert circuit.dir != separate_circuit.dir
    assert circuit.circuit_id == separate_circuit.circuit_id and len(circuit.circuit_id) == 32
    x, zp = proven
    assert zp.circuit_id == circuit.circuit_id
    ZkVerifier(separate_circuit).verify(zp.proof, zp.output, input=x)


def _judge(workload: ZkWorkload, x, zp, *, circuit: bytes | None, proof: bytes | None = None):
    spec = ModelRegistry.builtin().get(ZK_MODEL)
    expected = TensorResult(ModelRegistry.builtin().runtime(ZK_MODEL).run(x))
    got = TensorResult(np.asarray(expected.output), proof if proof is not None else zp.proof, 900.0, circuit)
    return workload.judge(spec, x, expected, got)


def test_a_proof_from_another_circuit_is_named_and_not_charged(foreign_circuit, circuit, proven) -> None:
    assert foreign_circuit.circuit_id != circuit.circuit_id
    x, zp = proven
    w = ZkWorkload({ZK_MODEL: ZkVerifier(foreign_circuit)})
    j = _judge(w, x, zp, circuit=zp.circuit_id)
    assert j.correct is None and j.reason == Reason.CIRCUIT_MISMATCH
    assert "not charged" in j.detail and circuit.circuit_id.hex()[:16] in j.detail
    outcome = Outcome("5M", 1, False, j.reason, None, True, j.correct, latency_class="zk")
    assert outcome.verdict is Verdict.NOT_SCORED


def test_a_miner_whose_attested_circuit_differs_is_not_sent_zk_probes(foreign_circuit, circuit) -> None:
    w = ZkWorkload({ZK_MODEL: ZkVerifier(foreign_circuit)})
    offer = _attest_response(circuit.circuit_id)
    assert not w.offered(offer, ZK_MODEL)
    assert w.unoffered(offer, ZK_MODEL)[0] == Reason.CIRCUIT_MISMATCH
    assert ZkWorkload({ZK_MODEL: ZkVerifier(circuit)}).offered(offer, ZK_MODEL)


def _attest_response(circuit_id: bytes) -> AttestResponse:
    """What a miner proving with ``circuit_id`` attests, through the wire format and back."""
    sent = AttestResponse(Evidence(TeeType.SIMULATED, b"report"), EnclavePublicKeys("x25519", b"k" * 32, b"s" * 32),
                          models=(ZK_MODEL,), proof_systems={ZK_MODEL: ("tee", "zk")}, zk_circuits={ZK_MODEL: circuit_id})
    got = AttestResponse.from_json(json.loads(json.dumps(sent.to_json())))
    assert got.zk_circuits == {ZK_MODEL: circuit_id}
    return got


def test_a_forged_proof_under_the_agreed_circuit_is_a_strike(circuit, proven) -> None:
    x, zp = proven
    w = ZkWorkload({ZK_MODEL: ZkVerifier(circuit)})
    j = _judge(w, x, zp, circuit=zp.circuit_id, proof=tamper_proof(zp.proof))
    assert j.correct is False and j.reason == Reason.ZK_PROOF_INVALID
    assert Outcome("5M", 1, False, j.reason, None, True, j.correct).verdict is Verdict.STRIKE
    # Without a circuit id (a miner of an older release) it might be a mismatch: decayed, not struck.
    j = _judge(w, x, zp, circuit=None, proof=tamper_proof(zp.proof))
    assert j.correct is None and j.reason == Reason.ZK_PROOF_INVALID


def test_an_honest_proof_under_the_agreed_circuit_passes(circuit, proven) -> None:
    x, zp = proven
    j = _judge(ZkWorkload({ZK_MODEL: ZkVerifier(circuit)}), x, zp, circuit=zp.circuit_id)
    assert j.correct is True and "proof verified" in j.detail


def test_only_the_configured_fraction_of_proofs_is_verified(circuit, proven) -> None:
    x, zp = proven
    w = ZkWorkload({ZK_MODEL: ZkVerifier(circuit)}, verify_fraction=0.25, seed=0)
    forged = tamper_proof(zp.proof)
    results = [_judge(w, x, zp, circuit=zp.circuit_id, proof=forged) for _ in range(40)]
    caught = sum(j.correct is False for j in results)
    assert 3 <= caught <= 20  # about a quarter; the rest pass on the recomputed output alone
    assert all("not sampled" in j.detail for j in results if j.correct is True)
    with pytest.raises(ValueError):
        ZkWorkload({}, verify_fraction=0.0)


def test_a_circuit_id_from_a_peer_must_be_64_hex_digits() -> None:
    for bad in ("zz" * 32, "ab", 7, None):
        with pytest.raises(ProtocolError):
            unhex_id(bad, "circuit id")
    assert unhex_id("ab" * 32, "circuit id") == b"\xab" * 32


@pytest.mark.parametrize("circuit", ["zz" * 32, "ab", 7, ["ab" * 32], "ab" * 33])
def test_a_miner_naming_a_malformed_circuit_id_sends_a_malformed_result(circuit) -> None:
    from omron_tee.errors import ChannelError
    from omron_tee.workloads.tensor import Tensor, TensorWorkload

    spec = ModelRegistry.builtin().get(ZK_MODEL)
    collector = TensorWorkload().collector(spec, None)
    part = {"output": Tensor.from_array(np.zeros(spec.output_shape, dtype=np.float32)).to_json(), "circuit": circuit}
    with pytest.raises(ChannelError) as e:
        collector.part(part)
    assert e.value.reason == Reason.MALFORMED_RESULT

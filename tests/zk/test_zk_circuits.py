"""Circuits, SRS rules, proving and verifying (omron_tee.zk) on the smallest shipped zk model."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from omron_tee.errors import ConfigError
from omron_tee.models.registry import ModelRegistry
from omron_tee.workloads.tensor import sample_input
from omron_tee.zk.circuits import build_circuit, ceremony_srs
from omron_tee.zk.errors import ZkError, ZkRefused
from omron_tee.zk.prover import tamper_proof

ZK_MODEL = "diabetes-mlp"  # the smallest shipped model that declares zk (as in conftest.py)


@pytest.fixture(scope="module")
def spec():
    return ModelRegistry.builtin().get(ZK_MODEL)


def test_registry_declares_proof_systems() -> None:
    reg = ModelRegistry.builtin()
    assert reg.get(ZK_MODEL).proof_systems == ("tee", "zk")
    assert all(s.proof_systems for s in reg.specs())


def test_circuit_is_content_addressed_and_cached(circuit, zk_cache, spec) -> None:
    assert circuit.dir == zk_cache / spec.sha256_hex
    assert circuit.input_visibility == "private" and circuit.output_visibility == "public"
    for p in (circuit.settings_path, circuit.compiled_path, circuit.vk_path, circuit.pk_path, circuit.srs.path):
        assert p.is_file(), p
    assert circuit.keys_dir.name == circuit.srs.sha256.hex()[:16]
    meta = json.loads((circuit.dir / "circuit.json").read_text())
    assert meta["model_sha256"] == spec.sha256_hex and meta["logrows"] == circuit.logrows
    settings = json.loads(circuit.settings_path.read_text())
    assert settings["run_args"]["input_visibility"] == "Private" and settings["run_args"]["output_visibility"] == "Public"
    # The tolerance covers the fixed-point error measured on the calibration rows, with margin.
    assert 0 < circuit.max_calibration_error < circuit.atol
    t0 = time.perf_counter()
    again = build_circuit(spec, cache_dir=zk_cache, dev_network="embedded")
    assert time.perf_counter() - t0 < 0.5  # from the cache: nothing rebuilt
    assert again == circuit
    assert (circuit.srs.path.parent / "WARNING.txt").read_text().startswith("DEVELOPMENT SRS")


def test_srs_rules(spec, zk_cache, tmp_path) -> None:
    with pytest.raises(ConfigError, match="can forge proofs and is refused on 'finney'"):
        build_circuit(spec, cache_dir=zk_cache, dev_network="finney")
    with pytest.raises(ConfigError, match="need an SRS"):
        build_circuit(spec, cache_dir=zk_cache)
    with pytest.raises(ConfigError, match="does not exist.*nothing is downloaded"):
        ceremony_srs(tmp_path / "kzg12.srs")
    # Loading only (miners, validators) never builds or generates anything.
    with pytest.raises(ZkError) as e:
        build_circuit(spec, cache_dir=tmp_path / "empty", dev_network="embedded", build=False)
    assert e.value.reason == "zk-not-built"
    assert not (tmp_path / "empty" / "dev-srs" / "k12.srs").exists()


def test_model_without_zk_is_refused(zk_cache) -> None:
    with pytest.raises(ZkError, match="not zk") as e:
        build_circuit(ModelRegistry.builtin().get("digits-mlp"), cache_dir=zk_cache, dev_network="embedded")
    assert e.value.reason == "zk-unsupported"


def test_prove_and_verify(proven, verifier, spec) -> None:
    x, p = proven
    claimed = ModelRegistry.builtin().runtime(ZK_MODEL).run(x)
    verdict = verifier.verify(p.proof, claimed)
    np.testing.assert_allclose(verdict.proven_output, p.output)
    assert np.abs(verdict.proven_output - claimed).max() <= verifier.circuit.atol
    # Private input: the proof's only public instance is the output.
    doc = json.loads(p.proof)
    assert len(doc["instances"]) == 1 and len(doc["instances"][0]) == int(np.prod(spec.output_shape))
    assert "pretty_public_inputs" not in doc


def test_flipped_proof_is_invalid(proven, verifier) -> None:
    x, p = proven
    claimed = ModelRegistry.builtin().runtime(ZK_MODEL).run(x)
    for bad in (tamper_proof(p.proof), p.proof[:100] + bytes([p.proof[100] ^ 1]) + p.proof[101:], b"", None, b"{}", b"[1,2]"):
        with pytest.raises(ZkRefused) as e:
            verifier.verify(bad, claimed)
        assert e.value.reason == "zk-proof-invalid", bad[:20] if bad else bad


def test_changed_public_output_is_invalid(proven, verifier) -> None:
    """Editing the proof's output instance to match another claim breaks the proof itself."""
    x, p = proven
    doc = json.loads(p.proof)
    felt = int.from_bytes(bytes.fromhex(doc["instances"][0][0]), "little")
    doc["instances"][0][0] = (felt + 40 * 2**verifier.circuit.output_scale).to_bytes(32, "little").hex()  # output + 40
    with pytest.raises(ZkRefused) as e:
        verifier.verify(json.dumps(doc).encode(), p.output + 40)
    assert e.value.reason == "zk-proof-invalid"


def test_output_differing_from_claim_is_mismatch(proven, verifier) -> None:
    x, p = proven
    for claimed in (p.output + 3 * verifier.circuit.atol, p.output - 100, np.full_like(p.output, np.nan), np.zeros((2, 2))):
        with pytest.raises(ZkRefused) as e:
            verifier.verify(p.proof, claimed)
        assert e.value.reason == "zk-output-mismatch"


def test_proving_errors_do_not_quote_the_input(prover, spec, caplog, capfd) -> None:
    x = sample_input(spec, np.random.default_rng(0)) * 1e9  # far outside the circuit's range
    with caplog.at_level("DEBUG"):
        with pytest.raises(ZkError) as e:
            prover.prove(x)
    assert e.value.reason == "zk-prove-failed"
    out, err = capfd.readouterr()
    # ezkl's own message names the out-of-range integer (derived from the private input): it goes nowhere.
    for text in (str(e.value), caplog.text, out, err):
        assert "decomposition" not in text and "too large" not in text


def test_hashed_input_binds_the_proof_to_the_input(spec, zk_cache) -> None:
    """With the input's Poseidon hash public, a proof about another input is refused by name."""
    from omron_tee.zk.prover import ZkProver
    from omron_tee.zk.verifier import ZkVerifier

    c = build_circuit(spec, cache_dir=zk_cache, dev_network="embedded", input_visibility="hashed")
    assert c.dir.name == f"{spec.sha256_hex}.input-hashed" and c.input_visibility == "hashed"
    rng = np.random.default_rng(11)
    x, other = sample_input(spec, rng), sample_input(spec, rng)
    p = ZkProver(c).prove(x)
    v = ZkVerifier(c)
    claimed = ModelRegistry.builtin().runtime(ZK_MODEL).run(x)
    assert len(json.loads(p.proof)["instances"][0]) == 1 + 1  # the input's hash, then the output
    v.verify(p.proof, claimed, input=x)
    with pytest.raises(ZkRefused) as e:
        v.verify(p.proof, claimed, input=other)
    assert e.value.reason == "zk-input-mismatch"

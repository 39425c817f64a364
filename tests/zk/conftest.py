"""One zk circuit (the smallest shipped zk model) built once per test session, with a development SRS."""

from __future__ import annotations

import pytest

from omron_tee.models.registry import ModelRegistry

ZK_MODEL = "diabetes-mlp"

pytest.importorskip("ezkl")


@pytest.fixture(scope="session")
def zk_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("circuits")


@pytest.fixture(scope="session")
def circuit(zk_cache):
    from omron_tee.zk.circuits import build_circuit

    return build_circuit(ModelRegistry.builtin().get(ZK_MODEL), cache_dir=zk_cache, dev_network="embedded")


@pytest.fixture(scope="session")
def prover(circuit):
    from omron_tee.zk.prover import ZkProver

    return ZkProver(circuit)


@pytest.fixture(scope="session")
def verifier(circuit):
    from omron_tee.zk.verifier import ZkVerifier

    return ZkVerifier(circuit)


@pytest.fixture(scope="session")
def proven(prover):
    """One honest proof, shared by the tests that only read it (proving costs about a second)."""
    import numpy as np

    from omron_tee.workloads.tensor import sample_input

    spec = ModelRegistry.builtin().get(ZK_MODEL)
    x = sample_input(spec, np.random.default_rng(3))
    return x, prover.prove(x)


@pytest.fixture(scope="session")
def separate_circuit(tmp_path_factory):
    """The same model's circuit built again in another cache, as a validator on another machine would."""
    from omron_tee.zk.circuits import build_circuit

    return build_circuit(ModelRegistry.builtin().get(ZK_MODEL), cache_dir=tmp_path_factory.mktemp("other-circuits"), dev_network="embedded")


@pytest.fixture(scope="session")
def foreign_circuit(tmp_path_factory):
    """The same model's circuit under another SRS (a random one, passed as if it were a ceremony file):
    a real circuit mismatch."""
    from omron_tee.zk.circuits import build_circuit, call, ezkl_module

    d = tmp_path_factory.mktemp("foreign-circuits")
    srs = d / "random.srs"
    call(ezkl_module().gen_srs, str(srs), 12)
    return build_circuit(ModelRegistry.builtin().get(ZK_MODEL), cache_dir=d, srs_path=srs)

"""Shared fixtures for the exchange tests: a simulated enclave, its policy, wallets, ports."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import bittensor as bt
import pytest

from omron_tee.attestation.validate.policy import Policy, SimulatedPolicy
from omron_tee.attestation.verify.registry import VerifierRegistry
from omron_tee.attestation.verify.simulated import SimulatedVerifier
from omron_tee.config import create_wallet
from omron_tee.enclave.measurement import trusted_app_measurement
from omron_tee.enclave.simulated import SimulatedBackend, dev_public_key
from omron_tee.enclave.dev_faults import DevFaults
from omron_tee.miner.trusted_app import TrustedApp
from omron_tee.workloads import default_workloads
from omron_tee.models.registry import ModelRegistry
from omron_tee.models.testing import fake_llm_spec, fake_runtimes


@pytest.fixture(scope="session")
def registry() -> ModelRegistry:
    return ModelRegistry.builtin()


def release_measurement(registry: ModelRegistry, variant: bytes = b"") -> bytes:
    return trusted_app_measurement([(s.model_id, s.sha256) for s in registry.specs()], variant=variant)


@dataclass
class SimEnv:
    """A development attestation key, a policy trusting it and this release, and a verifier."""

    key_path: Path
    dev_public: bytes
    measurement: bytes
    policy: Policy
    verifiers: VerifierRegistry
    registry: ModelRegistry

    def backend(self, *, measurement: bytes | None = None, debug: bool = False, faults: DevFaults = DevFaults()) -> SimulatedBackend:
        return SimulatedBackend(self.key_path, measurement or self.measurement, debug=debug, faults=faults)

    # The miner hotkey simulated enclaves serve (the report data binds it).
    hotkey: str = "5SimulatedMinerHotkeyForTheTestSuite00000000000"

    def app(self, *, faults: DevFaults = DevFaults(), model_ids: list[str] | None = None, hotkey: str | None = None, provers=None, **kw) -> TrustedApp:
        return TrustedApp(self.backend(faults=faults, **kw), self.registry, model_ids, hotkey=hotkey or self.hotkey, workloads=default_workloads(),
                          provers=provers)

    def policy_with(self, **changes) -> Policy:
        sim = self.policy.simulated
        sim_fields = {k: changes.pop(k) for k in ("allow", "trusted_keys", "measurements") if k in changes}
        return Policy(
            max_evidence_age_seconds=changes.pop("max_evidence_age_seconds", self.policy.max_evidence_age_seconds),
            allow_debug=changes.pop("allow_debug", self.policy.allow_debug),
            simulated=SimulatedPolicy(
                allow=sim_fields.get("allow", sim.allow),
                trusted_keys=sim_fields.get("trusted_keys", sim.trusted_keys),
                measurements=sim_fields.get("measurements", sim.measurements),
            ),
        )


def sim_env(tmp_path: Path, registry: ModelRegistry) -> SimEnv:
    key_path = tmp_path / "dev-attestation.key"
    pub = dev_public_key(key_path)
    m = release_measurement(registry)
    policy = Policy(simulated=SimulatedPolicy(allow=True, trusted_keys=frozenset([pub]), measurements=frozenset([m])))
    return SimEnv(key_path, pub, m, policy, VerifierRegistry([SimulatedVerifier([pub])]), registry)


@pytest.fixture
def sim(tmp_path: Path, registry: ModelRegistry) -> SimEnv:
    return sim_env(tmp_path, registry)


@pytest.fixture
def llm_sim(tmp_path: Path) -> SimEnv:
    """``sim`` with a fake LLM ("fake-llm", ``models.testing``) served beside the shipped models."""
    reg = ModelRegistry.builtin(runtimes=fake_runtimes())
    reg.add(fake_llm_spec(tmp_path / "fake-llm.bin"))
    return sim_env(tmp_path, reg)


@pytest.fixture
def make_wallet(tmp_path: Path) -> Callable[[str], bt.Wallet]:
    """Real password-less wallets under tmp_path (omron_tee.config.create_wallet)."""

    def make(name: str) -> bt.Wallet:
        return create_wallet(name, "default", tmp_path / "wallets")

    return make


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A function returning a port on 127.0.0.1 with nothing listening (at the time of asking)."""
    return _free_port


"""From backend to verifier, whole: a miner's trusted app answers an attest request with each
backend standing on its fake platform (which hands out real evidence bytes), and the
validator's appraisal accepts or refuses it for the right reason.

Real evidence was made for other nonces, so its report data can never bind this exchange:
every hardware case must be refused for "report-data-mismatch" and, with a policy that
allows its measurement and TCB, for nothing else. That shows the signature, certificate
chain, collateral, TCB and measurement checks all pass on what the backend produced.
"""

from __future__ import annotations

import os
import time

import pytest

verify_defaults = pytest.importorskip(
    "omron_tee.attestation.defaults", reason="the validator's verifiers for real evidence (issue 3) are not in this tree"
)
pytest.importorskip("omron_tee.attestation.verify.snp", reason="the SEV-SNP verifier (issue 3) is not in this tree")
pytest.importorskip("omron_tee.attestation.verify.nvidia", reason="the NVIDIA verifier (issue 3) is not in this tree")

from omron_tee.attestation.binding import report_data_for
from omron_tee.attestation.collateral.store import CollateralStore
from omron_tee.attestation.validate.appraise import appraise, gpu_nonce_for
from omron_tee.attestation.validate.policy import Policy
from omron_tee.enclave.host import HostPaths
from omron_tee.enclave.nvidia_gpu import CompositeBackend, NvidiaGpus, gpu_nonce
from omron_tee.enclave.select import select_backend
from omron_tee.enclave.sev_snp import SevSnpBackend
from omron_tee.enclave.sgx_gramine import GramineSgxBackend
from omron_tee.enclave.simulated import SimulatedBackend, dev_public_key
from omron_tee.enclave.tdx import TdxBackend

SGX_NOW = 1750330631  # the day the SGX vector's collateral was valid (testvectors README)
TDX_NOW = 1750329207

SGX_POLICY = """
[sgx]
mrenclave = ["33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"]
accepted_tcb_statuses = ["UpToDate", "ConfigurationAndSWHardeningNeeded"]
allowed_advisories = ["INTEL-SA-00289", "INTEL-SA-00615"]
"""
TDX_POLICY = """
[[tdx.measurement]]
mrtd = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
"""
SNP_POLICY = """
[sev-snp]
measurements = ["b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"]
"""
NVIDIA_POLICY = """
[nvidia]
allow_any_measurement = true
require_ocsp = false
"""


@pytest.fixture
def store(vectors) -> CollateralStore:
    """Offline collateral: Intel's for the two quotes; AMD's chain comes with the evidence."""
    s = CollateralStore()
    s.load_path(vectors.root / "intel-sgx/sgx_quote_collateral.json")
    s.load_path(vectors.root / "intel-tdx/tdx_quote_collateral.json")
    return s

MINER_HOTKEY = "5EndToEndTestMinerHotkey00000000000000000000000"


def exchange(backend, *, policy: str, store: CollateralStore, now: float, simulated_keys=()):
    """What a validator does with a miner: fresh nonce, the trusted app's evidence, appraisal."""
    from omron_tee.channel.hpke import KemSuite
    from omron_tee.miner.trusted_app import TrustedApp  # the miner's enclave side, as the neuron runs it
    from omron_tee.models.registry import ModelRegistry
    from omron_tee.protocol import AttestRequest

    registry_models = ModelRegistry.builtin()
    app = TrustedApp(backend, registry_models, registry_models.ids()[:1], hotkey=MINER_HOTKEY)
    nonce = os.urandom(32)
    response = app.attest(AttestRequest(nonce=nonce, kem=KemSuite.X25519.value))
    registry = verify_defaults.default_registry(simulated_keys, collateral=store)
    verdict = appraise(response.evidence, nonce=nonce, keys=response.keys, hotkey=MINER_HOTKEY, policy=Policy.from_toml(policy), registry=registry, now=now)
    # The binding the validator expects, which the enclave must have handed to its platform.
    return response, verdict, report_data_for(nonce, response.keys, MINER_HOTKEY)


def test_sgx_gramine_evidence_is_verified_and_refused_only_for_the_binding(gramine, store, vectors):
    response, verdict, rd = exchange(GramineSgxBackend(paths=gramine.paths, files=gramine), policy=SGX_POLICY, store=store, now=SGX_NOW)
    assert response.evidence.quote == vectors.sgx_quote
    assert gramine.user_report_data == rd  # Gramine was asked for this exchange's binding
    assert not verdict.accepted and verdict.reason_codes == ("report-data-mismatch",)
    assert verdict.claims.measurement == vectors.sgx_mrenclave
    assert verdict.claims.tcb_status == "ConfigurationAndSWHardeningNeeded"


def test_sgx_evidence_today_is_refused_for_expired_collateral(gramine, store):
    _, verdict, _ = exchange(GramineSgxBackend(paths=gramine.paths, files=gramine), policy=SGX_POLICY, store=store, now=time.time())
    assert not verdict.accepted and verdict.reason_codes == ("collateral-expired",)


def test_tdx_evidence_is_verified_and_refused_only_for_the_binding(tdx_kernel, store, vectors):
    _, verdict, rd = exchange(TdxBackend(paths=tdx_kernel.paths, files=tdx_kernel, backoff_s=0), policy=TDX_POLICY, store=store, now=TDX_NOW)
    assert tdx_kernel.inblobs == [rd]
    assert not verdict.accepted and verdict.reason_codes == ("report-data-mismatch",)
    assert verdict.claims.measurement == vectors.tdx_mrtd and verdict.claims.tcb_status == "UpToDate"


def test_tdx_measurement_not_in_policy_is_named_too(tdx_kernel, store):
    other = TDX_POLICY.replace("91eb2b44", "00000000")
    _, verdict, _ = exchange(TdxBackend(paths=tdx_kernel.paths, files=tdx_kernel, backoff_s=0), policy=other, store=store, now=TDX_NOW)
    assert set(verdict.reason_codes) == {"measurement-not-allowed", "report-data-mismatch"}


def test_snp_evidence_with_host_certificates_is_refused_for_debug_and_binding(snp_kernel, store, vectors):
    # The real report has guest policy DEBUG set: the default policy refuses it, as it must.
    response, verdict, rd = exchange(SevSnpBackend(paths=snp_kernel.paths, files=snp_kernel, backoff_s=0), policy=SNP_POLICY, store=store, now=time.time())
    assert snp_kernel.requests == [(rd, 0)]
    assert response.evidence.certificates.count(b"BEGIN CERTIFICATE") == 3
    assert not verdict.accepted and set(verdict.reason_codes) == {"debug-enclave", "report-data-mismatch"}
    assert verdict.claims.measurement == vectors.snp_measurement and verdict.claims.debug


def test_snp_evidence_under_a_development_policy_fails_only_the_binding(snp_kernel, store):
    policy = "[general]\nallow_debug = true\n" + SNP_POLICY
    _, verdict, _ = exchange(SevSnpBackend(paths=snp_kernel.paths, files=snp_kernel, backoff_s=0), policy=policy, store=store, now=time.time())
    assert verdict.reason_codes == ("report-data-mismatch",)


def test_tdx_with_attached_gpu_evidence(tdx_kernel, gpu_source, store, vectors):
    backend = CompositeBackend(TdxBackend(paths=tdx_kernel.paths, files=tdx_kernel, backoff_s=0), NvidiaGpus(gpu_source))
    _, verdict, rd = exchange(backend, policy=TDX_POLICY + NVIDIA_POLICY, store=store, now=TDX_NOW)
    assert gpu_source.nonces == [gpu_nonce(rd)] and gpu_nonce(rd) == gpu_nonce_for(rd)  # the same binding rule on both sides
    (gpu,) = verdict.claims.attached
    assert gpu.report_data == vectors.hopper_nonce  # verified, and carrying the nonce it was made with
    assert not verdict.accepted
    assert [m for m in verdict.reasons if "nvidia" in m] == ["attached nvidia evidence was not requested with this exchange's GPU nonce"]
    assert set(verdict.reason_codes) == {"report-data-mismatch"}


def test_simulated_fallback_on_a_local_network_is_accepted(tmp_path, store):
    key = tmp_path / "dev.key"
    from omron_tee.enclave.measurement import trusted_app_measurement
    from omron_tee.models.registry import ModelRegistry

    reg = ModelRegistry.builtin()
    m = trusted_app_measurement([(s.model_id, s.sha256) for s in reg.specs()[:1]])
    backend = select_backend("auto", network="embedded", paths=HostPaths.under(tmp_path), simulated=lambda: SimulatedBackend(key, m))
    policy = f'[simulated]\nallow = true\ntrusted_keys = ["{dev_public_key(key).hex()}"]\nmeasurements = ["{m.hex()}"]\n'
    _, verdict, _ = exchange(backend, policy=policy, store=store, now=time.time(), simulated_keys=[dev_public_key(key)])
    assert verdict.accepted, verdict.reasons

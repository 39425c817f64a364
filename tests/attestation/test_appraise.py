"""The exchange binding: CPU report data, and an attached GPU's SPDM nonce."""

from __future__ import annotations

import os

import pytest

from omron_tee.attestation.binding import NONCE_LEN, EnclavePublicKeys, report_data_for
from omron_tee.attestation.evidence import Evidence
from omron_tee.attestation.testing.nvidia import NvidiaTestPki
from omron_tee.attestation.testing.snp import SnpTestPki
from omron_tee.attestation.validate.appraise import appraise, gpu_nonce_for
from omron_tee.attestation.validate.policy import Policy
from omron_tee.attestation.verify.registry import VerifierRegistry

pytestmark = pytest.mark.vectors

NOW = 1_790_000_000.0
HOTKEY = "5AppraiseTestMinerHotkey0000000000000000000000"
KEYS = EnclavePublicKeys(kem="X25519-HKDF-SHA256", hpke_public=b"h" * 32, signing_public=b"s" * 32)
POLICY = Policy.from_mapping({"sev-snp": {"allow_any_measurement": True}, "nvidia": {"allow_any_measurement": True}})


@pytest.fixture(scope="module")
def env():
    snp, gpu = SnpTestPki(NOW), NvidiaTestPki(NOW)
    registry = VerifierRegistry([snp.verifier(), gpu.verifier(gpu.store())])
    return snp, gpu, registry


def _evidence(snp, gpu, nonce, *, cpu_rd=None, gpu_nonce=None, attach=True):
    rd = report_data_for(nonce, KEYS, HOTKEY) if cpu_rd is None else cpu_rd
    cpu = snp.evidence(report_data=rd)
    if not attach:
        return cpu
    g = gpu.evidence(nonce=gpu_nonce_for(rd) if gpu_nonce is None else gpu_nonce)
    return Evidence(cpu.tee_type, cpu.quote, cpu.certificates, attached=(g,))


def test_cpu_with_attached_gpu_bound_to_the_exchange(env):
    snp, gpu, registry = env
    nonce = os.urandom(NONCE_LEN)
    verdict = appraise(_evidence(snp, gpu, nonce), nonce=nonce, keys=KEYS, hotkey=HOTKEY, policy=POLICY, registry=registry, now=NOW)
    assert verdict.accepted, verdict.reasons
    assert verdict.claims.attached[0].report_data == gpu_nonce_for(report_data_for(nonce, KEYS, HOTKEY))


def test_gpu_nonce_from_another_exchange_is_refused(env):
    snp, gpu, registry = env
    nonce = os.urandom(NONCE_LEN)
    ev = _evidence(snp, gpu, nonce, gpu_nonce=gpu_nonce_for(report_data_for(os.urandom(NONCE_LEN), KEYS, HOTKEY)))
    verdict = appraise(ev, nonce=nonce, keys=KEYS, hotkey=HOTKEY, policy=POLICY, registry=registry, now=NOW)
    assert not verdict.accepted and verdict.reason_codes == ("report-data-mismatch",)
    assert "nvidia" in verdict.reasons[0]


def test_cpu_report_data_from_another_exchange_is_refused(env):
    snp, gpu, registry = env
    nonce = os.urandom(NONCE_LEN)
    verdict = appraise(_evidence(snp, gpu, nonce, attach=False), nonce=os.urandom(NONCE_LEN), keys=KEYS, hotkey=HOTKEY, policy=POLICY, registry=registry, now=NOW)
    assert verdict.reason_codes == ("report-data-mismatch",)
    other_keys = EnclavePublicKeys(kem=KEYS.kem, hpke_public=b"x" * 32, signing_public=KEYS.signing_public)
    verdict = appraise(_evidence(snp, gpu, nonce, attach=False), nonce=nonce, keys=other_keys, hotkey=HOTKEY, policy=POLICY, registry=registry, now=NOW)
    assert verdict.reason_codes == ("report-data-mismatch",)


def test_gpu_evidence_alone_is_refused(env):
    snp, gpu, registry = env
    nonce = os.urandom(NONCE_LEN)
    g = gpu.evidence(nonce=gpu_nonce_for(report_data_for(nonce, KEYS, HOTKEY)))
    verdict = appraise(g, nonce=nonce, keys=KEYS, hotkey=HOTKEY, policy=POLICY, registry=registry, now=NOW)
    assert not verdict.accepted and "report-data-mismatch" in verdict.reason_codes


def test_verification_failure_of_the_attached_gpu_refuses_all(env):
    snp, gpu, registry = env
    nonce = os.urandom(NONCE_LEN)
    ev = _evidence(snp, gpu, nonce)
    bad_gpu = Evidence(ev.attached[0].tee_type, ev.attached[0].quote[:-1] + b"\0", ev.attached[0].certificates)
    ev = Evidence(ev.tee_type, ev.quote, ev.certificates, attached=(bad_gpu,))
    verdict = appraise(ev, nonce=nonce, keys=KEYS, hotkey=HOTKEY, policy=POLICY, registry=registry, now=NOW)
    assert not verdict.accepted and verdict.reason_codes == ("bad-signature",)


def test_policy_refusals_of_the_gpu_are_named(env):
    snp, gpu, registry = env
    nonce = os.urandom(NONCE_LEN)
    strict = Policy.from_mapping({"sev-snp": {"allow_any_measurement": True}, "nvidia": {"measurements": ["00" * 48]}})
    verdict = appraise(_evidence(snp, gpu, nonce), nonce=nonce, keys=KEYS, hotkey=HOTKEY, policy=strict, registry=registry, now=NOW)
    assert verdict.reason_codes == ("measurement-not-allowed",) and "NVIDIA" in verdict.reasons[0]

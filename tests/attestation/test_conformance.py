"""The conformance vectors: this verifier reaches every expected verdict, the vectors catch a verifier that
skips a check, the generator reproduces them byte for byte, and the validator's (and doctor's) path agrees."""

from __future__ import annotations

import filecmp
import json
import subprocess
import sys
from pathlib import Path

import pytest

from omron_tee.attestation import conformance
from omron_tee.attestation.testing import vectors

ROOT = Path(__file__).resolve().parents[2]
V1 = ROOT / "conformance" / "v1"


@pytest.fixture(scope="module")
def shared() -> Path:
    if not vectors.available():
        pytest.fail(f"the conformance vectors need the shared test vectors at {vectors.TESTVECTORS}")
    return vectors.TESTVECTORS


def test_every_case_reaches_its_expected_verdict(shared):
    results = conformance.run_folder(V1, shared=shared)
    assert len(results) >= 30
    failed = [(r.name, r.expected_reasons, r.reasons, r.error) for r in results if not r.passed]
    assert not failed, failed


def test_a_verifier_that_skips_the_report_data_check_fails_the_vectors(shared, monkeypatch):
    from omron_tee.attestation.validate import appraise

    monkeypatch.setattr(appraise, "binding_reasons", lambda claims, expected: [])
    failed = {r.name for r in conformance.run_folder(V1, shared=shared) if not r.passed}
    assert {"sim-other-hotkey", "sim-replayed-nonce", "tdx-report-data-mismatch", "nvidia-alone"} <= failed


def test_a_verifier_that_accepts_debug_enclaves_fails_the_vectors(shared, monkeypatch):
    from omron_tee.attestation.validate import policy
    from omron_tee.reasons import Reason

    check = policy.Policy.check
    monkeypatch.setattr(policy.Policy, "check", lambda self, claims, *, now: [r for r in check(self, claims, now=now) if r[0] != Reason.DEBUG_ENCLAVE])
    failed = {r.name for r in conformance.run_folder(V1, shared=shared) if not r.passed}
    assert {"sim-debug", "snp-debug-refused"} <= failed


def test_the_generator_reproduces_the_committed_vectors(tmp_path):
    out = tmp_path / "v1"
    subprocess.run([sys.executable, str(ROOT / "conformance" / "generate.py"), str(out)], check=True, capture_output=True, timeout=120)
    committed = sorted(p.relative_to(V1) for p in V1.rglob("*") if p.is_file())
    made = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert made == committed
    assert all(filecmp.cmp(V1 / p, out / p, shallow=False) for p in committed)


def test_the_validators_and_the_doctors_appraisal_agree_with_the_runner_on_every_exchange_bound_case(shared):
    """Validators and ``omron-tee miner doctor`` appraise through ``appraise(nonce, keys, hotkey)``."""
    from omron_tee.attestation.binding import EnclavePublicKeys
    from omron_tee.attestation.collateral.store import CollateralStore
    from omron_tee.attestation.defaults import default_registry
    from omron_tee.attestation.validate.appraise import appraise
    from omron_tee.attestation.validate.policy import Policy

    manifest = json.loads((V1 / "manifest.json").read_text())
    checked = 0
    for name in manifest["cases"]:
        path = V1 / name
        case = json.loads(path.read_text())
        b = case["binding"]
        if "nonce" not in b:
            continue
        policy = Policy.load(path.parent / case["policy"])
        store = CollateralStore()
        registry = default_registry(simulated_keys=list(policy.simulated.trusted_keys), collateral=store)
        evidence = conformance.load_evidence(case["evidence"], path.parent, shared)
        v = appraise(evidence, nonce=bytes.fromhex(b["nonce"]), keys=EnclavePublicKeys(b["kem"], bytes.fromhex(b["hpke_public"]),
                     bytes.fromhex(b["signing_public"])), hotkey=b["hotkey"], policy=policy, registry=registry,
                     now=conformance._time(case["now"]), releases=conformance._releases(case.get("releases")))
        r = conformance.run_case(path, shared=shared)
        assert (v.accepted, tuple(sorted(set(v.reason_codes)))) == (r.accepted, r.reasons), case["name"]
        checked += 1
    assert checked >= 15


def test_the_cli_runs_the_vectors_as_a_user_would(shared):
    p = subprocess.run([sys.executable, "-m", "omron_tee.cli", "conformance", "run", str(V1), "--shared", str(shared), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout)
    assert out["failed"] == 0 and out["passed"] >= 30
    bad = subprocess.run([sys.executable, "-m", "omron_tee.cli", "conformance", "run", str(ROOT)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "manifest.json" in bad.stderr and "Traceback" not in bad.stderr

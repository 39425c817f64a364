"""Intel DCAP under a made-up PKI: every verify-layer refusal, and the policy on verified claims."""

from __future__ import annotations

import sys

import pytest

from omron_tee.attestation.collateral.store import CollateralStore
from omron_tee.attestation.evidence import Evidence, TeeType
from omron_tee.attestation.testing import guard, vectors
from omron_tee.attestation.testing.dcap import DcapTestPki, verifier_with_test_root
from omron_tee.attestation.validate.policy import Policy
from omron_tee.attestation.verify.dcap import SgxVerifier, TdxVerifier
from omron_tee.errors import CollateralError, VerificationError

pytestmark = pytest.mark.vectors

NOW = 1_790_000_000.0
MRENCLAVE = bytes.fromhex("aa" * 32)
MRSIGNER = bytes.fromhex("bb" * 32)


@pytest.fixture(scope="module")
def sgx_pki() -> DcapTestPki:
    return DcapTestPki("sgx", NOW)


@pytest.fixture(scope="module")
def tdx_pki() -> DcapTestPki:
    return DcapTestPki("tdx", NOW)


def _uptodate(tcb: dict) -> None:
    for level in tcb["tcbLevels"]:
        level["tcbStatus"] = "UpToDate"
        level["advisoryIDs"] = []


def test_sgx_quote_verifies_under_test_root(sgx_pki):
    q = sgx_pki.sgx_quote(mr_enclave=MRENCLAVE, report_data=b"r" * 64)
    claims = verifier_with_test_root(sgx_pki, sgx_pki.store()).verify(Evidence(TeeType.SGX, q), now=NOW)
    assert claims.measurement == MRENCLAVE
    assert claims.report_data == b"r" * 64
    assert claims.tcb_status == "ConfigurationAndSWHardeningNeeded"  # the template platform's level
    assert claims.details["trust_root"] == guard.TEST_ROOT_MARK


def test_tcb_status_comes_from_the_signed_tcb_info(sgx_pki):
    q = sgx_pki.sgx_quote()
    claims = verifier_with_test_root(sgx_pki, sgx_pki.store(edit_tcb_info=_uptodate)).verify(Evidence(TeeType.SGX, q), now=NOW)
    assert (claims.tcb_status, claims.advisory_ids) == ("UpToDate", ())

    def revoked(tcb: dict) -> None:
        for level in tcb["tcbLevels"]:
            level["tcbStatus"] = "Revoked"

    with pytest.raises(VerificationError) as e:
        verifier_with_test_root(sgx_pki, sgx_pki.store(edit_tcb_info=revoked)).verify(Evidence(TeeType.SGX, q), now=NOW)
    assert e.value.reason == "tcb-revoked"


def test_production_verifier_refuses_a_test_root(sgx_pki):
    ev = Evidence(TeeType.SGX, sgx_pki.sgx_quote())
    with pytest.raises(VerificationError) as e:
        SgxVerifier(sgx_pki.store()).verify(ev, now=NOW)
    assert e.value.reason == "untrusted-chain"
    # With Intel's real collateral, on its day, the test PCK chain still does not lead to Intel's root.
    then = DcapTestPki("sgx", vectors.SGX_NOW)
    real = CollateralStore()
    real.load_path(vectors.SGX_COLLATERAL)
    with pytest.raises(VerificationError) as e:
        SgxVerifier(real).verify(Evidence(TeeType.SGX, then.sgx_quote()), now=vectors.SGX_NOW)
    assert e.value.reason == "untrusted-chain"


def test_real_quote_refused_under_test_root(sgx_pki):
    with pytest.raises(VerificationError):
        verifier_with_test_root(sgx_pki, sgx_pki.store()).verify(vectors.sgx_evidence(), now=NOW)


def test_revoked_pck(sgx_pki):
    ev = Evidence(TeeType.SGX, sgx_pki.sgx_quote())
    with pytest.raises(VerificationError) as e:
        verifier_with_test_root(sgx_pki, sgx_pki.store(revoked_pck=True)).verify(ev, now=NOW)
    assert e.value.reason == "revoked"


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"issued": NOW - 40 * 86400, "next_update": NOW - 10 * 86400}, "collateral-expired"),
        ({"issued": NOW + 3600, "next_update": NOW + 40 * 86400}, "collateral-not-yet-valid"),
        ({"forge_tcb_signature": True}, "collateral-invalid"),
    ],
)
def test_bad_collateral(sgx_pki, kwargs, reason):
    ev = Evidence(TeeType.SGX, sgx_pki.sgx_quote())
    with pytest.raises(CollateralError) as e:
        verifier_with_test_root(sgx_pki, sgx_pki.store(**kwargs)).verify(ev, now=NOW)
    assert e.value.reason == reason


def test_pck_chain_from_another_pki_is_refused(sgx_pki):
    other = DcapTestPki("sgx", NOW)
    from omron_tee.attestation.testing.dcap import _pem

    q = sgx_pki.sgx_quote(pck_chain=_pem(other.pck, other.pck_ca, other.root))
    with pytest.raises(VerificationError):
        verifier_with_test_root(sgx_pki, sgx_pki.store()).verify(Evidence(TeeType.SGX, q), now=NOW)


def test_sgx_policy_paths(sgx_pki):
    v = verifier_with_test_root(sgx_pki, sgx_pki.store(edit_tcb_info=_uptodate))
    good = v.verify(Evidence(TeeType.SGX, sgx_pki.sgx_quote(mr_enclave=MRENCLAVE, mr_signer=MRSIGNER, isv_prod_id=7, isv_svn=3)), now=NOW)
    debug_ev = Evidence(TeeType.SGX, sgx_pki.sgx_quote(mr_enclave=MRENCLAVE, debug=True))
    # dcap-qvl itself refuses a debug enclave; the policy refuses it as well (defence in depth).
    with pytest.raises(VerificationError) as e:
        v.verify(debug_ev, now=NOW)
    assert e.value.reason == "debug-enclave"
    debug = v.describe(debug_ev)
    assert debug.debug and not good.debug

    by_enclave = Policy.from_mapping({"sgx": {"mrenclave": [MRENCLAVE.hex()]}})
    assert by_enclave.check(good, now=NOW) == []
    assert "debug-enclave" in [c for c, _ in by_enclave.check(debug, now=NOW)]

    other = Policy.from_mapping({"sgx": {"mrenclave": ["cc" * 32]}})
    assert [c for c, _ in other.check(good, now=NOW)] == ["measurement-not-allowed"]

    signer = {"sgx": {"signer": [{"mrsigner": MRSIGNER.hex(), "isv_prod_id": 7, "min_isv_svn": 3}]}}
    assert Policy.from_mapping(signer).check(good, now=NOW) == []
    signer["sgx"]["signer"][0]["min_isv_svn"] = 4
    reasons = Policy.from_mapping(signer).check(good, now=NOW)
    assert [c for c, _ in reasons] == ["isv-svn-too-low"] and "ISVSVN 3" in reasons[0][1]
    signer["sgx"]["signer"][0].update(min_isv_svn=0, isv_prod_id=8)
    assert [c for c, _ in Policy.from_mapping(signer).check(good, now=NOW)] == ["measurement-not-allowed"]


def test_advisories_must_be_allowed(sgx_pki):
    claims = verifier_with_test_root(sgx_pki, sgx_pki.store()).verify(Evidence(TeeType.SGX, sgx_pki.sgx_quote()), now=NOW)
    base = {"allow_any_measurement": True, "accepted_tcb_statuses": ["UpToDate", "ConfigurationAndSWHardeningNeeded"]}
    reasons = Policy.from_mapping({"sgx": base}).check(claims, now=NOW)
    assert [c for c, _ in reasons] == ["advisory-not-allowed"]
    assert "INTEL-SA-00289" in reasons[0][1]
    allowed = {**base, "allowed_advisories": ["INTEL-SA-00289", "INTEL-SA-00615"]}
    assert Policy.from_mapping({"sgx": allowed}).check(claims, now=NOW) == []


def test_tdx_under_test_root_and_policy(tdx_pki):
    mrtd = bytes.fromhex("11" * 48)
    rtmrs = tuple(bytes([i]) * 48 for i in range(4))
    v = verifier_with_test_root(tdx_pki, tdx_pki.store())
    claims = v.verify(Evidence(TeeType.TDX, tdx_pki.tdx_quote(mr_td=mrtd, rtmrs=rtmrs, report_data=b"t" * 64)), now=NOW)
    assert claims.tcb_status == "UpToDate" and claims.measurement == mrtd and claims.report_data == b"t" * 64
    pol = {"tdx": {"measurement": [{"mrtd": mrtd.hex(), "rtmr0": rtmrs[0].hex(), "rtmr2": rtmrs[2].hex()}]}}
    assert Policy.from_mapping(pol).check(claims, now=NOW) == []
    pol["tdx"]["measurement"][0]["rtmr2"] = "ff" * 48
    reasons = Policy.from_mapping(pol).check(claims, now=NOW)
    assert [c for c, _ in reasons] == ["measurement-not-allowed"] and "RTMR2" in reasons[0][1]
    pol = {"tdx": {"allow_any_measurement": True, "mrseam": ["00" * 48]}}
    assert [c for c, _ in Policy.from_mapping(pol).check(claims, now=NOW)] == ["mrseam-not-allowed"]
    pol = {"tdx": {"allow_any_measurement": True, "mrseam": [claims.details["mr_seam"]], "require_sept_ve_disable": True}}
    assert Policy.from_mapping(pol).check(claims, now=NOW) == []
    debug_ev = Evidence(TeeType.TDX, tdx_pki.tdx_quote(debug=True))
    with pytest.raises(VerificationError) as e:
        v.verify(debug_ev, now=NOW)
    assert e.value.reason == "debug-enclave"
    debug = v.describe(debug_ev)
    assert debug.debug
    assert "debug-enclave" in [c for c, _ in Policy.from_mapping({"tdx": {"allow_any_measurement": True}}).check(debug, now=NOW)]


def test_tdx_revoked_and_production_refusal(tdx_pki):
    ev = Evidence(TeeType.TDX, tdx_pki.tdx_quote())
    with pytest.raises(VerificationError) as e:
        verifier_with_test_root(tdx_pki, tdx_pki.store(revoked_pck=True)).verify(ev, now=NOW)
    assert e.value.reason == "revoked"
    with pytest.raises(VerificationError):
        TdxVerifier(tdx_pki.store()).verify(ev, now=NOW)


def test_test_roots_are_refused_outside_tests(sgx_pki, monkeypatch):
    monkeypatch.delitem(sys.modules, "pytest")
    monkeypatch.delenv("OMRON_TEE_ALLOW_TEST_ROOTS", raising=False)
    with pytest.raises(guard.TestRootRefused):
        verifier_with_test_root(sgx_pki, sgx_pki.store())


class _CountingPcs:
    """An Intel PCS client that records what it is asked for and has nothing."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, str]] = []

    def fetch(self, tee: str, fmspc: str, ca: str):
        self.asked.append((tee, fmspc, ca))
        raise CollateralError("not here", reason="collateral-unavailable")


@pytest.mark.parametrize("forgery", ["made-up root", "leaf under the real PCK CA's name", "no CA"])
def test_a_pck_chain_intel_did_not_sign_never_reaches_the_collateral_store(sgx_pki, forgery):
    """The FMSPC a PCK certificate names chooses (and may fetch) collateral only once the chain verifies up to Intel's
    pinned root: a forged one naming a new FMSPC each time must not send the validator to Intel PCS for every probe,
    and is refused as untrusted, never as collateral the validator could not find (which would not be charged)."""
    from cryptography import x509

    from omron_tee.attestation.testing.dcap import _pem

    if forgery == "made-up root":
        chain = None  # the test PKI's own chain: leaf, CA and a root named "Intel SGX Root CA"
    elif forgery == "leaf under the real PCK CA's name":
        import dcap_qvl

        real = [c for c in x509.load_pem_x509_certificates(dcap_qvl.parse_quote(vectors.SGX_QUOTE.read_bytes()).cert_chain_pem_bytes())
                if c.subject != c.issuer]
        chain = _pem(sgx_pki.pck, real[1])  # the real Intel PCK CA, which never signed this leaf
    else:
        chain = _pem(sgx_pki.pck)
    pcs = _CountingPcs()
    store = CollateralStore(intel_client=pcs)  # type: ignore[arg-type]
    with pytest.raises(VerificationError) as e:
        SgxVerifier(store).verify(Evidence(TeeType.SGX, sgx_pki.sgx_quote(pck_chain=chain)), now=NOW)
    assert e.value.reason == "untrusted-chain" and pcs.asked == []

"""Intel SGX and TDX: the real published quotes give the verdicts recorded with them."""

from __future__ import annotations

import time

import dcap_qvl
import pytest

from omron_tee.attestation.abi import sgx, tdx
from omron_tee.attestation.evidence import Evidence, TeeType
from omron_tee.attestation.testing import vectors
from omron_tee.attestation.verify.dcap import SgxVerifier, TdxVerifier, map_dcap_error
from omron_tee.errors import CollateralError, ParseError, VerificationError

pytestmark = pytest.mark.vectors


def test_sgx_quote_fields():
    q = sgx.parse(vectors.SGX_QUOTE.read_bytes())
    assert q.header.version == 3
    assert q.report.mr_enclave.hex() == "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    assert q.report.mr_signer.hex() == "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
    assert q.report.attributes.hex() == "0500000000000000e700000000000000"
    assert q.debug is False
    assert q.report.report_data == b"Hello, world!" + bytes(51)
    assert q.pck_chain_pem is not None and q.pck_chain_pem.count(b"BEGIN CERTIFICATE") == 3


def test_tdx_quote_fields():
    q = tdx.parse(vectors.TDX_QUOTE.read_bytes())
    assert q.header.version == 4
    assert q.report.mr_td.hex() == (
        "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
    )
    assert q.report.report_data.hex() == (
        "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9"
        "eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20"
    )
    assert q.report.td_attributes.hex() == "0000001000000000"
    assert q.debug is False


def test_sgx_verdict_on_its_day(intel_store):
    claims = SgxVerifier(intel_store).verify(vectors.sgx_evidence(), now=vectors.SGX_NOW)
    assert claims.tcb_status == "ConfigurationAndSWHardeningNeeded"
    assert claims.advisory_ids == ("INTEL-SA-00289", "INTEL-SA-00615")
    assert claims.measurement.hex().startswith("33d8736d")
    assert claims.details["fmspc"] == "00A067110000"
    assert claims.details["pck_ca"] == "processor"
    assert claims.details["trust_root"] == "Intel SGX Root CA"


def test_sgx_today_reports_expired_crl(intel_store):
    with pytest.raises(CollateralError) as e:
        SgxVerifier(intel_store).verify(vectors.sgx_evidence(), now=time.time())
    assert e.value.reason == "collateral-expired"
    assert "CrlExpired" in str(e.value)


def test_tdx_verdict_on_its_day(intel_store):
    claims = TdxVerifier(intel_store).verify(vectors.tdx_evidence(), now=vectors.TDX_NOW)
    assert claims.tcb_status == "UpToDate"
    assert claims.advisory_ids == ()
    assert claims.debug is False
    assert claims.details["rtmr0"].startswith("44c0197b")


def test_same_verdict_as_the_library(intel_store):
    """Our verifier's status equals dcap_qvl.verify on the same quote and collateral."""
    for ev, path, now, cls in (
        (vectors.sgx_evidence(), vectors.SGX_COLLATERAL, vectors.SGX_NOW, SgxVerifier),
        (vectors.tdx_evidence(), vectors.TDX_COLLATERAL, vectors.TDX_NOW, TdxVerifier),
    ):
        lib = dcap_qvl.verify(ev.quote, dcap_qvl.QuoteCollateralV3.from_json(path.read_text()), now)
        ours = cls(intel_store).verify(ev, now=now)
        assert (ours.tcb_status, list(ours.advisory_ids)) == (lib.status, list(lib.advisory_ids))


def test_collateral_for_another_platform_is_missing():
    from omron_tee.attestation.collateral.store import CollateralStore

    store = CollateralStore()
    store.load_path(vectors.TDX_COLLATERAL)  # only the TDX platform's collateral
    with pytest.raises(CollateralError) as e:
        SgxVerifier(store).verify(vectors.sgx_evidence(), now=vectors.SGX_NOW)
    assert e.value.reason == "collateral-missing"
    assert "00A067110000" in str(e.value) and "tdx-B0C06F000000-platform" in str(e.value)


def test_wrong_verifier_for_type(intel_store):
    with pytest.raises(VerificationError):
        TdxVerifier(intel_store).verify(vectors.sgx_evidence(), now=vectors.SGX_NOW)
    with pytest.raises(ParseError) as e:
        TdxVerifier(intel_store).verify(Evidence(TeeType.TDX, vectors.SGX_QUOTE.read_bytes()), now=vectors.SGX_NOW)
    assert e.value.field == "header.version"


@pytest.mark.parametrize(
    ("message", "cls", "reason"),
    [
        ("Verification failed: CrlExpired { time: UnixTime(2), next_update: UnixTime(1) }", CollateralError, "collateral-expired"),
        ("Verification failed: TCBInfo expired", CollateralError, "collateral-expired"),
        ("Verification failed: QE Identity expired", CollateralError, "collateral-expired"),
        ("Verification failed: TCBInfo issue date is in the future", CollateralError, "collateral-not-yet-valid"),
        ("Verification failed: Signature is invalid for tcb_info in quote_collateral", CollateralError, "collateral-invalid"),
        ("Verification failed: Fmspc mismatch", CollateralError, "collateral-mismatch"),
        ("Verification failed: Failed to verify certificate chain: CertRevoked", VerificationError, "revoked"),
        ("Verification failed: Failed to verify certificate chain: UnknownIssuer", VerificationError, "untrusted-chain"),
        ("Verification failed: ISV enclave report signature is invalid", VerificationError, "bad-signature"),
        ("Verification failed: QE report hash mismatch", VerificationError, "bad-signature"),
        ("Verification failed: something new", VerificationError, "evidence-unverified"),
    ],
)
def test_error_mapping(message, cls, reason):
    err = map_dcap_error(message)
    assert type(err) is cls
    assert err.reason == reason

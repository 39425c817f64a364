"""NVIDIA Hopper: the real report and chain, and refusals under a made-up device PKI."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from omron_tee.attestation.abi import nvidia as abi
from omron_tee.attestation.collateral.store import CollateralStore
from omron_tee.attestation.testing import vectors
from omron_tee.attestation.testing.nvidia import NvidiaTestPki
from omron_tee.attestation.validate.policy import Policy
from omron_tee.attestation.verify.nvidia import NvidiaVerifier, measurement_digest
from omron_tee.errors import ParseError, VerificationError

pytestmark = pytest.mark.vectors

NOW = 1_790_000_000.0


@pytest.fixture(scope="module")
def pki() -> NvidiaTestPki:
    return NvidiaTestPki(NOW)


def codes(reasons):
    return [c for c, _ in reasons]


def test_real_report_fields():
    r = abi.parse(vectors.nvidia_report_bytes())
    assert r.nonce.hex() == "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"
    assert len(r.request.nonce) == 32 and r.request.signature_requested and r.request.param2 == 0xFF
    assert len(r.response.blocks) == 64
    assert len(r.signed_bytes) == 4117 - 96
    assert r.driver_version == "550.90.07" and r.vbios_version == "96.00.9F.00.01"


def test_real_chain_and_signature_verify():
    claims = NvidiaVerifier().verify(vectors.nvidia_evidence(), now=time.time())
    assert claims.report_data == abi.parse(vectors.nvidia_report_bytes()).nonce
    assert claims.details["trust_root"] == "NVIDIA Device Identity CA"
    assert claims.details["ocsp"] == "not-configured"
    assert claims.measurement == measurement_digest(abi.parse(vectors.nvidia_report_bytes()))
    # Without revocation collateral the default policy refuses, saying why; a policy may waive OCSP.
    assert codes(Policy.from_mapping({"nvidia": {"allow_any_measurement": True}}).check(claims, now=time.time())) == ["ocsp-not-configured"]
    waived = Policy.from_mapping({"nvidia": {"measurements": [claims.measurement.hex()], "require_ocsp": False}})
    assert waived.check(claims, now=time.time()) == []
    store_claims = NvidiaVerifier(CollateralStore()).verify(vectors.nvidia_evidence(), now=time.time())
    assert store_claims.details["ocsp"] == "missing"


def test_real_chain_without_root_is_completed_with_the_builtin_root():
    pem = vectors.NVIDIA_CHAIN.read_bytes()
    without_root = pem[: pem.rindex(b"-----BEGIN CERTIFICATE-----")]
    ev = vectors.nvidia_evidence()
    ev = type(ev)(ev.tee_type, ev.quote, without_root)
    assert NvidiaVerifier().verify(ev, now=time.time()).details["trust_root"] == "NVIDIA Device Identity CA"


def test_real_report_with_a_tampered_byte_fails():
    raw = bytearray(vectors.nvidia_report_bytes())
    raw[37 + 8 + 10] ^= 1  # inside the first measurement value
    ev = vectors.nvidia_evidence()
    with pytest.raises(VerificationError) as e:
        NvidiaVerifier().verify(type(ev)(ev.tee_type, bytes(raw), ev.certificates), now=time.time())
    assert e.value.reason == "bad-signature"


def test_made_up_root_refused_in_production(pki):
    with pytest.raises(VerificationError) as e:
        NvidiaVerifier().verify(pki.evidence(), now=NOW)
    assert e.value.reason == "untrusted-chain"


def test_test_pki_with_ocsp(pki):
    claims = pki.verifier(pki.store()).verify(pki.evidence(nonce=b"n" * 32), now=NOW)
    assert claims.details["ocsp"] == "good" and claims.report_data == b"n" * 32
    assert pki.verifier(pki.store(signer="delegated")).verify(pki.evidence(), now=NOW).details["ocsp"] == "good"
    missing = pki.verifier(pki.store(ocsp_for=(1, 2))).verify(pki.evidence(), now=NOW)
    assert missing.details["ocsp"] == "missing" and "GH100 Identity" in missing.details["ocsp_detail"]
    stale = pki.verifier(pki.store(this_update=NOW - 10 * 86400, next_update=NOW - 60)).verify(pki.evidence(), now=NOW)
    assert stale.details["ocsp"] == "expired"
    pol = Policy.from_mapping({"nvidia": {"allow_any_measurement": True}})
    assert pol.check(claims, now=NOW) == []
    assert codes(pol.check(missing, now=NOW)) == ["ocsp-missing"]
    assert codes(pol.check(stale, now=NOW)) == ["ocsp-expired"]


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [({"status": ocsp.OCSPCertStatus.REVOKED}, "revoked"), ({"status": ocsp.OCSPCertStatus.UNKNOWN}, "revoked"), ({"signer": "stranger"}, "bad-ocsp")],
)
def test_ocsp_refusals(pki, kwargs, reason):
    with pytest.raises(VerificationError) as e:
        pki.verifier(pki.store(**kwargs)).verify(pki.evidence(), now=NOW)
    assert e.value.reason == reason


def test_ocsp_response_for_another_certificate_is_refused(pki):
    from omron_tee.attestation.collateral.nvidia import CachedOcsp

    other = NvidiaTestPki(NOW)
    store = CollateralStore()
    # Same serial numbers, other issuer: the CertID does not match, so the response is not used.
    for i in (1, 2, 3):
        store.add_ocsp(CachedOcsp.from_der(other.ocsp_der(i)), persist=False)
    assert pki.verifier(store).verify(pki.evidence(), now=NOW).details["ocsp"] == "missing"


def test_signature_fwid_and_chain_refusals(pki):
    with pytest.raises(VerificationError) as e:
        pki.verifier().verify(pki.evidence(key=ec.generate_private_key(ec.SECP384R1())), now=NOW)
    assert e.value.reason == "bad-signature"
    with pytest.raises(VerificationError) as e:
        pki.verifier().verify(pki.evidence(fwid=b"\x01" * 48), now=NOW)
    assert e.value.reason == "fwid-mismatch"
    other = NvidiaTestPki(NOW)
    with pytest.raises(VerificationError):
        pki.verifier().verify(pki.evidence(chain=other.chain_pem()), now=NOW)
    with pytest.raises(VerificationError) as e:
        pki.verifier().verify(pki.evidence(chain=b""), now=NOW)
    assert e.value.reason == "bad-certificate-chain"
    with pytest.raises(VerificationError) as e:
        pki.verifier().verify(pki.evidence(), now=NOW + 10 * 365 * 86400)
    assert e.value.reason == "certificate-expired"


def test_measurement_policy(pki):
    claims = pki.verifier(pki.store()).verify(pki.evidence(), now=NOW)
    block3 = claims.details["measurements"]["3"]
    golden = Policy.from_mapping({"nvidia": {"golden": {"3": [block3], "5": claims.details["measurements"]["5"]}}})
    assert golden.check(claims, now=NOW) == []
    changed = pki.verifier(pki.store()).verify(pki.evidence(measurements={3: b"\x00" * 48}), now=NOW)
    reasons = golden.check(changed, now=NOW)
    assert codes(reasons) == ["measurement-not-allowed"] and "block(s) 3" in reasons[0][1]
    digest = Policy.from_mapping({"nvidia": {"measurements": [claims.measurement.hex()]}})
    assert digest.check(claims, now=NOW) == [] and codes(digest.check(changed, now=NOW)) == ["measurement-not-allowed"]
    versions = Policy.from_mapping({"nvidia": {"allow_any_measurement": True, "allowed_driver_versions": ["560.1"], "allowed_vbios_versions": ["96.00.9F.00.01"]}})
    assert codes(versions.check(claims, now=NOW)) == ["driver-version-not-allowed"]


def test_parse_errors_name_the_field():
    raw = vectors.nvidia_report_bytes()
    with pytest.raises(ParseError) as e:
        abi.parse(raw[:-1])
    assert e.value.field == "response.signature"
    bad = bytearray(raw)
    bad[1] = 0x61
    with pytest.raises(ParseError) as e:
        abi.parse(bytes(bad))
    assert e.value.field == "request.code"
    with pytest.raises(ParseError):
        abi.decode_report_text("zz")

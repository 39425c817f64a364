"""AMD SEV-SNP: the real report, and every refusal with a made-up ARK -> ASK -> VCEK."""

from __future__ import annotations

import time
import warnings

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from omron_tee.attestation.abi import snp as abi
from omron_tee.attestation.collateral.store import CollateralStore
from omron_tee.attestation.evidence import Evidence, TeeType
from omron_tee.attestation.testing import vectors
from omron_tee.attestation.testing.snp import SnpTestPki
from omron_tee.attestation.validate.policy import Policy
from omron_tee.attestation.verify.snp import SnpVerifier
from omron_tee.errors import CollateralError, ParseError, VerificationError

pytestmark = pytest.mark.vectors

NOW = 1_790_000_000.0
REAL_MEASUREMENT = "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"


@pytest.fixture(scope="module")
def pki() -> SnpTestPki:
    return SnpTestPki(NOW)


def codes(reasons):
    return [c for c, _ in reasons]


# --- the real report ---------------------------------------------------------


def test_real_report_fields():
    r = abi.parse(vectors.SNP_REPORT.read_bytes())
    assert r.version == 2
    assert r.measurement.hex() == REAL_MEASUREMENT
    assert r.report_data == bytes([1, 2, 3, 4, 5]) + bytes(59)
    assert r.policy.raw == 0x00000000000B0000 and r.policy.debug and r.policy.smt and not r.policy.migrate_ma
    assert r.signing_key_name == "vcek"
    assert r.reported_tcb.components() == {"bootloader": 2, "tee": 0, "snp": 5, "microcode": 68}


def test_real_report_verifies_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the VCEK's serial 0 must not leak a deprecation warning
        claims = SnpVerifier().verify(vectors.snp_evidence(), now=time.time())
    assert claims.measurement.hex() == REAL_MEASUREMENT
    assert claims.debug is True
    assert claims.details["product"] == "Milan" and claims.details["trust_root"] == "ARK-Milan"
    assert claims.tcb_status == "NotRated"


def test_real_report_default_policy_refuses_debug_dev_policy_accepts():
    claims = SnpVerifier().verify(vectors.snp_evidence(), now=time.time())
    prod = Policy.from_mapping({"sev-snp": {"measurements": [REAL_MEASUREMENT]}})
    assert codes(prod.check(claims, now=time.time())) == ["debug-enclave"]
    dev = Policy.from_mapping({"general": {"allow_debug": True}, "sev-snp": {"measurements": [REAL_MEASUREMENT]}})
    assert dev.check(claims, now=time.time()) == []


def test_real_vcek_from_collateral_dir():
    store = CollateralStore()
    store.load_path(vectors.SNP_DIR)
    claims = SnpVerifier(store).verify(vectors.snp_evidence(with_vcek=False), now=time.time())
    assert claims.measurement.hex() == REAL_MEASUREMENT


def test_missing_vcek_says_so():
    with pytest.raises(CollateralError) as e:
        SnpVerifier(CollateralStore()).verify(vectors.snp_evidence(with_vcek=False), now=time.time())
    assert e.value.reason == "collateral-missing" and "VCEK" in str(e.value)


def test_real_report_in_a_certificate_table():
    table = abi.build_cert_table({"vcek": vectors.SNP_VCEK.read_bytes()})
    ev = Evidence(TeeType.SEV_SNP, vectors.SNP_REPORT.read_bytes(), certificates=table)
    assert SnpVerifier().verify(ev, now=time.time()).measurement.hex() == REAL_MEASUREMENT


def test_real_vcek_outside_its_validity():
    with pytest.raises(VerificationError) as e:
        SnpVerifier().verify(vectors.snp_evidence(), now=1_600_000_000)  # 2020, before the VCEK
    assert e.value.reason == "certificate-not-yet-valid"


# --- a made-up PKI -----------------------------------------------------------


def test_test_pki_report_verifies_and_policy_accepts(pki):
    m = bytes(range(48))
    claims = pki.verifier(pki.store(crl=pki.crl())).verify(pki.evidence(measurement=m, report_data=b"d" * 64, version=3), now=NOW)
    assert claims.measurement == m and claims.report_data == b"d" * 64 and not claims.debug
    assert claims.details["crl_checked"] is True
    pol = Policy.from_mapping({"sev-snp": {"measurements": [m.hex()], "min_tcb": {"bootloader": 2, "snp": 5, "microcode": 68}, "require_crl": True}})
    assert pol.check(claims, now=NOW) == []


def test_policy_refusals(pki):
    m = bytes(48)
    v = pki.verifier()

    def check(section, **report):
        claims = v.verify(pki.evidence(measurement=m, **report), now=NOW)
        return codes(Policy.from_mapping({"sev-snp": {"measurements": [m.hex()], **section}}).check(claims, now=NOW))

    assert check({}) == []
    assert codes(Policy.from_mapping({"sev-snp": {"measurements": ["11" * 48]}}).check(v.verify(pki.evidence(measurement=m), now=NOW), now=NOW)) == ["measurement-not-allowed"]
    assert check({"min_tcb": {"snp": 6}}) == ["tcb-too-old"]
    assert check({}, policy=abi.POLICY_RESERVED_ONE | abi.POLICY_DEBUG) == ["debug-enclave"]
    assert check({}, policy=abi.POLICY_RESERVED_ONE | abi.POLICY_MIGRATE_MA) == ["guest-policy"]
    assert check({"forbidden_policy_bits": ["smt"]}) == ["guest-policy"]
    assert check({"required_policy_bits": ["single_socket"]}) == ["guest-policy"]
    assert check({"host_data": ["22" * 32]}) == ["host-data-not-allowed"]
    assert check({"host_data": ["22" * 32]}, host_data=b"\x22" * 32) == []
    assert check({"allowed_vmpls": [0]}, vmpl=2) == ["vmpl-not-allowed"]
    assert check({"require_crl": True}) == ["crl-not-checked"]
    assert check({"min_guest_svn": 2}, guest_svn=1) == ["guest-svn-too-low"]
    assert check({"allowed_signing_keys": ["vlek"]}) == ["signing-key-not-allowed"]


def test_vcek_of_another_chip_or_tcb(pki):
    v = pki.verifier()
    with pytest.raises(VerificationError) as e:
        v.verify(pki.evidence(chip_id=b"\x07" * 64), now=NOW)
    assert e.value.reason == "vcek-mismatch"
    newer = abi.TcbVersion.decode(0x4406000000000002, turin_layout=False)
    with pytest.raises(VerificationError) as e:
        v.verify(pki.evidence(reported_tcb=newer), now=NOW)
    assert e.value.reason == "vcek-mismatch"


def test_signature_by_another_key(pki):
    with pytest.raises(VerificationError) as e:
        pki.verifier().verify(pki.evidence(key=ec.generate_private_key(ec.SECP384R1())), now=NOW)
    assert e.value.reason == "bad-signature"


def test_revoked_vcek_and_crl_problems(pki):
    ev = pki.evidence()
    with pytest.raises(VerificationError) as e:
        pki.verifier(pki.store(crl=pki.crl(revoked=[pki.vcek.serial_number]))).verify(ev, now=NOW)
    assert e.value.reason == "revoked"
    with pytest.raises(VerificationError) as e:
        pki.verifier(pki.store(crl=pki.crl(revoked=[pki.ask.serial_number]))).verify(ev, now=NOW)
    assert e.value.reason == "revoked"
    with pytest.raises(CollateralError) as e:
        pki.verifier(pki.store(crl=pki.crl(next_update=NOW - 60))).verify(ev, now=NOW)
    assert e.value.reason == "collateral-expired"
    forged = pki.crl(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(CollateralError) as e:
        pki.verifier(pki.store(crl=forged)).verify(ev, now=NOW)
    assert e.value.reason == "collateral-invalid"


def test_chain_to_a_made_up_ark_is_refused_in_production(pki):
    # Even when the evidence hands over the whole made-up chain, the pinned AMD ARK decides.
    chain = pki.chain_pem() + pki.vcek.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(VerificationError) as e:
        SnpVerifier().verify(pki.evidence(certificates=chain), now=NOW)
    assert e.value.reason == "bad-certificate-chain"
    # A VCEK signed by a different ASK under the test ARK's name is refused by the test verifier too.
    other = SnpTestPki(NOW, chip_id=pki.chip_id)
    with pytest.raises(VerificationError):
        pki.verifier().verify(other.evidence(), now=NOW)


def test_vcek_expired(pki):
    short = pki.make_vcek(pki.chip_id, pki.tcb, not_after=NOW - 1)
    with pytest.raises(VerificationError) as e:
        pki.verifier().verify(pki.evidence(certificates=short.public_bytes(serialization.Encoding.DER)), now=NOW)
    assert e.value.reason == "certificate-expired"


def test_vcek_from_store_and_unsigned_report(pki):
    store = pki.store(with_vcek=True)
    claims = pki.verifier(store).verify(pki.evidence(certificates=b""), now=NOW)
    assert claims.details["signing_key"] == "vcek"
    unsigned = pki.report(signing_key=abi.SIGNING_KEY_NONE)
    with pytest.raises(VerificationError):
        pki.verifier(store).verify(Evidence(TeeType.SEV_SNP, unsigned), now=NOW)


def test_parse_errors_name_the_field():
    data = bytearray(vectors.SNP_REPORT.read_bytes())
    data[0] = 9
    with pytest.raises(ParseError) as e:
        abi.parse(bytes(data))
    assert e.value.field == "version"
    data = bytearray(vectors.SNP_REPORT.read_bytes())
    data[0x400] = 1
    with pytest.raises(ParseError) as e:
        abi.parse(bytes(data))
    assert e.value.field == "signature.reserved"
    with pytest.raises(ParseError) as e:
        abi.parse(vectors.SNP_REPORT.read_bytes()[:-1])
    assert e.value.field == "length"


def test_cert_table_guids_in_either_byte_order() -> None:
    """Hosts write RFC 4122 GUID bytes (AMD's tools, go-sev-guest); some tools write mixed-endian."""
    import uuid

    from omron_tee.attestation.abi.snp import CERT_GUIDS, build_cert_table, parse_cert_table

    blobs = {"vcek": b"\x30\x82vcek", "ask": b"\x30\x82ask"}
    standard = build_cert_table(blobs)
    assert parse_cert_table(standard) == blobs
    names = {v: k for k, v in CERT_GUIDS.items()}
    mixed = bytearray(standard)
    for i in range(2):
        guid = uuid.UUID(bytes=bytes(mixed[24 * i : 24 * i + 16]))
        mixed[24 * i : 24 * i + 16] = guid.bytes_le
    assert names["vcek"].bytes_le != names["vcek"].bytes
    assert parse_cert_table(bytes(mixed)) == blobs

"""Property-based fuzz of every parser: no input raises anything but ParseError.

Two generators per parser: arbitrary bytes (headers, lengths), and mutations
of the real evidence (byte changes, truncation, insertion), which reach the
deeper structures. Verifiers are fuzzed the same way: anything but an
AttestationError escaping them is a bug.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from omron_tee.attestation.abi import nvidia as nv_abi, sgx, simulated, snp as snp_abi, tdx
from omron_tee.attestation.evidence import Evidence, TeeType
from omron_tee.attestation.testing import vectors
from omron_tee.attestation.verify.nvidia import NvidiaVerifier
from omron_tee.attestation.verify.snp import SnpVerifier, evidence_certificates
from omron_tee.errors import AttestationError, ParseError

pytestmark = pytest.mark.vectors
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PARSERS = {
    "sgx": sgx.parse,
    "tdx": tdx.parse,
    "sev-snp": snp_abi.parse,
    "nvidia": nv_abi.parse,
    "snp-cert-table": snp_abi.parse_cert_table,
    "simulated": simulated.parse,
}


def _seed(name: str) -> bytes:
    if name == "sgx":
        return vectors.SGX_QUOTE.read_bytes()
    if name == "tdx":
        return vectors.TDX_QUOTE.read_bytes()
    if name == "sev-snp":
        return vectors.SNP_REPORT.read_bytes()
    if name == "nvidia":
        return vectors.nvidia_report_bytes()
    if name == "snp-cert-table":
        return snp_abi.build_cert_table({"vcek": vectors.SNP_VCEK.read_bytes(), "ask": b"\x30\x03abc"})
    return simulated.encode_body(flags=0, issued_at_ms=1, measurement=bytes(48), report_data=bytes(64), key_id=bytes(32)) + bytes(64)


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["set", "truncate", "insert", "delete"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "set":
            data[i] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[i : i + draw(st.integers(1, 8))]
    return bytes(data)


def _only_parse_errors(parse, data: bytes) -> None:
    try:
        parse(data)
    except ParseError:
        pass


@pytest.mark.parametrize("name", sorted(PARSERS))
@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_bytes(name, data):
    _only_parse_errors(PARSERS[name], data)


@pytest.mark.parametrize("name", sorted(PARSERS))
@FUZZ
@given(data=st.data())
def test_mutated_real_evidence(name, data):
    _only_parse_errors(PARSERS[name], data.draw(mutated(_seed(name))))


@FUZZ
@given(text=st.text(max_size=200) | st.binary(max_size=200))
def test_hex_report_text(text):
    _only_parse_errors(nv_abi.decode_report_text, text)


@pytest.mark.parametrize("bad", [None, "text", 5, ["x"]])
def test_non_bytes_input(bad):
    for name, parse in PARSERS.items():
        if name == "simulated":
            continue  # the simulated parser takes bytes from its own backend only
        with pytest.raises(ParseError) as e:
            parse(bad)
        assert e.value.field == "input"


@FUZZ
@given(data=st.data())
def test_verifiers_raise_only_attestation_errors(data):
    now = time.time()
    report = data.draw(mutated(vectors.SNP_REPORT.read_bytes()))
    certs = data.draw(st.sampled_from([vectors.SNP_VCEK.read_bytes(), b"", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"]))
    for verify in (
        lambda: SnpVerifier().verify(Evidence(TeeType.SEV_SNP, report, certs), now=now),
        lambda: NvidiaVerifier().verify(Evidence(TeeType.NVIDIA, data.draw(mutated(vectors.nvidia_report_bytes())), vectors.NVIDIA_CHAIN.read_bytes()), now=now),
        lambda: evidence_certificates(data.draw(st.binary(max_size=300))),
    ):
        try:
            verify()
        except AttestationError:
            pass


@pytest.mark.parametrize("name", ["sgx", "tdx"])
@FUZZ
@given(data=st.data())
def test_fast_and_field_by_field_paths_agree(name, data):
    """The one-unpack fast path for DCAP signature data accepts exactly what the named-field parser accepts."""
    from omron_tee.attestation.abi import dcap_common as dc

    quote = data.draw(mutated(_seed(name)))
    parse = PARSERS[name]

    def outcome():
        try:
            return parse(quote)
        except ParseError:
            return "ParseError"

    fast = outcome()
    real = dc._fast_signature_data
    try:
        dc._fast_signature_data = lambda *a: (_ for _ in ()).throw(dc._Unusual())
        slow = outcome()
    finally:
        dc._fast_signature_data = real
    assert fast == slow


@FUZZ
@given(data=st.data())
def test_snp_fast_and_field_by_field_paths_agree(data):
    quote = data.draw(mutated(_seed("sev-snp")) | st.binary(min_size=snp_abi.REPORT_LEN, max_size=snp_abi.REPORT_LEN))

    def outcome():
        try:
            return snp_abi.parse(quote)
        except ParseError:
            return "ParseError"

    fast = outcome()
    real = snp_abi._fast
    try:
        snp_abi._fast = lambda d: (_ for _ in ()).throw(snp_abi._Unusual())
        slow = outcome()
    finally:
        snp_abi._fast = real
    assert fast == slow


# --- collateral and policy parsers: only their typed errors ------------------

from omron_tee.attestation.collateral import bundle  # noqa: E402
from omron_tee.attestation.collateral.intel import IntelCollateral  # noqa: E402
from omron_tee.attestation.collateral.nvidia import CachedOcsp  # noqa: E402
from omron_tee.attestation.collateral.store import CollateralStore  # noqa: E402
from omron_tee.attestation.validate.policy import Policy  # noqa: E402
from omron_tee.errors import CollateralError, ConfigError  # noqa: E402


@FUZZ
@given(data=st.data())
def test_collateral_parsers(data):
    intel = data.draw(mutated(vectors.SGX_COLLATERAL.read_bytes()))
    blob = data.draw(st.binary(max_size=600))
    for parse, arg in (
        (IntelCollateral.from_json, intel),
        (bundle.parse, intel),
        (CachedOcsp.from_der, blob),
        (lambda b: CollateralStore().add_loose(b, name="fuzz"), blob),
        (lambda b: CollateralStore().add_loose(b, name="fuzz.json"), intel),
    ):
        try:
            parse(arg)
        except (CollateralError, AttestationError):
            pass


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 300) | st.text(max_size=8) | st.sampled_from(["00" * 32, "00" * 48, "UpToDate", "smt"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["mrtd", "rtmr0", "mrsigner", "isv_prod_id", "bootloader", "1", "x"]), inner, max_size=3),
    max_leaves=8,
)
_keys = st.sampled_from(
    ["mrenclave", "signer", "measurement", "measurements", "mrseam", "min_tcb", "golden", "accepted_tcb_statuses", "allowed_advisories",
     "allow_any_measurement", "allowed_vmpls", "require_ocsp", "host_data", "forbidden_policy_bits", "allow", "allow_debug",
     "max_evidence_age_seconds", "trusted_keys"]
)


@FUZZ
@given(doc=st.dictionaries(st.sampled_from(["general", "simulated", "sgx", "tdx", "sev-snp", "nvidia"]), st.dictionaries(_keys, _values, max_size=4) | _values, max_size=4))
def test_policy_mapping_raises_only_config_errors(doc):
    try:
        Policy.from_mapping(doc)
    except ConfigError:
        pass

"""Simulated evidence through appraisal: every bad input gives its named reason."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from omron_tee.attestation.abi import simulated as abi
from omron_tee.attestation.binding import EnclavePublicKeys, report_data_for
from omron_tee.attestation.evidence import Evidence, TeeType
from omron_tee.attestation.validate.appraise import appraise
from omron_tee.attestation.validate.policy import Policy
from omron_tee.attestation.verify.registry import VerifierRegistry
from omron_tee.attestation.verify.simulated import SimulatedVerifier
from omron_tee.channel.hpke import KemSuite
from omron_tee.enclave.simulated import SimulatedBackend, load_or_create_dev_key
from omron_tee.errors import AttestationError, ConfigError, ParseError, ProtocolError
from omron_tee.exchange.requester import check_attestation, new_nonce
from omron_tee.protocol import AttestRequest, AttestResponse


def _attest(app, nonce: bytes, kem: KemSuite = KemSuite.X25519) -> AttestResponse:
    """What the miner sends back, through its JSON encoding (as on the wire)."""
    return AttestResponse.from_json(app.attest(AttestRequest(nonce, kem.value)).to_json())


def _reasons(sim, response: AttestResponse, nonce: bytes, *, policy: Policy | None = None, registry: VerifierRegistry | None = None, now: float | None = None):
    verdict = appraise(response.evidence, nonce=nonce, keys=response.keys, hotkey=sim.hotkey, policy=policy or sim.policy,
                       registry=registry or sim.verifiers, now=time.time() if now is None else now)
    with pytest.raises(AttestationError) as e:
        check_attestation(response, hotkey=sim.hotkey, nonce=nonce, policy=policy or sim.policy, registry=registry or sim.verifiers, now=now)
    assert not verdict.accepted
    assert e.value.reason == verdict.reason_code
    return verdict


def _report(key: Ed25519PrivateKey, *, report_data: bytes, measurement: bytes, issued_at_ms: int | None = None, flags: int = 0, key_id: bytes | None = None) -> Evidence:
    body = abi.encode_body(
        flags=flags,
        issued_at_ms=int(time.time() * 1000) if issued_at_ms is None else issued_at_ms,
        measurement=measurement,
        report_data=report_data,
        key_id=key_id or hashlib.sha256(key.public_key().public_bytes_raw()).digest(),
    )
    return Evidence(TeeType.SIMULATED, body + key.sign(body))


@pytest.mark.parametrize("kem", list(KemSuite), ids=lambda k: k.name)
def test_genuine_evidence_is_accepted(sim, kem) -> None:
    app = sim.app()
    nonce = new_nonce()
    resp = _attest(app, nonce, kem)
    session = check_attestation(resp, hotkey=sim.hotkey, nonce=nonce, policy=sim.policy, registry=sim.verifiers, kem=kem)
    assert session.verdict.accepted and session.verdict.reason_code == "accepted"
    claims = session.verdict.claims
    assert claims.tee_type is TeeType.SIMULATED
    assert claims.measurement == sim.measurement
    assert claims.report_data == report_data_for(nonce, resp.keys, sim.hotkey)
    assert not claims.debug
    assert abs(claims.issued_at - time.time()) < 5
    assert session.keys == resp.keys and session.keys.kem == kem.value
    assert session.evidence_hash == claims.evidence_digest and len(claims.evidence_digest) == 32
    assert set(resp.models) == set(sim.registry.ids())


def test_forged_evidence_untrusted_signer(sim, tmp_path) -> None:
    """Evidence signed by a development key the validator does not trust."""
    forger = SimulatedBackend(tmp_path / "forger.key", sim.measurement)
    app = sim.app()
    app.backend = forger
    nonce = new_nonce()
    v = _reasons(sim, _attest(app, nonce), nonce)
    assert v.reason_codes == ("untrusted-signer",)
    assert v.claims is None


def test_forged_evidence_claims_trusted_key_id(sim, tmp_path) -> None:
    """A forger who names the trusted key's id but cannot sign with it."""
    app = sim.app()
    nonce = new_nonce()
    keys = app.attest(AttestRequest(nonce, KemSuite.X25519.value)).keys
    forged = _report(Ed25519PrivateKey.generate(), report_data=report_data_for(nonce, keys, sim.hotkey), measurement=sim.measurement,
                     key_id=hashlib.sha256(sim.dev_public).digest())
    v = _reasons(sim, AttestResponse(forged, keys), nonce)
    assert v.reason_codes == ("bad-signature",)


def test_evidence_with_a_flipped_byte_fails_signature(sim) -> None:
    app = sim.app()
    nonce = new_nonce()
    resp = app.attest(AttestRequest(nonce, KemSuite.X25519.value))
    quote = bytearray(resp.evidence.quote)
    quote[20] ^= 0x01  # inside the measurement
    v = _reasons(sim, dataclasses.replace(resp, evidence=Evidence(TeeType.SIMULATED, bytes(quote))), nonce)
    assert v.reason_codes == ("bad-signature",)


@pytest.mark.parametrize("how", ["unsigned", "garbled", "empty", "bad-version", "bad-flags"])
def test_unsigned_or_garbled_evidence(sim, how) -> None:
    app = sim.app()
    nonce = new_nonce()
    resp = app.attest(AttestRequest(nonce, KemSuite.X25519.value))
    q = resp.evidence.quote
    quote = {
        "unsigned": q[: abi.SIGNED_LEN],
        "garbled": os.urandom(abi.TOTAL_LEN),
        "empty": b"",
        "bad-version": q[:6] + b"\x00\x09" + q[8:],
        "bad-flags": q[:8] + b"\x80\x00" + q[10:],
    }[how]
    with pytest.raises(ParseError):
        abi.parse(quote)
    v = _reasons(sim, dataclasses.replace(resp, evidence=Evidence(TeeType.SIMULATED, quote)), nonce)
    assert v.reason_codes == ("evidence-malformed",)


def test_garbled_evidence_json_is_a_protocol_error(sim) -> None:
    resp = sim.app().attest(AttestRequest(new_nonce(), KemSuite.X25519.value)).to_json()
    for broken in (
        {**resp, "evidence": {"tee_type": "simulated", "quote": "%%%"}},
        {**resp, "evidence": {"tee_type": "quantum", "quote": ""}},
        {**resp, "evidence": "nope"},
        {k: v for k, v in resp.items() if k != "keys"},
        [],
    ):
        with pytest.raises(ProtocolError):
            AttestResponse.from_json(broken)


def test_wrong_nonce(sim) -> None:
    app = sim.app()
    resp = _attest(app, new_nonce())
    v = _reasons(sim, resp, new_nonce())
    assert v.reason_codes == ("report-data-mismatch",)
    assert v.claims is not None  # the signature was fine; the binding is not


def test_replayed_evidence(sim) -> None:
    """An old, genuine AttestResponse reused to answer a new nonce."""
    app = sim.app()
    n1 = new_nonce()
    old = _attest(app, n1)
    check_attestation(old, hotkey=sim.hotkey, nonce=n1, policy=sim.policy, registry=sim.verifiers)  # genuine for its own nonce
    n2 = new_nonce()
    v = _reasons(sim, old, n2)
    assert v.reason_codes == ("report-data-mismatch",)


def test_keys_swapped_under_genuine_evidence(sim) -> None:
    """A miner operator substitutes its own HPKE key beside genuine evidence: the binding catches it."""
    app = sim.app()
    nonce = new_nonce()
    resp = _attest(app, nonce)
    from omron_tee.channel.hpke import HpkeKeyPair

    mine = HpkeKeyPair.generate(KemSuite.X25519)
    for keys in (dataclasses.replace(resp.keys, hpke_public=mine.public_bytes),
                 dataclasses.replace(resp.keys, signing_public=Ed25519PrivateKey.generate().public_key().public_bytes_raw())):
        v = _reasons(sim, dataclasses.replace(resp, keys=keys), nonce)
        assert v.reason_codes == ("report-data-mismatch",)


def test_stale_evidence(sim) -> None:
    dev_key = load_or_create_dev_key(sim.key_path)
    app = sim.app()
    nonce = new_nonce()
    keys = app.attest(AttestRequest(nonce, KemSuite.X25519.value)).keys
    rd = report_data_for(nonce, keys, sim.hotkey)
    now = time.time()
    old = _report(dev_key, report_data=rd, measurement=sim.measurement, issued_at_ms=int((now - sim.policy.max_evidence_age_seconds - 30) * 1000))
    v = _reasons(sim, AttestResponse(old, keys), nonce, now=now)
    assert v.reason_codes == ("stale-evidence",)
    future = _report(dev_key, report_data=rd, measurement=sim.measurement, issued_at_ms=int((now + 3600) * 1000))
    v = _reasons(sim, AttestResponse(future, keys), nonce, now=now)
    assert v.reason_codes == ("stale-evidence",)
    # The same report is fine within the window (so the test really is about age).
    recent = _report(dev_key, report_data=rd, measurement=sim.measurement, issued_at_ms=int((now - 10) * 1000))
    check_attestation(AttestResponse(recent, keys), hotkey=sim.hotkey, nonce=nonce, policy=sim.policy, registry=sim.verifiers, now=now)


def test_measurement_not_in_policy(sim) -> None:
    from omron_tee.enclave.measurement import trusted_app_measurement

    other = trusted_app_measurement([(s.model_id, s.sha256) for s in sim.registry.specs()], variant=b"unapproved-build")
    assert other != sim.measurement
    app = sim.app(measurement=other)
    nonce = new_nonce()
    v = _reasons(sim, _attest(app, nonce), nonce)
    assert v.reason_codes == ("measurement-not-allowed",)
    # A build serving a swapped model has another measurement too.
    swapped = trusted_app_measurement([("digits-mlp", b"\x00" * 32)])
    v = _reasons(sim, _attest(sim.app(measurement=swapped), nonce), nonce)
    assert v.reason_codes == ("measurement-not-allowed",)


def test_simulated_not_allowed(sim) -> None:
    app = sim.app()
    nonce = new_nonce()
    v = _reasons(sim, _attest(app, nonce), nonce, policy=sim.policy_with(allow=False))
    assert v.reason_codes == ("simulated-not-allowed",)
    # The policy a test/finney validator loads from TOML without a [simulated] section refuses it too.
    v = _reasons(sim, _attest(app, nonce), nonce, policy=Policy.from_toml("[general]\nmax_evidence_age_seconds = 60\n"))
    assert v.reason_codes == ("simulated-not-allowed",)


def test_debug_enclave(sim) -> None:
    app = sim.app(debug=True)
    nonce = new_nonce()
    resp = _attest(app, nonce)
    v = _reasons(sim, resp, nonce)
    assert v.reason_codes == ("debug-enclave",)
    assert v.claims.debug
    check_attestation(resp, hotkey=sim.hotkey, nonce=nonce, policy=sim.policy_with(allow_debug=True), registry=sim.verifiers)


def test_several_reasons_are_all_named(sim) -> None:
    app = sim.app(debug=True, measurement=b"\x07" * 48)
    resp = _attest(app, new_nonce())
    v = _reasons(sim, resp, new_nonce())
    assert set(v.reason_codes) == {"debug-enclave", "measurement-not-allowed", "report-data-mismatch"}
    assert len(v.reasons) == 3


def test_no_verifier_for_tee_type(sim) -> None:
    resp = sim.app().attest(AttestRequest(new_nonce(), KemSuite.X25519.value))
    v = _reasons(sim, dataclasses.replace(resp, evidence=Evidence(TeeType.SGX, b"\x00" * 100)), new_nonce(),
                 registry=VerifierRegistry([SimulatedVerifier([sim.dev_public])]))
    assert v.reason_codes == ("unsupported-tee",)


def test_policy_toml(sim) -> None:
    m = sim.measurement.hex()
    text = f"""
[general]
max_evidence_age_seconds = 30
allow_debug = false
[simulated]
allow = true
trusted_keys = ["{sim.dev_public.hex()}"]
measurements = ["0x{m}"]
"""
    p = Policy.from_toml(text)
    assert p.max_evidence_age_seconds == 30
    assert p.simulated.allow and p.simulated.measurements == {sim.measurement}
    nonce = new_nonce()
    check_attestation(_attest(sim.app(), nonce), hotkey=sim.hotkey, nonce=nonce, policy=p, registry=sim.verifiers)
    for bad in ("[general\n", "[simulated]\nmeasurements = [\"zz\"]\n", "[simulated]\nmeasurements = \"ab\"\n"):
        with pytest.raises(ConfigError):
            Policy.from_toml(bad)


def test_bad_keys_in_attest_response_are_refused(sim) -> None:
    """Keys of an unknown KEM pass the binding only if attested; check_attestation still refuses the suite."""
    app = sim.app()
    nonce = new_nonce()
    resp = app.attest(AttestRequest(nonce, KemSuite.X25519.value))
    keys = EnclavePublicKeys("rsa", resp.keys.hpke_public, resp.keys.signing_public)
    with pytest.raises(AttestationError):
        check_attestation(dataclasses.replace(resp, keys=keys), hotkey=sim.hotkey, nonce=nonce, policy=sim.policy, registry=sim.verifiers)


def test_a_kem_downgrade_by_the_operator_is_refused(sim) -> None:
    """The requester asks for the post-quantum suite; the operator forwards the nonce asking for X25519."""
    app = sim.app()
    nonce = new_nonce()
    downgraded = _attest(app, nonce, KemSuite.X25519)
    with pytest.raises(AttestationError) as e:
        check_attestation(downgraded, hotkey=sim.hotkey, nonce=nonce, policy=sim.policy, registry=sim.verifiers, kem=KemSuite.MLKEM768_X25519)
    assert e.value.reason == "kem-mismatch"

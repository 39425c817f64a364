"""Genuine evidence in the shapes vendors deliver it, and one digest for one verified claim.

Real published evidence (``../shared/testvectors``) as real hosts hand it over:
TDX and SGX quotes with bytes after the signature data (Sapphire Rapids hosts
append them), SEV-SNP reports in a larger buffer (the firmware's 4000-byte
response, or a cloud's padding), NVIDIA transcripts with a byte after the
signature. The reference verifiers accept these; so must we, and the unsigned
bytes may change neither the verdict nor the evidence digest that receipts
bind. Also: the canonical digest ignores the quote's unused embedded root and
the chain's optional root; hostile certificates are named refusals; Blackwell
device certificates carry their FWID in 2.23.133.5.4.1.1; and each verifier
reports the hardware identity that stops one machine backing many hotkeys.
"""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
import time

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from omron_tee.attestation.binding import EnclavePublicKeys
from omron_tee.attestation.evidence import Evidence, TeeType
from omron_tee.attestation.testing import vectors
from omron_tee.attestation.testing.nvidia import NvidiaTestPki
from omron_tee.attestation.validate.appraise import appraise
from omron_tee.attestation.validate.policy import inspection_policy
from omron_tee.attestation.verify.certs import load_certificates
from omron_tee.attestation.verify.dcap import SgxVerifier, TdxVerifier
from omron_tee.attestation.verify.nvidia import NvidiaVerifier
from omron_tee.attestation.verify.registry import VerifierRegistry
from omron_tee.attestation.verify.snp import SnpVerifier
from omron_tee.devnet.hostile import flipped_pck_issuer
from omron_tee.errors import VerificationError

pytestmark = pytest.mark.vectors

# What real hosts append after a DCAP quote's signature data: not zero, not signed.
SPR_TRAILER = bytes(range(1, 200))


def _dcap(tee: str, intel_store):
    if tee == "sgx":
        return vectors.SGX_QUOTE.read_bytes(), vectors.SGX_NOW, SgxVerifier(intel_store)
    return vectors.TDX_QUOTE.read_bytes(), vectors.TDX_NOW, TdxVerifier(intel_store)


@pytest.mark.parametrize("tee", ["sgx", "tdx"])
def test_dcap_quote_with_unsigned_trailing_bytes_verifies_to_the_same_digest(tee, intel_store):
    quote, now, verifier = _dcap(tee, intel_store)
    base = verifier.verify(Evidence(TeeType(tee), quote), now=now)
    for tail in (SPR_TRAILER, bytes(512), b"\x01"):
        claims = verifier.verify(Evidence(TeeType(tee), quote + tail), now=now)
        assert claims.tcb_status == base.tcb_status and claims.measurement == base.measurement
        assert claims.evidence_digest == base.evidence_digest and len(base.evidence_digest) == 32


def _flip_in_cert(quote: bytes, index: int) -> bytes:
    """The quote with the last byte of its ``index``-th PEM certificate's DER changed (its signature)."""
    certs = list(re.finditer(rb"-----BEGIN CERTIFICATE-----\n(.+?)-----END CERTIFICATE-----", quote, re.S))
    m = certs[index]
    der = bytearray(base64.b64decode(m.group(1).replace(b"\n", b"")))
    der[-1] ^= 0x01
    enc = base64.b64encode(bytes(der))
    wrapped = b"\n".join(enc[i : i + 64] for i in range(0, len(enc), 64)) + b"\n"
    out = quote[: m.start(1)] + wrapped + quote[m.end(1) :]
    assert len(out) == len(quote)
    return out


def test_dcap_digest_ignores_the_unused_embedded_root(intel_store):
    """dcap-qvl builds the chain to its built-in Intel root: the quote's copy of the root is not used."""
    quote, now, verifier = _dcap("sgx", intel_store)
    base = verifier.verify(Evidence(TeeType.SGX, quote), now=now)
    changed = _flip_in_cert(quote, 2)
    assert changed != quote
    claims = verifier.verify(Evidence(TeeType.SGX, changed), now=now)
    assert claims.evidence_digest == base.evidence_digest
    # A change in a certificate that is used is refused, not renamed.
    with pytest.raises(VerificationError):
        verifier.verify(Evidence(TeeType.SGX, _flip_in_cert(quote, 0)), now=now)


def test_snp_report_in_a_larger_buffer_verifies_to_the_same_digest():
    report, certs, now = vectors.SNP_REPORT.read_bytes(), vectors.SNP_VCEK.read_bytes(), time.time()
    verifier = SnpVerifier()
    base = verifier.verify(Evidence(TeeType.SEV_SNP, report, certs), now=now)
    for padded in (report + bytes(4000 - len(report)), report + b"\xa5" * 96):
        claims = verifier.verify(Evidence(TeeType.SEV_SNP, padded, certs), now=now)
        assert claims.measurement == base.measurement and claims.evidence_digest == base.evidence_digest


def test_nvidia_report_with_a_byte_after_the_signature_verifies_to_the_same_digest():
    raw, chain, now = vectors.nvidia_report_bytes(), vectors.NVIDIA_CHAIN.read_bytes(), time.time()
    verifier = NvidiaVerifier()
    base = verifier.verify(Evidence(TeeType.NVIDIA, raw, chain), now=now)
    claims = verifier.verify(Evidence(TeeType.NVIDIA, raw + b"\x00", chain), now=now)
    assert claims.measurement == base.measurement and claims.evidence_digest == base.evidence_digest
    # The chain's own copy of the pinned root is optional: with or without it, one digest.
    without_root = b"".join(c.public_bytes(Encoding.PEM) for c in load_certificates(chain, "chain")[:-1])
    assert verifier.verify(Evidence(TeeType.NVIDIA, raw, without_root), now=now).evidence_digest == base.evidence_digest
    assert verifier.verify(Evidence(TeeType.NVIDIA, raw, chain.replace(b"\n", b"\r\n")), now=now).evidence_digest == base.evidence_digest


def test_a_flipped_pck_issuer_is_a_named_refusal_everywhere(intel_store, tmp_path):
    """It used to raise ValueError out of the verifier, ending the validator process."""
    quote = flipped_pck_issuer(vectors.SGX_QUOTE.read_bytes())
    ev = Evidence(TeeType.SGX, quote)
    with pytest.raises(VerificationError) as e:
        SgxVerifier(intel_store).verify(ev, now=vectors.SGX_NOW)
    assert e.value.reason == "bad-certificate"
    keys = EnclavePublicKeys("x25519-hkdf-sha256-aes256gcm", bytes(32), bytes(32))
    verdict = appraise(ev, nonce=bytes(32), keys=keys, hotkey="5Miner", policy=inspection_policy(),
                       registry=VerifierRegistry([SgxVerifier(intel_store)]), now=vectors.SGX_NOW)
    assert not verdict.accepted and verdict.reason_codes == ("bad-certificate",)
    path = tmp_path / "quote.bin"
    path.write_bytes(quote)
    out = subprocess.run([sys.executable, "-m", "omron_tee", "evidence", "verify", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert "refused" in out.stdout and "PCK certificate" in out.stdout


def test_blackwell_fwid_extension_is_read():
    now = time.time()
    pki = NvidiaTestPki(now, architecture="blackwell")
    verifier = pki.verifier()
    claims = verifier.verify(pki.evidence(), now=now)
    assert claims.details["fwid"] == pki.fwid.hex()
    with pytest.raises(VerificationError) as e:
        verifier.verify(pki.evidence(fwid=bytes(47) + b"\x01"), now=now)
    assert e.value.reason == "fwid-mismatch"


def test_verifiers_report_the_hardware_identity(intel_store):
    sgx = SgxVerifier(intel_store).verify(Evidence(TeeType.SGX, vectors.SGX_QUOTE.read_bytes()), now=vectors.SGX_NOW)
    assert len(sgx.platform_id) == 16  # the PPID from the PCK certificate
    snp = SnpVerifier().verify(vectors.snp_evidence(), now=time.time())
    assert snp.platform_id == bytes.fromhex(snp.details["chip_id"]) and any(snp.platform_id)
    nv_chain = load_certificates(vectors.NVIDIA_CHAIN.read_bytes(), "chain")
    nv = NvidiaVerifier().verify(vectors.nvidia_evidence(), now=time.time())
    assert nv.platform_id == hashlib.sha256(nv_chain[1].public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).digest()


def test_evidence_verify_never_raises_on_mutated_evidence(tmp_path, capsys):
    """`omron-tee evidence verify` on broken evidence of every kind: an exit code and a reason, never a traceback."""
    import random

    from omron_tee.cli import main

    rng = random.Random(7)
    seeds = {
        "sgx": vectors.SGX_QUOTE.read_bytes(),
        "tdx": vectors.TDX_QUOTE.read_bytes(),
        "snp": vectors.SNP_REPORT.read_bytes(),
        "nvidia": vectors.nvidia_report_bytes(),
        "pck-issuer": flipped_pck_issuer(vectors.SGX_QUOTE.read_bytes()),
    }
    runs = 0
    for name, seed in seeds.items():
        for i in range(12):
            data = bytearray(seed)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            path = tmp_path / f"{name}-{i}.bin"
            path.write_bytes(bytes(data[: rng.choice([len(data), rng.randrange(1, len(data))])]))
            assert main(["evidence", "verify", str(path), "--json"]) in (0, 1, 2)
            runs += 1
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err and runs == 60

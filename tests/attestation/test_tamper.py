"""Flipped bits in every region, truncated and extended buffers: the real evidence must never verify.

Each real vector is verified once as is (it passes), then with one bit flipped
in each byte of each region (header, body, signatures, keys, QE report, QE
authentication data, certification data, padding), and truncated at every
length. Every variant must raise an AttestationError: a ParseError naming the
field, or a verification error naming the check.
"""

from __future__ import annotations

import time

import pytest

from omron_tee.attestation.abi import dcap_common as dc, nvidia as nv_abi, sgx, snp as snp_abi, tdx
from omron_tee.attestation.collateral.store import CollateralStore
from omron_tee.attestation.evidence import Evidence, TeeType
from omron_tee.attestation.testing import vectors
from omron_tee.attestation.verify.dcap import SgxVerifier, TdxVerifier
from omron_tee.attestation.verify.nvidia import NvidiaVerifier
from omron_tee.attestation.verify.snp import SnpVerifier
from omron_tee.errors import AttestationError, ParseError

pytestmark = pytest.mark.vectors
B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _flip(data: bytes, i: int, bit: int = 0) -> bytes:
    b = bytearray(data)
    b[i] ^= 1 << bit
    return bytes(b)


def _refuses(verify, quote: bytes, where: str) -> None:
    try:
        verify(quote)
    except AttestationError:
        return
    raise AssertionError(f"tampered evidence verified ({where})")


def _dcap_regions(quote: bytes, parsed, signed_len: int) -> dict[str, range]:
    """Byte ranges of each region of a DCAP quote, located from the parse."""
    sd = signed_len + 4
    regions = {"header": range(0, dc.HEADER_LEN), "body": range(dc.HEADER_LEN, signed_len), "signature_data_len": range(signed_len, sd)}
    regions["quote_signature"] = range(sd, sd + 64)
    regions["attestation_key"] = range(sd + 64, sd + 128)
    qe_start = sd + 128 + (0 if parsed.header.version == 3 else 6)
    if parsed.header.version != 3:
        regions["outer_cert_data_header"] = range(sd + 128, qe_start)
    regions["qe_report"] = range(qe_start, qe_start + 384)
    regions["qe_report_signature"] = range(qe_start + 384, qe_start + 448)
    auth_len = len(parsed.signature_data.qe.qe_auth_data)
    regions["qe_auth_data"] = range(qe_start + 448, qe_start + 450 + auth_len)
    cert_hdr = qe_start + 450 + auth_len
    regions["cert_data_header"] = range(cert_hdr, cert_hdr + 6)
    return regions


def _pem_body_positions(quote: bytes, parsed, count: int) -> list[int]:
    """Positions of base64 characters inside the PCK leaf and PCK CA certificates (not the root copy)."""
    pem = parsed.pck_chain_pem
    base = quote.index(pem)
    out = []
    start = 0
    for _ in range(2):  # leaf, intermediate; the embedded root is not relied upon (dcap-qvl trusts its own)
        s = pem.index(b"-----BEGIN CERTIFICATE-----", start) + 28
        e = pem.index(b"-----END CERTIFICATE-----", s) - 8
        step = max(1, (e - s) // count)
        out += [base + i for i in range(s, e, step) if pem[i] in B64]
        start = e
    return out


def _pem_swap(quote: bytes, i: int) -> bytes:
    b = bytearray(quote)
    b[i] = ord("A") if b[i] != ord("A") else ord("B")
    return bytes(b)


@pytest.mark.parametrize("tee", ["sgx", "tdx"])
def test_dcap_every_region(tee, intel_store):
    if tee == "sgx":
        quote, now, verifier, parse = vectors.SGX_QUOTE.read_bytes(), vectors.SGX_NOW, SgxVerifier(intel_store), sgx.parse
    else:
        quote, now, verifier, parse = vectors.TDX_QUOTE.read_bytes(), vectors.TDX_NOW, TdxVerifier(intel_store), tdx.parse
    ttype = TeeType(tee)

    def verify(q: bytes) -> None:
        verifier.verify(Evidence(ttype, q), now=now)

    verify(quote)  # the untouched quote verifies
    parsed = parse(quote)
    regions = _dcap_regions(quote, parsed, len(parsed.signed_bytes))
    for name, rng in regions.items():
        for i in rng:
            _refuses(verify, _flip(quote, i), f"{name} byte {i}")
    positions = _pem_body_positions(quote, parsed, 40)
    assert len(positions) > 60
    for i in positions:
        _refuses(verify, _pem_swap(quote, i), f"PCK chain byte {i}")
    if tee == "tdx":
        end = len(quote) - 70
        for i in range(end, len(quote)):  # the padding after the signature data: no signature covers it
            assert parse(_flip(quote, i)).signed_bytes == parsed.signed_bytes


def test_snp_every_byte():
    report = vectors.SNP_REPORT.read_bytes()
    certs = vectors.SNP_VCEK.read_bytes()
    verifier = SnpVerifier()
    now = time.time()

    def verify(r: bytes) -> None:
        verifier.verify(Evidence(TeeType.SEV_SNP, r, certs), now=now)

    verify(report)
    for i in range(len(report)):
        _refuses(verify, _flip(report, i, bit=i % 8), f"byte {i:#x}")


def test_nvidia_every_byte():
    raw = vectors.nvidia_report_bytes()
    chain = vectors.NVIDIA_CHAIN.read_bytes()
    verifier = NvidiaVerifier()
    now = time.time()

    def verify(r: bytes) -> None:
        verifier.verify(Evidence(TeeType.NVIDIA, r, chain), now=now)

    verify(raw)
    for i in range(len(raw)):
        _refuses(verify, _flip(raw, i, bit=i % 8), f"byte {i}")


@pytest.mark.parametrize(
    ("path", "parse", "padded"),
    [
        (vectors.SGX_QUOTE, sgx.parse, 0),
        (vectors.TDX_QUOTE, tdx.parse, 70),
        (vectors.SNP_REPORT, snp_abi.parse, 0),
        (None, nv_abi.parse, 0),
    ],
    ids=["sgx", "tdx", "sev-snp", "nvidia"],
)
def test_truncated_and_extended(path, parse, padded):
    data = path.read_bytes() if path is not None else vectors.nvidia_report_bytes()
    parse(data)
    for n in range(len(data) - padded):
        with pytest.raises(ParseError):
            parse(data[:n])
    for n in range(len(data) - padded, len(data)):  # a shorter zero padding is still a quote
        assert parse(data[:n]).signed_bytes == parse(data).signed_bytes
    # Bytes after the signed structure (padding, a larger delivery buffer, what real hosts
    # append) are covered by no signature: skipped, as dcap-qvl, go-tdx-guest, go-sev-guest
    # and NVIDIA's verifier skip them. test_unsigned_trailing_bytes checks verdicts and digests.
    for tail in (b"\x01", b"\xff" * 17, bytes(64)):
        assert parse(data + tail).signed_bytes == parse(data).signed_bytes


def test_zero_padded_quote_still_verifies(intel_store):
    quote = vectors.SGX_QUOTE.read_bytes() + bytes(128)
    claims = SgxVerifier(intel_store).verify(Evidence(TeeType.SGX, quote), now=vectors.SGX_NOW)
    assert claims.tcb_status == "ConfigurationAndSWHardeningNeeded"


def test_snp_wrong_certificate_store_is_not_consulted_for_tampered_vcek():
    der = bytearray(vectors.SNP_VCEK.read_bytes())
    der[len(der) // 2] ^= 1
    ev = Evidence(TeeType.SEV_SNP, vectors.SNP_REPORT.read_bytes(), bytes(der))
    with pytest.raises(AttestationError):
        SnpVerifier(CollateralStore()).verify(ev, now=time.time())


def test_warm_caches_never_skip_checks_for_changed_certificates():
    """Verifiers memoise parsed and verified chains; a changed certificate must still be refused."""
    now = time.time()
    snp = SnpVerifier()
    report = vectors.SNP_REPORT.read_bytes()
    der = vectors.SNP_VCEK.read_bytes()
    snp.verify(Evidence(TeeType.SEV_SNP, report, der), now=now)
    for i in range(40, len(der) - 120, 97):  # inside the to-be-signed part
        changed = bytearray(der)
        changed[i] ^= 0x04
        with pytest.raises(AttestationError):
            snp.verify(Evidence(TeeType.SEV_SNP, report, bytes(changed)), now=now)
    nv = NvidiaVerifier()
    raw, pem = vectors.nvidia_report_bytes(), vectors.NVIDIA_CHAIN.read_bytes()
    nv.verify(Evidence(TeeType.NVIDIA, raw, pem), now=now)
    start = pem.index(b"-----BEGIN CERTIFICATE-----", pem.index(b"-----END CERTIFICATE-----"))  # the second certificate
    for i in range(start + 40, start + 600, 37):
        if pem[i] in B64:
            with pytest.raises(AttestationError):
                nv.verify(Evidence(TeeType.NVIDIA, raw, _pem_swap(pem, i)), now=now)

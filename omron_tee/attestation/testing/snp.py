"""A made-up AMD SEV-SNP PKI (ARK -> ASK -> VCEK) and report signer, for tests.

The ARK and ASK are RSA keys signing with RSA-PSS SHA-384 (salt 48), the
VCEK is an ECDSA P-384 key carrying AMD's hwID and SPL extensions, as AMD's
are. Reports start from the real published report (``testing.vectors``)
and take any field a test sets; they are then signed with the test VCEK
(R and S little-endian at 0x2A0). ``verifier`` builds an ``SnpVerifier``
that trusts this ARK instead of AMD's, and refuses outside a test session.
"""

from __future__ import annotations

import datetime as dt
import os
import struct
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from omron_tee.attestation.abi import snp as abi
from omron_tee.attestation.collateral import amd as amd_coll
from omron_tee.attestation.collateral.store import CollateralStore
from omron_tee.attestation.evidence import Evidence, TeeType
from omron_tee.attestation.testing import vectors
from omron_tee.attestation.testing.guard import require_test_session
from omron_tee.attestation.verify.snp import SnpVerifier

PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
DAY = 86400.0


def _t(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "omron-tee TEST"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def der_int(v: int) -> bytes:
    body = v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big")
    return bytes([0x02, len(body)]) + body


@dataclass
class SnpTestPki:
    now: float
    product: str = "Milan"
    chip_id: bytes = field(default_factory=lambda: os.urandom(64))
    tcb: abi.TcbVersion = field(default_factory=lambda: abi.TcbVersion.decode(0x4405000000000002, turin_layout=False))

    def __post_init__(self) -> None:
        nb, na = self.now - 30 * DAY, self.now + 5 * 365 * DAY
        self.ark_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ark = self._ca(f"ARK-{self.product}", self.ark_key, None, nb, na, serial=0x10000)
        self.ask_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ask = self._ca(f"SEV-{self.product}", self.ask_key, self.ark, nb, na, serial=0x10001)
        self.vcek_key = ec.generate_private_key(ec.SECP384R1())
        self.vcek = self.make_vcek(self.chip_id, self.tcb)

    def _ca(self, cn: str, key: rsa.RSAPrivateKey, issuer: x509.Certificate | None, nb: float, na: float, *, serial: int) -> x509.Certificate:
        b = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(issuer.subject if issuer else _name(cn))
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(_t(nb))
            .not_valid_after(_t(na))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        )
        return b.sign(self.ark_key, hashes.SHA384(), rsa_padding=PSS)

    def make_vcek(
        self,
        chip_id: bytes,
        tcb: abi.TcbVersion,
        *,
        key: ec.EllipticCurvePrivateKey | None = None,
        not_after: float | None = None,
        serial: int = 0x42,
    ) -> x509.Certificate:
        exts = [
            (amd_coll.OID_BL_SPL, der_int(tcb.bootloader)),
            (amd_coll.OID_TEE_SPL, der_int(tcb.tee)),
            (amd_coll.OID_SNP_SPL, der_int(tcb.snp)),
            (amd_coll.OID_UCODE_SPL, der_int(tcb.microcode)),
            (amd_coll.OID_HWID, chip_id),
        ]
        b = (
            x509.CertificateBuilder()
            .subject_name(_name("SEV-VCEK"))
            .issuer_name(self.ask.subject)
            .public_key((key or self.vcek_key).public_key())
            .serial_number(serial)
            .not_valid_before(_t(self.now - DAY))
            .not_valid_after(_t(not_after if not_after is not None else self.now + 5 * 365 * DAY))
        )
        for oid, value in exts:
            b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False)
        return b.sign(self.ask_key, hashes.SHA384(), rsa_padding=PSS)

    # --- reports ---------------------------------------------------------

    def report(
        self,
        *,
        measurement: bytes | None = None,
        report_data: bytes = bytes(64),
        policy: int = abi.POLICY_RESERVED_ONE | abi.POLICY_SMT,
        reported_tcb: abi.TcbVersion | None = None,
        chip_id: bytes | None = None,
        vmpl: int = 0,
        host_data: bytes | None = None,
        guest_svn: int = 0,
        version: int = 2,
        key: ec.EllipticCurvePrivateKey | None = None,
        signing_key: int = abi.SIGNING_KEY_VCEK,
    ) -> bytes:
        r = bytearray(vectors.SNP_REPORT.read_bytes())
        struct.pack_into("<IIQ", r, 0, version, guest_svn, policy)
        struct.pack_into("<I", r, 0x30, vmpl)
        struct.pack_into("<I", r, 0x48, signing_key << 2)
        r[0x50:0x90] = report_data
        if measurement is not None:
            r[0x90:0xC0] = measurement
        if host_data is not None:
            r[0xC0:0xE0] = host_data
        tcb = (reported_tcb or self.tcb).raw
        struct.pack_into("<Q", r, 0x180, tcb)
        struct.pack_into("<Q", r, 0x38, tcb)
        struct.pack_into("<Q", r, 0x1E0, tcb)
        if version >= 3:
            r[0x188:0x18B] = bytes([0x19, 0x01, 0x01])  # Milan
        r[0x1A0:0x1E0] = self.chip_id if chip_id is None else chip_id
        return self.sign(bytes(r), key=key)

    def sign(self, report: bytes, *, key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
        r = bytearray(report)
        rr, ss = decode_dss_signature((key or self.vcek_key).sign(bytes(r[: abi.SIGNED_LEN]), ec.ECDSA(hashes.SHA384())))
        r[0x2A0:0x2E8] = rr.to_bytes(72, "little")
        r[0x2E8:0x330] = ss.to_bytes(72, "little")
        return bytes(r)

    def evidence(self, report: bytes | None = None, *, certificates: bytes | None = None, **kwargs: Any) -> Evidence:
        rep = report if report is not None else self.report(**kwargs)
        certs = certificates if certificates is not None else self.vcek.public_bytes(serialization.Encoding.DER)
        return Evidence(TeeType.SEV_SNP, rep, certificates=certs)

    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.ask, self.ark))

    def crl(self, *, revoked: list[int] = (), next_update: float | None = None, key: rsa.RSAPrivateKey | None = None) -> x509.CertificateRevocationList:  # type: ignore[assignment]
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.ark.subject)
            .last_update(_t(self.now - DAY))
            .next_update(_t(next_update if next_update is not None else self.now + 7 * DAY))
        )
        for s in revoked:
            b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(s).revocation_date(_t(self.now - DAY)).build())
        return b.sign(key or self.ark_key, hashes.SHA384(), rsa_padding=PSS)

    def store(self, *, crl: x509.CertificateRevocationList | None = None, with_vcek: bool = False) -> CollateralStore:
        s = CollateralStore()
        s.add_amd_certificate(self.ask, persist=False)
        if with_vcek:
            s.add_amd_certificate(self.vcek, persist=False)
        if crl is not None:
            s.add_amd_crl(crl, persist=False)
        return s

    def verifier(self, store: CollateralStore | None = None) -> SnpVerifier:
        """An SnpVerifier trusting this test ARK for ``product`` (tests only)."""
        require_test_session("SEV-SNP verifier with a test ARK")
        v = SnpVerifier(store)
        v._arks = {self.product: self.ark}  # noqa: SLF001
        v._intermediates = [self.ask]  # noqa: SLF001
        return v

"""A made-up NVIDIA device PKI, SPDM report signer and OCSP responder, for tests.

The chain mirrors a Hopper GPU's (root -> GH100 Identity -> Provisioner ICA
-> GSP BROM -> GSP FMC leaf), all ECDSA P-384 with SHA-384; the leaf carries
a TCG DICE FWID extension ending in the FWID the report's opaque data
names. Reports start from the real published one (``testing.vectors``), take
a new nonce (and, if asked, new measurement blocks or FWID) and are signed
with the test leaf. ``ocsp_der`` answers for any certificate of the chain,
signed by its issuer, a delegated responder, or a stranger. ``verifier``
trusts this root instead of NVIDIA's, and refuses outside a test session.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from omron_tee.attestation.abi import nvidia as abi
from omron_tee.attestation.collateral.nvidia import CachedOcsp
from omron_tee.attestation.collateral.store import CollateralStore
from omron_tee.attestation.evidence import Evidence, TeeType
from omron_tee.attestation.testing import vectors
from omron_tee.attestation.testing.guard import require_test_session
from omron_tee.attestation.verify.nvidia import OID_TCG_DICE_FWID, OID_TCG_DICE_FWID_BLACKWELL, NvidiaVerifier

DAY = 86400.0
NAMES = ("NVIDIA Device Identity CA", "NVIDIA GH100 Identity", "NVIDIA GH100 Provisioner ICA 1", "GH100 A01 GSP BROM", "GH100 A01 GSP FMC LF")
# Blackwell (GB20x) device chains, built the same way; their leaf carries the FWID in 2.23.133.5.4.1.1.
BLACKWELL_NAMES = ("NVIDIA Device Identity CA", "NVIDIA GB202 Identity", "NVIDIA GB202 Provisioner ICA 1", "GB202 A01 GSP BROM", "GB202 A01 GSP FMC LF")


def _t(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "omron-tee TEST"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class NvidiaTestPki:
    now: float
    architecture: str = "hopper"  # or "blackwell"

    def __post_init__(self) -> None:
        names = BLACKWELL_NAMES if self.architecture == "blackwell" else NAMES
        fwid_oid = OID_TCG_DICE_FWID_BLACKWELL if self.architecture == "blackwell" else OID_TCG_DICE_FWID
        template = abi.parse(vectors.nvidia_report_bytes())
        self.template = template
        self.fwid = template.fwid or bytes(48)
        self.keys = [ec.generate_private_key(ec.SECP384R1()) for _ in names]
        self.certs: list[x509.Certificate] = []
        for i, cn in enumerate(names):  # root first
            issuer = self.certs[i - 1] if i else None
            leaf = i == len(names) - 1
            b = (
                x509.CertificateBuilder()
                .subject_name(_name(cn))
                .issuer_name(issuer.subject if issuer else _name(cn))
                .public_key(self.keys[i].public_key())
                .serial_number(0x1000 + i)
                .not_valid_before(_t(self.now - 30 * DAY))
                .not_valid_after(_t(self.now + 5 * 365 * DAY))
                .add_extension(x509.BasicConstraints(ca=not leaf, path_length=None), critical=True)
            )
            if leaf:
                b = b.add_extension(x509.UnrecognizedExtension(fwid_oid, b"\x30\x42TEST-DICE-TCBINFO" + self.fwid), critical=False)
            self.certs.append(b.sign(self.keys[i - 1] if i else self.keys[0], hashes.SHA384()))
        self.responder_key = ec.generate_private_key(ec.SECP384R1())

    @property
    def root(self) -> x509.Certificate:
        return self.certs[0]

    @property
    def leaf_first(self) -> list[x509.Certificate]:
        return list(reversed(self.certs))

    def chain_pem(self, *, include_root: bool = True) -> bytes:
        certs = self.leaf_first if include_root else self.leaf_first[:-1]
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)

    # --- reports ---------------------------------------------------------

    def report(self, *, nonce: bytes = bytes(32), measurements: dict[int, bytes] | None = None, fwid: bytes | None = None,
               key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
        t = self.template
        req = bytes([abi.SPDM_VERSION_1_1, abi.GET_MEASUREMENTS, t.request.param1, t.request.param2]) + nonce + bytes([t.request.slot_id])
        blocks = t.response.blocks
        values = {b.index: b.value for b in blocks}
        if measurements:
            values.update(measurements)
        record = b""
        for b in blocks:
            v = values[b.index]
            record += struct.pack("<BBH", b.index, b.spec, len(v) + 3) + struct.pack("<BH", b.value_type, len(v)) + v
        opaque = b""
        for f in t.response.opaque:
            v = (fwid if fwid is not None else self.fwid) if f.name == "fwid" else f.value
            opaque += struct.pack("<HH", f.field_type, len(v)) + v
        resp = bytes([t.response.spdm_version, abi.MEASUREMENTS, t.response.param1, t.response.param2, len(blocks)])
        resp += len(record).to_bytes(3, "little") + record + t.response.nonce + struct.pack("<H", len(opaque)) + opaque
        signed = req + resp
        r, s = decode_dss_signature((key or self.keys[-1]).sign(signed, ec.ECDSA(hashes.SHA384())))
        return signed + r.to_bytes(48, "big") + s.to_bytes(48, "big")

    def evidence(self, report: bytes | None = None, *, chain: bytes | None = None, **kwargs: Any) -> Evidence:
        return Evidence(TeeType.NVIDIA, report if report is not None else self.report(**kwargs), certificates=chain if chain is not None else self.chain_pem())

    # --- OCSP ------------------------------------------------------------

    def ocsp_der(
        self,
        index: int,
        *,
        status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
        this_update: float | None = None,
        next_update: float | None = None,
        signer: str = "issuer",
    ) -> bytes:
        """An OCSP response about ``leaf_first[index]`` (signed by its issuer, a 'delegated' responder or a 'stranger')."""
        chain = self.leaf_first
        cert, issuer = chain[index], chain[index + 1]
        issuer_key = self.keys[len(NAMES) - 2 - index]
        b = ocsp.OCSPResponseBuilder().add_response(
            cert=cert,
            issuer=issuer,
            algorithm=hashes.SHA384(),
            cert_status=status,
            this_update=_t(this_update if this_update is not None else self.now - 3600),
            next_update=_t(next_update if next_update is not None else self.now + 7 * DAY),
            revocation_time=_t(self.now - DAY) if status == ocsp.OCSPCertStatus.REVOKED else None,
            revocation_reason=x509.ReasonFlags.key_compromise if status == ocsp.OCSPCertStatus.REVOKED else None,
        )
        if signer == "issuer":
            b = b.responder_id(ocsp.OCSPResponderEncoding.HASH, issuer)
            key = issuer_key
        else:
            signing_key = issuer_key if signer == "delegated" else ec.generate_private_key(ec.SECP384R1())
            responder = (
                x509.CertificateBuilder()
                .subject_name(_name("NVIDIA OCSP Responder TEST"))
                .issuer_name(issuer.subject)
                .public_key(self.responder_key.public_key())
                .serial_number(0x9999)
                .not_valid_before(_t(self.now - DAY))
                .not_valid_after(_t(self.now + 365 * DAY))
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
                .sign(signing_key, hashes.SHA384())
            )
            b = b.responder_id(ocsp.OCSPResponderEncoding.HASH, responder).certificates([responder])
            key = self.responder_key
        return b.sign(key, hashes.SHA384()).public_bytes(serialization.Encoding.DER)

    def store(self, *, ocsp_for: tuple[int, ...] = (1, 2, 3), **ocsp_kwargs: Any) -> CollateralStore:
        s = CollateralStore()
        for i in ocsp_for:
            s.add_ocsp(CachedOcsp.from_der(self.ocsp_der(i, **ocsp_kwargs)), persist=False)
        return s

    def verifier(self, store: CollateralStore | None = None) -> NvidiaVerifier:
        """An NvidiaVerifier trusting this test root (tests only)."""
        require_test_session("NVIDIA verifier with a test root")
        v = NvidiaVerifier(store)
        v._root = self.root  # noqa: SLF001
        return v

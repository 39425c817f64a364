"""A made-up Intel DCAP PKI, for tests that need quotes Intel never signed.

``DcapTestPki`` builds a whole PKI with ``cryptography``: a root CA, a PCK
CA, a PCK leaf, a TCB signing certificate, both CRLs, and signed TCB info
and QE identity. To stay faithful to Intel's formats it starts from a real
published quote and its collateral (``testing.vectors``): the PCK leaf
carries the real certificate's SGX extension (FMSPC, CPUSVN, PCESVN), the
QE report is the real QE's report (re-bound to a new attestation key), and
the TCB info and QE identity are Intel's JSON with new dates, re-signed.
Quotes are then assembled and signed field by field (abi.dcap_common
documents the layout), so that tests can set any field: measurements,
debug, report data, a revoked PCK, expired or forged collateral.

``verifier_with_test_root`` is the only way to verify such quotes: it
routes the verifier to ``dcap_qvl.verify_with_root_ca`` with this PKI's
root, and refuses to run outside a test session (``testing.guard``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import Any, Callable

import dcap_qvl
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from omron_tee.attestation.abi import dcap_common as dc, sgx as sgx_abi, tdx as tdx_abi
from omron_tee.attestation.collateral.intel import IntelCollateral
from omron_tee.attestation.collateral.store import CollateralStore
from omron_tee.attestation.testing import vectors
from omron_tee.attestation.testing.guard import TEST_ROOT_MARK, require_test_session
from omron_tee.attestation.verify.dcap import DcapVerifier, SgxVerifier, TdxVerifier

SGX_EXTENSION_OID = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
DAY = 86400.0


def _t(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc)


def _iso(ts: float) -> str:
    return _t(ts).strftime("%Y-%m-%dT%H:%M:%SZ")


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "omron-tee TEST"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def raw_sig(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA P-256 SHA-256 as Intel encodes it: r || s, 32 bytes each."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def raw_public(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)[1:]


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    not_before: float,
    not_after: float,
    serial: int,
    extra: list[x509.ExtensionType] | None = None,
) -> x509.Certificate:
    pub = key.public_key()
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(pub)
        .serial_number(serial)
        .not_valid_before(_t(not_before))
        .not_valid_after(_t(not_after))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None if not ca or issuer is None else 0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=not ca,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    for ext in extra or []:
        b = b.add_extension(ext, critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _crl(issuer: x509.Certificate, key: ec.EllipticCurvePrivateKey, *, last: float, next_: float, revoked: list[int]) -> bytes:
    b = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(_t(last))
        .next_update(_t(next_))
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
    )
    for serial in revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(_t(last)).build())
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@dataclass
class DcapTestPki:
    """A test PKI for one TEE type ("sgx" or "tdx"), valid around ``now``."""

    tee: str
    now: float
    root_key: ec.EllipticCurvePrivateKey = field(init=False)
    root: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        if self.tee not in ("sgx", "tdx"):
            raise ValueError("tee must be sgx or tdx")
        tq = (vectors.SGX_QUOTE if self.tee == "sgx" else vectors.TDX_QUOTE).read_bytes()
        parse = sgx_abi.parse if self.tee == "sgx" else tdx_abi.parse
        self.template = parse(tq)
        self.template_quote = tq
        template_coll = (vectors.SGX_COLLATERAL if self.tee == "sgx" else vectors.TDX_COLLATERAL).read_text()
        self.template_collateral = json.loads(template_coll)
        real_leaf = x509.load_pem_x509_certificates(self.template.pck_chain_pem)[0]
        sgx_ext = real_leaf.extensions.get_extension_for_oid(SGX_EXTENSION_OID).value
        ca_cn = str(real_leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)

        nb, na = self.now - 30 * DAY, self.now + 5 * 365 * DAY
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = _cert("Intel SGX Root CA", self.root_key, None, self.root_key, ca=True, not_before=nb, not_after=na, serial=1)
        self.pck_ca_key = ec.generate_private_key(ec.SECP256R1())
        self.pck_ca = _cert(ca_cn, self.pck_ca_key, self.root, self.root_key, ca=True, not_before=nb, not_after=na, serial=2)
        self.pck_key = ec.generate_private_key(ec.SECP256R1())
        self.pck_serial = 0x1234567
        self.pck = _cert(
            "Intel SGX PCK Certificate", self.pck_key, self.pck_ca, self.pck_ca_key,
            ca=False, not_before=nb, not_after=na, serial=self.pck_serial,
            extra=[x509.UnrecognizedExtension(SGX_EXTENSION_OID, sgx_ext.value)],
        )
        self.tcb_key = ec.generate_private_key(ec.SECP256R1())
        self.tcb_signer = _cert("Intel SGX TCB Signing", self.tcb_key, self.root, self.root_key, ca=False, not_before=nb, not_after=na, serial=3)
        self.attestation_key = ec.generate_private_key(ec.SECP256R1())

    @property
    def root_der(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.DER)

    # --- collateral ------------------------------------------------------

    def collateral(
        self,
        *,
        issued: float | None = None,
        next_update: float | None = None,
        revoked_pck: bool = False,
        edit_tcb_info: Callable[[dict[str, Any]], None] | None = None,
        forge_tcb_signature: bool = False,
    ) -> IntelCollateral:
        issued = self.now - 3600 if issued is None else issued
        next_update = self.now + 30 * DAY if next_update is None else next_update
        tcb = json.loads(self.template_collateral["tcb_info"])
        qe = json.loads(self.template_collateral["qe_identity"])
        for doc in (tcb, qe):
            doc["issueDate"], doc["nextUpdate"] = _iso(issued), _iso(next_update)
        if edit_tcb_info:
            edit_tcb_info(tcb)
        tcb_text = json.dumps(tcb, separators=(",", ":"))
        qe_text = json.dumps(qe, separators=(",", ":"))
        tcb_sig = raw_sig(self.tcb_key, tcb_text.encode())
        if forge_tcb_signature:
            tcb_sig = raw_sig(ec.generate_private_key(ec.SECP256R1()), tcb_text.encode())
        root_crl = _crl(self.root, self.root_key, last=issued, next_=next_update, revoked=[])
        pck_crl = _crl(self.pck_ca, self.pck_ca_key, last=issued, next_=next_update, revoked=[self.pck_serial] if revoked_pck else [])
        qvl = dcap_qvl.QuoteCollateralV3(
            _pem(self.pck_ca, self.root).decode(),
            root_crl,
            pck_crl,
            _pem(self.tcb_signer, self.root).decode(),
            tcb_text,
            tcb_sig,
            _pem(self.tcb_signer, self.root).decode(),
            qe_text,
            raw_sig(self.tcb_key, qe_text.encode()),
        )
        return IntelCollateral.from_qvl(qvl)

    def store(self, **kwargs: Any) -> CollateralStore:
        s = CollateralStore()
        s.add_intel(self.collateral(**kwargs), persist=False)
        return s

    # --- quotes ----------------------------------------------------------

    def _signature_data(self, signed: bytes, *, version: int, pck_chain: bytes | None = None) -> bytes:
        att_pub = raw_public(self.attestation_key)
        auth = self.template.signature_data.qe.qe_auth_data
        qe_report = bytearray(self.template.signature_data.qe.qe_report_raw)
        qe_report[320:384] = hashlib.sha256(att_pub + auth).digest() + bytes(32)
        qe_sig = raw_sig(self.pck_key, bytes(qe_report))
        chain = (pck_chain if pck_chain is not None else _pem(self.pck, self.pck_ca, self.root)) + b"\0"
        cert = struct.pack("<HI", dc.CertDataType.PCK_CERT_CHAIN, len(chain)) + chain
        qe_part = bytes(qe_report) + qe_sig + struct.pack("<H", len(auth)) + auth + cert
        sig = raw_sig(self.attestation_key, signed)
        if version == 3:
            return sig + att_pub + qe_part
        return sig + att_pub + struct.pack("<HI", dc.CertDataType.QE_REPORT_CERT_DATA, len(qe_part)) + qe_part

    def sgx_quote(
        self,
        *,
        mr_enclave: bytes | None = None,
        mr_signer: bytes | None = None,
        isv_prod_id: int | None = None,
        isv_svn: int | None = None,
        debug: bool = False,
        report_data: bytes = bytes(64),
        pck_chain: bytes | None = None,
    ) -> bytes:
        assert self.tee == "sgx"
        body = bytearray(self.template_quote[dc.HEADER_LEN : dc.HEADER_LEN + dc.ENCLAVE_REPORT_LEN])
        if mr_enclave is not None:
            body[64:96] = mr_enclave
        if mr_signer is not None:
            body[128:160] = mr_signer
        if isv_prod_id is not None:
            body[256:258] = isv_prod_id.to_bytes(2, "little")
        if isv_svn is not None:
            body[258:260] = isv_svn.to_bytes(2, "little")
        flags = int.from_bytes(body[48:56], "little")
        flags = flags | dc.SGX_FLAG_DEBUG if debug else flags & ~dc.SGX_FLAG_DEBUG
        body[48:56] = flags.to_bytes(8, "little")
        body[320:384] = report_data
        signed = self.template_quote[: dc.HEADER_LEN] + bytes(body)
        sig_data = self._signature_data(signed, version=3, pck_chain=pck_chain)
        return signed + struct.pack("<I", len(sig_data)) + sig_data

    def tdx_quote(
        self,
        *,
        mr_td: bytes | None = None,
        rtmrs: tuple[bytes, ...] | None = None,
        debug: bool = False,
        report_data: bytes = bytes(64),
    ) -> bytes:
        assert self.tee == "tdx"
        start = dc.HEADER_LEN
        body = bytearray(self.template_quote[start : start + tdx_abi.TD_REPORT10_LEN])
        if mr_td is not None:
            body[136:184] = mr_td
        if rtmrs is not None:
            for i, v in enumerate(rtmrs):
                body[328 + 48 * i : 376 + 48 * i] = v
        attrs = int.from_bytes(body[120:128], "little")
        attrs = attrs | tdx_abi.TD_ATTR_DEBUG if debug else attrs & ~tdx_abi.TD_ATTR_DEBUG
        body[120:128] = attrs.to_bytes(8, "little")
        body[520:584] = report_data
        signed = self.template_quote[:start] + bytes(body)
        sig_data = self._signature_data(signed, version=4)
        return signed + struct.pack("<I", len(sig_data)) + sig_data


def verifier_with_test_root(pki: DcapTestPki, store: CollateralStore) -> DcapVerifier:
    """A verifier that trusts ``pki``'s root instead of Intel's (tests only)."""
    require_test_session("DCAP verifier with a test root")
    v: DcapVerifier = SgxVerifier(store) if pki.tee == "sgx" else TdxVerifier(store)
    root = pki.root_der
    v._qvl_verify = lambda quote, coll, now: dcap_qvl.verify_with_root_ca(quote, coll, root, now)  # noqa: SLF001
    v._trust_root = TEST_ROOT_MARK  # noqa: SLF001
    v._root_ca = pki.root  # noqa: SLF001 - the PCK chain is checked against this root before collateral is looked up
    return v


__all__ = ["DcapTestPki", "verifier_with_test_root"]

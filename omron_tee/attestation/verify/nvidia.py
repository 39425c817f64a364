"""Verify NVIDIA Hopper GPU evidence (SPDM GET_MEASUREMENTS) with ``cryptography``.

Checks:

1. the report parses (abi.nvidia): request with a 32-byte nonce, response
   with measurement blocks, opaque data and a 96-byte signature;
2. the device certificate chain (leaf first, as the driver returns it):
   each certificate issued by the next, all valid at the verification time,
   ending at the NVIDIA Device Identity CA built into ``verify.roots`` (the
   chain's own copy of the root must equal it byte for byte);
3. the leaf's TCG DICE FWID extension equals the FWID in the signed opaque
   data (as NVIDIA's verifier does for Hopper);
4. the ECDSA P-384 SHA-384 signature, r || s big-endian, over
   request || response-without-signature, with the leaf's key;
5. revocation, when the collateral store has OCSP responses for the
   intermediate certificates (the chain minus leaf and root, as NVIDIA
   checks): each response's signature (by the issuer or a responder it
   delegated to), its CertID, its time window, and the status. A revoked or
   unknown certificate fails verification; a missing or stale response is
   reported in the claims (``details.ocsp``) for the policy to refuse.

Not done here, and why: comparing the measurements with NVIDIA's RIMs needs
the RIM files (signed SWID tags, fetched from NVIDIA's RIM service) and an
XML-DSig verifier that omron-tee does not depend on; operators pin golden
measurements in the policy instead (``[nvidia]`` section), see docs/ATTESTATION.md.

The claims' ``report_data`` is the verifier's 32-byte SPDM nonce (from the
signed request); ``measurement`` is SHA-384 over the measurement blocks in
index order (each ``index || value type || u16 length || value``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from omron_tee.attestation.abi import nvidia as abi
from omron_tee.attestation.collateral.nvidia import driver_rim_id, issuer_key_hash, vbios_rim_id
from omron_tee.attestation.collateral.store import CollateralStore
from omron_tee.attestation.platform import NvidiaChain, NvidiaClaims
from omron_tee.attestation.evidence import Claims, Evidence, TeeType, canonical_digest
from omron_tee.attestation.verify import roots
from omron_tee.attestation.verify.certs import check_validity, load_certificates, name_of, verify_issued_by
from omron_tee.errors import VerificationError
from omron_tee.reasons import Reason

# The TCG DICE TcbInfo extension carrying the FWID: Hopper's device certificates use
# 2.23.133.5.4.1, Blackwell's (GB20x) 2.23.133.5.4.1.1. The FWID is the last 48 bytes of
# the value in both, as NVIDIA's verifiers read it.
OID_TCG_DICE_FWID = x509.ObjectIdentifier("2.23.133.5.4.1")
OID_TCG_DICE_FWID_BLACKWELL = x509.ObjectIdentifier("2.23.133.5.4.1.1")
FWID_OIDS = (OID_TCG_DICE_FWID, OID_TCG_DICE_FWID_BLACKWELL)
TCB_STATUS = "NotRated"
OCSP_CLOCK_SKEW = 300.0


def measurement_digest(report: abi.NvidiaReport) -> bytes:
    h = hashlib.sha384()
    for b in sorted(report.response.blocks, key=lambda b: b.index):
        h.update(bytes([b.index, b.value_type]) + len(b.value).to_bytes(2, "little") + b.value)
    return h.digest()


def _verify_with(key: Any, signature: bytes, data: bytes, algorithm: hashes.HashAlgorithm | None) -> bool:
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(algorithm or hashes.SHA384()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), algorithm or hashes.SHA256())
        else:
            return False
    except InvalidSignature:
        return False
    return True


class NvidiaVerifier:
    tee_type = TeeType.NVIDIA

    def __init__(self, store: CollateralStore | None = None) -> None:
        self.store = store
        self._root = x509.load_pem_x509_certificate(roots.NVIDIA_DEVICE_ROOT_PEM.encode())
        self._chain_ok: dict[bytes, bool] = {}
        self._chains: dict[bytes, list[x509.Certificate]] = {}
        self._lock = threading.Lock()

    # --- chain -----------------------------------------------------------

    def _chain(self, blob: bytes) -> list[x509.Certificate]:
        """The parsed chain (memoised by the blob: a GPU hands out the same chain every time)."""
        certs = self._chains.get(blob)
        if certs is None:
            certs = self._parse_chain(blob)
            with self._lock:
                if len(self._chains) > 1024:
                    self._chains.clear()
                self._chains[blob] = certs
        return list(certs)

    def _parse_chain(self, blob: bytes) -> list[x509.Certificate]:
        if not blob:
            raise VerificationError("NVIDIA evidence carries no device certificate chain", reason=Reason.BAD_CERTIFICATE_CHAIN)
        certs = load_certificates(blob, "NVIDIA device certificate chain")
        root_der = self._root.public_bytes(Encoding.DER)
        if certs[-1].public_bytes(Encoding.DER) != root_der:
            if certs[-1].issuer == self._root.subject and certs[-1].subject != self._root.subject:
                certs.append(self._root)
            else:
                raise VerificationError(
                    f"NVIDIA device chain ends at '{name_of(certs[-1])}', which is not the NVIDIA Device Identity CA "
                    "this verifier trusts (different certificate or key)",
                    reason=Reason.UNTRUSTED_CHAIN,
                )
        if len(certs) < 3 or len(certs) > 8:
            raise VerificationError(f"NVIDIA device chain has {len(certs)} certificates", reason=Reason.BAD_CERTIFICATE_CHAIN)
        return certs

    def _check_chain(self, blob: bytes, certs: list[x509.Certificate], now: float) -> None:
        # The blob determines the certificates (the only addition is the pinned root), so a chain
        # whose signatures verified once for these exact bytes need not be re-verified.
        key = blob
        if not self._chain_ok.get(key):
            for child, parent in zip(certs, certs[1:]):
                verify_issued_by(child, parent, "NVIDIA device chain")
            verify_issued_by(certs[-1], certs[-1], "NVIDIA device chain")
            with self._lock:
                if len(self._chain_ok) > 1024:
                    self._chain_ok.clear()
                self._chain_ok[key] = True
        for c in certs:
            check_validity(c, now, "NVIDIA device chain")

    @staticmethod
    def _check_fwid(report: abi.NvidiaReport, leaf: x509.Certificate) -> None:
        fwid = report.fwid
        if not fwid:
            return
        try:
            extensions = leaf.extensions
        except ValueError:
            raise VerificationError("the device certificate's extensions cannot be read", reason=Reason.BAD_CERTIFICATE) from None
        raws = [e.value.value for e in extensions if e.oid in FWID_OIDS and isinstance(e.value, x509.UnrecognizedExtension)]
        if not raws:
            raise VerificationError("the report carries an FWID but the device certificate has none", reason=Reason.FWID_MISMATCH)
        if not any(len(raw) >= len(fwid) and raw[-len(fwid):] == fwid for raw in raws):
            raise VerificationError("the FWID in the report differs from the device certificate's", reason=Reason.FWID_MISMATCH)

    @staticmethod
    def _check_signature(report: abi.NvidiaReport, leaf: x509.Certificate) -> None:
        key = leaf.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
            raise VerificationError("the device certificate's key is not ECDSA P-384", reason=Reason.BAD_CERTIFICATE)
        sig = report.response.signature
        der = encode_dss_signature(int.from_bytes(sig[:48], "big"), int.from_bytes(sig[48:], "big"))
        try:
            key.verify(der, report.signed_bytes, ec.ECDSA(hashes.SHA384()))
        except InvalidSignature:
            raise VerificationError("the SPDM measurement signature does not verify with the device key", reason=Reason.BAD_SIGNATURE) from None

    # --- revocation ------------------------------------------------------

    def _ocsp_status(self, certs: list[x509.Certificate], now: float) -> tuple[str, str]:
        """("good"|"missing"|"expired"|"not-configured", detail); raises for revoked/unknown/forged."""
        if self.store is None:
            return "not-configured", "no collateral store"
        missing, stale = [], []
        for cert, issuer in zip(certs[1:-1], certs[2:]):
            entry = self.store.ocsp(cert, issuer, now=now)
            if entry is None:
                missing.append(name_of(cert))
                continue
            resp = entry.response
            self._check_ocsp_response(resp, cert, issuer)
            if resp.certificate_status == ocsp.OCSPCertStatus.REVOKED:
                why = resp.revocation_reason.name if resp.revocation_reason else "unspecified"
                raise VerificationError(f"'{name_of(cert)}' is revoked (OCSP, reason {why})", reason=Reason.REVOKED)
            if resp.certificate_status != ocsp.OCSPCertStatus.GOOD:
                raise VerificationError(f"OCSP status of '{name_of(cert)}' is UNKNOWN", reason=Reason.REVOKED)
            if resp.this_update_utc.timestamp() > now + OCSP_CLOCK_SKEW or entry.expires_at < now:
                stale.append(name_of(cert))
        if missing:
            return "missing", "no OCSP response for " + ", ".join(missing)
        if stale:
            return "expired", "OCSP response outside its validity window for " + ", ".join(stale)
        return "good", f"{len(certs) - 2} certificates good"

    @staticmethod
    def _check_ocsp_response(resp: ocsp.OCSPResponse, cert: x509.Certificate, issuer: x509.Certificate) -> None:
        if resp.serial_number != cert.serial_number or resp.issuer_key_hash != issuer_key_hash(cert, issuer, resp.hash_algorithm):
            raise VerificationError(f"OCSP response is not about '{name_of(cert)}'", reason=Reason.BAD_OCSP)
        signer = issuer
        for responder in resp.certificates:
            if responder.public_bytes(Encoding.DER) == issuer.public_bytes(Encoding.DER):
                break
            try:
                verify_issued_by(responder, issuer, "OCSP responder")
            except VerificationError as e:
                raise VerificationError(str(e), reason=Reason.BAD_OCSP) from None
            try:
                eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            except x509.ExtensionNotFound:
                eku = []
            if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
                raise VerificationError(f"OCSP responder '{name_of(responder)}' is not authorised for OCSP signing", reason=Reason.BAD_OCSP)
            signer = responder
            break
        if not _verify_with(signer.public_key(), resp.signature, resp.tbs_response_bytes, resp.signature_hash_algorithm):
            raise VerificationError(f"OCSP response for '{name_of(cert)}' is not signed by '{name_of(signer)}'", reason=Reason.BAD_OCSP)

    # --- verification ----------------------------------------------------

    def verify(self, evidence: Evidence, *, now: float) -> Claims:
        if evidence.tee_type is not TeeType.NVIDIA:
            raise VerificationError(f"{evidence.tee_type.value} evidence given to the NVIDIA verifier", reason=Reason.UNSUPPORTED_TEE)
        report = abi.parse(evidence.quote)
        certs = self._chain(evidence.certificates)
        self._check_chain(evidence.certificates, certs, now)
        leaf = certs[0]
        self._check_fwid(report, leaf)
        self._check_signature(report, leaf)
        status, detail = self._ocsp_status(certs, now)
        chain_claims = NvidiaChain(name_of(certs[-1]), name_of(leaf), status, detail)
        # What was verified: the signed transcript, its signature, and the chain below the
        # pinned root. The device's identity is the key that certifies its firmware's
        # alias key (the leaf's issuer: fused into the GPU, the same across firmware).
        chain = [c.public_bytes(Encoding.DER) for c in certs[:-1]]
        digest = canonical_digest(TeeType.NVIDIA, [report.signed_bytes, report.response.signature, *chain])
        device = hashlib.sha256(certs[1].public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).digest()
        return dataclasses.replace(self._claims(report, TCB_STATUS, chain_claims), evidence_digest=digest, platform_id=device)

    def describe(self, evidence: Evidence) -> Claims:
        return self._claims(abi.parse(evidence.quote), "Unverified", None)

    @staticmethod
    def _claims(report: abi.NvidiaReport, tcb_status: str, chain: NvidiaChain | None) -> Claims:
        project, sku, chip_sku = report.opaque_text("project"), report.opaque_text("project_sku"), report.opaque_text("chip_sku")
        platform = NvidiaClaims(
            spdm_version=f"{report.request.spdm_version >> 4}.{report.request.spdm_version & 0xF}",
            driver_version=report.driver_version, vbios_version=report.vbios_version, project=project, project_sku=sku, chip_sku=chip_sku,
            fwid=report.fwid or None, responder_nonce=report.response.nonce, measurements=tuple(sorted(report.measurements().items())),
            driver_rim_id=driver_rim_id(report.driver_version) if report.driver_version else None,
            vbios_rim_id=vbios_rim_id(project, sku, chip_sku, report.vbios_version) if project and sku and chip_sku and report.vbios_version else None,
            chain=chain,
        )
        return Claims(
            tee_type=TeeType.NVIDIA,
            measurement=measurement_digest(report),
            report_data=report.nonce,
            debug=False,
            tcb_status=tcb_status,
            platform=platform,
        )

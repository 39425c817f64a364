"""Verify AMD SEV-SNP attestation reports with ``cryptography``.

Checks, in order:

1. the report parses (abi.snp) and says which key signed it (VCEK or VLEK);
2. the signing certificate: from the evidence (a PEM/DER certificate or the
   host's GUID certificate table), else from the collateral store (which may
   fetch a VCEK from AMD KDS by chip id and reported TCB);
3. the chain VCEK <- ASK (or VLEK <- ASVK) <- ARK, each signature RSA-PSS
   SHA-384 (``verify_directly_issued_by``), every certificate inside its
   validity window, and the ARK equal to the one built in for the product
   (``verify.roots``); an ARK shipped in the evidence is never trusted;
4. the ARK-signed CRL when the store has one: its signature, its
   ``nextUpdate`` (an expired CRL is a collateral error) and that neither the
   intermediate nor the leaf is revoked;
5. that the VCEK was issued to this chip at this TCB (hwID and SPL
   extensions equal the report's chip id and reported TCB);
6. the report's ECDSA P-384 SHA-384 signature over bytes 0..0x2A0 (R and S
   little-endian, 72 bytes each).

Policy (measurement, minimum TCB, guest policy bits, debug) is the validate
layer's. AMD publishes no TCB status such as Intel's "UpToDate": the claims'
``tcb_status`` is ``NotRated`` and the policy's ``min_tcb`` decides.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from omron_tee.attestation.abi import snp as abi
from omron_tee.attestation.collateral import amd as amd_coll
from omron_tee.attestation.collateral.store import CollateralStore
from omron_tee.attestation.platform import SnpChain, SnpClaims
from omron_tee.attestation.evidence import Claims, Evidence, TeeType, canonical_digest
from omron_tee.attestation.verify import roots
from omron_tee.attestation.verify.certs import (
    check_validity,
    load_certificates,
    name_of,
    serial_number,
    verify_issued_by,
)
from omron_tee.errors import CollateralError, VerificationError
from omron_tee.reasons import Reason

TCB_STATUS = "NotRated"


def _builtin_arks() -> dict[str, x509.Certificate]:
    return {p: x509.load_pem_x509_certificate(pem.encode()) for p, pem in roots.AMD_ARKS.items()}


def _builtin_intermediates() -> list[x509.Certificate]:
    return [x509.load_pem_x509_certificate(pem.encode()) for pem in roots.AMD_INTERMEDIATES]


def evidence_certificates(blob: bytes) -> list[x509.Certificate]:
    """Certificates handed out with a report: a GUID table, PEM, or one DER certificate."""
    if not blob:
        return []
    if abi.is_cert_table(blob):
        table = abi.parse_cert_table(blob)
        out = []
        for name, der in table.items():
            if name in ("vcek", "vlek", "ask", "ark"):
                out.extend(load_certificates(der, f"certificate table entry {name}"))
        return out
    return load_certificates(blob, "SEV-SNP evidence certificates")


class SnpVerifier:
    tee_type = TeeType.SEV_SNP

    def __init__(self, store: CollateralStore | None = None) -> None:
        self.store = store
        self._arks = _builtin_arks()
        self._intermediates = _builtin_intermediates()
        self._chain_ok: dict[tuple[int, int, int], tuple[x509.Certificate, ...]] = {}
        self._blobs: dict[bytes, list[x509.Certificate]] = {}
        self._roles: dict[int, tuple[x509.Certificate, amd_coll.AmdCertRole | None]] = {}
        self._lock = threading.Lock()

    # --- memos (certificate parsing and naming cost more than the report signature check) ---

    def _memo_put(self, memo: dict, key: Any, value: Any) -> None:
        with self._lock:
            if len(memo) > 1024:
                memo.clear()
            memo[key] = value

    def _given(self, blob: bytes) -> list[x509.Certificate]:
        certs = self._blobs.get(blob)
        if certs is None:
            certs = evidence_certificates(blob)
            self._memo_put(self._blobs, blob, certs)
        return certs

    def _role(self, cert: x509.Certificate) -> amd_coll.AmdCertRole | None:
        hit = self._roles.get(id(cert))
        if hit is not None and hit[0] is cert:
            return hit[1]
        role = amd_coll.classify(cert)
        self._memo_put(self._roles, id(cert), (cert, role))  # keeps ``cert`` alive, so its id stays its own
        return role

    # --- certificates ----------------------------------------------------

    def _leaf(self, report: abi.SnpReport, given: list[x509.Certificate]) -> x509.Certificate:
        want = "vcek" if report.signing_key == abi.SIGNING_KEY_VCEK else "vlek"
        leaves = [c for c in given if (self._role(c) or amd_coll.AmdCertRole("", None)).role == want]
        if want == "vcek":
            if leaves:
                return leaves[0]
            if self.store is not None:
                product = report.product
                cert = self.store.amd_vcek(report.chip_id, report.reported_tcb, product)
                if cert is not None:
                    return cert
            raise CollateralError(
                f"no VCEK for chip {report.chip_id[:8].hex()}… at reported TCB {report.reported_tcb.components()}: "
                "the evidence carries none, the collateral has none"
                + ("" if self.store is not None and self.store.amd_client is not None else " and AMD KDS is not configured")
                + "; give --collateral DIR with the VCEK and ASK/ARK",
                reason=Reason.COLLATERAL_MISSING,
            )
        if self.store is not None:
            leaves += self.store.amd_vleks()
        if not leaves:
            raise CollateralError("report is signed by a VLEK and neither the evidence nor the collateral has one", reason=Reason.COLLATERAL_MISSING)
        for c in leaves:
            if self._signature_ok(report, c):
                return c
        return leaves[0]  # the signature check below names the failure

    def _intermediate(self, role: str, product: str, given: list[x509.Certificate]) -> x509.Certificate:
        for c in list(given) + self._intermediates:
            r = self._role(c)
            if r and r.role == role and r.product == product:
                return c
        if self.store is not None:
            cert = self.store.amd_intermediate(role, product)
            if cert is not None:
                return cert
        raise CollateralError(f"no {role.upper()} certificate for {product}", reason=Reason.COLLATERAL_MISSING)

    def _check_chain(self, leaf: x509.Certificate, inter: x509.Certificate, ark: x509.Certificate) -> None:
        key = (id(leaf), id(inter), id(ark))
        hit = self._chain_ok.get(key)
        if hit is not None and hit[0] is leaf and hit[1] is inter and hit[2] is ark:
            return
        verify_issued_by(ark, ark, "AMD ARK")
        verify_issued_by(inter, ark, "AMD certificate chain")
        verify_issued_by(leaf, inter, "AMD certificate chain")
        self._memo_put(self._chain_ok, key, (leaf, inter, ark))

    @staticmethod
    def _signature_ok(report: abi.SnpReport, leaf: x509.Certificate) -> bool:
        key = leaf.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
            return False
        try:
            key.verify(encode_dss_signature(report.signature_r, report.signature_s), report.signed_bytes, ec.ECDSA(hashes.SHA384()))
        except InvalidSignature:
            return False
        return True

    def _check_crl(self, product: str, signer: str, ark: x509.Certificate, certs: list[x509.Certificate], now: float) -> bool:
        if self.store is None:
            return False
        crl = self.store.amd_crl(product, signer, now=now)
        if crl is None:
            return False
        if crl.issuer != ark.subject or not crl.is_signature_valid(ark.public_key()):  # type: ignore[arg-type]
            raise CollateralError(f"the {product} CRL is not signed by {name_of(ark)}", reason=Reason.COLLATERAL_INVALID)
        if crl.next_update_utc is not None and crl.next_update_utc.timestamp() < now:
            raise CollateralError(
                f"the {product} CRL expired at {crl.next_update_utc:%Y-%m-%dT%H:%M:%SZ} (collateral expired)", reason=Reason.COLLATERAL_EXPIRED
            )
        for c in certs:
            if crl.get_revoked_certificate_by_serial_number(serial_number(c)) is not None:
                raise VerificationError(f"'{name_of(c)}' (serial {serial_number(c)}) is revoked by AMD's {product} CRL", reason=Reason.REVOKED)
        return True

    # --- verification ----------------------------------------------------

    def verify(self, evidence: Evidence, *, now: float) -> Claims:
        if evidence.tee_type is not TeeType.SEV_SNP:
            raise VerificationError(f"{evidence.tee_type.value} evidence given to the SEV-SNP verifier", reason=Reason.UNSUPPORTED_TEE)
        report = abi.parse(evidence.quote)
        if report.signing_key == abi.SIGNING_KEY_NONE:
            raise VerificationError("the report is unsigned (signing key selector 7)", reason=Reason.BAD_SIGNATURE)
        given = self._given(evidence.certificates)
        leaf = self._leaf(report, given)
        role = self._role(leaf)
        signer = "vcek" if report.signing_key == abi.SIGNING_KEY_VCEK else "vlek"
        if role is None or role.role != signer:
            raise VerificationError(f"the report is signed by a {signer.upper()} but the certificate is '{name_of(leaf)}'", reason=Reason.BAD_CERTIFICATE)
        product = role.product or report.product
        if product is None:
            raise VerificationError("cannot tell the AMD product (no CPUID in the report, no issuer in the certificate)", reason=Reason.BAD_CERTIFICATE)
        if report.product is not None and role.product is not None and report.product != role.product:
            raise VerificationError(f"report is from a {report.product} part, its {signer.upper()} is for {role.product}", reason=Reason.BAD_CERTIFICATE)
        ark = self._arks.get(product)
        if ark is None:
            raise VerificationError(f"no trusted AMD root (ARK) for product {product!r}", reason=Reason.UNTRUSTED_CHAIN)
        inter = self._intermediate("ask" if signer == "vcek" else "asvk", product, given)
        self._check_chain(leaf, inter, ark)
        for c, what in ((ark, "AMD ARK"), (inter, "AMD intermediate"), (leaf, signer.upper())):
            check_validity(c, now, what)
        crl_checked = self._check_crl(product, signer, ark, [inter, leaf], now)
        self._check_leaf_binding(report, leaf, signer, product)
        if not self._signature_ok(report, leaf):
            raise VerificationError(f"the report's ECDSA P-384 signature does not verify with the {signer.upper()}", reason=Reason.BAD_SIGNATURE)
        csp = amd_coll.leaf_csp_id(leaf) if signer == "vlek" else None
        chain = SnpChain(product, f"ARK-{product}", crl_checked, csp or None)
        # What was verified: the signed report bytes, its signature and the key's certificate
        # (not the unsigned bytes after the report, nor certificates the chain did not use).
        digest = canonical_digest(TeeType.SEV_SNP, [
            report.signed_bytes,
            report.signature_r.to_bytes(72, "little"),
            report.signature_s.to_bytes(72, "little"),
            leaf.public_bytes(serialization.Encoding.DER),
        ])
        platform = report.chip_id if any(report.chip_id) and not report.mask_chip_key else b""
        return dataclasses.replace(self._claims(report, TCB_STATUS, chain), evidence_digest=digest, platform_id=platform)

    @staticmethod
    def _check_leaf_binding(report: abi.SnpReport, leaf: x509.Certificate, signer: str, product: str) -> None:
        turin = product == "Turin"
        if signer == "vcek":
            hwid = amd_coll.leaf_hwid(leaf)
            chip = report.chip_id[: len(hwid)] if hwid is not None else b""
            if any(report.chip_id) and hwid != chip:
                raise VerificationError("the VCEK was issued to another chip (hwID differs from the report's chip id)", reason=Reason.VCEK_MISMATCH)
        tcb = amd_coll.leaf_tcb(leaf, turin_layout=turin)
        reported = report.tcb(report.reported_tcb_raw, turin_layout=turin)
        if tcb.components() != reported.components():
            raise VerificationError(
                f"the {signer.upper()} is for TCB {tcb.components()}, the report's reported TCB is {reported.components()}",
                reason=Reason.VCEK_MISMATCH,
            )

    def describe(self, evidence: Evidence) -> Claims:
        report = abi.parse(evidence.quote)
        return self._claims(report, "Unverified", None)

    @staticmethod
    def _claims(report: abi.SnpReport, tcb_status: str, chain: SnpChain | None) -> Claims:
        turin = (chain.product if chain is not None else report.product) == "Turin"

        def tcb(raw: int) -> abi.TcbVersion:
            return report.tcb(raw, turin_layout=turin)

        platform = SnpClaims(
            version=report.version, guest_svn=report.guest_svn, policy=report.policy, family_id=report.family_id, image_id=report.image_id,
            vmpl=report.vmpl, host_data=report.host_data, id_key_digest=report.id_key_digest, author_key_digest=report.author_key_digest,
            report_id=report.report_id, report_id_ma=report.report_id_ma, chip_id=report.chip_id, signing_key=report.signing_key_name,
            reported_tcb=tcb(report.reported_tcb_raw), current_tcb=tcb(report.current_tcb_raw), committed_tcb=tcb(report.committed_tcb_raw),
            launch_tcb=tcb(report.launch_tcb_raw), current_version=report.current_version, committed_version=report.committed_version,
            platform_info=tuple(sorted(report.platform_flags().items())),
            cpuid=(report.cpuid_fam_id, report.cpuid_mod_id, report.cpuid_step) if report.cpuid_fam_id is not None else None,  # type: ignore[arg-type]
            launch_mit_vector=report.launch_mit_vector, current_mit_vector=report.current_mit_vector, chain=chain, product=report.product,
        )
        return Claims(
            tee_type=TeeType.SEV_SNP,
            measurement=report.measurement,
            report_data=report.report_data,
            debug=report.debug,
            tcb_status=tcb_status,
            platform=platform,
        )

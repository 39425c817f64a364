"""Verify Intel SGX and TDX quotes with dcap-qvl.

``dcap_qvl.verify(quote, collateral, now)`` checks the quote signature with
the attestation key, the QE report signature with the PCK certificate, the
QE report's binding of the attestation key, the PCK chain to Intel's SGX Root
CA (built into dcap-qvl) with both CRLs, the signed TCB info and QE identity
and their validity windows, and derives the TCB status and advisory IDs. We
add what it leaves to us: parsing with our abi (so the claims come from the
same bytes that were verified), checking the PCK chain's signatures up to
Intel's root (pinned in ``verify.roots``) *before* the FMSPC it names is
trusted to choose collateral (a made-up chain must not make us fetch any),
choosing the collateral for the quote's FMSPC and PCK CA from the store, and mapping its error messages (it raises
``ValueError`` with text only) to typed errors with stable reasons.

Measurements, ISV SVN minimums, the debug bit and report data are judged by
the policy (validate layer), not here.

The trust root is Intel's, and only Intel's: ``DcapVerifier`` has no
parameter for another. Tests that need quotes signed under a made-up PKI use
``omron_tee.attestation.testing.dcap.verifier_with_test_root``, which refuses
to run outside a test session.
"""

from __future__ import annotations

import dataclasses
import functools
import datetime as dt
import threading
from dataclasses import dataclass
from typing import Any, Callable

import dcap_qvl
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from omron_tee.attestation.abi import dcap_common, sgx, tdx
from omron_tee.attestation.collateral.intel import pck_ca_of
from omron_tee.attestation.collateral.store import CollateralStore
from omron_tee.attestation.platform import DcapCollateral, SgxClaims, TdxClaims
from omron_tee.attestation.evidence import Claims, Evidence, TeeType, canonical_digest
from omron_tee.attestation.verify.certs import verify_issued_by
from omron_tee.attestation.verify.roots import INTEL_SGX_ROOT_CA_PEM
from omron_tee.errors import AttestationError, CollateralError, ParseError, VerificationError
from omron_tee.reasons import Reason

QvlVerify = Callable[[bytes, Any, int], Any]
INTEL_ROOT = "Intel SGX Root CA"


@functools.lru_cache(maxsize=1)
def intel_root_ca() -> x509.Certificate:
    return x509.load_pem_x509_certificate(INTEL_SGX_ROOT_CA_PEM.encode())


def map_dcap_error(message: str) -> AttestationError:
    """A typed error for one of dcap-qvl's ``ValueError`` messages (unknown ones fail closed)."""
    detail = " ".join(message.removeprefix("Verification failed: ").split())
    d = detail.lower()

    def coll(reason: str, what: str) -> CollateralError:
        return CollateralError(f"Intel collateral {what}: {detail}", reason=reason)

    def ver(reason: str, what: str) -> VerificationError:
        return VerificationError(f"Intel DCAP quote {what}: {detail}", reason=reason)

    if "debug mode" in d:
        # dcap-qvl (0.7) refuses debug SGX enclaves and debug TDs itself, whatever our policy says.
        return ver(Reason.DEBUG_ENCLAVE, "comes from a debug enclave (dcap-qvl refuses debug SGX enclaves and TDs)")
    if "crlexpired" in d or "crl expired" in d or "revocation list expired" in d:
        return coll(Reason.COLLATERAL_EXPIRED, "has expired (a CRL is past its nextUpdate)")
    if "tcbinfo expired" in d or "qe identity expired" in d or "collateral expired" in d:
        return coll(Reason.COLLATERAL_EXPIRED, "has expired (TCB info or QE identity is past its nextUpdate)")
    if "issue date is in the future" in d or "crlnotvalidyet" in d:
        return coll(Reason.COLLATERAL_NOT_YET_VALID, "is not valid yet at the verification time")
    if "tcb info" in d or "tcbinfo" in d or "qe identity" in d or "qeidentity" in d or "quote_collateral" in d:
        return coll(Reason.COLLATERAL_INVALID, "does not verify")
    if "fmspc mismatch" in d or "non-sgx tcb info" in d or "non-tdx tcb info" in d:
        return coll(Reason.COLLATERAL_MISMATCH, "is for another platform")
    if "tcb status" in d and "revoked" in d:
        return ver(Reason.TCB_REVOKED, "platform TCB level is revoked by Intel")
    if "revoked" in d:
        return ver(Reason.REVOKED, "certificate is revoked")
    if "certexpired" in d or "certificate expired" in d:
        return ver(Reason.CERTIFICATE_EXPIRED, "certificate has expired")
    if "certnotvalidyet" in d:
        return ver(Reason.CERTIFICATE_NOT_YET_VALID, "certificate is not valid yet")
    if "unknownissuer" in d or "certificate chain" in d or "root ca" in d or "badsignature" in d and "cert" in d:
        return ver(Reason.UNTRUSTED_CHAIN, "PCK chain does not lead to Intel's root")
    if "signature" in d or "hash mismatch" in d:
        return ver(Reason.BAD_SIGNATURE, "signature does not verify")
    if "qe " in d or "qe_" in d:
        return ver(Reason.QE_IDENTITY_MISMATCH, "quoting enclave does not match Intel's QE identity")
    if "unsupported" in d or "parse" in d or "decode" in d:
        return ver(Reason.EVIDENCE_MALFORMED, "is malformed")
    return ver(Reason.EVIDENCE_UNVERIFIED, "did not verify")


@dataclass(frozen=True)
class PckIdentity:
    fmspc: str  # hex, upper case
    ca: str  # "processor" or "platform"
    ppid: bytes  # the platform's PPID from the PCK certificate's SGX extensions (empty if absent)
    chain: tuple[bytes, ...]  # DER of the leaf and its CA


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class DcapVerifier:
    """Verifies one DCAP TEE type (``SgxVerifier`` or ``TdxVerifier``)."""

    tee_type: TeeType
    _tee: str

    def __init__(self, store: CollateralStore) -> None:
        self.store = store
        self._qvl_verify: QvlVerify = dcap_qvl.verify
        self._trust_root = INTEL_ROOT
        self._root_ca = intel_root_ca()  # what a quote's PCK chain must lead to before collateral is looked up
        self._pck_memo: dict[bytes, PckIdentity] = {}
        self._chains_ok: set[bytes] = set()  # PCK chains (PEM) checked up to the root
        self._memo_lock = threading.Lock()

    # --- parsing (no cryptography) --------------------------------------

    def parse(self, quote: bytes) -> Any:
        raise NotImplementedError

    def _pck_identity(self, pem: bytes | None) -> "PckIdentity":
        """What the quote's PCK chain says of its platform; memoised by chain (one PCK per platform)."""
        if pem is None:
            raise VerificationError(
                "quote carries no PCK certificate chain (certification data type 5); only such quotes can be verified offline",
                reason=Reason.UNSUPPORTED_QUOTE,
            )
        key = pem  # bytes cache their hash; one PCK chain per platform
        hit = self._pck_memo.get(key)
        if hit is not None:
            return hit
        try:
            ext = dcap_qvl.parse_pck_extension_from_pem(pem)
            leaf = x509.load_pem_x509_certificate(pem)
            # cryptography parses names lazily: a malformed issuer raises here, not at load.
            cns = leaf.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            ca = pck_ca_of(str(cns[0].value)) if cns else None
            fmspc = bytes(ext.fmspc).hex().upper()
            ppid = bytes(ext.ppid) if getattr(ext, "ppid", None) is not None else b""
            # The certificates the chain is built from, as DER: the leaf and its CA. The
            # root in the quote is not used (dcap-qvl has Intel's built in), nor is the PEM
            # text around them, so neither may change the canonical evidence digest.
            chain = tuple(c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(pem) if c.subject != c.issuer)
        except (ValueError, TypeError, IndexError, UnicodeError) as e:
            raise VerificationError(f"PCK certificate in the quote cannot be read: {str(e)[:200]}", reason=Reason.BAD_CERTIFICATE) from None
        if ca is None:
            raise VerificationError("PCK certificate is not issued by an Intel PCK Processor or Platform CA", reason=Reason.UNTRUSTED_CHAIN)
        ident = PckIdentity(fmspc, ca, ppid, chain)
        with self._memo_lock:
            if len(self._pck_memo) > 1024:
                self._pck_memo.clear()
            self._pck_memo[key] = ident
        return ident

    def _check_chain(self, pem: bytes) -> None:
        if pem in self._chains_ok:
            return
        self._verify_chain(pem)
        with self._memo_lock:
            if len(self._chains_ok) > 1024:
                self._chains_ok.clear()
            self._chains_ok.add(pem)

    def _verify_chain(self, pem: bytes) -> None:
        """The PCK leaf signed by its CA and that CA by Intel's root (pinned, not the quote's copy), before the
        FMSPC the leaf names is used to look up or fetch collateral: otherwise a made-up certificate naming a new
        FMSPC each time would send the validator to Intel PCS for every probe (and its collateral could never be
        found, which is not charged to the miner). Signatures only: validity dates and both CRLs are dcap-qvl's to
        check, with the collateral. A chain that fails is not memoised, so it costs two ECDSA verifications each time."""
        certs = [c for c in x509.load_pem_x509_certificates(pem) if c.subject != c.issuer]
        if len(certs) != 2:
            raise VerificationError(f"the quote's PCK chain has {len(certs)} certificates below the root, not a PCK and its CA",
                                    reason=Reason.UNTRUSTED_CHAIN)
        leaf, pck_ca = certs
        try:
            verify_issued_by(leaf, pck_ca, "PCK certificate chain")
            verify_issued_by(pck_ca, self._root_ca, "PCK certificate chain")
        except VerificationError as e:
            raise VerificationError(f"the quote's PCK chain does not lead to Intel's SGX root CA: {e}", reason=Reason.UNTRUSTED_CHAIN) from None

    def describe(self, evidence: Evidence) -> Claims:
        """The quote's claims without any verification (for display when verification fails)."""
        quote = self.parse(evidence.quote)
        return self._claims(quote, tcb_status="Unverified", advisory_ids=(), collateral=None)

    # --- verification ----------------------------------------------------

    def verify(self, evidence: Evidence, *, now: float) -> Claims:
        if evidence.tee_type is not self.tee_type:
            raise VerificationError(f"{evidence.tee_type.value} evidence given to the {self.tee_type.value} verifier", reason=Reason.UNSUPPORTED_TEE)
        quote = self.parse(evidence.quote)
        pck = self._pck_identity(quote.pck_chain_pem)
        assert quote.pck_chain_pem is not None  # _pck_identity refuses a quote without one
        self._check_chain(quote.pck_chain_pem)
        fmspc, ca = pck.fmspc, pck.ca
        coll = self.store.intel(self._tee, fmspc, ca, now=now)
        try:
            report = self._qvl_verify(evidence.quote, coll.qvl, int(now))
        except (ValueError, TypeError, RuntimeError) as e:
            raise map_dcap_error(str(e)) from None
        verified = DcapCollateral(fmspc, ca, self._trust_root, _iso(coll.expires_at), coll.tcb_evaluation_data_number)
        claims = self._claims(quote, tcb_status=str(report.status), advisory_ids=tuple(report.advisory_ids), collateral=verified)
        sig = quote.signature_data
        digest = canonical_digest(self.tee_type, [
            quote.signed_bytes, sig.signature, sig.attestation_key,
            sig.qe.qe_report_raw, sig.qe.qe_report_signature, sig.qe.qe_auth_data, *pck.chain,
        ])
        return dataclasses.replace(claims, evidence_digest=digest, platform_id=pck.ppid)

    def _claims(self, quote: Any, *, tcb_status: str, advisory_ids: tuple[str, ...], collateral: DcapCollateral | None) -> Claims:
        raise NotImplementedError


class SgxVerifier(DcapVerifier):
    tee_type = TeeType.SGX
    _tee = "sgx"

    def parse(self, quote: bytes) -> sgx.SgxQuote:
        return sgx.parse(quote)

    def _claims(self, quote: sgx.SgxQuote, *, tcb_status: str, advisory_ids: tuple[str, ...], collateral: DcapCollateral | None) -> Claims:
        r = quote.report
        platform = SgxClaims(
            quote_version=quote.header.version, mr_enclave=r.mr_enclave, mr_signer=r.mr_signer, isv_prod_id=r.isv_prod_id, isv_svn=r.isv_svn,
            attributes=r.attributes, misc_select=r.misc_select, cpu_svn=r.cpu_svn, config_id=r.config_id, config_svn=r.config_svn,
            isv_ext_prod_id=r.isv_ext_prod_id, isv_family_id=r.isv_family_id, qe_svn=quote.header.qe_svn, pce_svn=quote.header.pce_svn,
            collateral=collateral,
        )
        return Claims(
            tee_type=TeeType.SGX,
            measurement=r.mr_enclave,
            report_data=r.report_data,
            debug=r.debug,
            tcb_status=tcb_status,
            advisory_ids=advisory_ids,
            platform=platform,
        )


class TdxVerifier(DcapVerifier):
    tee_type = TeeType.TDX
    _tee = "tdx"

    def parse(self, quote: bytes) -> tdx.TdxQuote:
        return tdx.parse(quote)

    def _claims(self, quote: tdx.TdxQuote, *, tcb_status: str, advisory_ids: tuple[str, ...], collateral: DcapCollateral | None) -> Claims:
        r = quote.report
        platform = TdxClaims(
            quote_version=quote.header.version, mr_td=r.mr_td, rtmrs=tuple(r.rtmrs), mr_seam=r.mr_seam, mr_signer_seam=r.mr_signer_seam,  # type: ignore[arg-type]
            seam_attributes=r.seam_attributes, td_attributes=r.td_attributes, xfam=r.xfam, mr_config_id=r.mr_config_id, mr_owner=r.mr_owner,
            mr_owner_config=r.mr_owner_config, tee_tcb_svn=r.tee_tcb_svn, sept_ve_disable=r.sept_ve_disable, qe_svn=quote.header.qe_svn,
            pce_svn=quote.header.pce_svn, tee_tcb_svn2=r.tee_tcb_svn2, mr_servicetd=r.mr_servicetd if r.tee_tcb_svn2 is not None else None,
            collateral=collateral,
        )
        return Claims(
            tee_type=TeeType.TDX,
            measurement=r.mr_td,
            report_data=r.report_data,
            debug=r.debug,
            tcb_status=tcb_status,
            advisory_ids=advisory_ids,
            platform=platform,
        )


def detect(quote: bytes) -> TeeType:
    """SGX or TDX from a DCAP quote's header (ParseError if it is neither)."""
    version, tee = dcap_common.peek_version_and_tee(quote)
    if tee == dcap_common.TEE_TYPE_TDX:
        return TeeType.TDX
    if tee == dcap_common.TEE_TYPE_SGX:
        return TeeType.SGX
    raise ParseError("DCAP quote", "header.tee_type", f"0x{tee:08x} is neither SGX nor TDX (version {version})")

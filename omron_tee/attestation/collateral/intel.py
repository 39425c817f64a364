"""Intel DCAP collateral: the ``QuoteCollateralV3`` of dcap-qvl, and fetching it.

One collateral set serves every quote of one (TEE, FMSPC, PCK CA): TCB info
for the FMSPC, the QE identity of the TEE, the PCK CRL of the CA, the root CA
CRL, and the issuer chains and signatures. Its expiry is its own: the
earliest ``nextUpdate`` of TCB info, QE identity and the two CRLs.

``IntelPcsClient`` fetches it from Intel's PCS (``https://api.trustedservices.intel.com``)
or a PCCS, API v4, with httpx. dcap-qvl has its own fetcher
(``dcap_qvl.get_collateral``); we do not use it because it fetches per
quote with its own HTTP stack, whereas we fetch once per FMSPC into a shared
cache, with httpx's timeouts, TLS and proxy settings, and can be tested
against a local server. The signed parts are kept byte for byte: TCB info and
QE identity are the exact inner JSON text Intel signed.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import dcap_qvl
import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from omron_tee.attestation.collateral.http import LazyHttp
from omron_tee.errors import CollateralError
from omron_tee.reasons import Reason

TEE_NAMES = ("sgx", "tdx")
PCK_CAS = ("processor", "platform")
_CA_BY_CN = {"Intel SGX PCK Processor CA": "processor", "Intel SGX PCK Platform CA": "platform"}
INTEL_PCS_URL = "https://api.trustedservices.intel.com"
INTEL_ROOT_CA_CRL_URL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"


def parse_time(value: Any, what: str) -> float:
    if not isinstance(value, str):
        raise CollateralError(f"Intel collateral: {what} is missing", reason=Reason.COLLATERAL_INVALID)
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise CollateralError(f"Intel collateral: {what} {value!r} is not an RFC 3339 time", reason=Reason.COLLATERAL_INVALID) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.timestamp()


def pck_ca_of(issuer_cn: str) -> str | None:
    return _CA_BY_CN.get(issuer_cn)


def _crl(data: bytes, what: str) -> x509.CertificateRevocationList:
    try:
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise CollateralError(f"Intel collateral: {what} is not a DER CRL", reason=Reason.COLLATERAL_INVALID) from None


@dataclass(frozen=True)
class IntelCollateral:
    """One verified-shape (not yet verified) collateral set for dcap-qvl."""

    tee: str  # "sgx" or "tdx"
    fmspc: str  # upper-case hex
    ca: str  # "processor" or "platform"
    json_text: str
    issued_at: float
    expires_at: float
    tcb_evaluation_data_number: int
    qvl: Any = field(compare=False, repr=False)  # dcap_qvl.QuoteCollateralV3

    @property
    def key(self) -> str:
        return f"{self.tee}-{self.fmspc}-{self.ca}"

    def expired(self, now: float) -> bool:
        return now > self.expires_at

    @classmethod
    def from_json(cls, text: str | bytes) -> "IntelCollateral":
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise CollateralError("Intel collateral is not UTF-8 JSON", reason=Reason.COLLATERAL_INVALID) from None
        try:
            qvl = dcap_qvl.QuoteCollateralV3.from_json(text)
        except (ValueError, TypeError) as e:
            raise CollateralError(f"not Intel DCAP collateral (dcap-qvl QuoteCollateralV3 JSON): {e}", reason=Reason.COLLATERAL_INVALID) from None
        return cls.from_qvl(qvl, json_text=text)

    @classmethod
    def from_qvl(cls, qvl: Any, *, json_text: str | None = None) -> "IntelCollateral":
        try:
            tcb = json.loads(qvl.tcb_info)
            qe = json.loads(qvl.qe_identity)
        except ValueError:
            raise CollateralError("Intel collateral: tcb_info or qe_identity is not JSON", reason=Reason.COLLATERAL_INVALID) from None
        if not isinstance(tcb, dict) or not isinstance(qe, dict):
            raise CollateralError("Intel collateral: tcb_info and qe_identity must be JSON objects", reason=Reason.COLLATERAL_INVALID)
        tcb_id = str(tcb.get("id", "SGX")).upper()
        tee = {"SGX": "sgx", "TDX": "tdx"}.get(tcb_id)
        if tee is None:
            raise CollateralError(f"Intel collateral: unknown TCB info id {tcb_id!r}", reason=Reason.COLLATERAL_INVALID)
        fmspc = str(tcb.get("fmspc", "")).upper()
        if len(fmspc) != 12:
            raise CollateralError("Intel collateral: TCB info has no 6-byte FMSPC", reason=Reason.COLLATERAL_INVALID)
        pck_crl = _crl(qvl.pck_crl, "pck_crl")
        root_crl = _crl(qvl.root_ca_crl, "root_ca_crl")
        cns = pck_crl.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        ca = pck_ca_of(str(cns[0].value)) if cns else None
        if ca is None:
            raise CollateralError("Intel collateral: the PCK CRL is not issued by a PCK Processor or Platform CA", reason=Reason.COLLATERAL_INVALID)
        nexts = [
            parse_time(tcb.get("nextUpdate"), "tcb_info.nextUpdate"),
            parse_time(qe.get("nextUpdate"), "qe_identity.nextUpdate"),
        ]
        for crl in (pck_crl, root_crl):
            if crl.next_update_utc is not None:
                nexts.append(crl.next_update_utc.timestamp())
        issued = max(parse_time(tcb.get("issueDate"), "tcb_info.issueDate"), parse_time(qe.get("issueDate"), "qe_identity.issueDate"))
        return cls(
            tee=tee,
            fmspc=fmspc,
            ca=ca,
            json_text=json_text if json_text is not None else qvl.to_json(),
            issued_at=issued,
            expires_at=min(nexts),
            tcb_evaluation_data_number=int(tcb.get("tcbEvaluationDataNumber", 0)),
            qvl=qvl,
        )


def _issuer_chain(resp: httpx.Response, names: tuple[str, ...], what: str) -> str:
    for n in names:
        v = resp.headers.get(n)
        if v:
            return urllib.parse.unquote(v)
    raise CollateralError(f"{what}: response has no issuer chain header ({' or '.join(names)})", reason=Reason.COLLATERAL_UNAVAILABLE)


def _signed_inner(text: str, key: str, what: str) -> tuple[str, bytes]:
    """The exact text of ``{"<key>": {...}, "signature": "hex"}``'s inner object, and the signature."""
    try:
        outer = json.loads(text)
        start = text.index(f'"{key}"')
        start = text.index("{", start)
        _, end = json.JSONDecoder().raw_decode(text, start)
        sig = bytes.fromhex(outer["signature"])
    except (ValueError, KeyError, TypeError):
        raise CollateralError(f"{what}: body is not {{{key}, signature}} JSON", reason=Reason.COLLATERAL_UNAVAILABLE) from None
    return text[start:end], sig


def _crl_bytes(body: bytes, what: str) -> bytes:
    """PCS serves DER; PCCS may serve hex or PEM. Normalise to DER."""
    data = body.strip()
    if data.startswith(b"-----BEGIN X509 CRL-----"):
        try:
            return x509.load_pem_x509_crl(data).public_bytes(Encoding.DER)
        except ValueError:
            raise CollateralError(f"{what}: not a CRL", reason=Reason.COLLATERAL_UNAVAILABLE) from None
    try:
        x509.load_der_x509_crl(body)
        return body
    except ValueError:
        pass
    try:
        der = bytes.fromhex(data.decode("ascii"))
        x509.load_der_x509_crl(der)
        return der
    except (ValueError, UnicodeDecodeError):
        raise CollateralError(f"{what}: not a CRL (DER, hex or PEM)", reason=Reason.COLLATERAL_UNAVAILABLE) from None


class IntelPcsClient:
    """Fetches collateral from Intel PCS or a PCCS (API v4); one call per (TEE, FMSPC, CA)."""

    def __init__(
        self,
        base_url: str = INTEL_PCS_URL,
        *,
        api_key: str | None = None,
        timeout: float = 20.0,
        root_ca_crl_url: str | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Ocp-Apim-Subscription-Key": api_key} if api_key else {}
        self._http = LazyHttp(timeout, client)
        self._root_ca_crl_url = root_ca_crl_url

    def _get(self, path: str, what: str, params: dict[str, str] | None = None) -> httpx.Response:
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        try:
            resp = self._http.client.get(url, params=params, headers=self._headers)
        except httpx.HTTPError as e:
            raise CollateralError(f"{what}: cannot reach {url}: {e}", reason=Reason.COLLATERAL_UNAVAILABLE) from None
        if resp.status_code == 404:  # PCS and PCCS: no collateral for this FMSPC (or CA): the platform is not one Intel knows
            raise CollateralError(f"{what}: {url} has none (HTTP 404)", reason=Reason.COLLATERAL_NOT_FOUND)
        if resp.status_code != 200:
            raise CollateralError(f"{what}: {url} answered HTTP {resp.status_code}", reason=Reason.COLLATERAL_UNAVAILABLE)
        return resp

    def fetch(self, tee: str, fmspc: str, ca: str) -> IntelCollateral:
        if tee not in TEE_NAMES or ca not in PCK_CAS:
            raise CollateralError(f"cannot fetch Intel collateral for tee={tee!r} ca={ca!r}", reason=Reason.COLLATERAL_UNAVAILABLE)
        tcb = self._get(f"/{tee}/certification/v4/tcb", "TCB info", {"fmspc": fmspc.upper()})
        tcb_info, tcb_sig = _signed_inner(tcb.text, "tcbInfo", "TCB info")
        tcb_chain = _issuer_chain(tcb, ("TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"), "TCB info")
        qe = self._get(f"/{tee}/certification/v4/qe/identity", "QE identity")
        qe_identity, qe_sig = _signed_inner(qe.text, "enclaveIdentity", "QE identity")
        qe_chain = _issuer_chain(qe, ("SGX-Enclave-Identity-Issuer-Chain",), "QE identity")
        crl = self._get("/sgx/certification/v4/pckcrl", "PCK CRL", {"ca": ca, "encoding": "der"})
        pck_crl = _crl_bytes(crl.content, "PCK CRL")
        crl_chain = _issuer_chain(crl, ("SGX-PCK-CRL-Issuer-Chain",), "PCK CRL")
        root_crl = self._root_ca_crl()
        try:
            qvl = dcap_qvl.QuoteCollateralV3(crl_chain, root_crl, pck_crl, tcb_chain, tcb_info, tcb_sig, qe_chain, qe_identity, qe_sig)
        except (ValueError, TypeError) as e:
            raise CollateralError(f"fetched Intel collateral is malformed: {e}", reason=Reason.COLLATERAL_UNAVAILABLE) from None
        return IntelCollateral.from_qvl(qvl)

    def _root_ca_crl(self) -> bytes:
        if self._root_ca_crl_url:
            return _crl_bytes(self._get(self._root_ca_crl_url, "root CA CRL").content, "root CA CRL")
        # A PCCS serves it under the API; Intel's PCS publishes it as a file.
        try:
            return _crl_bytes(self._get("/sgx/certification/v4/rootcacrl", "root CA CRL").content, "root CA CRL")
        except CollateralError:
            if self.base_url != INTEL_PCS_URL:
                raise
        return _crl_bytes(self._get(INTEL_ROOT_CA_CRL_URL, "root CA CRL").content, "root CA CRL")

    def close(self) -> None:
        self._http.close()

"""AMD SEV-SNP collateral: VCEK/VLEK certificates, ASK/ASVK/ARK chains, CRLs; AMD KDS client.

KDS (https://kdsintf.amd.com) serves, per product (Milan, Genoa, Turin):

- ``/vcek/v1/{product}/{hwid}?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..``
  (Turin adds ``fmcSPL`` and uses the first 8 bytes of the chip id): the
  VCEK for one chip at one TCB, DER;
- ``/vcek/v1/{product}/cert_chain``: ASK then ARK, PEM (``/vlek/...``: ASVK then ARK);
- ``/vcek/v1/{product}/crl``: the ARK-signed CRL of revoked ASKs/VCEKs, DER.

VLEKs are not served by KDS to verifiers (the cloud provider installs them on
the host, which hands them out with the report). Fetching happens only when
the store misses or has expired collateral; KDS rate-limits clients.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from cryptography import x509

from omron_tee.attestation.abi.snp import TcbVersion
from omron_tee.attestation.collateral.http import LazyHttp
from omron_tee.attestation.verify.certs import der_octets, der_uint, load_certificates, name_of
from omron_tee.errors import CollateralError, VerificationError
from omron_tee.reasons import Reason

AMD_KDS_URL = "https://kdsintf.amd.com"
PRODUCTS = ("Milan", "Genoa", "Turin")

OID_BL_SPL = "1.3.6.1.4.1.3704.1.3.1"
OID_TEE_SPL = "1.3.6.1.4.1.3704.1.3.2"
OID_SNP_SPL = "1.3.6.1.4.1.3704.1.3.3"
OID_UCODE_SPL = "1.3.6.1.4.1.3704.1.3.8"
OID_FMC_SPL = "1.3.6.1.4.1.3704.1.3.9"
OID_HWID = "1.3.6.1.4.1.3704.1.4"
OID_PRODUCT_NAME = "1.3.6.1.4.1.3704.1.2"
OID_CSP_ID = "1.3.6.1.4.1.3704.1.5"


@dataclass(frozen=True)
class AmdCertRole:
    role: str  # "ark", "ask", "asvk", "vcek", "vlek"
    product: str | None  # from the CA names; None for leaf certificates


def classify(cert: x509.Certificate) -> AmdCertRole | None:
    """What an AMD certificate is, from its subject and issuer names (None if not AMD SEV)."""
    cn = name_of(cert)
    issuer_cns = cert.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    issuer = str(issuer_cns[0].value) if issuer_cns else ""
    if cn.startswith("ARK-"):
        return AmdCertRole("ark", cn[4:])
    if cn.startswith("SEV-VLEK-"):
        return AmdCertRole("asvk", cn[9:])
    if cn == "SEV-VCEK":
        return AmdCertRole("vcek", issuer[4:] if issuer.startswith("SEV-") else None)
    if cn == "SEV-VLEK":
        return AmdCertRole("vlek", issuer[9:] if issuer.startswith("SEV-VLEK-") else None)
    if cn.startswith("SEV-") and issuer.startswith("ARK-"):
        return AmdCertRole("ask", cn[4:])
    return None


def _ext(cert: x509.Certificate, oid: str) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid))
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    return value.value if isinstance(value, x509.UnrecognizedExtension) else None


def leaf_tcb(cert: x509.Certificate, *, turin_layout: bool) -> TcbVersion:
    """The TCB a VCEK/VLEK was issued for, from its SPL extensions."""
    parts = {}
    for name, oid in (("bootloader", OID_BL_SPL), ("tee", OID_TEE_SPL), ("snp", OID_SNP_SPL), ("microcode", OID_UCODE_SPL)):
        raw = _ext(cert, oid)
        if raw is None:
            raise VerificationError(f"'{name_of(cert)}' has no {name} SPL extension ({oid})", reason=Reason.BAD_CERTIFICATE)
        parts[name] = _spl(raw, cert, name)
    fmc = None
    if turin_layout:
        raw = _ext(cert, OID_FMC_SPL)
        fmc = _spl(raw, cert, "fmc") if raw is not None else 0
    for k, v in parts.items():
        if not 0 <= v <= 255:
            raise VerificationError(f"'{name_of(cert)}' {k} SPL {v} is out of range", reason=Reason.BAD_CERTIFICATE)
    if turin_layout:
        b = bytes([fmc or 0, parts["bootloader"], parts["tee"], parts["snp"], 0, 0, 0, parts["microcode"]])
    else:
        b = bytes([parts["bootloader"], parts["tee"], 0, 0, 0, 0, parts["snp"], parts["microcode"]])
    return TcbVersion(int.from_bytes(b, "little"), parts["bootloader"], parts["tee"], parts["snp"], parts["microcode"], fmc)


def _spl(raw: bytes, cert: x509.Certificate, name: str) -> int:
    try:
        return der_uint(raw, f"{name} SPL")
    except VerificationError as e:
        raise VerificationError(f"'{name_of(cert)}': {e}", reason=e.reason) from None


def leaf_hwid(cert: x509.Certificate) -> bytes | None:
    """The chip id a VCEK was issued to (VLEKs have none)."""
    raw = _ext(cert, OID_HWID)
    return None if raw is None else der_octets(raw, "hwID")


def leaf_csp_id(cert: x509.Certificate) -> str | None:
    raw = _ext(cert, OID_CSP_ID)
    if raw is None:
        return None
    body = der_octets(raw, "csp_id")
    # An IA5String/UTF8String: tag, length, text.
    if len(body) >= 2 and body[0] in (0x16, 0x0C) and body[1] == len(body) - 2:
        body = body[2:]
    return body.decode("utf-8", "replace")


class AmdKdsClient:
    """Fetches VCEKs, chains and CRLs from AMD KDS (or a mirror with the same paths)."""

    def __init__(self, base_url: str = AMD_KDS_URL, *, timeout: float = 20.0, client: httpx.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = LazyHttp(timeout, client)

    def _get(self, path: str, what: str, params: dict[str, str] | None = None) -> bytes:
        url = f"{self.base_url}{path}"
        try:
            resp = self._http.client.get(url, params=params)
        except httpx.HTTPError as e:
            raise CollateralError(f"{what}: cannot reach {url}: {e}", reason=Reason.COLLATERAL_UNAVAILABLE) from None
        if resp.status_code in (400, 404):  # KDS refuses a chip id or TCB it never issued a key for
            raise CollateralError(f"{what}: {url} has none (HTTP {resp.status_code})", reason=Reason.COLLATERAL_NOT_FOUND)
        if resp.status_code != 200:
            raise CollateralError(f"{what}: {url} answered HTTP {resp.status_code}", reason=Reason.COLLATERAL_UNAVAILABLE)
        return resp.content

    def fetch_vcek(self, product: str, chip_id: bytes, tcb: TcbVersion) -> x509.Certificate:
        hwid = chip_id[:8] if product == "Turin" else chip_id
        params = {
            "blSPL": str(tcb.bootloader),
            "teeSPL": str(tcb.tee),
            "snpSPL": str(tcb.snp),
            "ucodeSPL": str(tcb.microcode),
        }
        if product == "Turin":
            params["fmcSPL"] = str(tcb.fmc or 0)
        data = self._get(f"/vcek/v1/{product}/{hwid.hex()}", f"VCEK for {product}", params)
        try:
            return load_certificates(data, "VCEK from KDS")[0]
        except VerificationError as e:
            raise CollateralError(str(e), reason=Reason.COLLATERAL_UNAVAILABLE) from None

    def fetch_cert_chain(self, product: str, signer: str = "vcek") -> list[x509.Certificate]:
        data = self._get(f"/{signer}/v1/{product}/cert_chain", f"{product} {signer} cert chain")
        try:
            return load_certificates(data, "KDS cert chain")
        except VerificationError as e:
            raise CollateralError(str(e), reason=Reason.COLLATERAL_UNAVAILABLE) from None

    def fetch_crl(self, product: str, signer: str = "vcek") -> x509.CertificateRevocationList:
        data = self._get(f"/{signer}/v1/{product}/crl", f"{product} {signer} CRL")
        try:
            return x509.load_der_x509_crl(data)
        except ValueError:
            raise CollateralError(f"{product} CRL from KDS is not a DER CRL", reason=Reason.COLLATERAL_UNAVAILABLE) from None

    def close(self) -> None:
        self._http.close()

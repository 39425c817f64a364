"""NVIDIA GPU collateral: OCSP responses for the device certificate chain, and RIMs.

NVIDIA's own verifier (nv-local-gpu-verifier) asks NVIDIA's OCSP responder
(``https://ocsp.ndis.nvidia.com``) about every certificate of the GPU's chain
on every attestation, and fetches the reference integrity manifests (RIMs,
signed SWID tags with the golden measurements) from
``https://rim.attestation.nvidia.com/v1/rim/{id}``; it fails without network.
We treat both as cached collateral instead: an OCSP response is good until its
own ``nextUpdate``, a RIM until it is replaced. This module builds OCSP
requests and fetches both with httpx, only when the store misses or expired.

RIM ids (NVIDIA's naming): ``NV_GPU_DRIVER_GH100_{driver version}`` and
``NV_GPU_VBIOS_{project}_{project sku}_{chip sku}_{VBIOS version without dots}``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from omron_tee.attestation.collateral.http import LazyHttp
from omron_tee.errors import CollateralError
from omron_tee.reasons import Reason

NVIDIA_OCSP_URL = "https://ocsp.ndis.nvidia.com/"
NVIDIA_RIM_URL = "https://rim.attestation.nvidia.com"
DEFAULT_OCSP_LIFETIME = 24 * 3600.0  # when a response carries no nextUpdate


def driver_rim_id(driver_version: str, chip: str = "GH100") -> str:
    return f"NV_GPU_DRIVER_{chip}_{driver_version}"


def vbios_rim_id(project: str, project_sku: str, chip_sku: str, vbios_version: str) -> str:
    return f"NV_GPU_VBIOS_{project}_{project_sku}_{chip_sku}_{vbios_version.replace('.', '').upper()}"


@dataclass(frozen=True)
class CachedOcsp:
    der: bytes
    response: ocsp.OCSPResponse
    expires_at: float

    @classmethod
    def from_der(cls, der: bytes) -> "CachedOcsp":
        try:
            resp = ocsp.load_der_ocsp_response(der)
        except ValueError:
            raise CollateralError("not a DER OCSP response", reason=Reason.COLLATERAL_INVALID) from None
        if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise CollateralError(f"OCSP response status is {resp.response_status.name}", reason=Reason.COLLATERAL_INVALID)
        if resp.next_update_utc is not None:
            expires = resp.next_update_utc.timestamp()
        else:
            expires = resp.this_update_utc.timestamp() + DEFAULT_OCSP_LIFETIME
        return cls(der, resp, expires)


def issuer_key_hash(cert: x509.Certificate, issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> bytes:
    """The issuerKeyHash an OCSP CertID for ``cert`` carries, computed by cryptography's request builder."""
    req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm).build()
    return req.issuer_key_hash


class NvidiaCollateralClient:
    """Fetches OCSP responses and RIMs from NVIDIA's services (or mirrors)."""

    def __init__(
        self,
        *,
        ocsp_url: str = NVIDIA_OCSP_URL,
        rim_url: str = NVIDIA_RIM_URL,
        timeout: float = 20.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.ocsp_url = ocsp_url
        self.rim_url = rim_url.rstrip("/")
        self._http = LazyHttp(timeout, client)

    def fetch_ocsp(self, cert: x509.Certificate, issuer: x509.Certificate) -> CachedOcsp:
        req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA384()).build()
        body = req.public_bytes(serialization.Encoding.DER)
        try:
            resp = self._http.client.post(self.ocsp_url, content=body, headers={"Content-Type": "application/ocsp-request"})
        except httpx.HTTPError as e:
            raise CollateralError(f"OCSP: cannot reach {self.ocsp_url}: {e}", reason=Reason.COLLATERAL_UNAVAILABLE) from None
        if resp.status_code != 200:
            raise CollateralError(f"OCSP: {self.ocsp_url} answered HTTP {resp.status_code}", reason=Reason.COLLATERAL_UNAVAILABLE)
        return CachedOcsp.from_der(resp.content)

    def fetch_rim(self, rim_id: str) -> bytes:
        url = f"{self.rim_url}/v1/rim/{rim_id}"
        try:
            resp = self._http.client.get(url)
        except httpx.HTTPError as e:
            raise CollateralError(f"RIM: cannot reach {url}: {e}", reason=Reason.COLLATERAL_UNAVAILABLE) from None
        if resp.status_code != 200:
            raise CollateralError(f"RIM: {url} answered HTTP {resp.status_code}", reason=Reason.COLLATERAL_UNAVAILABLE)
        try:
            return base64.b64decode(json.loads(resp.text)["rim"])
        except (ValueError, KeyError, TypeError):
            raise CollateralError(f"RIM: {url} did not return {{'rim': base64}} JSON", reason=Reason.COLLATERAL_UNAVAILABLE) from None

    def close(self) -> None:
        self._http.close()


def utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc)

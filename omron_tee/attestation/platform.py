"""Typed, per-TEE claims: what a verifier found in one platform's evidence beyond the common ``Claims``.

One frozen dataclass per TEE, with the report's own types (bytes, ints, the
abi's ``GuestPolicy`` and ``TcbVersion``), as go-tdx-guest and go-sev-guest
hand policy code a typed report rather than a map. Policy reads these fields;
``to_json`` is the display form (hex strings), the one ``Claims.details``
and ``omron-tee evidence verify`` show.
"""

from __future__ import annotations

from dataclasses import dataclass

from omron_tee.attestation.abi.snp import GuestPolicy, TcbVersion


@dataclass(frozen=True)
class DcapCollateral:
    """How Intel DCAP evidence was verified: the PCK's platform and CA, the root, the collateral used."""

    fmspc: str
    pck_ca: str
    trust_root: str
    collateral_expires: str
    tcb_evaluation_data_number: int

    def to_json(self) -> dict[str, object]:
        return {"fmspc": self.fmspc, "pck_ca": self.pck_ca, "trust_root": self.trust_root, "collateral_expires": self.collateral_expires,
                "tcb_evaluation_data_number": self.tcb_evaluation_data_number, "verified": True}


def _collateral_json(c: DcapCollateral | None) -> dict[str, object]:
    return c.to_json() if c is not None else {"verified": False}


@dataclass(frozen=True)
class SgxClaims:
    quote_version: int
    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    attributes: bytes
    misc_select: int
    cpu_svn: bytes
    config_id: bytes
    config_svn: int
    isv_ext_prod_id: bytes
    isv_family_id: bytes
    qe_svn: int
    pce_svn: int
    collateral: DcapCollateral | None = None  # None: parsed for display, not verified

    def to_json(self) -> dict[str, object]:
        return {
            "quote_version": self.quote_version, "mr_enclave": self.mr_enclave.hex(), "mr_signer": self.mr_signer.hex(),
            "isv_prod_id": self.isv_prod_id, "isv_svn": self.isv_svn, "attributes": self.attributes.hex(), "misc_select": self.misc_select,
            "cpu_svn": self.cpu_svn.hex(), "config_id": self.config_id.hex(), "config_svn": self.config_svn,
            "isv_ext_prod_id": self.isv_ext_prod_id.hex(), "isv_family_id": self.isv_family_id.hex(), "qe_svn": self.qe_svn, "pce_svn": self.pce_svn,
            **_collateral_json(self.collateral),
        }


@dataclass(frozen=True)
class TdxClaims:
    quote_version: int
    mr_td: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    tee_tcb_svn: bytes
    sept_ve_disable: bool
    qe_svn: int
    pce_svn: int
    tee_tcb_svn2: bytes | None = None  # TDX 1.5 quotes (v5) only
    mr_servicetd: bytes | None = None
    collateral: DcapCollateral | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "quote_version": self.quote_version, "mr_td": self.mr_td.hex(),
            **{f"rtmr{i}": r.hex() for i, r in enumerate(self.rtmrs)},
            "mr_seam": self.mr_seam.hex(), "mr_signer_seam": self.mr_signer_seam.hex(), "seam_attributes": self.seam_attributes.hex(),
            "td_attributes": self.td_attributes.hex(), "xfam": self.xfam.hex(), "mr_config_id": self.mr_config_id.hex(),
            "mr_owner": self.mr_owner.hex(), "mr_owner_config": self.mr_owner_config.hex(), "tee_tcb_svn": self.tee_tcb_svn.hex(),
            "sept_ve_disable": self.sept_ve_disable, "qe_svn": self.qe_svn, "pce_svn": self.pce_svn,
        }
        if self.tee_tcb_svn2 is not None:
            out["tee_tcb_svn2"] = self.tee_tcb_svn2.hex()
            out["mr_servicetd"] = (self.mr_servicetd or b"").hex()
        return {**out, **_collateral_json(self.collateral)}


@dataclass(frozen=True)
class SnpChain:
    """How an SEV-SNP report's key was verified: the product, the ARK, revocation."""

    product: str
    trust_root: str
    crl_checked: bool
    vlek_csp_id: str | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"product": self.product, "trust_root": self.trust_root, "crl_checked": self.crl_checked, "verified": True}
        if self.vlek_csp_id:
            out["vlek_csp_id"] = self.vlek_csp_id
        return out


@dataclass(frozen=True)
class SnpClaims:
    version: int
    guest_svn: int
    policy: GuestPolicy
    family_id: bytes
    image_id: bytes
    vmpl: int
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    chip_id: bytes
    signing_key: str  # "vcek", "vlek" or "none"
    reported_tcb: TcbVersion
    current_tcb: TcbVersion
    committed_tcb: TcbVersion
    launch_tcb: TcbVersion
    current_version: tuple[int, int, int]
    committed_version: tuple[int, int, int]
    platform_info: tuple[tuple[str, bool], ...]
    cpuid: tuple[int, int, int] | None = None  # (family, model, stepping), report version 3 and later
    launch_mit_vector: int | None = None
    current_mit_vector: int | None = None
    chain: SnpChain | None = None  # None: parsed for display, not verified
    product: str | None = None  # as the report's CPUID says (the verified chain's product supersedes it)

    @property
    def crl_checked(self) -> bool:
        return self.chain is not None and self.chain.crl_checked

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "version": self.version, "guest_svn": self.guest_svn, "policy": self.policy.to_json(), "family_id": self.family_id.hex(),
            "image_id": self.image_id.hex(), "vmpl": self.vmpl, "host_data": self.host_data.hex(), "id_key_digest": self.id_key_digest.hex(),
            "author_key_digest": self.author_key_digest.hex(), "report_id": self.report_id.hex(), "report_id_ma": self.report_id_ma.hex(),
            "chip_id": self.chip_id.hex(), "signing_key": self.signing_key,
            "reported_tcb": self.reported_tcb.to_json(), "current_tcb": self.current_tcb.to_json(),
            "committed_tcb": self.committed_tcb.to_json(), "launch_tcb": self.launch_tcb.to_json(),
            "current_version": "%d.%d.%d" % self.current_version, "committed_version": "%d.%d.%d" % self.committed_version,
            "platform_info": dict(self.platform_info),
        }
        if self.cpuid is not None:
            out["cpuid"] = {"family": self.cpuid[0], "model": self.cpuid[1], "stepping": self.cpuid[2]}
        if self.launch_mit_vector is not None:
            out["launch_mit_vector"] = self.launch_mit_vector
            out["current_mit_vector"] = self.current_mit_vector
        return {**out, **(self.chain.to_json() if self.chain is not None else {"product": self.product, "verified": False})}


@dataclass(frozen=True)
class NvidiaChain:
    """How an NVIDIA attestation report's key was verified: the root, the device, revocation (OCSP)."""

    trust_root: str
    device: str
    ocsp: str  # "good", "revoked", "missing", "expired", "not-configured", ...
    ocsp_detail: str
    rim: str = "not-compared"

    def to_json(self) -> dict[str, object]:
        return {"trust_root": self.trust_root, "device": self.device, "ocsp": self.ocsp, "ocsp_detail": self.ocsp_detail, "rim": self.rim, "verified": True}


@dataclass(frozen=True)
class NvidiaClaims:
    spdm_version: str
    driver_version: str | None
    vbios_version: str | None
    project: str | None
    project_sku: str | None
    chip_sku: str | None
    fwid: bytes | None
    responder_nonce: bytes
    measurements: tuple[tuple[int, bytes], ...]  # (block index, value), sorted
    driver_rim_id: str | None = None
    vbios_rim_id: str | None = None
    chain: NvidiaChain | None = None

    def measurement(self, index: int) -> bytes | None:
        return dict(self.measurements).get(index)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "spdm_version": self.spdm_version, "driver_version": self.driver_version, "vbios_version": self.vbios_version,
            "project": self.project, "project_sku": self.project_sku, "chip_sku": self.chip_sku,
            "fwid": self.fwid.hex() if self.fwid else None, "responder_nonce": self.responder_nonce.hex(),
            "measurements": {str(i): v.hex() for i, v in self.measurements},
        }
        if self.driver_rim_id:
            out["driver_rim_id"] = self.driver_rim_id
        if self.vbios_rim_id:
            out["vbios_rim_id"] = self.vbios_rim_id
        return {**out, **(self.chain.to_json() if self.chain is not None else {"verified": False})}


@dataclass(frozen=True)
class SimulatedClaims:
    key_id: bytes
    version: int

    def to_json(self) -> dict[str, object]:
        return {"key_id": self.key_id.hex(), "version": self.version}


PlatformClaims = SgxClaims | TdxClaims | SnpClaims | NvidiaClaims | SimulatedClaims

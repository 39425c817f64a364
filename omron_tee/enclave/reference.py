"""Reference values: what a validator puts in its policy to accept this release of the trusted app.

- simulated: ``trusted_app_measurement`` over the code and the shipped models.
- SGX (Gramine): MRENCLAVE and MRSIGNER from the signed enclave's SIGSTRUCT
  (the ``.sig`` file ``gramine-sgx-sign`` writes) or from its printed
  "Measurement:"; or from a quote.
- TDX: MRTD and RTMR0-3 from a quote of the reference image (they depend on
  the TD firmware, kernel, initrd and command line; see docs/ENCLAVES.md).
- SEV-SNP: the launch measurement, computed from the image with
  ``sev-snp-measure`` when installed, or read from a report.

SIGSTRUCT layout (Intel SDM Vol. 3D, "Enclave Signature Structure"): 1808
bytes; HEADER at 0 (16), VENDOR 16, DATE 20, HEADER2 24 (16), SWDEFINED 40,
MODULUS 128 (384, little-endian), EXPONENT 512 (4, must be 3), SIGNATURE 516
(384, little-endian), MISCSELECT 900, MISCMASK 904, ISVFAMILYID 912,
ATTRIBUTES 928 (16), ATTRIBUTEMASK 944 (16), ENCLAVEHASH 960 (32),
ISVEXTPRODID 992, ISVPRODID 1024 (2), ISVSVN 1026 (2), Q1 1040, Q2 1424.
The RSA-3072 PKCS#1 v1.5 SHA-256 signature covers bytes 0..128 and 900..1028;
MRSIGNER is SHA-256 of the modulus as stored (little-endian).
"""

from __future__ import annotations

import hashlib
import importlib
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from omron_tee.attestation.evidence import TeeType
from omron_tee.enclave.sev_snp import summarize_snp_report
from omron_tee.enclave.sgx_gramine import summarize_sgx_quote
from omron_tee.enclave.tdx import summarize_td_quote
from omron_tee.errors import ConfigError, EnclaveError

SIGSTRUCT_LEN = 1808
SIGSTRUCT_HEADER = bytes.fromhex("06000000e10000000000010000000000")
SIGSTRUCT_HEADER2 = bytes.fromhex("01010000600000006000000001000000")
_MODULUS, _EXPONENT, _SIGNATURE = 128, 512, 516
_MISCSELECT, _ATTRIBUTES, _ATTRIBUTEMASK, _ENCLAVEHASH = 900, 928, 944, 960
_ISVPRODID, _ISVSVN = 1024, 1026
_VENDOR = 16  # DATE (20) is informational, and Gramine and Intel's SDK lay it out differently
SGX_FLAGS_DEBUG = 0x02


@dataclass(frozen=True)
class Sigstruct:
    mrenclave: bytes
    mrsigner: bytes
    isv_prod_id: int
    isv_svn: int
    attribute_flags: int
    attribute_xfrm: int
    misc_select: int
    vendor: int

    @property
    def debug(self) -> bool:
        return bool(self.attribute_flags & SGX_FLAGS_DEBUG)


def sigstruct_signed_bytes(data: bytes) -> bytes:
    return data[:128] + data[_MISCSELECT : _MISCSELECT + 128]


def parse_sigstruct(data: bytes, *, source: str = "SIGSTRUCT") -> Sigstruct:
    """Parse and check a SIGSTRUCT (the enclave's .sig file); ConfigError says what is wrong."""
    if len(data) != SIGSTRUCT_LEN:
        raise ConfigError(f"{source} is {len(data)} bytes; a SIGSTRUCT is {SIGSTRUCT_LEN} (is this the .sig file gramine-sgx-sign wrote?)")
    if data[:16] != SIGSTRUCT_HEADER or data[24:40] != SIGSTRUCT_HEADER2:
        raise ConfigError(f"{source} does not start with the SIGSTRUCT headers: not an SGX .sig file")
    (exponent,) = struct.unpack_from("<I", data, _EXPONENT)
    if exponent != 3:
        raise ConfigError(f"{source}: RSA exponent is {exponent}, SGX requires 3")
    modulus = data[_MODULUS : _MODULUS + 384]
    n = int.from_bytes(modulus, "little")
    signature = int.from_bytes(data[_SIGNATURE : _SIGNATURE + 384], "little").to_bytes(384, "big")
    try:
        rsa.RSAPublicNumbers(exponent, n).public_key().verify(signature, sigstruct_signed_bytes(data), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        raise ConfigError(f"{source}: the SIGSTRUCT signature does not verify (file corrupted or edited after signing)") from None
    flags, xfrm = struct.unpack_from("<QQ", data, _ATTRIBUTES)
    (misc,) = struct.unpack_from("<I", data, _MISCSELECT)
    (vendor,) = struct.unpack_from("<I", data, _VENDOR)
    prod_id, svn = struct.unpack_from("<HH", data, _ISVPRODID)
    return Sigstruct(
        mrenclave=data[_ENCLAVEHASH : _ENCLAVEHASH + 32],
        mrsigner=hashlib.sha256(modulus).digest(),
        isv_prod_id=prod_id,
        isv_svn=svn,
        attribute_flags=flags,
        attribute_xfrm=xfrm,
        misc_select=misc,
        vendor=vendor,
    )


def parse_sign_output(text: str) -> bytes:
    """MRENCLAVE from gramine-sgx-sign's output ("Measurement:" then the hex on the next line)."""
    m = re.search(r"^\s*Measurement:\s*\n\s*([0-9a-fA-F]{64})\s*$", text, re.MULTILINE)
    if not m:
        raise ConfigError("no 'Measurement:' followed by a 64-hex-digit MRENCLAVE in this gramine-sgx-sign output")
    return bytes.fromhex(m.group(1))


@dataclass
class ReferenceValues:
    """The values to allow-list for one TEE type, with notes for the operator."""

    tee_type: TeeType
    values: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    debug: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"tee_type": self.tee_type.value, "values": self.values, "debug": self.debug, "notes": self.notes, "policy_toml": self.to_toml()}

    def to_toml(self) -> str:
        """A snippet for the validator's policy file (see docs/POLICY.md)."""
        return render_policy_toml(self)


def render_policy_toml(ref: ReferenceValues) -> str:
    """The policy-file section that allow-lists these values (keys as omron_tee.attestation.validate.policy reads them)."""
    v = ref.values
    lines: list[str] = []
    if ref.debug:
        lines.append("# WARNING: this build is a DEBUG enclave; production policies refuse it")
    if ref.tee_type is TeeType.SIMULATED:
        lines += ["[simulated]", "allow = true  # local networks only; trusted_keys = the network's development key", f'measurements = ["{v["measurement"]}"]']
    elif ref.tee_type is TeeType.SGX:
        lines += ["[sgx]", f'mrenclave = ["{v["mrenclave"]}"]']
        if "mrsigner" in v:
            lines += [
                "# or accept every build this key signs for this product from this ISVSVN on:",
                "# [[sgx.signer]]",
                f'# mrsigner = "{v["mrsigner"]}"',
                f"# isv_prod_id = {v.get('isv_prod_id', 0)}",
                f"# min_isv_svn = {v.get('isv_svn', 0)}",
            ]
    elif ref.tee_type is TeeType.TDX:
        lines += ["[[tdx.measurement]]", f'mrtd = "{v["mrtd"]}"']
        lines += [f'rtmr{i} = "{v[f"rtmr{i}"]}"' for i in range(3) if f"rtmr{i}" in v]
        lines.append("# rtmr3 is extended by the running OS; pin it only if your image fixes it")
    elif ref.tee_type is TeeType.SEV_SNP:
        lines += ["[sev-snp]", f'measurements = ["{v["measurement"]}"]']
    return "\n".join(lines) + "\n"


def simulated_reference(models: list[tuple[str, bytes]]) -> ReferenceValues:
    from omron_tee.enclave.measurement import trusted_app_measurement

    return ReferenceValues(
        TeeType.SIMULATED,
        {"measurement": trusted_app_measurement(models).hex(), "models": {m: d.hex() for m, d in sorted(models)}},
        notes=["simulated evidence is accepted only on a local network; this is the release build's measurement (no --dev.measurement_variant)"],
    )


def sgx_reference_from_sigstruct(data: bytes, *, source: str = "SIGSTRUCT") -> ReferenceValues:
    sig = parse_sigstruct(data, source=source)
    notes = [f"from {source} (signature checked)"]
    if sig.debug:
        notes.append("ATTRIBUTES.DEBUG is set (sgx.debug = true in the manifest): rebuild with sgx.debug = false for production")
    return ReferenceValues(
        TeeType.SGX,
        {
            "mrenclave": sig.mrenclave.hex(),
            "mrsigner": sig.mrsigner.hex(),
            "isv_prod_id": sig.isv_prod_id,
            "isv_svn": sig.isv_svn,
            "attributes_flags": f"{sig.attribute_flags:#x}",
            "attributes_xfrm": f"{sig.attribute_xfrm:#x}",
            "misc_select": f"{sig.misc_select:#x}",
        },
        notes=notes,
        debug=sig.debug,
    )


def sgx_reference_from_sign_output(text: str) -> ReferenceValues:
    return ReferenceValues(
        TeeType.SGX,
        {"mrenclave": parse_sign_output(text).hex()},
        notes=["from gramine-sgx-sign's output: pass --sig FILE for MRSIGNER, ISVPRODID, ISVSVN and the debug attribute too"],
    )


def sgx_reference_from_quote(quote: bytes) -> ReferenceValues:
    s = _summary(summarize_sgx_quote, quote)
    return ReferenceValues(
        TeeType.SGX,
        {"mrenclave": s.mrenclave.hex(), "mrsigner": s.mrsigner.hex(), "isv_prod_id": s.isv_prod_id, "isv_svn": s.isv_svn, "attributes": s.attributes.hex()},
        notes=["read from a quote, not verified: check it came from your reference build"],
        debug=s.debug,
    )


def tdx_reference_from_quote(quote: bytes) -> ReferenceValues:
    s = _summary(summarize_td_quote, quote)
    values: dict[str, Any] = {"mrtd": s.mrtd.hex()}
    values.update({f"rtmr{i}": r.hex() for i, r in enumerate(s.rtmrs)})
    values.update({"mrconfigid": s.mrconfigid.hex(), "mrowner": s.mrowner.hex(), "mrownerconfig": s.mrownerconfig.hex()})
    return ReferenceValues(
        TeeType.TDX,
        values,
        notes=[
            "read from a quote of the reference image, not verified",
            (
                "MRTD measures the TD firmware (TDVF/OVMF); RTMR0 its configuration, RTMR1 the kernel, RTMR2 the kernel "
                "command line and initrd, RTMR3 is free for the OS: allow-list MRTD and the RTMRs your image fixes"
            ),
        ],
        debug=s.debug,
    )


def snp_reference_from_report(report: bytes) -> ReferenceValues:
    s = _summary(summarize_snp_report, report)
    notes = ["read from a report of the reference image, not verified"]
    if s.debug:
        notes.append("guest policy has DEBUG (bit 19) set: production policies refuse it")
    return ReferenceValues(
        TeeType.SEV_SNP,
        {"measurement": s.measurement.hex(), "policy": f"{s.policy:#018x}", "host_data": s.host_data.hex(), "vmpl": s.vmpl},
        notes=notes,
        debug=s.debug,
    )


def _summary(fn: Any, data: bytes) -> Any:
    try:
        return fn(data)
    except EnclaveError as e:
        raise ConfigError(str(e)) from None


SEV_SNP_MEASURE_HINT = (
    "pip install sev-snp-measure, then: sev-snp-measure --mode snp --vcpus N --vcpu-type EPYC-v4 "
    "--ovmf OVMF.fd --kernel vmlinuz --initrd initrd.img --append 'CMDLINE'"
)


def snp_reference_from_image(
    *,
    ovmf: Path,
    vcpus: int,
    vcpu_type: str,
    kernel: Path | None = None,
    initrd: Path | None = None,
    append: str | None = None,
    guest_features: int = 0x1,
    vmm_type: str = "QEMU",
) -> ReferenceValues:
    """The SNP launch digest of a direct-boot image, through sev-snp-measure (virtee)."""
    try:
        guest = importlib.import_module("sevsnpmeasure.guest")
        modes = importlib.import_module("sevsnpmeasure.sev_mode")
        vcpu_types = importlib.import_module("sevsnpmeasure.vcpu_types")
        vmm_types = importlib.import_module("sevsnpmeasure.vmm_types")
    except ImportError:
        raise ConfigError(f"computing an SNP measurement from an image needs sev-snp-measure: {SEV_SNP_MEASURE_HINT}") from None
    if vcpu_type not in vcpu_types.CPU_SIGS:
        raise ConfigError(f"unknown --vcpu-type {vcpu_type!r}; one of: {', '.join(sorted(vcpu_types.CPU_SIGS))}")
    for label, p in (("--ovmf", ovmf), ("--kernel", kernel), ("--initrd", initrd)):
        if p is not None and not Path(p).is_file():
            raise ConfigError(f"{label} {p}: no such file")
    try:
        digest = guest.calc_launch_digest(
            modes.SevMode.SEV_SNP,
            vcpus,
            vcpu_types.CPU_SIGS[vcpu_type],
            str(ovmf),
            str(kernel) if kernel else None,
            str(initrd) if initrd else None,
            append,
            guest_features,
            "",
            vmm_types.VMMType[vmm_type],
        )
    except (ValueError, RuntimeError, OSError, KeyError) as e:
        raise ConfigError(f"sev-snp-measure could not measure this image: {e}") from None
    return ReferenceValues(
        TeeType.SEV_SNP,
        {"measurement": digest.hex(), "vcpus": vcpus, "vcpu_type": vcpu_type, "guest_features": f"{guest_features:#x}"},
        notes=["computed by sev-snp-measure: it must match the VMM's launch exactly (same vCPU count and type, same files)"],
    )


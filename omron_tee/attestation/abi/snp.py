"""AMD SEV-SNP attestation report (ABI spec 56860, ATTESTATION_REPORT): parse only.

The report is 0x4A0 (1184) bytes, all integers little-endian. Versions 2, 3
and 5 are what SNP firmware produces today (3 adds the CPUID family, model
and stepping at 0x188; 5 adds the launch and current mitigation vectors at
0x1F8 and 0x200); 4 is read like 3. Regions the spec marks reserved must be
zero. The signature (0x2A0) is ECDSA P-384 over bytes 0..0x2A0: R and S are
72-byte little-endian integers, then 368 reserved bytes.

Also here: the guest policy and platform info bits, the TCB_VERSION layouts
(Milan/Genoa vs Turin) and the certificate table a host hands out beside an
extended report (GUID-keyed VCEK/VLEK/ASK/ARK blobs).
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from omron_tee.attestation.abi.binary import Reader, require_bytes
from omron_tee.errors import ParseError

STRUCTURE = "SEV-SNP report"
REPORT_LEN = 0x4A0
MAX_DELIVERED_LEN = 4096  # the largest buffer a host hands a report over in (the firmware's response is 4000)
SIGNED_LEN = 0x2A0
SUPPORTED_VERSIONS = (2, 3, 4, 5)
SIG_ALGO_ECDSA_P384_SHA384 = 1

# Guest policy bits.
POLICY_SMT = 1 << 16
POLICY_RESERVED_ONE = 1 << 17
POLICY_MIGRATE_MA = 1 << 18
POLICY_DEBUG = 1 << 19
POLICY_SINGLE_SOCKET = 1 << 20
POLICY_CXL_ALLOW = 1 << 21
POLICY_MEM_AES_256_XTS = 1 << 22
POLICY_RAPL_DIS = 1 << 23
POLICY_CIPHERTEXT_HIDING = 1 << 24
POLICY_PAGE_SWAP_DISABLE = 1 << 25
POLICY_KNOWN_BITS = 0x3FFFFFF

# Platform info bits.
PLATFORM_SMT_EN = 1 << 0
PLATFORM_TSME_EN = 1 << 1
PLATFORM_ECC_EN = 1 << 2
PLATFORM_RAPL_DIS = 1 << 3
PLATFORM_CIPHERTEXT_HIDING_EN = 1 << 4
PLATFORM_ALIAS_CHECK_COMPLETE = 1 << 5

SIGNING_KEY_VCEK = 0
SIGNING_KEY_VLEK = 1
SIGNING_KEY_NONE = 7
_SIGNING_KEY_NAMES = {SIGNING_KEY_VCEK: "vcek", SIGNING_KEY_VLEK: "vlek", SIGNING_KEY_NONE: "none"}


@dataclass(frozen=True)
class GuestPolicy:
    raw: int

    @property
    def abi_minor(self) -> int:
        return self.raw & 0xFF

    @property
    def abi_major(self) -> int:
        return (self.raw >> 8) & 0xFF

    @property
    def smt(self) -> bool:
        return bool(self.raw & POLICY_SMT)

    @property
    def migrate_ma(self) -> bool:
        return bool(self.raw & POLICY_MIGRATE_MA)

    @property
    def debug(self) -> bool:
        return bool(self.raw & POLICY_DEBUG)

    @property
    def single_socket(self) -> bool:
        return bool(self.raw & POLICY_SINGLE_SOCKET)

    @property
    def cxl_allow(self) -> bool:
        return bool(self.raw & POLICY_CXL_ALLOW)

    @property
    def mem_aes_256_xts(self) -> bool:
        return bool(self.raw & POLICY_MEM_AES_256_XTS)

    @property
    def rapl_dis(self) -> bool:
        return bool(self.raw & POLICY_RAPL_DIS)

    @property
    def ciphertext_hiding(self) -> bool:
        return bool(self.raw & POLICY_CIPHERTEXT_HIDING)

    @property
    def page_swap_disable(self) -> bool:
        return bool(self.raw & POLICY_PAGE_SWAP_DISABLE)

    def to_json(self) -> dict[str, object]:
        return {
            "raw": f"0x{self.raw:016x}",
            "abi_major": self.abi_major,
            "abi_minor": self.abi_minor,
            "smt": self.smt,
            "migrate_ma": self.migrate_ma,
            "debug": self.debug,
            "single_socket": self.single_socket,
            "cxl_allow": self.cxl_allow,
            "mem_aes_256_xts": self.mem_aes_256_xts,
            "rapl_dis": self.rapl_dis,
            "ciphertext_hiding": self.ciphertext_hiding,
            "page_swap_disable": self.page_swap_disable,
        }


@dataclass(frozen=True)
class TcbVersion:
    """A TCB_VERSION, split by the product's layout (``fmc`` only on Turin and later)."""

    raw: int
    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    @classmethod
    def decode(cls, raw: int, *, turin_layout: bool) -> "TcbVersion":
        b = raw.to_bytes(8, "little")
        if turin_layout:
            return cls(raw, bootloader=b[1], tee=b[2], snp=b[3], microcode=b[7], fmc=b[0])
        return cls(raw, bootloader=b[0], tee=b[1], snp=b[6], microcode=b[7])

    def components(self) -> dict[str, int]:
        out = {"bootloader": self.bootloader, "tee": self.tee, "snp": self.snp, "microcode": self.microcode}
        if self.fmc is not None:
            out["fmc"] = self.fmc
        return out

    def to_json(self) -> dict[str, object]:
        return {"raw": f"0x{self.raw:016x}", **self.components()}


@dataclass(frozen=True)
class SnpReport:
    version: int
    guest_svn: int
    policy: GuestPolicy
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb_raw: int
    platform_info: int
    author_key_en: bool
    mask_chip_key: bool
    signing_key: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb_raw: int
    cpuid_fam_id: int | None
    cpuid_mod_id: int | None
    cpuid_step: int | None
    chip_id: bytes
    committed_tcb_raw: int
    current_version: tuple[int, int, int]  # (major, minor, build)
    committed_version: tuple[int, int, int]
    launch_tcb_raw: int
    launch_mit_vector: int | None
    current_mit_vector: int | None
    signature_r: int
    signature_s: int
    signed_bytes: bytes

    @property
    def debug(self) -> bool:
        return self.policy.debug

    @property
    def signing_key_name(self) -> str:
        return _SIGNING_KEY_NAMES.get(self.signing_key, f"reserved-{self.signing_key}")

    @property
    def product(self) -> str | None:
        """Milan, Genoa or Turin from the CPUID fields (v3+); None when absent or unknown."""
        return product_from_cpuid(self.cpuid_fam_id, self.cpuid_mod_id)

    @property
    def turin_layout(self) -> bool:
        return self.product == "Turin"

    def tcb(self, raw: int, *, turin_layout: bool | None = None) -> TcbVersion:
        return TcbVersion.decode(raw, turin_layout=self.turin_layout if turin_layout is None else turin_layout)

    @property
    def reported_tcb(self) -> TcbVersion:
        return self.tcb(self.reported_tcb_raw)

    @property
    def current_tcb(self) -> TcbVersion:
        return self.tcb(self.current_tcb_raw)

    @property
    def committed_tcb(self) -> TcbVersion:
        return self.tcb(self.committed_tcb_raw)

    @property
    def launch_tcb(self) -> TcbVersion:
        return self.tcb(self.launch_tcb_raw)

    def platform_flags(self) -> dict[str, bool]:
        p = self.platform_info
        return {
            "smt_enabled": bool(p & PLATFORM_SMT_EN),
            "tsme_enabled": bool(p & PLATFORM_TSME_EN),
            "ecc_enabled": bool(p & PLATFORM_ECC_EN),
            "rapl_disabled": bool(p & PLATFORM_RAPL_DIS),
            "ciphertext_hiding_enabled": bool(p & PLATFORM_CIPHERTEXT_HIDING_EN),
            "alias_check_complete": bool(p & PLATFORM_ALIAS_CHECK_COMPLETE),
        }


def product_from_cpuid(family: int | None, model: int | None) -> str | None:
    if family is None or model is None:
        return None
    if family == 0x19 and model <= 0x0F:
        return "Milan"
    if family == 0x19 and (0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF):
        return "Genoa"
    if family == 0x1A and model <= 0x1F:
        return "Turin"
    return None


_LAYOUT = struct.Struct("<IIQ16s16sIIQQII64s48s32s48s48s32s32sQ24s64sQ4s4sQ168s72s72s368s")
assert _LAYOUT.size == REPORT_LEN


class _Unusual(Exception):
    pass


def _fast(data: bytes) -> SnpReport:
    """One unpack and the same checks as the field-by-field parser, or ``_Unusual`` to let it name the fault."""
    (version, guest_svn, policy, family_id, image_id, vmpl, sig_algo, current_tcb, platform_info, key_info, rsvd_4c,
     report_data, measurement, host_data, id_key_digest, author_key_digest, report_id, report_id_ma, reported_tcb,
     cpuid_area, chip_id, committed_tcb, cur, com, launch_tcb, tail, sig_r, sig_s, sig_rsvd) = _LAYOUT.unpack_from(data)
    signing_key = (key_info >> 2) & 0x7
    if (
        version not in SUPPORTED_VERSIONS
        or not policy & POLICY_RESERVED_ONE
        or vmpl > 3
        or sig_algo != SIG_ALGO_ECDSA_P384_SHA384
        or key_info & ~0x1F
        or signing_key not in _SIGNING_KEY_NAMES
        or rsvd_4c != 0
        or cur[3] or com[3]
        or any(sig_rsvd)
    ):
        raise _Unusual
    if version >= 3:
        fam, mod, step = cpuid_area[0], cpuid_area[1], cpuid_area[2]
        if any(cpuid_area[3:]):
            raise _Unusual
    else:
        fam = mod = step = None
        if any(cpuid_area):
            raise _Unusual
    if version >= 5:
        launch_mit, current_mit = int.from_bytes(tail[:8], "little"), int.from_bytes(tail[8:16], "little")
        if any(tail[16:]):
            raise _Unusual
    else:
        launch_mit = current_mit = None
        if any(tail):
            raise _Unusual
    return SnpReport(
        version=version, guest_svn=guest_svn, policy=GuestPolicy(policy), family_id=family_id, image_id=image_id,
        vmpl=vmpl, signature_algo=sig_algo, current_tcb_raw=current_tcb, platform_info=platform_info,
        author_key_en=bool(key_info & 1), mask_chip_key=bool(key_info & 2), signing_key=signing_key,
        report_data=report_data, measurement=measurement, host_data=host_data, id_key_digest=id_key_digest,
        author_key_digest=author_key_digest, report_id=report_id, report_id_ma=report_id_ma,
        reported_tcb_raw=reported_tcb, cpuid_fam_id=fam, cpuid_mod_id=mod, cpuid_step=step, chip_id=chip_id,
        committed_tcb_raw=committed_tcb, current_version=(cur[2], cur[1], cur[0]), committed_version=(com[2], com[1], com[0]),
        launch_tcb_raw=launch_tcb, launch_mit_vector=launch_mit, current_mit_vector=current_mit,
        signature_r=int.from_bytes(sig_r, "little"), signature_s=int.from_bytes(sig_s, "little"),
        signed_bytes=data[:SIGNED_LEN],
    )


def parse(data: bytes) -> SnpReport:
    data = require_bytes(data, STRUCTURE)
    if len(data) < REPORT_LEN:
        raise ParseError(STRUCTURE, "length", f"expected {REPORT_LEN} bytes, got {len(data)}")
    if len(data) > MAX_DELIVERED_LEN:
        raise ParseError(STRUCTURE, "length", f"{len(data)} bytes is more than any SNP report buffer ({MAX_DELIVERED_LEN})")
    # Some hosts hand the report over in a larger buffer (the firmware's 4000-byte
    # MSG_REPORT_RSP, or padding): no signature covers bytes past 0x4A0, so they are
    # ignored, as go-sev-guest does, and can change no verdict or digest.
    data = data[:REPORT_LEN]
    try:
        return _fast(data)
    except _Unusual:
        pass
    r = Reader(data, STRUCTURE)
    version = r.u32("version")
    if version not in SUPPORTED_VERSIONS:
        raise r.error("version", f"unsupported report version {version} (expected one of {SUPPORTED_VERSIONS})")
    guest_svn = r.u32("guest_svn")
    policy = r.u64("policy")
    if not policy & POLICY_RESERVED_ONE:
        raise r.error("policy", "bit 17 is reserved and must be one")
    family_id = r.bytes(16, "family_id")
    image_id = r.bytes(16, "image_id")
    vmpl = r.u32("vmpl")
    if vmpl > 3:
        raise r.error("vmpl", f"VMPL {vmpl} is out of range 0..3")
    sig_algo = r.u32("signature_algo")
    if sig_algo != SIG_ALGO_ECDSA_P384_SHA384:
        raise r.error("signature_algo", f"unsupported signature algorithm {sig_algo} (expected 1, ECDSA P-384 with SHA-384)")
    current_tcb = r.u64("current_tcb")
    platform_info = r.u64("platform_info")
    key_info = r.u32("signer_info")
    if key_info & ~0x1F:
        raise r.error("signer_info", f"reserved bits set (0x{key_info:08x})")
    signing_key = (key_info >> 2) & 0x7
    if signing_key not in _SIGNING_KEY_NAMES:
        raise r.error("signer_info", f"reserved signing key selector {signing_key}")
    r.zeros(4, "reserved_4c")
    report_data = r.bytes(64, "report_data")
    measurement = r.bytes(48, "measurement")
    host_data = r.bytes(32, "host_data")
    id_key_digest = r.bytes(48, "id_key_digest")
    author_key_digest = r.bytes(48, "author_key_digest")
    report_id = r.bytes(32, "report_id")
    report_id_ma = r.bytes(32, "report_id_ma")
    reported_tcb = r.u64("reported_tcb")
    if version >= 3:
        fam, mod, step = r.u8("cpuid_fam_id"), r.u8("cpuid_mod_id"), r.u8("cpuid_step")
        r.zeros(0x1A0 - 0x18B, "reserved_18b")
    else:
        fam = mod = step = None
        r.zeros(0x1A0 - 0x188, "reserved_188")
    chip_id = r.bytes(64, "chip_id")
    committed_tcb = r.u64("committed_tcb")
    cur_build, cur_minor, cur_major = r.u8("current_build"), r.u8("current_minor"), r.u8("current_major")
    r.zeros(1, "reserved_1eb")
    com_build, com_minor, com_major = r.u8("committed_build"), r.u8("committed_minor"), r.u8("committed_major")
    r.zeros(1, "reserved_1ef")
    launch_tcb = r.u64("launch_tcb")
    if version >= 5:
        launch_mit, current_mit = r.u64("launch_mit_vector"), r.u64("current_mit_vector")
    else:
        launch_mit = current_mit = None
    r.zeros(SIGNED_LEN - r.pos, "reserved_before_signature")
    sig_r = int.from_bytes(r.bytes(72, "signature.r"), "little")
    sig_s = int.from_bytes(r.bytes(72, "signature.s"), "little")
    r.zeros(REPORT_LEN - r.pos, "signature.reserved")
    return SnpReport(
        version=version,
        guest_svn=guest_svn,
        policy=GuestPolicy(policy),
        family_id=family_id,
        image_id=image_id,
        vmpl=vmpl,
        signature_algo=sig_algo,
        current_tcb_raw=current_tcb,
        platform_info=platform_info,
        author_key_en=bool(key_info & 1),
        mask_chip_key=bool(key_info & 2),
        signing_key=signing_key,
        report_data=report_data,
        measurement=measurement,
        host_data=host_data,
        id_key_digest=id_key_digest,
        author_key_digest=author_key_digest,
        report_id=report_id,
        report_id_ma=report_id_ma,
        reported_tcb_raw=reported_tcb,
        cpuid_fam_id=fam,
        cpuid_mod_id=mod,
        cpuid_step=step,
        chip_id=chip_id,
        committed_tcb_raw=committed_tcb,
        current_version=(cur_major, cur_minor, cur_build),
        committed_version=(com_major, com_minor, com_build),
        launch_tcb_raw=launch_tcb,
        launch_mit_vector=launch_mit,
        current_mit_vector=current_mit,
        signature_r=sig_r,
        signature_s=sig_s,
        signed_bytes=data[:SIGNED_LEN],
    )


# --- The certificate table of an extended report (SNP_GET_EXT_REPORT) --------

CERT_GUIDS = {
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "vcek",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"): "vlek",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ask",
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ark",
    uuid.UUID("00000000-0000-0000-0000-000000000000"): "end",
}
_TABLE = "SEV-SNP certificate table"
MAX_CERT_TABLE_ENTRIES = 16


def _guid(raw: bytes) -> uuid.UUID:
    """A table entry's GUID. AMD's tools, the kernel's hosts and go-sev-guest write
    RFC 4122 byte order; some tools write the mixed-endian (Microsoft) order: a
    known GUID is recognised in either."""
    std = uuid.UUID(bytes=bytes(raw))
    if std in CERT_GUIDS:
        return std
    mixed = uuid.UUID(bytes_le=bytes(raw))
    return mixed if mixed in CERT_GUIDS else std


def is_cert_table(data: bytes) -> bool:
    """Whether ``data`` starts like a GUID certificate table rather than PEM or DER."""
    if len(data) < 24:
        return False
    return _guid(data[:16]) in CERT_GUIDS and not data.startswith(b"-----")


def parse_cert_table(data: bytes) -> dict[str, bytes]:
    """Map ``vcek``/``vlek``/``ask``/``ark`` (or the GUID string of unknown entries) to DER bytes.

    Table entries are ``GUID (16, RFC 4122 order; mixed-endian also read) | offset u32 | length u32``,
    ending with an all-zero entry; offsets count from the table's start.
    """
    data = require_bytes(data, _TABLE)
    r = Reader(data, _TABLE)
    out: dict[str, bytes] = {}
    for i in range(MAX_CERT_TABLE_ENTRIES + 1):
        guid = _guid(r.bytes(16, f"entry[{i}].guid"))
        offset = r.u32(f"entry[{i}].offset")
        length = r.u32(f"entry[{i}].length")
        name = CERT_GUIDS.get(guid, str(guid))
        if name == "end":
            if offset or length:
                raise r.error(f"entry[{i}]", "terminating entry must be all zero")
            return out
        if offset + length > len(data) or length == 0:
            raise r.error(f"entry[{i}].offset", f"blob {offset}+{length} lies outside the {len(data)}-byte table")
        if name in out:
            raise r.error(f"entry[{i}].guid", f"duplicate {name} entry")
        out[name] = data[offset : offset + length]
    raise r.error("entries", f"more than {MAX_CERT_TABLE_ENTRIES} entries without a terminator")


def build_cert_table(blobs: dict[str, bytes]) -> bytes:
    """The inverse of ``parse_cert_table`` (used by hosts and tests)."""
    names = {v: k for k, v in CERT_GUIDS.items()}
    header_len = 24 * (len(blobs) + 1)
    header = b""
    body = b""
    for name, blob in blobs.items():
        header += names[name].bytes + (header_len + len(body)).to_bytes(4, "little") + len(blob).to_bytes(4, "little")
        body += blob
    return header + b"\0" * 24 + body

"""The attestation policy: which verified evidence a validator or client accepts.

Loaded from one TOML file (documented with an example per TEE in
docs/POLICY.md). Sections:

``[general]``
    ``max_evidence_age_seconds`` (evidence carrying a timestamp older than
    this is stale) and ``allow_debug`` (debug enclaves; local development only).
``[simulated]``
    ``allow`` (simulated evidence at all: never on test/finney),
    ``trusted_keys`` (hex raw Ed25519 development attestation keys) and
    ``measurements`` (hex allow-list of trusted-app builds).
``[sgx]``, ``[tdx]``, ``[sev-snp]``, ``[nvidia]``
    per-TEE measurements, TCB and platform rules (see the dataclasses below).
    A TEE type whose section is absent is refused.

Keys inside a TEE section are checked: a misspelt key is a ``ConfigError``,
not a silently ignored rule. The checks return every reason they refuse, as
(code, message) pairs.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omron_tee.attestation.platform import NvidiaClaims, SgxClaims, SnpClaims, TdxClaims
from omron_tee.attestation.evidence import Claims, TeeType
from omron_tee.attestation.validate.releases import ReleasePolicy
from omron_tee.errors import ConfigError
from omron_tee.reasons import Reason

Refusal = tuple[Reason, str]  # (reason, what to tell the operator)

INTEL_TCB_STATUSES = frozenset(
    {
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
        "Revoked",
    }
)
SNP_POLICY_BITS = (
    "smt",
    "migrate_ma",
    "debug",
    "single_socket",
    "cxl_allow",
    "mem_aes_256_xts",
    "rapl_dis",
    "ciphertext_hiding",
    "page_swap_disable",
)
SNP_TCB_PARTS = ("bootloader", "tee", "snp", "microcode", "fmc")


# --- parsing helpers ---------------------------------------------------------


def _hex_list(section: dict[str, Any], key: str, where: str) -> frozenset[bytes]:
    values = section.get(key, [])
    if not isinstance(values, list):
        raise ConfigError(f"policy {where}.{key} must be a list of hex strings")
    out = set()
    for v in values:
        try:
            out.add(bytes.fromhex(str(v).removeprefix("0x")))
        except ValueError:
            raise ConfigError(f"policy {where}.{key}: {v!r} is not hex") from None
    return frozenset(out)


def _hex(value: Any, where: str, *, length: int | None = None) -> bytes:
    try:
        out = bytes.fromhex(str(value).removeprefix("0x"))
    except ValueError:
        raise ConfigError(f"policy {where}: {value!r} is not hex") from None
    if length is not None and len(out) != length:
        raise ConfigError(f"policy {where}: expected {length} bytes, got {len(out)}")
    return out


SECTIONS = ("general", "simulated", "sgx", "tdx", "sev-snp", "sev_snp", "nvidia", "releases")


def _section(data: dict[str, Any], name: str) -> dict[str, Any] | None:
    sec = data.get(name)
    if sec is None:
        return None
    if not isinstance(sec, dict):
        raise ConfigError(f"policy [{name}] must be a table")
    return sec


def _check_keys(section: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ConfigError(f"policy [{where}]: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


def _bool(section: dict[str, Any], key: str, default: bool, where: str) -> bool:
    v = section.get(key, default)
    if not isinstance(v, bool):
        raise ConfigError(f"policy {where}.{key} must be true or false")
    return v


def _int(value: Any, where: str, *, lo: int = 0, hi: int = 2**64 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"policy {where} must be an integer in {lo}..{hi}")
    return value


def _str_list(section: dict[str, Any], key: str, where: str) -> frozenset[str]:
    values = section.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"policy {where}.{key} must be a list of strings")
    return frozenset(values)


def _short(b: bytes) -> str:
    h = b.hex()
    return h if len(h) <= 20 else h[:16] + "…"


# --- per-TEE sections --------------------------------------------------------


@dataclass(frozen=True)
class SimulatedPolicy:
    allow: bool = False
    trusted_keys: frozenset[bytes] = frozenset()
    measurements: frozenset[bytes] = frozenset()


@dataclass(frozen=True)
class TcbPolicy:
    """Intel TCB rules: accepted statuses, and the advisories tolerated in them."""

    accepted_statuses: frozenset[str] = frozenset({"UpToDate"})
    allowed_advisories: frozenset[str] = frozenset()  # "*" tolerates any
    min_tcb_evaluation_data_number: int = 0

    KEYS = frozenset({"accepted_tcb_statuses", "allowed_advisories", "min_tcb_evaluation_data_number"})

    @classmethod
    def parse(cls, sec: dict[str, Any], where: str) -> "TcbPolicy":
        statuses = _str_list(sec, "accepted_tcb_statuses", where) if "accepted_tcb_statuses" in sec else cls.accepted_statuses
        bad = sorted(set(statuses) - INTEL_TCB_STATUSES)
        if bad:
            raise ConfigError(f"policy {where}.accepted_tcb_statuses: unknown status(es) {bad}; known: {sorted(INTEL_TCB_STATUSES)}")
        min_eval = _int(sec.get("min_tcb_evaluation_data_number", 0), f"{where}.min_tcb_evaluation_data_number", hi=2**32 - 1)
        return cls(frozenset(statuses), _str_list(sec, "allowed_advisories", where), min_eval)

    def check(self, claims: Claims) -> list[Refusal]:
        out: list[Refusal] = []
        if claims.tcb_status not in self.accepted_statuses:
            out.append(
                (
                    Reason.TCB_STATUS_NOT_ACCEPTED,
                    f"{claims.tee_type.value} TCB status {claims.tcb_status} is not accepted (policy accepts: {', '.join(sorted(self.accepted_statuses))})",
                )
            )
        if "*" not in self.allowed_advisories:
            bad = [a for a in claims.advisory_ids if a not in self.allowed_advisories]
            if bad:
                out.append((Reason.ADVISORY_NOT_ALLOWED, f"{claims.tee_type.value} platform is affected by advisories the policy does not allow: {', '.join(bad)}"))
        if self.min_tcb_evaluation_data_number:
            p = claims.platform
            collateral = p.collateral if isinstance(p, (SgxClaims, TdxClaims)) else None
            got = collateral.tcb_evaluation_data_number if collateral is not None else 0
            if got < self.min_tcb_evaluation_data_number:
                out.append(
                    (
                        Reason.TCB_EVALUATION_TOO_OLD,
                        f"{claims.tee_type.value} collateral has TCB evaluation data number {got}, below the policy's {self.min_tcb_evaluation_data_number}",
                    )
                )
        return out


@dataclass(frozen=True)
class SgxSigner:
    mrsigner: bytes
    isv_prod_id: int
    min_isv_svn: int = 0


@dataclass(frozen=True)
class SgxPolicy:
    mrenclaves: frozenset[bytes] = frozenset()
    signers: tuple[SgxSigner, ...] = ()
    allow_any_measurement: bool = False
    tcb: TcbPolicy = field(default_factory=TcbPolicy)

    KEYS = frozenset({"mrenclave", "signer", "allow_any_measurement"}) | TcbPolicy.KEYS

    @classmethod
    def parse(cls, sec: dict[str, Any]) -> "SgxPolicy":
        _check_keys(sec, set(cls.KEYS), "sgx")
        signers = []
        raw = sec.get("signer", [])
        if not isinstance(raw, list):
            raise ConfigError("policy sgx.signer must be an array of tables ([[sgx.signer]])")
        for i, s in enumerate(raw):
            where = f"sgx.signer[{i}]"
            if not isinstance(s, dict):
                raise ConfigError(f"policy {where} must be a table")
            _check_keys(s, {"mrsigner", "isv_prod_id", "min_isv_svn"}, where)
            if "mrsigner" not in s or "isv_prod_id" not in s:
                raise ConfigError(f"policy {where} needs mrsigner and isv_prod_id")
            signers.append(
                SgxSigner(
                    _hex(s["mrsigner"], f"{where}.mrsigner", length=32),
                    _int(s["isv_prod_id"], f"{where}.isv_prod_id", hi=0xFFFF),
                    _int(s.get("min_isv_svn", 0), f"{where}.min_isv_svn", hi=0xFFFF),
                )
            )
        mrenclaves = _hex_list(sec, "mrenclave", "sgx")
        if any(len(m) != 32 for m in mrenclaves):
            raise ConfigError("policy sgx.mrenclave: every value must be 32 bytes (64 hex digits)")
        return cls(mrenclaves, tuple(signers), _bool(sec, "allow_any_measurement", False, "sgx"), TcbPolicy.parse(sec, "sgx"))

    def check(self, claims: Claims) -> list[Refusal]:
        out = self.tcb.check(claims)
        if self.allow_any_measurement or claims.measurement in self.mrenclaves:
            return out
        p = claims.platform if isinstance(claims.platform, SgxClaims) else None
        mrsigner = p.mr_signer if p else b""
        prod, svn = (p.isv_prod_id, p.isv_svn) if p else (None, -1)
        same_signer = [s for s in self.signers if s.mrsigner == mrsigner and s.isv_prod_id == prod]
        if any(svn >= s.min_isv_svn for s in same_signer):
            return out
        if same_signer:
            need = min(s.min_isv_svn for s in same_signer)
            out.append((Reason.ISV_SVN_TOO_LOW, f"SGX enclave ISVSVN {svn} is below the policy's minimum {need} for MRSIGNER {_short(mrsigner)} ISVPRODID {prod}"))
        else:
            out.append(
                (
                    Reason.MEASUREMENT_NOT_ALLOWED,
                    f"SGX MRENCLAVE {_short(claims.measurement)} is not in the policy, nor is MRSIGNER {_short(mrsigner)} with ISVPRODID {prod}",
                )
            )
        return out


@dataclass(frozen=True)
class TdxMeasurement:
    mrtd: bytes
    rtmrs: tuple[bytes | None, bytes | None, bytes | None, bytes | None] = (None, None, None, None)  # None: any


@dataclass(frozen=True)
class TdxPolicy:
    measurements: tuple[TdxMeasurement, ...] = ()
    mrseams: frozenset[bytes] = frozenset()  # empty: any TDX module
    allow_any_measurement: bool = False
    require_sept_ve_disable: bool = False
    tcb: TcbPolicy = field(default_factory=TcbPolicy)

    KEYS = frozenset({"measurement", "mrseam", "allow_any_measurement", "require_sept_ve_disable"}) | TcbPolicy.KEYS

    @classmethod
    def parse(cls, sec: dict[str, Any]) -> "TdxPolicy":
        _check_keys(sec, set(cls.KEYS), "tdx")
        raw = sec.get("measurement", [])
        if not isinstance(raw, list):
            raise ConfigError("policy tdx.measurement must be an array of tables ([[tdx.measurement]])")
        ms = []
        for i, m in enumerate(raw):
            where = f"tdx.measurement[{i}]"
            if not isinstance(m, dict) or "mrtd" not in m:
                raise ConfigError(f"policy {where} must be a table with mrtd")
            _check_keys(m, {"mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"}, where)
            rtmrs = tuple(_hex(m[f"rtmr{j}"], f"{where}.rtmr{j}", length=48) if f"rtmr{j}" in m else None for j in range(4))
            ms.append(TdxMeasurement(_hex(m["mrtd"], f"{where}.mrtd", length=48), rtmrs))  # type: ignore[arg-type]
        return cls(
            tuple(ms),
            _hex_list(sec, "mrseam", "tdx"),
            _bool(sec, "allow_any_measurement", False, "tdx"),
            _bool(sec, "require_sept_ve_disable", False, "tdx"),
            TcbPolicy.parse(sec, "tdx"),
        )

    def check(self, claims: Claims) -> list[Refusal]:
        out = self.tcb.check(claims)
        p = claims.platform if isinstance(claims.platform, TdxClaims) else None
        mr_seam = p.mr_seam if p else b""
        if self.mrseams and mr_seam not in self.mrseams:
            out.append((Reason.MRSEAM_NOT_ALLOWED, f"TDX module MRSEAM {_short(mr_seam)} is not in the policy"))
        if self.require_sept_ve_disable and not (p and p.sept_ve_disable):
            out.append((Reason.TD_ATTRIBUTES, "TD attribute SEPT_VE_DISABLE is clear; the policy requires it"))
        if self.allow_any_measurement:
            return out
        rtmrs = list(p.rtmrs) if p else [b""] * 4
        same_mrtd = [m for m in self.measurements if m.mrtd == claims.measurement]
        for m in same_mrtd:
            if all(want is None or want == got for want, got in zip(m.rtmrs, rtmrs)):
                return out
        if same_mrtd:
            diff = sorted({f"RTMR{j}" for m in same_mrtd for j, want in enumerate(m.rtmrs) if want is not None and want != rtmrs[j]})
            out.append((Reason.MEASUREMENT_NOT_ALLOWED, f"TDX MRTD {_short(claims.measurement)} is allowed but {', '.join(diff)} differ from the policy"))
        else:
            out.append((Reason.MEASUREMENT_NOT_ALLOWED, f"TDX MRTD {_short(claims.measurement)} is not in the policy"))
        return out


@dataclass(frozen=True)
class SnpPolicy:
    measurements: frozenset[bytes] = frozenset()
    allow_any_measurement: bool = False
    min_tcb: tuple[tuple[str, int], ...] = ()
    required_policy_bits: frozenset[str] = frozenset()
    forbidden_policy_bits: frozenset[str] = frozenset({"migrate_ma"})
    host_data: frozenset[bytes] = frozenset()  # empty: any
    allowed_vmpls: frozenset[int] | None = None  # None: any
    allowed_signing_keys: frozenset[str] = frozenset({"vcek", "vlek"})
    require_crl: bool = False
    min_guest_svn: int = 0

    KEYS = frozenset(
        {
            "measurements",
            "allow_any_measurement",
            "min_tcb",
            "required_policy_bits",
            "forbidden_policy_bits",
            "host_data",
            "allowed_vmpls",
            "allowed_signing_keys",
            "require_crl",
            "min_guest_svn",
        }
    )

    @classmethod
    def parse(cls, sec: dict[str, Any]) -> "SnpPolicy":
        w = "sev-snp"
        _check_keys(sec, set(cls.KEYS), w)
        min_tcb = sec.get("min_tcb", {})
        if not isinstance(min_tcb, dict):
            raise ConfigError(f"policy {w}.min_tcb must be a table like {{ bootloader = 3, tee = 0, snp = 8, microcode = 115 }}")
        _check_keys(min_tcb, set(SNP_TCB_PARTS), f"{w}.min_tcb")
        tcb = tuple((k, _int(v, f"{w}.min_tcb.{k}", hi=255)) for k, v in sorted(min_tcb.items()))
        bits = {}
        for key in ("required_policy_bits", "forbidden_policy_bits"):
            names = _str_list(sec, key, w) if key in sec else getattr(cls, key)
            bad = sorted(set(names) - set(SNP_POLICY_BITS))
            if bad:
                raise ConfigError(f"policy {w}.{key}: unknown bit(s) {bad}; known: {', '.join(SNP_POLICY_BITS)}")
            bits[key] = frozenset(names)
        vmpls = sec.get("allowed_vmpls")
        if vmpls is not None:
            if not isinstance(vmpls, list):
                raise ConfigError(f"policy {w}.allowed_vmpls must be a list of 0..3")
            vmpls = frozenset(_int(v, f"{w}.allowed_vmpls", hi=3) for v in vmpls)
        keys = _str_list(sec, "allowed_signing_keys", w) if "allowed_signing_keys" in sec else cls.allowed_signing_keys
        if not keys <= {"vcek", "vlek"}:
            raise ConfigError(f"policy {w}.allowed_signing_keys: only vcek and vlek exist")
        measurements = _hex_list(sec, "measurements", w)
        if any(len(m) != 48 for m in measurements):
            raise ConfigError(f"policy {w}.measurements: every value must be 48 bytes (96 hex digits)")
        return cls(
            measurements=measurements,
            allow_any_measurement=_bool(sec, "allow_any_measurement", False, w),
            min_tcb=tcb,
            required_policy_bits=bits["required_policy_bits"],
            forbidden_policy_bits=bits["forbidden_policy_bits"],
            host_data=_hex_list(sec, "host_data", w),
            allowed_vmpls=vmpls,
            allowed_signing_keys=frozenset(keys),
            require_crl=_bool(sec, "require_crl", False, w),
            min_guest_svn=_int(sec.get("min_guest_svn", 0), f"{w}.min_guest_svn", hi=2**32 - 1),
        )

    def check(self, claims: Claims) -> list[Refusal]:
        out: list[Refusal] = []
        p = claims.platform if isinstance(claims.platform, SnpClaims) else None
        if p is None:
            # Fail closed: without the report's fields no rule below can be checked.
            return [(Reason.EVIDENCE_MALFORMED, "SEV-SNP claims carry no report fields")]
        if not self.allow_any_measurement and claims.measurement not in self.measurements:
            out.append((Reason.MEASUREMENT_NOT_ALLOWED, f"SEV-SNP measurement {_short(claims.measurement)} is not in the policy"))
        reported = p.reported_tcb.components()
        low = [f"{k} {reported.get(k)} < {v}" for k, v in self.min_tcb if reported.get(k) is not None and reported[k] < v]
        missing = [k for k, _ in self.min_tcb if k != "fmc" and reported.get(k) is None]
        if low or missing:
            out.append((Reason.TCB_TOO_OLD, "SEV-SNP reported TCB is below the policy's minimum: " + ", ".join(low + [f"{k} unknown" for k in missing])))
        # Fail closed: a bit the claims do not state is neither "set" nor "clear".
        for name in sorted(self.required_policy_bits | self.forbidden_policy_bits):
            value = getattr(p.policy, name, None)
            if not isinstance(value, bool):
                out.append((Reason.GUEST_POLICY, f"SEV-SNP guest policy bit {name} is not stated by the claims; the policy needs it known"))
            elif name in self.required_policy_bits and not value:
                out.append((Reason.GUEST_POLICY, f"SEV-SNP guest policy bit {name} is clear; the policy requires it"))
            elif name in self.forbidden_policy_bits and value:
                out.append((Reason.GUEST_POLICY, f"SEV-SNP guest policy bit {name} is set; the policy forbids it"))
        if self.host_data and p.host_data not in self.host_data:
            out.append((Reason.HOST_DATA_NOT_ALLOWED, f"SEV-SNP HOST_DATA {p.host_data.hex()[:16]}… is not in the policy"))
        if self.allowed_vmpls is not None and p.vmpl not in self.allowed_vmpls:
            out.append((Reason.VMPL_NOT_ALLOWED, f"SEV-SNP report was requested at VMPL {p.vmpl}; the policy allows {sorted(self.allowed_vmpls)}"))
        if p.signing_key not in self.allowed_signing_keys:
            out.append((Reason.SIGNING_KEY_NOT_ALLOWED, f"SEV-SNP report is signed by a {p.signing_key}; the policy allows {sorted(self.allowed_signing_keys)}"))
        if self.require_crl and not p.crl_checked:
            out.append((Reason.CRL_NOT_CHECKED, "no current AMD CRL was available to check revocation; the policy requires one"))
        if p.guest_svn < self.min_guest_svn:
            out.append((Reason.GUEST_SVN_TOO_LOW, f"SEV-SNP guest SVN {p.guest_svn} is below the policy's minimum {self.min_guest_svn}"))
        return out


@dataclass(frozen=True)
class NvidiaPolicy:
    measurements: frozenset[bytes] = frozenset()  # SHA-384 digests over all blocks (Claims.measurement)
    golden: tuple[tuple[int, frozenset[bytes]], ...] = ()  # block index -> allowed values
    allow_any_measurement: bool = False
    allowed_driver_versions: frozenset[str] = frozenset()  # empty: any
    allowed_vbios_versions: frozenset[str] = frozenset()
    require_ocsp: bool = True

    KEYS = frozenset({"measurements", "golden", "allow_any_measurement", "allowed_driver_versions", "allowed_vbios_versions", "require_ocsp"})

    @classmethod
    def parse(cls, sec: dict[str, Any]) -> "NvidiaPolicy":
        w = "nvidia"
        _check_keys(sec, set(cls.KEYS), w)
        golden_raw = sec.get("golden", {})
        if not isinstance(golden_raw, dict):
            raise ConfigError(f"policy {w}.golden must be a table of block index = [hex values]")
        golden = []
        for k, v in sorted(golden_raw.items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit() else -1):
            if not str(k).isdigit() or not 1 <= int(k) <= 255:
                raise ConfigError(f"policy {w}.golden: key {k!r} must be a measurement block index 1..255")
            if isinstance(v, str):
                v = [v]
            golden.append((int(k), _hex_list({"v": v}, "v", f"{w}.golden.{k}")))
        return cls(
            measurements=_hex_list(sec, "measurements", w),
            golden=tuple(golden),
            allow_any_measurement=_bool(sec, "allow_any_measurement", False, w),
            allowed_driver_versions=_str_list(sec, "allowed_driver_versions", w),
            allowed_vbios_versions=_str_list(sec, "allowed_vbios_versions", w),
            require_ocsp=_bool(sec, "require_ocsp", True, w),
        )

    def check(self, claims: Claims) -> list[Refusal]:
        out: list[Refusal] = []
        p = claims.platform if isinstance(claims.platform, NvidiaClaims) else None
        chain = p.chain if p else None
        if self.require_ocsp and (chain is None or chain.ocsp != "good"):
            status = chain.ocsp if chain else "unknown"
            out.append((f"ocsp-{status}", f"NVIDIA certificate revocation not established ({status}: {chain.ocsp_detail if chain else ''}); the policy requires OCSP"))
        driver, vbios = (p.driver_version, p.vbios_version) if p else (None, None)
        if self.allowed_driver_versions and driver not in self.allowed_driver_versions:
            out.append((Reason.DRIVER_VERSION_NOT_ALLOWED, f"NVIDIA driver {driver} is not in the policy"))
        if self.allowed_vbios_versions and vbios not in self.allowed_vbios_versions:
            out.append((Reason.VBIOS_VERSION_NOT_ALLOWED, f"NVIDIA VBIOS {vbios} is not in the policy"))
        if self.allow_any_measurement or claims.measurement in self.measurements:
            return out
        if self.golden:
            bad = [str(i) for i, allowed in self.golden if (p.measurement(i) if p else None) not in allowed]
            if not bad:
                return out
            out.append((Reason.MEASUREMENT_NOT_ALLOWED, f"NVIDIA measurement block(s) {', '.join(bad)} differ from the policy's golden values"))
        else:
            out.append((Reason.MEASUREMENT_NOT_ALLOWED, f"NVIDIA measurement digest {_short(claims.measurement)} is not in the policy"))
        return out


# --- the policy --------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    max_evidence_age_seconds: float = 120.0
    allow_debug: bool = False
    simulated: SimulatedPolicy = field(default_factory=SimulatedPolicy)
    sgx: SgxPolicy | None = None
    tdx: TdxPolicy | None = None
    sev_snp: SnpPolicy | None = None
    nvidia: NvidiaPolicy | None = None
    releases: ReleasePolicy = field(default_factory=ReleasePolicy)  # builds must be published on chain (releases.py)

    @classmethod
    def from_toml(cls, text: str, *, source: str = "policy") -> "Policy":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{source}: not valid TOML: {e}") from None
        try:
            return cls.from_mapping(data)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path: str | Path) -> "Policy":
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise ConfigError(f"cannot read policy file {p}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"policy file {p} is not UTF-8 text") from None
        return cls.from_toml(text, source=str(p))

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> "Policy":
        if not isinstance(data, dict):
            raise ConfigError("policy must be a table of sections")
        # A misspelt section or key must never be dropped silently: it may be the rule the operator meant.
        _check_keys(data, set(SECTIONS), "the policy's sections")
        general = _section(data, "general") or {}
        _check_keys(general, {"max_evidence_age_seconds", "allow_debug"}, "general")
        sim = _section(data, "simulated") or {}
        _check_keys(sim, {"allow", "trusted_keys", "measurements"}, "simulated")
        if not isinstance(general.get("allow_debug", False), bool) or not isinstance(sim.get("allow", False), bool):
            raise ConfigError("policy general.allow_debug and simulated.allow must be true or false")
        sgx, tdx, nv = _section(data, "sgx"), _section(data, "tdx"), _section(data, "nvidia")
        snp = _section(data, "sev-snp")
        if snp is None:
            snp = _section(data, "sev_snp")
        try:
            max_age = float(general.get("max_evidence_age_seconds", 120.0))
        except (TypeError, ValueError):
            raise ConfigError("policy general.max_evidence_age_seconds must be a number") from None
        return cls(
            max_evidence_age_seconds=max_age,
            allow_debug=bool(general.get("allow_debug", False)),
            simulated=SimulatedPolicy(
                allow=bool(sim.get("allow", False)),
                trusted_keys=_hex_list(sim, "trusted_keys", "simulated"),
                measurements=_hex_list(sim, "measurements", "simulated"),
            ),
            sgx=SgxPolicy.parse(sgx) if sgx is not None else None,
            tdx=TdxPolicy.parse(tdx) if tdx is not None else None,
            sev_snp=SnpPolicy.parse(snp) if snp is not None else None,
            nvidia=NvidiaPolicy.parse(nv) if nv is not None else None,
            releases=ReleasePolicy.parse(rel) if (rel := _section(data, "releases")) is not None else ReleasePolicy(),
        )

    def refuses_unread(self, tee_type: TeeType) -> Refusal | None:
        """The refusal of any evidence of ``tee_type``, whatever it holds: this policy has no rules for that type (or
        refuses simulated evidence). Decided before the evidence is verified, so that evidence the policy could
        never accept costs no verification and sends the verifier to no vendor for collateral."""
        if tee_type is TeeType.SIMULATED:
            return None if self.simulated.allow else (Reason.SIMULATED_NOT_ALLOWED, "simulated evidence is not accepted by this policy (only on a local network)")
        section = {TeeType.SGX: self.sgx, TeeType.TDX: self.tdx, TeeType.SEV_SNP: self.sev_snp, TeeType.NVIDIA: self.nvidia}.get(tee_type)
        return None if section is not None else (Reason.UNSUPPORTED_TEE, f"this policy has no rules for {tee_type.value} evidence")

    def check(self, claims: Claims, *, now: float) -> list[Refusal]:
        """Every reason ``claims`` (and its attached claims) fail this policy."""
        reasons: list[Refusal] = []
        if claims.debug and not self.allow_debug:
            reasons.append((Reason.DEBUG_ENCLAVE, f"{claims.tee_type.value} evidence comes from a debug enclave"))
        if claims.issued_at is not None:
            age = now - claims.issued_at
            if age > self.max_evidence_age_seconds:
                reasons.append((Reason.STALE_EVIDENCE, f"evidence is {age:.0f}s old (policy allows {self.max_evidence_age_seconds:.0f}s)"))
            elif age < -5.0:
                reasons.append((Reason.STALE_EVIDENCE, f"evidence is dated {-age:.0f}s in the future"))
        section = {
            TeeType.SGX: self.sgx,
            TeeType.TDX: self.tdx,
            TeeType.SEV_SNP: self.sev_snp,
            TeeType.NVIDIA: self.nvidia,
        }
        if claims.tee_type is TeeType.SIMULATED:
            reasons.extend(self._check_simulated(claims))
        elif section.get(claims.tee_type) is not None:
            reasons.extend(section[claims.tee_type].check(claims))  # type: ignore[union-attr]
        else:
            reasons.append((Reason.UNSUPPORTED_TEE, f"this policy has no rules for {claims.tee_type.value} evidence"))
        for sub in claims.attached:
            reasons.extend(self.check(sub, now=now))
        return reasons

    def _check_simulated(self, claims: Claims) -> list[Refusal]:
        if not self.simulated.allow:
            return [(Reason.SIMULATED_NOT_ALLOWED, "simulated evidence is not accepted by this policy (only on a local network)")]
        if claims.measurement not in self.simulated.measurements:
            return [(Reason.MEASUREMENT_NOT_ALLOWED, f"measurement {claims.measurement.hex()[:16]}… is not in the policy's allow-list")]
        return []


def inspection_policy(*, allow_debug: bool = False) -> Policy:
    """The policy ``omron-tee evidence verify`` uses without ``--policy``.

    Any measurement is accepted (the command shows it for the operator to
    judge); everything else is as strict as a default production policy:
    Intel TCB UpToDate with no advisory, debug refused, NVIDIA revocation
    required. It is not meant for validators.
    """
    return Policy(
        allow_debug=allow_debug,
        sgx=SgxPolicy(allow_any_measurement=True),
        tdx=TdxPolicy(allow_any_measurement=True),
        sev_snp=SnpPolicy(allow_any_measurement=True),
        nvidia=NvidiaPolicy(allow_any_measurement=True),
    )


def simulated_policy_toml(policy: Policy) -> str:
    """A policy file accepting ``policy``'s simulated enclaves (development networks only)."""
    keys = ", ".join(f'"{k.hex()}"' for k in sorted(policy.simulated.trusted_keys))
    meas = ", ".join(f'"{m.hex()}"' for m in sorted(policy.simulated.measurements))
    return (
        "# Attestation policy of this local network (development only).\n"
        f"[general]\nmax_evidence_age_seconds = {policy.max_evidence_age_seconds:g}\nallow_debug = false\n\n"
        f"[simulated]\nallow = true\ntrusted_keys = [{keys}]\nmeasurements = [{meas}]\n"
        + (f"\n# Builds earn only once published on chain by {policy.releases.publisher} at least {policy.releases.min_age_blocks} blocks earlier.\n"
           f"[releases]\nrequire_published = true\npublisher = \"{policy.releases.publisher}\"\nmin_age_blocks = {policy.releases.min_age_blocks}\n"
           if policy.releases.require_published else "")
    )

"""The attestation policy: which verified evidence a validator or client accepts.

Loaded from one TOML file (see docs/POLICY.md). Sections:

``[general]``
    ``max_evidence_age_seconds`` (evidence carrying a timestamp older than
    this is stale) and ``allow_debug`` (debug enclaves; local development only).
``[simulated]``
    ``allow`` (simulated evidence at all: never on test/finney),
    ``trusted_keys`` (hex raw Ed25519 development attestation keys) and
    ``measurements`` (hex allow-list of trusted-app builds).

The checks return every reason they refuse, as (code, message) pairs.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omron_tee.attestation.evidence import Claims, TeeType
from omron_tee.errors import ConfigError

Reason = tuple[str, str]


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


@dataclass(frozen=True)
class SimulatedPolicy:
    allow: bool = False
    trusted_keys: frozenset[bytes] = frozenset()
    measurements: frozenset[bytes] = frozenset()


@dataclass(frozen=True)
class Policy:
    max_evidence_age_seconds: float = 120.0
    allow_debug: bool = False
    simulated: SimulatedPolicy = field(default_factory=SimulatedPolicy)

    @classmethod
    def from_toml(cls, text: str, *, source: str = "policy") -> "Policy":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{source}: not valid TOML: {e}") from None
        return cls.from_mapping(data)

    @classmethod
    def load(cls, path: str | Path) -> "Policy":
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise ConfigError(f"cannot read policy file {p}: {e.strerror}") from None
        return cls.from_toml(text, source=str(p))

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> "Policy":
        general = data.get("general", {})
        sim = data.get("simulated", {})
        return cls(
            max_evidence_age_seconds=float(general.get("max_evidence_age_seconds", 120.0)),
            allow_debug=bool(general.get("allow_debug", False)),
            simulated=SimulatedPolicy(
                allow=bool(sim.get("allow", False)),
                trusted_keys=_hex_list(sim, "trusted_keys", "simulated"),
                measurements=_hex_list(sim, "measurements", "simulated"),
            ),
        )

    def check(self, claims: Claims, *, now: float) -> list[Reason]:
        """Every reason ``claims`` (and its attached claims) fail this policy."""
        reasons: list[Reason] = []
        if claims.debug and not self.allow_debug:
            reasons.append(("debug-enclave", f"{claims.tee_type.value} evidence comes from a debug enclave"))
        if claims.issued_at is not None:
            age = now - claims.issued_at
            if age > self.max_evidence_age_seconds:
                reasons.append(("stale-evidence", f"evidence is {age:.0f}s old (policy allows {self.max_evidence_age_seconds:.0f}s)"))
            elif age < -5.0:
                reasons.append(("stale-evidence", f"evidence is dated {-age:.0f}s in the future"))
        if claims.tee_type is TeeType.SIMULATED:
            reasons.extend(self._check_simulated(claims))
        else:
            reasons.append(("unsupported-tee", f"this policy has no rules for {claims.tee_type.value} evidence"))
        for sub in claims.attached:
            reasons.extend(self.check(sub, now=now))
        return reasons

    def _check_simulated(self, claims: Claims) -> list[Reason]:
        if not self.simulated.allow:
            return [("simulated-not-allowed", "simulated evidence is not accepted by this policy (only on a local network)")]
        if claims.measurement not in self.simulated.measurements:
            return [("measurement-not-allowed", f"measurement {claims.measurement.hex()[:16]}… is not in the policy's allow-list")]
        return []

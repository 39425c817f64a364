"""Conformance vectors: cases of evidence, collateral, policy, time, binding and releases with the verdict
any verifier must reach, and the runner that checks ours (``omron-tee conformance run``).

A folder ``conformance/v<N>/`` holds ``manifest.json`` (``{"version": N, "cases": [file, ...]}``)
and one JSON file per case (the format is in that folder's README):

``evidence``     ``{"file": PATH, "type": TEE, "certs": PATH?, "flip": [OFFSET, ...]?}`` raw bytes (or an
                 NVIDIA hex report), bit 0 of each listed byte flipped; or ``{"json": PATH}`` (Evidence JSON)
``collateral``   [PATH, ...] loaded into an empty, offline store (nothing is fetched, no cache is read)
``policy``       PATH to a policy TOML
``now``          RFC 3339
``binding``      ``{"report_data": HEX}``, or ``{"nonce": HEX, "hotkey": SS58, "kem": ..., "hpke_public": HEX,
                 "signing_public": HEX}`` (the exchange's binding, ``attestation.binding.report_data_for``)
``releases``     optional ``{"publisher": SS58, "block": N, "published": [{"tee", "measurement", "label", "block"}]}``
``expect``       ``{"accepted": BOOL, "reasons": [REASON, ...]}``: the set of named reasons, every one

A PATH is relative to the case's folder, or ``shared:REL`` for the published real evidence in
``../shared/testvectors`` (not copied into this project: its licence is its publishers'). The
verdict is ``appraise_bound``'s: a pure function of those inputs and this release's trust roots.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omron_tee import untrusted
from omron_tee.attestation.binding import EnclavePublicKeys, report_data_for
from omron_tee.attestation.evidence import Evidence, TeeType
from omron_tee.attestation.validate.appraise import appraise_bound
from omron_tee.attestation.validate.policy import Policy
from omron_tee.attestation.validate.releases import PublishedRelease, Release, ReleaseLog
from omron_tee.errors import ConfigError, OmronTeeError

VERSION = 1


@dataclass(frozen=True)
class CaseResult:
    name: str
    passed: bool
    expected_accepted: bool
    expected_reasons: tuple[str, ...]
    accepted: bool
    reasons: tuple[str, ...]
    messages: tuple[str, ...]
    error: str | None = None  # the case itself could not be read


def _path(ref: str, folder: Path, shared: Path | None) -> Path:
    if ref.startswith("shared:"):
        if shared is None:
            raise ConfigError("this case needs the shared test vectors: pass --shared PATH")
        return shared / ref.removeprefix("shared:")
    return folder / ref


def _read(ref: str, folder: Path, shared: Path | None) -> bytes:
    p = _path(ref, folder, shared)
    try:
        return p.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {p}: {e.strerror}") from None


def _time(text: str) -> float:
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        raise ConfigError(f"now {text!r} is not RFC 3339") from None
    return (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).timestamp()


def load_evidence(spec: dict[str, Any], folder: Path, shared: Path | None) -> Evidence:
    from omron_tee.attestation.abi import nvidia as nv_abi

    if "json" in spec:
        return Evidence.from_json(untrusted.loads(_read(spec["json"], folder, shared), "evidence JSON"))
    tee = TeeType(spec["type"])
    raw = _read(spec["file"], folder, shared)
    if tee is TeeType.NVIDIA and raw.strip()[:4].lower() == b"11e0":
        raw = nv_abi.decode_report_text(raw.strip())
    data = bytearray(raw)
    for offset in spec.get("flip", []):
        data[int(offset)] ^= 0x01
    certs = _read(spec["certs"], folder, shared) if spec.get("certs") else b""
    return Evidence(tee, bytes(data), certs)


def _binding(spec: dict[str, Any]) -> bytes:
    if "report_data" in spec:
        return bytes.fromhex(spec["report_data"])
    keys = EnclavePublicKeys(spec["kem"], bytes.fromhex(spec["hpke_public"]), bytes.fromhex(spec["signing_public"]))
    return report_data_for(bytes.fromhex(spec["nonce"]), keys, spec["hotkey"])


def _releases(spec: dict[str, Any] | None) -> ReleaseLog | None:
    if spec is None:
        return None
    published = tuple(PublishedRelease(Release(TeeType(p["tee"]), bytes.fromhex(p["measurement"]), p["label"]), int(p["block"]), spec["publisher"])
                      for p in spec["published"])
    return ReleaseLog(spec["publisher"], int(spec["block"]), published)


def run_case(path: Path, *, shared: Path | None) -> CaseResult:
    """Judge one case file and compare with its expected verdict (never raises for a bad case: it fails, named)."""
    from omron_tee.attestation.collateral.store import CollateralStore
    from omron_tee.attestation.defaults import default_registry

    name = path.stem
    try:
        case = json.loads(path.read_text())
        name = str(case.get("name", name))
        folder = path.parent
        expect = case["expect"]
        policy = Policy.load(_path(case["policy"], folder, shared))
        store = CollateralStore()  # in memory, offline: the case's collateral and nothing else
        for ref in case.get("collateral", []):
            store.load_path(_path(ref, folder, shared))
        registry = default_registry(simulated_keys=list(policy.simulated.trusted_keys), collateral=store)
        verdict = appraise_bound(load_evidence(case["evidence"], folder, shared), report_data=_binding(case["binding"]), policy=policy,
                                 registry=registry, now=_time(case["now"]), releases=_releases(case.get("releases")))
    except (OmronTeeError, KeyError, TypeError, ValueError, OSError) as e:
        return CaseResult(name, False, False, (), False, (), (), error=f"{type(e).__name__}: {e}")
    want = tuple(sorted(set(expect["reasons"])))
    got = tuple(sorted(set(verdict.reason_codes)))
    return CaseResult(name, verdict.accepted == bool(expect["accepted"]) and got == want, bool(expect["accepted"]), want, verdict.accepted, got,
                      verdict.reasons)


def run_folder(folder: Path, *, shared: Path | None) -> list[CaseResult]:
    """Every case the folder's manifest lists, in order."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{folder}/manifest.json cannot be read: {e}") from None
    if manifest.get("version") != VERSION:
        raise ConfigError(f"{folder} holds conformance vectors of version {manifest.get('version')!r}; this runner reads version {VERSION}")
    return [run_case(folder / name, shared=shared) for name in manifest["cases"]]

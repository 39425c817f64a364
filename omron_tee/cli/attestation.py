"""``omron-tee evidence verify`` and ``omron-tee collateral export|import|fetch|list``.

``register(subparsers)`` adds both groups to the top-level parser. Every
handler returns an exit status (0 only when the evidence is accepted, or the
collateral command succeeded; 1 when rejected; 2 for a user mistake) and
prints one line on stderr for bad input, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

from omron_tee.attestation.abi import dcap_common, nvidia as nv_abi, simulated as sim_abi, snp as snp_abi
from omron_tee.attestation.evidence import Claims, Evidence, TeeType
from omron_tee import untrusted
from omron_tee.errors import LIBRARY_DECODE_ERRORS, AttestationError, ConfigError, OmronTeeError, ParseError, ProtocolError
from omron_tee.reasons import Reason

TYPES = ("auto", "sgx", "tdx", "sev-snp", "nvidia", "simulated")


def register(subparsers: Any) -> None:
    ev = subparsers.add_parser("evidence", help="attestation evidence", description="Inspect and judge attestation evidence.")
    es = ev.add_subparsers(dest="evidence_cmd", required=True)
    v = es.add_parser(
        "verify",
        help="verify evidence and judge it against a policy",
        description="Verify attestation evidence (signatures, certificate chains, collateral) and judge the claims against a "
        "policy. Exit status 0 only when accepted. Without --policy, any measurement is accepted but debug, Intel TCB "
        "statuses other than UpToDate, and NVIDIA chains without current OCSP responses are refused.",
    )
    v.add_argument("file", help="evidence: raw quote/report bytes, NVIDIA hex report, or Evidence JSON")
    v.add_argument("--type", choices=TYPES, default="auto", help="evidence type (default: detect)")
    v.add_argument("--policy", help="policy file (TOML, see docs/POLICY.md)")
    v.add_argument(
        "--collateral",
        action="append",
        default=[],
        metavar="FILE|DIR|URL",
        help="collateral: Intel QuoteCollateralV3 JSON, a bundle, a directory (AMD VCEK and ASK/ARK, CRLs, OCSP responses), "
        "or a PCCS/PCS/KDS URL to fetch from; repeatable. Default: the local cache, offline",
    )
    v.add_argument("--certs", help="certificates handed out with the evidence (SEV-SNP VCEK or cert table, NVIDIA chain)")
    v.add_argument("--now", help="verification time, RFC 3339 (default: now)")
    v.add_argument("--report-data", help="require exactly this report data (hex)")
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.set_defaults(handler=cmd_evidence_verify)

    co = subparsers.add_parser("collateral", help="attestation collateral cache", description="Carry attestation collateral to air-gapped validators.")
    cs = co.add_subparsers(dest="collateral_cmd", required=True)
    ex = cs.add_parser("export", help="write the cache as one bundle file")
    ex.add_argument("out", help="bundle file to write")
    ex.add_argument("--dir", help="collateral cache directory (default: $OMRON_TEE_COLLATERAL_DIR or ~/.cache/omron-tee/collateral)")
    ex.set_defaults(handler=cmd_collateral_export)
    im = cs.add_parser("import", help="add a bundle, or collateral files/directories, to the cache")
    im.add_argument("sources", nargs="+", help="bundle file, Intel collateral JSON, or directory of certificates/CRLs/OCSP responses")
    im.add_argument("--dir", help="collateral cache directory (default as for export)")
    im.set_defaults(handler=cmd_collateral_import)
    fe = cs.add_parser(
        "fetch",
        help="fetch the collateral some evidence needs into the cache (on a connected machine)",
        description="Fetch, into the cache, the collateral that verifying the given evidence needs (Intel TCB info, QE "
        "identity and CRLs for its platform; the VCEK, chain and CRL of an AMD chip; OCSP responses for a GPU's chain), then "
        "export it with 'collateral export' for air-gapped validators.",
    )
    fe.add_argument("files", nargs="+", help="evidence files (as for 'evidence verify')")
    fe.add_argument("--type", choices=TYPES, default="auto", help="the evidence's TEE type (default: recognised from the bytes)")
    fe.add_argument("--certs", help="certificates handed out with the evidence")
    fe.add_argument("--dir", help="collateral cache directory (default as for export)")
    fe.add_argument("--pccs-url", help="Intel PCS or PCCS base URL (default: Intel PCS, or $OMRON_TEE_PCCS_URL)")
    fe.add_argument("--kds-url", help="AMD KDS base URL (default: https://kdsintf.amd.com)")
    fe.add_argument("--ocsp-url", help="NVIDIA OCSP responder URL")
    fe.add_argument("--now", help="judge expiry at this time, RFC 3339")
    fe.set_defaults(handler=cmd_collateral_fetch)
    ls = cs.add_parser("list", help="list the cache's entries")
    ls.add_argument("--dir", help="collateral cache directory (default as for export)")
    ls.add_argument("--now", help="judge expiry at this time, RFC 3339")
    ls.set_defaults(handler=cmd_collateral_list)


# --- helpers -----------------------------------------------------------------


def _err(message: str) -> int:
    print(f"omron-tee: error: {message}", file=sys.stderr)
    return 2


def parse_time(value: str) -> float:
    try:
        t = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--now {value!r} is not an RFC 3339 time such as 2025-06-19T10:57:11Z") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.timestamp()


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from None


def detect_type(data: bytes) -> TeeType:
    """The TEE type of raw evidence bytes (ParseError when none fits)."""
    if dcap_common.looks_like_dcap_quote(data):
        return TeeType.TDX if dcap_common.peek_version_and_tee(data)[1] == dcap_common.TEE_TYPE_TDX else TeeType.SGX
    if data.startswith(sim_abi.MAGIC):
        return TeeType.SIMULATED
    if snp_abi.REPORT_LEN <= len(data) <= snp_abi.MAX_DELIVERED_LEN and int.from_bytes(data[:4], "little") in snp_abi.SUPPORTED_VERSIONS:
        return TeeType.SEV_SNP
    if data[:2] == bytes([nv_abi.SPDM_VERSION_1_1, nv_abi.GET_MEASUREMENTS]):
        return TeeType.NVIDIA
    raise ParseError("evidence", "type", "cannot tell the evidence type (not a DCAP quote, SEV-SNP report, NVIDIA SPDM report or simulated report); use --type")


def load_evidence(path: str, kind: str, certs_path: str | None) -> Evidence:
    data = _read(path, "evidence")
    stripped = data.strip()
    if stripped.startswith(b"{"):
        try:
            ev = Evidence.from_json(untrusted.loads(stripped, "evidence JSON"))
        except ProtocolError as e:
            raise ConfigError(f"{path}: not Evidence JSON ({e})") from None
        if kind not in ("auto", ev.tee_type.value):
            raise ConfigError(f"{path} holds {ev.tee_type.value} evidence, not {kind}")
    else:
        is_hex = stripped[:4].lower() == b"11e0" and all(c in b"0123456789abcdefABCDEF \r\n\t" for c in stripped)
        if kind == "nvidia" or (kind == "auto" and is_hex):
            raw = nv_abi.decode_report_text(stripped) if is_hex else data
        else:
            raw = data
        tee = detect_type(raw) if kind == "auto" else TeeType(kind)
        ev = Evidence(tee, raw)
    if certs_path:
        ev = Evidence(ev.tee_type, ev.quote, _read(certs_path, "certificates"), ev.attached)
    return ev


def build_store(sources: list[str], tee: TeeType):
    from omron_tee.attestation.collateral.amd import AmdKdsClient
    from omron_tee.attestation.collateral.intel import IntelPcsClient
    from omron_tee.attestation.collateral.nvidia import NvidiaCollateralClient
    from omron_tee.attestation.collateral.store import CollateralStore
    from omron_tee.attestation.defaults import default_collateral_dir

    if not sources:
        return CollateralStore(default_collateral_dir())  # the local cache, never fetching
    store = CollateralStore()
    for src in sources:
        if src.startswith(("http://", "https://")):
            if tee in (TeeType.SGX, TeeType.TDX):
                store.intel_client = IntelPcsClient(src)
            elif tee is TeeType.SEV_SNP:
                store.amd_client = AmdKdsClient(src)
            elif tee is TeeType.NVIDIA:
                store.nvidia_client = NvidiaCollateralClient(ocsp_url=src)
            continue
        if not Path(src).exists():
            raise ConfigError(f"--collateral {src}: no such file or directory")
        store.load_path(src)
    return store


def _verifier_for(registry: Any, tee: TeeType) -> Any:
    return registry._by_type.get(tee)  # noqa: SLF001 - same package


def judge(evidence: Evidence, *, policy: Any, store: Any, now: float, report_data: bytes | None) -> dict[str, Any]:
    """Verify and judge; the JSON result (never raises for bad evidence)."""
    from omron_tee.attestation.defaults import default_registry

    registry = default_registry(simulated_keys=list(policy.simulated.trusted_keys), collateral=store)
    reasons: list[tuple[str, str]] = []
    claims: Claims | None = None
    verified = False
    try:
        claims = registry.verify(evidence, now=now)
        verified = True
    except ParseError as e:
        reasons.append((e.reason, str(e)))
    except (AttestationError, *LIBRARY_DECODE_ERRORS) as e:
        if isinstance(e, AttestationError):
            reasons.append((e.reason, str(e)))
        else:  # a library meeting bytes it did not expect: refused, never a traceback
            reasons.append((Reason.EVIDENCE_MALFORMED, f"{evidence.tee_type.value} evidence cannot be read ({type(e).__name__}: {str(e)[:160]})"))
        verifier = _verifier_for(registry, evidence.tee_type)
        if verifier is not None and hasattr(verifier, "describe"):
            try:
                claims = verifier.describe(evidence)
            except (AttestationError, *LIBRARY_DECODE_ERRORS):
                claims = None
    if verified and claims is not None:
        reasons.extend(policy.check(claims, now=now))
    if report_data is not None and claims is not None and claims.report_data != report_data:
        reasons.append((Reason.REPORT_DATA_MISMATCH, f"report data is {claims.report_data.hex()}, expected {report_data.hex()}"))
    out: dict[str, Any] = {
        "tee_type": evidence.tee_type.value,
        "verdict": "accepted" if verified and not reasons else "rejected",
        "verified": verified,
        "reasons": [m for _, m in reasons],
        "reason_codes": [c for c, _ in reasons],
        "verified_at": _iso(now),
        "measurement": claims.measurement.hex() if claims else None,
        "report_data": claims.report_data.hex() if claims else None,
        "tcb_status": claims.tcb_status if claims else None,
        "advisory_ids": list(claims.advisory_ids) if claims else [],
        "debug": claims.debug if claims else None,
        "details": claims.details if claims else {},
        "attached": [c.to_json() for c in claims.attached] if claims else [],
    }
    return out


def _print_human(out: dict[str, Any]) -> None:
    print(f"{out['tee_type']} evidence: {out['verdict'].upper()}" + ("" if out["verified"] else " (not verified)"))
    for key in ("measurement", "report_data", "tcb_status", "advisory_ids", "debug"):
        if out[key] not in (None, []):
            print(f"  {key}: {', '.join(out[key]) if isinstance(out[key], list) else out[key]}")
    for k, v in out["details"].items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items()) if len(v) <= 12 else f"{len(v)} entries"
        print(f"  {k}: {v}")
    for r in out["reasons"]:
        print(f"  refused: {r}")


# --- handlers ----------------------------------------------------------------


def cmd_evidence_verify(args: argparse.Namespace) -> int:
    from omron_tee.attestation.validate.policy import Policy, inspection_policy

    try:
        policy = Policy.load(args.policy) if args.policy else inspection_policy()
        evidence = load_evidence(args.file, args.type, args.certs)
        now = parse_time(args.now) if args.now else time.time()
        expected = None
        if args.report_data:
            try:
                expected = bytes.fromhex(args.report_data.removeprefix("0x"))
            except ValueError:
                raise ConfigError(f"--report-data {args.report_data!r} is not hex") from None
        store = build_store(args.collateral, evidence.tee_type)
    except ParseError as e:
        return _err(str(e))
    except OmronTeeError as e:
        return _err(str(e))
    out = judge(evidence, policy=policy, store=store, now=now, report_data=expected)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        _print_human(out)
    return 0 if out["verdict"] == "accepted" else 1


def _store_dir(args: argparse.Namespace) -> Path:
    from omron_tee.attestation.defaults import default_collateral_dir

    return Path(args.dir) if args.dir else default_collateral_dir()


def cmd_collateral_export(args: argparse.Namespace) -> int:
    from omron_tee.attestation.collateral import bundle
    from omron_tee.attestation.collateral.store import CollateralStore

    try:
        root = _store_dir(args)
        if not root.is_dir():
            raise ConfigError(f"no collateral cache at {root}")
        store = CollateralStore(root)
        data = bundle.export(store)
        Path(args.out).write_bytes(data)
    except OSError as e:
        return _err(f"cannot write {args.out}: {e.strerror}")
    except OmronTeeError as e:
        return _err(str(e))
    n = sum(1 for _ in store.files())
    print(f"exported {n} collateral entries from {root} to {args.out}")
    return 0


def cmd_collateral_import(args: argparse.Namespace) -> int:
    from omron_tee.attestation.collateral import bundle
    from omron_tee.attestation.collateral.store import CollateralStore

    root = _store_dir(args)
    try:
        store = CollateralStore(root)
        imported: list[str] = []
        skipped: list[str] = []
        rejected: list[str] = []
        for src in args.sources:
            p = Path(src)
            if not p.exists():
                raise ConfigError(f"{src}: no such file or directory")
            if p.is_file() and bundle.is_bundle(p.read_bytes()[:4096]):
                rep = store.import_bundle(bundle.parse(p.read_bytes()), persist=True)
                imported += rep.imported
                skipped += rep.skipped
                rejected += rep.rejected
            else:
                imported += store.load_path(p, persist=True)
    except OSError as e:
        return _err(f"cannot write to {root}: {e.strerror}")
    except OmronTeeError as e:
        return _err(str(e))
    for x in imported:
        print(f"imported {x}")
    for x in skipped:
        print(f"kept     {x}")
    for x in rejected:
        print(f"rejected {x}", file=sys.stderr)
    print(f"{len(imported)} imported, {len(skipped)} kept, {len(rejected)} rejected into {root}")
    return 1 if rejected else 0


def cmd_collateral_fetch(args: argparse.Namespace) -> int:
    from omron_tee.attestation.defaults import default_registry, default_store

    try:
        now = parse_time(args.now) if args.now else time.time()
        root = _store_dir(args)
        evidence = [load_evidence(f, args.type, args.certs) for f in args.files]
        store = default_store(root, fetch=True, pccs_url=args.pccs_url, kds_url=args.kds_url, nvidia_ocsp_url=args.ocsp_url)
    except OmronTeeError as e:
        return _err(str(e))
    before = {rel for rel, _ in store.files()}
    registry = default_registry(collateral=store)
    failed = 0
    for path, ev in zip(args.files, evidence):
        try:
            registry.verify(ev, now=now)
            print(f"{path}: {ev.tee_type.value} evidence verifies with the cached collateral")
        except AttestationError as e:
            failed += e.reason in (Reason.COLLATERAL_MISSING, Reason.COLLATERAL_UNAVAILABLE)
            print(f"{path}: {ev.tee_type.value} evidence does not verify: {e}")
    for rel, _ in store.files():
        if rel not in before:
            print(f"fetched {rel}")
    return 1 if failed else 0


def cmd_collateral_list(args: argparse.Namespace) -> int:
    from omron_tee.attestation.collateral.intel import IntelCollateral
    from omron_tee.attestation.collateral.store import CollateralStore

    try:
        now = parse_time(args.now) if args.now else time.time()
        root = _store_dir(args)
        store = CollateralStore(root)
    except OmronTeeError as e:
        return _err(str(e))
    n = 0
    for rel, data in store.files():
        note = ""
        if rel.startswith("intel/"):
            c = IntelCollateral.from_json(data)
            note = f"expires {_iso(c.expires_at)}" + (" (EXPIRED)" if c.expired(now) else "")
        print(f"{rel} {note}".rstrip())
        n += 1
    print(f"{n} entries in {root}")
    return 0

"""``omron-tee conformance run``: check this verifier against a folder of conformance vectors (``attestation.conformance``).

    omron-tee conformance run conformance/v1 --shared ../shared/testvectors

Exit status 0 when every case reaches its expected verdict, 1 when one does not, 2 for a mistake.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from omron_tee.errors import OmronTeeError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("conformance", help="run attestation conformance vectors", description="Attestation conformance vectors.")
    s = p.add_subparsers(dest="conformance_cmd", required=True, metavar="SUBCOMMAND")
    r = s.add_parser("run", help="judge every case of a vectors folder and compare with its expected verdict",
                     description="Judge each case (evidence, collateral, policy, time, binding, releases) with this release's verifier, offline, "
                     "and compare with the verdict the case expects: accepted or not, and the exact set of named reasons.")
    r.add_argument("folder", nargs="?", default="conformance/v1", help="the vectors' folder, holding manifest.json (default: %(default)s)")
    r.add_argument("--shared", default=None, help="the published real evidence the cases name as shared:... (default: ../shared/testvectors "
                   "beside the project, or $OMRON_TEE_TESTVECTORS)")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.set_defaults(handler=run_cmd)


def run_cmd(args: argparse.Namespace) -> int:
    from omron_tee.attestation.conformance import run_folder
    from omron_tee.attestation.testing.vectors import TESTVECTORS

    shared = Path(args.shared) if args.shared else TESTVECTORS
    try:
        results = run_folder(Path(args.folder), shared=shared if shared.is_dir() else None)
    except OmronTeeError as e:
        print(f"omron-tee conformance: error: {e}", file=sys.stderr)
        return 2
    failed = [r for r in results if not r.passed]
    if args.json:
        print(json.dumps({"passed": len(results) - len(failed), "failed": len(failed), "cases": [
            {"name": r.name, "passed": r.passed, "expected": {"accepted": r.expected_accepted, "reasons": list(r.expected_reasons)},
             "got": {"accepted": r.accepted, "reasons": [str(x) for x in r.reasons]}, "error": r.error} for r in results]}, indent=2))
    else:
        for r in results:
            got = "accepted" if r.accepted else "refused: " + ", ".join(map(str, r.reasons))
            print(f"{'pass' if r.passed else 'FAIL'}  {r.name:<34} {r.error or got}")
        print(f"{len(results) - len(failed)} of {len(results)} cases reach their expected verdict")
    return 1 if failed else 0

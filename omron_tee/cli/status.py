"""``omron-tee status``: a running network as a table: the metagraph, and (with --validator) a validator's scores and weights.

    omron-tee status                                     # the embedded chain at the neurons' default path
    omron-tee status --chain.path ~/.omron-tee/localnet/chain.sqlite --validator http://127.0.0.1:8092
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from omron_tee.errors import OmronTeeError
from omron_tee.reasons import Reason


def register(subparsers: Any) -> None:
    from omron_tee.cli.chain_flags import add_chain_flags

    p = subparsers.add_parser("status", help="a running network as a table: neurons, stake, consensus, incentive, validator trust, dividends, emission, a validator's scores and weights",
                              description="Read the chain's metagraph (read-only) and, with --validator, that validator's GET /status.")
    add_chain_flags(p)
    p.add_argument("--validator", default=None, metavar="URL", help="a validator's API, e.g. http://127.0.0.1:8092, for its scores and weights")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=status_cmd)


def _validator_status(url: str) -> dict[str, Any]:
    from omron_tee.wire.client import get_json

    try:
        status = get_json(url.rstrip("/") + "/status", max_bytes=4 * 1024 * 1024, timeout=5.0)
    except OmronTeeError as e:
        raise OmronTeeError(f"cannot read {url}/status: {e}", reason=e.reason) from None
    if not isinstance(status, dict) or not isinstance(status.get("miners"), list) or not isinstance(status.get("weights"), dict):
        raise OmronTeeError(f"{url}/status is not a validator's status", reason=Reason.MALFORMED_REPLY)
    return status


def status_cmd(args: argparse.Namespace) -> int:
    from omron_tee.cli.chain_flags import open_chain

    with open_chain(args) as chain:
        mg = chain.metagraph()
    v = _validator_status(args.validator) if args.validator else None
    scores = {m["uid"]: m for m in v["miners"]} if v else {}
    weights = {int(u): w for u, w in v["weights"].items()} if v else {}
    rows = [{
        "uid": n.uid, "hotkey": n.hotkey, "stake": n.stake, "permit": n.validator_permit, "serving": n.endpoint is not None,
        "incentive": n.incentive, "emission": n.emission, "consensus": n.consensus, "trust": n.trust, "validator_trust": n.validator_trust,
        "dividends": n.dividends,
        "score": scores.get(n.uid, {}).get("score"), "weight": weights.get(n.uid), "top_reason": next(iter(scores.get(n.uid, {}).get("reasons", {})), None),
    } for n in mg.neurons]
    if args.json:
        print(json.dumps({"netuid": args.netuid, "block": mg.block, "neurons": rows, "validator": v and v.get("validator")}, indent=2))
        return 0
    print(f"netuid {args.netuid} at block {mg.block}: {len(rows)} neurons" + (f"; scores and weights of validator {v['validator'][:12]}…" if v else ""))
    print(f"{'uid':>4} {'hotkey':<14} {'stake':>9} {'permit':>6} {'serving':>7} {'consensus':>9} {'incentive':>9} {'vtrust':>6} {'dividends':>9} "
          f"{'emission':>10} {'score':>6} {'weight':>6}  top reason")
    for r in rows:
        score = f"{r['score']:.3f}" if r["score"] is not None else "-"
        weight = f"{r['weight']:.3f}" if r["weight"] is not None else "-"
        print(f"{r['uid']:>4} {r['hotkey'][:12] + '…':<14} {r['stake']:>9.2f} {('yes' if r['permit'] else 'no'):>6} {('yes' if r['serving'] else 'no'):>7} "
              f"{r['consensus']:>9.4f} {r['incentive']:>9.4f} {r['validator_trust']:>6.3f} {r['dividends']:>9.4f} "
              f"{r['emission']:>10.4f} {score:>6} {weight:>6}  {r['top_reason'] or '-'}")
    return 0

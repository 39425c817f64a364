"""``omron-tee audit weights``: recompute a validator's weights from its published log (``validator.audit``).

    omron-tee audit weights --validator http://127.0.0.1:8092 --chain.path ~/.omron-tee/localnet/chain.sqlite

Reads the validator's committed entries (``/v1/audit/entries``), its roots and weights on
chain, replays the entries with this release's scoring rule and says whether the weights it
set are the ones its log gives. Exit status 0 when they are, 1 when not, 2 for a mistake.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from typing import Any

from omron_tee.errors import OmronTeeError

MAX_REPLY = 128 * 1024 * 1024
MAX_ENTRIES = 10_000_000  # what one audit downloads at most (the validator says how many it committed)


def register(subparsers: Any) -> None:
    from omron_tee.cli.chain_flags import add_chain_flags

    p = subparsers.add_parser("audit", help="audit a validator from public evidence", description="Check validators from what they publish.")
    s = p.add_subparsers(dest="audit_cmd", required=True, metavar="SUBCOMMAND")
    w = s.add_parser("weights", help="recompute a validator's weights from its published log and compare them with the chain",
                     description="Fetch a validator's committed audit log, check it against the roots it committed on chain, "
                     "replay it with this release's scoring rule, and compare the weights it gives with the weights the validator set.")
    w.add_argument("--validator", required=True, metavar="URL", help="the validator's API, e.g. http://127.0.0.1:8092")
    add_chain_flags(w)
    w.add_argument("--timeout", type=float, default=30.0, help="seconds per request to the validator (default: %(default)s)")
    w.add_argument("--max-entries", type=int, default=MAX_ENTRIES, help="refuse a log longer than this (default: %(default)s)")
    w.add_argument("--json", action="store_true", help="print one JSON object")
    w.set_defaults(handler=weights_cmd)


def fetch_log(url: str, *, timeout: float, max_entries: int = MAX_ENTRIES) -> tuple[str, str | None, list[bytes]]:
    """The validator's hotkey, its log's name and every committed entry it serves (bounded: its replies are hostile input)."""
    import httpx

    from omron_tee import untrusted

    def get(path: str) -> Any:
        try:
            with httpx.Client(timeout=timeout, trust_env=False) as http, http.stream("GET", url.rstrip("/") + path) as r:
                body = bytearray()
                for chunk in r.iter_bytes():
                    body += chunk
                    if len(body) > MAX_REPLY:
                        raise OmronTeeError(f"{url} sent more than {MAX_REPLY} bytes")
                if r.status_code != 200:
                    raise OmronTeeError(f"{url}{path} answered HTTP {r.status_code}: {bytes(body[:200]).decode(errors='replace')}")
        except httpx.HTTPError as e:
            raise OmronTeeError(f"cannot read {url}{path}: {type(e).__name__}") from None
        return untrusted.loads(bytes(body), f"{url}{path}", max_bytes=MAX_REPLY)

    head = get("/v1/audit")
    if not isinstance(head, dict) or not isinstance(head.get("validator"), str) or not isinstance(head.get("size"), int):
        raise OmronTeeError(f"{url}/v1/audit is not an omron-tee validator's audit summary")
    if not 0 <= head["size"] <= max_entries:
        raise OmronTeeError(f"{url} says it committed {head['size']} entries; this audit reads at most {max_entries} (--max-entries)")
    entries: list[bytes] = []
    while len(entries) < head["size"]:
        page = get(f"/v1/audit/entries?offset={len(entries)}&limit=1000")
        got = page.get("entries") if isinstance(page, dict) else None
        if not isinstance(got, list) or not got:
            raise OmronTeeError(f"{url} stopped serving entries at {len(entries)} of the {head['size']} it committed")
        try:
            entries += [base64.b64decode(e, validate=True) for e in got]
        except (TypeError, ValueError):
            raise OmronTeeError(f"{url} served an entry that is not base64") from None
        if len(entries) > head["size"]:
            raise OmronTeeError(f"{url} served more entries than the {head['size']} it committed")
    log_id = head.get("log_id") if isinstance(head.get("log_id"), str) else None
    return head["validator"], log_id, entries


def weights_cmd(args: argparse.Namespace) -> int:
    from omron_tee.cli.chain_flags import open_chain
    from omron_tee.transparency.records import AuditCommitment
    from omron_tee.validator.audit import audit

    try:
        hotkey, log_id, entries = fetch_log(args.validator, timeout=args.timeout, max_entries=args.max_entries)
        with open_chain(args) as chain:
            commitments = [(c.block, a) for c in chain.commitments() if c.hotkey == hotkey and (a := AuditCommitment.from_commitment(c.data))]
            mg = chain.metagraph()
            registered = {n.hotkey: n.uid for n in mg.neurons}
            me = mg.by_hotkey(hotkey)
            chain_weights = chain.weights().get(me.uid, {}) if me is not None else None
    except OmronTeeError as e:
        print(f"omron-tee audit: error: {e}", file=sys.stderr)
        return 2
    report = audit(entries, validator_hotkey=hotkey, commitments=commitments, chain_weights=chain_weights, registered=registered, log_id=log_id)
    if args.json:
        print(json.dumps({"validator": hotkey, "ok": report.ok, "entries": report.entries, "outcomes": report.outcomes, "receipts": report.receipts,
                          "weight_sets": [{"index": c.index, "block": c.block, "ok": c.ok} for c in report.weight_sets],
                          "chain_matches_entry": report.chain_match, "chain_compared": chain_weights is not None, "log_id": report.log_id, "earlier_logs": list(report.earlier_logs),
                          "problems": list(report.problems)}, indent=2))
    else:
        print(f"validator {hotkey}: {'ACCOUNTED FOR' if report.ok else 'NOT ACCOUNTED FOR'}")
        print(f"  {report.entries} committed entries ({report.outcomes} scored exchanges, {report.receipts} receipts) match the "
              f"{len(commitments)} root(s) it committed on chain" if not any("root" in p or "serves" in p for p in report.problems) else
              "  the entries served do not match its roots on chain")
        ok_sets = sum(c.ok for c in report.weight_sets)
        print(f"  {ok_sets} of {len(report.weight_sets)} logged weight sets are what replaying its log gives")
        if chain_weights is None:
            print("  the weights on chain were not compared (the validator is not registered)")
        elif report.chain_match is not None:
            print(f"  the weights it holds on chain are the set logged as entry {report.chain_match}")
        if report.earlier_logs:
            print(f"  earlier logs it committed but no longer serves (not auditable): {', '.join(report.earlier_logs)}")
        for p in report.problems:
            print(f"  - {p}")
    return 0 if report.ok else 1

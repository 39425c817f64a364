"""The validator's public audit routes: its committed log, and receipts recorded in it with inclusion proofs.

``GET  /v1/audit``                      {validator, log_id, size, root, commits: [{size, root, block}]}: what it committed on chain
``GET  /v1/audit/entries?offset&limit`` the committed entries, base64 (at most ``MAX_PAGE``); never past the last commit
``POST /v1/receipts``                   (btauth/1, rate-limited) a receipt file -> {index, digest}: the receipt is checked as
                                        ``omron-tee receipt verify`` would and its digest logged; any output in the file is
                                        dropped unread
``GET  /v1/receipts/{index}/proof``     the RFC 9162 inclusion proof of that entry at the last committed size
                                        (``transparency.records.InclusionProof``), once a commit covers it

Unsigned reads show public facts only: entries name miners, verdicts, latencies and receipt
digests, never an input or output.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from fastapi import FastAPI, Request

from omron_tee.errors import ProtocolError
from omron_tee.exchange.receipt_file import verify_receipt_file
from omron_tee.reasons import Reason
from omron_tee.transparency.records import InclusionProof, ReceiptEntry, decode, receipt_digest
from omron_tee.wire.server import guarded, json_response, signed_route

log = logging.getLogger("omron_tee.validator.api")

MAX_PAGE = 1000


def _committed(validator: Any) -> tuple[int, bytes] | None:
    done = validator.scores.store.commits()
    return (done[-1][0], done[-1][1]) if done else None


def add_routes(api: FastAPI, validator: Any, verifier: Any, limiter: Any, on_refusal: Any) -> None:
    store = validator.scores.store

    @api.get("/v1/audit")
    async def summary() -> Any:
        commits = store.commits()
        last = commits[-1] if commits else (0, b"", 0)
        return json_response({"validator": validator.hotkey, "log_id": store.log_id(), "size": last[0], "root": last[1].hex(),
                              "commits": [{"size": s, "root": r.hex(), "block": b} for s, r, b in commits]})

    async def entries(request: Request) -> Any:
        try:
            offset = int(request.query_params.get("offset", "0"))
            limit = int(request.query_params.get("limit", str(MAX_PAGE)))
        except ValueError:
            raise ProtocolError("offset and limit are integers", reason=Reason.MALFORMED_REQUEST) from None
        if offset < 0 or not 1 <= limit <= MAX_PAGE:
            raise ProtocolError(f"offset must be >= 0 and limit in 1..{MAX_PAGE}", reason=Reason.MALFORMED_REQUEST)
        committed = _committed(validator)
        size = committed[0] if committed else 0
        page = store.audit_entries(offset, min(limit, max(0, size - offset))) if offset < size else []
        return json_response({"size": size, "offset": offset, "entries": [base64.b64encode(e).decode() for e in page]})

    api.add_api_route("/v1/audit/entries", guarded(entries, log, on_refusal=on_refusal), methods=["GET"])

    async def record(caller: str, body: Any) -> Any:
        limiter.take(caller)
        if not isinstance(body, dict):
            raise ProtocolError("send a receipt file (JSON object)", reason=Reason.MALFORMED_MESSAGE)
        body = {k: v for k, v in body.items() if k != "result"}  # the output, if any, stays the client's
        p = validator.prober
        check = verify_receipt_file(body, policy=p.policy, verifiers=p.verifiers, workloads=p.workloads, models=p.models,
                                    releases=validator.releases.current())
        if not check.ok:
            raise ProtocolError("receipt refused: " + "; ".join(check.reasons), reason=Reason.BAD_RECEIPT)
        if validator.metagraph is None or validator.metagraph.by_hotkey(check.miner_hotkey) is None:
            raise ProtocolError("the receipt's miner is not registered on this subnet", reason=Reason.BAD_RECEIPT)
        digest = receipt_digest(body["receipt"])
        index = validator.log_receipt(digest, check.miner_hotkey, check.model_hash)
        if index is None:
            raise ProtocolError("this validator keeps no audit log", reason=Reason.UNSUPPORTED)
        return {"index": index, "digest": digest.hex(), "committed": (_committed(validator) or (0,))[0] > index}

    api.add_api_route("/v1/receipts", signed_route(verifier, record, log, on_refusal=on_refusal), methods=["POST"])

    async def proof(request: Request) -> Any:
        raw = request.path_params.get("index", "")
        if not raw.isdigit() or len(raw) > 15:
            raise ProtocolError("the entry index is an integer", reason=Reason.MALFORMED_REQUEST)
        index = int(raw)
        committed = _committed(validator)
        if committed is None or index >= committed[0]:
            raise ProtocolError(f"entry {index} is not covered by a commitment yet: it is after the next weight set",
                                reason=Reason.NOT_COMMITTED)
        size, root = committed
        (entry,) = store.audit_entries(index, 1)
        if not isinstance(decode(entry), ReceiptEntry):
            raise ProtocolError(f"entry {index} is not a receipt", reason=Reason.MALFORMED_REQUEST)
        path = validator.scores.ledger.tree.inclusion_proof(index, size)
        return json_response(InclusionProof(validator.hotkey, index, size, root, tuple(path), entry).to_json())

    api.add_api_route("/v1/receipts/{index}/proof", guarded(proof, log, on_refusal=on_refusal), methods=["GET"])

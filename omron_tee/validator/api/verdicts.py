"""``POST /v1/miner/verdict``: a miner asks what this validator concluded of it, and gets a signed answer.

The request is btauth/1-signed by the miner's hotkey (a miner learns only its own
verdict); the answer's body is signed the same way by the validator's hotkey, with the
miner as receiver (``RESPONSE_PATH`` in the signed payload), so ``omron-tee miner doctor``
can show an operator the validator's own words and prove who said them. No opaque 403: the
named reason, the validator's message, whether it earns and what it still needs.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from omron_tee.errors import AuthError
from omron_tee.protocol import dumps
from omron_tee.reasons import Reason
from omron_tee.validator import reward
from omron_tee.wire.server import authenticated, guarded

log = logging.getLogger("omron_tee.validator.api")

PATH = "/v1/miner/verdict"
RESPONSE_PATH = "/v1/miner/verdict#answer"  # what the answer's signature covers, so it cannot pass for a request


def verdict_of(validator: Any, hotkey: str) -> dict[str, Any]:
    """This validator's view of miner ``hotkey``: public facts about it, and the last verdict in full."""
    neuron = validator.metagraph.by_hotkey(hotkey) if validator.metagraph else None
    rec = validator.scores.records.get(hotkey)
    last = validator.verdicts.get(hotkey)
    needed = max(0, reward.samples_needed(rec.strikes) - rec.streak) if rec is not None else 0
    return {
        "validator": validator.hotkey,
        "miner": hotkey,
        "uid": neuron.uid if neuron else None,
        "registered": neuron is not None,
        "probed": last is not None,
        "last": None if last is None else {"at": last.at, "model": last.model_id, "reason": last.reason, "verdict": last.verdict, "message": last.message},
        "score": rec.score if rec else 0.0,
        "earning": bool(rec and rec.earning),
        "streak": rec.streak if rec else 0,
        "strikes": rec.strikes if rec else 0,
        "verified_needed": needed,  # verified answers in a row still needed before it earns
        "weight": validator.last_weights.get(neuron.uid, 0.0) if neuron else 0.0,
    }


def add_routes(api: FastAPI, validator: Any, verifier: Any, limiter: Any, on_refusal: Any) -> None:
    async def route(request: Request) -> Response:
        caller, _ = await authenticated(request, verifier)
        limiter.take(caller)
        if validator.metagraph is None or validator.metagraph.by_hotkey(caller) is None:
            raise AuthError("only a miner registered on this subnet may ask for its verdict", reason=Reason.CALLER_NOT_REGISTERED)
        body = dumps(verdict_of(validator, caller))
        headers = validator.prober.client.signer.headers("POST", RESPONSE_PATH, body, caller)
        return Response(body, media_type="application/json", headers={**headers, "Cache-Control": "no-store"})

    api.add_api_route(PATH, guarded(route, log, on_refusal=on_refusal), methods=["POST"])

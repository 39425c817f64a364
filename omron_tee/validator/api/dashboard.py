"""The validator's live dashboard: ``GET /dashboard`` (one self-contained page) and ``GET /v1/dashboard`` (its data).

What an operator watches: every miner with its verdict counts, score, weight, the chain's
consensus and incentive; scores and weights over time; the other validators with their stake,
how far their revealed weights agree with ours and their validator trust; the recent exchanges
with their reasons. Public facts only (``validator.history``): no input, output or prompt,
and nothing from outside this validator's own records and the chain. The page loads nothing
from elsewhere (no CDN: validators often run without outbound access) and polls the data every
2 s. Unsigned, like ``/status`` and ``/metrics``.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from omron_tee.errors import ChainError
from omron_tee.validator.shared_read import SharedRead
from omron_tee.validator.weights import cosine

PAGE = resources.files("omron_tee.validator.api").joinpath("dashboard.html")


def page() -> bytes:
    return PAGE.read_bytes()


def dashboard_of(validator: Any, revealed: dict[int, dict[int, float]] | None = None) -> dict[str, Any]:
    """The dashboard's data; ``revealed``: the other validators' weights on chain (``RevealedWeights``), read here
    when not given (blocking: the route passes what its cache holds)."""
    mg = validator.metagraph
    neurons = mg.neurons if mg is not None else ()
    by_hotkey = {n.hotkey: n for n in neurons}
    me = by_hotkey.get(validator.hotkey)
    miners = []
    for n in neurons:
        if n.validator_permit or n.hotkey == validator.hotkey:
            continue
        rec = validator.scores.records.get(n.hotkey)
        reasons = dict(sorted(rec.reasons.items(), key=lambda kv: -kv[1])) if rec else {}
        miners.append({
            "uid": n.uid, "hotkey": n.hotkey, "probes": rec.requests if rec else 0, "verified": reasons.get("ok", 0),
            "failed": rec.failures if rec else 0, "reasons": reasons, "score": round(rec.score, 6) if rec else None,
            "weight": round(validator.last_weights.get(n.uid, 0.0), 6), "consensus": round(n.consensus, 6), "incentive": round(n.incentive, 6),
        })
    revealed = _revealed_weights(validator.chain) if revealed is None else revealed
    validators = []
    for n in neurons:
        if not n.validator_permit:
            continue
        theirs = validator.last_weights if n.hotkey == validator.hotkey else revealed.get(n.uid, {})
        validators.append({
            "uid": n.uid, "hotkey": n.hotkey, "self": n.hotkey == validator.hotkey, "stake": n.stake,
            "agreement": None if n.hotkey == validator.hotkey or not theirs else _round(cosine(validator.last_weights, theirs)),
            "validator_trust": round(n.validator_trust, 6), "dividends": round(n.dividends, 6),
        })
    h = validator.history
    return {
        "validator": {"hotkey": validator.hotkey, "uid": me.uid if me else None},
        "block": mg.block if mg is not None else None,
        "miners": miners,
        "validators": validators,
        "scores_history": [{"t": t, "scores": {str(u): s for u, s in scores.items()}} for t, scores in h.scores],
        "weights_history": [{"block": b, "t": t, "weights": {str(u): w for u, w in ws.items()}} for b, t, ws in h.weights],
        "recent": [{"t": e.t, "uid": e.uid, "model": e.model, "latency_class": e.latency_class, "kind": e.kind, "reason": e.reason,
                    "ok": e.ok, "latency_ms": e.latency_ms, "score": e.score} for e in h.recent],
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


class RevealedWeights(SharedRead[dict[int, dict[int, float]]]):
    """The chain's revealed weights for the dashboard, read at most once per ``every`` seconds off the loop and
    shared by the requests that ask meanwhile: a subtensor read takes seconds, and anyone may ask for the page."""

    def __init__(self, chain: Any, *, every: float) -> None:
        super().__init__(lambda: _revealed_weights(chain), every=every)


def _revealed_weights(chain: Any) -> dict[int, dict[int, float]]:
    """Other validators' weights as the chain shows them (revealed ones only); {} where the chain cannot say."""
    read = getattr(chain, "weights", None)
    if read is None:
        return {}
    try:
        return read()
    except ChainError:  # the dashboard shows what it can; the chain's health is /health's
        return {}

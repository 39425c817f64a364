"""From scores to on-chain weights: a smooth function of score, concentrated on the top miners.

Only the ``top_k`` best-scoring miners that earn (``reward.earns``) get weight, and within
them weight grows as ``score ** POWER``: a miner half as good earns a quarter as much, being
the best pays, failing earns nothing. The function is continuous in every score, so two
miners of equal score get equal weight and a small difference in score is a small difference
in weight (docs/SCORING.md). Pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Sent with every weight set as its version_key: a subnet owner raises the chain's weights_version
# to refuse weights from validators still scoring by an older rule (docs/SCORING.md).
WEIGHTS_VERSION = 2
POWER = 2.0
MIN_SCORE = 0.05  # below this a miner gets no weight at all
DEFAULT_TOP_K = 16


@dataclass(frozen=True)
class WeightVector:
    uids: tuple[int, ...]
    weights: tuple[float, ...]

    def as_dict(self) -> dict[int, float]:
        return dict(zip(self.uids, self.weights))


def compute_weights(scores: dict[int, float], *, top_k: int = DEFAULT_TOP_K) -> WeightVector:
    """Normalised weights for uids by score (uid order); empty when nobody qualifies. Ties at the
    ``top_k`` boundary go to the lower uid, so the result never depends on dict order."""
    ranked = sorted(((s, uid) for uid, s in scores.items() if s >= MIN_SCORE), key=lambda t: (-t[0], t[1]))[:top_k]
    raw = sorted((uid, s**POWER) for s, uid in ranked)
    total = sum(w for _, w in raw)
    if total <= 0:
        return WeightVector((), ())
    return WeightVector(tuple(u for u, _ in raw), tuple(w / total for _, w in raw))


def weights_for(earning: dict[str, float], uid_of: dict[str, int], *, exclude: str, top_k: int = DEFAULT_TOP_K) -> tuple[dict[str, int], WeightVector]:
    """The weights a validator sets from its earning miners' scores (hotkey -> score), given the
    metagraph's uids; never on ``exclude`` (itself). Returns the uids it used too (an auditor's input)."""
    used = {h: uid_of[h] for h in sorted(earning) if h in uid_of and h != exclude}
    return used, compute_weights({uid: earning[h] for h, uid in used.items()}, top_k=top_k)


def cosine(a: dict[int, float], b: dict[int, float]) -> float | None:
    """How alike two weight vectors are (1: the same direction); None when either is empty or zero."""
    na, nb = math.sqrt(sum(v * v for v in a.values())), math.sqrt(sum(v * v for v in b.values()))
    if na == 0 or nb == 0:
        return None
    return sum(w * b.get(k, 0.0) for k, w in a.items()) / (na * nb)

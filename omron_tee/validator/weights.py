"""From scores to on-chain weights, concentrated on the top miners.

Only the ``top_k`` best-scoring miners get weight, and within them weight
grows as score**POWER, so a miner half as good earns an eighth as much:
being the best pays, being mediocre barely does, failing earns nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

POWER = 3.0
MIN_SCORE = 0.05  # below this a miner gets no weight at all
DEFAULT_TOP_K = 16


@dataclass(frozen=True)
class WeightVector:
    uids: tuple[int, ...]
    weights: tuple[float, ...]

    def as_dict(self) -> dict[int, float]:
        return dict(zip(self.uids, self.weights))


def compute_weights(scores: dict[int, float], *, top_k: int = DEFAULT_TOP_K) -> WeightVector:
    """Normalised weights for uids by score; empty when nobody qualifies."""
    ranked = sorted(((s, uid) for uid, s in scores.items() if s >= MIN_SCORE), reverse=True)[:top_k]
    raw = [(uid, s**POWER) for s, uid in ranked]
    total = sum(w for _, w in raw)
    if total <= 0:
        return WeightVector((), ())
    raw.sort()
    return WeightVector(tuple(u for u, _ in raw), tuple(w / total for _, w in raw))

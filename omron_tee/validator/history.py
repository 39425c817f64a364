"""What the validator did lately, for its dashboard: recent exchanges, and scores and weights over time.

Public facts only: a miner's uid, the model, the verdict's reason, the latency and the score
after it; never an input, an output or a prompt. Bounded ring buffers, so a validator that
runs for months holds the same few hundred entries. No I/O.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

RECENT = 200  # exchanges kept
POINTS = 360  # score snapshots and weight sets kept
SNAPSHOT_EVERY_S = 5.0


@dataclass(frozen=True)
class Exchange:
    t: float
    uid: int
    model: str
    latency_class: str
    kind: str  # "benchmark", "relay", "validator-fault"
    reason: str
    ok: bool
    latency_ms: float | None
    score: float


class History:
    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.recent: deque[Exchange] = deque(maxlen=RECENT)
        self.scores: deque[tuple[float, dict[int, float]]] = deque(maxlen=POINTS)
        self.weights: deque[tuple[int, float, dict[int, float]]] = deque(maxlen=POINTS)
        self._last_snapshot = float("-inf")

    def exchange(self, *, uid: int, model: str, latency_class: str, kind: str, reason: str, ok: bool, latency_s: float | None, score: float) -> None:
        self.recent.append(Exchange(self.clock(), uid, model[:64], latency_class, kind, reason[:64], ok,
                                    round(latency_s * 1000, 3) if latency_s is not None else None, round(score, 6)))

    def maybe_snapshot(self, scores_by_uid: Callable[[], Mapping[int, float]]) -> None:
        """A point of every miner's score, at most every ``SNAPSHOT_EVERY_S``."""
        now = self.clock()
        if now - self._last_snapshot >= SNAPSHOT_EVERY_S:
            self._last_snapshot = now
            self.scores.append((now, {u: round(s, 6) for u, s in scores_by_uid().items()}))

    def weights_set(self, block: int, weights: Mapping[int, float]) -> None:
        self.weights.append((block, self.clock(), {u: round(w, 6) for u, w in weights.items()}))

"""The reward rule, as pure functions: what one outcome does to a miner's score.

A verified, correct benchmark answer moves the score an ``ALPHA`` of the way toward a
target; the target is 1 for the fastest median latency among recently seen miners of its
class and ``1 - RT_WEIGHT`` for the slowest, linear in between. A failed benchmark takes
``FAILURE_DECAY`` of the score away. Relayed traffic and validator faults move nothing
(see ``omron_tee.validator.scoring``). No I/O, no clock: ``ScoreBook`` supplies the state.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

ALPHA = 0.1  # how far one verified answer moves the score toward its target
FAILURE_DECAY = 0.2  # fraction of the score a failure takes away
RT_WEIGHT = 0.5  # share of the target that response time can take away


def latency_range(latency_pools: Iterable[Iterable[float]]) -> tuple[float, float] | None:
    """(fastest, slowest) median latency among the miners' pools that have any, or None."""
    medians = [statistics.median(p) for p in map(list, latency_pools) if p]
    return (min(medians), max(medians)) if medians else None


def latency_target(median: float | None, span: tuple[float, float] | None) -> float:
    """The score a miner of this median latency converges to: 1 for the fastest, 1 - RT_WEIGHT for the slowest."""
    if median is None or span is None or span[1] - span[0] <= 1e-9:
        return 1.0
    lo, hi = span
    return 1.0 - RT_WEIGHT * min(1.0, max(0.0, (median - lo) / (hi - lo)))


def next_score(old: float, *, scored: bool, ok: bool, correct: bool | None, target: float) -> float:
    """The score after one outcome. ``scored``: a benchmark of the validator's own (else nothing moves)."""
    if not scored:
        return old
    if ok and correct is not False:
        return old + ALPHA * (target - old)
    if not ok:
        return old * (1.0 - FAILURE_DECAY)
    return old

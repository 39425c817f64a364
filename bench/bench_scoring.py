"""The score book's CPU per verified answer as miners grow, the kept sorted pool against sorting every time.

    .venv/bin/python bench/bench_scoring.py [--answers 2000]

For 16, 128 and 256 miners with full latency windows (64 answers each), scores ``--answers``
verified answers with the shipped score book (the reference latency from the sorted pool it
keeps up to date) and, side by side, the same updates where the reference is recomputed as the
rule states it (``reward.reference_latency``: every recent latency, sorted, per answer): the
two give the same references (tests/test_reward.py), so only the cost differs. CPU from
``time.process_time``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omron_tee.validator import reward  # noqa: E402
from omron_tee.validator.scoring import ACTIVE_WINDOW_S, Outcome, ScoreBook  # noqa: E402


class Recomputing(ScoreBook):
    """The reference as the rule states it, recomputed for every answer (what the book did before)."""

    def reference(self, latency_class: str = "tee", *, now: float | None = None) -> float | None:
        since = (self.clock() if now is None else now) - ACTIVE_WINDOW_S
        return reward.reference_latency(r.pool(latency_class) for r in self.records.values() if r.last_seen >= since)


def cost(cls: type[ScoreBook], miners: int, answers: int) -> float:
    rng = random.Random(0)
    book = cls(":memory:", audit=False)
    t0 = 1.8e9
    for i in range(miners * 64):
        book.update(Outcome(f"hk{i % miners}", i % miners, True, "ok", 0.004 + rng.random() * 0.004, True, True), now=t0 + i * 1e-3)
    t = time.process_time()
    for i in range(answers):
        book.update(Outcome(f"hk{i % miners}", i % miners, True, "ok", 0.004 + rng.random() * 0.004, True, True), now=t0 + 100 + i * 1e-3)
    return (time.process_time() - t) / answers * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--answers", type=int, default=2000)
    args = ap.parse_args()
    print("µs of CPU per verified answer scored:")
    for n in (16, 128, 256):
        kept, again = cost(ScoreBook, n, args.answers), cost(Recomputing, n, args.answers)
        print(f"  {n:>4} miners: kept sorted pool {kept:8.1f}   sorted every time {again:8.1f}   ratio {kept / again:.3f}")


if __name__ == "__main__":
    main()

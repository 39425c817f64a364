"""The reward rule, as pure functions: what one outcome does to a miner's score (docs/SCORING.md).

* A verified, correct benchmark answer of latency ``l`` has quality
  ``q = min(1, R / l)``, where ``R`` is the 25th percentile of the recent verified
  latencies of its class (tensor, zk, LLM) over every recently seen miner. Being
  faster than three quarters of the network's answers earns the full 1; twice as slow
  as that earns 0.5. The score is a moving average of quality: the plain mean of the
  first ``1 / ALPHA`` verified answers since the last strike, an exponential moving
  average with weight ``ALPHA`` after that, so latency noise averages out, two equal
  miners converge to equal scores, and a new miner is scored on its own answers from
  the start rather than ramping up from 0.
* An availability failure (timeout, unreachable, a broken stream) takes
  ``FAILURE_DECAY`` of the score away: a miner that went offline fades within a few probes.
* A strike (a wrong answer, or evidence the policy rejects) sets the score to 0 and puts the
  miner on probation: it earns nothing until ``PROBATION_SAMPLES`` verified answers in a
  row for each strike it has had (up to ``MAX_PROBATION_STRIKES`` of them). A miner that
  cheats even now and then therefore never holds weight.
* A new miner earns after ``MIN_SAMPLES`` verified answers, so one lucky answer is not weight.
* Relayed traffic, validator faults and faults that are no one's (a zk circuit that differs
  from ours) move nothing.

No I/O, no clock: ``ScoreBook`` supplies the state, ``weights`` turns scores into weights.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence

ALPHA = 0.01  # how far one verified answer moves the score toward its quality, once 1 / ALPHA are in
FAILURE_DECAY = 0.2  # fraction of the score an availability failure takes away
REFERENCE_QUANTILE = 0.25  # the reference latency: this quantile of the class's recent verified latencies
MIN_SAMPLES = 16  # verified answers before a new miner earns
PROBATION_SAMPLES = 64  # verified answers in a row, per strike, before a miner with strikes earns again
MAX_PROBATION_STRIKES = 16  # so the longest probation is 1024 answers (about half an hour at one probe per 2 s)


class Verdict(enum.Enum):
    """What scoring makes of one outcome."""

    VERIFIED = "verified"  # correct, attested, in time: scores its quality
    UNAVAILABLE = "unavailable"  # did not answer properly: decays
    STRIKE = "strike"  # answered wrong, or its evidence was rejected: zero and probation
    NOT_SCORED = "not-scored"  # relayed traffic, a validator fault, a fault that is no one's


def verdict_of(*, kind: str, ok: bool, attestation_accepted: bool | None, correct: bool | None, charged: bool = True,
               struck: bool = True) -> Verdict:
    """The verdict for one outcome. ``kind``: "benchmark" (scored) or anything else (counted only);
    ``charged``: False for a failure the miner cannot be blamed for (e.g. ``circuit-mismatch``);
    ``struck``: False for a refusal that is no strike (a released build still in its timelock)."""
    if kind != "benchmark" or not charged:
        return Verdict.NOT_SCORED
    if ok and correct is not False:
        return Verdict.VERIFIED
    if correct is False or (attestation_accepted is False and struck):
        return Verdict.STRIKE
    return Verdict.UNAVAILABLE


def quantile(values: Iterable[float], q: float) -> float | None:
    """The ``q`` quantile of ``values`` (linear interpolation, as numpy's default), None when empty."""
    return quantile_sorted(sorted(values), q)


def quantile_sorted(xs: Sequence[float], q: float) -> float | None:
    """``quantile`` of values already in ascending order."""
    if not xs:
        return None
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def reference_of_sorted(pooled: Sequence[float]) -> float | None:
    """``reference_latency`` of the pooled latencies, already in ascending order (what the score book keeps)."""
    return quantile_sorted(pooled, REFERENCE_QUANTILE)


def reference_latency(latency_pools: Iterable[Iterable[float]]) -> float | None:
    """The class's reference: ``REFERENCE_QUANTILE`` of every recent verified latency, pooled over miners."""
    return quantile((x for pool in latency_pools for x in pool), REFERENCE_QUANTILE)


def quality(latency: float | None, reference: float | None) -> float:
    """A verified answer's quality in (0, 1]: ``min(1, reference / latency)``; 1 with nothing to compare."""
    if latency is None or reference is None or latency <= 0.0:
        return 1.0
    return min(1.0, reference / latency)


def next_score(old: float, verdict: Verdict, q: float = 1.0, *, n: int | None = None) -> float:
    """The score after one outcome of ``verdict`` (``q``: its quality when verified; ``n``: the verified
    answers since the last strike, this one included; None: as many as it takes for the plain EMA)."""
    if verdict is Verdict.VERIFIED:
        step = ALPHA if n is None else max(ALPHA, 1.0 / max(1, n))
        return old + step * (q - old)
    if verdict is Verdict.UNAVAILABLE:
        return old * (1.0 - FAILURE_DECAY)
    if verdict is Verdict.STRIKE:
        return 0.0
    return old


def next_streak(streak: int, verdict: Verdict) -> int:
    """Verified answers since the last strike (or since registration)."""
    if verdict is Verdict.VERIFIED:
        return streak + 1
    if verdict is Verdict.STRIKE:
        return 0
    return streak


def samples_needed(strikes: int) -> int:
    """Verified answers in a row a miner with ``strikes`` in all needs before it earns weight."""
    return PROBATION_SAMPLES * min(strikes, MAX_PROBATION_STRIKES) if strikes else MIN_SAMPLES


def earns(streak: int, strikes: int) -> bool:
    """Whether a miner with ``streak`` verified answers since its last strike, and ``strikes`` in all, earns weight."""
    return streak >= samples_needed(strikes)

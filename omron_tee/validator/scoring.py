"""Miner scores: the rule of ``validator.reward`` (docs/SCORING.md), applied and persisted.

Only the validator's own benchmark traffic moves scores. Relayed third-party
traffic is counted but never scored: its deadline, its load and even its
disconnects are the client's to choose, so scoring it would let anyone drive
an honest miner's score down. Since miners cannot tell the two kinds of
traffic apart, benchmarks still spot-check all of it. Latencies are compared
within their class (tensor, zk, LLM) and only among miners seen recently.

Records persist in SQLite (WAL, ``validator.store``) so a validator restart keeps them;
updates are kept in memory and flushed about once a second, so a crash loses at most that.
"""

from __future__ import annotations

import bisect
import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from omron_tee.reasons import NOT_CHARGED, NOT_STRUCK, Reason
from omron_tee.validator import reward
from omron_tee.validator.reward import ALPHA, FAILURE_DECAY, Verdict  # noqa: F401 - the rule's constants, re-exported
from omron_tee.transparency.records import Entry, OutcomeEntry, SnapshotEntry
from omron_tee.validator.ledger import Ledger
from omron_tee.validator.store import ScoreStore

LATENCY_WINDOW = 64
MAX_REASONS = 48
ACTIVE_WINDOW_S = 3600.0  # miners not probed for this long drop out of the latency comparison


@dataclass(frozen=True)
class Outcome:
    """The result of one exchange with one miner, as scoring sees it."""

    hotkey: str
    uid: int
    ok: bool
    reason: str  # "ok" or a failure slug (e.g. "measurement-not-allowed", "wrong-output", "timeout")
    latency_s: float | None
    attestation_accepted: bool | None  # None: the exchange failed before a verdict
    correct: bool | None  # None: not checked (relayed third-party traffic, or failed earlier)
    kind: str = "benchmark"  # "relay" (counted, never scored), "validator-fault" (our bug: counted, never scored)
    latency_class: str = "tee"  # the workload's: latencies are compared within a class only ("tee", "zk", "llm")

    @property
    def verdict(self) -> Verdict:
        """What scoring makes of it; a failure named in ``reasons.NOT_CHARGED`` is never the miner's."""
        return reward.verdict_of(kind=self.kind, ok=self.ok, attestation_accepted=self.attestation_accepted, correct=self.correct,
                                 charged=self.ok or self.reason not in NOT_CHARGED, struck=self.reason not in NOT_STRUCK)


@dataclass
class MinerRecord:
    hotkey: str
    uid: int
    score: float = 0.0
    requests: int = 0
    attestations_accepted: int = 0
    attestations_rejected: int = 0
    correct: int = 0
    incorrect: int = 0
    failures: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    zk_latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    llm_latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    last_seen: float = 0.0  # wall time of the last benchmark outcome
    streak: int = 0  # verified answers since the last strike (or registration)
    strikes: int = 0  # wrong answers and rejected evidence, in all

    @property
    def earning(self) -> bool:
        return reward.earns(self.streak, self.strikes)

    def median_latency(self) -> float | None:
        return statistics.median(self.latencies) if self.latencies else None

    def median_zk_latency(self) -> float | None:
        return statistics.median(self.zk_latencies) if self.zk_latencies else None

    def pool(self, latency_class: str) -> deque[float]:
        return {"zk": self.zk_latencies, "llm": self.llm_latencies}.get(latency_class, self.latencies)

    @classmethod
    def from_fields(cls, hotkey: str, uid: int, score: float, r: dict[str, object]) -> "MinerRecord":
        """A record from its stored fields (``_fields``; the store's, or an audit snapshot's). Raises
        ``KeyError``/``TypeError``/``ValueError`` for fields that are missing or of the wrong kind."""
        def window(key: str) -> deque[float]:
            xs = r.get(key, [])
            if not isinstance(xs, list):
                raise TypeError(f"{key} is not a list")
            return deque((_finite(x) for x in xs), maxlen=LATENCY_WINDOW)

        reasons = r["reasons"]
        if not isinstance(reasons, dict) or not all(isinstance(k, str) and type(v) is int for k, v in reasons.items()):
            raise TypeError("reasons is not a table of counts")
        return cls(hotkey=hotkey, uid=int(uid), score=_finite(score), requests=int(r["requests"]),
                   attestations_accepted=int(r["attestations_accepted"]), attestations_rejected=int(r["attestations_rejected"]),
                   correct=int(r["correct"]), incorrect=int(r["incorrect"]), failures=int(r["failures"]), reasons=dict(reasons),
                   latencies=window("latencies"), zk_latencies=window("zk_latencies"), llm_latencies=window("llm_latencies"),
                   last_seen=_finite(r.get("last_seen", 0.0)), streak=int(r.get("streak", 0)), strikes=int(r.get("strikes", 0)))


def _finite(x: object) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise ValueError(f"{x!r} is not a finite number")
    return float(x)


def snapshot_of(records: dict[str, MinerRecord]) -> dict[str, dict[str, object]]:
    """Every record's fields with its uid and score: what an audit snapshot holds."""
    return {h: _fields(r) | {"uid": r.uid, "score": r.score} for h, r in records.items()}


class ScoreBook:
    """Every miner's record, in memory, persisted through ``ScoreStore``; the rule is ``reward``'s."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time, audit: bool = True) -> None:
        self.path = Path(path)
        self.clock = clock
        self._store = ScoreStore(self.path)
        self.lock = self._lock = threading.RLock()
        self.records: dict[str, MinerRecord] = {}
        self._dirty: set[str] = set()
        # Per latency class: the miners whose pools it holds, and their latencies pooled and sorted. Kept up
        # to date as answers join a pool, rebuilt when the set of recent miners changes: the reference
        # otherwise sorts every recent latency for every answer (1 ms a probe at 128 miners).
        self._pooled: dict[str, tuple[frozenset[str], list[float]]] = {}
        for hotkey, uid, score, r in self._store.load():
            self.records[hotkey] = MinerRecord.from_fields(hotkey, uid, score, r)
        # The audit log (validator.ledger); a book kept before the log existed starts it with a snapshot.
        self.ledger = Ledger(self._store.audit_entries()) if audit else None
        if self.ledger is not None and not len(self.ledger) and self.records:
            self.ledger.append(SnapshotEntry(self.clock(), snapshot_of(self.records)))

    def record(self, hotkey: str, uid: int, *, keep: bool = False) -> MinerRecord:
        """The hotkey's record; a new one if it is new or its uid changed (unless ``keep``: relayed
        traffic, which never moves scores, never resets one either)."""
        rec = self.records.get(hotkey)
        if rec is None or (rec.uid != uid and not keep):
            # A new hotkey on this uid (or a new uid): it starts from zero.
            rec = MinerRecord(hotkey=hotkey, uid=uid)
            self.records[hotkey] = rec
            self.invalidate()  # its old pools, if any, are gone
        return rec

    def invalidate(self) -> None:
        """Forget the pooled latencies kept for the reference (after records change other than by ``update``)."""
        self._pooled.clear()

    def reference(self, latency_class: str = "tee", *, now: float | None = None) -> float | None:
        """The class's reference latency over the miners seen within ``ACTIVE_WINDOW_S``
        (``reward.reference_latency`` of their pools, from the sorted pool kept for it)."""
        since = (self.clock() if now is None else now) - ACTIVE_WINDOW_S
        active = frozenset(h for h, r in self.records.items() if r.last_seen >= since)
        kept = self._pooled.get(latency_class)
        if kept is None or kept[0] != active:
            kept = (active, sorted(x for h in active for x in self.records[h].pool(latency_class)))
            self._pooled[latency_class] = kept
        return reward.reference_of_sorted(kept[1])

    def _join_pool(self, rec: MinerRecord, latency_class: str, latency: float) -> None:
        pool = rec.pool(latency_class)
        evicted = pool[0] if pool.maxlen is not None and len(pool) == pool.maxlen else None
        pool.append(latency)
        kept = self._pooled.get(latency_class)
        if kept is not None and rec.hotkey in kept[0]:
            xs = kept[1]
            if evicted is not None:
                del xs[bisect.bisect_left(xs, evicted)]
            bisect.insort(xs, latency)

    def update(self, outcome: Outcome, *, now: float | None = None) -> tuple[float, float]:
        """Apply one outcome, scored at ``now`` (default: the clock); returns (old score, new score).

        Every outcome but relayed traffic goes into the audit log with ``now``: replaying the
        log through this method gives back these records exactly (``validator.audit``)."""
        with self._lock:
            now = self.clock() if now is None else now
            relayed = outcome.kind == "relay"
            if self.ledger is not None and not relayed:
                o = outcome
                self.ledger.append(OutcomeEntry(now, o.hotkey, o.uid, o.ok, o.reason, o.latency_s, o.attestation_accepted, o.correct, o.kind,
                                                o.latency_class))
            rec = self.record(outcome.hotkey, outcome.uid, keep=relayed)
            old = rec.score
            rec.requests += 1
            if outcome.attestation_accepted is True:
                rec.attestations_accepted += 1
            elif outcome.attestation_accepted is False:
                rec.attestations_rejected += 1
            if outcome.correct is True:
                rec.correct += 1
            elif outcome.correct is False:
                rec.incorrect += 1
            # Reasons can come from a miner's own refusals: a bounded table, so a miner
            # inventing a new reason per probe cannot grow the record without end.
            reason = outcome.reason if outcome.reason in rec.reasons or len(rec.reasons) < MAX_REASONS else Reason.OTHER
            rec.reasons[reason] = rec.reasons.get(reason, 0) + 1
            if not outcome.ok:
                rec.failures += 1
            verdict = outcome.verdict
            if verdict is not Verdict.NOT_SCORED:
                rec.last_seen = now
            q = 1.0
            if verdict is Verdict.VERIFIED:
                # Quality against the reference before this answer joins it, so no answer judges itself.
                q = reward.quality(outcome.latency_s, self.reference(outcome.latency_class, now=now))
                if outcome.latency_s is not None:
                    self._join_pool(rec, outcome.latency_class, outcome.latency_s)
            elif verdict is Verdict.STRIKE:
                rec.strikes += 1
            rec.streak = reward.next_streak(rec.streak, verdict)
            rec.score = reward.next_score(old, verdict, q, n=rec.streak)
            self._dirty.add(outcome.hotkey)
            return old, rec.score

    def flush(self) -> None:
        with self._lock:
            rows = [(h, self.records[h].uid, self.records[h].score, _fields(self.records[h])) for h in self._dirty]
            self._dirty.clear()
            entries = self.ledger.take_pending() if self.ledger is not None else []
            self._store.save(rows, entries)  # one transaction: the log never disagrees with the scores it moved

    def log(self, entry: Entry) -> int | None:
        """Append a weights or receipt entry to the audit log; its index (None without a log)."""
        with self._lock:
            return self.ledger.append(entry) if self.ledger is not None else None

    @property
    def store(self) -> ScoreStore:
        return self._store

    def scores(self) -> dict[str, float]:
        """Every miner's score (the API ranks miners by it)."""
        return {h: r.score for h, r in self.records.items()}

    def earning_scores(self) -> dict[str, float]:
        """The scores of the miners that may earn weight: enough verified answers, probation served."""
        return {h: r.score for h, r in self.records.items() if r.earning}

    def close(self) -> None:
        self.flush()
        self._store.close()


def _fields(r: MinerRecord) -> dict[str, object]:
    return {
        "requests": r.requests,
        "attestations_accepted": r.attestations_accepted,
        "attestations_rejected": r.attestations_rejected,
        "correct": r.correct,
        "incorrect": r.incorrect,
        "failures": r.failures,
        "reasons": r.reasons,
        "latencies": list(r.latencies),
        "zk_latencies": list(r.zk_latencies),
        "llm_latencies": list(r.llm_latencies),
        "last_seen": r.last_seen,
        "streak": r.streak,
        "strikes": r.strikes,
    }

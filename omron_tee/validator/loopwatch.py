"""Whether the validator's own event loop stalled while a probe was in flight.

A probe's latency is the time from sending to the verified answer as this event loop saw it, and its
deadline is a timer on the same loop. When the loop itself stops (a blocking chain call: reading the
metagraph or setting weights against a subtensor node takes seconds; a long garbage collection; the
machine starved of CPU), every probe in flight looks slow, or times out, through no fault of its miner's.
``LoopWatch`` is a heartbeat that notes each such stall, so that a probe overlapping one is counted but
never scored (``validator.core``): the stance is that an honest miner is never charged for a fault of the
validator's.

A stall is known only once the loop runs again, and the probe's own task may resume before the heartbeat
does; so ``stalled_during`` also counts the heartbeat's current silence as a stall in progress.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable

log = logging.getLogger("omron_tee.validator")

PERIOD_S = 0.05  # the heartbeat: 20 wake-ups a second, tens of microseconds each
THRESHOLD_S = 0.1  # a beat this much late is a stall: more than any probe's latency can absorb unnoticed
KEEP_S = 600.0  # stalls remembered: longer than any probe's deadline
WARN_EVERY_S = 60.0


class LoopWatch:
    """A heartbeat on the running loop (``run``) and the stalls it saw (``stalled_during``)."""

    def __init__(self, *, period: float = PERIOD_S, threshold: float = THRESHOLD_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.period, self.threshold, self.clock = period, threshold, clock
        self.stalls: collections.deque[tuple[float, float]] = collections.deque(maxlen=4096)  # (from, to), oldest first
        self._last_beat: float | None = None  # None: no heartbeat running
        self._warned_at = float("-inf")

    async def run(self, stop: asyncio.Event) -> None:
        """Beat until ``stop`` is set, noting every beat that came ``threshold`` or more late."""
        self._last_beat = self.clock()
        try:
            while not stop.is_set():
                await asyncio.sleep(self.period)
                now = self.clock()
                due = self._last_beat + self.period
                if now - due >= self.threshold:
                    self.stalls.append((due, now))
                    if now - self._warned_at >= WARN_EVERY_S:  # chronic stalls would leave nothing scored: say so
                        self._warned_at = now
                        log.warning("this validator's event loop stalled %.2f s: probes in flight meanwhile are counted, not scored "
                                    "(omron_tee_validator_faults_total)", now - due)
                self._last_beat = now
                while self.stalls and self.stalls[0][1] < now - KEEP_S:
                    self.stalls.popleft()
        finally:
            self._last_beat = None

    def stalled_during(self, start: float, end: float | None = None) -> float:
        """Seconds of stall overlapping ``[start, end]`` (``end``: now), a stall in progress included."""
        end = self.clock() if end is None else end
        stalled = sum(max(0.0, min(end, b) - max(start, a)) for a, b in self.stalls if b > start and a < end)
        if self._last_beat is not None:
            due = self._last_beat + self.period
            if end - due >= self.threshold:  # the heartbeat has not run since: the loop is (or just was) stopped
                stalled += max(0.0, end - max(start, due))
        return stalled

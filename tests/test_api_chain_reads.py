"""The validator's API never holds its event loop for a chain read (anyone may ask for the dashboard)."""

from __future__ import annotations

import asyncio
import threading
import time

from looptime import ticking

from omron_tee.validator.api.dashboard import RevealedWeights


class SlowWeights:
    """A chain whose revealed weights take as long as a subtensor node's may."""

    def __init__(self, delay: float) -> None:
        self.delay, self.reads, self.threads = delay, 0, set()

    def weights(self):
        self.reads += 1
        self.threads.add(threading.get_ident())
        time.sleep(self.delay)
        return {1: {2: 1.0}}


def test_the_dashboards_chain_read_is_shared_cached_and_off_the_loop() -> None:
    chain = SlowWeights(0.3)
    cache = RevealedWeights(chain, every=60.0)

    async def go():
        async with ticking() as ticks:
            first = await asyncio.gather(*(cache.get() for _ in range(20)))  # twenty requests at once
            again = await cache.get()  # within the period: from the cache
        return first, again, ticks.count

    first, again, ticks = asyncio.run(go())
    assert all(w == {1: {2: 1.0}} for w in first) and again == {1: {2: 1.0}}
    assert chain.reads == 1  # one read for all of them
    assert threading.main_thread().ident not in chain.threads  # in a worker thread
    assert ticks >= 15  # the loop ran on through the 0.3 s read

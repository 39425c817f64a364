"""Counting how often the running event loop got to run other work while a test awaited something."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class Ticks:
    count = 0


@contextlib.asynccontextmanager
async def ticking(period: float = 0.01) -> AsyncIterator[Ticks]:
    """A task that wakes every ``period`` seconds for the block's duration; ``.count``: how often it ran."""
    ticks = Ticks()

    async def tick() -> None:
        while True:
            await asyncio.sleep(period)
            ticks.count += 1

    task = asyncio.create_task(tick())
    try:
        yield ticks
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

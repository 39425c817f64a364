"""A blocking read (a chain call) made from async code: in a worker thread, one at a time, its result shared.

A subtensor node takes seconds to answer; the validator's event loop times its probes meanwhile, so a read runs
in a worker thread (``asyncio.to_thread``). The callers that ask while it runs await that same read rather than
start their own, and with ``every`` a result younger than that many seconds is answered from memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SharedRead(Generic[T]):
    def __init__(self, read: Callable[[], T], *, every: float = 0.0) -> None:
        self._read_fn, self.every = read, every
        self._value: T | None = None
        self._at = float("-inf")
        self._reading: asyncio.Task | None = None

    async def get(self) -> T:
        """The last result if younger than ``every``, else the read in flight's, or a new read's."""
        if self._value is not None and time.monotonic() - self._at < self.every:
            return self._value
        loop = asyncio.get_running_loop()
        if self._reading is None or self._reading.done() or self._reading.get_loop() is not loop:
            self._reading = loop.create_task(self._read())
        return await asyncio.shield(self._reading)

    async def _read(self) -> T:
        value = await asyncio.to_thread(self._read_fn)
        self._value, self._at = value, time.monotonic()
        return value

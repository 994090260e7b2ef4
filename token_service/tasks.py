"""Stopping background tasks reliably; telling when a batching loop is under a steady load."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[object]] | asyncio.Task[object], limit_s: float = 5.0
) -> None:
    """Cancel until the tasks are done.

    A cancellation that lands while redis-py is reading a reply can be swallowed by the client's own
    connection clean-up, leaving the loop running; so cancel again until the task really ends (bounded).
    """
    pending = [tasks] if isinstance(tasks, asyncio.Task) else list(tasks)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _, still = await asyncio.wait(pending, timeout=0.25)
        pending = list(still)


class Arrivals:
    """A smoothed average of the time between arrivals (of units of work at a batching loop).

    A batcher whose units arrive closer together than it is willing to wait can wait for the ones
    behind the first and send them together: fewer, larger batches, each a wake-up less for every
    process on its way. One long gap ends that at once (gaps count up to 1 s); it takes a run of close
    arrivals to start it again.
    """

    def __init__(self, smoothing: float = 0.1) -> None:
        self.smoothing = smoothing  # weight of the newest gap
        self.gap_s = 1.0
        self._last = time.monotonic()

    def note(self) -> None:
        now = time.monotonic()
        self.gap_s += self.smoothing * (min(now - self._last, 1.0) - self.gap_s)
        self._last = now

    def closer_than(self, seconds: float) -> bool:
        return self.gap_s < seconds

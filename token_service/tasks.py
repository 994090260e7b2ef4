"""Stopping background tasks reliably."""

from __future__ import annotations

import asyncio
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

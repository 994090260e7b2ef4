"""Stopping background tasks reliably; one call shared by every concurrent caller."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


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


class SingleFlight(Generic[T]):
    """Concurrent callers asking for the same key share one call of `make()` and its result or error.

    A lock around a cache fill does the same with a convoy: when a cached entry expires under a thousand
    open status pages, each waiter takes the lock in turn, one turn of the event loop each, and a worker
    busy with thousands of streams takes milliseconds over a turn: pages stalled for seconds. Here every
    waiter awaits the one future and all of them go on in the same turn. A waiter that is cancelled (its
    client left) does not cancel the call the others wait for.
    """

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future[T]] = {}

    async def run(self, key: Hashable, make: Callable[[], Awaitable[T]]) -> T:
        running = self._running.get(key)
        if running is None:
            running = self._running[key] = asyncio.ensure_future(make())
            running.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(running)

    def in_flight(self, key: Hashable) -> bool:
        return key in self._running

    def _forget(self, key: Hashable, done: asyncio.Future[T]) -> None:
        if self._running.get(key) is done:
            del self._running[key]
        if not done.cancelled():
            done.exception()  # retrieved: an error nobody waits for any more is not logged as lost

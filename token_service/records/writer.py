"""Group commit: concurrent requests hand their SQL work to one task that commits it in one transaction.

At the morning rush hundreds of shares arrive per second; one transaction per request would make the
database's commit latency the ceiling. Each caller still waits for *its* commit before it answers, so
what was acknowledged is on disk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from token_service.errors import Unavailable

log = logging.getLogger(__name__)

Work = Callable[[AsyncConnection], Awaitable[None]]
MAX_BATCH = 256


class SqlWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._queue: asyncio.Queue[tuple[Work, asyncio.Future[None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sql-writer")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while not self._queue.empty():
            _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(Unavailable("the service is shutting down"))

    async def submit(self, work: Work) -> None:
        """Run `work` inside a shared transaction and return once it is committed."""
        if self._task is None:
            async with self.engine.begin() as conn:
                await work(conn)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((work, fut))
        await fut

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                async with self.engine.begin() as conn:
                    for work, _ in batch:
                        await work(conn)
                for _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)
            except asyncio.CancelledError:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(Unavailable("the service is shutting down"))
                raise
            except Exception:
                # One bad unit must not fail its neighbours: retry each alone and report per caller.
                if len(batch) > 1:
                    log.warning("batched SQL write failed; retrying %d units one by one", len(batch))
                await self._one_by_one(batch)

    async def _one_by_one(self, batch: list[tuple[Work, asyncio.Future[None]]]) -> None:
        for work, fut in batch:
            try:
                async with self.engine.begin() as conn:
                    await work(conn)
                if not fut.done():
                    fut.set_result(None)
            except Exception as exc:
                log.error("SQL write failed: %s", exc)
                if not fut.done():
                    fut.set_exception(Unavailable(f"database write failed: {type(exc).__name__}"))

"""Group commit: concurrent requests hand their SQL work to one task that commits it in one transaction.

At the morning rush hundreds of shares arrive per second; one transaction per request would make the
database's commit latency the ceiling. Each caller still waits for *its* commit before it answers, so
what was acknowledged is on disk.

Two kinds of unit share a batch:

- a *work* function runs its own statements (rare paths: admin edits, audit rows);
- *rows* for a `RowOp`: every unit's rows for one operation are executed as one statement with a
  parameter list (the hot paths: token upserts, on-share rows, attempts). Per batch the works run
  first, in order, then each operation once, in `RowOp.order`. A unit's rows for several operations
  therefore commit together, and an operation never depends on a work of the same batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from token_service.errors import Unavailable

log = logging.getLogger(__name__)

Work = Callable[[AsyncConnection], Awaitable[None]]
Row = dict[str, Any]
MAX_BATCH = 256


@dataclass(frozen=True, eq=False)
class RowOp:
    """One statement shape executed with the rows of every unit in a batch.

    `run(conn, rows)` returns one result per row (in the rows' order) or None when there is nothing to
    hand back; each unit receives the results of its own rows.
    """

    name: str
    order: int
    run: Callable[[AsyncConnection, list[Row]], Awaitable[Sequence[Any] | None]]


Rows = Sequence[tuple[RowOp, Row]]


@dataclass
class _Unit:
    work: Work | None
    rows: Rows
    fut: asyncio.Future[list[Any]]


class SqlWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._queue: asyncio.Queue[_Unit] = asyncio.Queue()
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
            unit = self._queue.get_nowait()
            if not unit.fut.done():
                unit.fut.set_exception(Unavailable("the service is shutting down"))

    async def submit(self, work: Work) -> None:
        """Run `work` inside a shared transaction and return once it is committed."""
        await self._submit(_Unit(work, (), self._future()))

    async def submit_rows(self, rows: Rows) -> list[Any]:
        """Write `rows` (operation, parameters) in a shared transaction; return once committed.

        The answer holds each row's result (e.g. a RETURNING id), in the order given; None where the
        operation returns nothing.
        """
        return await self._submit(_Unit(None, rows, self._future()))

    def _future(self) -> asyncio.Future[list[Any]]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, unit: _Unit) -> list[Any]:
        if self._task is None:  # not started (CLI tools, tests): write at once
            async with self.engine.begin() as conn:
                (result,) = await _execute(conn, [unit])
            return result
        await self._queue.put(unit)
        return await unit.fut

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                async with self.engine.begin() as conn:
                    results = await _execute(conn, batch)
                for unit, result in zip(batch, results, strict=True):
                    if not unit.fut.done():
                        unit.fut.set_result(result)
            except asyncio.CancelledError:
                for unit in batch:
                    if not unit.fut.done():
                        unit.fut.set_exception(Unavailable("the service is shutting down"))
                raise
            except Exception:
                # One bad unit must not fail its neighbours: retry each alone and report per caller.
                if len(batch) > 1:
                    log.warning("batched SQL write failed; retrying %d units one by one", len(batch))
                await self._one_by_one(batch)

    async def _one_by_one(self, batch: list[_Unit]) -> None:
        for unit in batch:
            try:
                async with self.engine.begin() as conn:
                    (result,) = await _execute(conn, [unit])
                if not unit.fut.done():
                    unit.fut.set_result(result)
            except Exception as exc:
                log.error("SQL write failed: %s", exc)
                if not unit.fut.done():
                    unit.fut.set_exception(Unavailable(f"database write failed: {type(exc).__name__}"))


async def _execute(conn: AsyncConnection, batch: Sequence[_Unit]) -> list[list[Any]]:
    """Run one batch in `conn`'s transaction; per unit, the results of its rows in its order."""
    for unit in batch:
        if unit.work is not None:
            await unit.work(conn)
    results: list[list[Any]] = [[None] * len(unit.rows) for unit in batch]
    by_op: dict[RowOp, list[tuple[int, int]]] = {}
    for u, unit in enumerate(batch):
        for r, (op, _) in enumerate(unit.rows):
            by_op.setdefault(op, []).append((u, r))
    for op in sorted(by_op, key=lambda o: o.order):
        where = by_op[op]
        answer = await op.run(conn, [batch[u].rows[r][1] for u, r in where])
        if answer is not None:
            for (u, r), value in zip(where, answer, strict=True):
                results[u][r] = value
    return results

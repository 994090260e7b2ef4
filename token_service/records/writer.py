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
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncPipeline
from psycopg import generators as pq_generators
from sqlalchemy import JSON, String, Table, bindparam, column, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.types import TypeDecorator, TypeEngine

from token_service.errors import Unavailable

log = logging.getLogger(__name__)

Work = Callable[[AsyncConnection], Awaitable[None]]
Row = dict[str, Any]
MAX_BATCH = 256
# Under a steady load the next unit usually found the writer idle and went out alone: at 1,000 shares/s
# on two workers a commit carried two shares' rows, and each commit costs the database about 0.4 ms of
# CPU and every process on its way a wake-up. While units arrive less than LINGER_S apart (`_Arrivals`),
# the writer waits LINGER_S for the units behind the one it took before it sends the batch; when they
# arrive further apart it sends at once. Measured at 1,000 shares/s (benchmark, same box, alternating):
# 0.35 commits per share instead of 0.51, 5 % less CPU per share, and the acknowledgement's p50 / p99
# 9.4 / 19.4 ms instead of 12.0 / 31-49 ms; the CPU saved is worth more than the wait. At 500 shares/s
# the p50 grew by about 1 ms; at 50 shares/s nothing changed.
LINGER_S = 0.002


class _Arrivals:
    """A smoothed average of the time between units' arrivals (gaps count up to 1 s). A gap of ten
    times a threshold or more lifts the average over it at once; it takes a run of close arrivals to
    bring it back under."""

    SMOOTHING = 0.1  # weight of the newest gap

    def __init__(self) -> None:
        self.gap_s = 1.0
        self._last = time.monotonic()

    def note(self) -> None:
        now = time.monotonic()
        self.gap_s += self.SMOOTHING * (min(now - self._last, 1.0) - self.gap_s)
        self._last = now


@dataclass(frozen=True)
class Later:
    """Results read once the batch has committed: in a PostgreSQL pipeline the RETURNING rows of a
    statement come back with the COMMIT's answer, so reading them earlier would cost a round trip of
    its own (and every acknowledgement in the batch would wait for it)."""

    read: Callable[[], Awaitable[Sequence[Any]]]


@dataclass(frozen=True, eq=False)
class RowOp:
    """One statement shape executed with the rows of every unit in a batch.

    `run(conn, rows)` returns one result per row (in the rows' order), a `Later` that reads them after
    the commit, or None when there is nothing to hand back; each unit receives the results of its own
    rows.
    """

    name: str
    order: int
    run: Callable[[AsyncConnection, list[Row]], Awaitable[Sequence[Any] | Later | None]]


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
        # The batch loop's own connection, kept between batches: checking one out of the pool per batch
        # (with its pre-ping round trip) cost more CPU than a small batch's statements. Any failure drops
        # it, and the next batch connects again.
        self._conn: AsyncConnection | None = None
        self.lingered = 0  # batches that waited LINGER_S for more units
        self._arrivals = _Arrivals()

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
        await self._drop_connection()

    async def _connection(self) -> AsyncConnection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            conn = await self.engine.connect()
            if psycopg_path(conn):
                # Each batch queues its own BEGIN and COMMIT in its pipeline (`_write`). Left to
                # psycopg, the BEGIN would be followed by a Sync of its own: a round trip per batch
                # spent on nothing. (Set through SQLAlchemy, which resets it if the connection ever
                # goes back to the pool.)
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            self._conn = conn
        return self._conn

    async def _drop_connection(self) -> None:
        """Forget the held connection after a failure (it may be broken or mid-transaction)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()

    async def _write_held(self, batch: Sequence[_Unit]) -> list[list[Any]]:
        try:
            return await _write(await self._connection(), batch)
        except BaseException:
            await asyncio.shield(self._drop_connection())
            raise

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
        if self._task is None:  # not started (CLI tools, tests): write at once, on a pooled connection
            async with self.engine.connect() as conn:
                (result,) = await _write(conn, [unit])
            return result
        self._arrivals.note()
        await self._queue.put(unit)
        return await unit.fut

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            try:
                if self._arrivals.gap_s < LINGER_S and self._queue.qsize() < MAX_BATCH - 1:
                    self.lingered += 1
                    await asyncio.sleep(LINGER_S)
                while len(batch) < MAX_BATCH and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                results = await self._write_held(batch)
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
                (result,) = await self._write_held([unit])
                if not unit.fut.done():
                    unit.fut.set_result(result)
            except Exception as exc:
                log.error("SQL write failed: %s", exc)
                if not unit.fut.done():
                    unit.fut.set_exception(Unavailable(f"database write failed: {type(exc).__name__}"))


@dataclass(frozen=True)
class _PgStatement:
    """A statement compiled once for PostgreSQL, with the bind processors of its parameters."""

    sql: str
    binds: tuple[tuple[str, Callable[[Any], Any] | None], ...]  # taken from each row
    constants: dict[str, Any]  # values written into the statement (e.g. `status = 'pending'`)

    def params(self, row: Row) -> dict[str, Any]:
        # Processors see None too: a JSON column stores None as JSON null, as SQLAlchemy does.
        out = {name: row.get(name) if proc is None else proc(row.get(name)) for name, proc in self.binds}
        out.update(self.constants)
        return out


PG_COMPILED_MAX = 64
_PG_COMPILED: dict[tuple[int, tuple[str, ...]], tuple[UpdateBase, _PgStatement | None]] = {}


def _pg_statement(stmt: UpdateBase, dialect: Dialect, keys: tuple[str, ...]) -> _PgStatement | None:
    """`stmt` as SQL text for psycopg, or None when SQLAlchemy must run it (it computes a default)."""
    cache_key = (id(stmt), keys)
    hit = _PG_COMPILED.get(cache_key)
    if hit is not None and hit[0] is stmt:
        return hit[1]
    if len(_PG_COMPILED) >= PG_COMPILED_MAX:
        # Statements are meant to be built once, at module level; one built per call would otherwise
        # be compiled per call and kept for ever.
        log.warning("SQL writer: %d statements compiled; is one built per call?", len(_PG_COMPILED))
        _PG_COMPILED.clear()
    compiled: Any = stmt.compile(dialect=dialect, column_keys=list(keys))
    fast: _PgStatement | None = None
    if not (compiled.insert_prefetch or compiled.update_prefetch or compiled.literal_execute_params
            or compiled.post_compile_params or compiled.positional):  # fmt: skip
        procs = compiled._bind_processors
        from_row: list[tuple[str, Callable[[Any], Any] | None]] = []
        constants: dict[str, Any] = {}
        for bind, name in compiled.bind_names.items():
            if name in keys:
                from_row.append((name, procs.get(name)))
            else:
                value = bind.effective_value
                constants[name] = procs[name](value) if name in procs else value
        fast = _PgStatement(compiled.string, tuple(dict.fromkeys(from_row)), constants)
    _PG_COMPILED[cache_key] = (stmt, fast)
    return fast


def psycopg_path(conn: AsyncConnection) -> bool:
    """Whether statements run on psycopg directly here (PostgreSQL): `execute_many`'s fast path, and
    `execute_json_rows`."""
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"


async def _psycopg(conn: AsyncConnection) -> Any:
    """The psycopg connection under `conn` (on the `psycopg_path`).

    Read straight from the checked-out connection while it is open: SQLAlchemy's `get_raw_connection`
    runs in a greenlet of its own in case it has to reconnect, and each new greenlet maps a fresh
    16 KB frame stack (an mmap and a munmap): several per batch, for an attribute lookup."""
    sync = conn.sync_connection
    if sync is not None and not sync.closed and not sync.invalidated:
        return sync.connection.driver_connection
    raw = await conn.get_raw_connection()
    return raw.driver_connection


async def execute_many(conn: AsyncConnection, stmt: UpdateBase, rows: list[Row]) -> None:
    """Run `stmt` once per row in `conn`'s transaction (the writer's rarer statements). `stmt` must be
    built once (at module level), not per call: it is compiled once per object.

    On PostgreSQL the statement is compiled once and handed with its parameter list straight to
    psycopg (pipelined executemany): SQLAlchemy's per-execution work (building an execution context,
    processing every parameter of every row) cost more CPU than the statements themselves.
    """
    if not rows:
        return
    fast = _pg_statement(stmt, conn.dialect, tuple(rows[0])) if psycopg_path(conn) else None
    if fast is None:
        await conn.execute(stmt, rows)
        return
    async with (await _psycopg(conn)).cursor() as cur:
        await cur.executemany(fast.sql, [fast.params(row) for row in rows])


async def execute_rows(
    conn: AsyncConnection, rows: list[Row], *, json: UpdateBase, plain: UpdateBase
) -> None:
    """The writer's hot statements: `json` (built on `json_rows`) with one JSON parameter on the
    `psycopg_path`, else `plain` with a parameter list (SQLite)."""
    if psycopg_path(conn):
        await execute_json_rows(conn, json, rows)
    else:
        await execute_many(conn, plain, rows)


JSON_ROWS = "rows"


def json_rows(columns: Sequence[tuple[str, TypeEngine[Any]]]) -> Any:
    """PostgreSQL: the rows of one JSON array parameter (`JSON_ROWS`) as a table ``r`` with these
    columns (``json_to_recordset``), for statements run by `execute_json_rows`. Strings are read
    unsized, so a value too long for the column it goes to fails as it would from a VALUES list instead
    of being cut to size by the record's type; a JSON column keeps the text it was sent as."""
    cols = [column(name, _unsized(type_)) for name, type_ in columns]
    return (
        func.json_to_recordset(bindparam(JSON_ROWS, type_=JSON))
        .table_valued(*cols)
        .render_derived(name="r", with_types=True)
    )


def json_rows_insert(
    table: Table, names: Sequence[str], where: Callable[[Any], Any] | None = None
) -> postgresql.Insert:
    """``INSERT INTO table (names) SELECT ... FROM json_rows(...)``: rows keyed by column name; with
    `where`, only the rows its condition (built on the rows' columns ``r.c``) lets through."""
    src = json_rows([(n, table.c[n].type) for n in names])
    chosen = select(*(src.c[n] for n in names))
    if where is not None:
        chosen = chosen.where(where(src.c))
    return postgresql.insert(table).from_select(list(names), chosen, include_defaults=False)


def _unsized(type_: TypeEngine[Any]) -> TypeEngine[Any]:
    impl = type_.impl_instance if isinstance(type_, TypeDecorator) else type_  # SQLModel's AutoString
    return String() if isinstance(impl, String) else type_


async def execute_json_rows(conn: AsyncConnection, stmt: UpdateBase, rows: list[Row]) -> None:
    """Run `stmt` (reading its rows from `json_rows`) once with every row in one JSON array
    (PostgreSQL).

    One statement and one parameter per batch: psycopg's executemany adapts every parameter of every
    row and sends a statement per row, which cost more of a worker's CPU than the database's work. The
    rows must be JSON-ready (str, int, float, bool, None, date and aware datetime, dicts and lists;
    orjson writes them).
    """
    if rows:
        await (await _json_rows_cursor(conn, stmt, rows)).close()


async def execute_json_rows_returning(
    conn: AsyncConnection, stmt: UpdateBase, rows: list[Row]
) -> Callable[[], Awaitable[list[tuple[Any, ...]]]]:
    """`execute_json_rows` for a statement with RETURNING: sends it, and returns the function that
    reads its rows (in no particular order). Inside the writer's pipeline, read them after the commit
    (`Later`): they arrive with its answer."""
    if not rows:

        async def nothing() -> list[tuple[Any, ...]]:
            return []

        return nothing
    cur = await _json_rows_cursor(conn, stmt, rows)

    async def read() -> list[tuple[Any, ...]]:
        async with cur:
            return list(await cur.fetchall())

    return read


async def _json_rows_cursor(conn: AsyncConnection, stmt: UpdateBase, rows: list[Row]) -> Any:
    fast = _pg_statement(stmt, conn.dialect, (JSON_ROWS,))
    assert fast is not None, "a statement on json_rows compiles to plain SQL"
    cur = (await _psycopg(conn)).cursor()
    await cur.execute(fast.sql, fast.params({JSON_ROWS: rows}))
    return cur


async def _write(conn: AsyncConnection, batch: Sequence[_Unit]) -> list[list[Any]]:
    """Run one batch on `conn` in a transaction of its own and commit it; per unit, the results of its
    rows.

    On PostgreSQL a batch of rows (the hot paths), BEGIN and COMMIT included, goes out as one psycopg
    pipeline: its statements reach the server together and their results come back together, one
    round trip for the lot instead of one per statement kind and one for the COMMIT. RETURNING rows
    are read after it (`Later`), from the answers it brought. Every round trip waits for the server
    process to be scheduled; on a busy box those waits, not the work, were most of a transaction's
    time. Such a batch also leaves SQLAlchemy's transaction handling out (~0.2 ms of CPU less per
    batch).

    A batch with a work function runs inside SQLAlchemy's `begin()`, since the work executes through
    SQLAlchemy: its works one statement at a time, then its rows in the pipeline with the COMMIT.
    """
    results = _Results(batch)
    if not psycopg_path(conn):
        async with conn.begin():
            await _run_units(conn, batch, results)
        return await results.read_later()
    driver = await _psycopg(conn)
    if any(unit.work is not None for unit in batch):
        async with conn.begin():
            # Works run through SQLAlchemy, which cannot read results in pipeline mode (an INSERT's
            # RETURNING of its new id fails there): they go first, statement by statement, in the
            # transaction opened here; the rows follow in the pipeline with the COMMIT.
            await _begin(driver)
            await _run_works(conn, batch)
            async with _pipeline(driver):
                await _run_rows(conn, batch, results)
                # Leaving `begin()` then finds no transaction open and sends nothing more.
                await _command(driver, "COMMIT")
        return await results.read_later()
    async with _pipeline(driver):
        await _begin(driver)
        await _run_rows(conn, batch, results)
        await _command(driver, "COMMIT")
    if conn.in_transaction():  # an operation went through SQLAlchemy: end its (already committed) one
        await conn.commit()
    return await results.read_later()


class _GatheringPipeline(AsyncPipeline):
    """psycopg's pipeline, with the batch's statements sent in one write when it ends.

    psycopg sends each statement of a pipeline as soon as it is queued, polling the socket twice before
    each: a batch's BEGIN, statements, COMMIT, Sync and Flush went out as six TCP segments, each waking
    the server process, with about eleven system calls on the worker. Here the statements wait in
    psycopg's queue; leaving the pipeline puts them all, and the Sync, into libpq's buffer and then
    communicates as psycopg does (writing what the socket takes, reading what the server answers), so
    the batch reaches the server in one write. What the server answers, errors included, is processed
    exactly as before.

    The batch ends with its Sync, and the server sends every answer as soon as it reaches the Sync. So
    what libpq still holds is written out and the answers are read, with no flush request after it:
    psycopg's own exit sends one more message (a flush request, 5 bytes) in a write of its own, which
    costs a system call here and a read and a message at the server in every commit.
    """

    gathering = True

    def _communicate_gen(self) -> Any:
        if self.gathering:
            return
        yield from super()._communicate_gen()

    def _exit_gen(self) -> Any:
        self.gathering = False
        synced = False
        try:
            self._enqueue_sync()
            while self.command_queue:
                self.command_queue.popleft()()
            yield from super()._communicate_gen()
            synced = True
        finally:
            if synced:  # the Sync is on its way: the server answers without being asked to flush
                yield from pq_generators.send(self.pgconn)
            yield from self._fetch_gen(flush=not synced)


# The psycopg internals `_GatheringPipeline` builds on (3.1 to 3.3 at least); without them the writer
# uses psycopg's own pipeline.
_GATHERING = all(
    hasattr(AsyncPipeline, name) for name in ("_communicate_gen", "_exit_gen", "_enqueue_sync", "_fetch_gen")
) and hasattr(pq_generators, "send")


def _pipeline(driver: Any) -> Any:
    """psycopg's own `pipeline()` on `driver`, which takes the `_GatheringPipeline` set here as the
    connection's pipeline and lets it go when it ends."""
    if _GATHERING and getattr(driver, "_pipeline", True) is None:
        driver._pipeline = _GatheringPipeline(driver)
    return driver.pipeline()


async def _begin(driver: Any) -> None:
    """The batch's own BEGIN on the writer's connection, which is in autocommit mode so that psycopg
    starts no transaction (and syncs) by itself. On any other connection psycopg's BEGIN opens it."""
    if driver.autocommit:
        await _command(driver, "BEGIN")


async def _command(driver: Any, command: str) -> None:
    """A transaction command; in the pipeline it is queued. Leaving the pipeline sends it with the
    batch's statements and one Sync, and brings every answer back at once. psycopg's `commit()` would sync by
    itself, and leaving the pipeline would then sync once more: two round trips where one does. A
    statement that fails aborts the rest of the pipeline, its COMMIT included; leaving it raises the
    error, and the writer drops the connection."""
    await driver.execute(command, prepare=False)


class _Results:
    """Per unit of a batch, the results of its rows; some are read only after the commit."""

    def __init__(self, batch: Sequence[_Unit]) -> None:
        self.by_unit: list[list[Any]] = [[None] * len(unit.rows) for unit in batch]
        self.later: list[tuple[list[tuple[int, int]], Later]] = []

    def put(self, where: list[tuple[int, int]], answer: Sequence[Any] | Later | None) -> None:
        if isinstance(answer, Later):
            self.later.append((where, answer))
        elif answer is not None:
            for (u, r), value in zip(where, answer, strict=True):
                self.by_unit[u][r] = value

    async def read_later(self) -> list[list[Any]]:
        for where, later in self.later:
            self.put(where, await later.read())
        return self.by_unit


async def _run_units(conn: AsyncConnection, batch: Sequence[_Unit], results: _Results) -> None:
    await _run_works(conn, batch)
    await _run_rows(conn, batch, results)


async def _run_works(conn: AsyncConnection, batch: Sequence[_Unit]) -> None:
    for unit in batch:
        if unit.work is not None:
            await unit.work(conn)


async def _run_rows(conn: AsyncConnection, batch: Sequence[_Unit], results: _Results) -> None:
    by_op: dict[RowOp, list[tuple[int, int]]] = {}
    for u, unit in enumerate(batch):
        for r, (op, _) in enumerate(unit.rows):
            by_op.setdefault(op, []).append((u, r))
    for op in sorted(by_op, key=lambda o: o.order):
        where = by_op[op]
        results.put(where, await op.run(conn, [batch[u].rows[r][1] for u, r in where]))

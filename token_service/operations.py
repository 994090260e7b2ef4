"""TokenService: queue operations with their write-through to SQL, metrics and audit in one place."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection

from token_service.directory import Directory, FacilityConfig
from token_service.errors import Conflict, Forbidden, Unavailable
from token_service.models import AuditLog
from token_service.queue.service import CallResult, IssueResult, Token, TokenQueue
from token_service.queue.status import Priority, Source, auto_priority
from token_service.records import tokens as token_sql
from token_service.records.writer import Row, RowOp, Rows, SqlWriter, execute_many

ISSUED = PromCounter("opd_tokens_issued_total", "Tokens issued", ["hip_id", "counter", "source"])
CALLED = PromCounter("opd_tokens_called_total", "Tokens called", ["hip_id", "counter"])
OP_LATENCY = Histogram(
    "opd_queue_operation_seconds",
    "Queue operation latency including the SQL write-through",
    ["op"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
# The child of each label set, looked up once: `labels()` validates and locks on every call, a
# noticeable share of a worker's CPU when every share counts in three metrics.
issued_count = functools.cache(ISSUED.labels)
op_latency = functools.cache(OP_LATENCY.labels)

T = TypeVar("T")
AUDIT = AuditLog.__table__  # type: ignore[attr-defined]


_AUDIT_INSERT = AUDIT.insert()  # built once: the writer compiles each statement object once


async def _insert_audit(conn: AsyncConnection, rows: list[Row]) -> None:
    for row in rows:
        row.setdefault("detail", None)
    await execute_many(conn, _AUDIT_INSERT, rows)


AUDIT_INSERT = RowOp("audit insert", 30, _insert_audit)


async def _guard(op: str, fn: Callable[[], Awaitable[T]]) -> T:
    """Time an operation and turn a lost Redis connection into a clean 503."""
    started = time.perf_counter()
    try:
        return await fn()
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise Unavailable(f"queue store unavailable: {type(exc).__name__}") from exc
    finally:
        op_latency(op).observe(time.perf_counter() - started)


class TokenService:
    def __init__(self, queue: TokenQueue, writer: SqlWriter, directory: Directory) -> None:
        self.queue = queue
        self.writer = writer
        self.directory = directory

    async def persist(
        self,
        tokens: list[Token],
        patient: dict[str, Any] | None = None,
        audit: dict[str, Any] | None = None,
        *,
        also: Rows = (),
    ) -> list[Any]:
        """Write-through of the tokens an operation changed, with its audit row and any rows the caller
        must commit in the same transaction (`also`); returns the results of `also`'s rows."""
        rows = token_sql.token_rows(tokens, patient)
        if audit is not None:
            rows.append((AUDIT_INSERT, {"at": datetime.now(UTC), **audit}))
        results = await self.writer.submit_rows([*rows, *also])
        return results[len(rows) :]

    async def issue(
        self,
        hip_id: str,
        counter_code: str,
        *,
        source: Source,
        priority: Priority = Priority.NORMAL,
        request_id: str | None = None,
        abha_address: str | None = None,
        patient: dict[str, Any] | None = None,
        actor: str | None = None,
        persist: bool = True,
    ) -> IssueResult:
        """Issue (or find, for a request id seen before) a token. With `persist` off the caller writes
        it through itself, with `persist()`, before it answers anybody."""
        cfg = await self.directory.get(hip_id)
        counter = cfg.counter(counter_code)
        if not counter.active:
            raise Conflict(f"counter {counter_code} is closed", code="counter_closed")
        year_now = datetime.now(UTC).year
        yob = (patient or {}).get("year_of_birth")
        priority = auto_priority(priority, int(yob) if yob else None, year_now)
        result = await _guard(
            "issue",
            lambda: self.queue.issue(
                hip_id, counter_code, cfg.rules, prefix=counter.prefix, priority=priority, source=source,
                request_id=request_id, abha_address=abha_address,
            ),
        )  # fmt: skip
        if result.created:
            issued_count(hip_id, counter_code, source.value).inc()
        audit = None
        if actor:
            audit = {"actor": actor, "action": "issue", "hip_id": hip_id, "target": result.token.id}
        if persist:
            # Write-through before we answer: a token anybody has seen is in SQL.
            await self.persist([result.token], patient, audit)
        return result

    def _check_desk(self, cfg: FacilityConfig, desk_code: str, allowed: list[str] | None) -> list[str]:
        desk = cfg.desk(desk_code)
        counters = cfg.desk_counters(desk)
        if allowed:
            counters = [c for c in counters if c in allowed]
            if not counters:
                raise Forbidden(f"you are not assigned to any counter served by desk {desk_code}")
        return counters

    async def call_next(
        self,
        hip_id: str,
        desk_code: str,
        actor: str,
        allowed: list[str] | None,
        only: list[str] | None = None,
    ) -> CallResult:
        cfg = await self.directory.get(hip_id)
        counters = self._check_desk(cfg, desk_code, allowed)
        if only:
            counters = [c for c in counters if c in only]
        if not counters:
            return CallResult(None, None)
        result = await _guard(
            "call_next", lambda: self.queue.call_next(hip_id, desk_code, counters, cfg.rules)
        )
        changed = [t for t in (result.completed, result.called) if t is not None]
        if result.called:
            CALLED.labels(hip_id, result.called.counter).inc()
            audit = {"actor": actor, "action": "call_next", "hip_id": hip_id, "target": result.called.id}
            await self.persist(changed, audit=audit)
        return result

    async def act(self, action: str, token_id: str, actor: str, desk: str = "", **kw: Any) -> Token:
        """recall / skip / complete / cancel / transfer on one token, written through to SQL."""
        op: Callable[[], Awaitable[Token]]
        if action == "recall":
            op = lambda: self.queue.recall(token_id, desk)  # noqa: E731
        elif action == "skip":
            places = int(kw.get("places") or 3)
            op = lambda: self.queue.skip(token_id, desk, places)  # noqa: E731
        elif action == "complete":
            op = lambda: self.queue.complete(token_id, desk)  # noqa: E731
        elif action == "cancel":
            op = lambda: self.queue.cancel(token_id, desk)  # noqa: E731
        elif action == "transfer":
            target = str(kw["counter"])
            op = lambda: self.queue.transfer(token_id, target, desk)  # noqa: E731
        else:  # pragma: no cover - routers only pass the names above
            raise ValueError(action)
        token = await _guard(action, op)
        audit = {"actor": actor, "action": action, "hip_id": token.hip_id, "target": token.id,
                 "detail": {"desk": desk, **{k: v for k, v in kw.items() if v is not None}}}  # fmt: skip
        await self.persist([token], audit=audit)
        return token

    async def undo(self, hip_id: str, desk: str, actor: str) -> list[Token]:
        tokens = await _guard("undo", lambda: self.queue.undo(hip_id, desk))
        audit = {"actor": actor, "action": "undo", "hip_id": hip_id, "target": desk,
                 "detail": {"tokens": [t.id for t in tokens]}}  # fmt: skip
        await self.persist(tokens, audit=audit)
        return tokens

"""Durable on-share outbox: a SQL row per share, delivered by any worker through atomic Redis claims.

Life of an on-share::

    row()/record()  SQL row (pending), committed with the token ──▶ wake(): job hash + ZADD due + LPUSH
    run()     every worker: claim due ids (ZREM + lease + job, one Lua call) ──▶ send ──▶ attempt row
              ok ─▶ sent · retryable and before the deadline ─▶ ZADD due later · else ─▶ failed
    sweep()   pending SQL rows that nobody holds are queued again (after a crash, a restart, or Redis
              losing its data); pending rows past the deadline are marked failed.

Exactly one send at a time per on-share: a claim leaves a lease naming the worker, and a lease counts
only while that worker's heartbeat key lives. A lease outlasts the longest send (the deadline), so a
slow send is never taken over; a killed worker's heartbeat lapses within seconds, so its on-shares are
taken over well before their deadline. The job hash carries what the send needs, so delivery reads no
SQL (the row is read only when Redis lost the hash).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from prometheus_client import Counter as PromCounter
from redis.asyncio import Redis, RedisCluster
from sqlalchemy import bindparam, func, literal_column, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from token_service.abdm.gateway import GatewayClient, GatewayResult
from token_service.abdm.profile import PatientProfile
from token_service.abdm.schemas import PROFILE_SHARE, ShareRequest
from token_service.clock import Clock
from token_service.models import OnShare, OnShareAttempt
from token_service.queue.scripts import ScriptBatch
from token_service.records.writer import (
    Later,
    Row,
    RowOp,
    SqlWriter,
    execute_json_rows_returning,
    execute_rows,
    json_rows,
    json_rows_insert,
    psycopg_path,
)
from token_service.redis_guard import blocking_client, close_blocking_client

__all__ = ["Outbox", "OutboxEntry"]

log = logging.getLogger(__name__)

ON_SHARE = OnShare.__table__  # type: ignore[attr-defined]
ATTEMPT = OnShareAttempt.__table__  # type: ignore[attr-defined]
# "Still owed", written into the SQL rather than bound: the pending rows have an index of their own
# (`ix_on_share_pending`), and only a constant lets a prepared statement's generic plan use it. A
# bound 'pending' gave the outcome update a sequential scan of the whole table per batch.
_PENDING = ON_SHARE.c.status == literal_column("'pending'")

# Every outbox key, with its lifetime. One hash tag so every script touches a single cluster slot.
KEY_PREFIX = "opd:{onshare}:"
DUE_KEY = KEY_PREFIX + "due"  # zset on-share id -> due ms; a member lives until claimed
WAKE_KEY = KEY_PREFIX + "wake"  # list nudging a blocked worker; trimmed to WAKE_MAX entries
WAKE_MAX = 64
LEASE_PREFIX = KEY_PREFIX + "lease:"  # on-share id -> worker id while sending, "done" after the outcome
JOB_PREFIX = KEY_PREFIX + "job:"  # on-share id -> hash {d: what to send (JSON), a: attempts so far}
BEAT_PREFIX = KEY_PREFIX + "beat:"  # worker id -> alive; a lease counts only while this key lives
# The lease outlives the longest send (the deadline) by this margin; the heartbeat is renewed every
# BEAT_EVERY_S and lapses BEAT_MS after a worker stops (killed, frozen, or cut off from Redis).
LEASE_MARGIN_MS = 30_000
BEAT_MS = 6_000
BEAT_EVERY_S = 1.0
DONE_MS = 120_000  # "done" outlives any sweep's stale SQL read
JOB_MARGIN_MS = 120_000

MAX_IDLE_WAIT_S = 1.0
SWEEP_INTERVAL_S = 2.0
# A row younger than this is its intake's to wake: a sweep that queued it first could see it sent and
# marked done before the intake's wake() ran, which would then queue it a second time. The sweep exists
# for crashes and lost Redis data; a few seconds of patience cost nothing against a 25 s deadline.
SWEEP_GRACE_S = 10.0
BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 3.0

ONSHARE_RESULTS = PromCounter("opd_onshare_total", "On-shares finished, by result", ["result"])
ONSHARE_ATTEMPTS = PromCounter(
    "opd_onshare_attempts_total", "Calls made to the gateway for on-shares", ["ok"]
)
# Each label set's child, looked up once (`labels()` validates and locks on every call).
onshare_results = functools.cache(ONSHARE_RESULTS.labels)
onshare_attempts = functools.cache(ONSHARE_ATTEMPTS.labels)

# KEYS: due. ARGV: now ms, limit, key prefix, worker, lease ms. Returns id, job, attempts per claim.
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('SET', ARGV[3] .. 'lease:' .. id, ARGV[4], 'PX', tonumber(ARGV[5]))
  local job = redis.call('HMGET', ARGV[3] .. 'job:' .. id, 'd', 'a')
  out[#out + 1] = id
  out[#out + 1] = job[1] or ''
  out[#out + 1] = job[2] or '0'
end
return out
"""

# The one rule every script applies to a lease's value: a worker id counts only while that worker's
# heartbeat key lives. (The heartbeat key is named by the value, so it cannot be declared in KEYS; it
# shares the {onshare} slot.)
_LIVE = """
local function live_worker(holder, beat_prefix)
  return holder and holder ~= 'done' and redis.call('EXISTS', beat_prefix .. holder) == 1
end
"""

# KEYS: due, lease, job, wake. ARGV: id, now ms, beat prefix, job JSON, job ttl ms, wake max, and
# either '' or (this worker, lease ms) to claim it at once instead of queuing it.
# A "done" marker is re-armed (the gateway delivered the same REQUEST-ID again); a live sender is not.
# Returns 0 (a live worker sends it), 1 (queued as due) or 2 (claimed by the calling worker).
_WAKE = (
    _LIVE
    + """
if live_worker(redis.call('GET', KEYS[2]), ARGV[3]) then
  return 0  -- a live worker is sending this on-share right now: a second send would duplicate it
end
redis.call('HSET', KEYS[3], 'd', ARGV[4], 'a', '0')
redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[5]))
if ARGV[7] ~= '' then
  -- The intake's own worker has room: it sends now, exactly as if it had claimed it from the due set.
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[2], ARGV[7], 'PX', tonumber(ARGV[8]))
  return 2
end
redis.call('DEL', KEYS[2])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('LPUSH', KEYS[4], '1')
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[6]) - 1)
return 1
"""
)

# KEYS: due, lease. ARGV: id, now ms, beat prefix, this worker, 1 if this worker is sending it.
# Queue a pending row nobody holds; 1 if queued. A lease naming this worker for an on-share it is not
# sending is a claim whose answer was lost (a Redis timeout): it is released here, not after the lease.
_REQUEUE_ORPHAN = (
    _LIVE
    + """
local holder = redis.call('GET', KEYS[2])
if holder == 'done' then return 0 end
if holder == ARGV[4] then
  if ARGV[5] == '1' then return 0 end
elseif live_worker(holder, ARGV[3]) then
  return 0
end
redis.call('DEL', KEYS[2])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
"""
)

# KEYS: lease, job. ARGV: done ms. The outcome is final: no sweep or wake may queue it again for a while,
# and its job is not needed any more. (One script call is cheaper for the client than MULTI/EXEC.)
_DONE = """
redis.call('SET', KEYS[1], 'done', 'PX', tonumber(ARGV[1]))
redis.call('DEL', KEYS[2])
return 1
"""

# KEYS: lease. ARGV: beat prefix. 1 while a live worker (or a finished outcome) holds the on-share.
_IS_HELD = (
    _LIVE
    + """
local holder = redis.call('GET', KEYS[1])
if holder == 'done' or live_worker(holder, ARGV[1]) then return 1 end
return 0
"""
)


def lease_key(on_share_id: int | str) -> str:
    return f"{LEASE_PREFIX}{on_share_id}"


def job_key(on_share_id: int | str) -> str:
    return f"{JOB_PREFIX}{on_share_id}"


def _now_ms() -> int:
    return int(time.time() * 1000)


def backoff_s(attempt: int) -> float:
    """0.25, 0.5, 1, 2, 3, 3 ... seconds, with jitter so a recovering gateway is not hit in lockstep."""
    base = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * float(2 ** min(max(0, attempt - 1), 16)))
    return base * random.uniform(0.8, 1.2)


@dataclass(frozen=True)
class OutboxEntry:
    """What `record()` stores: everything needed to build the on-share later, in any worker."""

    hip_id: str
    request_id: str
    version: Literal["v3", "v1"]
    counter: str
    abha_address: str | None
    token_id: str | None = None
    token_number: str | None = None
    expires_ms: int | None = None
    error: tuple[str, str] | None = None
    outcome: str = ""

    @functools.cached_property
    def payload(self) -> dict[str, Any]:  # built once: the SQL row and the Redis job both carry it
        data: dict[str, Any] = {
            "version": self.version,
            "request_id": self.request_id,
            "hip_id": self.hip_id,
            "counter": self.counter,
            "abha_address": self.abha_address,
            "outcome": self.outcome,
        }
        if self.error is not None:
            data["error"] = {"code": self.error[0], "message": self.error[1]}
        else:
            data.update(token_id=self.token_id, token_number=self.token_number, expires_ms=self.expires_ms)
        return data

    @classmethod
    def from_payload(cls, hip_id: str, data: dict[str, Any]) -> OutboxEntry:
        error = data.get("error")
        return cls(
            hip_id=hip_id,
            request_id=str(data["request_id"]),
            version="v1" if data.get("version") == "v1" else "v3",
            counter=str(data["counter"]),
            abha_address=data.get("abha_address"),
            token_id=data.get("token_id"),
            token_number=data.get("token_number"),
            expires_ms=data.get("expires_ms"),
            error=(str(error["code"]), str(error["message"])) if isinstance(error, dict) else None,
            outcome=str(data.get("outcome") or ""),
        )

    def share(self) -> ShareRequest:
        """The slice of the inbound share an on-share echoes (the profile itself stays with the token)."""
        profile = PatientProfile(
            abha_number=None, abha_address=self.abha_address, name="", gender=None,
            year_of_birth=None, month_of_birth=None, day_of_birth=None, phone=None,
        )  # fmt: skip
        return ShareRequest(
            self.version, self.request_id, None, self.hip_id, self.counter, PROFILE_SHARE, profile
        )


def _dialect_insert(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


_UPSERTS: dict[str, Any] = {}


_ONSHARE_COLUMNS = ("hip_id", "request_id", "version", "token_id", "payload", "status", "attempts",
                    "created_at", "deadline_at")  # fmt: skip


def _upsert_statement(flavour: str) -> Any:
    """The on-share upsert, built once per flavour: "json" for PostgreSQL through psycopg (a batch's
    rows as one JSON parameter, returning each row's key and id), else the dialect's name."""
    stmt = _UPSERTS.get(flavour)
    if stmt is None:
        if flavour == "json":
            ins = json_rows_insert(ON_SHARE, _ONSHARE_COLUMNS)
        else:
            ins = _dialect_insert(flavour)(ON_SHARE)
        # The gateway delivered the same REQUEST-ID again: the patient is waiting again, so the same
        # row is owed a fresh on-share with a fresh deadline.
        rearm = {k: ins.excluded[k] for k in ("payload", "token_id", "deadline_at")}
        stmt = ins.on_conflict_do_update(
            index_elements=["hip_id", "request_id"],
            set_={**rearm, "status": "pending", "last_error": None, "sent_at": None},
        )
        if flavour == "json":
            stmt = stmt.returning(ON_SHARE.c.hip_id, ON_SHARE.c.request_id, ON_SHARE.c.id)
        _UPSERTS[flavour] = stmt
    return stmt


async def _upsert_rows(conn: AsyncConnection, rows: list[Row]) -> list[int] | Later:
    """Insert or re-arm on-share rows; their ids, in the rows' order (on PostgreSQL read after the
    batch's commit, which brings them back)."""
    last: dict[tuple[str, str], Row] = {}
    for row in rows:  # the same share twice in one batch: one statement row, both get its id
        last[(row["hip_id"], row["request_id"])] = row
    ordered = [last[k] for k in sorted(last)]  # one lock order for every writer

    def in_order(found: Iterable[Sequence[Any]]) -> list[int]:
        ids = {(hip, req): int(i) for hip, req, i in found}
        return [ids[(row["hip_id"], row["request_id"])] for row in rows]

    if psycopg_path(conn):
        read = await execute_json_rows_returning(conn, _upsert_statement("json"), ordered)

        async def ids_after_commit() -> list[int]:
            return in_order(await read())

        return Later(ids_after_commit)
    await conn.execute(_upsert_statement(conn.dialect.name), ordered)
    found = await conn.execute(
        select(ON_SHARE.c.hip_id, ON_SHARE.c.request_id, ON_SHARE.c.id).where(
            tuple_(ON_SHARE.c.hip_id, ON_SHARE.c.request_id).in_(list(last))
        )
    )
    return in_order(found)


_ATTEMPT_COLUMNS = ("on_share_id", "at", "outbound_request_id", "status_code", "ok", "error", "duration_ms")
# Built once: the writer compiles each statement object once.
_ATTEMPT_INSERT = ATTEMPT.insert()
_ATTEMPT_JSON = json_rows_insert(ATTEMPT, _ATTEMPT_COLUMNS)


async def _attempt_rows(conn: AsyncConnection, rows: list[Row]) -> None:
    await execute_rows(conn, rows, json=_ATTEMPT_JSON, plain=_ATTEMPT_INSERT)


_OUTCOME = (
    update(ON_SHARE)
    .where(ON_SHARE.c.id == bindparam("oid"), _PENDING)
    .values(
        status=bindparam("new_status"),
        attempts=ON_SHARE.c.attempts + bindparam("inc"),
        last_error=bindparam("error"),
        sent_at=func.coalesce(bindparam("sent", type_=ON_SHARE.c.sent_at.type), ON_SHARE.c.sent_at),
    )
)
_OUTCOME_ROWS = json_rows([("oid", ON_SHARE.c.id.type), ("new_status", ON_SHARE.c.status.type),
                           ("inc", ON_SHARE.c.attempts.type), ("error", ON_SHARE.c.last_error.type),
                           ("sent", ON_SHARE.c.sent_at.type)])  # fmt: skip
_OUTCOME_JSON = (
    update(ON_SHARE)
    .where(ON_SHARE.c.id == _OUTCOME_ROWS.c.oid, _PENDING)
    .values(
        status=_OUTCOME_ROWS.c.new_status,
        attempts=ON_SHARE.c.attempts + _OUTCOME_ROWS.c.inc,
        last_error=_OUTCOME_ROWS.c.error,
        sent_at=func.coalesce(_OUTCOME_ROWS.c.sent, ON_SHARE.c.sent_at),
    )
)


async def _outcome_rows(conn: AsyncConnection, rows: list[Row]) -> None:
    await execute_rows(conn, sorted(rows, key=lambda r: int(r["oid"])), json=_OUTCOME_JSON, plain=_OUTCOME)


# The sweep's question: the oldest rows still owed.
_SWEEP = (
    select(ON_SHARE.c.id, ON_SHARE.c.deadline_at)
    .where(_PENDING)
    .order_by(ON_SHARE.c.id)
    .limit(bindparam("limit"))
)

# Operations for the SQL writer's batches (after the token rows of the same share).
ONSHARE_UPSERT = RowOp("on-share upsert", 35, _upsert_rows)
ATTEMPT_INSERT = RowOp("on-share attempt", 50, _attempt_rows)
ONSHARE_OUTCOME = RowOp("on-share outcome", 60, _outcome_rows)


@dataclass(frozen=True)
class _Job:
    """One claimed on-share: what to send, until when, and how many calls were made before."""

    on_share_id: int
    entry: OutboxEntry
    deadline_ms: int
    attempts: int


class Outbox:
    """One per worker process. `run()` is its delivery loop; `row()`/`record()`/`wake()` serve intake."""

    def __init__(
        self,
        redis: Redis,
        engine: AsyncEngine,
        writer: SqlWriter,
        gateway: GatewayClient,
        clock: Clock,
        deadline_s: float,
        *,
        concurrency: int = 64,
        sweep_interval_s: float = SWEEP_INTERVAL_S,
    ) -> None:
        self.redis = redis
        self.engine = engine
        self.writer = writer
        self.gateway = gateway
        self.clock = clock
        self.deadline_s = deadline_s
        self.concurrency = concurrency
        self.sweep_interval_s = sweep_interval_s
        self.worker = uuid.uuid4().hex[:12]
        self.lease_ms = int(deadline_s * 1000) + LEASE_MARGIN_MS
        self._claim = redis.register_script(_CLAIM)
        self._wake = redis.register_script(_WAKE)
        self._requeue = redis.register_script(_REQUEUE_ORPHAN)
        self._is_held = redis.register_script(_IS_HELD)
        self._done = redis.register_script(_DONE)
        self._batch = ScriptBatch(redis)  # the wake-ups and done markers of concurrent shares
        self._inflight: set[asyncio.Task[None]] = set()
        self._beat_at = -math.inf  # when our heartbeat key was last renewed (monotonic)
        self._sending: set[int] = set()  # on-share ids this worker has claimed and not yet let go
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False  # the delivery loop runs: wake() may hand its on-share to this worker
        # Blocking reads get their own connection pool: a BLPOP parked on a shared connection would
        # tie up the pool's read-timeout machinery that the queue's short commands rely on.
        self._waiter: Redis = blocking_client(redis, MAX_IDLE_WAIT_S + 5)

    # ---- intake side ----

    def row(self, entry: OutboxEntry) -> tuple[RowOp, Row]:
        """The SQL writer row that stores (or re-arms) this on-share; its result is the row's id."""
        now = datetime.now(UTC)
        return ONSHARE_UPSERT, {
            "hip_id": entry.hip_id, "request_id": entry.request_id, "version": entry.version,
            "token_id": entry.token_id, "payload": entry.payload, "status": "pending", "attempts": 0,
            "created_at": now, "deadline_at": now + timedelta(seconds=self.deadline_s),
        }  # fmt: skip

    async def record(self, entry: OutboxEntry) -> int:
        """Store (or re-arm) an on-share on its own; returns its id once committed."""
        (on_share_id,) = await self.writer.submit_rows([self.row(entry)])
        return int(on_share_id)

    async def wake(self, on_share_id: int, entry: OutboxEntry) -> None:
        """Make the on-share due now and nudge a worker. Failure is tolerated: the sweep finds it.

        When this worker's delivery loop runs and has room, the same script claims the on-share for it
        and the send starts here at once: no trip through the due set, the wake list and a claim.
        """
        deadline_ms = _now_ms() + int(self.deadline_s * 1000)
        job = orjson.dumps({"hip": entry.hip_id, "p": entry.payload, "dl": deadline_ms})
        claim: list[str | int] = ["", 0]
        marked = False
        if self._running and len(self._inflight) < self.concurrency and self._beat_fresh():
            claim = [self.worker, self.lease_ms]
            # Counted as ours from before the script runs: a sweep preparing its arguments meanwhile
            # must not take our fresh lease for a claim whose answer was lost.
            marked = on_share_id not in self._sending
            self._sending.add(on_share_id)
        woke = 0
        try:
            woke = int(await self._batch.call(
                self._wake,
                [DUE_KEY, lease_key(on_share_id), job_key(on_share_id), WAKE_KEY],
                [on_share_id, _now_ms(), BEAT_PREFIX, job, self.lease_ms + JOB_MARGIN_MS, WAKE_MAX, *claim],
            ))  # fmt: skip
        except Exception as exc:
            log.warning("on-share %s: wake-up failed (%s); the sweep will deliver it", on_share_id, exc)
        finally:
            if marked and woke != 2:
                self._sending.discard(on_share_id)
        if woke == 2:
            self._spawn(on_share_id, _Job(on_share_id, entry, deadline_ms, 0))

    # ---- lifecycle ----

    def start(self) -> None:
        self._running = True
        self._tasks = [
            asyncio.create_task(self._beat(), name=f"onshare-beat-{self.worker}"),
            asyncio.create_task(self.run(), name=f"onshare-outbox-{self.worker}"),
        ]

    async def close(self, grace_s: float = 2.0) -> None:
        self._running = False  # from now on intake only queues: another worker sends
        for task in reversed(self._tasks):
            await _cancel(task)
        if self._inflight:
            # Let sends in flight finish briefly; the rest are put back as due for the next worker.
            _, pending = await asyncio.wait(self._inflight, timeout=grace_s)
            for task in pending:
                await _cancel(task)
        with contextlib.suppress(Exception):
            await self.redis.delete(BEAT_PREFIX + self.worker)
        await close_blocking_client(self._waiter)
        await self._batch.aclose()

    async def _beat(self) -> None:
        """This worker is alive: its leases count. Renewed well inside its lifetime."""
        while True:
            try:
                await self._renew_beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("on-share heartbeat: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(BEAT_EVERY_S)

    async def _renew_beat(self) -> None:
        await self.redis.set(BEAT_PREFIX + self.worker, "1", px=BEAT_MS)
        self._beat_at = time.monotonic()

    async def run(self) -> None:
        next_sweep = 0.0
        while True:
            try:
                if time.monotonic() >= next_sweep:
                    await self.sweep()
                    next_sweep = time.monotonic() + self.sweep_interval_s
                claimed = await self._claim_due()
                if claimed and len(self._inflight) < self.concurrency:
                    continue  # there may be more due right now
                if len(self._inflight) >= self.concurrency:
                    await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
                    continue
                await self._waiter.blpop([WAKE_KEY], timeout=await self._idle_wait())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("on-share outbox loop: %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(0.5)

    async def _idle_wait(self) -> float:
        first = await self.redis.zrange(DUE_KEY, 0, 0, withscores=True)
        if not first:
            return MAX_IDLE_WAIT_S
        wait = (float(first[0][1]) - _now_ms()) / 1000
        return min(MAX_IDLE_WAIT_S, max(0.01, wait))

    async def _claim_due(self) -> int:
        free = self.concurrency - len(self._inflight)
        if free <= 0:
            return 0
        # Our heartbeat must be live before a lease names us, or a sweep could take the claim over. The
        # heartbeat task keeps it fresh; only after a gap (start, a Redis outage) is it renewed here.
        if not self._beat_fresh():
            await self._renew_beat()
        flat = await self._claim(
            keys=[DUE_KEY], args=[_now_ms(), free, KEY_PREFIX, self.worker, self.lease_ms]
        )
        for i in range(0, len(flat), 3):
            on_share_id, job, attempts = int(flat[i]), flat[i + 1], int(flat[i + 2] or 0)
            self._spawn(on_share_id, job, attempts)
        return len(flat) // 3

    def _beat_fresh(self) -> bool:
        return time.monotonic() - self._beat_at <= BEAT_EVERY_S * 2

    def _spawn(self, on_share_id: int, job: _Job | str | bytes, attempts: int = 0) -> None:
        """Send a claimed on-share in its own task; it counts as in flight until it is let go."""
        task = asyncio.create_task(self._deliver(on_share_id, job, attempts), name=f"onshare-{on_share_id}")
        self._inflight.add(task)
        self._sending.add(on_share_id)
        task.add_done_callback(self._inflight.discard)
        task.add_done_callback(functools.partial(_let_go, self._sending, on_share_id))

    # ---- delivery ----

    async def _job(self, on_share_id: int, raw: _Job | str | bytes, attempts: int) -> _Job | None:
        """What to send: handed over by the intake, from the job hash, or from SQL when Redis lost it
        (None: nothing owed)."""
        if isinstance(raw, _Job):
            return raw
        if raw:
            data = orjson.loads(raw)
            entry = OutboxEntry.from_payload(str(data["hip"]), data["p"])
            return _Job(on_share_id, entry, int(data["dl"]), attempts)
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(ON_SHARE).where(ON_SHARE.c.id == on_share_id))).first()
        if row is None or row.status != "pending":
            return None
        deadline_ms = int(_aware(row.deadline_at).timestamp() * 1000)
        return _Job(
            on_share_id, OutboxEntry.from_payload(row.hip_id, row.payload), deadline_ms, int(row.attempts)
        )

    async def _deliver(self, on_share_id: int, raw: _Job | str | bytes, attempts: int) -> None:
        try:
            job = await self._job(on_share_id, raw, attempts)
            if job is None:
                await self._mark_done(on_share_id)
                return
            await self._deliver_once(job)
        except asyncio.CancelledError:
            # Shutting down mid-send: hand it back as due so another worker (or our restart) sends it.
            with contextlib.suppress(Exception):
                await self._release(on_share_id, _now_ms())
            raise
        except Exception as exc:
            log.warning("on-share %s: delivery error %s: %s", on_share_id, type(exc).__name__, exc)
            with contextlib.suppress(Exception):
                await self._release(on_share_id, _now_ms() + 1000)

    async def _deliver_once(self, job: _Job) -> None:
        remaining = (job.deadline_ms - _now_ms()) / 1000
        if remaining <= 0:
            await self._finish(job.on_share_id, "failed", "deadline passed before delivery")
            return
        entry = job.entry
        started = time.perf_counter()
        try:
            async with asyncio.timeout(remaining):
                result = await self.gateway.on_share(
                    entry.share(), entry.token_number, self._expiry(entry), entry.error
                )
        except TimeoutError:
            result = GatewayResult(False, None, False, "deadline reached while the gateway was answering", "")
        duration_ms = int((time.perf_counter() - started) * 1000)
        onshare_attempts(str(result.ok).lower()).inc()
        attempts = job.attempts + 1
        if result.ok:
            status = "sent"
        elif result.retryable and _now_ms() + backoff_s(attempts) * 1000 < job.deadline_ms:
            status = "pending"
        else:
            status = "failed"
        if status != "pending":
            # The marker goes down before the SQL commit so no sweep can see "pending" and no lease.
            # Best effort: if Redis fails here, the SQL outcome below keeps the sweep away all the same.
            try:
                await self._mark_done(job.on_share_id)
            except Exception as exc:
                log.warning("on-share %s: done marker not set (%s)", job.on_share_id, type(exc).__name__)
        try:
            await self._record_attempt(job.on_share_id, result, duration_ms, status)
        except Exception as exc:
            if status != "sent":
                raise
            # Sent, but not recorded: never hand it back (that would send it twice). Its done marker
            # keeps sweeps away until the deadline, after which a sweep records it as failed.
            log.error("on-share %s was sent but SQL did not take its outcome: %s", job.on_share_id, exc)
            onshare_results(status).inc()
            return
        if status == "pending":
            await self._release(job.on_share_id, _now_ms() + int(backoff_s(attempts) * 1000), retried=True)
        else:
            onshare_results(status).inc()
            if status == "failed":
                log.warning("on-share %s for %s failed: %s", job.on_share_id, entry.request_id, result.error)

    def _expiry(self, entry: OutboxEntry) -> int:
        """Seconds of validity left now (not at intake): retries must not overstate it."""
        if entry.expires_ms is None:
            return 0
        return max(0, math.ceil((entry.expires_ms - self.clock.now_ms()) / 1000))

    async def _record_attempt(
        self, on_share_id: int, result: GatewayResult, duration_ms: int, status: str
    ) -> None:
        at = datetime.now(UTC)
        error = _cut(result.error)
        await self.writer.submit_rows([
            (ATTEMPT_INSERT, {
                "on_share_id": on_share_id, "at": at, "outbound_request_id": result.outbound_request_id[:64],
                "status_code": result.status, "ok": result.ok, "error": error, "duration_ms": duration_ms,
            }),
            (ONSHARE_OUTCOME, {
                "oid": on_share_id, "new_status": status, "inc": 1, "error": error,
                "sent": at if status == "sent" else None,
            }),
        ])  # fmt: skip

    async def _finish(self, on_share_id: int, status: str, reason: str) -> None:
        await self._mark_done(on_share_id)
        await self.writer.submit_rows([
            (ONSHARE_OUTCOME, {"oid": on_share_id, "new_status": status, "inc": 0, "error": reason, "sent": None})
        ])  # fmt: skip
        onshare_results(status).inc()
        log.warning("on-share %s %s: %s", on_share_id, status, reason)

    async def _mark_done(self, on_share_id: int) -> None:
        await self._batch.call(self._done, [lease_key(on_share_id), job_key(on_share_id)], [DONE_MS])

    async def _release(self, on_share_id: int, due_ms: int, *, retried: bool = False) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            if retried:
                pipe.hincrby(job_key(on_share_id), "a", 1)
            pipe.zadd(DUE_KEY, {str(on_share_id): due_ms})
            pipe.delete(lease_key(on_share_id))
            await pipe.execute()

    # ---- recovery ----

    def _requeue_args(self, on_share_id: int) -> list[Any]:
        mine = "1" if on_share_id in self._sending else "0"
        return [on_share_id, _now_ms(), BEAT_PREFIX, self.worker, mine]

    async def sweep(self, limit: int = 2000) -> int:
        """Queue pending rows nobody holds (crash, restart, lost Redis) once they are past the grace
        period; fail those past the deadline."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(_SWEEP, {"limit": limit})).all()
        now = time.time()
        # Rows record their deadline, not their age: deadline - this = the newest a row may be.
        youngest = now + self.deadline_s - min(SWEEP_GRACE_S, self.deadline_s * 0.4)
        live = [i for i, deadline_at in rows if now < _aware(deadline_at).timestamp() <= youngest]
        for on_share_id in (i for i, deadline_at in rows if _aware(deadline_at).timestamp() <= now):
            if not await self._is_held(keys=[lease_key(on_share_id)], args=[BEAT_PREFIX]):
                await self._finish(on_share_id, "failed", "deadline passed before delivery")
        queued = 0
        if live and isinstance(self.redis, RedisCluster):
            # Cluster pipelines refuse scripts; these are the few rows nobody holds, one call each.
            for on_share_id in live:
                found = await self._requeue(
                    keys=[DUE_KEY, lease_key(on_share_id)], args=self._requeue_args(on_share_id)
                )
                queued += int(found)
        elif live:
            async with self.redis.pipeline(transaction=False) as pipe:
                for on_share_id in live:
                    await self._requeue(
                        keys=[DUE_KEY, lease_key(on_share_id)],
                        args=self._requeue_args(on_share_id),
                        client=pipe,
                    )
                queued = sum(int(x) for x in await pipe.execute())
        if queued:
            log.info("on-share outbox: queued %d pending on-shares found in SQL", queued)
            await self.redis.lpush(WAKE_KEY, "1")
        return queued


def _let_go(sending: set[int], on_share_id: int, _task: asyncio.Task[None]) -> None:
    sending.discard(on_share_id)


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel and wait. A cancel that lands inside a Redis read is now and then swallowed there, so it
    is repeated until the task is really gone."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.25)


def _aware(stamp: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; they were written in UTC.
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _cut(text: str | None) -> str | None:
    return text[:500] if text else text

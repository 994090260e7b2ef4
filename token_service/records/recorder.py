"""The recorder copies every queue event from the facility's Redis stream into SQL, acking after commit.

Request handlers already write the token state they acknowledge (write-through); the recorder adds the
append-only history and catches whatever a crash left between a script and its SQL write (sweeps,
a worker killed mid-request). Entries are acknowledged and deleted only after their commit, and a
consumer that died leaves pending entries that another worker claims.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ResponseError

from token_service.queue import keys
from token_service.queue.service import Token
from token_service.records import tokens as token_sql
from token_service.records.writer import SqlWriter
from token_service.redis_guard import blocking_client, close_blocking_client
from token_service.tasks import cancel_and_wait

log = logging.getLogger(__name__)
GROUP = "recorder"
BATCH = 500
# An entry a live worker took is acked within milliseconds; 5 s idle means its worker died.
CLAIM_IDLE_MS = 5_000
# The request that changed a token writes it through itself; the recorder copies an entry once it is
# this old, so it upserts rows whose write-through has committed instead of waiting on their row locks
# (which tied one worker's writer to the other's at the morning rush).
SETTLE_MS = 500
# What one read brings is copied in chunks of this many entries, each committed (and then acked) before
# the next is parsed. At the morning rush a read brings up to BATCH entries every SETTLE_MS; copied in
# one go, their parsing held the event loop and their rows (a token and an event each) made one long
# SQL batch that every acknowledgement behind it waited for: ack latency peaked every half second.
CHUNK = 32
# The recorder reads every facility's stream in one blocking read on a connection of its own: Redis
# answers as soon as any of them has new entries, or after BLOCK_MS with none. An idle service thus
# sends one read a second per worker however many facilities it serves. (Asking each stream every
# 50 ms kept two idle workers serving 50 facilities 30-40 % of a core busy, sending Redis about 1,700
# reads a second.)
BLOCK_MS = 1000
# Redis Cluster refuses a read of streams in different slots (each facility has its own): there each
# stream is asked on its own, and while none has anything the wait between rounds doubles from 50 ms up
# to SETTLE_MS (an entry waits that long before it is copied anyway, so the history still lands within
# about a second).
IDLE_FIRST_S = 0.05
IDLE_MAX_S = SETTLE_MS / 1000
# How often the entries of a dead worker are looked for: they count as its once CLAIM_IDLE_MS idle.
CLAIM_EVERY_S = CLAIM_IDLE_MS / 1000


def parse_event(raw: bytes | str) -> tuple[str, int, str, Token]:
    ev = orjson.loads(raw)
    return ev["k"], int(ev["at"]), ev.get("desk") or "", Token.from_fields(ev["t"])


class Recorder:
    def __init__(
        self, redis: Redis, writer: SqlWriter, facilities: Callable[[], Awaitable[list[str]]]
    ) -> None:
        self.redis = redis
        self.writer = writer
        self.facilities = facilities
        self.consumer = f"{socket.gethostname()}-{os.getpid()}"
        self._groups: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._waiter: Redis | None = None  # the blocking reads' client (None on Redis Cluster)
        self.recorded = 0

    def start(self) -> None:
        if not isinstance(self.redis, RedisCluster):
            self._waiter = blocking_client(self.redis, BLOCK_MS / 1000 + 5)
        self._task = asyncio.create_task(self._run(), name="recorder")

    async def close(self) -> None:
        if self._task:
            await cancel_and_wait(self._task)
        if self._waiter is not None:
            await close_blocking_client(self._waiter)
            self._waiter = None

    async def _ensure_group(self, stream: str) -> None:
        if stream in self._groups:
            return
        try:
            await self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(stream)

    async def drain(self, hip_id: str) -> int:
        """Record everything pending for one facility now (used by rebuild and tests)."""
        total = 0
        while True:
            n = await self._once(hip_id, claim=True)
            total += n
            if n == 0:
                return total

    async def _once(self, hip_id: str, claim: bool, settle: bool = False) -> int:
        stream = keys.events_stream(hip_id)
        await self._ensure_group(stream)
        entries: list[tuple[str, dict[str, Any]]] = []
        if claim:
            answer: Any = await self.redis.xautoclaim(
                stream, GROUP, self.consumer, min_idle_time=0, count=BATCH
            )
            entries.extend(answer[1])
        if not entries:
            got: Any = await self.redis.xreadgroup(GROUP, self.consumer, {stream: ">"}, count=BATCH)
            for _, items in got or []:
                entries.extend(items)
        if not entries:
            return 0
        if settle:
            await _settle(entries[-1][0])
        await self._record(hip_id, stream, entries)
        return len(entries)

    async def _read_all(self, waiter: Redis, hips: list[str]) -> int:
        """One blocking read of every facility's stream; what it brings is copied once settled."""
        streams = {keys.events_stream(hip): hip for hip in hips}
        for stream in streams:
            await self._ensure_group(stream)
        got: Any = await waiter.xreadgroup(
            GROUP, self.consumer, dict.fromkeys(streams, ">"), count=BATCH, block=BLOCK_MS
        )
        found = [(stream, items) for stream, items in got or [] if items]
        if not found:
            return 0
        await _settle(max((items[-1][0] for _, items in found), key=_entry_ms))
        for stream, items in found:
            await self._record(streams[stream], stream, items)
        return sum(len(items) for _, items in found)

    async def _record(self, hip_id: str, stream: str, entries: list[tuple[str, dict[str, Any]]]) -> None:
        for start in range(0, len(entries), CHUNK):
            await self._record_chunk(hip_id, stream, entries[start : start + CHUNK])

    async def _record_chunk(
        self, hip_id: str, stream: str, entries: list[tuple[str, dict[str, Any]]]
    ) -> None:
        events: list[dict[str, Any]] = []
        states: list[Token] = []
        ids: list[str] = []
        for entry_id, fields in entries:
            ids.append(entry_id)
            raw = fields.get("e") if isinstance(fields, dict) else None
            if raw is None:
                continue  # a deleted entry left in the PEL
            kind, at_ms, desk, token = parse_event(raw)
            states.append(token)
            events.append(token_sql.event_row(hip_id, entry_id, kind, at_ms, desk, token))

        rows = token_sql.token_rows(states) + [(token_sql.EVENT_INSERT, e) for e in events]
        await self.writer.submit_rows(rows)
        # Ack and delete in one transaction: acked-but-kept entries would make the stream grow forever.
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(stream, GROUP, *ids)
            pipe.xdel(stream, *ids)
            await pipe.execute()
        self.recorded += len(events)

    async def _run(self) -> None:
        next_claim = 0.0
        idle_s = IDLE_FIRST_S
        while True:
            try:
                hips = await self.facilities()
                if time.monotonic() >= next_claim:  # now and then, what dead workers left unacknowledged
                    next_claim = time.monotonic() + CLAIM_EVERY_S
                    for hip in hips:
                        await self._claim_old(hip)
                if self._waiter is not None and hips:
                    await self._read_all(self._waiter, hips)  # waits up to BLOCK_MS by itself
                    continue
                busy = 0
                for hip in hips:
                    busy += await self._once(hip, claim=False, settle=True)
                if busy:
                    idle_s = IDLE_FIRST_S
                else:
                    await asyncio.sleep(idle_s)
                    idle_s = min(IDLE_MAX_S, idle_s * 2)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis or SQL down: keep trying, nothing is acked
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    # Redis lost a stream with its group (a restart without its data, a flush): the
                    # groups are made again on the next round, from the stream's first entry.
                    self._groups.clear()
                log.warning("recorder paused: %s", exc)
                await asyncio.sleep(0.5)

    async def _claim_old(self, hip_id: str) -> None:
        """Copy the entries a dead worker left unacknowledged (idle for CLAIM_IDLE_MS), all of them:
        BATCH at a time, each claim going on from where the last stopped."""
        stream = keys.events_stream(hip_id)
        await self._ensure_group(stream)
        start: Any = "0-0"
        while True:
            answer: Any = await self.redis.xautoclaim(
                stream, GROUP, self.consumer, min_idle_time=CLAIM_IDLE_MS, start_id=start, count=BATCH
            )
            start, claimed = answer[0], answer[1]
            if claimed:
                await self._record(hip_id, stream, claimed)
            if start == "0-0":
                return


def _entry_ms(entry_id: str) -> int:
    return int(entry_id.split("-")[0])


async def _settle(newest_id: str) -> None:
    """Wait until the newest entry read is SETTLE_MS old. Entry ids carry Redis's clock: the wait is
    capped, so a skewed clock cannot stall the recorder."""
    wait_ms = min(SETTLE_MS, _entry_ms(newest_id) + SETTLE_MS - time.time() * 1000)
    if wait_ms > 0:
        await asyncio.sleep(wait_ms / 1000)

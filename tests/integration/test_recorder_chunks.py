"""The recorder copies a long backlog of queue events in chunks: each chunk is committed and acked before
the next is parsed, so the SQL writer never holds one long batch that acknowledgements wait behind. Idle,
it waits for the entries of all its facilities in one read."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import text

from tests.support.app import make_settings, running_writer, seconds_until_recorded
from token_service.clock import FakeClock, SystemClock
from token_service.queue import keys
from token_service.queue.scripts import Scripts
from token_service.queue.service import FacilityRules, TokenQueue
from token_service.queue.status import Source
from token_service.records import recorder
from token_service.records.recorder import BATCH, CHUNK, GROUP, SETTLE_MS, Recorder
from token_service.records.tokens import EVENT_INSERT, TOKEN_UPSERT
from token_service.records.writer import Rows

HIP = "IN0710000123"


async def test_a_backlog_is_copied_chunk_by_chunk(tmp_path: Path, database_url: str, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url, database_url)
    redis = Redis.from_url(redis_url, decode_responses=True)
    queue = TokenQueue(redis, Scripts.register(redis), FakeClock(1_795_000_000_000))
    rules = FacilityRules(validity_s=8 * 3600)
    issued = 3 * CHUNK + 5  # three full chunks and a short one
    for i in range(issued):
        await queue.issue(HIP, "OPD1", rules, prefix="A", source=Source.SCAN_SHARE, request_id=f"req-{i}")
    stream = keys.events_stream(HIP)
    assert await redis.xlen(stream) == issued

    async with running_writer(settings) as (engine, writer):
        # Per submission: its event rows, its token rows, and the entries read but not yet acked.
        submitted: list[tuple[int, int, int]] = []
        submit_rows = writer.submit_rows

        async def spy(rows: Rows) -> list[Any]:
            pending = (await redis.xpending(stream, GROUP))["pending"]
            submitted.append(
                (
                    sum(op is EVENT_INSERT for op, _ in rows),
                    sum(op is TOKEN_UPSERT for op, _ in rows),
                    int(pending),
                )
            )
            return await submit_rows(rows)

        writer.submit_rows = spy  # type: ignore[method-assign]
        rec = Recorder(redis, writer, facilities=_hips)
        try:
            # One read takes the whole backlog (it is under the recorder's read size) ...
            assert issued <= BATCH
            assert await rec.drain(HIP) == issued
        finally:
            await rec.close()
            await redis.aclose()

        # ... and hands it to the writer a chunk at a time, a token row and an event row per entry.
        assert [events for events, _, _ in submitted] == [CHUNK, CHUNK, CHUNK, 5]
        assert all(tokens == events for events, tokens, _ in submitted)
        # Each chunk was acked once it committed, before the next one went to the writer.
        assert [pending for *_, pending in submitted] == [issued - n * CHUNK for n in range(4)]
        async with engine.connect() as conn:
            events = (await conn.execute(text("SELECT count(*) FROM token_event"))).scalar_one()
            numbers = (await conn.execute(text("SELECT count(DISTINCT number) FROM token"))).scalar_one()
        assert (events, numbers) == (issued, issued)
    check = Redis.from_url(redis_url)
    try:
        assert await check.xlen(stream) == 0  # acked entries are deleted too
    finally:
        await check.aclose()


async def test_an_idle_recorder_waits_in_one_read_for_every_facility(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    """Idle, the recorder waits for new entries of all its facilities in one blocking read: a read a
    second whatever their number. The first event that comes is copied once settled, as before."""
    settings = make_settings(tmp_path, redis_url, database_url)
    redis = Redis.from_url(redis_url, decode_responses=True)
    queue = TokenQueue(redis, Scripts.register(redis), SystemClock())
    others = [f"IN07100009{n:02d}" for n in range(19)]

    async def twenty() -> list[str]:
        return [*others, HIP]

    async def reads() -> int:
        stats: Any = await redis.info("commandstats")
        return int(stats.get("cmdstat_xreadgroup", {}).get("calls", 0))

    async with running_writer(settings) as (engine, writer):
        rec = Recorder(redis, writer, facilities=twenty)
        rec.start()
        try:
            await asyncio.sleep(0.3)
            before = await reads()
            await asyncio.sleep(2.0)
            # One read a second of all twenty streams; asking each stream on its own made about 80
            # here even with the doubling wait.
            assert await reads() - before <= 4
            # The waiting read brings it at once; it is copied once it is SETTLE_MS old.
            assert await seconds_until_recorded(queue, engine, HIP) < SETTLE_MS / 1000 + 1.0
        finally:
            await rec.close()
            await redis.aclose()


async def test_a_recorder_makes_its_group_again_when_redis_lost_the_stream(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    """Redis lost the facility's stream and its group (a restart without its data): the next event
    makes the stream again, and the recorder makes its group again and copies it."""
    settings = make_settings(tmp_path, redis_url, database_url)
    redis = Redis.from_url(redis_url, decode_responses=True)
    queue = TokenQueue(redis, Scripts.register(redis), SystemClock())
    async with running_writer(settings) as (engine, writer):
        rec = Recorder(redis, writer, facilities=_hips)
        rec.start()
        try:
            assert await seconds_until_recorded(queue, engine, HIP) < SETTLE_MS / 1000 + 1.0
            await redis.delete(keys.events_stream(HIP))
            await queue.issue(HIP, "OPD1", FacilityRules(validity_s=3600), prefix="A", source=Source.WALK_IN)
            copied, deadline = 1, time.monotonic() + 5
            while copied < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                async with engine.connect() as conn:
                    copied = (await conn.execute(text("SELECT count(*) FROM token_event"))).scalar_one()
            assert copied == 2
        finally:
            await rec.close()
            await redis.aclose()


async def test_a_dead_workers_entries_are_claimed_all_at_once(
    tmp_path: Path, database_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed at the morning rush can leave more entries read and unacknowledged than one
    claim takes (BATCH): one round of claims copies them all, so the history catches up at once."""
    settings = make_settings(tmp_path, redis_url, database_url)
    redis = Redis.from_url(redis_url, decode_responses=True)
    queue = TokenQueue(redis, Scripts.register(redis), FakeClock(1_795_000_000_000))
    left = BATCH + 40
    for _ in range(left):
        await queue.issue(HIP, "OPD1", FacilityRules(validity_s=8 * 3600), prefix="A", source=Source.WALK_IN)
    stream = keys.events_stream(HIP)
    await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    await redis.xreadgroup(GROUP, "killed-worker", {stream: ">"}, count=left)  # read, never acked
    assert (await redis.xpending(stream, GROUP))["pending"] == left
    monkeypatch.setattr(recorder, "CLAIM_IDLE_MS", 0)  # as if they had been idle long enough
    async with running_writer(settings) as (engine, writer):
        rec = Recorder(redis, writer, facilities=_hips)
        try:
            await rec._claim_old(HIP)
        finally:
            await rec.close()
            await redis.aclose()
        async with engine.connect() as conn:
            events = (await conn.execute(text("SELECT count(*) FROM token_event"))).scalar_one()
        assert events == left


async def _hips() -> list[str]:
    return [HIP]

"""Rebuild the day's live queues in Redis from SQL, for when Redis lost its data."""

from __future__ import annotations

from datetime import date

from redis.asyncio import Redis
from sqlalchemy import select

from token_service.clock import SystemClock, local_day
from token_service.config import Settings
from token_service.embedded import EmbeddedRedis
from token_service.models import Facility
from token_service.queue.scripts import Scripts
from token_service.queue.service import TokenQueue
from token_service.records import tokens as token_sql
from token_service.records.db import async_engine
from token_service.records.recorder import Recorder
from token_service.records.writer import SqlWriter


async def rebuild_facility(queue: TokenQueue, engine: object, hip_id: str, day: date) -> int:
    """Restore every token of (facility, day); newer state already in Redis is kept."""
    from sqlalchemy.ext.asyncio import AsyncEngine

    assert isinstance(engine, AsyncEngine)
    async with engine.connect() as conn:
        tokens = await token_sql.tokens_of_day(conn, hip_id, day)
    # In calling order, so that each waiting token goes to the end of its lane.
    for token in sorted(tokens, key=lambda t: (t.order, t.id)):
        await queue.restore(token)
    return len(tokens)


async def rebuild_queues(settings: Settings, hip_ids: list[str], day: date | None) -> dict[str, int]:
    embedded = None
    url = settings.redis_url
    if not url:
        embedded = EmbeddedRedis(settings.data_dir).start()
        url = embedded.url
    redis = Redis.from_url(url, decode_responses=True)
    engine = async_engine(settings)
    clock = SystemClock()
    queue = TokenQueue(redis, Scripts.register(redis), clock)
    writer = SqlWriter(engine)
    done: dict[str, int] = {}
    try:
        for hip in hip_ids:
            # Whatever history Redis still holds goes to SQL first, so SQL is as complete as it can be.
            async def only(h: str = hip) -> list[str]:
                return [h]

            await Recorder(redis, writer, only).drain(hip)
            async with engine.connect() as conn:
                row = (await conn.execute(select(Facility.timezone).where(Facility.hip_id == hip))).first()  # type: ignore[call-overload]
            tz = row[0] if row else "Asia/Kolkata"
            target = day or local_day(clock.now_ms(), tz)[0]
            done[hip] = await rebuild_facility(queue, engine, hip, target)
    finally:
        await queue.scripts.batch.aclose()
        await redis.aclose()
        await engine.dispose()
        if embedded:
            embedded.stop()
    return done

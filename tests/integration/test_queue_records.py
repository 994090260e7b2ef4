"""The packed token records: what the scripts store and what Python reads back agree, records stay in
Redis's compact hash encoding, and a day's end that changed mid-day (a new timezone) is kept per token."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import redis as sync_redis
from redis.asyncio import Redis

from tests.support.redis_records import read_token
from token_service.clock import FakeClock, local_day
from token_service.queue import keys
from token_service.queue.scripts import Scripts
from token_service.queue.service import FacilityRules, TokenQueue
from token_service.queue.status import Priority, Source, Status

HIP = "IN0710000123"
IST = ZoneInfo("Asia/Kolkata")


def _ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=IST).timestamp() * 1000)


async def test_a_days_tokens_round_trip_and_stay_compact(redis_url: str) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    sync = sync_redis.Redis.from_url(redis_url, decode_responses=True)
    await redis.flushall()
    clock = FakeClock(_ms(2026, 11, 23, 9, 0))
    queue = TokenQueue(redis, Scripts.register(redis), clock)
    rules = FacilityRules(validity_s=8 * 3600)
    try:
        issued = []
        for i in range(70):  # two buckets of 64 numbers
            prio = (Priority.NORMAL, Priority.SENIOR, Priority.EMERGENCY)[i % 7 % 3]
            res = await queue.issue(HIP, "ORTHO", rules, prefix="OR-", priority=prio, source=Source.SCAN_SHARE,
                                    request_id=f"7b3e2f0c-1d4a-4c1e-9b7a-{i:012d}", abha_address=f"p{i}@abdm")  # fmt: skip
            issued.append(res.token)
            clock.advance(7)
        # The issue's own state carries the identity; a later read does not (SQL keeps it).
        assert issued[5].request_id == "7b3e2f0c-1d4a-4c1e-9b7a-000000000005"
        assert issued[5].abha_address == "p5@abdm"
        # A working morning at desk "DESK1": long waits, recalls, a skip, transfers.
        clock.advance(3 * 3600)
        seen = {}
        for _ in range(40):
            got = await queue.call_next(HIP, "DESK1", ["ORTHO"], rules)
            assert got.called is not None
            seen[got.called.id] = got.called
            clock.advance(170)
        await queue.recall(got.called.id, "DESK1")
        await queue.skip(got.called.id, "DESK1", 3)
        await queue.transfer(issued[69].id, "OPD2")
        for token in issued:
            live = await queue.get(token.id)
            # Python's reading of the record is field for field what the scripts return.
            fields = read_token(sync, token.id)
            assert fields == {**live.to_fields(), "abha": "", "req": ""}, token.id
            assert (live.number, live.label, live.public_id) == (token.number, token.label, token.public_id)
            assert live.issued_ms == token.issued_ms and live.day_end_ms == token.day_end_ms
        completed = [await queue.get(i) for i in list(seen)[:39]]
        assert {t.status for t in completed} == {Status.COMPLETED}
        assert all(t.called_ms and t.finished_ms and t.finished_ms > t.called_ms for t in completed)
        assert (await queue.get(issued[69].id)).counter == "OPD2"
        # Waiting, called and completed records all fit Redis's compact (listpack) hash encoding.
        for n in (0, 1):
            bucket = keys.token_bucket(HIP, "ORTHO", issued[0].local_date, n * 64)
            assert sync.object("encoding", bucket) == "listpack", bucket
            assert max(len(v) for v in sync.hvals(bucket)) <= 64  # the encoding's limit
    finally:
        await redis.aclose()
        sync.close()


async def test_a_day_end_changed_mid_day_is_kept_per_token(redis_url: str) -> None:
    """An admin moves the facility to another timezone while the local date is the same in both: the
    tokens issued after it share a bucket with earlier ones but keep their own day's end."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    await redis.flushall()
    clock = FakeClock(_ms(2026, 11, 23, 12, 0))
    queue = TokenQueue(redis, Scripts.register(redis), clock)
    try:
        india = FacilityRules(timezone="Asia/Kolkata", validity_s=600)
        dubai = FacilityRules(timezone="Asia/Dubai", validity_s=600)
        first = (await queue.issue(HIP, "OPD1", india)).token
        second = (await queue.issue(HIP, "OPD1", dubai)).token
        assert first.local_date == second.local_date and second.number == 2
        assert first.day_end_ms == local_day(clock.now_ms(), "Asia/Kolkata")[1]
        assert second.day_end_ms == local_day(clock.now_ms(), "Asia/Dubai")[1] == first.day_end_ms + 5_400_000
        assert (await queue.get(second.id)).day_end_ms == second.day_end_ms
        called = await queue.call_next(HIP, "D1", ["OPD1"], india)
        assert called.called is not None and called.called.day_end_ms == first.day_end_ms
        clock.advance(3600)  # both past their validity: the sweep expires the one still waiting
        assert await queue.sweep(HIP, 100) >= 1
        assert (await queue.get(second.id)).status is Status.EXPIRED
        assert (await queue.get(second.id)).day_end_ms == second.day_end_ms
    finally:
        await redis.aclose()

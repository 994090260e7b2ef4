"""Lane copies (what the live hub keeps to rebuild boards and status positions) catch up with Redis by
reading only what changed: new tokens at a lane's tail and calls at its head cost a read of the new refs,
not of the whole line; anything else makes the copy read the lane whole. The reference-model state
machine (test_queue_state_machine) checks the copies' contents after every kind of operation."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from token_service.clock import FakeClock
from token_service.queue import keys
from token_service.queue.lanes import LaneMirror, Lanes
from token_service.queue.scripts import Scripts
from token_service.queue.service import FacilityRules, TokenQueue
from token_service.queue.status import Priority

HIP = "IN0710000123"
RULES = FacilityRules(timezone="Asia/Kolkata", validity_s=3600, priority_ratio=2, ageing_s=3600)
START_MS = 1_795_420_800_000  # 2026-11-22 10:50 IST


@pytest.fixture
async def queue(redis_url: str) -> AsyncIterator[TokenQueue]:
    client = Redis.from_url(redis_url, decode_responses=True)
    yield TokenQueue(client, Scripts.register(client), FakeClock(START_MS))
    await client.aclose()


async def _issue(queue: TokenQueue, n: int, counter: str = "OPD1", priority: Priority = Priority.NORMAL) -> list[str]:
    return [(await queue.issue(HIP, counter, RULES, priority=priority)).token.id for _ in range(n)]


async def _real(queue: TokenQueue, counter: str, lane: str) -> list[str]:
    refs: list[str] = await queue.redis.lrange(keys.lane_key(HIP, counter, lane), 0, -1)  # type: ignore[misc]
    return refs


async def _sync(mirror: LaneMirror) -> tuple[list[str], Lanes]:
    return await mirror.sync(["OPD1", "OPD2"], ["D1"])


async def test_new_tokens_and_calls_read_only_the_new_refs(queue: TokenQueue) -> None:
    mirror = LaneMirror(queue.redis, HIP)
    first = await _issue(queue, 500)
    await _issue(queue, 20, priority=Priority.SENIOR)
    await _sync(mirror)
    assert (mirror.full_reads, mirror.refs_read) == (4, 520)  # the first sync reads every lane whole

    # The morning rush: more patients arrive, desks call from the heads.
    new = await _issue(queue, 7)
    for _ in range(5):
        await queue.call_next(HIP, "D1", ["OPD1"], RULES)
    currents, lanes = await _sync(mirror)
    assert mirror.full_reads == 4 and mirror.refs_read == 520 + 7  # only the 7 new refs were read
    assert mirror.caught_up == 4
    assert list(mirror.copies[("OPD1", "n")].refs) == await _real(queue, "OPD1", "n")
    assert list(mirror.copies[("OPD1", "p")].refs) == await _real(queue, "OPD1", "p")
    # Calls by the ratio (2 priority to 1 normal): 2 seniors, 1 normal, 2 seniors; the last at the desk.
    assert lanes.waiting("OPD1") == 527 - 5 and currents[0].startswith(f"{HIP}.OPD1.")
    assert lanes.position("OPD1", first[1], normal=True) == 16 + 0  # 16 seniors still ahead
    assert lanes.position("OPD1", new[-1], normal=True) == 16 + 505
    assert lanes.position("OPD1", first[0], normal=True) is None  # called

    # Nothing changed: nothing read.
    await _sync(mirror)
    assert (mirror.full_reads, mirror.refs_read) == (4, 527)


async def test_a_snapshot_keeps_its_positions_while_the_copy_moves_on(queue: TokenQueue) -> None:
    mirror = LaneMirror(queue.redis, HIP)
    ids = await _issue(queue, 10)
    _, before = await _sync(mirror)
    await queue.call_next(HIP, "D1", ["OPD1"], RULES)
    later = await _issue(queue, 1)
    _, after = await _sync(mirror)
    assert mirror.full_reads == 4  # caught up, not read again
    # The older snapshot still answers as of its moment for the tokens still waiting (a token called
    # since has no place in either); the newer one as of its own.
    assert [before.position("OPD1", i, True) for i in (ids[0], ids[5], later[0])] == [None, 5, None]
    assert [after.position("OPD1", i, True) for i in (ids[0], ids[5], later[0])] == [None, 4, 9]
    assert (before.waiting("OPD1"), after.waiting("OPD1")) == (10, 10)


async def test_a_change_inside_a_lane_makes_the_copy_read_it_whole(queue: TokenQueue) -> None:
    mirror = LaneMirror(queue.redis, HIP)
    ids = await _issue(queue, 30)
    await _sync(mirror)
    called = (await queue.call_next(HIP, "D1", ["OPD1"], RULES)).called
    assert called is not None
    await queue.skip(called.id, "D1", places=3)  # back into the line, three places down
    await queue.cancel(ids[10])
    _, lanes = await _sync(mirror)
    assert mirror.full_reads == 5  # OPD1's normal lane again, the other three caught up
    assert list(mirror.copies[("OPD1", "n")].refs) == await _real(queue, "OPD1", "n")
    assert lanes.position("OPD1", called.id, normal=True) == 3
    assert lanes.position("OPD1", ids[10], normal=True) is None


async def test_a_copy_that_drifted_from_its_lane_is_read_whole(queue: TokenQueue) -> None:
    """A change the counters missed (a hand edit here) is found by the length and head checks."""
    mirror = LaneMirror(queue.redis, HIP)
    await _issue(queue, 5)
    await _sync(mirror)
    await queue.redis.lset(keys.lane_key(HIP, "OPD1", "n"), 0, "OPD1.20261122.00099")  # type: ignore[misc]
    _, lanes = await _sync(mirror)
    assert list(mirror.copies[("OPD1", "n")].refs) == await _real(queue, "OPD1", "n")
    assert lanes.position("OPD1", f"{HIP}.OPD1.20261122.00099", normal=True) == 0
    assert mirror.full_reads == 4 + 4  # the head did not match: every lane read whole again

    await queue.redis.lpop(keys.lane_key(HIP, "OPD1", "n"))  # type: ignore[misc]
    _, lanes = await _sync(mirror)
    assert list(mirror.copies[("OPD1", "n")].refs) == await _real(queue, "OPD1", "n")
    assert lanes.waiting("OPD1") == 4
    assert mirror.full_reads == 8 + 1  # shorter than the counters allow: that lane read whole

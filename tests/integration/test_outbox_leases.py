"""Outbox leases against a real Redis and SQL: who may send an on-share, and when it is taken over.

The rules: a lease counts only while its worker's heartbeat lives; wake() never re-queues an on-share
a live worker is sending; a sweep leaves rows younger than its grace period to their intake, takes
over a dead worker's lease, and releases a lease naming this worker for an on-share it is not sending
(a claim whose answer was lost).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, timedelta
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy import select, update

from tests.support.app import make_settings
from token_service.abdm.gateway import GatewayClient
from token_service.abdm.outbox import BEAT_PREFIX, DUE_KEY, ON_SHARE, Outbox, OutboxEntry, lease_key
from token_service.clock import SystemClock
from token_service.records import db
from token_service.records.writer import SqlWriter

HIP = "IN0710000123"


def entry(request_id: str) -> OutboxEntry:
    return OutboxEntry(hip_id=HIP, request_id=request_id, version="v3", counter="OPD1",
                       abha_address="a@sbx", token_id="t1", token_number="A1", expires_ms=None)  # fmt: skip


@pytest.fixture
async def outbox(tmp_path: Path, redis_url: str) -> AsyncIterator[Outbox]:
    settings = make_settings(tmp_path, redis_url)
    db.migrate(settings)
    engine = db.async_engine(settings)
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    async with httpx.AsyncClient() as http:
        gateway = GatewayClient("http://127.0.0.1:9", "c", "s", "sbx", http)
        box = Outbox(redis, engine, SqlWriter(engine), gateway, SystemClock(), 25.0)
        try:
            yield box
        finally:
            await redis.aclose()
            await engine.dispose()


async def due(box: Outbox) -> set[str]:
    return set(await box.redis.zrange(DUE_KEY, 0, -1))


async def test_lease_outlives_the_longest_send(outbox: Outbox) -> None:
    # A send is cut at the deadline; the lease must still be there when it ends.
    assert outbox.lease_ms >= outbox.deadline_s * 1000 + 10_000


async def test_wake_leaves_an_on_share_a_live_worker_is_sending(outbox: Outbox) -> None:
    oid = await outbox.record(entry("r1"))
    await outbox.redis.set(lease_key(oid), "other-worker")
    await outbox.redis.set(BEAT_PREFIX + "other-worker", "1", px=5000)
    await outbox.wake(oid, entry("r1"))
    assert await due(outbox) == set()  # a second send now would duplicate it
    assert await outbox.redis.get(lease_key(oid)) == "other-worker"
    # The same lease with its worker gone (no heartbeat): wake() queues it.
    await outbox.redis.delete(BEAT_PREFIX + "other-worker")
    await outbox.wake(oid, entry("r1"))
    assert await due(outbox) == {str(oid)}
    assert await outbox.redis.get(lease_key(oid)) is None


async def test_wake_claims_for_its_own_running_worker_when_it_has_room(outbox: Outbox) -> None:
    # The intake's worker sends at once: the same script that stores the job names this worker in the
    # lease, and the on-share never passes through the due set.
    held: list[asyncio.StreamWriter] = []  # a gateway that takes the connection and never answers
    server = await asyncio.start_server(lambda _r, w: held.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    outbox.gateway = GatewayClient(f"http://127.0.0.1:{port}", "c", "s", "sbx", outbox.gateway._http)
    outbox.start()
    try:
        oid = await outbox.record(entry("r3"))
        await outbox.wake(oid, entry("r3"))
        assert await outbox.redis.get(lease_key(oid)) == outbox.worker
        assert await due(outbox) == set()
        assert oid in outbox._sending and len(outbox._inflight) == 1
        # No room left: the on-share is queued as due for any worker, with no lease.
        outbox.concurrency = len(outbox._inflight)
        other = await outbox.record(entry("r4"))
        await outbox.wake(other, entry("r4"))
        assert await due(outbox) == {str(other)}
        assert await outbox.redis.get(lease_key(other)) is None
        assert other not in outbox._sending
    finally:
        await outbox.close()
        server.close()
        for w in held:
            w.close()
    # Stopped mid-send: the claimed one is handed back as due for the next worker.
    assert str(oid) in await due(outbox)


async def test_wake_rearms_a_finished_on_share(outbox: Outbox) -> None:
    # The gateway delivered the same REQUEST-ID again after the on-share went out: one more is owed.
    oid = await outbox.record(entry("r2"))
    await outbox.redis.set(lease_key(oid), "done")
    await outbox.wake(oid, entry("r2"))
    assert await due(outbox) == {str(oid)}


async def age(box: Outbox, seconds: float) -> None:
    """Make every on-share row look recorded `seconds` ago (its deadline moves closer)."""
    async with box.engine.begin() as conn:
        for oid, deadline_at in (await conn.execute(select(ON_SHARE.c.id, ON_SHARE.c.deadline_at))).all():
            stamp = deadline_at if deadline_at.tzinfo else deadline_at.replace(tzinfo=UTC)
            await conn.execute(
                update(ON_SHARE)
                .where(ON_SHARE.c.id == oid)
                .values(deadline_at=stamp - timedelta(seconds=seconds))
            )


async def test_sweep_leaves_a_young_row_to_its_intake(outbox: Outbox) -> None:
    # Committed, not yet woken: the intake's wake() is about to queue it. Had the sweep queued it, a
    # worker could send it and mark it done before that wake() ran, and wake() would send it again.
    oid = await outbox.record(entry("y1"))
    assert await outbox.sweep() == 0
    assert await due(outbox) == set()
    # Its intake died before wake() (or Redis lost it): past the grace period the sweep queues it.
    await age(outbox, 12)
    assert await outbox.sweep() == 1
    assert await due(outbox) == {str(oid)}


async def test_sweep_takes_over_only_what_nobody_holds(outbox: Outbox) -> None:
    alive, dead, lost, ours, done = [await outbox.record(entry(f"s{i}")) for i in range(5)]
    await age(outbox, 12)
    await outbox.redis.set(BEAT_PREFIX + "alive-worker", "1", px=5000)
    await outbox.redis.set(lease_key(alive), "alive-worker")
    await outbox.redis.set(lease_key(dead), "killed-worker")  # its heartbeat lapsed
    await outbox.redis.set(lease_key(lost), outbox.worker)  # leased to us, but we are not sending it
    await outbox.redis.set(lease_key(ours), outbox.worker)
    outbox._sending.add(ours)  # what a claim in flight records
    await outbox.redis.set(lease_key(done), "done")
    queued = await outbox.sweep()
    assert await due(outbox) == {str(dead), str(lost)}
    assert queued == 2
    assert await outbox.redis.get(lease_key(alive)) == "alive-worker"
    assert await outbox.redis.get(lease_key(ours)) == outbox.worker
    # A second sweep finds them already queued: nothing twice.
    assert await outbox.sweep() == 0

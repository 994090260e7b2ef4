"""The queue's Lua scripts on a real 3-master Redis Cluster: the reference-model state machine and a
multi-process issue storm over facilities spread across all masters. A script that touched a key outside
its facility's slot would fail here with CROSSSLOT, so passing proves one slot per script."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import random
from collections import defaultdict
from collections.abc import Iterator

import pytest
import redis as sync_redis
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine
from redis.asyncio import Redis, RedisCluster

from tests.support.cluster import RedisClusterProc, running_cluster
from tests.support.model import Model
from tests.support.queue_machine import HIP, RULES, START_MS, make_machine
from token_service.app import redis_client
from token_service.clock import FakeClock, SystemClock
from token_service.queue import keys
from token_service.queue.scripts import Scripts
from token_service.queue.service import FacilityRules, TokenQueue
from token_service.queue.status import Source

# Twelve facilities; the fixture checks they land on every master (their hash tags pick the slot).
FACILITIES = [f"IN{2900000000 + i * 7919}" for i in range(12)]
COUNTERS = ["OPD1", "OPD2", "ORTHO", "ENT"]
PROCESSES = 3
PER_PROCESS = 1500
COROUTINES = 30
SHARED_REQUESTS = 60


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterProc]:
    yield from running_cluster()


def test_facilities_spread_over_every_master(cluster: RedisClusterProc) -> None:
    masters = {cluster.master_of(keys.events_stream(hip)) for hip in FACILITIES}
    assert masters == set(cluster.ports)
    # Every key of one facility is in one slot: the prefix's hash tag decides it.
    with cluster.client() as rc:
        for hip in FACILITIES[:3]:
            slots = {rc.keyslot(k) for k in (keys.events_stream(hip), keys.expiry_index(hip),
                                             keys.token_bucket(hip, "OPD1", "20261122", 1),
                                             keys.wheel_key(hip, 29_000_000),
                                             keys.lane_key(hip, "OPD1", "p"), keys.desk_key(hip, "D1"),
                                             keys.sequence_key(hip, "OPD1", "20261122"))}  # fmt: skip
            assert len(slots) == 1


def test_queue_state_machine_on_cluster(cluster: RedisClusterProc) -> None:
    """The same machine as on a single Redis, its clients swapped for cluster clients."""
    base = make_machine(cluster.node_urls[0])

    class ClusterMachine(base):  # type: ignore[valid-type, misc]
        def __init__(self) -> None:
            RuleBasedStateMachine.__init__(self)
            self.loop = asyncio.new_event_loop()
            self.sync = sync_redis.RedisCluster(
                host="127.0.0.1", port=cluster.ports[0], decode_responses=True
            )
            self.sync.flushall(target_nodes=sync_redis.RedisCluster.PRIMARIES)
            self.clock = FakeClock(START_MS)
            self.redis = redis_client(cluster.url, decode_responses=True)
            self.queue = TokenQueue(self.redis, Scripts.register(self.redis), self.clock)
            self.model = Model(HIP, RULES.validity_s * 1000, RULES.priority_ratio, RULES.ageing_s * 1000,
                               now=START_MS)  # fmt: skip

    ClusterMachine.TestCase.settings = settings(
        max_examples=12, stateful_step_count=50, deadline=None, suppress_health_check=list(HealthCheck)
    )
    ClusterMachine.TestCase().runTest()


async def initialised(redis: Redis) -> None:
    """As build_state does: the slot map is loaded before concurrent use (see its comment)."""
    if isinstance(redis, RedisCluster):
        await redis.initialize()


def _worker(url: str, seed: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    async def main() -> list[tuple[str, str, str, int, str, str]]:
        redis = redis_client(url, decode_responses=True, max_connections=COROUTINES + 5)
        await initialised(redis)
        queue = TokenQueue(redis, Scripts.register(redis), SystemClock())
        rng = random.Random(seed)
        jobs: list[tuple[str, str, str | None]] = []
        for i in range(PER_PROCESS):
            if i < SHARED_REQUESTS:
                jobs.append((FACILITIES[i % len(FACILITIES)], COUNTERS[i % len(COUNTERS)], f"shared-{i}"))
            else:
                jobs.append((rng.choice(FACILITIES), rng.choice(COUNTERS), f"p{seed}-{i}" if i % 3 else None))
        rng.shuffle(jobs)
        results: list[tuple[str, str, str, int, str, str]] = []
        it = iter(jobs)

        async def runner() -> None:
            for hip, counter, req in it:
                r = await queue.issue(hip, counter, FacilityRules(), source=Source.SCAN_SHARE, request_id=req)
                results.append((req or "", hip, r.token.counter, r.token.number, r.token.id, r.outcome))

        await asyncio.gather(*(runner() for _ in range(COROUTINES)))
        # Call a few per facility: call_next and the desk keys live in the same slot as the lanes.
        for hip in FACILITIES:
            called = await queue.call_next(hip, "D1", COUNTERS, FacilityRules())
            assert called.called is not None
        await redis.aclose()
        return results

    out.put(asyncio.run(main()))


def test_concurrent_issues_across_masters(cluster: RedisClusterProc) -> None:
    cluster.flushall()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(cluster.url, seed, out)) for seed in range(PROCESSES)]
    for p in procs:
        p.start()
    results = [r for _ in procs for r in out.get(timeout=120)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert len(results) == PROCESSES * PER_PROCESS
    numbers: dict[tuple[str, str], list[int]] = defaultdict(list)
    for _, hip, counter, number, _, outcome in results:
        if outcome == "created":
            numbers[(hip, counter)].append(number)
    assert {hip for hip, _ in numbers} == set(FACILITIES)
    for key, got in numbers.items():
        assert sorted(got) == list(range(1, len(got) + 1)), f"{key}: gaps or duplicates"
    by_request: dict[str, set[str]] = defaultdict(set)
    for req, _, _, _, token_id, _ in results:
        if req.startswith("shared-"):
            by_request[req].add(token_id)
    assert len(by_request) == SHARED_REQUESTS and all(len(ids) == 1 for ids in by_request.values())
    assert sum(r[5] == "duplicate" for r in results) == SHARED_REQUESTS * (PROCESSES - 1)


async def test_restore_and_sweep_run_on_cluster(cluster: RedisClusterProc) -> None:
    """The two scripts the storm does not reach: rebuild's restore, and the expiry sweep."""
    cluster.flushall()
    redis: Redis = redis_client(cluster.url, decode_responses=True)
    await initialised(redis)
    clock = FakeClock(START_MS)
    queue = TokenQueue(redis, Scripts.register(redis), clock)
    rules = FacilityRules(validity_s=60)
    try:
        for hip in FACILITIES[:6]:
            issued = [(await queue.issue(hip, "OPD1", rules, source=Source.WALK_IN)).token for _ in range(3)]
            bucket, number = keys.token_location(issued[0].id)  # type: ignore[misc]
            await redis.hdel(bucket, number)
            await queue.restore(issued[0])
            assert (await queue.get(issued[0].id)).status == issued[0].status
            clock.advance(120)
            assert await queue.sweep(hip, 100) >= 3
            assert [t.status.value for t in [await queue.get(t.id) for t in issued]] == ["expired"] * 3
            clock.advance(-120)
    finally:
        await redis.aclose()

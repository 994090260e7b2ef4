"""20,000 issues from 4 processes × 50 coroutines across 10 counters: numbers are exactly 1..n per
(counter, day), never duplicated; a request id repeated by every process yields one token."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import random
from collections import defaultdict

from redis.asyncio import Redis

from token_service.clock import SystemClock
from token_service.queue.scripts import Scripts
from token_service.queue.service import FacilityRules, TokenQueue
from token_service.queue.status import Source

HIP = "IN0710000123"
COUNTERS = [f"C{i}" for i in range(10)]
PROCESSES = 4
PER_PROCESS = 5_000
COROUTINES = 50
SHARED_REQUESTS = 200  # request ids every process sends too (the gateway re-delivering a share)


def _worker(url: str, seed: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    async def main() -> list[tuple[str, str, int, str, str]]:
        redis = Redis.from_url(url, decode_responses=True, max_connections=COROUTINES + 5)
        queue = TokenQueue(redis, Scripts.register(redis), SystemClock())
        rng = random.Random(seed)
        jobs: list[tuple[str, str | None]] = []
        for i in range(PER_PROCESS):
            if i < SHARED_REQUESTS:
                k = i
                jobs.append((COUNTERS[k % len(COUNTERS)], f"shared-{k}"))
            else:
                jobs.append((rng.choice(COUNTERS), f"p{seed}-{i}" if i % 3 else None))
        rng.shuffle(jobs)
        results: list[tuple[str, str, int, str, str]] = []
        it = iter(jobs)

        async def runner() -> None:
            for counter, req in it:
                r = await queue.issue(HIP, counter, FacilityRules(), source=Source.SCAN_SHARE, request_id=req)
                results.append((req or "", r.token.counter, r.token.number, r.token.id, r.outcome))

        await asyncio.gather(*(runner() for _ in range(COROUTINES)))
        await redis.aclose()
        return results

    out.put(asyncio.run(main()))


def test_twenty_thousand_concurrent_issues(redis_url: str) -> None:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(redis_url, seed, out)) for seed in range(PROCESSES)]
    for p in procs:
        p.start()
    results = [r for _ in procs for r in out.get(timeout=240)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert len(results) == PROCESSES * PER_PROCESS

    created = [r for r in results if r[4] == "created"]
    numbers: dict[str, list[int]] = defaultdict(list)
    for _, counter, number, _, _ in created:
        numbers[counter].append(number)
    for counter, got in numbers.items():
        assert sorted(got) == list(range(1, len(got) + 1)), f"{counter}: gaps or duplicates"
    # Every shared request id was sent by all 4 processes and produced exactly one token.
    by_request: dict[str, set[str]] = defaultdict(set)
    for req, _, _, token_id, _ in results:
        if req.startswith("shared-"):
            by_request[req].add(token_id)
    assert len(by_request) == SHARED_REQUESTS
    assert all(len(ids) == 1 for ids in by_request.values())
    duplicates = [r for r in results if r[4] == "duplicate"]
    assert len(duplicates) == SHARED_REQUESTS * (PROCESSES - 1)
    assert len(created) == PROCESSES * PER_PROCESS - len(duplicates)

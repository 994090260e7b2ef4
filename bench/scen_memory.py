"""Scenario 7: Redis bytes per waiting token, and the service's RSS per worker."""

from __future__ import annotations

import time
import tracemalloc
import uuid

import redis
from redis.asyncio import Redis as AsyncRedis

from bench.context import Run
from bench.procs import start_redis
from bench.stats import Section
from token_service.queue import keys
from token_service.queue.lanes import LaneMirror
from token_service.queue.scripts import _source

HIP = "IN0710000123"
COUNTERS = ("OPD1", "OPD2", "ORTHO")


def _used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


async def _lane_copies(url: str) -> tuple[float, float]:
    """Python heap bytes per waiting token that a worker's copy of the lanes holds once read whole (as for
    a board or status page of the facility), and the peak while reading them (tracemalloc)."""
    client = AsyncRedis.from_url(url)
    try:
        mirror = LaneMirror(client, HIP)
        await mirror.sync(COUNTERS, [])  # loads the script and warms the client: not counted
        mirror = LaneMirror(client, HIP)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            await mirror.sync(COUNTERS, [])
            held, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        waiting = sum(len(copy) for copy in mirror.copies.values())
    finally:
        await client.aclose()
    return (held - before) / waiting, (peak - before) / waiting


async def run_memory(run: Run, section: Section) -> None:
    n = run.sizes.memory_tokens
    child, url = start_redis(run.workdir / "memory")
    try:
        client = redis.Redis.from_url(url)
        sha = client.script_load(_source("issue"))
        day = time.strftime("%Y%m%d")
        eod = int(time.time() * 1000) + 86_400_000
        before = _used(client)
        batch = 1000
        for start in range(0, n, batch):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(n, start + batch)):
                # As a share issues it: a REQUEST-ID and an ABHA address, so both idempotency keys exist.
                pipe.evalsha(sha, 2, keys.events_stream(HIP), keys.expiry_index(HIP), keys.facility_prefix(HIP),
                             int(time.time() * 1000), HIP, COUNTERS[i % 3], day, eod, 1_800_000,
                             str(uuid.uuid4()), f"patient{i}@sbx", "normal", "scan_share",
                             uuid.uuid4().hex[:12], "ABC"[i % 3])  # fmt: skip
            pipe.execute()
        after = _used(client)
        stream = int(client.memory_usage(keys.events_stream(HIP)) or 0)
        parts = {"token records": 0, "lanes": 0, "expiry wheel": 0, "REQUEST-ID map": 0, "re-scan map": 0}
        kinds = {"k": "token records", "w": "lanes", "x": "expiry wheel", "xb": "expiry wheel",
                 "r": "REQUEST-ID map", "a": "re-scan map"}  # fmt: skip
        prefix = keys.facility_prefix(HIP)
        encodings: dict[str, set[str]] = {}
        for key in client.scan_iter(match=prefix + "*", count=1000):
            name = key.decode()[len(prefix) :]
            kind = kinds.get(name.split(":", 1)[0])
            if kind is not None:
                parts[kind] += int(client.memory_usage(key, samples=0) or 0)
                encodings.setdefault(kind, set()).add(client.object("encoding", key).decode())
        waiting = sum(int(client.llen(keys.lane_key(HIP, c, "n"))) for c in COUNTERS)
        copy_held, copy_peak = await _lane_copies(url)
        # The recorder deletes the stream entries it has copied to SQL: what stays is the live queue.
        # (MEMORY USAGE of a large stream overstates it, so the stream is deleted, not subtracted.)
        client.delete(keys.events_stream(HIP))
        drained = _used(client)
        client.close()
    finally:
        child.stop()
    total = (after - before) / n
    live = (drained - before) / n
    section.rows.append(
        {"what": f"used_memory growth / waiting token ({waiting} waiting)", "bytes": round(total)}
    )
    section.rows.append({"what": "same, once the event stream is drained (the recorder XDELs copied entries)",
                         "bytes": round(live)})  # fmt: skip
    for kind, size in parts.items():
        section.rows.append({"what": f"{kind}, per token (MEMORY USAGE; {'/'.join(sorted(encodings.get(kind, ())))})",
                             "bytes": round(size / n)})  # fmt: skip
    section.rows.append(
        {
            "what": "event stream, per token (MEMORY USAGE, before the recorder drains it)",
            "bytes": round(stream / n),
        }
    )
    section.rows.append({"what": "a worker's copy of the lanes, per waiting token (Python heap, tracemalloc)",
                         "bytes": round(copy_held)})  # fmt: skip
    section.rows.append({"what": "the same, peak while reading the lanes whole", "bytes": round(copy_peak)})
    run.figures["redis_bytes_per_token"] = round(live)
    run.figures["lane_copy_bytes_per_token"] = round(copy_held)
    section.check(f"Redis bytes per waiting token at {n} waiting ≤ 300 B", live <= 300,
                  f"{live:.0f} B per token once the stream is drained, {total:.0f} B before")  # fmt: skip
    rss = run.figures.get("intake_rss_mb") or []
    soak = run.figures.get("soak_rss_mb") or []
    peak = max([*rss, *soak], default=0.0)
    section.rows.append({"what": "service RSS per worker after the intake scenario (MB)", "bytes": str(rss)})
    if peak:
        section.check("service RSS per worker ≤ 150 MB", peak <= 150, f"peak {peak} MB")

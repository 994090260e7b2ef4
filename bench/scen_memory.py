"""Scenario 7: Redis bytes per waiting token, and the service's RSS per worker."""

from __future__ import annotations

import time
import uuid

import redis

from bench.context import Run
from bench.procs import start_redis
from bench.stats import Section
from token_service.queue import keys
from token_service.queue.scripts import _source

HIP = "IN0710000123"
COUNTERS = ("OPD1", "OPD2", "ORTHO")


def _used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


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
                pipe.evalsha(sha, 2, keys.events_stream(HIP), keys.expiry_zset(HIP), keys.facility_prefix(HIP),
                             int(time.time() * 1000), HIP, COUNTERS[i % 3], day, eod, 1_800_000,
                             str(uuid.uuid4()), f"patient{i}@sbx", "normal", "scan_share",
                             uuid.uuid4().hex[:12], "ABC"[i % 3])  # fmt: skip
            pipe.execute()
        after = _used(client)
        stream = int(client.memory_usage(keys.events_stream(HIP)) or 0)
        sample = f"{HIP}.OPD1.{day}.{1:05d}"
        token_hash = int(client.memory_usage(keys.token_key(HIP, sample)) or 0)
        lanes = sum(int(client.memory_usage(keys.lane_key(HIP, c, "n")) or 0) for c in COUNTERS)
        expiry = int(client.memory_usage(keys.expiry_zset(HIP)) or 0)
        rkey = client.scan_iter(match=keys.facility_prefix(HIP) + "r:*", count=100)
        r_one = int(client.memory_usage(next(iter(rkey))) or 0)
        a_one = int(client.memory_usage(keys.rescan_key(HIP, "OPD1", day, "patient0@sbx")) or 0)
        waiting = sum(int(client.zcard(keys.lane_key(HIP, c, "n"))) for c in COUNTERS)
        client.close()
    finally:
        child.stop()
    total = (after - before) / n
    live = (after - before - stream) / n
    section.rows.append(
        {"what": f"used_memory growth / waiting token ({waiting} waiting)", "bytes": round(total)}
    )
    section.rows.append({"what": "same, without the event stream (the recorder XDELs copied entries)",
                         "bytes": round(live)})  # fmt: skip
    for what, size in (("token hash (MEMORY USAGE, one token)", token_hash),
                       ("REQUEST-ID key (one)", r_one), ("re-scan key (one)", a_one),
                       ("lane zsets, per token", lanes / n), ("expiry zset, per token", expiry / n),
                       ("event stream, per token (before the recorder drains it)", stream / n)):  # fmt: skip
        section.rows.append({"what": what, "bytes": round(size)})
    run.figures["redis_bytes_per_token"] = round(live)
    section.check(f"Redis bytes per waiting token at {n} waiting ≤ 300 B", live <= 300,
                  f"{live:.0f} B per token without the stream, {total:.0f} B with it")  # fmt: skip
    rss = run.figures.get("intake_rss_mb") or []
    soak = run.figures.get("soak_rss_mb") or []
    peak = max([*rss, *soak], default=0.0)
    section.rows.append({"what": "service RSS per worker after the intake scenario (MB)", "bytes": str(rss)})
    if peak:
        section.check("service RSS per worker ≤ 150 MB", peak <= 150, f"peak {peak} MB")

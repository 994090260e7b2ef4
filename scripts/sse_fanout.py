"""Measure one worker's SSE fan-out: N board streams and M status-page streams, in process.

Runs the real app (lifespan, live hub, Redis pub/sub, SQLite) and drives the real stream generators of
`token_service.api.board` the way the streaming response does (each yielded item is the bytes sent), without
sockets, so the figures are the event loop's own work per call-next: encoding, positions, status bodies.

    python scripts/sse_fanout.py --boards 2000 --status 2000 --calls 10 [--redis redis://127.0.0.1:6379/15]

Without --redis a private redis-server is started. Prints per call: ms until every board had the `call`,
until every board had the `update`, until every status page had its new `status`, and the process CPU
time spent on the fan-out.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.app import HIP, login, make_settings, running_app, seed
from tests.support.servers import RedisProc
from token_service.api import board as board_api
from token_service.api.live import hub_of


class Fleet:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {"call": 0, "update": 0, "status": 0}
        self.bytes = 0
        self.changed = asyncio.Event()

    async def consume(self, gen: Any) -> None:
        async for item in gen:
            chunk: bytes = item
            self.bytes += len(chunk)
            head = chunk[:40]
            for kind in ("call", "update", "status"):
                if b"event: " + kind.encode() + b"\r\n" in head:
                    self.counts[kind] += 1
            self.changed.set()

    async def wait(self, kind: str, target: int, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while self.counts[kind] < target:
            self.changed.clear()
            if self.counts[kind] >= target:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{kind}: {self.counts[kind]} of {target}")
            await asyncio.wait_for(self.changed.wait(), left)


async def run(args: argparse.Namespace, redis_url: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = make_settings(Path(tmp), redis_url, rate_limit_status_per_minute=0)
        seed(settings)
        async with running_app(settings) as (app, client):
            state = app.state.opd
            hub = hub_of(state)
            h = await login(client, "admin")
            url = f"/api/facilities/{HIP}/counters/OPD1/tokens"
            tokens = []
            for i in range(args.status + args.calls + 5):
                r = await client.post(url, json={"name": f"Ramesh Kumar {i}"}, headers=h)
                assert r.status_code == 201, r.text
                tokens.append(r.json())
            fleet = Fleet()
            tasks = []
            only = frozenset({"OPD1"})
            for i in range(args.boards):
                gen = board_api._board_stream(hub, HIP, only if i % 2 else None)
                tasks.append(asyncio.create_task(fleet.consume(gen)))
            lookup = board_api.lookup_of(state)
            for t in tokens[-args.status :] if args.status else []:
                tok = await lookup.token(t["public_id"])
                tasks.append(asyncio.create_task(fleet.consume(board_api._status_stream(state, hub, tok))))
            await asyncio.sleep(2.0)  # everyone has its first snapshot / status
            rows = []
            prof = cProfile.Profile() if args.profile else None
            if prof:
                prof.enable()
            for _ in range(args.calls):
                base = dict(fleet.counts)
                cpu0, t0 = time.process_time(), time.perf_counter()
                r = await client.post(f"/api/facilities/{HIP}/desks/D1/call-next", headers=h)
                assert r.status_code == 200, r.text
                await fleet.wait("call", base["call"] + args.boards)
                t_call = time.perf_counter() - t0
                await fleet.wait("update", base["update"] + args.boards)
                t_update = time.perf_counter() - t0
                await fleet.wait("status", base["status"] + args.status)
                t_status = time.perf_counter() - t0
                await asyncio.sleep(0.3)  # let stragglers finish before measuring CPU
                cpu = time.process_time() - cpu0 - 0.0
                rows.append((t_call * 1000, t_update * 1000, t_status * 1000, cpu * 1000))
            if prof:
                prof.disable()
                prof.dump_stats(args.profile)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    print(f"boards={args.boards} status={args.status} calls={args.calls}")
    if args.verbose:
        for row in rows:
            print("  " + "  ".join(f"{v:8.1f}" for v in row))
    for name, i in (("call to every board", 0), ("update to every board", 1), ("status to every page", 2),
                    ("process CPU per call", 3)):  # fmt: skip
        vals = [r[i] for r in rows]
        print(f"  {name:24s} median {statistics.median(vals):8.1f} ms   max {max(vals):8.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--boards", type=int, default=2000)
    ap.add_argument("--status", type=int, default=2000)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--redis", default="")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--profile", default="", help="write a cProfile of the fan-out to this file")
    args = ap.parse_args()
    if args.redis:
        asyncio.run(run(args, args.redis))
        return
    proc = RedisProc().start()
    try:
        asyncio.run(run(args, proc.url))
    finally:
        proc.cleanup()


if __name__ == "__main__":
    main()

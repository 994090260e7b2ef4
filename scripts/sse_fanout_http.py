"""SSE fan-out over real sockets: `opd-token serve --workers 1`, N board and M status-page connections.

    python scripts/sse_fanout_http.py --boards 1000 --status 1000 --calls 10

Starts a private redis-server and the service (SQLite) in a temporary directory, opens the connections
with plain asyncio streams (a minimal SSE reader), then calls next tokens one at a time and reports per
call: the worker's CPU time (psutil, the figure that matters: how long the event loop was busy), and
how long until every board had the `call` and the `update` and every status page its new `status`.
The client shares the 2-core box with the service, so the latency figures include its own parsing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from tests.support.app import HIP, PASSWORD, ServiceProc, make_settings, seed
from tests.support.servers import RedisProc


class Counts:
    def __init__(self) -> None:
        self.n = {b"call": 0, b"update": 0, b"status": 0}
        self.changed = asyncio.Event()

    async def wait(self, kind: bytes, target: int, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while self.n[kind] < target:
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{kind!r}: {self.n[kind]} of {target}")
            await asyncio.wait_for(self.changed.wait(), left)


async def reader(port: int, path: str, counts: Counts, ready: list[int]) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
    await w.drain()
    buf = b""
    while True:
        data = await r.read(65536)
        if not data:
            return
        buf += data
        *events, buf = buf.split(b"\r\n\r\n")
        for ev in events:  # (chunk-size lines of the chunked encoding ride along; they do not matter)
            for kind in counts.n:
                if b"event: " + kind + b"\r\n" in ev:
                    counts.n[kind] += 1
            if ev.startswith(b"HTTP/1.1"):
                ready.append(1)
        counts.changed.set()


def prepare(
    args: argparse.Namespace, svc: ServiceProc
) -> tuple[httpx.Client, dict[str, str], list[dict[str, str]]]:
    """Log in and issue the tokens whose status pages will listen."""
    http = httpx.Client(base_url=svc.url, timeout=30)
    token = http.post("/api/auth/login", json={"username": "admin", "password": PASSWORD}).json()
    http.cookies.clear()
    h = {"Authorization": f"Bearer {token['access_token']}"}
    issued = []
    for i in range(args.status + args.calls + 5):
        r = http.post(
            f"/api/facilities/{HIP}/counters/OPD1/tokens", json={"name": f"Ramesh Kumar {i}"}, headers=h
        )
        assert r.status_code == 201, r.text
        issued.append(r.json())
    return http, h, issued


async def run(args: argparse.Namespace, svc: ServiceProc) -> None:
    loop = asyncio.get_running_loop()
    http, h, issued = await loop.run_in_executor(None, prepare, args, svc)
    assert svc.proc is not None
    parent = psutil.Process(svc.proc.pid)
    workers = [p for p in parent.children(recursive=True) if "python" in p.name().lower()] or [parent]
    worker = max(workers, key=lambda p: p.memory_info().rss)
    counts = Counts()
    ready: list[int] = []
    tasks = []
    for i in range(args.boards):
        q = "?counters=OPD1" if i % 2 else ""
        tasks.append(
            asyncio.create_task(reader(svc.port, f"/api/facilities/{HIP}/board/events{q}", counts, ready))
        )
    for t in issued[-args.status :] if args.status else []:
        tasks.append(
            asyncio.create_task(reader(svc.port, f"/api/status/{t['public_id']}/events", counts, ready))
        )
    deadline = time.monotonic() + 120
    while len(ready) < len(tasks):
        assert time.monotonic() < deadline, f"{len(ready)} of {len(tasks)} connected"
        await asyncio.sleep(0.2)
    await asyncio.sleep(2.0)
    rows = []
    for _ in range(args.calls):
        base = dict(counts.n)
        cpu0 = sum(worker.cpu_times()[:2])
        t0 = time.perf_counter()
        r = await loop.run_in_executor(
            None, lambda: http.post(f"/api/facilities/{HIP}/desks/D1/call-next", headers=h)
        )
        assert r.status_code == 200, (r.status_code, r.text)
        await counts.wait(b"call", base[b"call"] + args.boards)
        t_call = time.perf_counter() - t0
        await counts.wait(b"update", base[b"update"] + args.boards)
        t_update = time.perf_counter() - t0
        await counts.wait(b"status", base[b"status"] + args.status)
        t_status = time.perf_counter() - t0
        await asyncio.sleep(0.5)
        cpu = sum(worker.cpu_times()[:2]) - cpu0
        rows.append((t_call * 1000, t_update * 1000, t_status * 1000, cpu * 1000))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(f"boards={args.boards} status={args.status} calls={args.calls} (one worker, real sockets)")
    if args.verbose:
        for row in rows:
            print("  " + "  ".join(f"{v:8.1f}" for v in row))
    for name, i in (("call to every board", 0), ("update to every board", 1), ("status to every page", 2),
                    ("worker CPU per call", 3)):  # fmt: skip
        vals = [r[i] for r in rows]
        print(f"  {name:24s} median {statistics.median(vals):8.1f} ms   max {max(vals):8.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--boards", type=int, default=1000)
    ap.add_argument("--status", type=int, default=1000)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    redis = RedisProc().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = make_settings(Path(tmp), redis.url)
            seed(settings)
            svc = ServiceProc(settings, env_extra={"OPD_RATE_LIMIT_STATUS_PER_MINUTE": "0"}).start()
            try:
                asyncio.run(run(args, svc))
            finally:
                svc.stop()
    finally:
        redis.cleanup()


if __name__ == "__main__":
    main()

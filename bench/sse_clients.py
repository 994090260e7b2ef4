"""A child process holding many real SSE connections (boards and status pages), logging event arrival times."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import uvloop

READY_TIMEOUT_S = 120.0


class Client:
    def __init__(self, path: str) -> None:
        self.path = path
        self.ready = asyncio.Event()
        self.calls: list[tuple[str, float]] = []  # board: (label, arrival)
        self.updates: list[float] = []  # status page: arrival of each status event
        self.failed = False
        self.dropped = False
        self.reason = ""


async def _chunk(reader: asyncio.StreamReader) -> bytes:
    size = int((await reader.readline()).strip() or b"0", 16)
    if size == 0:
        raise EOFError
    data = await reader.readexactly(size + 2)
    return data[:-2]


async def follow(
    host: str, port: int, client: Client, gate: asyncio.Semaphore, recording: asyncio.Event
) -> None:
    try:
        async with gate:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 30)
            writer.write(
                f"GET {client.path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode()
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        if head[9:12] != b"200":
            client.failed = True
            client.reason = "HTTP " + head[9:12].decode()
            client.ready.set()
            return
    except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
        client.failed = True
        client.reason = type(exc).__name__
        client.ready.set()
        return
    buf = b""
    try:
        while True:
            buf += await _chunk(reader)
            while b"\r\n\r\n" in buf:
                block, buf = buf.split(b"\r\n\r\n", 1)
                now = time.time()
                event, data = b"message", b""
                for line in block.split(b"\r\n"):
                    if line.startswith(b"event: "):
                        event = line[7:]
                    elif line.startswith(b"data: "):
                        data = line[6:]
                if event in (b"snapshot", b"status") and not client.ready.is_set():
                    client.ready.set()
                    continue
                if not recording.is_set():
                    continue
                if event == b"call":
                    client.calls.append((str(orjson.loads(data)["label"]), now))
                elif event == b"status":
                    client.updates.append(now)
    except (OSError, asyncio.IncompleteReadError, EOFError, ValueError) as exc:
        client.dropped = True
        client.reason = "dropped: " + type(exc).__name__
        client.ready.set()
    finally:
        writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--hip", required=True)
    parser.add_argument("--boards", type=int, default=0)
    parser.add_argument("--status", default="", help="comma-separated public ids, one client each")
    parser.add_argument("--out", required=True)
    ns = parser.parse_args()
    parts = urlsplit(ns.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    clients = [Client(f"/api/facilities/{ns.hip}/board/events") for _ in range(ns.boards)]
    clients += [Client(f"/api/status/{pid}/events") for pid in ns.status.split(",") if pid]
    gate, recording = asyncio.Semaphore(200), asyncio.Event()
    tasks = [asyncio.create_task(follow(host, port, c, gate, recording)) for c in clients]
    started = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in clients)), READY_TIMEOUT_S)
    except TimeoutError:
        for c in clients:
            if not c.ready.is_set():
                c.failed, c.reason = True, "no first event in time"
    failed = sum(1 for c in clients if c.failed or c.dropped)
    recording.set()
    print(f"ready {len(clients) - failed} {failed} {time.perf_counter() - started:.2f}", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the controller says when the calls are done
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    out = {
        "boards": [c.calls for c in clients if c.path.endswith("/board/events") and not c.failed],
        "status": [c.updates for c in clients if "/status/" in c.path and not c.failed],
        "failed": sum(1 for c in clients if c.failed),
        "dropped": sum(1 for c in clients if c.dropped),
        "reasons": dict(Counter(c.reason for c in clients if c.reason)),
    }
    await asyncio.to_thread(Path(ns.out).write_bytes, orjson.dumps(out))


if __name__ == "__main__":
    uvloop.run(main())

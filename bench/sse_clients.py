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

from bench.loadgen import settle_gc
from token_service.listen import raise_open_files

READY_TIMEOUT_S = 120.0


class Client:
    def __init__(self, path: str) -> None:
        self.path = path
        self.ready = asyncio.Event()
        self.calls: list[tuple[str, float]] = []  # board: (label, arrival)
        # Status page: the token's place in line before the calls, and (place, arrival) of each update.
        self.start_position: int | None = None
        self.updates: list[tuple[int, float]] = []
        self.failed = False
        self.dropped = False
        self.reason = ""


class Follower(asyncio.Protocol):
    """One SSE connection, read as it arrives: every event is timed when its bytes reach the process, so
    the figure is the service's delivery, not this process's parsing (a protocol, not a stream reader:
    no task wake-up per chunk, and thousands of these share one process with the service on 2 cores)."""

    def __init__(
        self, client: Client, request: bytes, recording: asyncio.Event, stopping: asyncio.Event
    ) -> None:
        self.client = client
        self.request = request
        self.recording = recording
        self.stopping = stopping
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.head = True
        self.buf = b""  # undecoded bytes (chunked transfer coding)
        self.body = b""  # decoded SSE text not yet split into events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCP transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buf += data
        if self.head:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if self.buf[9:12] != b"200":
                self._fail("HTTP " + self.buf[9:12].decode())
                return
            self.head, self.buf = False, self.buf[end + 4 :]
        while True:  # chunk: size in hex, CRLF, data, CRLF
            eol = self.buf.find(b"\r\n")
            if eol < 0:
                return
            size = int(self.buf[:eol], 16)
            if size == 0:
                self._fail("dropped: EOFError", dropped=True)
                return
            if len(self.buf) < eol + 2 + size + 2:
                return
            self.body += self.buf[eol + 2 : eol + 2 + size]
            self.buf = self.buf[eol + 2 + size + 2 :]
            *blocks, self.body = self.body.split(b"\r\n\r\n")
            for block in blocks:
                self._event(block, now)

    def _event(self, block: bytes, now: float) -> None:
        client = self.client
        event, data = b"message", b""
        for line in block.split(b"\r\n"):
            if line.startswith(b"event: "):
                event = line[7:]
            elif line.startswith(b"data: "):
                data = line[6:]
        # A status page's place in line (-1 once its token is called: past the front).
        place = orjson.loads(data).get("position") if event == b"status" else None
        position = -1 if place is None else int(place)
        if not self.recording.is_set():
            if event == b"status":
                client.start_position = position
            if event in (b"snapshot", b"status"):
                client.ready.set()
            return
        if event == b"call":
            client.calls.append((str(orjson.loads(data)["label"]), now))
        elif event == b"status":
            client.updates.append((position, now))

    def _fail(self, reason: str, dropped: bool = False) -> None:
        if self.client.failed or self.client.dropped:
            return
        if dropped:
            self.client.dropped = True
        else:
            self.client.failed = True
        self.client.reason = reason
        self.client.ready.set()
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.stopping.is_set():  # the service closed it before the run was over
            self._fail("dropped: " + (type(exc).__name__ if exc else "closed"), dropped=True)
        if not self.closed.done():
            self.closed.set_result(None)


async def follow(
    host: str, port: int, client: Client, gate: asyncio.Semaphore, recording: asyncio.Event,
    stopping: asyncio.Event, source: str | None = None,
) -> None:  # fmt: skip
    request = f"GET {client.path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    try:
        async with gate:
            transport, proto = await asyncio.wait_for(
                loop.create_connection(
                    lambda: Follower(client, request, recording, stopping), host, port,
                    local_addr=(source, 0) if source else None,
                ),
                30,
            )  # fmt: skip
            await asyncio.wait_for(client.ready.wait(), 60)
    except (OSError, TimeoutError) as exc:
        client.failed = True
        client.reason = type(exc).__name__
        client.ready.set()
        return
    try:
        await proto.closed
    finally:
        transport.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--hip", required=True)
    parser.add_argument("--boards", type=int, default=0)
    parser.add_argument("--status", default="", help="comma-separated public ids, one client each")
    parser.add_argument("--out", required=True)
    parser.add_argument("--source", help="local address to connect from (its own ~28,000 ports)")
    ns = parser.parse_args()
    raise_open_files()  # a socket per client
    parts = urlsplit(ns.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    clients = [Client(f"/api/facilities/{ns.hip}/board/events") for _ in range(ns.boards)]
    clients += [Client(f"/api/status/{pid}/events") for pid in ns.status.split(",") if pid]
    gate, recording, stopping = asyncio.Semaphore(200), asyncio.Event(), asyncio.Event()
    tasks = [
        asyncio.create_task(follow(host, port, c, gate, recording, stopping, ns.source)) for c in clients
    ]
    started = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in clients)), READY_TIMEOUT_S)
    except TimeoutError:
        for c in clients:
            if not c.ready.is_set():
                c.failed, c.reason = True, "no first event in time"
    failed = sum(1 for c in clients if c.failed or c.dropped)
    recording.set()
    settle_gc()  # no full collection of the connected fleet while events are being timed
    print(f"ready {len(clients) - failed} {failed} {time.perf_counter() - started:.2f}", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the controller says when the calls are done
    stopping.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    out = {
        "boards": [c.calls for c in clients if c.path.endswith("/board/events") and not c.failed],
        "status": [(c.start_position, c.updates) for c in clients if "/status/" in c.path and not c.failed],
        "failed": sum(1 for c in clients if c.failed),
        "dropped": sum(1 for c in clients if c.dropped),
        "reasons": dict(Counter(c.reason for c in clients if c.reason)),
    }
    await asyncio.to_thread(Path(ns.out).write_bytes, orjson.dumps(out))


if __name__ == "__main__":
    uvloop.run(main())

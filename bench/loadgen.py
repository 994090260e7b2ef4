"""Load from Python: a keep-alive HTTP/1.1 client on an asyncio protocol; closed- and open-loop drivers."""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


class _Answers(asyncio.Protocol):
    """Reads the answers of one keep-alive connection; each completes the future of its request."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.head_end = -1  # where the current answer's head ends in the buffer, once it is in
        self.length = 0
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.head_end < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head_end = end + 4
            lines = bytes(self.buffer[:end]).lower().split(b"\r\n")[1:]
            self.length, self.closing = 0, False
            for line in lines:
                name, _, value = line.partition(b":")
                if name == b"content-length":
                    self.length = int(value)
                elif name == b"connection":
                    self.closing = value.strip() == b"close"
        if len(self.buffer) < self.head_end + self.length:
            return
        status = int(self.buffer[9:12])
        body = bytes(self.buffer[self.head_end : self.head_end + self.length])
        del self.buffer[: self.head_end + self.length]
        self.head_end = -1
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionResetError("connection closed"))


class HttpConn:
    """One keep-alive connection; requests are pre-encoded bytes so the timed loop only moves bytes.

    A protocol, not streams: the answer is read in the transport's own callback and handed over with
    one future, so the client's CPU per request (on the same cores as the service) stays small.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.answers: _Answers | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        _, self.answers = await loop.create_connection(_Answers, self.host, self.port)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        if self.answers is None or self.answers.transport is None:
            await self.open()
        answers = self.answers
        assert answers is not None and answers.transport is not None
        answers.waiter = asyncio.get_running_loop().create_future()
        answers.transport.write(request)
        status, body = await answers.waiter
        if answers.closing:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.answers is not None and self.answers.transport is not None:
            self.answers.transport.close()
        self.answers = None


def encode(method: str, url: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    parts = urlsplit(url)
    lines = [f"{method} {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1",
             f"Host: {parts.netloc}"]  # fmt: skip
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class LoadResult:
    """Per request: index, wall-clock send time (intended time in open loop), latency s, HTTP status."""

    sent_at: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    index: list[int] = field(default_factory=list)
    elapsed_s: float = 0.0
    drain_s: float = 0.0  # after the step: until every on-share it owed had reached the sandbox

    @property
    def count(self) -> int:
        return len(self.status)

    def ok_count(self, expect: int) -> int:
        return sum(1 for s in self.status if s == expect)

    @property
    def rate(self) -> float:
        return self.count / self.elapsed_s if self.elapsed_s else 0.0


def settle_gc() -> None:
    """Collect now and freeze what is left, so that no full collection of this process's heap (the
    pre-built requests, earlier results, the SSE fleets: 40-90 ms pauses seen here) stalls a timed
    step and shows up as the service's latency. Young collections stay on."""
    gc.collect()
    gc.freeze()


async def drive(
    url: str, requests: list[bytes], *, concurrency: int, duration_s: float, rate: float | None = None
) -> LoadResult:
    """Send `requests` in order for at most `duration_s`: as fast as `concurrency` connections allow
    (closed loop), or at `rate` per second (open loop, latency counted from the intended send time so a
    stalled server cannot hide its queue)."""
    result = LoadResult()
    counter = itertools.count()
    # Every connection is open, and has answered once, before the clock starts: opened inside the timed
    # window, hundreds of connects in its first half second (the client's own included) were counted as
    # the first requests' latency.
    conns = [HttpConn(url) for _ in range(concurrency)]
    health = encode("GET", url.rstrip("/") + "/healthz", {})
    await asyncio.gather(*(conn.send(health) for conn in conns))
    settle_gc()
    wall0, mono0 = time.time(), time.perf_counter()
    deadline = mono0 + duration_s

    async def worker(conn: HttpConn) -> None:
        try:
            while True:
                i = next(counter)
                if i >= len(requests):
                    return
                if rate is not None:
                    intended = mono0 + i / rate
                    if intended >= deadline:
                        return
                    delay = intended - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                else:
                    intended = time.perf_counter()
                    if intended >= deadline:
                        return
                try:
                    status, _ = await conn.send(requests[i])
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    status = 599
                    await conn.close()
                done = time.perf_counter()
                result.index.append(i)
                result.sent_at.append(wall0 + (intended - mono0))
                result.latency_s.append(done - intended)
                result.status.append(status)
        finally:
            await conn.close()

    await asyncio.gather(*(worker(conn) for conn in conns))
    result.elapsed_s = time.perf_counter() - mono0
    return result


async def single_connection_latency(url: str, n: int, max_s: float = 10.0) -> list[float]:
    """Sequential keep-alive GETs on one connection: the path where delayed ACKs would add ~40 ms."""
    conn = HttpConn(url)
    request = encode("GET", url, {})
    out: list[float] = []
    try:
        for _ in range(min(20, n)):
            await conn.send(request)  # warm the connection
        stop = time.perf_counter() + max_s
        for _ in range(n):
            if time.perf_counter() > stop:
                break
            t = time.perf_counter()
            await conn.send(request)
            out.append(time.perf_counter() - t)
    finally:
        await conn.close()
    return out

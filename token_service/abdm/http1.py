"""The worker's HTTP/1.1 client for its calls to the ABDM gateway: keep-alive connections, JSON bodies.

At the morning rush every share costs an on-share, so this client's CPU is paid once per patient.
aiohttp, used before, spent ~145 µs of a worker's CPU per on-share here (its request and response
objects, header multidicts, URL objects, tracing hooks and timers): about a tenth of a share's cost
in the worker. This client writes a request as one buffer on a kept-alive connection and parses the
answer with httptools (uvicorn's parser): ~35 µs a call.

It does only what the gateway's API needs: one request at a time per connection, bodies in memory,
TLS by the default context. No cookies, redirects, proxies or compressed bodies (the gateway's API
sends none; a redirect or an error comes back as its status and body, for the caller to judge).

Failures::

    Unreachable    no complete answer: refused, reset, closed early, timed out (`timed_out`), or an
                   answer that is not HTTP or over `max_response_bytes`

A connection kept idle is used again only within `idle_s`, and one that the server closed while it sat
idle is found out when the request gets no answer at all: the request is then written once more on a
new connection, as browsers and other clients do (the server closed it without reading the request).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

import httptools

__all__ = ["GatewayHttp", "Unreachable"]

DEFAULT_PORTS = {"http": 80, "https": 443}


class Unreachable(Exception):
    """No complete answer came: the connection failed, closed early or timed out (`timed_out`)."""

    def __init__(self, name: str, *, timed_out: bool = False) -> None:
        super().__init__(name)
        self.name = name
        self.timed_out = timed_out


class _Origin(NamedTuple):
    scheme: str
    host: str
    port: int
    host_header: str


class _Target(NamedTuple):
    origin: _Origin
    path: str  # with its query


@functools.lru_cache(maxsize=256)
def _target(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == DEFAULT_PORTS[parts.scheme] else f"{shown}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(_Origin(parts.scheme, host, port, host_header), path)


class _Connection(asyncio.Protocol):
    """One connection; one request on it at a time. httptools calls the `on_*` methods while it parses."""

    def __init__(self, max_bytes: int) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._max_bytes = max_bytes
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._body: list[bytes] = []
        self._size = 0
        self._received = False  # any byte of the current answer
        self._headers_done = False
        self._framed = False  # the answer says where its body ends (Content-Length or chunked)
        self._keep = True

    # -- asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (The event loop, asyncio's or uvloop's, sets TCP_NODELAY on every TCP connection it makes.)
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            # Nothing was asked: a server that talks out of turn cannot be trusted with the next request.
            self._close()
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(Unreachable(f"bad answer: {exc}"))
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None or self._waiter.done():
            return
        if self._headers_done and not self._framed:
            # A body that runs to the end of the connection (no Content-Length, not chunked) is complete now.
            self._done(self._parser.get_status_code())
        elif self._received:
            self._fail(Unreachable("connection closed during the answer"))
        else:
            self._fail(_ClosedUnanswered("connection closed before an answer"))

    # -- httptools

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max_bytes:
            self._fail(Unreachable(f"answer over {self._max_bytes} bytes"))
            self._close()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            # An interim answer (100 Continue, 103 Early Hints): the final one follows on this connection.
            self._reset_answer()
            return
        self._keep = self._parser.should_keep_alive()
        self._done(status)

    # -- the client's side

    def send(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self._reset_answer()
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._waiter

    @property
    def reusable(self) -> bool:
        return self._keep and not self.closed

    def _reset_answer(self) -> None:
        self._body = []
        self._size = 0
        self._headers_done = False
        self._framed = False

    def _done(self, status: int) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((status, b"".join(self._body)))
        self._body = []
        self._received = False

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        self._keep = False
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _close(self) -> None:
        self._keep = False
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self._keep = False
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class _ClosedUnanswered(Unreachable):
    """The connection closed before any byte of the answer: the server may not have read the request."""


def _head(method: str, target: _Target, headers: Mapping[str, str], length: int) -> bytes:
    lines = [f"{method} {target.path} HTTP/1.1\r\nHost: {target.origin.host_header}\r\n"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"header {name!r} has a line break or a colon in its name")
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"Content-Length: {length}\r\n\r\n")
    return "".join(lines).encode("latin-1")


class GatewayHttp:
    """Kept-alive connections per origin, at most `limit` in use at once across all origins."""

    def __init__(
        self,
        *,
        limit: int = 100,
        idle_s: float = 4.0,
        max_response_bytes: int = 1 << 20,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._idle_s = idle_s
        self._max_bytes = max_response_bytes
        self._ssl = ssl_context
        self._open: set[_Connection] = set()
        self.closed = False

    @property
    def connections(self) -> int:
        """Open connections, idle or in use."""
        return sum(1 for conn in self._open if not conn.closed)

    async def request(
        self, method: str, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> tuple[int, bytes]:
        """(status, body) of one call; `Unreachable` when no complete answer came within `timeout_s`."""
        if self.closed:
            raise Unreachable("client closed")
        target = _target(url)
        data = _head(method, target, headers, len(body)) + body
        try:
            async with asyncio.timeout(timeout_s):
                async with self._slots:
                    conn, reused = self._idle_connection(target.origin), True
                    if conn is None:
                        conn, reused = await self._connect(target.origin), False
                    try:
                        status, content = await self._exchange(conn, data)
                    except _ClosedUnanswered:
                        if not reused:
                            raise
                        # Closed by the server while it sat idle: once more on a new connection.
                        conn = await self._connect(target.origin)
                        status, content = await self._exchange(conn, data)
        except TimeoutError as exc:
            raise Unreachable("TimeoutError", timed_out=True) from exc
        if conn.reusable and not self.closed:
            conn.idle_since = time.monotonic()
            self._idle.setdefault(target.origin, []).append(conn)
        else:
            self._forget(conn)
        return status, content

    async def _exchange(self, conn: _Connection, data: bytes) -> tuple[int, bytes]:
        try:
            return await conn.send(data)
        except BaseException:
            # Cancelled, timed out or failed mid-answer: the connection's state is unknown, so it goes.
            conn.abort()
            self._forget(conn)
            raise

    def _idle_connection(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to have been closed
            if conn.reusable and now - conn.idle_since < self._idle_s:
                return conn
            conn.abort()
            self._forget(conn)
        return None

    async def _connect(self, origin: _Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        if origin.scheme == "https":
            tls = self._ssl or _default_context()
        try:
            _, conn = await loop.create_connection(
                lambda: _Connection(self._max_bytes),
                origin.host,
                origin.port,
                ssl=tls,
                server_hostname=origin.host if tls is not None else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise Unreachable(type(exc).__name__) from exc
        self._open.add(conn)
        return conn

    def _forget(self, conn: _Connection) -> None:
        self._open.discard(conn)
        if not conn.closed:
            conn.abort()

    async def close(self) -> None:
        self.closed = True
        for conn in list(self._open):
            self._forget(conn)
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing


@functools.cache
def _default_context() -> ssl.SSLContext:
    return ssl.create_default_context()

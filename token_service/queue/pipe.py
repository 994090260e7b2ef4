"""A connection of a worker's own to Redis for its script calls, with requests pipelined on it.

redis-py's path for one call, batched or not, takes a connection from the pool and gives it back, arms
and disarms its timeouts, records its observability hooks and reads each answer through layers of its
own: ~140 µs of a worker's CPU per lone EVALSHA here, where the round trip itself (the write, the
event loop's wake-up, the read) costs ~35 µs. Under a steady load most script calls go alone, three
per share. `ScriptPipe` writes each batch of calls as one request on a connection it keeps and matches
the answers to the requests in order (Redis answers in the order it was sent), so a request does not
wait for the one before it to be answered. hiredis parses the answers.

What the pooled connections do for failures, it does too:

- the circuit breaker (`redis_guard`): a call fails at once while it is open, a call not answered within
  the socket timeout trips it, and an open breaker cuts short the calls waiting for answers;
- a connection the server closed (a Redis restart) is noticed when it closes, and the next request
  connects again; a request that could not be written because the connection had just closed is
  written once more on a fresh one (nothing of it reached Redis);
- a connection lost with requests in flight fails those requests (`ConnectionError`): Redis may have
  run them, so they are not sent again.

Only plain TCP and Unix-socket connections, with hiredis installed, use it; a TLS connection and Redis
Cluster keep redis-py's path (`ScriptPipe.usable`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

if HIREDIS_AVAILABLE:
    import hiredis

Command = tuple[Any, ...]


class _Request:
    __slots__ = ("answers", "fut", "left", "timer")

    def __init__(self, fut: asyncio.Future[list[Any]], count: int) -> None:
        self.fut = fut
        self.left = count
        self.answers: list[Any] = []
        self.timer: asyncio.TimerHandle | None = None


class _Protocol(asyncio.Protocol):
    def __init__(self, pipe: ScriptPipe) -> None:
        self.pipe = pipe
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(replyError=ResponseError, encoding=pipe.encoding)
        self.waiting: collections.deque[_Request] = collections.deque()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def request(self, data: bytes, count: int) -> asyncio.Future[list[Any]]:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        req = _Request(loop.create_future(), count)
        self.transport.write(data)  # raises when the transport has closed meanwhile: nothing was sent
        if self.pipe.timeout:
            req.timer = loop.call_later(self.pipe.timeout, self._timed_out)
        if not self.waiting and self.pipe.breaker is not None:
            self.pipe.breaker.reading.add(self)
        self.waiting.append(req)
        return req.fut

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            answer = self.reader.gets()
            if answer is False:
                return
            if not self.waiting:  # an answer nobody asked for: the connection is out of step
                self._fail(RedisConnectionError("Redis sent an answer nobody asked for"))
                return
            req = self.waiting[0]
            req.answers.append(answer)
            req.left -= 1
            if req.left == 0:
                self.waiting.popleft()
                if req.timer is not None:
                    req.timer.cancel()
                if not req.fut.done():
                    req.fut.set_result(req.answers)
                if not self.waiting and self.pipe.breaker is not None:
                    self.pipe.breaker.reading.discard(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"Redis connection lost: {exc or 'closed by the server'}"))

    def _timed_out(self) -> None:
        error = RedisTimeoutError("Timeout reading from Redis")
        if self.pipe.breaker is not None:
            self.pipe.breaker.trip(error)
        self._fail(error)

    def cut_short(self) -> None:
        """The breaker opened: the requests waiting here time out now (`redis_guard._expire_read`)."""
        self._fail(RedisTimeoutError("Timeout reading from Redis (circuit open)"))

    def _fail(self, error: Exception) -> None:
        """Fail every request in flight and drop the connection: its answers can no longer be matched."""
        self.closed = True
        waiting, self.waiting = self.waiting, collections.deque()
        for req in waiting:
            if req.timer is not None:
                req.timer.cancel()
            if not req.fut.done():
                req.fut.set_exception(error)
        if self.pipe.breaker is not None:
            self.pipe.breaker.reading.discard(self)
        if self.transport is not None:
            self.transport.abort()


class ScriptPipe:
    """Requests (lists of commands) on one pipelined connection; connected on first use and after a loss."""

    def __init__(self, redis: Redis) -> None:
        pool = redis.connection_pool
        kw = pool.connection_kwargs
        self.path: str | None = kw.get("path")
        self.host: str = kw.get("host", "localhost")
        self.port: int = int(kw.get("port", 6379))
        self.db = int(kw.get("db") or 0)
        self.username: str | None = kw.get("username")
        self.password: str | None = kw.get("password")
        self.timeout: float | None = kw.get("socket_timeout")
        self.connect_timeout: float | None = kw.get("socket_connect_timeout") or self.timeout
        self.encoding: str | None = kw.get("encoding", "utf-8") if kw.get("decode_responses") else None
        self.breaker: Any = getattr(pool.connection_class, "_opd_breaker", None)
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None

    @staticmethod
    def usable(redis: Redis) -> bool:
        if not HIREDIS_AVAILABLE or isinstance(redis, RedisCluster):
            return False
        cls = redis.connection_pool.connection_class
        return issubclass(cls, Connection | UnixDomainSocketConnection) and not issubclass(cls, SSLConnection)

    async def send(self, commands: Sequence[Command]) -> list[Any]:
        """Each command's answer, in order; an error answer is its `ResponseError` (`NoScriptError` for
        NOSCRIPT), in its place. A lost connection or a timeout fails the whole request."""
        if self.breaker is not None:
            self.breaker.check()  # open: fail at once rather than wait for a Redis that hangs
        data = b"".join(map(hiredis.pack_command, commands))
        for attempt in (1, 2):
            protocol = await self._connected()
            try:
                fut = protocol.request(data, len(commands))
            except (RuntimeError, OSError) as exc:  # closed meanwhile: the request was not written
                protocol.closed = True
                if attempt == 2:
                    raise RedisConnectionError(f"Redis connection lost: {exc}") from exc
                continue
            answers = await fut
            return [_error(a) if isinstance(a, ResponseError) else a for a in answers]
        raise AssertionError("unreachable")

    async def _connected(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and not protocol.closed:
            return protocol
        if self._connecting is None or self._connecting.done():
            # One connect at a time; concurrent requests wait for it. A finished one whose waiters all
            # went away (cancelled) is not reused: its answer, a failure perhaps, is stale.
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        protocol: _Protocol | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.path:
                    _, protocol = await loop.create_unix_connection(lambda: _Protocol(self), self.path)
                else:
                    _, protocol = await loop.create_connection(lambda: _Protocol(self), self.host, self.port)
                handshake: list[Command] = []
                if self.password:
                    auth = (
                        ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
                    )
                    handshake.append(auth)
                if self.db:
                    handshake.append(("SELECT", self.db))
                if handshake:
                    data = b"".join(map(hiredis.pack_command, handshake))
                    for answer in await protocol.request(data, len(handshake)):
                        if isinstance(answer, ResponseError):
                            raise RedisConnectionError(f"Redis refused the connection: {answer}")
        except BaseException as exc:
            if protocol is not None:
                protocol._fail(RedisConnectionError("connection abandoned"))
            if isinstance(exc, TimeoutError):
                error = RedisTimeoutError("Timeout connecting to Redis")
                if self.breaker is not None:
                    self.breaker.trip(error)
                raise error from exc
            if isinstance(exc, OSError):
                raise RedisConnectionError(f"Error connecting to Redis: {exc}") from exc
            raise
        assert protocol is not None
        self._protocol = protocol
        return protocol

    async def aclose(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.closed = True
            self._protocol.transport.close()
        self._protocol = None


def _error(answer: ResponseError) -> ResponseError:
    message = str(answer)
    return NoScriptError(message) if message.startswith("NOSCRIPT") else answer

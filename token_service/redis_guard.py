"""A circuit breaker for a Redis that hangs (stopped process, network partition) instead of dying.

A dead Redis refuses connections in a millisecond, so requests get their 503 at once. A hung one
accepts connections (the kernel's backlog) and never answers: every command waits its full socket
timeout. After one such timeout the breaker opens for the whole process, and from then on every
command of the guarded client fails at once with `RedisUnavailable` (a redis-py `ConnectionError`,
so everything that already copes with a dead Redis copes with this: the 503 handler, the recorder,
the sweeper, the outbox, the live fan-out). Reads that were already waiting when it opened are cut
short too, so nobody waits out their own timeout after the first one.

While open, a probe PINGs Redis on a fresh connection with a short timeout every `PROBE_EVERY_S`;
the first answer closes the breaker and traffic resumes on fresh connections.

It is installed once, on the client's connection class (`guard`), so every command, pipeline,
script, pub/sub and blocking client built from that connection pool goes through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from prometheus_client import Counter, Gauge
from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import AbstractConnection, Connection
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

log = logging.getLogger("token_service.redis")

PROBE_EVERY_S = 0.5
PROBE_TIMEOUT_S = 0.25

CIRCUIT_OPEN = Gauge("opd_redis_circuit_open", "1 while Redis is treated as unresponsive (503 at once)")
CIRCUIT_TRIPS = Counter("opd_redis_circuit_trips", "Times Redis stopped answering within the socket timeout")


class RedisUnavailable(RedisConnectionError):
    """Redis did not answer in time recently and has not answered a probe since: fail without waiting."""


class RedisBreaker:
    """Open after a timeout, closed again by the first successful probe. One per client (per process)."""

    def __init__(
        self,
        probe_client: Callable[[], Redis],
        probe_every_s: float = PROBE_EVERY_S,
        probe_timeout_s: float = PROBE_TIMEOUT_S,
    ) -> None:
        self._probe_client = probe_client
        self.probe_every_s = probe_every_s
        self.probe_timeout_s = probe_timeout_s
        self._open = False
        self._opened_at = 0.0
        self._probe: asyncio.Task[None] | None = None
        self._stopped = False
        # What waits for a reply with a timeout armed, cut short when the breaker opens: redis-py
        # connections (their socket timeout is set to 0) and the script batches' own connections
        # (`queue/pipe.py`), which fail their requests through a `cut_short()` of their own.
        self.reading: set[Any] = set()
        self.trips = 0

    @property
    def is_open(self) -> bool:
        return self._open

    def open_for_s(self) -> float:
        return time.monotonic() - self._opened_at if self._open else 0.0

    def check(self) -> None:
        if self._open:
            raise RedisUnavailable("Redis is not answering (circuit open); retry shortly")

    def trip(self, cause: BaseException) -> None:
        """A command timed out: open, cut short every read still waiting, start probing."""
        if self._open or self._stopped:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to probe from (a finaliser): the next timeout opens it
            return
        self._open = True
        self._opened_at = time.monotonic()
        self.trips += 1
        CIRCUIT_OPEN.set(1)
        CIRCUIT_TRIPS.inc()
        log.error("Redis did not answer in time (%s); answering 503 at once until it does", cause)
        self._probe = loop.create_task(self._probe_until_back(), name="redis-probe")
        for conn in list(self.reading):
            _expire_read(conn)

    async def _probe_until_back(self) -> None:
        attempts = 0
        while True:
            await asyncio.sleep(self.probe_every_s)
            attempts += 1
            if await self.ping():
                break
            if attempts % 20 == 0:
                log.warning("Redis still not answering after %.0f s", self.open_for_s())
        log.warning("Redis answers again after %.1f s; circuit closed", self.open_for_s())
        self._open = False
        CIRCUIT_OPEN.set(0)

    async def ping(self) -> bool:
        """One PING on a fresh client of its own, bounded by the probe timeout."""
        client = self._probe_client()
        try:
            await asyncio.wait_for(client.ping(), self.probe_timeout_s * 2)
            return True
        except asyncio.CancelledError:
            raise
        except Exception:
            return False
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), self.probe_timeout_s)

    async def aclose(self) -> None:
        self._stopped = True
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe


def _expire_read(conn: Any) -> None:
    """Let a read that is waiting for a reply time out now instead of at its deadline."""
    cut_short = getattr(conn, "cut_short", None)
    if cut_short is not None:
        cut_short()
        return
    expire = getattr(conn, "update_current_socket_timeout", None)  # redis-py >= 7
    if expire is not None:
        with contextlib.suppress(Exception):
            expire(0)


_HIREDIS_PACKER = HiredisRespSerializer()


def guarded_class(base: type[AbstractConnection], breaker: RedisBreaker) -> type[AbstractConnection]:
    """`base` (TCP, unix socket or TLS connection) with the breaker in front of connect, send and read."""
    if getattr(base, "_opd_breaker", None) is breaker:
        return base
    parent: Any = base

    class Guarded(parent):  # type: ignore[misc]
        _opd_breaker = breaker

        if HIREDIS_AVAILABLE:
            # redis-py's asyncio connections encode commands in Python (its sync ones use hiredis): the
            # same bytes from hiredis' C encoder, ~6 % of a worker's CPU under share load.
            def pack_command(self, *args: Any) -> list[bytes]:
                return cast(list[bytes], _HIREDIS_PACKER.pack(*args))

        async def connect(self) -> None:
            if not self.is_connected:
                breaker.check()
            try:
                await super().connect()
            except RedisTimeoutError as exc:
                breaker.trip(exc)
                raise

        async def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
            if not self.is_connected:
                breaker.check()
            try:
                await super().connect_check_health(*args, **kwargs)
            except RedisTimeoutError as exc:
                breaker.trip(exc)
                raise

        async def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
            breaker.check()
            try:
                await super().send_packed_command(*args, **kwargs)
            except RedisTimeoutError as exc:
                breaker.trip(exc)
                raise
            except RuntimeError as exc:
                # uvloop refuses a write on a transport the server has just closed (a Redis restart)
                # with a RuntimeError, which redis-py passes on as it is: it is a lost connection.
                raise RedisConnectionError(f"Redis connection lost: {exc}") from exc

        async def read_response(self, *args: Any, **kwargs: Any) -> Any:
            breaker.reading.add(self)
            try:
                return await super().read_response(*args, **kwargs)
            except RedisTimeoutError as exc:
                breaker.trip(exc)
                raise
            finally:
                breaker.reading.discard(self)

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return cast(type[AbstractConnection], Guarded)


def _guarded_topology(base: type[Any], breaker: RedisBreaker) -> type[Any]:
    """The cluster client's topology refresh, which it runs after any connection error: while the
    breaker is open it fails as `RedisUnavailable` (a connection error, so a 503) instead of trying every
    node and giving up with a `RedisClusterException` ("cannot be connected"), which is not one."""
    if getattr(base, "_opd_breaker", None) is breaker:
        return base

    class GuardedNodesManager(base):  # type: ignore[misc]
        __slots__ = ()
        _opd_breaker = breaker

        async def initialize(self, *args: Any, **kwargs: Any) -> None:
            breaker.check()
            try:
                await super().initialize(*args, **kwargs)
            except RedisClusterException as exc:
                if breaker.is_open:
                    raise RedisUnavailable(f"Redis is not answering (circuit open): {exc}") from exc
                raise

    return GuardedNodesManager


def guard(client: Redis, breaker: RedisBreaker) -> Redis:
    """Make every connection `client` opens (plain or cluster) go through `breaker`. Before first use."""
    if isinstance(client, RedisCluster):
        cluster: Any = client
        manager = cluster.nodes_manager
        for kwargs in (cluster.connection_kwargs, manager.connection_kwargs):
            kwargs["connection_class"] = guarded_class(kwargs.get("connection_class") or Connection, breaker)
        for node in [*manager.startup_nodes.values(), *manager.nodes_cache.values()]:
            node.connection_class = guarded_class(node.connection_class, breaker)
        manager.__class__ = _guarded_topology(type(manager), breaker)
    else:
        pool: Any = client.connection_pool
        pool.connection_class = guarded_class(pool.connection_class, breaker)
    return client


def blocking_client(redis: Redis, socket_timeout: float) -> Redis:
    """A second client with its own connections and a read timeout longer than a blocking wait."""
    if isinstance(redis, RedisCluster):
        # The cluster's connection kwargs carry client internals; pass on only what a connection needs.
        base = redis.get_connection_kwargs()
        kept = ("username", "password", "decode_responses", "socket_connect_timeout")
        kwargs = {k: base[k] for k in kept if base.get(k) is not None}
        nodes = [ClusterNode(n.host, n.port) for n in redis.nodes_manager.startup_nodes.values()]
        client = RedisCluster(startup_nodes=nodes, max_connections=2, socket_timeout=socket_timeout, **kwargs)
        return cast(Redis, client)
    pool = redis.connection_pool
    kwargs = {**pool.connection_kwargs, "socket_timeout": socket_timeout}
    return Redis(
        connection_pool=ConnectionPool(connection_class=pool.connection_class, max_connections=2, **kwargs)
    )


async def close_blocking_client(client: Redis) -> None:
    """Close a `blocking_client` with its connections."""
    if isinstance(client, RedisCluster):
        await client.aclose()
    else:
        await client.aclose(close_connection_pool=True)

"""The Redis circuit breaker on its own, against a real redis-server (and a real 3-master cluster) that is
stopped with SIGSTOP: one socket timeout, then failures at once as connection errors, then recovery."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tests.support.cluster import RedisClusterProc, cluster_tools_available
from tests.support.servers import RedisProc
from token_service.app import redis_client
from token_service.queue.scripts import ScriptBatch
from token_service.redis_guard import PROBE_TIMEOUT_S, RedisBreaker, RedisUnavailable, guard

TIMEOUT_S = 1.0


def guarded(url: str) -> tuple[Redis, RedisBreaker]:
    probe = {"socket_timeout": PROBE_TIMEOUT_S, "socket_connect_timeout": PROBE_TIMEOUT_S}
    breaker = RedisBreaker(lambda: redis_client(url, **probe))
    client = redis_client(
        url, decode_responses=True, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S
    )
    return guard(client, breaker), breaker


async def timed_incr(client: Redis, key: str) -> tuple[str, float]:
    sent = time.monotonic()
    try:
        await client.incr(key)
        outcome = "ok"
    except (RedisConnectionError, RedisTimeoutError) as exc:
        outcome = type(exc).__name__
    return outcome, time.monotonic() - sent


async def until_ok(client: Redis, key: str, within_s: float) -> float:
    start = time.monotonic()
    while (await timed_incr(client, key))[0] != "ok":
        assert time.monotonic() - start < within_s, "Redis did not come back"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def hang_and_recover(client: Redis, breaker: RedisBreaker, pid: int, key: str) -> None:
    await client.set(key, 0)
    os.kill(pid, signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        early = [asyncio.create_task(timed_incr(client, key)) for _ in range(4)]
        await asyncio.sleep(TIMEOUT_S / 2)
        late = [asyncio.create_task(timed_incr(client, key)) for _ in range(4)]
        results = await asyncio.gather(*early, *late)
        opened = time.monotonic()
        # Nobody waits longer than the first timeout: the late ones are cut short when it opens.
        assert all(outcome != "ok" for outcome, _ in results), results
        assert opened - stopped < TIMEOUT_S + 0.5, results
        assert all(took < TIMEOUT_S / 2 + 0.3 for _, took in results[4:]), results
        assert breaker.is_open
        # From now on: a connection error at once, no network wait.
        for _ in range(20):
            outcome, took = await timed_incr(client, key)
            assert outcome == RedisUnavailable.__name__ and took < 0.05, (outcome, took)
        with pytest.raises(RedisConnectionError):
            await client.ping()
    finally:
        os.kill(pid, signal.SIGCONT)
    took = await until_ok(client, key, within_s=2.0)
    assert not breaker.is_open and took < 1.5, took


async def test_breaker_on_a_hung_redis() -> None:
    rproc = RedisProc().start()
    assert rproc.proc is not None
    try:
        client, breaker = guarded(rproc.url)
        await hang_and_recover(client, breaker, rproc.proc.pid, "guard:n")
        # Pipelines (MULTI/EXEC on one connection) work again too.
        async with client.pipeline(transaction=True) as pipe:
            assert await pipe.incr("guard:n").get("guard:n").execute() is not None
        assert breaker.trips == 1
        await breaker.aclose()
        await client.aclose()
    finally:
        rproc.cleanup()


async def test_breaker_on_a_hung_redis_for_script_calls() -> None:
    """The script batches' own pipelined connection (`queue/pipe.py`) meets a hang as the pool does."""
    rproc = RedisProc().start()
    assert rproc.proc is not None
    try:
        client, breaker = guarded(rproc.url)
        batch = ScriptBatch(client)
        assert batch.pipe is not None
        incr = client.register_script("return redis.call('INCR', KEYS[1])")

        async def timed_call() -> tuple[str, float]:
            sent = time.monotonic()
            try:
                await batch.call(incr, ["guard:s"], [])
                outcome = "ok"
            except (RedisConnectionError, RedisTimeoutError) as exc:
                outcome = type(exc).__name__
            return outcome, time.monotonic() - sent

        assert (await timed_call())[0] == "ok"
        os.kill(rproc.proc.pid, signal.SIGSTOP)
        try:
            stopped = time.monotonic()
            early = [asyncio.create_task(timed_call()) for _ in range(4)]  # one request
            await asyncio.sleep(TIMEOUT_S / 2)
            late = [asyncio.create_task(timed_call()) for _ in range(4)]  # a second, pipelined after it
            results = await asyncio.gather(*early, *late)
            # The first request's timeout opens the breaker, and the second is cut short with it.
            assert all(outcome != "ok" for outcome, _ in results), results
            assert time.monotonic() - stopped < TIMEOUT_S + 0.5, results
            assert all(took < TIMEOUT_S / 2 + 0.3 for _, took in results[4:]), results
            assert breaker.is_open and breaker.trips == 1
            for _ in range(20):  # then a connection error at once, nothing written
                outcome, took = await timed_call()
                assert outcome == RedisUnavailable.__name__ and took < 0.05, (outcome, took)
        finally:
            os.kill(rproc.proc.pid, signal.SIGCONT)
        start = time.monotonic()
        while (await timed_call())[0] != "ok":
            assert time.monotonic() - start < 2.0, "script calls did not come back"
            await asyncio.sleep(0.02)
        assert not breaker.is_open and breaker.trips == 1
        await batch.aclose()
        await breaker.aclose()
        await client.aclose()
    finally:
        rproc.cleanup()


async def test_script_calls_fail_at_once_when_another_connection_opened_the_breaker() -> None:
    """The script connection is open and idle when a pooled command times out: its next call must not
    be written to the hung Redis (and wait out a timeout of its own)."""
    rproc = RedisProc().start()
    assert rproc.proc is not None
    try:
        client, breaker = guarded(rproc.url)
        batch = ScriptBatch(client)
        incr = client.register_script("return redis.call('INCR', KEYS[1])")
        assert await batch.call(incr, ["guard:o"], []) == 1  # connected, and idle from now on
        os.kill(rproc.proc.pid, signal.SIGSTOP)
        try:
            assert (await timed_incr(client, "guard:o"))[0] != "ok"
            assert breaker.is_open
            sent = time.monotonic()
            with pytest.raises(RedisUnavailable):
                await batch.call(incr, ["guard:o"], [])
            assert time.monotonic() - sent < 0.05
        finally:
            os.kill(rproc.proc.pid, signal.SIGCONT)
        await until_ok(client, "guard:o", within_s=2.0)
        # 1 before the hang, the pooled INCR that timed out (Redis runs it on resuming), the one that
        # found Redis back, and this call: the refused call wrote nothing.
        assert await batch.call(incr, ["guard:o"], []) == 4
        await batch.aclose()
        await breaker.aclose()
        await client.aclose()
    finally:
        rproc.cleanup()


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterProc]:
    if not cluster_tools_available():
        pytest.skip("redis-server / redis-cli for a local cluster not available")
    proc = RedisClusterProc().start()
    yield proc
    proc.cleanup()


async def test_breaker_on_a_hung_cluster_node(cluster: RedisClusterProc) -> None:
    """The cluster client reports unreachable nodes as `RedisClusterException`, which is no connection
    error; with the breaker open its topology refresh fails as `RedisUnavailable` instead (a 503)."""
    client, breaker = guarded(cluster.url)
    try:
        await client.initialize()  # type: ignore[attr-defined]
        key = "{IN0710000123}:guard"
        node = client.get_node_from_key(key)  # type: ignore[attr-defined]
        pid = cluster.procs[cluster.ports.index(int(node.port))].pid
        await hang_and_recover(client, breaker, pid, key)
    finally:
        await breaker.aclose()
        await client.aclose()


async def test_commands_are_encoded_as_redis_py_encodes_them(redis_url: str) -> None:
    """Guarded connections encode commands with hiredis' C encoder: byte for byte what redis-py's own
    asyncio encoder sends, Devanagari, numbers and binary included, and they still round-trip."""
    from redis.asyncio.connection import Connection

    client, _ = guarded(redis_url)
    try:
        conn = await client.connection_pool.get_connection()
        plain = Connection()
        for args in (("SET", "k", "श्री क्षमा ક્ષ"), ("EVALSHA", "ab" * 20, 2, "opd:{X}:ev", "x", 1_795_000_000_000,
                     -1e12, 0.1, b"\x00\xff"), ("CONFIG GET", "maxmemory")):  # fmt: skip
            assert b"".join(conn.pack_command(*args)) == b"".join(plain.pack_command(*args))
        await client.connection_pool.release(conn)
        await client.set("name", "श्री क्षमा")
        assert await client.get("name") == "श्री क्षमा"
    finally:
        await client.aclose()


def test_a_write_on_a_closed_transport_is_a_lost_connection(redis_url: str) -> None:
    """Under uvloop (as the service runs) a write on a transport that was closed under the connection,
    as when Redis restarts, raises a RuntimeError; a guarded connection reports a lost connection, which
    the service answers with 503, not 500."""
    import uvloop

    async def scenario() -> None:
        client, _ = guarded(redis_url)
        try:
            conn = await client.connection_pool.get_connection()
            conn._writer.transport.abort()  # the server went away between two commands
            with pytest.raises(RedisConnectionError, match="connection lost"):
                await conn.send_command("PING")
            await conn.disconnect()
            await client.connection_pool.release(conn)
            assert await client.ping()
        finally:
            await client.aclose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())

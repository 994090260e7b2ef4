"""`ScriptBatch` over a real redis-server: script calls made together go as one pipeline, and each caller
gets its own answer or its own error. Each case runs on the batches' own pipelined connection
(`ScriptPipe`) and on redis-py's pooled connections (what a TLS connection uses)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from tests.support.servers import RedisProc
from token_service.queue.pipe import ScriptPipe
from token_service.queue.scripts import ScriptBatch

# Counts its key up and answers its argument; the argument "bad" is refused before any write.
ECHO = """
if ARGV[1] == 'bad' then return redis.error_reply('refused ' .. KEYS[1]) end
redis.call('INCR', KEYS[1])
return ARGV[1]
"""


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture(params=["pipe", "pool"])
def connection(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _batch(client: Redis, connection: str) -> ScriptBatch:
    batch = ScriptBatch(client)
    if connection == "pool":
        batch.pipe = None
    else:
        assert batch.pipe is not None  # a plain TCP connection with hiredis installed
    return batch


@pytest.fixture
def pipelines(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every pipeline executed, on either kind of connection."""
    sizes: list[int] = []
    execute = Pipeline.execute
    send = ScriptPipe.send

    async def counted(self: Pipeline, raise_on_error: bool = True) -> Any:
        sizes.append(len(self.command_stack))
        return await execute(self, raise_on_error)

    async def sent(self: ScriptPipe, commands: Any) -> list[Any]:
        sizes.append(len(commands))
        return await send(self, commands)

    monkeypatch.setattr(Pipeline, "execute", counted)
    monkeypatch.setattr(ScriptPipe, "send", sent)
    return sizes


async def test_calls_made_together_share_one_pipeline_each_with_its_answer(
    redis: Redis, pipelines: list[int], connection: str
) -> None:
    echo = redis.register_script(ECHO)
    batch = _batch(redis, connection)
    args = ["bad" if i == 7 else f"a{i}" for i in range(20)]
    answers = await asyncio.gather(
        *(batch.call(echo, [f"k{i}"], [arg]) for i, arg in enumerate(args)), return_exceptions=True
    )
    assert pipelines == [20]
    for i, answer in enumerate(answers):
        if i == 7:
            assert isinstance(answer, ResponseError) and "refused k7" in str(answer)
        else:
            assert answer == f"a{i}"
    # Each call ran once; the refused one wrote nothing.
    assert await redis.get("k7") is None
    assert [await redis.get(f"k{i}") for i in (0, 8, 19)] == ["1", "1", "1"]
    # A lone call goes by itself: on redis-py's connections not as a pipeline of one.
    pipelines.clear()
    assert await batch.call(echo, ["k0"], ["x"]) == "x"
    assert pipelines == ([1] if connection == "pipe" else []) and await redis.get("k0") == "2"
    await batch.aclose()


async def test_requests_in_flight_together_get_their_own_answers(redis: Redis) -> None:
    """Batches written one after another on the one connection, each before the last is answered."""
    echo = redis.register_script(ECHO)
    pipe = ScriptPipe(redis)
    requests = [
        pipe.send([("EVALSHA", echo.sha, 1, f"r{i}-{j}", f"v{i}-{j}") for j in range(i + 1)])
        for i in range(6)
    ]
    # All six are written before the first answer is read.
    answers = await asyncio.gather(*requests)
    assert answers == [[f"v{i}-{j}" for j in range(i + 1)] for i in range(6)]
    await pipe.aclose()


async def test_a_batch_after_redis_lost_its_scripts_loads_them_again(redis: Redis, connection: str) -> None:
    echo = redis.register_script(ECHO)
    batch = _batch(redis, connection)
    assert await batch.call(echo, ["warm"], ["w"]) == "w"
    await redis.script_flush()  # as after a restart: EVALSHA now answers NOSCRIPT
    answers = await asyncio.gather(*(batch.call(echo, [f"n{i}"], [f"v{i}"]) for i in range(5)))
    assert answers == [f"v{i}" for i in range(5)]
    assert [await redis.get(f"n{i}") for i in range(5)] == ["1"] * 5
    await batch.aclose()


async def test_a_caller_that_went_away_does_not_hold_up_the_others(redis: Redis, connection: str) -> None:
    echo = redis.register_script(ECHO)
    batch = _batch(redis, connection)
    gone = asyncio.ensure_future(batch.call(echo, ["gone"], ["g"]))
    kept = [batch.call(echo, [f"kept{i}"], [f"k{i}"]) for i in range(3)]
    gone.cancel()
    assert await asyncio.gather(*kept) == ["k0", "k1", "k2"]
    with pytest.raises(asyncio.CancelledError):
        await gone
    await batch.aclose()


async def test_a_lost_connection_fails_every_call_of_its_batch_and_the_next_batch_recovers(
    connection: str,
) -> None:
    proc = RedisProc().start()
    # As the service's client: a connection the restart closed is retried once on a fresh one.
    retry = Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,))
    client = Redis.from_url(proc.url, decode_responses=True, socket_connect_timeout=1, retry=retry)
    try:
        echo = client.register_script(ECHO)
        batch = _batch(client, connection)
        assert await asyncio.gather(*(batch.call(echo, [f"k{i}"], ["up"]) for i in range(3))) == ["up"] * 3
        proc.kill()
        answers = await asyncio.gather(
            *(batch.call(echo, [f"k{i}"], ["down"]) for i in range(4)), return_exceptions=True
        )
        assert all(isinstance(a, RedisConnectionError) for a in answers), answers
        proc.start()
        echo = client.register_script(ECHO)  # a new server process has no scripts cached
        assert (
            await asyncio.gather(*(batch.call(echo, [f"k{i}"], ["back"]) for i in range(3))) == ["back"] * 3
        )
        await batch.aclose()
    finally:
        await client.aclose()
        proc.cleanup()

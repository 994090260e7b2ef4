"""One call shared by concurrent callers, without a convoy: what a cache entry expiring under thousands of
open status pages needs (a lock around the fill let them through one turn of the event loop at a time)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from token_service.directory import Directory
from token_service.tasks import SingleFlight

WAITERS = 500
TURN_S = 0.0005  # the CPU another task takes every turn of the loop: a worker busy with its streams


async def _busy_loop(stop: asyncio.Event) -> None:
    while not stop.is_set():
        time.sleep(TURN_S)  # noqa: ASYNC251  # on purpose: CPU the loop cannot give to others
        await asyncio.sleep(0)


async def _all_waiters_after_one_call(ask: Any, release: asyncio.Event) -> tuple[list[Any], float]:
    """Start the waiters, let the one call finish, and time from then until the last waiter has its
    answer, while another task keeps every turn of the loop busy."""
    stop = asyncio.Event()
    busy = asyncio.create_task(_busy_loop(stop))
    waiters = [asyncio.create_task(ask()) for _ in range(WAITERS)]
    await asyncio.sleep(0.05)  # every waiter is waiting for the one call
    released = time.perf_counter()
    release.set()
    answers = await asyncio.gather(*waiters)
    spread = time.perf_counter() - released
    stop.set()
    await busy
    return answers, spread


async def test_concurrent_callers_share_one_call_and_all_go_on_at_once() -> None:
    flight: SingleFlight[int] = SingleFlight()
    release = asyncio.Event()
    calls = 0

    async def make() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return 42

    answers, spread = await _all_waiters_after_one_call(lambda: flight.run("k", make), release)
    assert calls == 1 and answers == [42] * WAITERS
    # A convoy takes a turn per waiter: 500 turns of at least 0.5 ms each, 0.25 s and more.
    assert spread < 0.1, spread
    assert await flight.run("k", make) == 42 and calls == 2  # done calls are not kept: the next one runs


async def test_a_cancelled_waiter_leaves_the_call_to_the_others() -> None:
    flight: SingleFlight[str] = SingleFlight()
    release = asyncio.Event()

    async def make() -> str:
        await release.wait()
        return "done"

    first = asyncio.create_task(flight.run("k", make))
    second = asyncio.create_task(flight.run("k", make))
    await asyncio.sleep(0.01)
    first.cancel()  # a patient closed the page
    await asyncio.sleep(0.01)
    release.set()
    assert await second == "done"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_an_error_reaches_every_waiter_and_the_next_call_tries_again() -> None:
    flight: SingleFlight[int] = SingleFlight()
    outcomes = [RuntimeError("database unavailable"), 7]

    async def make() -> int:
        await asyncio.sleep(0.01)
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    both = await asyncio.gather(flight.run("k", make), flight.run("k", make), return_exceptions=True)
    assert [type(x) for x in both] == [RuntimeError, RuntimeError]
    assert await flight.run("k", make) == 7


async def test_an_expired_facility_is_loaded_once_for_every_status_page_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    directory = Directory(engine=None, default_validity_s=1800)  # type: ignore[arg-type]
    release = asyncio.Event()
    loads = 0

    async def load(hip_id: str) -> Any:
        nonlocal loads
        loads += 1
        await release.wait()
        config = f"config of {hip_id}"
        directory._cache[hip_id] = (time.monotonic(), config)  # type: ignore[assignment]  # as a load does
        return config

    monkeypatch.setattr(directory, "_load", load)
    answers, spread = await _all_waiters_after_one_call(lambda: directory.get("IN0710000123"), release)
    assert loads == 1 and set(answers) == {"config of IN0710000123"}
    assert spread < 0.1, spread

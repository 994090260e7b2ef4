"""Board and status SSE streams over a real uvicorn socket: headers, heartbeats, events, and a listener
released as soon as its client goes away; and the listener mailbox each stream reads from."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.support.app import HIP, ServiceProc, make_settings, seed
from tests.support.load import login_headers
from tests.support.servers import ServerThread, wait_for
from token_service.api import board as board_api
from token_service.api import live
from token_service.api.live import LISTENER_QUEUE, PING, Listener, Message, hub_of
from token_service.app import create_app
from token_service.queue import keys


def _events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event, data) pairs as a browser's EventSource dispatches them."""
    kind, data = "", ""
    for line in lines:
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
        elif line == "" and kind:
            yield kind, data
            kind, data = "", ""


@contextlib.contextmanager
def _serving(tmp_path: Path, redis_url: str) -> Iterator[tuple[ServerThread, live.LiveHub, dict[str, str]]]:
    """A seeded service on a real socket: the server, its live hub and a clerk's headers."""
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    app = create_app(settings)
    with ServerThread(app) as server:
        yield server, hub_of(app.state.opd), login_headers(server.url, "clerk")


def test_streams_ping_carry_calls_and_release_their_listener(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(board_api, "PING_S", 0.3)
    with _serving(tmp_path, redis_url) as (server, hub, clerk):
        issued = [
            httpx.post(
                f"{server.url}/api/facilities/{HIP}/counters/OPD1/tokens", json={}, headers=clerk
            ).json()
            for _ in range(2)
        ]
        with (
            httpx.Client(base_url=server.url, timeout=5) as http,
            http.stream("GET", f"/api/facilities/{HIP}/board/events") as board,
            http.stream("GET", f"/api/status/{issued[1]['public_id']}/events") as status,
        ):
            for resp in (board, status):
                assert resp.headers["content-type"].startswith("text/event-stream")
                assert resp.headers["cache-control"] == "no-store"
                assert resp.headers["x-accel-buffering"] == "no"
            board_events, status_events = _events(board.iter_lines()), _events(status.iter_lines())
            assert next(board_events)[0] == "snapshot"
            assert next(status_events)[0] == "status"
            wait_for(lambda: hub.listener_count == 2, 5, "both streams' listeners")
            # Heartbeats every PING_S while nothing happens: the pages' 40 s silence watchdog relies on them.
            started = time.monotonic()
            # (An "update" may come first: the snapshot rebuilt after the two issues.)
            kinds = [kind for kind, _ in _take_until(board_events, "ping")]
            kinds += [kind for kind, _ in _take_until(board_events, "ping")]
            assert kinds.count("ping") == 2 and set(kinds) <= {"ping", "update"}
            assert 0.4 < time.monotonic() - started < 2.0
            assert "ping" in [kind for kind, _ in _take_until(status_events, "ping")]
            r = httpx.post(f"{server.url}/api/facilities/{HIP}/desks/D1/call-next", headers=clerk, timeout=5)
            assert r.status_code == 200
            kinds = [kind for kind, _ in _take_until(board_events, "call")]
            assert kinds[-1] == "call" and set(kinds) <= {"ping", "update", "call"}
            # The status page learns its patient moved up to the front of the line.
            _take_until(status_events, "status", '"position":0')
        # Both clients hung up: their listeners are gone at once, not at the next event or ping.
        wait_for(lambda: hub.listener_count == 0, 2, "the listeners to be released")


def test_a_worker_reads_only_the_events_of_facilities_it_serves(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No board or status page asked for: the worker is not subscribed and reads none of the events its
    own issues publish. The first snapshot subscribes (the board then follows calls); the subscription
    stays while a stream is open, and goes with what was kept of the facility once nobody has listened
    or asked for `WATCH_IDLE_S`."""
    monkeypatch.setattr(live, "WATCH_IDLE_S", 1.0)
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    app = create_app(settings)
    channel = keys.live_channel(HIP)
    with ServerThread(app) as server, redis.Redis.from_url(redis_url) as r:
        hub = hub_of(app.state.opd)
        clerk = login_headers(server.url, "clerk")
        issue = f"{server.url}/api/facilities/{HIP}/counters/OPD1/tokens"
        wait_for(lambda: hub.online, 5, "the hub's subscription connection")
        for _ in range(3):
            assert httpx.post(issue, json={}, headers=clerk).status_code == 201

        def subscribers() -> int:
            return int(r.pubsub_numsub(channel)[0][1])

        assert subscribers() == 0 and hub.watched == [] and hub.events_seen == 0

        board = httpx.get(f"{server.url}/api/facilities/{HIP}/board").json()
        assert board["waiting"]["OPD1"] == 3
        assert subscribers() == 1 and hub.watched == [HIP]
        with (
            httpx.Client(base_url=server.url, timeout=5) as http,
            http.stream("GET", f"/api/facilities/{HIP}/board/events") as stream,
        ):
            events = _events(stream.iter_lines())
            assert next(events)[0] == "snapshot"
            r2 = httpx.post(f"{server.url}/api/facilities/{HIP}/desks/D1/call-next", headers=clerk, timeout=5)
            assert r2.status_code == 200
            assert _take_until(events, "call", '"label":"A1"')
            time.sleep(2.0)  # twice WATCH_IDLE_S: an open stream keeps its facility subscribed
            assert subscribers() == 1 and hub.watched == [HIP]
            assert httpx.post(issue, json={}, headers=clerk).status_code == 201
            wait_for(lambda: hub.snapshot_of(HIP) is not None and hub.snapshot_of(HIP).waiting["OPD1"] == 3,
                     5, "the kept snapshot to follow the events")  # fmt: skip
        wait_for(lambda: subscribers() == 0, 5, "the idle facility's unsubscribe")
        assert hub.watched == [] and hub.snapshot_of(HIP) is None and HIP not in hub.recent


def test_a_call_reaches_status_pages_at_once_and_a_burst_rebuilds_once_per_window(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first event after a quiet spell rebuilds the snapshot at once (a status page follows the call
    without waiting out the window); events during the `COALESCE_S` after a rebuild share the next one."""
    monkeypatch.setattr(live, "COALESCE_S", 2.0)
    with _serving(tmp_path, redis_url) as (server, hub, clerk):
        issue = f"{server.url}/api/facilities/{HIP}/counters/OPD1/tokens"
        issued = [httpx.post(issue, json={}, headers=clerk).json() for _ in range(4)]
        call_next = f"{server.url}/api/facilities/{HIP}/desks/D1/call-next"
        with (
            httpx.Client(base_url=server.url, timeout=5) as http,
            http.stream("GET", f"/api/status/{issued[3]['public_id']}/events") as stream,
        ):
            events = _events(stream.iter_lines())
            assert '"position":3' in _take_until(events, "status")[-1][1]
            wait_for(lambda: hub.listener_count == 1, 5, "the status page's listener")
            time.sleep(2.2)  # past any window opened by the issues' events
            builds = 0
            build = hub._build

            async def counted(*args: object, **kw: object) -> live.Snapshot:
                nonlocal builds
                builds += 1
                return await build(*args, **kw)  # type: ignore[arg-type]

            monkeypatch.setattr(hub, "_build", counted)
            started = time.monotonic()
            assert httpx.post(call_next, headers=clerk, timeout=5).status_code == 200
            _take_until(events, "status", '"position":2')
            assert time.monotonic() - started < 1.0  # not after the 2 s window
            # Two more calls inside the window: one rebuild at its end carries both.
            for _ in range(2):
                assert httpx.post(call_next, headers=clerk, timeout=5).status_code == 200
            seen = _take_until(events, "status", '"position":0')
            assert time.monotonic() - started > 1.5
            assert not any('"position":1' in data for kind, data in seen if kind == "status")
            assert builds == 2


def _take_until(events: Iterator[tuple[str, str]], kind: str, text: str = "") -> list[tuple[str, str]]:
    seen = []
    for event in events:
        seen.append(event)
        if event[0] == kind and text in event[1]:
            return seen
        assert len(seen) < 50, seen
    raise AssertionError(f"stream ended before {kind}")


async def test_listener_mailbox_order_overflow_and_pings() -> None:
    quiet = Listener(HIP)
    first, second = Message("update"), Message("offline")
    quiet.put(first)
    quiet.put(second)
    assert [await quiet.get(), await quiet.get()] == [first, second]  # arrival order
    waiting = asyncio.create_task(quiet.get())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    quiet.put(first)
    assert await asyncio.wait_for(waiting, 1) is first  # a put wakes the waiting reader
    # A client that fell LISTENER_QUEUE messages behind gets one "resync" instead of its backlog.
    for _ in range(LISTENER_QUEUE + 1):
        quiet.put(first)
    quiet.put(second)
    assert (await quiet.get()).kind == "resync"
    assert await quiet.get() is second  # what came after the reset is kept
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(quiet.get(), 0.05)  # nothing else, and no pings without ping_s

    pinged = Listener(HIP, ping_s=0.1)
    started = asyncio.get_running_loop().time()
    assert await pinged.get() is PING
    assert 0.09 < asyncio.get_running_loop().time() - started < 0.5
    # Pings keep their cadence even while messages flow.
    got = []
    for _ in range(6):
        pinged.put(first)
        got.append(await pinged.get())
        await asyncio.sleep(0.03)
    assert PING in got and first in got


def test_a_stopping_service_ends_its_open_streams(tmp_path: Path, redis_url: str) -> None:
    """An SSE stream never ends by itself, and uvicorn waits for open connections before it stops: the
    workers end their streams on SIGTERM (the pages reconnect to the next process)."""
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    service = ServiceProc(settings, workers=2).start()
    try:
        with httpx.Client(base_url=service.url, timeout=10) as http, contextlib.ExitStack() as stack:
            # Several, each on its own connection, so both workers most likely hold some.
            streams = [
                stack.enter_context(http.stream("GET", f"/api/facilities/{HIP}/board/events"))
                for _ in range(4)
            ]
            events = [_events(stream.iter_lines()) for stream in streams]
            assert [next(each)[0] for each in events] == ["snapshot"] * len(streams)
            started = time.monotonic()
            assert service.proc is not None
            os.killpg(service.proc.pid, signal.SIGTERM)
            for each in events:
                list(each)  # each stream ends instead of waiting for the next event
            service.proc.wait(10)
            assert time.monotonic() - started < 5
    finally:
        service.stop()


async def test_a_rebuilt_snapshot_reaches_status_pages_before_boards(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a call the boards already have the call event; the status pages' only news is the rebuilt
    snapshot, so theirs is handed out first and their streams write before the boards' updates."""
    from types import SimpleNamespace

    hub = live.LiveHub(SimpleNamespace())  # type: ignore[arg-type]
    boards = [Listener(HIP, calls_only=True) for _ in range(20)]
    pages = [Listener(HIP, token_id=f"{HIP}.OPD1.20261123.{i:05d}") for i in range(20)]
    hub.listeners[HIP] = {*boards, *pages}
    snap = object()

    async def snapshot(hip_id: str) -> object:
        return snap

    monkeypatch.setattr(hub, "snapshot", snapshot)
    order: list[Listener] = []
    put = Listener.put

    def recorded(self: Listener, msg: Message) -> None:
        order.append(self)
        put(self, msg)

    monkeypatch.setattr(Listener, "put", recorded)
    hub._dirty.add(HIP)
    await hub._refresh_dirty()
    assert len(order) == 40
    assert set(order[:20]) == set(pages) and set(order[20:]) == set(boards)
    for each in order:
        assert (await each.get()).snapshot is snap

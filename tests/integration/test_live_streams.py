"""Board and status SSE streams over a real uvicorn socket: headers, heartbeats, events, and a listener
released as soon as its client goes away; and the listener mailbox each stream reads from."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import httpx
import orjson
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


def _call_event(n: int, kind: str = "called", counter: str = "OPD1") -> bytes:
    """A queue event as the Lua scripts publish it (token fields as `Token.from_fields` reads them)."""
    token = {"id": f"{HIP}.{counter}.20261123.{n:05d}", "pub": f"pub{n}", "hip": HIP, "c": counter,
             "oc": counter, "d": "2026-11-23", "n": n, "lbl": f"A{n}", "s": "called", "p": "normal",
             "src": "walk_in", "ord": n, "iss": 1, "cal": 2, "xp": 9, "eod": 9, "desk": "D1", "sk": 0,
             "rc": 0, "v": 3}  # fmt: skip
    return orjson.dumps({"k": kind, "at": 2, "desk": "D1", "t": token})


def _hub_with_listeners(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[live.LiveHub, list[Listener], Listener, object]:
    """A hub (no Redis) with two boards and the status page of token 1; its rebuild returns `snap`."""
    from types import SimpleNamespace

    hub = live.LiveHub(SimpleNamespace())  # type: ignore[arg-type]
    boards = [Listener(HIP, calls_only=True) for _ in range(2)]
    page = Listener(HIP, token_id=f"{HIP}.OPD1.20261123.00001")
    hub.listeners[HIP] = {*boards, page}
    snap = object()

    async def snapshot(hip_id: str) -> object:
        return snap

    monkeypatch.setattr(hub, "snapshot", snapshot)
    return hub, boards, page, snap


async def test_a_boards_call_waits_for_the_rebuild_and_travels_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While a rebuild is due, a call reaches the boards with the rebuilt snapshot, in one batch (the
    stream writes it as one chunk); the called patient's own status page has the call at once."""
    hub, boards, page, snap = _hub_with_listeners(monkeypatch)
    channel = keys.live_channel(HIP)
    hub._on_message(channel, _call_event(1))
    hub._on_message(channel, _call_event(2, "recalled"))
    assert [m.token.number for m in await asyncio.wait_for(page.get_batch(), 1)] == [1]  # type: ignore[union-attr]
    for board in boards:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(board.get_batch(), 0.01)
    await hub._refresh_dirty()
    for board in boards:
        batch = await asyncio.wait_for(board.get_batch(), 1)
        assert [(m.kind, m.event) for m in batch] == [
            ("event", "called"),
            ("event", "recalled"),
            ("update", ""),
        ]
        assert batch[-1].snapshot is snap
    assert [m.snapshot for m in await page.get_batch()] == [snap]
    assert hub._held == {} and hub._hold_timer is None


async def test_held_calls_reach_boards_without_a_rebuild_after_hold_max(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rebuild that is late (or never comes) holds a board's call no longer than HOLD_MAX_S; events
    after the refresh loop started its rebuild are not held."""
    monkeypatch.setattr(live, "HOLD_MAX_S", 0.05)
    hub, boards, _, _ = _hub_with_listeners(monkeypatch)
    channel = keys.live_channel(HIP)
    started = asyncio.get_running_loop().time()
    hub._on_message(channel, _call_event(1))
    batch = await asyncio.wait_for(boards[0].get_batch(), 1)
    assert [m.token.number for m in batch] == [1]  # type: ignore[union-attr]
    assert 0.04 < asyncio.get_running_loop().time() - started < 0.5
    hub._gathering = False  # a rebuild is under way: later events go out at once
    hub._on_message(channel, _call_event(2))
    assert [m.token.number for m in await asyncio.wait_for(boards[1].get_batch(), 0.01)] == [1, 2]  # type: ignore[union-attr]


def _read_chunk(reader: BinaryIO) -> bytes:
    """One chunk of a chunked HTTP body as it was written (the stream writes one chunk per write)."""
    size = int(reader.readline().strip(), 16)
    data = reader.read(size + 2)
    return data[:-2]


def test_a_board_writes_a_call_and_its_rebuilt_snapshot_as_one_chunk(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One write per board per call, not two: the call and the update rebuilt after it travel in one
    chunk, and the call already carries the called patient's masked name (the rebuilt snapshot has it)."""
    with _serving(tmp_path, redis_url) as (server, hub, clerk):
        admin = login_headers(server.url, "admin")
        r = httpx.patch(f"{server.url}/api/admin/facilities/{HIP}/settings", json={"board_names": True},
                        headers=admin)  # fmt: skip
        assert r.status_code == 200
        issue = f"{server.url}/api/facilities/{HIP}/counters/OPD1/tokens"
        assert httpx.post(issue, json={"name": "Ramesh Kumar"}, headers=clerk).status_code == 201
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(f"GET /api/facilities/{HIP}/board/events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            reader = sock.makefile("rb")
            assert reader.readline().startswith(b"HTTP/1.1 200")
            while reader.readline() != b"\r\n":
                pass
            assert _read_chunk(reader).startswith(b"id: ")  # the snapshot
            wait_for(lambda: hub.listener_count == 1, 5, "the board's listener")
            time.sleep(0.3)  # past the rebuild window the issue opened
            r = httpx.post(f"{server.url}/api/facilities/{HIP}/desks/D1/call-next", headers=clerk, timeout=5)
            assert r.status_code == 200
            for _ in range(10):
                chunk = _read_chunk(reader)
                if b"event: call" in chunk:
                    break
            events = [block.split(b"\r\n")[-2:] for block in chunk.split(b"\r\n\r\n") if block]
            assert [kind for kind, _ in events] == [b"event: call", b"event: update"]
            call = orjson.loads(events[0][1].removeprefix(b"data: "))
            assert (call["label"], call["desk"], call["name"]) == ("A1", "D1", "R**** K****")

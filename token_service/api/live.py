"""Live fan-out: one Redis pub/sub connection per worker, shared by in-process listeners; board snapshots.

Every queue change is published by the Lua scripts on ``opd:{hip}:live``. A worker pattern-subscribes once
and hands each parsed event to the asyncio queues of its listeners (SSE clients of boards, consoles and
status pages), so a thousand open boards cost a thousand small queues, not a thousand Redis connections.
After an event, the facility's snapshot (now serving per desk, recent calls, waiting lines) is rebuilt
once — coalesced over a short window — and shared by every listener. If Redis goes away the hub backs off
and re-subscribes; listeners are told to go offline and, once back, to resync from a fresh snapshot
(events published while the subscription was down are lost, so a snapshot is the only safe answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import select

from token_service.clock import local_day
from token_service.models import TokenRecord
from token_service.queue import keys
from token_service.queue.service import Token
from token_service.queue.status import Status
from token_service.records.recorder import parse_event
from token_service.state import AppState
from token_service.tasks import cancel_and_wait

log = logging.getLogger(__name__)
PATTERN = keys.live_channel("*")
LISTENER_QUEUE = 256  # a client this far behind gets one "resync" instead of the backlog
COALESCE_S = 0.08  # a burst of events (call-next = complete + call) rebuilds the snapshot once
RECENT_KEEP = 40
RECENT_SHOWN = 10
CALL_KINDS = frozenset({"called", "recalled"})


@dataclass(frozen=True)
class CallEntry:
    """One call-out as the board shows it: no patient data at all."""

    token_id: str
    label: str
    number: int
    counter: str
    desk: str
    at_ms: int
    recall: bool = False

    def public(self, desk_names: dict[str, str]) -> dict[str, Any]:
        desk_name = desk_names.get(self.desk, self.desk)
        return {"label": self.label, "number": self.number, "counter": self.counter, "desk": self.desk,
                "desk_name": desk_name, "at": self.at_ms, "recall": self.recall}  # fmt: skip

    @classmethod
    def of(cls, token: Token, desk: str, at_ms: int, recall: bool = False) -> CallEntry:
        desk = desk or token.desk or ""
        return cls(token.id, token.label, token.number, token.counter, desk, at_ms, recall)


@dataclass
class Snapshot:
    """A facility's board state; `lines` (waiting token ids in calling order) stays on the server."""

    hip_id: str
    version: int
    desks: list[dict[str, Any]]
    recent: list[CallEntry]
    waiting: dict[str, int]
    lines: dict[str, list[str]]
    desk_names: dict[str, str]
    _encoded: dict[frozenset[str] | None, dict[str, Any]] = field(default_factory=dict)

    def public(self, counters: frozenset[str] | None = None) -> dict[str, Any]:
        """The JSON body for boards, optionally for some counters only (memoised per filter)."""
        hit = self._encoded.get(counters)
        if hit is not None:
            return hit

        def keep(code: str) -> bool:
            return counters is None or code in counters

        body = {
            "hip_id": self.hip_id,
            "version": self.version,
            "desks": [d for d in self.desks if any(keep(c) for c in d["counters"])],
            "recent": [c.public(self.desk_names) for c in self.recent if keep(c.counter)][:RECENT_SHOWN],
            "waiting": {c: n for c, n in self.waiting.items() if keep(c)},
        }
        self._encoded[counters] = body
        return body

    def position(self, token: Token) -> int | None:
        if token.status is not Status.WAITING:
            return None
        try:
            return self.lines.get(token.counter, []).index(token.id)
        except ValueError:
            return None


@dataclass(frozen=True)
class Message:
    kind: str  # event | update | offline | resync | closed
    token: Token | None = None
    event: str = ""
    desk: str = ""
    at_ms: int = 0
    snapshot: Snapshot | None = None


class Listener:
    def __init__(self, hip_id: str) -> None:
        self.hip_id = hip_id
        self.queue: asyncio.Queue[Message] = asyncio.Queue(LISTENER_QUEUE)

    def put(self, msg: Message) -> None:
        try:
            self.queue.put_nowait(msg)
        except asyncio.QueueFull:
            # A slow client: drop its backlog and let it start over from a snapshot.
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(Message("resync"))

    async def get(self) -> Message:
        return await self.queue.get()


class LiveHub:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self.listeners: dict[str, set[Listener]] = {}
        self.snapshots: dict[str, Snapshot] = {}
        self.recent: dict[str, deque[CallEntry]] = {}
        self.online = False
        self.closing = False
        self.events_seen = 0
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._build_locks: dict[str, asyncio.Lock] = {}

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._subscribe_loop(), name="live-subscribe"),
                       asyncio.create_task(self._refresh_loop(), name="live-refresh")]  # fmt: skip

    async def close(self) -> None:
        await cancel_and_wait(self._tasks)
        self._broadcast_all(Message("closed"))

    def end_streams(self) -> None:
        """The server is stopping: every open stream ends now (clients reconnect to the next process)."""
        self.closing = True
        self._broadcast_all(Message("closed"))

    @contextlib.asynccontextmanager
    async def listen(self, hip_id: str) -> AsyncIterator[Listener]:
        listener = Listener(hip_id)
        if self.closing:
            listener.put(Message("closed"))
        self.listeners.setdefault(hip_id, set()).add(listener)
        try:
            yield listener
        finally:
            group = self.listeners.get(hip_id)
            if group is not None:
                group.discard(listener)
                if not group:
                    del self.listeners[hip_id]

    @property
    def listener_count(self) -> int:
        return sum(len(g) for g in self.listeners.values())

    # ---- the one subscription

    async def _subscribe_loop(self) -> None:
        delay = 0.1
        while True:
            pubsub = self.state.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(PATTERN)
                if not self.online:
                    self._back_online()
                delay = 0.1
                while True:
                    msg = await pubsub.get_message(timeout=5.0)
                    if msg is not None and msg.get("type") == "pmessage":
                        self._on_message(str(msg["channel"]), msg["data"])
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                if self.online:
                    log.warning("live events: Redis connection lost (%s); reconnecting", exc)
                self.online = False
                self._broadcast_all(Message("offline"))
            except Exception:
                log.exception("live events: unexpected error; resubscribing")
                self.online = False
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)

    def _back_online(self) -> None:
        self.online = True
        # Whatever happened while we were deaf is unknown: forget cached state and resync everyone.
        self.snapshots.clear()
        self.recent.clear()
        self._broadcast_all(Message("resync"))

    def _on_message(self, channel: str, data: Any) -> None:
        hip_id = channel[channel.find("{") + 1 : channel.rfind("}")]
        try:
            kind, at_ms, desk, token = parse_event(data)
        except (ValueError, KeyError, TypeError):
            log.warning("live events: unreadable message on %s", channel)
            return
        self.events_seen += 1
        if kind in CALL_KINDS and hip_id in self.recent:
            entry = CallEntry.of(token, desk, at_ms, recall=kind == "recalled")
            self.recent[hip_id].appendleft(entry)
        msg = Message("event", token=token, event=kind, desk=desk, at_ms=at_ms)
        for listener in tuple(self.listeners.get(hip_id, ())):
            listener.put(msg)
        self._dirty.add(hip_id)
        self._wake.set()

    def _broadcast_all(self, msg: Message) -> None:
        for group in tuple(self.listeners.values()):
            for listener in tuple(group):
                listener.put(msg)

    # ---- snapshots

    async def _refresh_loop(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(COALESCE_S)
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            for hip_id in dirty:
                self.snapshots.pop(hip_id, None)
                if not self.listeners.get(hip_id):
                    continue  # nobody watching: rebuild lazily on the next request
                try:
                    snap = await self.snapshot(hip_id)
                except (RedisError, OSError) as exc:
                    log.warning("live events: snapshot of %s failed: %s", hip_id, exc)
                    continue
                except Exception:
                    log.exception("live events: snapshot of %s failed", hip_id)
                    continue
                msg = Message("update", snapshot=snap)
                for listener in tuple(self.listeners.get(hip_id, ())):
                    listener.put(msg)

    async def snapshot(self, hip_id: str) -> Snapshot:
        """The cached snapshot, or a fresh one (one build at a time per facility, shared by all waiters)."""
        cached = self.snapshots.get(hip_id)
        if cached is not None:
            return cached
        lock = self._build_locks.setdefault(hip_id, asyncio.Lock())
        async with lock:
            cached = self.snapshots.get(hip_id)
            if cached is not None:
                return cached
            snap = await self._build(hip_id)
            if hip_id not in self._dirty:
                self.snapshots[hip_id] = snap
            return snap

    async def _build(self, hip_id: str) -> Snapshot:
        cfg = await self.state.directory.get(hip_id)
        counters = [c.code for c in cfg.counters.values() if c.active]
        desks = [d for d in cfg.desks.values() if d.active]
        redis = self.state.redis
        pipe = redis.pipeline(transaction=False)
        for d in desks:
            pipe.hget(keys.desk_key(hip_id, d.code), "cur")
        for c in counters:
            pipe.zrange(keys.lane_key(hip_id, c, "p"), 0, -1)
            pipe.zrange(keys.lane_key(hip_id, c, "n"), 0, -1)
        rows = await pipe.execute()
        current_ids = [r or "" for r in rows[: len(desks)]]
        lines: dict[str, list[str]] = {}
        for i, c in enumerate(counters):
            lines[c] = [*rows[len(desks) + 2 * i], *rows[len(desks) + 2 * i + 1]]
        current = {t.id: t for t in await self.state.queue.get_many(hip_id, [i for i in current_ids if i])}
        if hip_id not in self.recent:
            self.recent[hip_id] = await self._seed_recent(hip_id, cfg.facility.timezone)
        desk_names = {d.code: d.name for d in desks}
        desk_rows: list[dict[str, Any]] = []
        for d, tid in zip(desks, current_ids, strict=True):
            tok = current.get(tid)
            now: dict[str, Any] | None = None
            if tok is not None and tok.status is Status.CALLED:
                now = CallEntry.of(tok, d.code, tok.called_ms or 0).public(desk_names)
            desk_rows.append({"desk": d.code, "name": d.name, "counters": cfg.desk_counters(d), "now": now})
        return Snapshot(
            hip_id=hip_id, version=self.state.clock.now_ms(), desks=desk_rows,
            recent=list(self.recent[hip_id])[:RECENT_KEEP], waiting={c: len(lines[c]) for c in counters},
            lines=lines, desk_names=desk_names,
        )  # fmt: skip

    async def _seed_recent(self, hip_id: str, tz: str) -> deque[CallEntry]:
        """Recent calls survive a restart through SQL (tokens are written through before the call returns)."""
        day, _ = local_day(self.state.clock.now_ms(), tz)
        q = (
            select(TokenRecord.id, TokenRecord.label, TokenRecord.number, TokenRecord.counter,  # type: ignore[call-overload]
                   TokenRecord.desk, TokenRecord.called_at)
            .where(TokenRecord.hip_id == hip_id, TokenRecord.local_date == day,
                   TokenRecord.called_at.isnot(None))  # type: ignore[union-attr]
            .order_by(TokenRecord.called_at.desc())  # type: ignore[union-attr]
            .limit(RECENT_KEEP)
        )  # fmt: skip
        async with self.state.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        entries = [CallEntry(r[0], r[1], r[2], r[3], r[4] or "", to_ms(r[5])) for r in rows]
        return deque(entries, maxlen=RECENT_KEEP)


def to_ms(value: datetime) -> int:
    if value.tzinfo is None:  # SQLite hands back naive UTC
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def hub_of(state: AppState) -> LiveHub:
    hub: LiveHub = state.extras["live_hub"]
    return hub


async def start_hub(state: AppState) -> None:
    hub = LiveHub(state)
    state.extras["live_hub"] = hub
    hub.start()


async def stop_hub(state: AppState) -> None:
    hub = state.extras.pop("live_hub", None)
    if isinstance(hub, LiveHub):
        await hub.close()

"""Live fan-out: one Redis pub/sub connection per worker, shared by in-process listeners; board snapshots.

Every queue change is published by the Lua scripts on ``opd:{hip}:live``. A worker subscribes to the
channels of the facilities it serves a board, console or status page for (the first snapshot asked for
subscribes; a facility nobody asked about for `WATCH_IDLE_S` is dropped), and hands each parsed event to
the mailboxes of its listeners, so a thousand open boards cost a thousand small mailboxes, not a thousand
Redis connections, and a worker that only issues tokens reads no events at all.
After an event, the facility's snapshot (now serving per desk, recent calls, waiting lines) is rebuilt
once — at once for the first event of a burst, then `COALESCE_S` after the previous rebuild while
events keep coming — and shared by every listener. If Redis goes away the hub backs off
and re-subscribes; listeners are told to go offline and, once back, to resync from a fresh snapshot
(events published while the subscription was down are lost, so a snapshot is the only safe answer).

Encoding happens once per worker, not once per listener: a snapshot memoises its JSON body and its SSE
bytes per counter filter, its waiting positions as one id -> index map, and status bodies per token
version; a call event memoises its SSE bytes per snapshot. Every listener then writes the same bytes.

An admin's facility change is announced on one channel for all facilities (`keys.config_channel()`, the
facility id as the message), to which every worker subscribes: it drops its cached facility config,
rebuilds the board snapshot (masked names on or off) and tells its listeners, so boards follow the
setting at once instead of after the directory's cache lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import select

from token_service.clock import local_day
from token_service.masking import mask_name
from token_service.models import TokenRecord
from token_service.queue import keys
from token_service.queue.lanes import LaneMirror, Lanes
from token_service.queue.service import Token
from token_service.queue.status import Priority, Status
from token_service.records import tokens as token_sql
from token_service.records.recorder import parse_event
from token_service.state import AppState
from token_service.tasks import SingleFlight, cancel_and_wait

log = logging.getLogger(__name__)
CONFIG_CHANNEL = keys.config_channel()
WATCH_IDLE_S = 120.0  # a facility with no listener and no snapshot asked for this long is unsubscribed
WATCH_WAIT_S = 2.0  # how long a snapshot waits for Redis to confirm a new subscription
LISTENER_QUEUE = 256  # a client this far behind gets one "resync" instead of the backlog
BURST_S = 0.005  # after the first event, how long to gather the rest of its burst before a rebuild
COALESCE_S = 0.08  # from the end of one rebuild of the snapshots to the next, however many events arrive
HOLD_MAX_S = 0.05  # the longest a board's call event waits for the rebuilt snapshot it travels with
RECENT_KEEP = 40
RECENT_SHOWN = 10
CALL_KINDS = frozenset({"called", "recalled"})
NAMES_KEEP = 20_000  # masked names cached per worker (token id -> masked name)
NAME_RETRY_S = 30.0  # a token without a name is looked up again after this long


@dataclass(frozen=True)
class CallEntry:
    """One call-out as the board shows it: no patient data, at most a masked name ("R**** K****")."""

    token_id: str
    label: str
    number: int
    counter: str
    desk: str
    at_ms: int
    recall: bool = False
    name: str = ""  # masked, and only when the facility shows names on its board

    def public(self, desk_names: dict[str, str]) -> dict[str, Any]:
        desk_name = desk_names.get(self.desk, self.desk)
        body = {"label": self.label, "number": self.number, "counter": self.counter, "desk": self.desk,
                "desk_name": desk_name, "at": self.at_ms, "recall": self.recall}  # fmt: skip
        if self.name:
            body["name"] = self.name
        return body

    @classmethod
    def of(cls, token: Token, desk: str, at_ms: int, recall: bool = False) -> CallEntry:
        desk = desk or token.desk or ""
        return cls(token.id, token.label, token.number, token.counter, desk, at_ms, recall)


@dataclass
class Snapshot:
    """A facility's board state; `lanes` (the waiting lines, for positions) stays on the server."""

    hip_id: str
    version: int
    desks: list[dict[str, Any]]
    recent: list[CallEntry]
    waiting: dict[str, int]
    lanes: Lanes
    desk_names: dict[str, str]
    names: dict[str, str] = field(default_factory=dict)  # token id -> masked name (names on only)
    _encoded: dict[frozenset[str] | None, dict[str, Any]] = field(default_factory=dict)
    _sse: dict[tuple[str, frozenset[str] | None], bytes] = field(default_factory=dict)
    # (token id, token version) -> (status body, its SSE bytes); filled by the status stream.
    status_cache: dict[tuple[str, int], tuple[dict[str, Any], bytes]] = field(default_factory=dict)

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

    def sse(self, event: str, counters: frozenset[str] | None = None) -> bytes:
        """The whole SSE event ("snapshot" or "update") for a filter, encoded once per snapshot."""
        key = (event, counters)
        hit = self._sse.get(key)
        if hit is None:
            hit = self._sse[key] = sse_bytes(event, self.public(counters), self.version)
        return hit

    def position(self, token: Token) -> int | None:
        """Tokens ahead of a waiting token in its counter's line, as of this snapshot (O(1))."""
        if token.status is not Status.WAITING:
            return None
        return self.lanes.position(token.counter, token.id, token.priority is Priority.NORMAL)


@dataclass(frozen=True)
class Message:
    kind: str  # event | update | offline | resync | closed | config | ping
    token: Token | None = None
    event: str = ""
    desk: str = ""
    at_ms: int = 0
    snapshot: Snapshot | None = None
    # The encoded SSE form, shared by every listener (keyed by the snapshot version it was rendered with).
    encoded: dict[int, bytes] = field(default_factory=dict, compare=False, repr=False)

    def call_sse(self, snap: Snapshot | None) -> bytes:
        """A call event as the board's SSE `call` (desk name and masked name from the snapshot)."""
        assert self.token is not None
        key = snap.version if snap is not None else -1
        hit = self.encoded.get(key)
        if hit is None:
            names = snap.desk_names if snap else {}
            entry = CallEntry.of(self.token, self.desk, self.at_ms, self.event == "recalled")
            name = snap.names.get(self.token.id, "") if snap else ""
            if name:
                entry = dataclasses.replace(entry, name=name)
            hit = self.encoded[key] = sse_bytes("call", entry.public(names))
        return hit


class Listener:
    """One stream's mailbox. A board only wakes for call events (of its counters), a status page only for
    events of its own token; snapshots and offline/resync/closed/config notices reach everyone.

    A listener is held by every open board and status page, thousands per worker, so it is a list and
    one future rather than an `asyncio.Queue` (four deques and an event, ~3 KB). With `ping_s`, `get()`
    also hands out `PING` every `ping_s` seconds: pages treat 40 s of silence as a dead connection. The
    pings come from one timer per listener that re-arms itself, not from a timer armed for every wait
    (which cost a worker about a tenth of its time in a fan-out to thousands of streams).
    """

    __slots__ = ("_items", "_ping_due", "_ping_s", "_ping_timer", "_waiter", "calls_only", "counters",
                 "hip_id", "token_id")  # fmt: skip

    def __init__(
        self, hip_id: str, *, calls_only: bool = False, counters: frozenset[str] | None = None,
        token_id: str | None = None, ping_s: float | None = None,
    ) -> None:  # fmt: skip
        self.hip_id = hip_id
        self.calls_only = calls_only
        self.counters = counters
        self.token_id = token_id
        self._items: list[Message] = []
        self._waiter: asyncio.Future[None] | None = None
        self._ping_s = ping_s
        self._ping_due = False
        self._ping_timer = asyncio.get_running_loop().call_later(ping_s, self._ping) if ping_s else None

    def close(self) -> None:
        """Stop the pings (the stream is gone)."""
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None

    def _ping(self) -> None:
        assert self._ping_s is not None
        self._ping_due = True
        self._ping_timer = asyncio.get_running_loop().call_later(self._ping_s, self._ping)
        self._wake()

    def wants(self, msg: Message) -> bool:
        """Whether a queue event (kind "event") concerns this stream at all."""
        token = msg.token
        if token is None:
            return False
        if self.token_id is not None:
            return token.id == self.token_id
        if self.calls_only and msg.event not in CALL_KINDS:
            return False
        return self.counters is None or token.counter in self.counters

    def put(self, msg: Message) -> None:
        if len(self._items) < LISTENER_QUEUE:
            self._items.append(msg)
        else:
            # A slow client: drop its backlog and let it start over from a snapshot.
            self._items = [Message("resync")]
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Message:
        """The next message in arrival order, or `PING` when a ping is due first."""
        if await self._ping_or_message():
            return PING
        return self._items.pop(0)

    async def get_batch(self) -> list[Message]:
        """Every waiting message in arrival order (at least one), or `[PING]` when a ping is due first.
        A stream writes a batch as one chunk: one write for a call and the update that follows it."""
        if await self._ping_or_message():
            return [PING]
        items, self._items = self._items, []
        return items

    async def _ping_or_message(self) -> bool:
        """Wait until a ping is due (True) or a message waits (False)."""
        while True:
            if self._ping_due:
                self._ping_due = False
                return True
            if self._items:
                return False
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None


PING = Message("ping")


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
        # While the refresh loop is idle or gathering a burst, a rebuild is due within BURST_S: boards'
        # events wait for it in `_held` (at most HOLD_MAX_S), and each board then writes its call and
        # the rebuilt snapshot as one chunk instead of two, and after the status pages' updates.
        self._gathering = True
        self._held: dict[str, list[Message]] = {}
        self._hold_timer: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._builds: SingleFlight[Snapshot] = SingleFlight()  # a wall of boards reconnecting shares one
        self._names: dict[str, tuple[str, float]] = {}  # token id -> (masked name, looked up at)
        # Per facility, copies of its waiting lanes that each rebuild brings up to date by what changed.
        self._lanes: dict[str, LaneMirror] = {}
        # Subscriptions: the connection while it is up; per watched facility when it was last asked
        # for, and a future done once Redis confirmed its subscription (renewed on every reconnect).
        self._pubsub: PubSub | None = None
        self._watched: dict[str, float] = {}
        self._confirmed: dict[str, asyncio.Future[None]] = {}
        self._sub_lock = asyncio.Lock()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._subscribe_loop(), name="live-subscribe"),
                       asyncio.create_task(self._refresh_loop(), name="live-refresh"),
                       asyncio.create_task(self._unwatch_loop(), name="live-unwatch")]  # fmt: skip

    async def close(self) -> None:
        await cancel_and_wait(self._tasks)
        self._broadcast_all(Message("closed"))

    def end_streams(self) -> None:
        """The server is stopping: every open stream ends now (clients reconnect to the next process)."""
        self.closing = True
        self._broadcast_all(Message("closed"))

    @contextlib.asynccontextmanager
    async def listen(
        self, hip_id: str, *, calls_only: bool = False, counters: frozenset[str] | None = None,
        token_id: str | None = None, ping_s: float | None = None,
    ) -> AsyncIterator[Listener]:  # fmt: skip
        """A listener of a facility's changes; the keywords narrow which queue events wake it. Listening
        subscribes this worker to the facility's events (once)."""
        listener = Listener(
            hip_id, calls_only=calls_only, counters=counters, token_id=token_id, ping_s=ping_s
        )
        if self.closing:
            listener.put(Message("closed"))
        self.listeners.setdefault(hip_id, set()).add(listener)
        try:
            await self._watch(hip_id)
            yield listener
        finally:
            listener.close()
            group = self.listeners.get(hip_id)
            if group is not None:
                group.discard(listener)
                if not group:
                    del self.listeners[hip_id]

    @property
    def listener_count(self) -> int:
        return sum(len(g) for g in self.listeners.values())

    # ---- the one subscription connection

    async def _subscribe_loop(self) -> None:
        delay = 0.1
        while True:
            pubsub = self.state.redis.pubsub()
            try:
                async with self._sub_lock:
                    for hip_id, fut in list(self._confirmed.items()):
                        if fut.done():  # confirmed on the last connection: wait for this one's answer
                            self._confirmed[hip_id] = asyncio.get_running_loop().create_future()
                    await pubsub.subscribe(CONFIG_CHANNEL, *map(keys.live_channel, self._watched))
                    self._pubsub = pubsub
                if not self.online:
                    self._back_online()
                delay = 0.1
                while True:
                    msg = await pubsub.get_message(timeout=5.0)
                    if msg is not None:
                        self._dispatch(msg)
            except asyncio.CancelledError:
                self._pubsub = None
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
            self._pubsub = None
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        channel = _text(msg["channel"])
        if msg["type"] == "message":
            if channel == CONFIG_CHANNEL:
                self._on_config(_text(msg["data"]))
            else:
                self._on_message(channel, msg["data"])
        elif msg["type"] == "subscribe" and channel != CONFIG_CHANNEL:
            confirmed = self._confirmed.get(_hip_of(channel))
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)

    async def _watch(self, hip_id: str) -> bool:
        """Subscribe to a facility's events if not yet done, and wait until Redis has confirmed it. False
        when the hub is offline or Redis did not confirm in time: then nothing built for that facility
        may be kept, since events may be missed."""
        self._watched[hip_id] = time.monotonic()
        fut = self._confirmed.get(hip_id)
        if fut is None:
            async with self._sub_lock:
                fut = self._confirmed.get(hip_id)
                if fut is None:
                    fut = self._confirmed[hip_id] = asyncio.get_running_loop().create_future()
                    await self._subscribe(hip_id)
        if fut.done():
            return True
        if self._pubsub is None:
            return False
        try:
            await asyncio.wait_for(asyncio.shield(fut), WATCH_WAIT_S)
        except TimeoutError:
            return False
        return True

    async def _subscribe(self, hip_id: str) -> None:
        if self._pubsub is None:
            return  # the loop subscribes to every watched facility once it reconnects
        try:
            await self._pubsub.subscribe(keys.live_channel(hip_id))
        except (RedisError, OSError) as exc:
            log.warning("live events: could not subscribe to %s: %s", hip_id, exc)

    async def _unwatch_loop(self) -> None:
        while True:
            await asyncio.sleep(WATCH_IDLE_S / 4)
            await self.unwatch_idle(time.monotonic() - WATCH_IDLE_S)

    async def unwatch_idle(self, before: float) -> list[str]:
        """Unsubscribe from facilities nobody listens to and nobody asked about since `before`
        (monotonic), forgetting what was kept of them; returns their ids."""
        async with self._sub_lock:
            idle = [h for h, at in self._watched.items() if at < before and not self.listeners.get(h)]
            for hip_id in idle:
                del self._watched[hip_id]
                self._confirmed.pop(hip_id, None)
                self.snapshots.pop(hip_id, None)
                self.recent.pop(hip_id, None)
                self._lanes.pop(hip_id, None)
            if idle and self._pubsub is not None:
                try:
                    await self._pubsub.unsubscribe(*map(keys.live_channel, idle))
                except (RedisError, OSError) as exc:  # a reconnect subscribes to the watched ones only
                    log.warning("live events: could not unsubscribe: %s", exc)
        return idle

    @property
    def watched(self) -> list[str]:
        return list(self._watched)

    def snapshot_of(self, hip_id: str) -> Snapshot | None:
        """The snapshot kept for a facility, if any (no build, no subscription)."""
        return self.snapshots.get(hip_id)

    def _back_online(self) -> None:
        self.online = True
        # Whatever happened while we were deaf is unknown: forget cached state and resync everyone.
        self.snapshots.clear()
        self.recent.clear()
        self._lanes.clear()
        self._broadcast_all(Message("resync"))

    def _on_message(self, channel: str, data: Any) -> None:
        hip_id = _hip_of(channel)
        self._dirty.add(hip_id)
        self._wake.set()
        if hip_id not in self.listeners and hip_id not in self.recent:
            self.events_seen += 1  # nobody here watches this facility: no need to read the event
            return
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
        group = self.listeners.get(hip_id)
        if not group:
            return
        # Once one event of a facility is held, the rest are too, until the rebuild: boards keep the order.
        hold = hip_id in self._held or self._gathering
        if hold:
            self._hold(hip_id, msg)
        for listener in tuple(group):
            if not (hold and listener.token_id is None) and listener.wants(msg):
                listener.put(msg)

    def _hold(self, hip_id: str, msg: Message) -> None:
        self._held.setdefault(hip_id, []).append(msg)
        if self._hold_timer is None:
            self._hold_timer = asyncio.get_running_loop().call_later(HOLD_MAX_S, self._release_held)

    def _release_held(self, hip_id: str | None = None, then: Message | None = None) -> None:
        """Hand held events to the boards (of one facility, or all when the rebuild is late), each
        board's followed by `then` (the rebuilt snapshot) in the same pass."""
        for hip in [hip_id] if hip_id is not None else list(self._held):
            held = self._held.pop(hip, ())
            for listener in tuple(self.listeners.get(hip, ())) if held or then else ():
                if listener.token_id is None:
                    for msg in held:
                        if listener.wants(msg):
                            listener.put(msg)
                    if then is not None:
                        listener.put(then)
        if not self._held and self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None

    def _on_config(self, hip_id: str) -> None:
        """An admin changed the facility: forget its config here, rebuild the board, tell the streams."""
        self.state.directory.invalidate(hip_id)
        msg = Message("config")
        for listener in tuple(self.listeners.get(hip_id, ())):
            listener.put(msg)
        self._dirty.add(hip_id)
        self._wake.set()

    def _broadcast_all(self, msg: Message) -> None:
        self._release_held()  # what happened before the notice reaches the boards before it
        for group in tuple(self.listeners.values()):
            for listener in tuple(group):
                listener.put(msg)

    # ---- snapshots

    async def _refresh_loop(self) -> None:
        while True:
            self._gathering = True
            await self._wake.wait()
            # One script's events (call-next: complete + call) arrive together: take them all, then
            # rebuild at once, so a quiet queue's status pages follow a call within a few milliseconds.
            await asyncio.sleep(BURST_S)
            self._wake.clear()
            self._gathering = False
            try:
                await self._refresh_dirty()
            finally:
                self._release_held()  # held for a facility whose rebuild was skipped or failed
            # While events keep coming, the next rebuild waits COALESCE_S after this one ended, so a
            # facility with long waiting lines (a costly rebuild) is rebuilt no more often than before.
            await asyncio.sleep(COALESCE_S)

    async def _refresh_dirty(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for hip_id in dirty:
            self.snapshots.pop(hip_id, None)
            if not self.listeners.get(hip_id):
                continue  # nobody watching: rebuild lazily on the next request
            try:
                snap = await self.snapshot(hip_id)
            except (RedisError, OSError) as exc:
                log.warning("live events: snapshot of %s failed: %s", hip_id, exc)
                self._release_held(hip_id)
                continue
            except Exception:
                log.exception("live events: snapshot of %s failed", hip_id)
                self._release_held(hip_id)
                continue
            msg = Message("update", snapshot=snap)
            # Status pages first: the update is their only news of a call. Their streams then run before
            # the boards', which write the held call events and this update together.
            for listener in tuple(self.listeners.get(hip_id, ())):
                if listener.token_id is not None:
                    listener.put(msg)
            self._release_held(hip_id, then=msg)

    async def snapshot(self, hip_id: str) -> Snapshot:
        """The cached snapshot, or a fresh one (one build at a time per facility, shared by all waiters).
        Asking subscribes this worker to the facility's events; only then is a snapshot kept."""
        await self.state.directory.get(hip_id)  # an unknown facility fails here, before any subscription
        subscribed = await self._watch(hip_id)
        cached = self.snapshots.get(hip_id)
        if cached is not None:
            return cached
        return await self._builds.run(hip_id, lambda: self._build_shared(hip_id, subscribed))

    async def _build_shared(self, hip_id: str, subscribed: bool) -> Snapshot:
        snap = await self._build(hip_id, keep=subscribed)
        if subscribed and hip_id not in self._dirty:
            self.snapshots[hip_id] = snap
        return snap

    async def _build(self, hip_id: str, keep: bool = True) -> Snapshot:
        cfg = await self.state.directory.get(hip_id)
        counters = [c.code for c in cfg.counters.values() if c.active]
        desks = [d for d in cfg.desks.values() if d.active]
        mirror = self._lanes.get(hip_id)
        if mirror is None:
            mirror = LaneMirror(self.state.redis, hip_id)
            if keep:  # kept only while subscribed: its events are what makes a rebuild due
                self._lanes[hip_id] = mirror
        current_ids, lanes = await mirror.sync(counters, [d.code for d in desks])
        current = {t.id: t for t in await self.state.queue.get_many(hip_id, [i for i in current_ids if i])}
        seen = self.recent.get(hip_id)
        if seen is None:
            seen = await self._seed_recent(hip_id, cfg.facility.timezone)
            if keep:  # kept only while subscribed: the facility's call events extend it
                self.recent[hip_id] = seen
        desk_names = {d.code: d.name for d in desks}
        recent = list(seen)[:RECENT_KEEP]
        names: dict[str, str] = {}
        if cfg.facility.board_names:
            names = await self._masked_names([*current, *(c.token_id for c in recent)])
            recent = [dataclasses.replace(c, name=names.get(c.token_id, "")) for c in recent]
        desk_rows: list[dict[str, Any]] = []
        for d, tid in zip(desks, current_ids, strict=True):
            tok = current.get(tid)
            now: dict[str, Any] | None = None
            if tok is not None and tok.status is Status.CALLED:
                entry = CallEntry.of(tok, d.code, tok.called_ms or 0)
                now = dataclasses.replace(entry, name=names.get(tok.id, "")).public(desk_names)
            desk_rows.append({"desk": d.code, "name": d.name, "counters": cfg.desk_counters(d), "now": now})
        return Snapshot(
            hip_id=hip_id, version=self.state.clock.now_ms(), desks=desk_rows, recent=recent,
            waiting={c: lanes.waiting(c) for c in counters}, lanes=lanes, desk_names=desk_names, names=names,
        )  # fmt: skip

    async def _masked_names(self, token_ids: Iterable[str]) -> dict[str, str]:
        """Masked names of called tokens, from their SQL patient snapshot; cached per worker.

        The Redis token hash carries no name (only SQL holds the shared profile), so a newly called token
        costs one primary-key read per worker, batched per snapshot build; recalls and rebuilds hit the
        cache. If SQL fails the board goes on without names rather than without a snapshot.
        """
        ids = list(dict.fromkeys(token_ids))
        now = time.monotonic()
        missing = [
            i
            for i in ids
            if (hit := self._names.get(i)) is None or (not hit[0] and now - hit[1] > NAME_RETRY_S)
        ]
        if missing:
            try:
                async with self.state.engine.connect() as conn:
                    patients = await token_sql.patients_for(conn, missing)
            except Exception as exc:
                log.warning("live events: patient names unavailable (%s); board shows numbers only", exc)
                patients = None
            if patients is not None:
                if len(self._names) > NAMES_KEEP:
                    self._names.clear()
                for i in missing:
                    self._names[i] = (mask_name(str((patients.get(i) or {}).get("name") or "")), now)
        return {i: hit[0] for i in ids if (hit := self._names.get(i)) is not None and hit[0]}

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


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _hip_of(channel: str) -> str:
    """The facility of ``opd:{hip}:live``."""
    return channel[channel.find("{") + 1 : channel.rfind("}")]


def to_ms(value: datetime) -> int:
    if value.tzinfo is None:  # SQLite hands back naive UTC
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def sse_bytes(event: str, data: Any, ident: int | None = None) -> bytes:
    """One server-sent event: optional `id`, `event`, one `data` line, a blank line (CRLF line ends).

    orjson escapes every control character inside strings, so the JSON is always one line and needs
    none of the generic encoder's line splitting; `event` and `ident` are our own names and numbers.
    """
    head = b"" if ident is None else b"id: %d\r\n" % ident
    return head + b"event: " + event.encode() + b"\r\ndata: " + orjson.dumps(data) + b"\r\n\r\n"


async def announce_config(state: AppState, hip_id: str) -> None:
    """A facility's settings changed: drop this worker's cached copy now and tell every other worker
    (through Redis). Best effort: without Redis the directory's short cache lifetime still carries it."""
    state.directory.invalidate(hip_id)
    try:
        await state.redis.publish(CONFIG_CHANNEL, hip_id)
    except (RedisError, OSError) as exc:
        log.warning("live events: could not announce the settings change of %s: %s", hip_id, exc)


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

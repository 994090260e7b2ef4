"""Board snapshot + SSE, and the public token status API + SSE (no personal data in any of them).

Estimated wait on the status page: the median gap between the last (up to) ten first calls at the
token's counter today, ignoring gaps over 20 minutes (breaks), times the number of calls until the
patient's turn (tokens ahead + 1). With fewer than two usable gaps there is no estimate. The gaps come
from SQL (`token.called_at`, written through on every call) and are cached per counter for 15 s.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import signal
import statistics
import threading
import time
from collections.abc import AsyncIterator
from types import FrameType
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Query, Request
from sqlalchemy import select
from starlette.responses import StreamingResponse

from token_service.api import deps
from token_service.api.live import (
    CALL_KINDS,
    PING,
    LiveHub,
    Snapshot,
    hub_of,
    sse_bytes,
    start_hub,
    stop_hub,
    to_ms,
)
from token_service.auth import Principal
from token_service.clock import local_day
from token_service.directory import FacilityConfig
from token_service.errors import Forbidden, NotFound, Unauthorized
from token_service.models import TokenRecord
from token_service.queue.service import Token
from token_service.queue.status import Status
from token_service.records import tokens as token_sql
from token_service.state import AppState
from token_service.tasks import SingleFlight

router = APIRouter(tags=["board"])
HipId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
PublicId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{6,32}$")]
PING_S = 15
INTERVAL_TTL_S = 15.0
MAX_GAP_S = 20 * 60
GAPS_USED = 10
_SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


# ---- access and filters


def board_is_public(state: AppState, cfg: FacilityConfig) -> bool:
    """Readable without credentials: OPD_BOARD_PUBLIC is on and the facility does not require a device."""
    return state.settings.board_public and not cfg.facility.board_requires_device


async def board_access(request: Request, state: AppState, hip_id: str) -> FacilityConfig:
    """Public by default; otherwise (OPD_BOARD_PUBLIC off, or the facility's `board_requires_device` on)
    a board device of the facility or its staff only.

    EventSource cannot send headers, so a board device may pass its token as ``?token=``.
    """
    return (await board_principal(request, state, hip_id))[0]


async def board_principal(
    request: Request, state: AppState, hip_id: str
) -> tuple[FacilityConfig, Principal | None]:
    """The facility and who reads its board (None: an anonymous reader of a public board)."""
    cfg = await state.directory.get(hip_id)
    if board_is_public(state, cfg):
        return cfg, None
    principal = await deps.optional_principal(request, state)
    query_token = request.query_params.get("token")
    if principal is None and query_token:
        principal = await deps._load(state, query_token)
    if principal is None:
        raise Unauthorized("this board needs a board device token or a staff login")
    principal.require_facility(hip_id)
    if principal.role not in ("board", "admin", "clerk"):
        raise Forbidden("only boards and staff read the board")
    return cfg, principal


def counter_filter(
    cfg: FacilityConfig, counters: str | None, department: str | None
) -> frozenset[str] | None:
    if not counters and not department:
        return None
    chosen: set[str] = set()
    if counters:
        chosen |= {c.strip() for c in counters.split(",") if c.strip() in cfg.counters}
    if department:
        want = department.strip().casefold()
        chosen |= {c.code for c in cfg.counters.values() if c.department.casefold() == want}
    if not chosen:
        raise NotFound("no such counters or department at this facility")
    return frozenset(chosen)


def facility_info(cfg: FacilityConfig) -> dict[str, Any]:
    f = cfg.facility
    counters = [
        {"code": c.code, "name": c.name, "names": c.names or {}, "dept": c.department, "prefix": c.prefix}
        for c in cfg.counters.values()
        if c.active
    ]
    languages = list(f.languages or ["en"])
    return {"hip_id": f.hip_id, "name": f.name, "names": f.names or {}, "languages": languages,
            "timezone": f.timezone, "counters": counters}  # fmt: skip


_OFFLINE = sse_bytes("offline", {})
# A real event, not a comment: pages use it as a heartbeat to spot half-open connections.
_PING = sse_bytes("ping", {})


# ---- board


@router.get("/api/facilities/{hip_id}/board")
async def board(
    hip_id: HipId, request: Request, state: deps.StateDep,
    counters: Annotated[str | None, Query(max_length=400)] = None,
    department: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:  # fmt: skip
    cfg = await board_access(request, state, hip_id)
    only = counter_filter(cfg, counters, department)
    snap = await hub_of(state).snapshot(hip_id)
    return {**snap.public(only), "facility": facility_info(cfg)}


@router.get("/api/facilities/{hip_id}/board/events")
async def board_events(
    hip_id: HipId, request: Request, state: deps.StateDep,
    counters: Annotated[str | None, Query(max_length=400)] = None,
    department: Annotated[str | None, Query(max_length=200)] = None,
) -> StreamingResponse:  # fmt: skip
    cfg, principal = await board_principal(request, state, hip_id)
    only = counter_filter(cfg, counters, department)
    hub = hub_of(state)
    await hub.snapshot(hip_id)  # fail with 503 now rather than inside the stream
    return _stream(_board_stream(hub, hip_id, only, anonymous=principal is None))


async def _fresh_snapshot(hub: LiveHub, hip_id: str) -> Snapshot | None:
    """A snapshot once the stores answer again; None if the hub shut down meanwhile."""
    delay = 0.2
    while True:
        try:
            return await hub.snapshot(hip_id)
        except Exception:
            if hub.closing:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)


def _stream(content: AsyncIterator[bytes]) -> StreamingResponse:
    """An SSE response of pre-encoded events. Starlette's streaming response ends the stream when the
    client disconnects (the generator's cleanup then drops its listener) and adds nothing per event;
    pings come from the listener, shutdown from `LiveHub.end_streams`."""
    return StreamingResponse(content, media_type="text/event-stream", headers=_SSE_HEADERS)


async def _board_stream(
    hub: LiveHub, hip_id: str, only: frozenset[str] | None, anonymous: bool = True
) -> AsyncIterator[bytes]:
    """Every item is bytes encoded once per worker and shared by all listeners with the same filter; the
    messages waiting together are written as one chunk (a call and the rebuilt snapshot after it)."""
    async with hub.listen(hip_id, calls_only=True, counters=only, ping_s=PING_S) as listener:
        snap = await _fresh_snapshot(hub, hip_id)
        if snap is None:
            return
        yield snap.sse("snapshot", only)
        while True:
            batch = await listener.get_batch()
            # A call is drawn with the newest snapshot of its batch: the one rebuilt after the call knows
            # the called patient's masked name.
            newest = next((m.snapshot for m in reversed(batch) if m.kind == "update" and m.snapshot), snap)
            out: list[bytes] = []
            ended = False
            for msg in batch:
                if msg is PING:
                    out.append(_PING)
                elif msg.kind == "event" and msg.token is not None and msg.event in CALL_KINDS:
                    if only is None or msg.token.counter in only:
                        out.append(msg.call_sse(newest))
                elif msg.kind == "update" and msg.snapshot is not None:
                    snap = msg.snapshot
                    out.append(snap.sse("update", only))
                elif msg.kind == "offline":
                    out.append(_OFFLINE)
                elif msg.kind == "resync":
                    fresh = await _fresh_snapshot(hub, hip_id)
                    if fresh is None:
                        ended = True
                        break
                    snap = newest = fresh
                    out.append(snap.sse("snapshot", only))
                elif msg.kind == "config" and anonymous:
                    # The admin may have just required a board device token: an anonymous stream ends (the
                    # page reconnects and is refused) instead of showing the board until the next restart.
                    try:
                        still_public = board_is_public(hub.state, await hub.state.directory.get(hip_id))
                    except Exception:
                        continue
                    if not still_public:
                        ended = True
                        break
                elif msg.kind == "closed":
                    ended = True
                    break
            if out:
                yield b"".join(out)
            if ended:
                return


# ---- patient status


class StatusLookup:
    """public_id -> token id (immutable, cached) and per-counter call intervals (cached briefly)."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.ids: dict[str, str] = {}
        self.misses: dict[str, float] = {}
        self.intervals: dict[tuple[str, str], tuple[float, float | None]] = {}
        self._reading: SingleFlight[float | None] = SingleFlight()

    async def token_id(self, public_id: str) -> str:
        hit = self.ids.get(public_id)
        if hit:
            return hit
        missed = self.misses.get(public_id)
        if missed and time.monotonic() - missed < 5.0:
            raise NotFound("no such token")
        async with self.state.engine.connect() as conn:
            q = select(TokenRecord.id).where(TokenRecord.public_id == public_id)  # type: ignore[call-overload]
            row = (await conn.execute(q)).first()
        if row is None:
            if len(self.misses) > 10_000:
                self.misses.clear()
            self.misses[public_id] = time.monotonic()
            raise NotFound("no such token")
        if len(self.ids) > 200_000:
            self.ids.clear()
        self.ids[public_id] = row[0]
        return str(row[0])

    async def token(self, public_id: str) -> Token:
        token_id = await self.token_id(public_id)
        try:
            return await self.state.queue.get(token_id)
        except NotFound:
            # Older than the Redis copy (kept three days): the durable record still answers.
            async with self.state.engine.connect() as conn:
                q = select(TokenRecord).where(TokenRecord.id == token_id)  # type: ignore[arg-type]
                row = (await conn.execute(q)).first()
            if row is None:
                raise
            return token_sql.record_to_token(row)

    async def interval_s(self, hip_id: str, counter: str, tz: str) -> float | None:
        key = (hip_id, counter)
        hit = self.intervals.get(key)
        if hit and time.monotonic() - hit[0] < INTERVAL_TTL_S:
            return hit[1]
        # Every open status page of the counter asks when the entry expires: they share one read.
        return await self._reading.run(key, lambda: self._read_interval(hip_id, counter, tz))

    async def _read_interval(self, hip_id: str, counter: str, tz: str) -> float | None:
        day, _ = local_day(self.state.clock.now_ms(), tz)
        q = (
            select(TokenRecord.called_at)  # type: ignore[call-overload]
            .where(TokenRecord.hip_id == hip_id, TokenRecord.counter == counter,
                   TokenRecord.local_date == day, TokenRecord.called_at.isnot(None))  # type: ignore[union-attr]
            .order_by(TokenRecord.called_at.desc())  # type: ignore[union-attr]
            .limit(GAPS_USED + 1)
        )  # fmt: skip
        async with self.state.engine.connect() as conn:
            times = [to_ms(r[0]) / 1000 for r in (await conn.execute(q)).all()]
        value = median_gap(times)
        self.intervals[(hip_id, counter)] = (time.monotonic(), value)
        return value


def median_gap(call_times_s: list[float]) -> float | None:
    ordered = sorted(call_times_s)
    gaps = [b - a for a, b in itertools.pairwise(ordered) if 0 < b - a <= MAX_GAP_S]
    return statistics.median(gaps) if len(gaps) >= 2 else None


def lookup_of(state: AppState) -> StatusLookup:
    found = state.extras.get("status_lookup")
    if not isinstance(found, StatusLookup):
        found = state.extras["status_lookup"] = StatusLookup(state)
    return found


async def status_event(state: AppState, token: Token, snap: Snapshot) -> tuple[dict[str, Any], bytes]:
    """The status body and its SSE bytes, built once per (token version, snapshot) in this worker."""
    key = (token.id, token.version)
    hit = snap.status_cache.get(key)
    if hit is None:
        body = await status_body(state, token, snap)
        hit = snap.status_cache.setdefault(key, (body, sse_bytes("status", body)))
    return hit


async def status_body(state: AppState, token: Token, snap: Snapshot) -> dict[str, Any]:
    cfg = await state.directory.get(token.hip_id)
    counter = cfg.counters.get(token.counter)
    position = snap.position(token)
    eta: int | None = None
    if position is not None:
        interval = await lookup_of(state).interval_s(token.hip_id, token.counter, cfg.facility.timezone)
        if interval is not None:
            eta = max(1, math.ceil(interval * (position + 1) / 60))
    desk = cfg.desks.get(token.desk or "")
    return {
        "label": token.label, "number": token.number, "counter": token.counter,
        "counter_name": counter.name if counter else token.counter,
        "counter_names": (counter.names or {}) if counter else {},
        "status": token.status.value, "position": position, "eta_minutes": eta,
        "desk": token.desk if token.status is Status.CALLED else None,
        "desk_name": desk.name if desk and token.status is Status.CALLED else None,
        "called_at": token.called_ms, "local_date": token.local_date,
        "facility": {"name": cfg.facility.name, "names": cfg.facility.names or {}},
        "version": token.version,
    }  # fmt: skip


@router.get("/api/status/{public_id}")
async def token_status(public_id: PublicId, state: deps.StateDep) -> dict[str, Any]:
    token = await lookup_of(state).token(public_id)
    snap = await hub_of(state).snapshot(token.hip_id)
    return await status_body(state, token, snap)


@router.get("/api/status/{public_id}/events")
async def token_status_events(public_id: PublicId, state: deps.StateDep) -> StreamingResponse:
    token = await lookup_of(state).token(public_id)
    hub = hub_of(state)
    await hub.snapshot(token.hip_id)
    return _stream(_status_stream(state, hub, token))


async def _status_stream(state: AppState, hub: LiveHub, token: Token) -> AsyncIterator[bytes]:
    """The token's status, written again only when what the page shows changed; the messages waiting
    together give one status (the last state), written as one chunk with any ping or offline notice."""
    async with hub.listen(token.hip_id, token_id=token.id, ping_s=PING_S) as listener:
        snap = await _fresh_snapshot(hub, token.hip_id)
        if snap is None:
            return
        _, last = await status_event(state, token, snap)
        yield last
        while True:
            batch = await listener.get_batch()
            out: list[bytes] = []
            changed = ended = False
            for msg in batch:
                if msg is PING:
                    out.append(_PING)
                elif msg.kind == "event" and msg.token is not None and msg.token.id == token.id:
                    token, changed = msg.token, True
                elif msg.kind == "update" and msg.snapshot is not None:
                    snap, changed = msg.snapshot, True
                elif msg.kind == "offline":
                    if changed:  # what the page should show before it goes offline
                        last, changed = await _status_into(out, state, token, snap, last), False
                    out.append(_OFFLINE)
                elif msg.kind == "resync":
                    fresh = await _fresh_snapshot(hub, token.hip_id)
                    if fresh is None:
                        ended = True
                        break
                    snap, changed = fresh, True
                    token = await lookup_of(state).token(token.public_id)
                elif msg.kind == "closed":
                    ended = True
                    break
            if changed and not ended:
                last = await _status_into(out, state, token, snap, last)
            if out:
                yield b"".join(out)
            if ended:
                return


async def _status_into(out: list[bytes], state: AppState, token: Token, snap: Snapshot, last: bytes) -> bytes:
    """Append the token's status event unless the page already shows those bytes; returns them."""
    _, encoded = await status_event(state, token, snap)
    if encoded != last:  # same bytes as last time: nothing the page shows has changed
        out.append(encoded)
    return encoded


def _end_streams_on_exit(hub: LiveHub) -> list[tuple[int, Any]]:
    """Chain the server's SIGTERM/SIGINT handlers so open SSE streams end when it starts stopping.

    uvicorn waits for open connections before the lifespan shutdown runs, and an SSE stream never ends
    by itself; without this every stop would hang until the process is killed. Browsers reconnect.
    """
    if threading.current_thread() is not threading.main_thread():
        return []
    loop = asyncio.get_running_loop()
    restore: list[tuple[int, Any]] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def chained(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(hub.end_streams)
            previous(signum, frame)

        signal.signal(sig, chained)
        restore.append((sig, previous))
    return restore


async def _start(state: AppState) -> None:
    await start_hub(state)
    state.extras["live_hub.signals"] = _end_streams_on_exit(hub_of(state))


async def _stop(state: AppState) -> None:
    for sig, previous in reversed(state.extras.pop("live_hub.signals", [])):
        signal.signal(sig, previous)
    await stop_hub(state)


def install(app: FastAPI) -> None:
    from token_service.api import fhir

    app.include_router(router)
    app.include_router(fhir.router)
    app.state.startup_hooks.append(_start)
    app.state.shutdown_hooks.append(_stop)


__all__ = ["board_access", "board_is_public", "install", "status_body", "status_event"]

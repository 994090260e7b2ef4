"""PrintService: create print jobs in SQL, lease them to a printer's agent through Redis, record acks.

A job is `queued` until an agent takes it; delivery sets a Redis lease (SET NX PX, so two workers never
hand out the same job at once) and marks it `delivered`. An agent that dies without acknowledging lets
the lease lapse and the job is delivered again (at least once; the agent de-duplicates by job id).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update

from token_service.auth import Principal
from token_service.clock import from_ms
from token_service.errors import Conflict, Forbidden, NotFound, Unprocessable
from token_service.models import AuditLog, Device, PrintJob
from token_service.printing import keys
from token_service.printing.schemas import JobOut, PrinterOut, PrintQueuedOut
from token_service.printing.slips import build_slip
from token_service.printing.wakeup import Wakeups
from token_service.queue.status import TERMINAL
from token_service.state import AppState

JOB = PrintJob.__table__  # type: ignore[attr-defined]
DEVICE = Device.__table__  # type: ignore[attr-defined]
AUDIT = AuditLog.__table__  # type: ignore[attr-defined]
OPEN = ("queued", "delivered")
MAX_WAIT_S = 25.0  # below common proxy idle timeouts (30-60 s), so a long-poll is never cut mid-wait
ONLINE_WINDOW_S = 60.0
# Jobs looked at per claim: an agent prints one at a time, so more than a handful leased is abnormal.
_CLAIM_SCAN = 50


@dataclass(frozen=True)
class PrinterRef:
    hip_id: str
    name: str


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands timestamps back without a zone; everything we store is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class PrintService:
    def __init__(self, state: AppState, wakeups: Wakeups) -> None:
        self.state = state
        self.wakeups = wakeups

    def _now(self) -> datetime:
        now = from_ms(self.state.clock.now_ms())
        assert now is not None
        return now

    # -- creating jobs ---------------------------------------------------------------------------

    async def request(
        self, principal: Principal, token_id: str, printer: str | None, language: str | None
    ) -> PrintQueuedOut:
        """A new job printing `token_id` on `printer` (a kiosk defaults to its paired printer)."""
        state = self.state
        token = await state.queue.get(token_id)
        if principal.kind == "user":
            principal.require_role("admin", "clerk")
            principal.require_counter(token.hip_id, token.counter)
            if not printer:
                raise Unprocessable('name the printer device: {"printer": NAME}', code="printer_required")
        elif principal.role == "kiosk":
            principal.require_facility(token.hip_id)
            paired = await self._paired_printer(principal)
            if printer and printer != paired:
                raise Forbidden(f"this kiosk prints only on its paired printer {paired}")
            printer = paired
        else:
            raise Forbidden("only staff and kiosks request slips")
        if token.status in TERMINAL:
            raise Conflict(
                f"token {token.label} is {token.status.value}; nothing to print", code="token_finished"
            )
        await self._printer_device(token.hip_id, printer)
        cfg = await state.directory.get(token.hip_id)
        payload = build_slip(cfg, token, state.settings.public_base_url, language).to_json()
        now = self._now()
        async with state.engine.begin() as conn:
            result = await conn.execute(
                insert(JOB).values(
                    hip_id=token.hip_id,
                    printer=printer,
                    token_id=token.id,
                    payload=payload,
                    status="queued",
                    attempts=0,
                    requested_by=principal.name,
                    created_at=now,
                )
            )
            job_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            await conn.execute(
                insert(AUDIT).values(
                    at=now,
                    actor=principal.name,
                    action="print",
                    hip_id=token.hip_id,
                    target=token.id,
                    detail={"printer": printer, "job_id": job_id},
                )
            )
        # After the commit: an agent woken earlier would look in SQL and not find the job yet.
        await state.redis.publish(keys.wake_channel(token.hip_id, printer), str(job_id))
        return PrintQueuedOut(job_id=job_id, printer=printer, status="queued")

    async def _paired_printer(self, principal: Principal) -> str:
        async with self.state.engine.connect() as conn:
            paired = (
                await conn.execute(select(DEVICE.c.printer).where(DEVICE.c.id == principal.device_id))
            ).scalar()
        if not paired:
            raise Conflict(f"kiosk {principal.name} has no paired printer; ask an admin", code="no_printer")
        return str(paired)

    async def _printer_device(self, hip_id: str, name: str) -> None:
        async with self.state.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(DEVICE.c.active).where(
                        DEVICE.c.hip_id == hip_id, DEVICE.c.name == name, DEVICE.c.kind == "printer"
                    )
                )
            ).first()
        if row is None:
            raise NotFound(f"printer {name} not found at facility {hip_id}")
        if not row.active:
            raise Conflict(f"printer {name} is deactivated", code="printer_inactive")

    # -- the agent protocol ----------------------------------------------------------------------

    async def next_job(self, printer: PrinterRef, wait_s: float, lease_s: float) -> JobOut | None:
        """The oldest job this printer may take now, waiting up to `wait_s` for one to appear."""
        channel = keys.wake_channel(printer.hip_id, printer.name)
        deadline = time.monotonic() + min(max(wait_s, 0.0), MAX_WAIT_S)
        while True:
            # Take the event before looking, so a job committed between the look and the wait wakes us.
            event = self.wakeups.waiter(channel)
            job, retry_in = await self._claim(printer, lease_s)
            remaining = deadline - time.monotonic()
            if job is not None or remaining <= 0 or self.wakeups.closing:
                return job
            timeout = remaining if retry_in is None else min(remaining, retry_in)
            try:
                await asyncio.wait_for(event.wait(), timeout)
            except TimeoutError:
                pass

    async def _claim(self, printer: PrinterRef, lease_s: float) -> tuple[JobOut | None, float | None]:
        """(a newly leased job, or None and the seconds until the earliest held lease lapses)."""
        state = self.state
        async with state.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(JOB.c.id)
                    .where(
                        JOB.c.hip_id == printer.hip_id, JOB.c.printer == printer.name, JOB.c.status.in_(OPEN)
                    )
                    .order_by(JOB.c.id)
                    .limit(_CLAIM_SCAN)
                )
            ).all()
        lease_ms = max(1, int(lease_s * 1000))
        next_lapse: float | None = None
        for (job_id,) in rows:
            lease = keys.lease_key(printer.hip_id, job_id)
            if not await state.redis.set(lease, str(state.clock.now_ms()), nx=True, px=lease_ms):
                ttl_ms = await state.redis.pttl(lease)
                lapse = max(ttl_ms, 10) / 1000 if ttl_ms >= 0 else 0.01
                next_lapse = lapse if next_lapse is None else min(next_lapse, lapse)
                continue
            job = await self._mark_delivered(job_id, lease_s)
            if job is not None:
                return job, None
            await state.redis.delete(lease)  # acknowledged meanwhile
        return None, next_lapse

    async def _mark_delivered(self, job_id: int, lease_s: float) -> JobOut | None:
        async with self.state.engine.begin() as conn:
            done = await conn.execute(
                update(JOB)
                .where(JOB.c.id == job_id, JOB.c.status.in_(OPEN))
                .values(status="delivered", attempts=JOB.c.attempts + 1, delivered_at=self._now())
            )
            if done.rowcount != 1:
                return None
            row = (
                await conn.execute(
                    select(JOB.c.token_id, JOB.c.payload, JOB.c.attempts, JOB.c.created_at).where(
                        JOB.c.id == job_id
                    )
                )
            ).one()
        return JobOut(
            id=job_id, token_id=row.token_id, payload=row.payload, attempt=row.attempts,
            lease_seconds=lease_s, created_at=_aware(row.created_at),
        )  # fmt: skip

    async def ack(self, printer: PrinterRef, job_id: int, status: str, error: str | None) -> str:
        """Record the agent's outcome; a repeated ack (after a re-delivery) changes nothing."""
        now = self._now()
        async with self.state.engine.begin() as conn:
            row = (
                await conn.execute(
                    select(JOB.c.status).where(
                        JOB.c.id == job_id, JOB.c.hip_id == printer.hip_id, JOB.c.printer == printer.name
                    )
                )
            ).first()
            if row is None:
                raise NotFound(f"print job {job_id} not found for printer {printer.name}")
            if row.status in OPEN:
                values: dict[str, Any] = {"status": status, "last_error": error}
                if status == "printed":
                    values["printed_at"] = now
                await conn.execute(
                    update(JOB).where(JOB.c.id == job_id, JOB.c.status.in_(OPEN)).values(**values)
                )
                final = status
            else:
                final = str(row.status)
        await self.state.redis.delete(keys.lease_key(printer.hip_id, job_id))
        return final

    async def heartbeat(self, printer: PrinterRef, device_id: int | None, healthy: bool, detail: str) -> int:
        """Store the agent's report; returns the number of jobs waiting for it."""
        state = self.state
        now = self._now()
        health = keys.health_key(printer.hip_id, printer.name)
        async with state.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                health,
                mapping={"healthy": "1" if healthy else "0", "detail": detail, "at": state.clock.now_ms()},
            )
            pipe.expire(health, keys.HEALTH_TTL_S)
            await pipe.execute()
        async with state.engine.begin() as conn:
            await conn.execute(update(DEVICE).where(DEVICE.c.id == device_id).values(last_seen_at=now))
            waiting = await conn.execute(
                select(func.count())
                .select_from(JOB)
                .where(JOB.c.hip_id == printer.hip_id, JOB.c.printer == printer.name, JOB.c.status.in_(OPEN))
            )
            return int(waiting.scalar() or 0)

    # -- the admin view --------------------------------------------------------------------------

    async def printers(self, hip_id: str) -> list[PrinterOut]:
        state = self.state
        await state.directory.get(hip_id)  # 404 for an unknown facility
        now = self._now()
        async with state.engine.connect() as conn:
            devices = (
                await conn.execute(
                    select(
                        DEVICE.c.name, DEVICE.c.kind, DEVICE.c.active, DEVICE.c.last_seen_at, DEVICE.c.printer
                    )
                    .where(DEVICE.c.hip_id == hip_id)
                    .order_by(DEVICE.c.name)
                )
            ).all()
            counts = (
                await conn.execute(
                    select(JOB.c.printer, JOB.c.status, func.count(), func.max(JOB.c.printed_at))
                    .where(JOB.c.hip_id == hip_id)
                    .where((JOB.c.status != "failed") | (JOB.c.created_at >= now - timedelta(days=1)))
                    .group_by(JOB.c.printer, JOB.c.status)
                )
            ).all()
        tally: dict[tuple[str, str], int] = {(r[0], r[1]): int(r[2]) for r in counts}
        printed_at = {r[0]: _aware(r[3]) for r in counts if r[1] == "printed"}
        names = [d.name for d in devices if d.kind == "printer"]
        async with state.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(keys.health_key(hip_id, name))
            reports: list[dict[str, str]] = await pipe.execute() if names else []
        health = dict(zip(names, reports, strict=True))
        out = []
        for d in devices:
            if d.kind != "printer":
                continue
            seen = _aware(d.last_seen_at)
            report = health.get(d.name) or {}
            at_ms = int(report["at"]) if report.get("at") else None
            out.append(
                PrinterOut(
                    name=d.name,
                    active=bool(d.active),
                    online=seen is not None and (now - seen).total_seconds() <= ONLINE_WINDOW_S,
                    last_seen_at=seen,
                    healthy=None if not report else report.get("healthy") == "1",
                    detail=report.get("detail"),
                    health_at=from_ms(at_ms),
                    queued=tally.get((d.name, "queued"), 0),
                    in_flight=tally.get((d.name, "delivered"), 0),
                    failed_24h=tally.get((d.name, "failed"), 0),
                    last_printed_at=printed_at.get(d.name),
                    kiosks=[k.name for k in devices if k.kind == "kiosk" and k.printer == d.name],
                )
            )
        return out

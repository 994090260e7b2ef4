"""Personal-data retention: clear patient snapshots from old tokens, keep every figure the reports need."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, null, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from token_service.models import OnShare, TokenRecord
from token_service.queue import keys
from token_service.state import AppState

log = logging.getLogger("token_service.retention")

TOKEN = TokenRecord.__table__  # type: ignore[attr-defined]
ON_SHARE = OnShare.__table__  # type: ignore[attr-defined]
DEFAULT_DAYS = 90
# Redis keeps each token's hash (with its ABHA address) this long; a shorter retention could be undone
# by a late write-through of the live copy, so it is the floor.
MIN_DAYS = max(1, keys.TOKEN_TTL_S // 86400)
_BATCH = 500


@dataclass(frozen=True)
class PurgeResult:
    cutoff: datetime
    tokens: int
    on_shares: int


def cutoff_for(days: int, now: datetime) -> datetime:
    if days < MIN_DAYS:
        raise ValueError(f"retention must be at least {MIN_DAYS} days (live queue data lives that long)")
    return now.astimezone(UTC) - timedelta(days=days)


async def purge(
    engine: AsyncEngine, older_than_days: int, now: datetime | None = None, hip_id: str | None = None
) -> PurgeResult:
    """Clear the patient snapshot, ABHA address and REQUEST-ID of tokens issued before the cutoff.

    Token rows, statuses, sources, priorities and every timestamp stay, so daily reports and CSVs of
    old days give the same figures; only who the patient was is forgotten. The on-share outbox copy of
    the ABHA address goes too. Safe to run repeatedly and from several processes at once.
    """
    cutoff = cutoff_for(older_than_days, now or datetime.now(UTC))
    personal = or_(
        TOKEN.c.patient.isnot(None), TOKEN.c.abha_address.isnot(None), TOKEN.c.request_id.isnot(None)
    )
    where = and_(TOKEN.c.issued_at < cutoff, personal)
    if hip_id is not None:
        where = and_(where, TOKEN.c.hip_id == hip_id)
    sqlite = engine.dialect.name == "sqlite"
    async with engine.begin() as conn:
        if sqlite:
            # Zero the freed bytes: otherwise the old snapshot stays readable in the file's free space.
            await conn.exec_driver_sql("PRAGMA secure_delete=ON")
        # null(): a JSON column would otherwise store the JSON text 'null' instead of SQL NULL.
        cleared = await conn.execute(
            update(TOKEN).where(where).values(patient=null(), abha_address=None, request_id=None)
        )
        tokens = int(cleared.rowcount or 0)
    on_shares = await _purge_on_shares(engine, cutoff, hip_id)
    if sqlite:
        # Old page versions live on in the write-ahead log until a checkpoint copies and truncates it.
        async with engine.connect() as conn:
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    log.info("retention: cleared %d tokens and %d on-share records before %s", tokens, on_shares, cutoff)
    return PurgeResult(cutoff, tokens, on_shares)


async def _purge_on_shares(engine: AsyncEngine, cutoff: datetime, hip_id: str | None) -> int:
    """The outbox payload is JSON; rewritten in Python so the same code runs on SQLite and PostgreSQL."""
    where = ON_SHARE.c.created_at < cutoff
    if hip_id is not None:
        where = and_(where, ON_SHARE.c.hip_id == hip_id)
    done = 0
    last_id = 0
    while True:
        async with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                await conn.exec_driver_sql("PRAGMA secure_delete=ON")
            rows = (
                await conn.execute(
                    select(ON_SHARE.c.id, ON_SHARE.c.payload)
                    .where(and_(where, ON_SHARE.c.id > last_id))
                    .order_by(ON_SHARE.c.id)
                    .limit(_BATCH)
                )
            ).all()
            for row in rows:
                payload: dict[str, Any] = dict(row.payload or {})
                if payload.get("abha_address") is not None:
                    payload["abha_address"] = None
                    await conn.execute(
                        update(ON_SHARE).where(ON_SHARE.c.id == row.id).values(payload=payload)
                    )
                    done += 1
        if len(rows) < _BATCH:
            return done
        last_id = rows[-1].id


def retention_days(settings: Any) -> int:
    """`retention_days` from the settings when configured there; 0 turns the daily purge off."""
    return int(getattr(settings, "retention_days", DEFAULT_DAYS))


DAILY_LOCK_KEY = "opd:{retention}:daily"
_DAY_S = 24 * 3600


async def purge_daily(state: AppState) -> None:
    """Run the purge about once a day; a Redis lock makes one worker of the fleet do it."""
    while True:
        days = retention_days(state.settings)
        if days:
            try:
                if await state.redis.set(DAILY_LOCK_KEY, "1", nx=True, ex=_DAY_S - 600):
                    now = datetime.fromtimestamp(state.clock.now_ms() / 1000, UTC)
                    await purge(state.engine, max(days, MIN_DAYS), now)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed night is retried the next hour, never fatal
                log.warning("daily retention purge failed: %r", exc)
        await asyncio.sleep(3600)

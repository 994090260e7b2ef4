"""All SQL for tokens and their history: version-guarded upserts, event inserts, day queries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, case, false, func, literal_column, not_, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from token_service.clock import from_ms
from token_service.models import TokenEvent, TokenRecord
from token_service.queue import keys
from token_service.queue.service import Token
from token_service.queue.status import Priority, Source, Status
from token_service.records.writer import Row, RowOp, execute_rows, json_rows_insert

TOKEN = TokenRecord.__table__  # type: ignore[attr-defined]
EVENT = TokenEvent.__table__  # type: ignore[attr-defined]

# Columns an upsert may overwrite: the live state. Identity columns and the patient snapshot never
# change after issue. The ABHA address and REQUEST-ID are known only to the issue's own state (Redis's
# record leaves them out): a row first written from another state gets them from a later write that
# carries them, if that write is of the same or a newer version or the row still holds the patient's
# snapshot. The shared profile travels in the same upsert (the share's write-through) and fills a row
# that has none, whatever the versions: the recorder may have written the token first. A row whose
# personal data the retention purge cleared is never filled in again, not even by a late copy of its
# issue event: only rows issued within the live queue's lifetime (the purge's floor) are filled at all.
_IDENTITY = ("abha_address", "request_id")
_MUTABLE = (
    "counter", "status", "priority", "desk", "skips", "recalls", "order", "version", "called_at",
    "served_at", "completed_at", "expired_at", "finished_at", "expires_at", "updated_at",
)  # fmt: skip


def _date(yyyymmdd: str) -> date:
    return date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]))


def token_row(t: Token) -> dict[str, Any]:
    finished = from_ms(t.finished_ms)
    return {
        "id": t.id,
        "public_id": t.public_id,
        "hip_id": t.hip_id,
        "counter": t.counter,
        "origin_counter": t.origin_counter,
        "local_date": _date(t.local_date),
        "number": t.number,
        "label": t.label,
        "status": t.status.value,
        "priority": t.priority.value,
        "source": t.source.value,
        "abha_address": t.abha_address,
        "request_id": t.request_id,
        "desk": t.desk,
        "skips": t.skips,
        "recalls": t.recalls,
        "order": t.order,
        "version": t.version,
        "issued_at": from_ms(t.issued_ms),
        "called_at": from_ms(t.called_ms),
        "served_at": from_ms(t.served_ms),
        "completed_at": finished if t.status is Status.COMPLETED else None,
        "expired_at": finished if t.status is Status.EXPIRED else None,
        "finished_at": finished,
        "expires_at": from_ms(t.expires_ms),
        "day_end_at": from_ms(t.day_end_ms),
        "updated_at": from_ms(t.issued_ms if t.finished_ms is None else t.finished_ms),
        "patient": None,
    }


_STATEMENTS: dict[tuple[str, str], Any] = {}
# What `token_row` and `event_row` hold (event ids are serial).
_TOKEN_COLUMNS = tuple(c.name for c in TOKEN.columns)
_EVENT_COLUMNS = tuple(c.name for c in EVENT.columns if c.name != "id")


def _live_since(flavour: str) -> Any:
    """The database's own clock less the live queue's lifetime (`keys.TOKEN_TTL_S`, also the retention
    purge's floor): a row issued before it can have been purged."""
    if flavour == "sqlite":  # DateTime is stored as UTC text, comparable with SQLite's datetime()
        return func.datetime("now", f"-{keys.TOKEN_TTL_S} seconds")
    return func.now() - literal_column(f"interval '{keys.TOKEN_TTL_S} seconds'")


def _may_change(r: Any) -> Any:
    """PostgreSQL: whether a row's upsert may change the stored token, by one primary-key probe per row.

    An `ON CONFLICT DO UPDATE` whose `WHERE` refuses still locks the row, and the lock is a WAL record
    that every commit waits for. Most of the recorder's copies are such rows: the request that changed
    the token wrote the same state through half a second before. The probe lets through every row the
    upsert could change (not stored, a newer version, an identity column or the profile to fill), as
    the statement's snapshot sees it; a row changed since then is only newer or fuller, so a row held
    back here would have been refused by the upsert too. A scalar subquery, not `NOT EXISTS`: the
    planner turned that into a hash anti-join over the whole table, while this stays an index probe.
    """
    stored = TOKEN.alias("stored")
    unchanged = (
        select(
            and_(
                stored.c.version >= r.version,
                *(or_(r[c].is_(None), stored.c[c].isnot(None)) for c in _IDENTITY),
                or_(r.patient.is_(None), stored.c.patient.isnot(None)),
            )
        )
        .where(stored.c.id == r.id)
        .scalar_subquery()
    )
    return not_(func.coalesce(unchanged, false()))


def _statement(flavour: str, kind: str) -> Any:
    """The token upsert (`kind` "token") or history insert ("event"), built once per flavour: "json" for
    PostgreSQL through psycopg (a batch's rows as one JSON parameter, see `execute_json_rows`), else the
    dialect's name, for a parameter list.

    Building `insert().values([...]).on_conflict_do_update(...)` per call recompiled the statement and
    re-created the `excluded` alias of the 25-column table every time: most of the write-through's CPU.
    """
    key = (flavour, kind)
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        table = TOKEN if kind == "token" else EVENT
        ins: Any
        if flavour == "json":
            if kind == "token":
                ins = json_rows_insert(table, _TOKEN_COLUMNS, where=_may_change)
            else:
                ins = json_rows_insert(table, _EVENT_COLUMNS)
        else:
            ins = (postgresql.insert if flavour == "postgresql" else sqlite.insert)(table)
        if kind == "token":
            newer = TOKEN.c.version < ins.excluded.version
            fill = and_(
                or_(TOKEN.c.version <= ins.excluded.version, TOKEN.c.patient.isnot(None)),
                TOKEN.c.issued_at > _live_since(flavour),
            )
            set_: dict[str, Any] = {c: case((newer, ins.excluded[c]), else_=TOKEN.c[c]) for c in _MUTABLE}
            set_.update({c: case((fill, func.coalesce(TOKEN.c[c], ins.excluded[c])), else_=TOKEN.c[c])
                         for c in _IDENTITY})  # fmt: skip
            missing = or_(*(and_(TOKEN.c[c].is_(None), ins.excluded[c].isnot(None)) for c in _IDENTITY))
            profile = and_(
                TOKEN.c.patient.is_(None),
                ins.excluded.patient.isnot(None),
                TOKEN.c.issued_at > _live_since(flavour),
            )
            set_["patient"] = case((profile, ins.excluded.patient), else_=TOKEN.c.patient)
            stmt = ins.on_conflict_do_update(
                index_elements=["id"], set_=set_, where=or_(newer, and_(fill, missing), profile)
            )
        else:
            stmt = ins.on_conflict_do_nothing(index_elements=["hip_id", "stream_id"])
        _STATEMENTS[key] = stmt
    return stmt


async def _execute(conn: AsyncConnection, kind: str, rows: list[Row]) -> None:
    await execute_rows(conn, rows, json=_statement("json", kind), plain=_statement(conn.dialect.name, kind))


def _newest_rows(rows: Sequence[Row]) -> list[Row]:
    """The newest version of each token, in id order: two workers upserting overlapping tokens then
    lock them in the same order (no deadlock between the write-through and the recorder). The identity
    columns and the profile come from whichever version carries them (only the issue's state does)."""
    newest: dict[str, Row] = {}
    for row in rows:
        seen = newest.get(row["id"])
        if seen is None:
            newest[row["id"]] = row
            continue
        if seen["version"] < row["version"]:
            seen, row = row, seen
            newest[seen["id"]] = seen
        for c in (*_IDENTITY, "patient"):
            if seen[c] is None and row[c] is not None:
                newest[seen["id"]] = seen = {**seen, c: row[c]}
    return [newest[i] for i in sorted(newest)]


async def _upsert_rows(conn: AsyncConnection, rows: list[Row]) -> None:
    """The newest known state of each token; an older version never overwrites a newer one."""
    await _execute(conn, "token", _newest_rows(rows))


async def _event_rows(conn: AsyncConnection, rows: list[Row]) -> None:
    """History rows keyed by stream entry id: a redelivered entry is ignored, never duplicated."""
    await _execute(conn, "event", rows)


# Operations for the SQL writer's batches: a token's state (with its shared profile), its history.
TOKEN_UPSERT = RowOp("token upsert", 10, _upsert_rows)
EVENT_INSERT = RowOp("event insert", 40, _event_rows)


def token_rows(tokens: Sequence[Token], patient: dict[str, Any] | None = None) -> list[tuple[RowOp, Row]]:
    """Writer rows for these tokens' state (and the shared profile, stored with the first token)."""
    rows: list[tuple[RowOp, Row]] = [(TOKEN_UPSERT, token_row(t)) for t in tokens]
    if patient is not None and rows:
        rows[0][1]["patient"] = patient
    return rows


def event_row(hip_id: str, stream_id: str, kind: str, at_ms: int, desk: str, t: Token) -> dict[str, Any]:
    return {
        "hip_id": hip_id,
        "stream_id": stream_id,
        "token_id": t.id,
        "kind": kind,
        "status": t.status.value,
        "version": t.version,
        "desk": desk or None,
        "at": from_ms(at_ms),
    }


def _ms(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite returns naive UTC
        from datetime import UTC

        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


def record_to_token(r: Any) -> Token:
    """Rebuild the Redis form of a token from its SQL row."""
    return Token(
        id=r.id,
        public_id=r.public_id,
        hip_id=r.hip_id,
        counter=r.counter,
        origin_counter=r.origin_counter,
        local_date=r.local_date.strftime("%Y%m%d"),
        number=r.number,
        label=r.label,
        status=Status(r.status),
        priority=Priority(r.priority),
        source=Source(r.source),
        abha_address=r.abha_address,
        request_id=r.request_id,
        order=float(r.order),
        issued_ms=_ms(r.issued_at) or 0,
        called_ms=_ms(r.called_at),
        served_ms=_ms(r.served_at),
        finished_ms=_ms(r.finished_at),
        expires_ms=_ms(r.expires_at) or 0,
        day_end_ms=_ms(r.day_end_at) or 0,
        desk=r.desk,
        skips=r.skips,
        recalls=r.recalls,
        version=r.version,
    )


async def tokens_of_day(conn: AsyncConnection, hip_id: str, day: date) -> list[Token]:
    rows = await conn.execute(
        select(TOKEN).where(and_(TOKEN.c.hip_id == hip_id, TOKEN.c.local_date == day)).order_by(TOKEN.c.id)
    )
    return [record_to_token(r) for r in rows]


async def patients_for(conn: AsyncConnection, token_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    if not token_ids:
        return {}
    rows = await conn.execute(
        select(TOKEN.c.id, TOKEN.c.patient).where(
            and_(TOKEN.c.id.in_(list(token_ids)), TOKEN.c.patient.isnot(None))
        )
    )
    return {r.id: r.patient for r in rows if r.patient}

"""Daily OPD reports read from SQL (never Redis): tokens per counter and source, outcomes, waits, arrivals.

Definitions (they are what the admin page and the CSV show):
- a token counts at the counter where it was issued (`origin_counter`), also if it was transferred later;
- wait = first call − issue, over every token that was called at least once;
- service = finish − last call, over completed tokens only;
- p90 is the nearest-rank 90th percentile: the smallest value that at least 90 % of the values do not exceed;
- the hourly histogram counts arrivals (issue time) by the facility's local hour.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from token_service.clock import local_day
from token_service.models import Counter, Facility, TokenRecord

TOKEN = TokenRecord.__table__  # type: ignore[attr-defined]
COUNTER = Counter.__table__  # type: ignore[attr-defined]
FACILITY = Facility.__table__  # type: ignore[attr-defined]

SOURCES = ("scan_share", "walk_in", "abha_card")
STATUSES = ("completed", "no_show", "cancelled", "expired", "waiting", "called")
CSV_COLUMNS = (
    "token_id", "label", "number", "counter", "origin_counter", "local_date", "source", "priority", "status",
    "desk", "issued_at", "called_at", "served_at", "finished_at", "wait_seconds", "service_seconds", "skips",
    "recalls",
)  # fmt: skip
# Only with ?include_personal=1: what the patient shared (or the clerk typed) about themselves.
PERSONAL_COLUMNS = ("abha_address", "abha_number", "name", "gender", "year_of_birth", "phone")


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Durations:
    count: int
    mean_s: float | None
    p90_s: float | None
    max_s: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Durations:
        if not values:
            return cls(0, None, None, None)
        return cls(len(values), round(sum(values) / len(values), 1), percentile(values, 90), max(values))


@dataclass
class CounterFigures:
    code: str
    name: str
    total: int = 0
    sources: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCES, 0))
    statuses: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    wait: Durations = Durations(0, None, None, None)


@dataclass
class DayReport:
    hip_id: str
    facility: str
    day: date
    timezone: str
    total: int
    sources: dict[str, int]
    statuses: dict[str, int]
    transferred: int
    counters: list[CounterFigures]
    wait: Durations
    service: Durations
    hourly: list[int]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["day"] = self.day.isoformat()
        return out


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value  # SQLite hands back naive UTC


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    a, b = _utc(start), _utc(end)
    if a is None or b is None:
        return None
    return round((b - a).total_seconds(), 3)


def build_report(
    rows: Iterable[Any],
    *,
    hip_id: str,
    facility: str,
    day: date,
    timezone: str,
    counter_names: dict[str, str],
) -> DayReport:
    """Compute the figures from token rows (pure: unit tests feed it rows read back from SQL)."""
    tz = ZoneInfo(timezone)
    per_counter = {code: CounterFigures(code, name) for code, name in counter_names.items()}
    waits: dict[str, list[float]] = {}
    all_waits: list[float] = []
    services: list[float] = []
    hourly = [0] * 24
    sources: Tally[str] = Tally()
    statuses: Tally[str] = Tally()
    transferred = 0
    total = 0
    for r in rows:
        total += 1
        fig = per_counter.setdefault(r.origin_counter, CounterFigures(r.origin_counter, r.origin_counter))
        fig.total += 1
        fig.sources[r.source] = fig.sources.get(r.source, 0) + 1
        fig.statuses[r.status] = fig.statuses.get(r.status, 0) + 1
        sources[r.source] += 1
        statuses[r.status] += 1
        transferred += r.counter != r.origin_counter
        issued = _utc(r.issued_at)
        if issued is not None:
            hourly[issued.astimezone(tz).hour] += 1
        wait = _seconds(r.issued_at, r.called_at)
        if wait is not None:
            waits.setdefault(r.origin_counter, []).append(wait)
            all_waits.append(wait)
        if r.status == "completed":
            service = _seconds(r.served_at, r.finished_at)
            if service is not None:
                services.append(service)
    for code, fig in per_counter.items():
        fig.wait = Durations.of(waits.get(code, []))
    return DayReport(
        hip_id=hip_id, facility=facility, day=day, timezone=timezone, total=total,
        sources={k: sources.get(k, 0) for k in (*SOURCES, *sorted(set(sources) - set(SOURCES)))},
        statuses={k: statuses.get(k, 0) for k in (*STATUSES, *sorted(set(statuses) - set(STATUSES)))},
        transferred=transferred, counters=list(per_counter.values()), wait=Durations.of(all_waits),
        service=Durations.of(services), hourly=hourly,
    )  # fmt: skip


async def day_rows(conn: AsyncConnection, hip_id: str, day: date) -> list[Any]:
    cond = and_(TOKEN.c.hip_id == hip_id, TOKEN.c.local_date == day)
    rows = await conn.execute(select(TOKEN).where(cond).order_by(TOKEN.c.issued_at, TOKEN.c.id))
    return list(rows)


async def facility_day(conn: AsyncConnection, hip_id: str, day: date | None, now_ms: int) -> tuple[Any, date]:
    """The facility row and the report's day (default: today in the facility's timezone)."""
    from token_service.errors import NotFound

    fac = (await conn.execute(select(FACILITY).where(FACILITY.c.hip_id == hip_id))).first()
    if fac is None:
        raise NotFound(f"facility {hip_id} not found")
    return fac, day or local_day(now_ms, fac.timezone)[0]


async def daily_report(conn: AsyncConnection, hip_id: str, day: date | None, now_ms: int) -> DayReport:
    fac, day = await facility_day(conn, hip_id, day, now_ms)
    names = await conn.execute(select(COUNTER.c.code, COUNTER.c.name).where(COUNTER.c.hip_id == hip_id)
                               .order_by(COUNTER.c.code))  # fmt: skip
    rows = await day_rows(conn, hip_id, day)
    return build_report(rows, hip_id=hip_id, facility=fac.name, day=day, timezone=fac.timezone,
                        counter_names={r.code: r.name for r in names})  # fmt: skip


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    # A patient name such as "=HYPERLINK(...)" must not become a formula in a spreadsheet.
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def _local(value: datetime | None, tz: ZoneInfo) -> str:
    v = _utc(value)
    return "" if v is None else v.astimezone(tz).isoformat(timespec="seconds")


def csv_text(rows: Iterable[Any], timezone: str, include_personal: bool) -> str:
    """One line per token; personal columns only when asked for (admins only reach this)."""
    tz = ZoneInfo(timezone)
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\r\n")
    out.writerow([*CSV_COLUMNS, *(PERSONAL_COLUMNS if include_personal else ())])
    for r in rows:
        service = _seconds(r.served_at, r.finished_at) if r.status == "completed" else None
        line: list[Any] = [
            r.id, r.label, r.number, r.counter, r.origin_counter, r.local_date.isoformat(), r.source,
            r.priority, r.status, r.desk, _local(r.issued_at, tz), _local(r.called_at, tz),
            _local(r.served_at, tz), _local(r.finished_at, tz), _seconds(r.issued_at, r.called_at), service,
            r.skips, r.recalls,
        ]  # fmt: skip
        if include_personal:
            p = r.patient or {}
            line += [r.abha_address or p.get("abha_address"), p.get("abha_number"), p.get("name"),
                     p.get("gender"), p.get("year_of_birth"), p.get("phone")]  # fmt: skip
        out.writerow([_cell(v) for v in line])
    return buf.getvalue()

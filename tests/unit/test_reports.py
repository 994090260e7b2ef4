"""Report figures on a fixed day: tokens written through the real TokenService under a FakeClock."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis

from tests.support.app import HIP, make_settings, seed
from tests.support.pg import fresh_database
from tests.support.servers import postgres_url
from token_service import reports
from token_service.clock import FakeClock
from token_service.directory import Directory
from token_service.operations import TokenService
from token_service.queue.scripts import Scripts
from token_service.queue.service import Token, TokenQueue
from token_service.queue.status import Source
from token_service.records.db import async_engine
from token_service.records.writer import SqlWriter

IST = ZoneInfo("Asia/Kolkata")
DAY = date(2026, 11, 22)


def ist_ms(hh: int, mm: int, day: date = DAY) -> int:
    return int(datetime(day.year, day.month, day.day, hh, mm, tzinfo=IST).timestamp() * 1000)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([], 90, None), ([7.0], 90, 7.0), ([1, 2, 3, 4], 90, 4), ([1, 2, 3, 4], 50, 2), ([5, 1, 4, 2, 3], 90, 5),
     (list(range(1, 11)), 90, 9), (list(range(1, 21)), 90, 18), ([3, 3, 3], 0, 3)],
)  # fmt: skip
def test_percentile_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert reports.percentile(values, q) == expected


@dataclass
class Day:
    service: TokenService
    clock: FakeClock
    engine: object


@pytest.fixture(params=["sqlite", "postgres"])
async def fixed_day(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str) -> AsyncIterator[Day]:
    """One OPD morning, minute by minute (IST), and the previous evening's stray token."""
    if request.param == "postgres" and postgres_url() is None:
        pytest.skip("no PostgreSQL reachable (set OPD_TEST_POSTGRES_URL)")
    with fresh_database(request.param) as database_url:
        settings = make_settings(tmp_path, redis_url, database_url)
        seed(settings, validity_seconds=3 * 3600)
        redis = Redis.from_url(redis_url, decode_responses=True)
        engine = async_engine(settings)
        clock = FakeClock(ist_ms(23, 50, date(2026, 11, 21)))
        svc = TokenService(
            TokenQueue(redis, Scripts.register(redis), clock), SqlWriter(engine), Directory(engine, 1800)
        )
        try:
            await _morning(svc, clock)
            yield Day(svc, clock, engine)
        finally:
            await redis.aclose()
            await engine.dispose()


async def _morning(svc: TokenService, clock: FakeClock) -> None:
    def at(hh: int, mm: int) -> None:
        clock.ms = ist_ms(hh, mm)

    await svc.issue(HIP, "OPD1", source=Source.WALK_IN)  # yesterday, 23:50
    at(9, 0)
    t1 = (await svc.issue(HIP, "OPD1", source=Source.WALK_IN, patient={"name": "Sita Devi"})).token
    at(9, 5)
    shared = {"name": '=HYPERLINK("http://x")', "phone": "9876543210", "abha_number": "91-1234-5678-9012",
              "gender": "F", "year_of_birth": 1990, "abha_address": "sita@sbx"}  # fmt: skip
    t2 = (await svc.issue(HIP, "OPD1", source=Source.SCAN_SHARE, request_id="r-1", abha_address="sita@sbx",
                          patient=shared)).token  # fmt: skip
    at(9, 10)
    t3 = (await svc.issue(HIP, "OPD2", source=Source.ABHA_CARD)).token
    at(9, 20)
    assert (await svc.call_next(HIP, "D1", "clerk", None)).called.id == t1.id  # type: ignore[union-attr]
    at(9, 30)
    res = await svc.call_next(HIP, "D1", "clerk", None)  # completes t1, calls t2
    assert res.completed.id == t1.id and res.called.id == t2.id  # type: ignore[union-attr]
    at(9, 45)
    await svc.act("complete", t2.id, "clerk", "D1")
    at(9, 50)
    assert (await svc.call_next(HIP, "D2", "clerk", None)).called.id == t3.id  # type: ignore[union-attr]
    at(9, 52)
    await svc.act("cancel", t3.id, "clerk", "D2")
    at(10, 5)
    t4 = (await svc.issue(HIP, "OPD1", source=Source.WALK_IN)).token
    at(10, 6)
    t5 = (await svc.issue(HIP, "ORTHO", source=Source.WALK_IN)).token
    at(10, 10)
    await svc.call_next(HIP, "D1", "clerk", None)
    at(10, 11)
    await svc.act("skip", t4.id, "clerk", "D1", places=3)
    at(10, 12)
    assert (await svc.call_next(HIP, "D1", "clerk", None)).called.id == t4.id  # type: ignore[union-attr]
    at(10, 13)
    assert (await svc.act("skip", t4.id, "clerk", "D1", places=3)).status.value == "no_show"
    at(13, 10)  # t5's three hours of validity are over
    await svc.queue.sweep(HIP)
    expired: Token = await svc.queue.get(t5.id)
    assert expired.status.value == "expired"
    await svc.persist([expired])  # what the recorder does for sweeps in the service


async def test_day_figures(fixed_day: Day) -> None:
    async with fixed_day.engine.connect() as conn:  # type: ignore[attr-defined]
        rep = await reports.daily_report(conn, HIP, DAY, fixed_day.clock.now_ms())
        default_day = await reports.daily_report(conn, HIP, None, fixed_day.clock.now_ms())
        yesterday = await reports.daily_report(conn, HIP, date(2026, 11, 21), 0)
        empty = await reports.daily_report(conn, HIP, date(2026, 11, 23), 0)
    assert default_day.to_json() == rep.to_json()
    assert (rep.total, rep.facility, rep.timezone) == (5, "District Hospital Patna", "Asia/Kolkata")
    assert rep.sources == {"scan_share": 1, "walk_in": 3, "abha_card": 1}
    assert rep.statuses == {
        "completed": 2,
        "no_show": 1,
        "cancelled": 1,
        "expired": 1,
        "waiting": 0,
        "called": 0,
    }
    # Waits: 20, 25, 40 min and 5 min (first call; the re-call after the skip does not reset it).
    assert rep.wait == reports.Durations(4, 1350.0, 2400.0, 2400.0)
    assert rep.service == reports.Durations(2, 750.0, 900.0, 900.0)  # 10 and 15 min
    assert rep.hourly[9] == 3 and rep.hourly[10] == 2 and sum(rep.hourly) == 5
    by = {c.code: c for c in rep.counters}
    assert [c.code for c in rep.counters] == ["OPD1", "OPD2", "ORTHO"]
    assert (by["OPD1"].name, by["OPD1"].total) == ("General OPD", 3)
    assert by["OPD1"].sources == {"scan_share": 1, "walk_in": 2, "abha_card": 0}
    assert by["OPD1"].statuses["completed"] == 2 and by["OPD1"].statuses["no_show"] == 1
    assert by["OPD1"].wait == reports.Durations(3, 1000.0, 1500.0, 1500.0)
    assert by["OPD2"].sources["abha_card"] == 1 and by["OPD2"].statuses["cancelled"] == 1
    assert by["ORTHO"].statuses["expired"] == 1 and by["ORTHO"].wait.count == 0
    assert yesterday.total == 1 and yesterday.hourly[23] == 1 and yesterday.statuses["waiting"] == 1
    assert empty.total == 0 and empty.wait == reports.Durations(0, None, None, None)
    assert [c.total for c in empty.counters] == [0, 0, 0]
    assert rep.to_json()["day"] == "2026-11-22"


async def test_csv_rows(fixed_day: Day) -> None:
    async with fixed_day.engine.connect() as conn:  # type: ignore[attr-defined]
        rows = await reports.day_rows(conn, HIP, DAY)
    plain = list(csv.DictReader(io.StringIO(reports.csv_text(rows, "Asia/Kolkata", False))))
    assert [r["label"] for r in plain] == ["A1", "A2", "B1", "A3", "C1"]  # in order of arrival
    assert list(plain[0]) == list(reports.CSV_COLUMNS)
    first = plain[0]
    assert (
        first["issued_at"] == "2026-11-22T09:00:00+05:30"
        and first["called_at"] == "2026-11-22T09:20:00+05:30"
    )
    assert (first["status"], first["wait_seconds"], first["service_seconds"]) == (
        "completed",
        "1200.0",
        "600.0",
    )
    assert plain[1]["source"] == "scan_share" and plain[3]["status"] == "no_show" and plain[3]["skips"] == "2"
    assert plain[3]["service_seconds"] == "" and plain[4]["called_at"] == ""
    text = reports.csv_text(rows, "Asia/Kolkata", False)
    for secret in ("9876543210", "91-1234-5678-9012", "sita@sbx", "Sita", "HYPERLINK"):
        assert secret not in text

    personal = list(csv.DictReader(io.StringIO(reports.csv_text(rows, "Asia/Kolkata", True))))
    assert list(personal[0]) == [*reports.CSV_COLUMNS, *reports.PERSONAL_COLUMNS]
    assert personal[0]["name"] == "Sita Devi" and personal[0]["phone"] == ""
    p = personal[1]
    assert (p["phone"], p["abha_number"], p["abha_address"]) == (
        "9876543210",
        "91-1234-5678-9012",
        "sita@sbx",
    )
    assert p["name"] == '\'=HYPERLINK("http://x")'  # never a live spreadsheet formula

"""Day rollover at the facility's local midnight (Asia/Kolkata, not UTC) and expiry of never-called
tokens, with a fake clock driving the whole service."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from tests.support.app import login, make_settings, running_app, seed
from token_service.clock import FakeClock

IST = ZoneInfo("Asia/Kolkata")
HIP = "IN0710000123"


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=IST).timestamp() * 1000)


async def _issue(client, h, counter: str = "OPD1") -> dict:  # type: ignore[no-untyped-def,type-arg]
    r = await client.post(f"/api/facilities/{HIP}/counters/{counter}/tokens", headers=h)
    assert r.status_code == 201, r.text
    return r.json()


async def test_rollover_at_local_midnight_not_utc(tmp_path: Path, redis_url: str, database_url: str) -> None:
    settings = make_settings(tmp_path, redis_url, database_url)
    seed(settings, validity_seconds=6 * 3600)
    clock = FakeClock(ms(2026, 11, 22, 5, 0))  # 05:00 IST = 23:30 UTC the day before
    async with running_app(settings, clock) as (_, client):
        h = await login(client, "clerk")
        first = await _issue(client, h)
        assert (first["number"], first["local_date"]) == (1, "2026-11-22")
        clock.advance(3600)  # 06:00 IST: UTC midnight has passed, the local day has not
        second = await _issue(client, h)
        assert (second["number"], second["local_date"]) == (2, "2026-11-22")
        clock.ms = ms(2026, 11, 22, 23, 59, 30)
        late = await _issue(client, h)
        assert late["number"] == 3
        assert late["expires_at"].startswith("2026-11-22T18:30:00")  # validity is cut at local midnight
        clock.ms = ms(2026, 11, 23, 0, 0, 5)  # 18:30:05 UTC: a new local day
        fresh = await _issue(client, h)
        assert (fresh["number"], fresh["local_date"], fresh["label"]) == (1, "2026-11-23", "A1")
        # Yesterday's waiting tokens ended with their day.
        for old in (first, second, late):
            r = await client.get(f"/api/tokens/{old['id']}", headers=h)
            assert r.json()["status"] == "expired"
        q = (await client.get(f"/api/facilities/{HIP}/counters/OPD1/queue", headers=h)).json()
        assert [t["id"] for t in q["waiting"]] == [fresh["id"]]


async def test_never_called_tokens_expire_after_validity(tmp_path: Path, redis_url: str, database_url: str) -> None:
    settings = make_settings(tmp_path, redis_url, database_url)
    seed(settings, validity_seconds=1800)
    clock = FakeClock(ms(2026, 11, 22, 10, 0))
    async with running_app(settings, clock) as (_, client):
        h = await login(client, "clerk")
        a = await _issue(client, h)
        clock.advance(600)
        b = await _issue(client, h)
        r = await client.post(f"/api/facilities/{HIP}/counters/OPD1/call-next", json={"desk": "D1"}, headers=h)
        assert r.json()["id"] == a["id"]  # called in time: never expires
        r = await client.post(f"/api/tokens/{a['id']}/skip", json={"places": 1}, headers=h)
        assert r.json()["status"] == "waiting"
        clock.advance(1801)  # b was never called within 30 min; a was called once, keeps its place
        r = await client.post(f"/api/facilities/{HIP}/counters/OPD1/call-next", json={"desk": "D1"}, headers=h)
        assert r.json()["id"] == a["id"]
        got = (await client.get(f"/api/tokens/{b['id']}", headers=h)).json()
        assert got["status"] == "expired"
        assert got["finished_at"] is not None
        # Expiry is history too: the recorder wrote it to SQL.
        import asyncio

        from sqlalchemy import text

        from token_service.records.db import sync_engine

        for _ in range(50):
            with sync_engine(settings).connect() as conn:
                kinds = [r[0] for r in conn.execute(
                    text("SELECT kind FROM token_event WHERE token_id = :i ORDER BY id"), {"i": b["id"]})]  # fmt: skip
            if "expired" in kinds:
                break
            await asyncio.sleep(0.1)
        assert kinds == ["issued", "expired"]

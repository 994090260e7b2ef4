"""Personal-data retention: `opd-token purge` forgets who the patients were and keeps every report figure."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import text

from tests.support.app import HIP, login, make_settings, running_app, seed
from token_service.clock import FakeClock
from token_service.config import Settings
from token_service.models import OnShare
from token_service.queue.status import Source
from token_service.records.db import sync_engine

REPORTS = f"/api/admin/facilities/{HIP}/reports"
CARD = json.dumps({"hidn": "91-1234-5678-9012", "hid": "ramesh.k1979@abdm", "name": "Ramesh Kumar", "gender": "M",
                   "dob": "14/8/1979", "mobile": "9876543210"})  # fmt: skip


def _token_rows(settings: Settings) -> list[Any]:
    engine = sync_engine(settings)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(
                "SELECT id, status, source, priority, issued_at, called_at, completed_at, finished_at, "
                "patient, abha_address, request_id FROM token ORDER BY id"
            )))  # fmt: skip
    finally:
        engine.dispose()


def _add_on_share(settings: Settings, at: datetime) -> None:
    """An outbox row as the intake leaves it: the payload names the patient's ABHA address."""
    engine = sync_engine(settings)
    payload = {"version": "v3", "request_id": "r-1", "hip_id": HIP, "counter": "OPD2",
               "abha_address": "meena@sbx", "outcome": "created"}  # fmt: skip
    try:
        with engine.begin() as conn:
            conn.execute(
                OnShare.__table__.insert().values(  # type: ignore[attr-defined]
                    hip_id=HIP,
                    request_id="r-1",
                    version="v3",
                    payload=payload,
                    status="sent",
                    created_at=at,
                    deadline_at=at,
                )
            )
    finally:
        engine.dispose()


def _database_bytes(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in data_dir.glob("opd.sqlite3*"))


def _purge(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPD_")}
    env.update(OPD_DATA_DIR=str(settings.data_dir), OPD_REDIS_URL=settings.redis_url,
               OPD_SECRET_KEY=settings.secret_key)  # fmt: skip
    cmd = [sys.executable, "-m", "token_service.cli", "purge", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


async def _reports(
    client: httpx.AsyncClient, h: dict[str, str], day: str
) -> tuple[Any, str, list[dict[str, str]]]:
    daily = (await client.get(f"{REPORTS}/daily?date={day}", headers=h)).json()
    plain = (await client.get(f"{REPORTS}/daily.csv?date={day}", headers=h)).text
    personal = list(csv.DictReader(io.StringIO(
        (await client.get(f"{REPORTS}/daily.csv?date={day}&include_personal=1", headers=h)).text
    )))  # fmt: skip
    return daily, plain, personal


async def test_purge_clears_old_patients_and_keeps_the_figures(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    s = seed(settings)
    tz = ZoneInfo("Asia/Kolkata")
    old_day = (datetime.now(tz) - timedelta(days=120)).replace(hour=10, minute=0, second=0, microsecond=0)
    clock = FakeClock(int(old_day.timestamp() * 1000))
    async with running_app(settings, clock) as (app, client):
        h = await login(client, "admin")
        clerk = await login(client, "clerk")
        client.cookies.clear()
        kiosk = {"Authorization": f"Bearer {s.devices['kiosk1']}"}
        r = await client.post(
            f"/api/facilities/{HIP}/counters/OPD1/tokens", json={"name": "Sita Devi"}, headers=kiosk
        )
        assert r.status_code == 201
        clock.advance(60)
        r = await client.post(
            f"/api/facilities/{HIP}/counters/OPD1/tokens", json={"abha_qr": CARD}, headers=clerk
        )
        assert r.status_code == 201 and r.json()["source"] == "abha_card"
        clock.advance(60)
        # A scan-and-share token, as the ABDM intake issues it (REQUEST-ID, ABHA address, shared profile).
        await app.state.opd.tokens.issue(
            HIP, "OPD2", source=Source.SCAN_SHARE, request_id="5f7a1f0e-5c1b-4b8e-9f39-4d1f3c2a9b10",
            abha_address="meena@sbx", patient={"name": "Meena Kumari", "abha_address": "meena@sbx", "phone": "9000000001"},
        )  # fmt: skip
        clock.advance(300)
        for desk in ("D1", "D1", "D2"):
            r = await client.post(f"/api/facilities/{HIP}/desks/{desk}/call-next", headers=clerk)
            assert r.status_code == 200
            clock.advance(120)
        await client.post(f"/api/tokens/{r.json()['id']}/complete", headers=clerk)
        day = old_day.date().isoformat()
        before = await _reports(client, h, day)
    assert before[0]["total"] == 3 and {r["name"] for r in before[2]} >= {
        "Sita Devi",
        "Ramesh Kumar",
        "Meena Kumari",
    }

    async with running_app(settings) as (app, client):  # today, on the real clock
        clerk = await login(client, "clerk")
        r = await client.post(
            f"/api/facilities/{HIP}/counters/OPD1/tokens", json={"name": "Asha"}, headers=clerk
        )
        recent_id = r.json()["id"]
    rows_before = _token_rows(settings)
    _add_on_share(settings, old_day)

    assert _purge(settings, "--older-than-days", "2").returncode != 0  # below the floor: refused
    done = _purge(settings)  # default: 90 days
    assert done.returncode == 0, done.stderr
    assert "cleared personal data of 3 tokens and 1 on-share records" in done.stdout
    rows_after = _token_rows(settings)
    assert len(rows_after) == len(rows_before) == 4
    for old, new in zip(rows_before, rows_after, strict=True):
        # Everything reports are made of is unchanged.
        assert tuple(old)[:8] == tuple(new)[:8]
        if new.id == recent_id:
            assert json.loads(new.patient) == {"name": "Asha"}
        else:
            assert new.patient is None and new.abha_address is None and new.request_id is None
    assert _purge(settings).stdout.startswith("cleared personal data of 0 tokens")  # idempotent

    async with running_app(settings, clock) as (_, client):
        h = await login(client, "admin")
        after = await _reports(client, h, day)
    assert after[0] == before[0]  # every figure of the old day is the same
    assert after[1] == before[1]  # and so is the shareable CSV, row for row
    assert [r["label"] for r in after[2]] == [r["label"] for r in before[2]]
    assert all(not r["name"] and not r.get("phone") and not r.get("abha_address") for r in after[2])
    raw = _database_bytes(tmp_path)  # not even in the file's free space or the write-ahead log
    for personal in (
        b"Sita Devi",
        b"Ramesh",
        b"ramesh.k1979",
        b"9876543210",
        b"Meena",
        b"meena@sbx",
        b"5f7a1f0e",
    ):
        assert personal not in raw, personal
    assert b"Asha" in raw  # the recent token keeps its patient

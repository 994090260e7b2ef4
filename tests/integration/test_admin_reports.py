"""Report endpoints over HTTP: JSON figures, CSV download with and without personal columns."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from tests.support.app import HIP, login, make_settings, running_app, seed
from token_service.clock import FakeClock

A = f"/api/admin/facilities/{HIP}/reports"


async def test_daily_json_and_csv(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    s = seed(settings)
    clock = FakeClock(int(datetime(2026, 11, 22, 11, 0, tzinfo=ZoneInfo("Asia/Kolkata")).timestamp() * 1000))
    async with running_app(settings, clock) as (_, client):
        h = await login(client, "admin")
        clerk = await login(client, "clerk")
        client.cookies.clear()
        kiosk = {"Authorization": f"Bearer {s.devices['kiosk1']}"}
        for name in ("Ravi Kumar", "Meena"):
            r = await client.post(
                f"/api/facilities/{HIP}/counters/OPD1/tokens", json={"name": name}, headers=kiosk
            )
            assert r.status_code == 201
            clock.advance(60)
        clock.advance(240)
        r = await client.post(
            f"/api/facilities/{HIP}/counters/OPD1/call-next", json={"desk": "D1"}, headers=clerk
        )
        clock.advance(120)
        await client.post(f"/api/tokens/{r.json()['id']}/complete", headers=clerk)

        rep = (await client.get(A + "/daily", headers=h)).json()  # default: today at the facility
        assert rep["day"] == "2026-11-22" and rep["total"] == 2 and rep["hourly"][11] == 2
        assert rep["sources"]["walk_in"] == 2 and rep["statuses"]["completed"] == 1
        assert rep["wait"] == {"count": 1, "mean_s": 360.0, "p90_s": 360.0, "max_s": 360.0}
        assert rep["service"]["mean_s"] == 120.0
        assert (await client.get(A + "/daily?date=2026-11-21", headers=h)).json()["total"] == 0
        assert (await client.get(A + "/daily", headers=clerk)).status_code == 403

        r = await client.get(A + "/daily.csv?date=2026-11-22", headers=h)
        assert r.status_code == 200 and r.headers["content-type"] == "text/csv; charset=utf-8"
        assert 'filename="opd-IN0710000123-2026-11-22.csv"' in r.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert [(x["label"], x["status"]) for x in rows] == [("A1", "completed"), ("A2", "waiting")]
        assert "Ravi" not in r.text and "name" not in rows[0]
        r = await client.get(A + "/daily.csv?include_personal=1", headers=h)
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert [x["name"] for x in rows] == ["Ravi Kumar", "Meena"]
        assert "personal" in r.headers["content-disposition"]
        assert (await client.get(A + "/daily.csv?include_personal=1", headers=clerk)).status_code == 403

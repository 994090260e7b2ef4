"""Admin API over the real ASGI stack, Redis and SQLite: access rules, validation, effect on the queue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlmodel import Session

from tests.support.app import HIP, PASSWORD, login, make_settings, running_app, seed
from token_service.auth import hash_password
from token_service.config import Settings
from token_service.models import Facility, User
from token_service.records.db import sync_engine

A = f"/api/admin/facilities/{HIP}"
OTHER = "IN0710000999"


def add_other_facility(settings: Settings) -> None:
    """A second hospital with its own admin, to prove admins stay inside their facility."""
    with Session(sync_engine(settings)) as db:
        db.add(Facility(hip_id=OTHER, name="Civil Hospital Surat", names={"en": "Civil Hospital Surat"}))
        db.flush()
        db.add(User(username="admin2", password_hash=hash_password(PASSWORD), role="admin", hip_id=OTHER))
        db.commit()


async def snapshot(client: httpx.AsyncClient, h: dict[str, str]) -> dict[str, Any]:
    """Everything an admin can read, to prove a refused request changed nothing."""
    out = {}
    for part in ("settings", "counters", "desks", "users", "devices"):
        r = await client.get(f"{A}/{part}", headers=h)
        assert r.status_code == 200, r.text
        out[part] = r.json()
    out["audit"] = len((await client.get(f"{A}/audit", headers=h)).json()["items"])
    return out


async def test_roles_and_facilities(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    s = seed(settings)
    add_other_facility(settings)
    async with running_app(settings) as (_, client):
        admin, clerk, admin2 = [await login(client, u) for u in ("admin", "clerk", "admin2")]
        client.cookies.clear()  # bearer headers only: "anonymous" must really carry nothing
        calls = [
            ("GET", f"{A}/settings", None), ("PATCH", f"{A}/settings", {"skip_places": 4}),
            ("GET", f"{A}/counters", None), ("POST", f"{A}/counters", {"code": "NEURO", "names": {"en": "Neuro"}}),
            ("PATCH", f"{A}/counters/OPD1", {"active": False}), ("GET", f"{A}/desks", None),
            ("POST", f"{A}/desks", {"code": "D9"}), ("PATCH", f"{A}/desks/D1", {"name": "x"}),
            ("GET", f"{A}/users", None),
            ("POST", f"{A}/users", {"username": "u1", "role": "clerk", "password": "abcdefgh1"}),
            ("PATCH", f"{A}/users/clerk", {"active": False}), ("POST", f"{A}/users/clerk/password", {}),
            ("GET", f"{A}/devices", None), ("POST", f"{A}/devices", {"name": "b9", "kind": "board"}),
            ("POST", f"{A}/devices/board1/revoke", None), ("GET", f"{A}/audit", None),
            ("GET", f"{A}/reports/daily", None), ("GET", f"{A}/reports/daily.csv", None),
        ]  # fmt: skip
        kiosk = {"Authorization": f"Bearer {s.devices['kiosk1']}"}
        before = await snapshot(client, admin)
        for method, url, body in calls:
            r = await client.request(method, url, json=body)
            assert r.status_code == 401 and r.json()["error"] == "unauthorized", (method, url, r.text)
            for who in (clerk, kiosk):
                r = await client.request(method, url, json=body, headers=who)
                assert r.status_code == 403 and r.json()["error"] == "forbidden", (method, url, r.text)
            r = await client.request(method, url, json=body, headers=admin2)
            assert r.status_code == 403 and r.json()["error"] == "forbidden", (method, url, r.text)
        assert await snapshot(client, admin) == before
        # An unknown facility is 404 for everybody who may ask at all.
        r = await client.get("/api/admin/facilities/NOSUCH/settings", headers=admin)
        assert r.status_code == 404 and r.json()["error"] == "not_found"
        # The audit log has no write verbs.
        for method in ("PUT", "PATCH", "DELETE", "POST"):
            r = await client.request(method, f"{A}/audit", headers=admin)
            assert r.status_code == 405, (method, r.text)
        # admin2 manages their own facility.
        r = await client.get(f"/api/admin/facilities/{OTHER}/settings", headers=admin2)
        assert r.status_code == 200 and r.json()["name"] == "Civil Hospital Surat"

"""Admin API over the real ASGI stack, Redis and SQLite: access rules, validation, effect on the queue."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import Session

from tests.support.app import HIP, PASSWORD, login, make_settings, running_app, seed
from token_service.auth import hash_password
from token_service.clock import local_day
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
            ("GET", f"{A}/settings", None),
            ("PATCH", f"{A}/settings", {"skip_places": 4}),
            ("GET", f"{A}/counters", None),
            ("POST", f"{A}/counters", {"code": "NEURO", "names": {"en": "Neuro"}}),
            ("PATCH", f"{A}/counters/OPD1", {"active": False}),
            ("GET", f"{A}/desks", None),
            ("POST", f"{A}/desks", {"code": "D9"}),
            ("PATCH", f"{A}/desks/D1", {"name": "x"}),
            ("GET", f"{A}/users", None),
            ("POST", f"{A}/users", {"username": "u1", "role": "clerk", "password": "abcdefgh1"}),
            ("PATCH", f"{A}/users/clerk", {"active": False}),
            ("POST", f"{A}/users/clerk/password", {}),
            ("GET", f"{A}/devices", None),
            ("POST", f"{A}/devices", {"name": "b9", "kind": "board"}),
            ("POST", f"{A}/devices/board1/revoke", None),
            ("GET", f"{A}/audit", None),
            ("GET", f"{A}/reports/daily", None),
            ("GET", f"{A}/reports/daily.csv", None),
        ]
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


async def test_validation_errors_change_nothing(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    async with running_app(settings) as (_, client):
        h = await login(client, "admin")
        before = await snapshot(client, h)
        bad = [
            ("PATCH", "settings", {"timezone": "Asia/Calcutta_X"}, 422, "invalid_timezone"),
            ("PATCH", "settings", {"timezone": "posixrules"}, 422, "invalid_timezone"),
            ("PATCH", "settings", {"languages": ["hi", "hi"]}, 422, "invalid_body"),
            ("PATCH", "settings", {"languages": ["ta"]}, 422, "invalid_body"),
            ("PATCH", "settings", {"languages": []}, 422, "invalid_body"),
            ("PATCH", "settings", {"names": {"hi": "केवल हिंदी"}}, 422, "name_required"),
            ("PATCH", "settings", {"validity_seconds": 10}, 422, "invalid_body"),
            ("PATCH", "settings", {"priority_ratio": 0}, 422, "invalid_body"),
            ("PATCH", "settings", {"skip_places": 3, "owner": "me"}, 422, "invalid_body"),
            ("POST", "counters", {"code": "OPD1", "names": {"en": "Again"}}, 409, "duplicate"),
            ("POST", "counters", {"code": HIP, "names": {"en": "Same as HIP"}}, 422, "code_is_hip_id"),
            (
                "POST",
                "counters",
                {"code": HIP.lower(), "names": {"en": "Same as HIP"}},
                422,
                "code_is_hip_id",
            ),
            ("POST", "counters", {"code": "OPD-3", "names": {"en": "Dash"}}, 422, "invalid_body"),
            ("POST", "counters", {"code": "A" * 21, "names": {"en": "Long"}}, 422, "invalid_body"),
            ("POST", "counters", {"code": "EYE", "names": {"en": "  "}}, 422, "name_required"),
            (
                "POST",
                "counters",
                {"code": "EYE", "names": {"en": "Eye"}, "prefix": "TOOLONG99"},
                422,
                "invalid_body",
            ),
            (
                "POST",
                "counters",
                {"code": "EYE", "names": {"en": "Eye"}, "desks": ["D 1"]},
                422,
                "invalid_body",
            ),
            ("PATCH", "counters/NOPE", {"active": False}, 404, "not_found"),
            ("PATCH", "counters/OPD1", {"active": None}, 422, "invalid_body"),
            ("POST", "desks", {"code": "D1"}, 409, "duplicate"),
            ("POST", "desks", {"code": "D7", "counters": ["NOPE"]}, 422, "unknown_counter"),
            ("PATCH", "desks/D1", {"counters": ["OPD1", "NOPE"]}, 422, "unknown_counter"),
            (
                "POST",
                "users",
                {"username": "clerk", "role": "clerk", "password": "abcdefgh1"},
                409,
                "duplicate",
            ),
            (
                "POST",
                "users",
                {"username": "x", "role": "root", "password": "abcdefgh1"},
                422,
                "invalid_body",
            ),
            ("POST", "users", {"username": "x", "role": "clerk", "password": "short"}, 422, "invalid_body"),
            (
                "POST",
                "users",
                {"username": "x", "role": "clerk", "password": "abcdefgh1", "counters": ["NOPE"]},
                422,
                "unknown_counter",
            ),
            ("PATCH", "users/admin", {"active": False}, 409, "self_lockout"),
            ("PATCH", "users/admin", {"role": "clerk"}, 409, "self_lockout"),
            ("PATCH", "users/nobody", {"active": False}, 404, "not_found"),
            ("POST", "devices", {"name": "board1", "kind": "board"}, 409, "duplicate"),
            ("POST", "devices", {"name": "tv", "kind": "television"}, 422, "invalid_body"),
            ("POST", "devices", {"name": "k2", "kind": "kiosk", "printer": "board1"}, 422, "invalid_printer"),
            ("POST", "devices", {"name": "k2", "kind": "kiosk", "printer": "nope"}, 404, "not_found"),
            ("POST", "devices", {"name": "b2", "kind": "board", "printer": "printer1"}, 422, "invalid_body"),
            ("POST", "devices/nope/revoke", None, 404, "not_found"),
        ]
        for method, part, body, status, code in bad:
            r = await client.request(method, f"{A}/{part}", json=body, headers=h)
            assert r.status_code == status, (part, body, r.text)
            assert r.json()["error"] == code and r.json()["detail"], (part, body, r.text)
            assert set(r.json()) == {"error", "detail"}
        r = await client.post(
            f"{A}/settings", content=b"{not json", headers={**h, "content-type": "application/json"}
        )
        assert r.status_code == 405
        r = await client.patch(
            f"{A}/settings", content=b"{not json", headers={**h, "content-type": "application/json"}
        )
        assert r.status_code == 422 and r.json()["error"] == "invalid_body"
        r = await client.get(f"{A}/reports/daily?date=2026-13-45", headers=h)
        assert r.status_code == 422 and r.json()["error"] == "invalid_body"
        assert await snapshot(client, h) == before


async def test_configuration_reaches_the_queue(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    s = seed(settings)
    async with running_app(settings) as (_, client):
        h = await login(client, "admin")
        kiosk = {"Authorization": f"Bearer {s.devices['kiosk1']}"}
        issue = f"/api/facilities/{HIP}/counters/OPD2/tokens"
        assert (await client.post(issue, headers=kiosk)).status_code == 201
        r = await client.patch(f"{A}/counters/OPD2", json={"active": False}, headers=h)
        assert r.status_code == 200 and r.json()["active"] is False
        r = await client.post(issue, headers=kiosk)
        assert r.status_code == 409 and r.json()["error"] == "counter_closed"
        assert (await client.patch(f"{A}/counters/OPD2", json={"active": True}, headers=h)).status_code == 200
        assert (await client.post(issue, headers=kiosk)).json()["number"] == 2

        body = {"code": "NEURO", "names": {"en": "Neurology", "hi": "न्यूरोलॉजी", "gu": "ન્યુરોલોજી"},
                "prefix": "N", "department": "Neurology"}  # fmt: skip
        r = await client.post(f"{A}/counters", json=body, headers=h)
        assert r.status_code == 201, r.text
        assert r.json()["desks"] == ["NEURO"] and r.json()["name"] == "Neurology"
        r = await client.post(f"/api/facilities/{HIP}/counters/NEURO/tokens", headers=kiosk)
        assert r.status_code == 201 and r.json()["label"] == "N1"
        r = await client.post(f"/api/facilities/{HIP}/counters/NEURO/call-next", headers=h)
        assert r.status_code == 200 and r.json()["desk"] == "NEURO"

        # A desk that serves two counters; then the clerk calls from it.
        r = await client.post(
            f"{A}/desks", json={"code": "D4", "name": "Room 4", "counters": ["OPD2", "NEURO"]}, headers=h
        )
        assert r.status_code == 201 and r.json()["counters"] == ["OPD2", "NEURO"]
        r = await client.post(f"/api/facilities/{HIP}/desks/D4/call-next", headers=h)
        assert r.status_code == 200 and r.json()["counter"] == "OPD2" and r.json()["desk"] == "D4"

        r = await client.patch(f"{A}/settings", json={"skip_places": 1, "timezone": "Asia/Kathmandu",
                                                     "languages": ["gu", "en", "hi"]}, headers=h)  # fmt: skip
        assert r.status_code == 200, r.text
        got = r.json()
        assert (got["skip_places"], got["timezone"], got["languages"]) == (
            1,
            "Asia/Kathmandu",
            ["gu", "en", "hi"],
        )
        assert got["effective_validity_seconds"] == 1800 and got["validity_seconds"] is None
        r = await client.patch(f"{A}/settings", json={"validity_seconds": 900}, headers=h)
        assert r.json()["effective_validity_seconds"] == 900
        r = await client.post(issue, headers=kiosk)
        token = r.json()
        issued = datetime.fromisoformat(token["issued_at"])
        span = datetime.fromisoformat(token["expires_at"]) - issued
        # The new validity, unless the facility's local day (now Kathmandu's) ends sooner.
        _, day_end_ms = local_day(int(issued.timestamp() * 1000), "Asia/Kathmandu")
        assert span.total_seconds() == min(900, round(day_end_ms / 1000 - issued.timestamp(), 3))
        r = await client.patch(f"{A}/settings", json={"use_default_validity": True}, headers=h)
        assert r.json()["validity_seconds"] is None


async def test_users_lifecycle(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    async with running_app(settings) as (_, client):
        h = await login(client, "admin")
        body = {"username": "neha.k", "role": "clerk", "password": "first-pass-1", "counters": ["OPD2"]}
        r = await client.post(f"{A}/users", json=body, headers=h)
        assert r.status_code == 201 and r.json()["counters"] == ["OPD2"] and r.json()["active"]
        assert "password" not in r.text and "hash" not in r.text
        r = await client.post("/api/auth/login", json={"username": "neha.k", "password": "first-pass-1"})
        neha = {"Authorization": f"Bearer {r.json()['access_token']}"}
        client.cookies.clear()
        assert (
            await client.get(f"/api/facilities/{HIP}/counters/OPD2/queue", headers=neha)
        ).status_code == 200
        assert (
            await client.get(f"/api/facilities/{HIP}/counters/OPD1/queue", headers=neha)
        ).status_code == 403
        r = await client.patch(f"{A}/users/neha.k", json={"counters": ["OPD1", "OPD2"]}, headers=h)
        assert r.json()["counters"] == ["OPD1", "OPD2"]

        r = await client.post(f"{A}/users/neha.k/password", headers=h)
        new = r.json()["password"]
        assert r.status_code == 200 and len(new) >= 12
        r = await client.post("/api/auth/login", json={"username": "neha.k", "password": "first-pass-1"})
        assert r.status_code == 401
        r = await client.post("/api/auth/login", json={"username": "neha.k", "password": new})
        assert r.status_code == 200
        r = await client.post(f"{A}/users/neha.k/password", json={"password": "chosen-pass-2"}, headers=h)
        assert r.json() == {"username": "neha.k", "password": None}
        client.cookies.clear()

        r = await client.patch(f"{A}/users/neha.k", json={"active": False}, headers=h)
        assert r.status_code == 200 and r.json()["active"] is False
        r = await client.get("/api/auth/me", headers=neha)
        assert r.status_code == 401  # at once: this worker forgot the cached login
        r = await client.post("/api/auth/login", json={"username": "neha.k", "password": "chosen-pass-2"})
        assert r.status_code == 401
        users = {u["username"]: u for u in (await client.get(f"{A}/users", headers=h)).json()}
        assert set(users) == {"admin", "clerk", "ortho", "neha.k"} and users["neha.k"]["active"] is False


async def test_device_tokens(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    async with running_app(settings) as (_, client), running_app(settings) as (_, other_worker):
        h = await login(client, "admin")
        client.cookies.clear()
        r = await client.post(f"{A}/devices", json={"name": "hall-tv", "kind": "board"}, headers=h)
        assert r.status_code == 201, r.text
        board_token = r.json()["token"]
        assert board_token.startswith("dev_") and r.json()["last_seen_at"] is None
        r = await client.post(
            f"{A}/devices", json={"name": "kiosk2", "kind": "kiosk", "printer": "printer1"}, headers=h
        )
        kiosk = {"Authorization": f"Bearer {r.json()['token']}"}
        board = {"Authorization": f"Bearer {board_token}"}
        listed = (await client.get(f"{A}/devices", headers=h)).text
        assert board_token not in listed and "token_hash" not in listed

        me = (await client.get("/api/auth/me", headers=board)).json()
        assert (me["kind"], me["role"], me["name"], me["hip_id"]) == ("device", "board", "hall-tv", HIP)
        assert (await client.get(f"/api/facilities/{HIP}/board", headers=board)).status_code == 200
        r = await client.post(f"/api/facilities/{HIP}/counters/OPD1/tokens", headers=kiosk)
        assert r.status_code == 201 and r.json()["source"] == "walk_in"
        assert (await other_worker.get("/api/auth/me", headers=board)).status_code == 200  # now cached there

        seen = None
        for _ in range(100):  # the stamp is written in the background, off the request's path
            devices = {d["name"]: d for d in (await client.get(f"{A}/devices", headers=h)).json()}
            seen = devices["hall-tv"]["last_seen_at"]
            if seen and devices["kiosk2"]["last_seen_at"]:
                break
            await asyncio.sleep(0.02)
        assert seen is not None and devices["board1"]["last_seen_at"] is None

        r = await client.post(f"{A}/devices/hall-tv/revoke", headers=h)
        assert r.status_code == 200 and r.json()["active"] is False
        revoked_at = time.monotonic()
        r = await client.get("/api/auth/me", headers=board)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        # Another worker process had the login cached: it must give up within seconds.
        while (await other_worker.get("/api/auth/me", headers=board)).status_code == 200:
            assert time.monotonic() - revoked_at < 6.0
            await asyncio.sleep(0.25)
        assert (await other_worker.get("/api/auth/me", headers=board)).status_code == 401

        # The name is free again for a replacement with a fresh token; the old one stays dead.
        r = await client.post(f"{A}/devices", json={"name": "hall-tv", "kind": "board"}, headers=h)
        assert r.status_code == 201 and r.json()["token"] != board_token
        fresh = {"Authorization": f"Bearer {r.json()['token']}"}
        assert (await client.get("/api/auth/me", headers=fresh)).status_code == 200
        assert (await client.get("/api/auth/me", headers=board)).status_code == 401


async def test_audit_log(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    async with running_app(settings) as (_, client):
        h = await login(client, "admin")
        client.cookies.clear()
        await client.patch(f"{A}/settings", json={"skip_places": 5, "priority_ratio": 2}, headers=h)
        await client.patch(f"{A}/settings", json={"skip_places": 5}, headers=h)  # no change: no row
        await client.post(
            f"{A}/counters", json={"code": "EYE", "names": {"en": "Eye"}, "prefix": "E"}, headers=h
        )
        await client.patch(f"{A}/counters/EYE", json={"active": False}, headers=h)
        await client.patch(f"{A}/desks/D1", json={"counters": ["OPD1", "EYE"]}, headers=h)
        await client.post(
            f"{A}/users", json={"username": "u1", "role": "clerk", "password": "secret-pass-1"}, headers=h
        )
        await client.post(f"{A}/users/u1/password", json={"password": "secret-pass-2"}, headers=h)
        r = await client.post(f"{A}/devices", json={"name": "b2", "kind": "board"}, headers=h)
        token = r.json()["token"]
        await client.post(f"{A}/devices/b2/revoke", headers=h)
        r = await client.get(f"{A}/audit", headers=h)
        items = r.json()["items"]
        got = [(i["actor"], i["action"], i["target"]) for i in items]
        assert got == [
            ("admin", "device.revoke", "b2"),
            ("admin", "device.create", "b2"),
            ("admin", "user.password_reset", "u1"),
            ("admin", "user.create", "u1"),
            ("admin", "desk.update", "D1"),
            ("admin", "counter.deactivate", "EYE"),
            ("admin", "counter.create", "EYE"),
            ("admin", "facility.update", HIP),
        ]
        assert items[-1]["detail"] == {"skip_places": [3, 5]}
        assert items[4]["detail"] == {"counters": [["OPD1"], ["OPD1", "EYE"]]}
        assert items[5]["detail"] == {"active": [True, False]}
        assert "secret-pass" not in r.text and token not in r.text and "argon2" not in r.text
        page = (await client.get(f"{A}/audit?limit=3", headers=h)).json()
        assert [i["action"] for i in page["items"]] == [
            "device.revoke",
            "device.create",
            "user.password_reset",
        ]
        rest = (await client.get(f"{A}/audit?limit=10&before={page['next_before']}", headers=h)).json()
        assert [i["target"] for i in rest["items"]][:1] == ["u1"] and rest["next_before"] is None
        assert len(page["items"]) + len(rest["items"]) == len(items)

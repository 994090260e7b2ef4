"""Per-facility board settings over the real ASGI stack (Redis; SQLite and PostgreSQL): migration 0002,
"require a board device token", masked names on the board, and an admin change reaching open boards
at once (no restart, no waiting for the facility cache).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text
from sqlmodel import Session

from tests.support.app import HIP, PASSWORD, ServiceProc, login, make_settings, running_app, seed
from token_service.api import board as board_api
from token_service.api.live import Message, hub_of
from token_service.auth import new_device_token
from token_service.config import Settings
from token_service.models import Device, Facility
from token_service.records.db import alembic_config, sync_engine

A = f"/api/admin/facilities/{HIP}"
BOARD = f"/api/facilities/{HIP}/board"
OTHER = "IN0710000999"
CARD = {"hidn": "91-1234-5678-9012", "hid": "ramesh.k1979@abdm", "name": "Ramesh Kumar Verma", "gender": "M",
        "dob": "14/8/1979", "mobile": "9876543210"}  # fmt: skip
PRIVATE = ("Ramesh Kumar Verma", "Ramesh", "Kumar", "9876543210", "91-1234-5678-9012", "ramesh.k1979",
           "Sita Devi", "सीता")  # fmt: skip


def other_facility_board(settings: Settings) -> str:
    """A second hospital with a board device of its own; returns that device's token."""
    token, token_hash = new_device_token()
    with Session(sync_engine(settings)) as db:
        db.add(Facility(hip_id=OTHER, name="Civil Hospital Surat", names={"en": "Civil Hospital Surat"}))
        db.flush()
        db.add(Device(hip_id=OTHER, name="hall-tv", kind="board", token_hash=token_hash))
        db.commit()
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_migration_0002_adds_the_settings_off(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, "redis://unused", database_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    cfg = alembic_config(settings)
    command.upgrade(cfg, "0001")
    engine = create_engine(settings.sqlalchemy_url)
    with engine.begin() as conn:  # a facility that exists before the upgrade
        conn.execute(text("INSERT INTO facility (hip_id, name, names, timezone, languages, priority_ratio, "
                          "ageing_seconds, skip_places) VALUES ('OLD1', 'Old', '{}', 'Asia/Kolkata', '[\"en\"]', "
                          "2, 2700, 3)"))  # fmt: skip
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        row = conn.execute(text("SELECT board_names, board_requires_device FROM facility")).one()
    assert (bool(row[0]), bool(row[1])) == (False, False)
    command.downgrade(cfg, "0001")
    columns = {c["name"] for c in inspect(engine).get_columns("facility")}
    assert "board_names" not in columns and "board_requires_device" not in columns
    command.upgrade(cfg, "head")
    engine.dispose()


async def test_facility_can_require_a_board_device(tmp_path: Path, redis_url: str, database_url: str) -> None:
    settings = make_settings(tmp_path, redis_url, database_url)
    s = seed(settings)
    foreign = other_facility_board(settings)
    async with running_app(settings) as (_, client):
        admin = await login(client, "admin")
        client.cookies.clear()
        got = (await client.get(f"{A}/settings", headers=admin)).json()
        assert (got["board_names"], got["board_requires_device"], got["board_public"]) == (False, False, True)
        assert (await client.get(BOARD)).status_code == 200  # public by default

        r = await client.patch(f"{A}/settings", json={"board_requires_device": True}, headers=admin)
        assert r.status_code == 200 and r.json()["board_requires_device"] is True
        assert r.json()["board_public"] is False
        client.cookies.clear()
        # Takes effect at once, although OPD_BOARD_PUBLIC is still on.
        assert (await client.get(BOARD)).status_code == 401
        assert (await client.get(f"{BOARD}/events")).status_code == 401
        assert (await client.get(BOARD, headers=bearer(s.devices["board1"]))).status_code == 200
        assert (await client.get(f"{BOARD}?token={s.devices['board1']}")).status_code == 200
        assert (await client.get(BOARD, headers=bearer(s.devices["kiosk1"]))).status_code == 403
        assert (await client.get(BOARD, headers=bearer(foreign))).status_code == 403
        assert (await client.get(f"{BOARD}?token={foreign}")).status_code == 403
        assert (await client.get(BOARD, headers=bearer("dev_not-a-real-token"))).status_code == 401
        assert (await client.get(BOARD, headers=admin)).status_code == 200  # staff of the facility
        page = await client.get(f"/board/{HIP}?lang=hi")  # the page says what is missing
        assert page.status_code == 401 and "बोर्ड डिवाइस टोकन" in page.text
        page = await client.get(f"/board/{HIP}?token={s.devices['board1']}")
        assert page.status_code == 200 and 'id="desk-tiles"' in page.text
        assert (await client.get(f"/board/{HIP}?token={foreign}")).status_code == 403
        # The other facility's own board stays public: the switch is per facility.
        assert (await client.get(f"/api/facilities/{OTHER}/board")).status_code == 200

        # The status page never needs a device and still carries no name.
        clerk = await login(client, "clerk")
        tok = (
            await client.post(f"/api/facilities/{HIP}/counters/OPD1/tokens", json={}, headers=clerk)
        ).json()
        client.cookies.clear()
        assert (await client.get(f"/api/status/{tok['public_id']}")).status_code == 200

        r = await client.patch(f"{A}/settings", json={"board_requires_device": False}, headers=admin)
        assert r.status_code == 200 and r.json()["board_public"] is True
        client.cookies.clear()
        assert (await client.get(BOARD)).status_code == 200
        # Explicit nulls are refused like for every other setting.
        r = await client.patch(f"{A}/settings", json={"board_names": None}, headers=admin)
        assert r.status_code == 422
        audit = (await client.get(f"{A}/audit", headers=admin)).json()["items"]
        assert {"board_requires_device": [False, True]} in [a["detail"] for a in audit]

    private = make_settings(tmp_path, redis_url, database_url, board_public=False)
    async with running_app(private) as (_, client):
        # Service-wide private boards stay private whatever the facility says.
        admin = await login(client, "admin")
        client.cookies.clear()
        assert (await client.get(f"{A}/settings", headers=admin)).json()["board_public"] is False
        assert (await client.get(BOARD)).status_code == 401
        assert (await client.get(BOARD, headers=bearer(s.devices["board1"]))).status_code == 200


async def test_turning_the_switch_on_ends_open_anonymous_streams(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    s = seed(settings)
    async with running_app(settings) as (app, client):
        state = app.state.opd
        hub = hub_of(state)
        admin = await login(client, "admin")
        client.cookies.clear()
        anon = board_api._board_stream(hub, HIP, None, anonymous=True)
        device = board_api._board_stream(hub, HIP, None, anonymous=False)
        assert b"event: snapshot" in await anext(anon)
        assert b"event: snapshot" in await anext(device)
        r = await client.patch(f"{A}/settings", json={"board_requires_device": True}, headers=admin)
        assert r.status_code == 200
        with pytest.raises(StopAsyncIteration):  # the anonymous board is closed by the notice
            await asyncio.wait_for(anext(anon), 5)
        # The device's stream goes on and gets the rebuilt snapshot.
        assert b"event: update" in await asyncio.wait_for(anext(device), 5)
        await device.aclose()
        assert (await client.get(BOARD, headers=bearer(s.devices["board1"]))).status_code == 200


def test_a_change_reaches_every_worker_at_once(tmp_path: Path, redis_url: str) -> None:
    """Two `serve` workers: without the announcement one of them would serve its cached facility config
    (3 s) and keep answering anonymous boards after the admin required a device token."""
    settings = make_settings(tmp_path, redis_url)
    s = seed(settings)
    svc = ServiceProc(settings, workers=2).start()
    try:
        for _ in range(30):  # fresh connections land on both workers and warm both caches
            assert httpx.get(svc.url + BOARD, timeout=5).status_code == 200
        with httpx.Client(base_url=svc.url, timeout=5) as http:
            token = http.post("/api/auth/login", json={"username": "admin", "password": PASSWORD}).json()
            http.cookies.clear()
            admin = bearer(token["access_token"])
            with httpx.stream("GET", svc.url + BOARD + "/events", timeout=10) as stream:
                lines = stream.iter_lines()
                assert next(line for line in lines if line.startswith("event:")) == "event: snapshot"
                r = http.patch(f"{A}/settings", json={"board_requires_device": True}, headers=admin)
                assert r.status_code == 200
                # The open anonymous stream ends (whichever worker holds it).
                rest = list(lines)
                assert "event: snapshot" not in rest
            time.sleep(0.3)
            codes = [httpx.get(svc.url + BOARD, timeout=5).status_code for _ in range(30)]
            assert codes == [401] * 30, codes
            device = bearer(s.devices["board1"])
            assert all(
                httpx.get(svc.url + BOARD, headers=device, timeout=5).status_code == 200 for _ in range(10)
            )
    finally:
        svc.stop()


async def test_masked_names_on_the_board_only(tmp_path: Path, redis_url: str, database_url: str) -> None:
    settings = make_settings(tmp_path, redis_url, database_url)
    seed(settings)
    async with running_app(settings) as (app, client):
        hub = hub_of(app.state.opd)
        admin = await login(client, "admin")
        clerk = await login(client, "clerk")
        client.cookies.clear()
        url = f"/api/facilities/{HIP}/counters/OPD1/tokens"
        card = (await client.post(url, json={"abha_qr": json.dumps(CARD)}, headers=clerk)).json()
        sita = (await client.post(url, json={"name": "सीता देवी शर्मा"}, headers=clerk)).json()
        plain = (await client.post(url, json={}, headers=clerk)).json()
        for desk in ("D1", "D2"):
            assert (
                await client.post(f"/api/facilities/{HIP}/desks/{desk}/call-next", headers=clerk)
            ).status_code == 200

        off = (await client.get(BOARD)).json()
        assert all("name" not in (d["now"] or {}) for d in off["desks"]) and "name" not in off["recent"][0]

        async with hub.listen(HIP) as listener:
            r = await client.patch(f"{A}/settings", json={"board_names": True}, headers=admin)
            assert r.status_code == 200 and r.json()["board_names"] is True
            # Every worker hears of it through Redis; the board is rebuilt with names at once.
            assert (await _next_kind(listener, "config")).kind == "config"
            # (an update built just before the notice may come first; the rebuild follows it)
            update = await _next_update(listener, lambda body: "****" in json.dumps(body))
            assert update.snapshot is not None
            client.cookies.clear()
            body = (await client.get(BOARD)).json()
            now = {d["desk"]: d["now"] for d in body["desks"]}
            assert now["D1"]["label"] == "A1" and now["D1"]["name"] == "R**** K****"
            assert now["D2"]["label"] == "A2" and now["D2"]["name"] == "सी**** दे****"
            assert {c["label"]: c.get("name") for c in body["recent"]} == {
                "A1": "R**** K****",
                "A2": "सी**** दे****",
            }
            assert update.snapshot.public()["desks"] == body["desks"]

            # A recall's call event carries the masked name too.
            await client.post(f"/api/tokens/{card['id']}/recall", headers=clerk)
            call = await _next_event(listener, "recalled")
            snap = await hub.snapshot(HIP)
            encoded = call.call_sse(snap).decode()
            assert '"name":"R**** K****"' in encoded and '"recall":true' in encoded

            # Public surfaces: the masked form only; the status page no name at all.
            seen = [json.dumps(body, ensure_ascii=False), encoded]
            async with httpx.AsyncClient(transport=client._transport, base_url="http://testserver") as anon:
                for tok in (card, sita, plain):
                    st = await anon.get(f"/api/status/{tok['public_id']}")
                    assert st.status_code == 200
                    assert "name" not in st.json() and "****" not in st.text
                    seen.append(st.text)
                    page = await anon.get(f"/t/{tok['public_id']}")
                    assert "****" not in page.text
                    seen.append(page.text)
                seen.append((await anon.get(f"/board/{HIP}")).text)
            blob = "\n".join(seen)
            assert "R**** K****" in blob
            for secret in PRIVATE:
                assert secret not in blob, secret

            r = await client.patch(f"{A}/settings", json={"board_names": False}, headers=admin)
            assert r.status_code == 200
            await _next_kind(listener, "config")
            await _next_update(listener, lambda body: "****" not in json.dumps(body))
            assert "****" not in (await client.get(BOARD)).text


# ---- helpers


async def _next_kind(listener: Any, kind: str, within: float = 5.0) -> Message:
    async def find() -> Message:
        while True:
            msg: Message = await listener.get()
            if msg.kind == kind:
                return msg

    return await asyncio.wait_for(find(), within)


async def _next_update(listener: Any, match: Any, within: float = 5.0) -> Message:
    async def find() -> Message:
        while True:
            msg: Message = await listener.get()
            if msg.kind == "update" and msg.snapshot is not None and match(msg.snapshot.public()):
                return msg

    return await asyncio.wait_for(find(), within)


async def _next_event(listener: Any, event: str, within: float = 5.0) -> Message:
    async def find() -> Message:
        while True:
            msg: Message = await listener.get()
            if msg.kind == "event" and msg.event == event:
                return msg

    return await asyncio.wait_for(find(), within)

"""Pages and their APIs over the real ASGI stack (Redis, SQLite): login + CSRF, access rules, board and status
JSON, FHIR export, the estimated wait, and the live hub (one subscription, many listeners, Redis restarts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from tests.support.app import HIP, PASSWORD, login, make_settings, running_app, seed
from tests.support.servers import RedisProc
from token_service.api.board import median_gap
from token_service.api.live import Message, hub_of
from token_service.clock import FakeClock
from token_service.queue import keys

CARD = {"hidn": "91-1234-5678-9012", "hid": "ramesh.k1979@abdm", "name": "Ramesh Kumar Verma", "gender": "F",
        "dob": "14/8/1979", "state name": "BIHAR", "district_name": "PATNA", "mobile": "9876543210",
        "address": "H No 12, Gali 4"}  # fmt: skip


async def _form_login(
    client: httpx.AsyncClient, username: str, password: str = PASSWORD, **extra: str
) -> httpx.Response:
    page = await client.get("/login")
    csrf = page.cookies.get("opd_csrf") or client.cookies.get("opd_csrf")
    data = {"csrf_token": csrf or "", "username": username, "password": password, **extra}
    return await client.post("/login", data=data)


async def test_login_page_csrf_and_session(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    async with running_app(settings) as (_, client):
        for lang, word in (("en", "Staff login"), ("hi", "स्टाफ लॉगिन"), ("gu", "સ્ટાફ લૉગિન")):
            r = await client.get(f"/login?lang={lang}")
            assert r.status_code == 200 and word in r.text and f'<html lang="{lang}">' in r.text
        assert r.headers["content-security-policy"].startswith("default-src 'self'; script-src 'self'")
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
        assert "<script>" not in r.text  # no inline code anywhere (the CSP would block it)

        r = await client.post(
            "/login", data={"username": "clerk", "password": PASSWORD, "csrf_token": "forged"}
        )
        assert r.status_code == 403 and "opd_session" not in r.cookies
        r = await _form_login(client, "clerk", "wrong")
        assert r.status_code == 401 and "Wrong username or password" in r.text
        r = await _form_login(client, "clerk", next="//evil.example/x")
        assert r.status_code == 303 and r.headers["location"] == "/console"
        cookie = next(
            v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("opd_session=")
        )
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        r = await client.get("/console")
        assert r.status_code == 200
        desks = json.loads(r.text.split('id="page-data">', 1)[1].split("</script>", 1)[0])["desks"]
        assert [d["code"] for d in desks] == ["D1", "D2"]  # D3 serves ORTHO, which this clerk may not

        # Cookie-authenticated API writes need the double-submit header; Bearer callers do not.
        url = f"/api/facilities/{HIP}/counters/OPD1/tokens"
        r = await client.post(url, json={})
        assert r.status_code == 403 and r.json()["error"] == "csrf_failed"
        r = await client.post(url, json={}, headers={"X-CSRF-Token": client.cookies["opd_csrf"]})
        assert r.status_code == 201 and r.json()["number"] == 1  # the refused call changed nothing
        bearer = await login(client, "clerk")
        assert (await client.post(url, json={}, headers=bearer)).status_code == 201

        r = await client.post("/logout", data={"csrf_token": client.cookies["opd_csrf"]})
        assert r.status_code == 303
        client.cookies.delete("opd_session")
        r = await client.get("/console?desk=D1")
        assert r.status_code == 303 and r.headers["location"] == "/login?next=/console%3Fdesk%3DD1"


async def test_board_json_filters_and_access(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    s = seed(settings)
    async with running_app(settings) as (_, client):
        h = await login(client, "admin")
        client.cookies.clear()
        for counter in ("OPD1", "OPD1", "OPD2", "ORTHO"):
            await client.post(
                f"/api/facilities/{HIP}/counters/{counter}/tokens", json={"name": "Sita"}, headers=h
            )
        await client.post(f"/api/facilities/{HIP}/desks/D2/call-next", headers=h)
        body = (await client.get(f"/api/facilities/{HIP}/board")).json()
        assert body["waiting"] == {"OPD1": 1, "OPD2": 1, "ORTHO": 1}
        d2 = next(d for d in body["desks"] if d["desk"] == "D2")
        assert d2["now"] == {**d2["now"], "label": "A1", "number": 1, "counter": "OPD1", "desk": "D2"}
        assert body["recent"][0]["label"] == "A1" and body["facility"]["languages"] == ["hi", "en"]
        assert "Sita" not in json.dumps(body)
        only = (await client.get(f"/api/facilities/{HIP}/board?counters=ORTHO")).json()
        assert only["waiting"] == {"ORTHO": 1} and [d["desk"] for d in only["desks"]] == ["D3"]
        assert only["recent"] == []
        assert (await client.get(f"/api/facilities/{HIP}/board?counters=NOPE")).status_code == 404
        assert (await client.get("/api/facilities/NOPE/board")).status_code == 404
        page = await client.get(f"/board/{HIP}?lang=hi")
        assert page.status_code == 200 and "जिला अस्पताल पटना" in page.text

    private = make_settings(tmp_path, redis_url, board_public=False)
    async with running_app(private) as (_, client):
        assert (await client.get(f"/api/facilities/{HIP}/board")).status_code == 401
        board = s.devices["board1"]
        assert (await client.get(f"/api/facilities/{HIP}/board?token={board}")).status_code == 200
        r = await client.get(f"/api/facilities/{HIP}/board", headers={"Authorization": f"Bearer {board}"})
        assert r.status_code == 200
        kiosk = {"Authorization": f"Bearer {s.devices['kiosk1']}"}
        assert (await client.get(f"/api/facilities/{HIP}/board", headers=kiosk)).status_code == 403


async def test_status_estimate_and_fhir_export(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    clock = FakeClock(1_795_000_000_000)
    async with running_app(settings, clock) as (_, client):
        h = await login(client, "clerk")
        url = f"/api/facilities/{HIP}/counters/OPD1/tokens"
        card = (await client.post(url, json={"abha_qr": json.dumps(CARD)}, headers=h)).json()
        plain = [(await client.post(url, json={}, headers=h)).json() for _ in range(5)]
        for _ in range(3):  # three calls two minutes apart: a measured rate of one patient per 120 s
            assert (
                await client.post(f"/api/facilities/{HIP}/desks/D1/call-next", headers=h)
            ).status_code == 200
            clock.advance(120)
        last = plain[-1]
        status = (await client.get(f"/api/status/{last['public_id']}")).json()
        assert (status["label"], status["status"], status["position"]) == ("A6", "waiting", 2)
        assert status["eta_minutes"] == 6  # (2 ahead + 1) x 120 s
        assert set(status) >= {"counter_name", "facility", "version"} and "patient" not in status
        assert (await client.get("/api/status/nosuchtoken123")).status_code == 404
        page = await client.get("/t/nosuchtoken123", headers={"Accept": "text/html"})
        assert page.status_code == 404 and "not found" in page.text

        fhir = await client.get(f"/api/tokens/{card['id']}/fhir-patient", headers=h)
        assert fhir.status_code == 200 and fhir.headers["content-type"] == "application/fhir+json"
        res = fhir.json()
        assert (
            res["resourceType"] == "Patient"
            and res["gender"] == "female"
            and res["birthDate"] == "1979-08-14"
        )
        assert [(i["system"], i["value"], i["type"]["coding"][0]["code"]) for i in res["identifier"]] == [
            ("https://healthid.ndhm.gov.in", "91-1234-5678-9012", "ABHA"),
            ("https://healthid.abdm.gov.in", "ramesh.k1979@abdm", "ABHAAddress"),
        ]
        assert res["name"] == [{"use": "official", "text": "Ramesh Kumar Verma"}]
        assert res["telecom"] == [{"system": "phone", "value": "9876543210", "use": "mobile"}]
        assert res["address"][0]["district"] == "PATNA" and res["address"][0]["country"] == "IN"
        assert (await client.get(f"/api/tokens/{plain[0]['id']}/fhir-patient", headers=h)).status_code == 404
        ortho = await login(client, "ortho")
        assert (await client.get(f"/api/tokens/{card['id']}/fhir-patient", headers=ortho)).status_code == 403


def test_median_gap_rule() -> None:
    assert median_gap([0, 100]) is None  # one gap is not a rate
    assert median_gap([0, 100, 300, 360]) == 100
    assert median_gap([0, 60, 120, 120 + 45 * 60]) == 60  # the lunch break is not a service time


async def test_one_subscription_fans_out_to_many_listeners(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    async with running_app(settings) as (app, client):
        hub = hub_of(app.state.opd)
        h = await login(client, "clerk")
        await client.post(f"/api/facilities/{HIP}/counters/OPD1/tokens", json={}, headers=h)
        r = aioredis.Redis.from_url(redis_url)
        clients = len(await r.client_list())
        channel = keys.live_channel(HIP)
        async with contextlib.AsyncExitStack() as stack:
            # What 2,000 open boards cost this worker: 2,000 in-process queues, still one subscription.
            listeners = [await stack.enter_async_context(hub.listen(HIP)) for _ in range(2000)]
            assert await r.pubsub_numsub(channel) == [(channel.encode(), 1)]
            t0 = time.perf_counter()
            await client.post(f"/api/facilities/{HIP}/desks/D1/call-next", headers=h)
            got = await asyncio.gather(*(_next_event(q, "called") for q in listeners))
            fan_ms = (time.perf_counter() - t0) * 1000
            assert all(m.token is not None and m.token.label == "A1" for m in got)
            updates = await asyncio.gather(*(_next_kind(q, "update") for q in listeners))
            assert len({id(m.snapshot) for m in updates}) == 1  # one snapshot shared by everyone
            assert await r.pubsub_numsub(channel) == [(channel.encode(), 1)]
            assert len(await r.client_list()) <= clients + 1
        await r.aclose()
        print(f"\n2000 listeners got the call {fan_ms:.1f} ms after the request started")


async def test_hub_survives_a_redis_restart(tmp_path: Path) -> None:
    own = RedisProc().start()
    try:
        settings = make_settings(tmp_path, own.url)
        seed(settings)
        async with running_app(settings) as (app, client):
            hub = hub_of(app.state.opd)
            h = await login(client, "clerk")
            async with hub.listen(HIP) as listener:
                await _wait(lambda: hub.online)
                own.kill()
                assert (await _next_kind(listener, "offline", 10)).kind == "offline"
                own.start()
                assert (await _next_kind(listener, "resync", 15)).kind == "resync"
                # This Redis has no persistence: it came back empty, sessions included, so sign in again.
                assert (await client.get("/api/auth/me", headers=h)).status_code == 401
                h = await login(client, "clerk")
                r = await client.post(f"/api/facilities/{HIP}/counters/OPD1/tokens", json={}, headers=h)
                assert r.status_code == 201
                msg = await _next_event(listener, "issued")
                assert msg.token is not None and msg.token.label == "A1"
    finally:
        own.cleanup()


# ---- helpers


async def _next_kind(listener: object, kind: str, within: float = 5.0) -> Message:
    async def find() -> Message:
        while True:
            msg: Message = await listener.get()  # type: ignore[attr-defined]
            if msg.kind == kind:
                return msg

    return await asyncio.wait_for(find(), within)


async def _next_event(listener: object, event: str, within: float = 5.0) -> Message:
    async def find() -> Message:
        while True:
            msg: Message = await listener.get()  # type: ignore[attr-defined]
            if msg.kind == "event" and msg.event == event:
                return msg

    return await asyncio.wait_for(find(), within)


async def _wait(cond: object, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)

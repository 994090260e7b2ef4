"""Print jobs through the real ASGI stack, Redis and SQLite: requests, leases, acks, heartbeat, listing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from printer.slip import SlipData
from tests.support.app import HIP, Seed, login, make_settings, running_app, seed


def _dev(s: Seed, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {s.devices[name]}"}


async def _issue(client: httpx.AsyncClient, headers: dict[str, str], counter: str = "OPD1") -> dict[str, Any]:
    r = await client.post(f"/api/facilities/{HIP}/counters/{counter}/tokens", json={}, headers=headers)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_kiosk_and_staff_requests_become_jobs_with_the_slip(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url, public_base_url="https://opd.example.org/")
    s = seed(settings)
    async with running_app(settings) as (_, client):
        kiosk = _dev(s, "kiosk1")
        token = await _issue(client, kiosk)
        r = await client.post(f"/api/tokens/{token['id']}/print", json={"language": "gu"}, headers=kiosk)
        assert r.status_code == 202, r.text
        assert r.json()["printer"] == "printer1" and r.json()["status"] == "queued"
        first = r.json()["job_id"]
        clerk = await login(client, "clerk")
        r = await client.post(f"/api/tokens/{token['id']}/print", json={"printer": "printer1"}, headers=clerk)
        assert r.status_code == 202 and r.json()["job_id"] == first + 1  # a reprint is a new job

        printer = _dev(s, "printer1")
        job = (await client.get("/api/print-jobs/next", headers=printer)).json()
        assert job["id"] == first and job["token_id"] == token["id"] and job["attempt"] == 1
        slip = SlipData.from_json(job["payload"])
        assert slip.status_url == f"https://opd.example.org/t/{token['public_id']}"
        assert slip.token_label == token["label"] == "A1"
        assert slip.languages == ["gu", "hi", "en"]
        assert slip.facility_names["hi"] == "जिला अस्पताल पटना"
        assert slip.counter_names == {"en": "General OPD", "hi": "सामान्य ओपीडी"}
        reprint = (await client.get("/api/print-jobs/next", headers=printer)).json()
        assert reprint["id"] == first + 1 and SlipData.from_json(reprint["payload"]).languages == ["hi", "en"]


async def test_who_may_print_and_errors(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    s = seed(settings)
    async with running_app(settings) as (_, client):
        admin = await login(client, "admin")
        token = await _issue(client, admin)
        ortho_token = await _issue(client, admin, "ORTHO")
        url = f"/api/tokens/{token['id']}/print"
        client.cookies.clear()  # login() also set the session cookie
        assert (await client.post(url, json={"printer": "printer1"})).status_code == 401
        r = await client.post(url, json={}, headers=admin)
        assert r.status_code == 422 and r.json()["error"] == "printer_required"
        r = await client.post(url, json={"printer": "nope"}, headers=admin)
        assert r.status_code == 404 and r.json()["error"] == "not_found"
        r = await client.post(url, json={"printer": "kiosk1"}, headers=admin)  # not a printer device
        assert r.status_code == 404
        r = await client.post(url, json={"printer": "bad name!"}, headers=admin)
        assert r.status_code == 422 and r.json()["error"] == "invalid_body"
        r = await client.post(f"/api/tokens/{ortho_token['id']}/print", json={"printer": "printer1"},
                              headers=await login(client, "clerk"))  # fmt: skip
        assert r.status_code == 403  # the clerk serves OPD1/OPD2 only
        r = await client.post(url, json={"printer": "printer2"}, headers=_dev(s, "kiosk1"))
        assert r.status_code == 403  # a kiosk prints only on its paired printer
        for device in ("board1", "printer1"):
            assert (await client.post(url, json={}, headers=_dev(s, device))).status_code == 403
        r = await client.post(
            f"/api/tokens/{HIP}.OPD1.20200101.00001/print", json={}, headers=_dev(s, "kiosk1")
        )
        assert r.status_code == 404
        assert (await client.post(f"/api/tokens/{token['id']}/cancel", headers=admin)).status_code == 200
        r = await client.post(url, json={"printer": "printer1"}, headers=admin)
        assert r.status_code == 409 and r.json()["error"] == "token_finished"
        # Only printer devices take jobs; staff and kiosks get 403.
        for headers in (admin, _dev(s, "kiosk1")):
            assert (await client.get("/api/print-jobs/next", headers=headers)).status_code == 403
        assert (
            await client.get("/api/print-jobs/next?wait=26", headers=_dev(s, "printer1"))
        ).status_code == 422
        r = await client.post("/api/print-jobs/1/ack", json={"status": "done"}, headers=_dev(s, "printer1"))
        assert r.status_code == 422
        r = await client.post(
            "/api/print-jobs/999/ack", json={"status": "printed"}, headers=_dev(s, "printer1")
        )
        assert r.status_code == 404


async def test_lease_redelivery_ack_and_idempotent_ack(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    s = seed(settings)
    async with running_app(settings) as (_, client):
        kiosk, printer = _dev(s, "kiosk1"), _dev(s, "printer1")
        token = await _issue(client, kiosk)
        job_id = (await client.post(f"/api/tokens/{token['id']}/print", json={}, headers=kiosk)).json()[
            "job_id"
        ]
        job = (await client.get("/api/print-jobs/next?lease=1", headers=printer)).json()
        assert job["id"] == job_id and job["lease_seconds"] == 1
        # Leased: nothing else to deliver right now.
        assert (await client.get("/api/print-jobs/next", headers=printer)).status_code == 204
        # Never acknowledged: the same job comes back once the lease lapses, within the long-poll.
        started = time.monotonic()
        again = await client.get("/api/print-jobs/next?wait=5&lease=30", headers=printer)
        waited = time.monotonic() - started
        assert again.status_code == 200 and again.json()["id"] == job_id and again.json()["attempt"] == 2
        assert 0.3 < waited < 2.5
        r = await client.post(f"/api/print-jobs/{job_id}/ack", json={"status": "printed"}, headers=printer)
        assert r.json() == {"id": job_id, "status": "printed"}
        # A late ack from the first delivery, even a failure, does not undo the print.
        r = await client.post(
            f"/api/print-jobs/{job_id}/ack", json={"status": "failed", "error": "x"}, headers=printer
        )
        assert r.json() == {"id": job_id, "status": "printed"}
        assert (await client.get("/api/print-jobs/next", headers=printer)).status_code == 204


async def test_long_poll_wakes_on_a_new_job_without_polling(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    s = seed(settings)
    async with running_app(settings) as (_, client):
        kiosk, printer = _dev(s, "kiosk1"), _dev(s, "printer1")
        token = await _issue(client, kiosk)
        poll = asyncio.create_task(client.get("/api/print-jobs/next?wait=20", headers=printer))
        await asyncio.sleep(0.3)
        assert not poll.done()
        started = time.monotonic()
        job_id = (await client.post(f"/api/tokens/{token['id']}/print", json={}, headers=kiosk)).json()[
            "job_id"
        ]
        r = await asyncio.wait_for(poll, 5)
        latency = time.monotonic() - started
        assert r.status_code == 200 and r.json()["id"] == job_id
        assert latency < 0.5, latency
        # A printer sees only its own jobs.
        started = time.monotonic()
        r = await client.get("/api/print-jobs/next?wait=0.3", headers=printer)
        assert r.status_code == 204 and time.monotonic() - started >= 0.3


async def test_heartbeat_and_printer_listing(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    s = seed(settings)
    async with running_app(settings) as (_, client):
        admin = await login(client, "admin")
        listing = (await client.get(f"/api/facilities/{HIP}/printers", headers=admin)).json()
        assert listing == [{
            "name": "printer1", "active": True, "online": False, "last_seen_at": None, "healthy": None,
            "detail": None, "health_at": None, "queued": 0, "in_flight": 0, "failed_24h": 0,
            "last_printed_at": None, "kiosks": ["kiosk1"],
        }]  # fmt: skip
        kiosk, printer = _dev(s, "kiosk1"), _dev(s, "printer1")
        for _ in range(3):
            token = await _issue(client, kiosk)
            assert (
                await client.post(f"/api/tokens/{token['id']}/print", json={}, headers=kiosk)
            ).status_code == 202
        r = await client.post("/api/printers/heartbeat", json={"healthy": False, "detail": "out of paper"},
                              headers=printer)  # fmt: skip
        assert r.json() == {"printer": "printer1", "queued": 3}
        one = (await client.get("/api/print-jobs/next", headers=printer)).json()["id"]
        two = (await client.get("/api/print-jobs/next", headers=printer)).json()["id"]
        await client.post(f"/api/print-jobs/{one}/ack", json={"status": "printed"}, headers=printer)
        await client.post(
            f"/api/print-jobs/{two}/ack", json={"status": "failed", "error": "bad"}, headers=printer
        )
        (row,) = (await client.get(f"/api/facilities/{HIP}/printers", headers=admin)).json()
        assert row["online"] is True and row["healthy"] is False and row["detail"] == "out of paper"
        assert (row["queued"], row["in_flight"], row["failed_24h"]) == (1, 0, 1)
        assert row["last_printed_at"] and row["last_seen_at"] and row["health_at"]
        assert (await client.get(f"/api/facilities/{HIP}/printers", headers=printer)).status_code == 403
        assert (await client.get("/api/facilities/NOPE/printers", headers=admin)).status_code in (403, 404)

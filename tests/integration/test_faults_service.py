"""The service (3 workers) SIGKILLed under load: after a restart the on-shares left pending in the outbox are
delivered to the gateway, print jobs queued before the kill still reach the printer, and every token a
caller was given is in SQL and Redis."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from tests.support.app import HIP, ServiceProc, make_settings, seed
from tests.support.load import (
    CLIENTS,
    UNTHROTTLED,
    Call,
    assert_acknowledged_kept,
    load,
    login_headers,
    post_share,
    sessions,
    sql_rows,
    until_issued,
    wait_recorded,
)
from tests.support.servers import RedisProc
from token_service.abdm.sandbox_state import SandboxState

SHARES = 8
PRINTS = 6


def accepted_on_shares(gw: SandboxState, request_ids: set[str]) -> set[str]:
    return {
        r["requestId"]
        for r in gw.on_shares()
        if r.get("answered") == 202 and r.get("requestId") in request_ids
    }


def test_service_sigkill_under_load_resumes_outbox_and_print_jobs(
    tmp_path: Path, sandbox: tuple[SandboxState, str]
) -> None:
    gw, gw_url = sandbox
    gw.clear_on_shares()
    rproc = RedisProc(appendonly=True).start()
    svc: ServiceProc | None = None
    try:
        settings = make_settings(tmp_path, rproc.url, abdm_gateway_url=gw_url)
        s = seed(settings)
        svc = ServiceProc(settings, workers=3, env_extra=UNTHROTTLED).start()
        admin = login_headers(svc.url)
        printer = {"Authorization": f"Bearer {s.devices['printer1']}"}
        # Print jobs queued, not yet taken by the agent.
        jobs = []
        for i in range(PRINTS):
            r = httpx.post(f"{svc.url}/api/facilities/{HIP}/counters/{('OPD1', 'OPD2', 'ORTHO')[i % 3]}/tokens",
                           headers=admin, json={})  # fmt: skip
            assert r.status_code == 201
            p = httpx.post(
                f"{svc.url}/api/tokens/{r.json()['id']}/print", headers=admin, json={"printer": "printer1"}
            )
            assert p.status_code == 202, p.text
            jobs.append(p.json()["job_id"])
        # The gateway fails every on-share for now: they stay pending in the outbox, being retried.
        gw.set_fault("5xx")
        request_ids: set[str] = set()
        progress: list[Call] = []

        async def scenario() -> None:
            creds = await sessions(svc.url, CLIENTS)
            burst = asyncio.create_task(
                load(svc.url, time.monotonic() + 60, CLIENTS, creds=creds, calls=progress)
            )
            for i in range(SHARES):
                share = await post_share(gw, svc.url, counter=("OPD1", "OPD2")[i % 2], abha=f"kill{i}@sbx")
                assert share.status == 202, share
                request_ids.add(share.body["requestId"])
            await until_issued(progress, 40)
            await asyncio.to_thread(svc.kill9)
            burst.cancel()
            await asyncio.gather(burst, return_exceptions=True)

        asyncio.run(scenario())
        assert accepted_on_shares(gw, request_ids) == set()
        attempts_before = sql_rows(settings.sqlalchemy_url, "SELECT count(*) FROM on_share_attempt")[0][0]
        assert attempts_before > 0, "the outbox should have tried (and failed) before the kill"
        gw.set_fault("ok")
        restarted = time.monotonic()
        svc.start()
        ready = time.monotonic()
        deadline = time.monotonic() + 15
        while accepted_on_shares(gw, request_ids) != request_ids and time.monotonic() < deadline:
            time.sleep(0.1)
        delivered = accepted_on_shares(gw, request_ids)
        print(f"restart took {ready - restarted:.1f} s; {len(delivered)}/{SHARES} pending on-shares delivered "
              f"{time.monotonic() - ready:.1f} s after it was ready; {attempts_before} failed attempts before")  # fmt: skip
        assert delivered == request_ids
        # The gateway records an on-share as it arrives; the outbox commits "sent" once the answer is back.
        deadline = time.monotonic() + 10
        while True:
            rows = dict(
                sql_rows(settings.sqlalchemy_url, "SELECT status, count(*) FROM on_share GROUP BY status")
            )
            if "pending" not in rows or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert rows.get("sent", 0) >= SHARES and "pending" not in rows, rows
        # Every print job queued before the kill is handed to the printer's agent after the restart.
        got: list[int] = []
        with httpx.Client(base_url=svc.url, headers=printer, timeout=10) as c:
            for _ in range(PRINTS + 2):
                r = c.get("/api/print-jobs/next", params={"wait": 1})
                if r.status_code == 204:
                    break
                assert r.status_code == 200, r.text
                got.append(r.json()["id"])
                assert c.post(f"/api/print-jobs/{got[-1]}/ack", json={"status": "printed"}).status_code == 200
        assert sorted(got) == sorted(jobs)
        wait_recorded(rproc.url)
        issued = assert_acknowledged_kept(progress, rproc.url, settings.sqlalchemy_url)
        assert len(issued) >= 40
    finally:
        gw.set_fault("ok")
        if svc:
            svc.stop()
        rproc.cleanup()

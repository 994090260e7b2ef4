"""Kill -9 the service (2 workers) during a burst of issues: every token a caller received is in SQL
after restart and numbering continues; then Redis loses everything and `opd-token rebuild` restores it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis as sync_redis
from sqlalchemy import create_engine, text

from tests.support.app import PASSWORD, ServiceProc, make_settings, seed
from tests.support.servers import RedisProc, postgres_url
from tests.support.pg import fresh_database

COUNTERS = ("OPD1", "OPD2", "ORTHO")


async def _burst(url: str, headers: dict[str, str], stop_after_s: float, acknowledged: list[dict]) -> int:  # type: ignore[type-arg]
    errors = 0
    deadline = time.monotonic() + stop_after_s

    async def client_loop(i: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=5) as c:
            n = 0
            while time.monotonic() < deadline + 5:
                counter = COUNTERS[(i + n) % 3]
                n += 1
                try:
                    r = await c.post(f"/api/facilities/IN0710000123/counters/{counter}/tokens", json={"name": f"P{i}-{n}"})
                except httpx.HTTPError:
                    errors += 1
                    return  # the service is gone
                if r.status_code == 201:
                    acknowledged.append(r.json())

    await asyncio.gather(*(client_loop(i) for i in range(16)))
    return errors


def _login(url: str) -> dict[str, str]:
    r = httpx.post(url + "/api/auth/login", json={"username": "admin", "password": PASSWORD})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_kill9_during_burst_then_rebuild(tmp_path: Path, backend: str) -> None:
    database_url = ""
    if backend == "postgres":
        if postgres_url() is None:
            pytest.skip("no PostgreSQL reachable (set OPD_TEST_POSTGRES_URL)")
    rproc = RedisProc(appendonly=True).start()
    try:
        with fresh_database(backend) as database_url:
            settings = make_settings(tmp_path, rproc.url, database_url)
            seed(settings)
            svc = ServiceProc(settings, workers=2).start()
            headers = _login(svc.url)
            acknowledged: list[dict] = []  # type: ignore[type-arg]

            async def scenario() -> None:
                burst = asyncio.create_task(_burst(svc.url, headers, 1.5, acknowledged))
                await asyncio.sleep(1.5)
                svc.kill9()
                await burst

            asyncio.run(scenario())
            assert len(acknowledged) > 10, "the burst should have issued tokens before the kill"
            svc.start()
            engine = create_engine(settings.sqlalchemy_url)
            with engine.connect() as conn:
                in_sql = {r[0] for r in conn.execute(text("SELECT id FROM token"))}
            missing = [t["id"] for t in acknowledged if t["id"] not in in_sql]
            assert missing == []
            # Numbering continues above everything issued before the crash, per counter.
            highest = {c: max((t["number"] for t in acknowledged if t["counter"] == c), default=0) for c in COUNTERS}
            headers = _login(svc.url)
            for c in COUNTERS:
                r = httpx.post(f"{svc.url}/api/facilities/IN0710000123/counters/{c}/tokens", headers=headers)
                assert r.status_code == 201
                assert r.json()["number"] > highest[c]
            # Call a few so the rebuilt state has called and waiting tokens.
            for _ in range(3):
                assert httpx.post(f"{svc.url}/api/facilities/IN0710000123/desks/D2/call-next", headers=headers).status_code == 200

            def listing() -> dict[str, list[tuple[str, str]]]:
                out = {}
                for c in COUNTERS:
                    q = httpx.get(f"{svc.url}/api/facilities/IN0710000123/counters/{c}/queue", headers=headers).json()
                    out[c] = [(t["id"], t["status"]) for t in q["waiting"] + q["called"]]
                return out

            # Let the recorder claim what the killed workers left pending and catch up with the history.
            r = sync_redis.Redis.from_url(rproc.url)
            deadline = time.monotonic() + 20
            while r.xlen("opd:{IN0710000123}:ev") and time.monotonic() < deadline:
                time.sleep(0.2)
            assert r.xlen("opd:{IN0710000123}:ev") == 0
            before = listing()
            svc.stop()
            sync_redis.Redis.from_url(rproc.url).flushall()
            env = svc.env()
            done = subprocess.run([sys.executable, "-m", "token_service.cli", "rebuild"], env=env,
                                  capture_output=True, text=True, timeout=60)  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert "restored" in done.stdout
            svc.start()
            headers = _login(svc.url)
            assert listing() == before
            with engine.connect() as conn:
                top = conn.execute(text("SELECT max(number) FROM token WHERE origin_counter = 'OPD1'")).scalar_one()
            r = httpx.post(f"{svc.url}/api/facilities/IN0710000123/counters/OPD1/tokens", headers=headers)
            # Tokens allocated but never answered (the kill) are in SQL too: numbering goes above them.
            assert r.json()["number"] == top + 1
            with engine.connect() as conn:
                dupes = conn.execute(text(
                    "SELECT origin_counter, number, count(*) FROM token GROUP BY origin_counter, local_date, number "
                    "HAVING count(*) > 1")).fetchall()  # fmt: skip
            assert dupes == []
            svc.stop()
            engine.dispose()
    finally:
        rproc.cleanup()

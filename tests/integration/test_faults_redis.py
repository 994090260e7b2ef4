"""Redis faults through the real service (2 workers): SIGKILL with AOF during a burst, fast 503s while it is
down, recovery within 2 s of its return; and a Redis without persistence rebuilt from SQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import redis as sync_redis

from tests.support.app import HIP, ServiceProc, make_settings, seed
from tests.support.load import (
    CLIENTS,
    COUNTERS,
    UNTHROTTLED,
    Call,
    assert_acknowledged_kept,
    load,
    login_headers,
    post_share,
    probe,
    sessions,
    sql_rows,
    until_issued,
    wait_recorded,
)
from tests.support.redis_records import read_token
from tests.support.servers import RedisProc
from token_service.abdm.sandbox_state import SandboxState


def test_redis_sigkill_with_aof_during_burst(tmp_path: Path, sandbox: tuple[SandboxState, str]) -> None:
    gw, gw_url = sandbox
    rproc = RedisProc(appendonly=True).start()
    svc: ServiceProc | None = None
    try:
        settings = make_settings(tmp_path, rproc.url, abdm_gateway_url=gw_url)
        seed(settings)
        svc = ServiceProc(settings, workers=2, env_extra=UNTHROTTLED).start()
        headers = login_headers(svc.url)
        timeline: dict[str, float] = {}
        shares_down: list[Call] = []

        async def scenario() -> tuple[list[Call], list[Call], list[Call]]:
            creds = await sessions(svc.url, CLIENTS)
            for i in range(4):  # both workers have verified a gateway token and issued from a share
                assert (await post_share(gw, svc.url, abha=f"warm{i}@sbx")).status == 202
            progress: list[Call] = []
            burst = asyncio.create_task(
                load(svc.url, time.monotonic() + 60, CLIENTS, creds=creds, calls=progress)
            )
            await until_issued(progress, 40)
            rproc.kill()
            killed = timeline["killed"] = time.monotonic()
            watch = asyncio.create_task(probe(svc.url, headers, killed + 1.0))
            await asyncio.sleep(0.3)
            for abha in ("asha.devi@sbx", "ravi.k@sbx", "meena.s@sbx"):
                shares_down.append(await post_share(gw, svc.url, abha=abha))
            down = await watch
            timeline["restart"] = time.monotonic()
            await asyncio.to_thread(rproc.start)
            back = timeline["back"] = time.monotonic()
            up = await probe(svc.url, headers, back + 2.5)
            await until_issued(progress, sum(c.status == 201 for c in progress) + 40)
            burst.cancel()
            await asyncio.gather(burst, return_exceptions=True)
            return progress, down, up

        calls, probed_down, probed_up = asyncio.run(scenario())
        killed, restart, back = timeline["killed"], timeline["restart"], timeline["back"]
        before = [c for c in calls if c.done < killed]
        assert sum(c.status == 201 for c in before) > 20, Counter((c.op, c.status) for c in before)
        # While Redis is down every request gets a clean 503 (sent 50 ms after the kill or later, so
        # requests in flight at the kill are left out) ...
        down = [c for c in calls + probed_down if c.sent > killed + 0.05 and c.done < restart]
        assert len(down) > 20
        assert {c.status for c in down} == {503}, Counter(c.status for c in down)
        assert all(c.body.get("error") == "unavailable" for c in down)
        # ... within 50 ms for a caller on its own, and without hangs under the load's own queueing.
        alone = sorted(c.ms for c in probed_down if c.sent > killed + 0.05)
        loaded = sorted(c.ms for c in down if c not in probed_down)
        print(f"503 while Redis is down: single caller n={len(alone)} p50={alone[len(alone) // 2]:.1f} "
              f"p90={alone[int(len(alone) * 0.9)]:.1f} max={alone[-1]:.1f} ms; under load n={len(loaded)} "
              f"max={loaded[-1]:.1f} ms; shares {[round(s.ms) for s in shares_down]} ms")  # fmt: skip
        # The target is 50 ms for the typical answer; the worst case, which a busy CI box can stretch by
        # scheduling alone, must still be nowhere near a hang (the client timeout is 2 s).
        assert alone[len(alone) // 2] < 50, [round(x) for x in alone]
        assert alone[-1] < 1000 and loaded[-1] < 1000, (alone[-5:], loaded[-5:])
        # The gateway must see a failure so it delivers the share again.
        assert [s.status for s in shares_down] == [503, 503, 503], shares_down
        assert all(s.ms < 1000 for s in shares_down), [s.ms for s in shares_down]
        # Recovery: the first 201 after Redis listens again.
        first_ok = min(c.done for c in calls + probed_up if c.status == 201 and c.sent >= back)
        print(f"Redis restart (AOF load) took {(back - restart) * 1000:.0f} ms; first 201 "
              f"{(first_ok - back) * 1000:.0f} ms after it listened")  # fmt: skip
        assert first_ok - back < 2.0
        assert 0 not in {c.status for c in calls}, "no request may hang or lose its connection"
        assert {c.status for c in calls} <= {200, 201, 204, 429, 503}, Counter(c.status for c in calls)
        calls += probed_down + probed_up

        wait_recorded(rproc.url)
        issued = assert_acknowledged_kept(calls, rproc.url, settings.sqlalchemy_url)
        # Tokens a desk was shown are still called (or completed by that desk's next call) in Redis.
        r = sync_redis.Redis.from_url(rproc.url, decode_responses=True)
        shown = [c.body["id"] for c in calls if c.op == "call" and c.status == 200]
        assert shown
        states = [(read_token(r, tid) or {}).get("s") for tid in shown]
        assert set(states) <= {"called", "completed"}, Counter(states)
        r.close()
        # Numbering goes on above everything acknowledged, and the gateway's retry of a share succeeds.
        for counter in COUNTERS:
            top = max(t["number"] for t in issued if t["counter"] == counter)
            got = httpx.post(
                f"{svc.url}/api/facilities/{HIP}/counters/{counter}/tokens", headers=headers, json={}
            )
            assert got.status_code == 201 and got.json()["number"] > top
        again = asyncio.run(post_share(gw, svc.url))
        assert again.status == 202
    finally:
        if svc:
            svc.stop()
        rproc.cleanup()


def test_redis_without_persistence_rebuilt_from_sql(tmp_path: Path) -> None:
    rproc = RedisProc(appendonly=False).start()
    svc: ServiceProc | None = None
    try:
        settings = make_settings(tmp_path, rproc.url)
        seed(settings)
        svc = ServiceProc(settings, workers=2, env_extra=UNTHROTTLED).start()
        headers = login_headers(svc.url)

        async def burst() -> list[Call]:
            calls: list[Call] = []
            task = asyncio.create_task(load(svc.url, time.monotonic() + 60, clients=4, calls=calls))
            await until_issued(calls, 30)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return calls

        calls = asyncio.run(burst())
        assert sum(c.status == 201 for c in calls) >= 30
        wait_recorded(rproc.url)
        listing = queue_listing(svc.url, headers)
        assert any(listing[c] for c in COUNTERS)
        svc.stop()
        # Restarted without AOF or snapshot: Redis comes back empty.
        rproc.kill()
        rproc.start()
        assert sync_redis.Redis.from_url(rproc.url).dbsize() == 0
        done = subprocess.run([sys.executable, "-m", "token_service.cli", "rebuild"], env=svc.env(),
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "restored" in done.stdout
        svc.start()
        headers = login_headers(svc.url)
        assert queue_listing(svc.url, headers) == listing
        for counter in COUNTERS:
            (top,) = sql_rows(settings.sqlalchemy_url,
                              f"SELECT max(number) FROM token WHERE origin_counter = '{counter}'")[0]  # fmt: skip
            got = httpx.post(
                f"{svc.url}/api/facilities/{HIP}/counters/{counter}/tokens", headers=headers, json={}
            )
            assert got.status_code == 201 and got.json()["number"] == top + 1
    finally:
        if svc:
            svc.stop()
        rproc.cleanup()


def queue_listing(url: str, headers: dict[str, str]) -> dict[str, list[tuple[str, str]]]:
    out = {}
    for counter in COUNTERS:
        q = httpx.get(f"{url}/api/facilities/{HIP}/counters/{counter}/queue", headers=headers).json()
        out[counter] = [(t["id"], t["status"]) for t in q["waiting"] + q["called"]]
    return out

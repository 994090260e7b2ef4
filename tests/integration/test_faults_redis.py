"""Redis faults through the real service (2 workers): SIGKILL with AOF during a burst, fast 503s while it is
down, recovery within 2 s of its return; and a Redis without persistence rebuilt from SQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as sync_redis
from sqlalchemy import create_engine, text

from tests.integration.test_sandbox_server import ServerThread
from tests.support.app import HIP, PASSWORD, ServiceProc, make_settings, seed
from tests.support.servers import RedisProc
from token_service.abdm.sandbox import create_sandbox_app
from token_service.abdm.sandbox_state import SandboxState
from token_service.queue import keys

COUNTERS = ("OPD1", "OPD2", "ORTHO")
DESKS = ("D1", "D2", "D3")
V3 = "/api/v3/hip/patient/share"
CLIENTS = 8
# The burst stands for a hall full of kiosks; one credential's walk-in budget would throttle it first.
UNTHROTTLED = {"OPD_RATE_LIMIT_ISSUE_PER_MINUTE": "0"}


@dataclass
class Call:
    """One request of a load run: when it was sent and answered (monotonic s), status and body."""

    op: str
    sent: float
    done: float
    status: int
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def ms(self) -> float:
        return (self.done - self.sent) * 1000


def login_headers(url: str, username: str = "admin") -> dict[str, str]:
    r = httpx.post(url + "/api/auth/login", json={"username": username, "password": PASSWORD}, timeout=10)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def alogin(c: httpx.AsyncClient, username: str = "admin") -> dict[str, str]:
    r = await c.post("/api/auth/login", json={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def sessions(url: str, n: int) -> list[dict[str, str]]:
    """`n` signed-in staff sessions, made before a run so sign-in cost is not part of it."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as c:
        return [await alogin(c) for _ in range(n)]


async def load(url: str, until: float, clients: int = 12, call_every: int = 4, backoff_s: float = 0.2,
               creds: list[dict[str, str]] | None = None, calls: list[Call] | None = None) -> list[Call]:  # fmt: skip
    """Walk-in issues spread over the counters, with a call-next every `call_every` requests, from
    `clients` concurrent callers until monotonic time `until`. Transport errors are recorded as status 0.

    Walk-in issue is rate limited per credential (a kiosk's budget), so a caller that gets a 429 signs
    in again as a fresh session, as a fleet of kiosks would be; a 5xx makes it back off like a client.
    `calls` (appended to as answers arrive) lets a scenario watch progress."""
    calls = [] if calls is None else calls

    async def one(i: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=5) as c:
            headers = creds[i] if creds else await alogin(c)
            n = 0
            while time.monotonic() < until:
                n += 1
                if n % call_every == 0:
                    op, path = "call", f"/api/facilities/{HIP}/desks/{DESKS[(i + n) % 3]}/call-next"
                    body: dict[str, Any] | None = None
                else:
                    op, path = "issue", f"/api/facilities/{HIP}/counters/{COUNTERS[(i + n) % 3]}/tokens"
                    body = {"name": f"Patient {i}-{n}"}
                sent = time.monotonic()
                try:
                    r = await c.post(path, json=body, headers=headers)
                except httpx.HTTPError:
                    calls.append(Call(op, sent, time.monotonic(), 0))
                    await asyncio.sleep(backoff_s)
                    continue
                json_body = r.headers.get("content-type", "").startswith("application/json")
                calls.append(Call(op, sent, time.monotonic(), r.status_code, r.json() if json_body else {}))
                if r.status_code == 429:
                    fresh = await c.post("/api/auth/login", json={"username": "admin", "password": PASSWORD})
                    if fresh.status_code == 200:
                        headers = {"Authorization": f"Bearer {fresh.json()['access_token']}"}
                elif r.status_code >= 500:
                    await asyncio.sleep(backoff_s)

    await asyncio.gather(*(one(i) for i in range(clients)))
    return calls


async def until_issued(calls: list[Call], n: int, within_s: float = 20.0) -> None:
    """Until `n` tokens were acknowledged (201) among `calls`, which a running load appends to."""
    deadline = time.monotonic() + within_s
    while sum(c.status == 201 for c in calls) < n:
        assert time.monotonic() < deadline, f"only {sum(c.status == 201 for c in calls)} tokens issued"
        await asyncio.sleep(0.02)


async def probe(url: str, headers: dict[str, str], until: float, every_s: float = 0.02) -> list[Call]:
    """One caller, one request at a time: the latency a kiosk sees, without the load's own queueing."""
    calls: list[Call] = []
    async with httpx.AsyncClient(base_url=url, timeout=5, headers=headers) as c:
        while time.monotonic() < until:
            sent = time.monotonic()
            try:
                r = await c.post(f"/api/facilities/{HIP}/counters/OPD2/tokens", json={})
            except httpx.HTTPError:
                calls.append(Call("issue", sent, time.monotonic(), 0))
                await asyncio.sleep(every_s)
                continue
            calls.append(Call("issue", sent, time.monotonic(), r.status_code, r.json() if r.content else {}))
            if r.status_code == 429:
                headers = await alogin(c)
                c.headers.update(headers)
            await asyncio.sleep(every_s)
    return calls


def sql_rows(database_url: str, query: str) -> list[Any]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(query)))
    finally:
        engine.dispose()


def wait_recorded(redis_url: str, timeout: float = 20.0) -> None:
    """Until the recorder has copied every queue event to SQL."""
    r = sync_redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + timeout
        while r.xlen(keys.events_stream(HIP)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert r.xlen(keys.events_stream(HIP)) == 0
    finally:
        r.close()


def assert_acknowledged_kept(calls: list[Call], redis_url: str, sqlalchemy_url: str) -> list[dict[str, Any]]:
    """Every 201'd token is in SQL and in Redis, once, with the number it was acknowledged with."""
    issued = [c.body for c in calls if c.op == "issue" and c.status == 201]
    ids = Counter(t["id"] for t in issued)
    assert [i for i, n in ids.items() if n > 1] == [], "a token id was acknowledged twice"
    numbers = Counter((t["counter"], t["number"]) for t in issued)
    assert [k for k, n in numbers.items() if n > 1] == [], "a number was acknowledged twice"
    in_sql = {r[0]: r[1] for r in sql_rows(sqlalchemy_url, "SELECT id, number FROM token")}
    assert [t["id"] for t in issued if in_sql.get(t["id"]) != t["number"]] == []
    dupes = sql_rows(sqlalchemy_url, "SELECT origin_counter, local_date, number, count(*) FROM token "
                                     "GROUP BY origin_counter, local_date, number HAVING count(*) > 1")  # fmt: skip
    assert dupes == []
    r = sync_redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        pipe = r.pipeline(transaction=False)
        for t in issued:
            pipe.hget(keys.token_key(HIP, t["id"]), "n")
        in_redis = pipe.execute()
    finally:
        r.close()
    assert [t["id"] for t, n in zip(issued, in_redis, strict=True) if n != str(t["number"])] == []
    return issued


@pytest.fixture(scope="module")
def sandbox() -> Iterator[tuple[SandboxState, str]]:
    state = SandboxState()
    with ServerThread(create_sandbox_app(state)) as server:
        yield state, server.url


async def post_share(gw: SandboxState, url: str, counter: str = "OPD1", abha: str = "asha.devi@sbx") -> Call:
    headers, body = gw.build_share("v3", HIP, counter, abha)
    sent = time.monotonic()
    async with httpx.AsyncClient(timeout=5) as c:
        r = await c.post(url + V3, content=body, headers=headers)
    return Call("share", sent, time.monotonic(), r.status_code, r.json() if r.content else {})


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
        states = [r.hget(keys.token_key(HIP, tid), "s") for tid in shown]
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

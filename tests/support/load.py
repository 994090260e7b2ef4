"""Load against a running service over TCP: walk-in issues and call-nexts from many callers, a one-at-a-time
probe, shares posted to it, and the checks that every acknowledged token was kept in SQL and Redis."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis as sync_redis
from sqlalchemy import create_engine, text

from tests.support.app import HIP, PASSWORD
from tests.support.redis_records import read_token
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
        in_redis = [(read_token(r, t["id"]) or {}).get("n") for t in issued]
    finally:
        r.close()
    assert [t["id"] for t, n in zip(issued, in_redis, strict=True) if n != str(t["number"])] == []
    return issued


async def post_share(gw: SandboxState, url: str, counter: str = "OPD1", abha: str = "asha.devi@sbx") -> Call:
    headers, body = gw.build_share("v3", HIP, counter, abha)
    sent = time.monotonic()
    async with httpx.AsyncClient(timeout=5) as c:
        r = await c.post(url + V3, content=body, headers=headers)
    return Call("share", sent, time.monotonic(), r.status_code, r.json() if r.content else {})

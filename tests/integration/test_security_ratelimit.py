"""Rate limits against real Redis: login lockouts (user, address, doubling, reset), status reads, kiosk issue."""

from __future__ import annotations

from pathlib import Path

import httpx
import redis

from tests.support.app import HIP, PASSWORD, ServiceProc, make_settings, running_app, seed
from tests.support.servers import RedisProc
from token_service.ratelimit import LOGIN_IP, LOGIN_USER, ROOT, subject_key

LOGIN = "/api/auth/login"
ISSUE = f"/api/facilities/{HIP}/counters/OPD1/tokens"


def _pttl(redis_url: str, key: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.pttl(key))
    finally:
        client.close()


def _expire_now(redis_url: str, key: str) -> None:
    """What the passing of the lock's time does: the lock key disappears."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(key)
    finally:
        client.close()


async def test_login_lockout_per_user_doubles_and_success_resets(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    async with running_app(settings) as (_, client):
        bad = {"username": "clerk", "password": "wrong"}
        for _ in range(4):
            assert (await client.post(LOGIN, json=bad)).status_code == 401
        # A success before the fifth failure clears the count: the next four failures do not lock.
        assert (await client.post(LOGIN, json={"username": "clerk", "password": PASSWORD})).status_code == 200
        for _ in range(4):
            assert (await client.post(LOGIN, json=bad)).status_code == 401
        r = await client.post(LOGIN, json=bad)  # the fifth failure within the window locks the user
        assert r.status_code == 401
        r = await client.post(LOGIN, json={"username": "clerk", "password": PASSWORD})
        assert r.status_code == 429, r.text
        assert r.json()["error"] == "rate_limited" and r.json()["detail"]
        assert 55 <= int(r.headers["Retry-After"]) <= 60 and r.json()["retry_after"] == int(
            r.headers["Retry-After"]
        )
        assert "set-cookie" not in r.headers
        # Case and spaces do not make a new user to guess against.
        assert (await client.post(LOGIN, json={"username": " CLERK ", "password": "x"})).status_code in (
            401,
            429,
        )
        # Other users are unaffected (4 failures from this address so far in this window).
        assert (await client.post(LOGIN, json={"username": "ortho", "password": PASSWORD})).status_code == 200

        lock = subject_key(LOGIN_USER.name, "clerk") + ":lock"
        assert 55_000 <= _pttl(redis_url, lock) <= 60_000
        _expire_now(redis_url, lock)
        # Once locked, the very next failure locks again, for twice as long.
        assert (await client.post(LOGIN, json=bad)).status_code == 401
        assert 115_000 <= _pttl(redis_url, lock) <= 120_000
        r = await client.post(LOGIN, json={"username": "clerk", "password": PASSWORD})
        assert r.status_code == 429 and 115 <= int(r.headers["Retry-After"]) <= 120
        _expire_now(redis_url, lock)
        assert (await client.post(LOGIN, json={"username": "clerk", "password": PASSWORD})).status_code == 200
        # The success reset the doubling: four failures are free again.
        for _ in range(4):
            assert (await client.post(LOGIN, json=bad)).status_code == 401
        assert (await client.post(LOGIN, json={"username": "clerk", "password": PASSWORD})).status_code == 200


async def test_login_lockout_per_address_and_unknown_users(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    async with running_app(settings) as (_, client):
        # Spraying many (mostly unknown) usernames from one address: each user stays under 5, the
        # address reaches its budget and is locked for every username, known or not.
        for i in range(LOGIN_IP.threshold):
            r = await client.post(LOGIN, json={"username": f"guess{i % 10}", "password": "x"})
            assert r.status_code == 401, (i, r.text)
        r = await client.post(LOGIN, json={"username": "admin", "password": PASSWORD})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
        # Unknown users are locked exactly like real ones: the answer does not reveal which exist.
        assert (await client.post(LOGIN, json={"username": "guess1", "password": "x"})).status_code == 429
        keys = redis.Redis.from_url(redis_url).keys(f"{ROOT}:*")
        assert keys and all(b"guess" not in k and b"127.0.0.1" not in k for k in keys)  # subjects are hashed


def test_lockout_is_shared_by_all_workers(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    service = ServiceProc(settings, workers=2).start()
    try:
        statuses = []
        for _ in range(8):
            # A new connection each time, so the two workers take turns answering.
            with httpx.Client(base_url=service.url, timeout=10) as c:
                statuses.append(c.post(LOGIN, json={"username": "clerk", "password": "nope"}).status_code)
        assert statuses == [401] * 5 + [429] * 3
    finally:
        service.stop()


async def test_redis_down_login_503_status_not_500(tmp_path: Path) -> None:
    own = RedisProc().start()
    try:
        settings = make_settings(tmp_path, own.url)
        seed(settings)
        async with running_app(settings) as (_, client):
            own.kill()
            r = await client.post(LOGIN, json={"username": "clerk", "password": PASSWORD})
            assert r.status_code == 503 and r.json()["error"] == "unavailable"
            for path in ("/api/status/abcdefgh1234", "/t/abcdefgh1234"):
                r = await client.get(path)
                assert r.status_code in (404, 503), (path, r.status_code, r.text)
    finally:
        own.cleanup()


async def test_status_reads_limited_per_address(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    async with running_app(settings) as (app, client):
        # The window is one minute, so start near its beginning: preload 295 of the 300 hits.
        key = subject_key("status", "127.0.0.1") + ":n"
        redis.Redis.from_url(redis_url).set(key, 295, px=60_000)
        codes = [(await client.get("/api/status/nosuchtoken123")).status_code for _ in range(5)]
        assert codes == [404] * 5
        r = await client.get("/api/status/nosuchtoken123")
        assert r.status_code == 429 and r.json()["error"] == "rate_limited"
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert (await client.get("/t/nosuchtoken123")).status_code == 429
        # Another address has its own budget.
        other = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("10.1.2.3", 5000)), base_url="http://testserver"
        )
        async with other:
            assert (await other.get("/api/status/nosuchtoken123")).status_code == 404


async def test_kiosk_issue_limited_per_device(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    s = seed(settings, devices=(("kiosk1", "kiosk"), ("kiosk2", "kiosk"), ("printer1", "printer")))
    async with running_app(settings) as (_, client):
        k1 = {"Authorization": f"Bearer {s.devices['kiosk1']}"}
        k2 = {"Authorization": f"Bearer {s.devices['kiosk2']}"}
        codes = [(await client.post(ISSUE, headers=k1)).status_code for _ in range(30)]
        assert codes == [201] * 30
        r = await client.post(ISSUE, headers=k1)
        assert (
            r.status_code == 429
            and r.json()["error"] == "rate_limited"
            and int(r.headers["Retry-After"]) >= 1
        )
        assert (await client.post(ISSUE, headers=k2)).status_code == 201  # another kiosk is unaffected
        r = await client.post(LOGIN, json={"username": "clerk", "password": PASSWORD})
        clerk = {"Authorization": f"Bearer {r.json()['access_token']}"}
        assert (await client.post(ISSUE, headers=clerk)).status_code == 201  # staff are not limited here
        r = await client.get(f"/api/facilities/{HIP}/counters/OPD1/queue", headers=clerk)
        assert len(r.json()["waiting"]) == 32  # the refused request issued nothing

"""Logout ends the session on the server: a copied token is refused afterwards, by every worker, and a
password reset or deactivation ends every session of that user. Real Redis and SQLite."""

from __future__ import annotations

from pathlib import Path

import httpx
import redis

from tests.support.app import HIP, PASSWORD, make_settings, running_app, seed
from token_service.queue import keys

LOGIN = "/api/auth/login"
ME = "/api/auth/me"
USERS = f"/api/admin/facilities/{HIP}/users"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login_token(client: httpx.AsyncClient, username: str, password: str = PASSWORD) -> str:
    r = await client.post(LOGIN, json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


async def test_api_logout_refuses_a_copied_token(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    async with running_app(settings) as (_, client):
        copied = await login_token(client, "clerk")
        other = await login_token(client, "clerk")  # the same user at another desk
        client.cookies.clear()
        assert (await client.get(ME, headers=bearer(copied))).status_code == 200
        r = await client.post("/api/auth/logout", headers=bearer(copied))
        assert r.status_code == 204
        r = await client.get(ME, headers=bearer(copied))
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        issue = f"/api/facilities/{HIP}/counters/OPD1/tokens"
        assert (await client.post(issue, json={}, headers=bearer(copied))).status_code == 401
        # Only that session ended: the user's other login still works.
        assert (await client.get(ME, headers=bearer(other))).status_code == 200
        # Logging out again, or with garbage, is harmless.
        assert (await client.post("/api/auth/logout", headers=bearer(copied))).status_code == 204
        assert (await client.post("/api/auth/logout", headers=bearer("not-a-token"))).status_code == 204


async def test_cookie_logout_api_and_page(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    async with running_app(settings) as (_, client):
        # API logout with the cookie (a cookie-authenticated write carries the CSRF header).
        csrf = (await client.get("/login")).cookies["opd_csrf"]
        copied = await login_token(client, "clerk")
        assert client.cookies.get("opd_session") == copied
        r = await client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 204 and "opd_session" not in client.cookies
        client.cookies.set("opd_session", copied)
        assert (await client.get(ME)).status_code == 401
        r = await client.get("/console")
        assert r.status_code in (302, 303, 307) and r.headers["location"].startswith("/login")

        # The pages' logout form: afterwards the copied cookie only leads to the login page.
        client.cookies.clear()
        csrf = (await client.get("/login")).cookies["opd_csrf"]
        r = await client.post("/login", data={"username": "clerk", "password": PASSWORD, "csrf_token": csrf})
        assert r.status_code == 303
        copied = r.cookies["opd_session"]
        assert (await client.get("/console")).status_code == 200
        r = await client.post("/logout", data={"csrf_token": csrf})
        assert r.status_code == 303
        client.cookies.set("opd_session", copied)
        r = await client.get("/console")
        assert r.status_code in (302, 303, 307) and r.headers["location"].startswith("/login")
        assert (await client.get(ME)).status_code == 401


async def test_logout_reaches_every_worker_and_survives_a_restart(tmp_path: Path, redis_url: str) -> None:
    """Two app instances on one Redis stand for two workers (or hosts); each keeps its own caches."""
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    async with running_app(settings) as (_, a), running_app(settings) as (_, b):
        token = await login_token(a, "clerk")
        kept = await login_token(a, "ortho")
        a.cookies.clear()  # logout ends the sessions it is called with: the Bearer and the cookie
        assert (await b.get(ME, headers=bearer(token))).status_code == 200  # b has it cached now
        assert (await a.post("/api/auth/logout", headers=bearer(token))).status_code == 204
        assert (await b.get(ME, headers=bearer(token))).status_code == 401
    # A restart of the service forgets nothing: live sessions stay live, ended ones stay ended.
    async with running_app(settings) as (_, c):
        assert (await c.get(ME, headers=bearer(kept))).status_code == 200
        assert (await c.get(ME, headers=bearer(token))).status_code == 401
    # One key per user, expiring with the user's last session.
    r = redis.Redis.from_url(redis_url)
    try:
        ttls = [r.ttl(k) for k in r.scan_iter(match="opd:{user:*}:sessions")]
        assert ttls and all(0 < t <= settings.session_ttl_seconds for t in ttls)
    finally:
        r.close()


async def test_password_reset_and_deactivation_end_every_session(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    async with running_app(settings) as (_, client), running_app(settings) as (_, other_worker):
        admin = bearer(await login_token(client, "admin"))
        desk1, desk2 = await login_token(client, "clerk"), await login_token(client, "clerk")
        ortho = await login_token(client, "ortho")
        client.cookies.clear()
        for t in (desk1, desk2):
            assert (await other_worker.get(ME, headers=bearer(t))).status_code == 200
        # A password reset logs the user out everywhere; the new password gives a working session.
        r = await client.post(
            f"{USERS}/clerk/password", json={"password": "a-brand-new-pass-7"}, headers=admin
        )
        assert r.status_code == 200, r.text
        for t in (desk1, desk2):
            assert (await other_worker.get(ME, headers=bearer(t))).status_code == 401
            assert (await client.get(ME, headers=bearer(t))).status_code == 401
        fresh = await login_token(client, "clerk", "a-brand-new-pass-7")
        assert (await other_worker.get(ME, headers=bearer(fresh))).status_code == 200
        # Deactivation ends them too, and reactivating does not bring the old ones back.
        assert (await other_worker.get(ME, headers=bearer(ortho))).status_code == 200
        r = await client.patch(f"{USERS}/ortho", json={"active": False}, headers=admin)
        assert r.status_code == 200, r.text
        assert (await other_worker.get(ME, headers=bearer(ortho))).status_code == 401
        assert (await client.patch(f"{USERS}/ortho", json={"active": True}, headers=admin)).status_code == 200
        assert (await other_worker.get(ME, headers=bearer(ortho))).status_code == 401
        assert (await client.get(ME, headers=bearer(await login_token(client, "ortho")))).status_code == 200
        # Other users were not touched.
        assert (await other_worker.get(ME, headers=admin)).status_code == 200
        assert (await other_worker.get(ME, headers=bearer(fresh))).status_code == 200


async def test_session_unknown_to_redis_is_refused(tmp_path: Path, redis_url: str) -> None:
    """A validly signed token that was never registered (or whose Redis entry is gone) is not a session."""
    from token_service.auth import issue_session

    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    async with running_app(settings) as (_, client):
        token = await login_token(client, "clerk")
        client.cookies.clear()
        minted = issue_session(settings.secret_key, 2, "clerk", 3600)
        assert (await client.get(ME, headers=bearer(minted))).status_code == 401
        r = redis.Redis.from_url(redis_url)
        try:
            assert r.delete(keys.sessions_key(2)) == 1  # clerk's sessions, as a Redis without its data
        finally:
            r.close()
        assert (await client.get(ME, headers=bearer(token))).status_code == 401

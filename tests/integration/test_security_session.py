"""Sessions, CSRF, stored secrets and the audit trail, through the real ASGI stack with Redis and SQLite."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlmodel import Session

from tests.support.app import HIP, PASSWORD, login, make_settings, running_app, seed
from token_service.models import AuditLog, Device, User
from token_service.records.db import sync_engine

ISSUE = f"/api/facilities/{HIP}/counters/OPD1/tokens"


async def test_login_replaces_any_presented_session(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    async with running_app(settings) as (_, client):
        # An attacker's own valid session planted in the victim's browser (login CSRF / fixation) ...
        planted = (
            await client.post("/api/auth/login", json={"username": "ortho", "password": PASSWORD})
        ).json()
        client.cookies.clear()
        client.cookies.set("opd_session", planted["access_token"])
        r = await client.post("/api/auth/login", json={"username": "clerk", "password": PASSWORD})
        assert r.status_code == 200
        fresh = r.cookies["opd_session"]
        assert fresh == r.json()["access_token"] and fresh != planted["access_token"]
        # ... is replaced by the login: the browser now acts as the user who typed the password.
        me = (await client.get("/api/auth/me")).json()
        assert me["name"] == "clerk"
        # A value the attacker made up is never a session, before or after a login.
        client.cookies.clear()
        client.cookies.set("opd_session", "attacker-chosen-session-id")
        assert (await client.get("/api/auth/me")).status_code == 401
        r = await client.post("/api/auth/login", json={"username": "clerk", "password": PASSWORD})
        assert r.cookies["opd_session"] != "attacker-chosen-session-id"
        assert (await client.get("/api/auth/me")).json()["name"] == "clerk"
        # Sessions are signed for this service: a token signed with another key is refused.
        import jwt

        forged = jwt.encode(
            {"sub": "1", "typ": "session", "exp": 4_102_444_800},
            "a-guessed-key-of-the-right-length-0123456789",
            algorithm="HS256",
        )
        assert (
            await client.get("/api/auth/me", headers={"Authorization": f"Bearer {forged}"})
        ).status_code == 401
        claims = forged.split(".")[1]
        unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{claims}."  # "alg: none" must not pass either
        assert (
            await client.get("/api/auth/me", headers={"Authorization": f"Bearer {unsigned}"})
        ).status_code == 401


async def test_csrf_on_cookie_writes_bearer_exempt(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    async with running_app(settings) as (_, client):
        page = await client.get("/login")
        csrf = page.cookies["opd_csrf"]
        assert len(csrf) >= 20
        # The login form itself is guarded: a cross-site form post lacks the page's token.
        r = await client.post("/login", data={"username": "clerk", "password": PASSWORD})
        assert r.status_code == 403 and "opd_session" not in r.cookies
        r = await client.post("/login", data={"username": "clerk", "password": PASSWORD, "csrf_token": csrf})
        assert r.status_code == 303 and r.cookies.get("opd_session")
        session = r.cookies["opd_session"]

        # Cross-site API write riding on the session cookie: no X-CSRF-Token header -> 403, nothing issued.
        cross_site = {"Origin": "https://evil.example", "Content-Type": "application/json"}
        r = await client.post(ISSUE, content=b"{}", headers=cross_site)
        assert r.status_code == 403 and r.json()["error"] == "csrf_failed"
        r = await client.post(ISSUE, json={}, headers={"X-CSRF-Token": "guessed-value-guessed-value"})
        assert r.status_code == 403
        # Same page, right token: accepted.
        r = await client.post(ISSUE, json={}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 201, r.text
        # A Bearer caller is not a browser riding on ambient credentials: no CSRF token needed.
        client.cookies.clear()
        r = await client.post(ISSUE, json={}, headers={"Authorization": f"Bearer {session}"})
        assert r.status_code == 201
        h = await login(client, "clerk")
        queue = (await client.get(f"/api/facilities/{HIP}/counters/OPD1/queue", headers=h)).json()
        assert [t["number"] for t in queue["waiting"]] == [1, 2]  # the refused writes changed nothing
        # The console's own form post (logout) without the token does not log out.
        client.cookies.set("opd_session", session)
        r = await client.post("/logout", data={})
        assert "opd_session" not in r.headers.get("set-cookie", "")


async def test_csrf_not_skipped_by_a_non_bearer_authorization_header(tmp_path: Path, redis_url: str) -> None:
    """Browsers attach cached HTTP Basic credentials (e.g. of a proxy) to cross-site posts by themselves."""
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    async with running_app(settings) as (_, client):
        await client.get("/login")
        await login(client, "clerk")  # leaves the session cookie in the jar
        r = await client.post(ISSUE, json={}, headers={"Authorization": "Basic cHJveHk6cHJveHk="})
        assert r.status_code in (401, 403), r.text


def _b64(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _database_bytes(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in data_dir.glob("opd.sqlite3*"))


async def test_secrets_are_stored_hashed(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    s = seed(settings)
    async with running_app(settings) as (_, client):
        h = await login(client, "admin")
        r = await client.post(
            f"/api/admin/facilities/{HIP}/devices", json={"name": "board9", "kind": "board"}, headers=h
        )
        assert r.status_code == 201
        new_token = r.json()["token"]
        assert (
            await client.get("/api/auth/me", headers={"Authorization": f"Bearer {new_token}"})
        ).status_code == 200
        r = await client.post(f"/api/admin/facilities/{HIP}/users", headers=h,
                              json={"username": "nurse", "role": "clerk", "password": "a-long-passphrase-42"})  # fmt: skip
        assert r.status_code == 201, r.text
    engine = sync_engine(settings)
    with Session(engine) as db:
        users = db.exec(select(User)).scalars().all()  # type: ignore[call-overload]
        assert {u.username for u in users} >= {"admin", "clerk", "nurse"}
        assert all(u.password_hash.startswith("$argon2id$") for u in users)
        devices = db.exec(select(Device)).scalars().all()  # type: ignore[call-overload]
        tokens = {**s.devices, "board9": new_token}
        for d in devices:
            assert d.token_hash == hashlib.sha256(tokens[d.name].encode()).hexdigest()
    engine.dispose()
    # No plaintext secret anywhere in the database file (WAL included), whatever table it might hide in.
    raw = _database_bytes(tmp_path)
    for secret in (*tokens.values(), PASSWORD, "a-long-passphrase-42"):
        assert secret.encode() not in raw


async def test_audit_is_append_only_and_names_the_actor(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    async with running_app(settings) as (_, client):
        paths = (await client.get("/openapi.json")).json()["paths"]
        audit_ops = {p: set(ops) for p, ops in paths.items() if "audit" in p}
        assert audit_ops and all(ops == {"get"} for ops in audit_ops.values()), audit_ops
        admin = await login(client, "admin")
        clerk = await login(client, "clerk")
        client.cookies.clear()
        for _ in range(3):
            assert (await client.post(ISSUE, json={}, headers=clerk)).status_code == 201
        called = []
        for _ in range(3):
            r = await client.post(
                f"/api/facilities/{HIP}/counters/OPD1/call-next", json={"desk": "D1"}, headers=clerk
            )
            called.append(r.json()["id"])  # each call-next completes the previous patient first
        r = await client.post(f"/api/tokens/{called[-1]}/skip", json={"places": 1}, headers=clerk)
        assert r.status_code == 200
        r = await client.post(
            f"/api/facilities/{HIP}/counters/OPD1/call-next", json={"desk": "D1"}, headers=admin
        )
        assert (await client.post(f"/api/tokens/{r.json()['id']}/complete", headers=admin)).status_code == 200
        audit = f"/api/admin/facilities/{HIP}/audit"
        for method in ("PUT", "PATCH", "DELETE", "POST"):
            r = await client.request(method, audit, json={"actor": "someone-else"}, headers=admin)
            assert r.status_code == 405, (method, r.status_code)
            r = await client.request(method, audit + "/1", json={}, headers=admin)
            assert r.status_code in (404, 405), (method, r.status_code)
        items = (await client.get(audit, headers=admin)).json()["items"]
    engine = sync_engine(settings)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT actor, action, target FROM audit_log ORDER BY id")).all()
    engine.dispose()
    actions = [(r.actor, r.action) for r in rows]
    assert actions.count(("clerk", "issue")) == 3 and actions.count(("clerk", "call_next")) == 3
    assert (
        ("clerk", "skip") in actions
        and ("admin", "call_next") in actions
        and ("admin", "complete") in actions
    )
    assert {r.target for r in rows if r.action == "skip"} == {called[-1]}
    assert len(items) == len(rows) and AuditLog.__tablename__ == "audit_log"


async def test_every_login_issues_a_distinct_token(tmp_path: Path, redis_url: str) -> None:
    from token_service.auth import issue_session

    tokens = {issue_session("k" * 40, 1, "clerk", 3600) for _ in range(3)}
    assert len(tokens) == 3


async def test_form_and_api_logins_share_one_lockout(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    async with running_app(settings) as (_, client):
        csrf = (await client.get("/login")).cookies["opd_csrf"]
        for _ in range(5):
            r = await client.post(
                "/login", data={"username": "clerk", "password": "wrong", "csrf_token": csrf}
            )
            assert r.status_code == 401
        r = await client.post("/api/auth/login", json={"username": "clerk", "password": PASSWORD})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0


async def test_locked_login_form_renders_a_page_with_retry_after(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    async with running_app(settings) as (_, client):
        csrf = (await client.get("/login")).cookies["opd_csrf"]
        for _ in range(5):
            await client.post("/login", data={"username": "clerk", "password": "wrong", "csrf_token": csrf})
        r = await client.post("/login", data={"username": "clerk", "password": PASSWORD, "csrf_token": csrf})
        assert r.status_code == 429 and r.headers["content-type"].startswith("text/html")
        assert int(r.headers["Retry-After"]) > 0 and "opd_session" not in r.cookies

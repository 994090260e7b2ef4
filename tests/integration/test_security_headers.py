"""Security headers on every kind of response: JSON API, errors, pages, static files, docs, 429s."""

from __future__ import annotations

from pathlib import Path

import httpx
import redis

from tests.support.app import HIP, login, make_settings, running_app, seed
from token_service.ratelimit import subject_key
from token_service.security import JSON_CSP

BASELINE = {"x-content-type-options": "nosniff", "x-frame-options": "DENY", "referrer-policy": "same-origin"}


def _baseline(r: httpx.Response) -> None:
    for name, value in BASELINE.items():
        assert r.headers.get(name) == value, (r.request.url, name, dict(r.headers))


async def test_headers_on_api_pages_static_and_errors(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    async with running_app(settings) as (_, client):
        h = await login(client, "admin")
        client.cookies.clear()

        r = await client.post("/api/auth/login", json={"username": "admin", "password": "wrong"})
        assert r.status_code == 401
        _baseline(r)
        assert r.headers["cache-control"] == "no-store"  # login answers may carry a session token

        for path in (
            "/api/auth/me",
            f"/api/facilities/{HIP}/counters/OPD1/queue",
            f"/api/admin/facilities/{HIP}/audit",
        ):
            r = await client.get(path, headers=h)
            assert r.status_code == 200, (path, r.text)
            _baseline(r)
            assert r.headers["cache-control"] == "no-store", path
            assert r.headers["content-security-policy"] == JSON_CSP

        r = await client.post(f"/api/facilities/{HIP}/counters/OPD1/tokens", json={"name": "Sita"}, headers=h)
        assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
        _baseline(r)

        r = await client.get(f"/api/facilities/{HIP}/board")  # public JSON: baseline, CSP, cacheable
        assert r.status_code == 200 and r.headers["content-security-policy"] == JSON_CSP
        _baseline(r)

        for path, status in (
            ("/api/auth/me", 401),
            ("/api/nothing-here", 404),
            (f"/api/tokens/{HIP}.OPD1.20261122.00001", 401),
        ):
            r = await client.get(path)
            assert r.status_code == status, path
            _baseline(r)
            assert r.headers["content-security-policy"] == JSON_CSP

        # Pages keep their own stricter policy (set by kiosk_ui) and are never cached.
        for path in ("/login", f"/board/{HIP}", f"/kiosk/{HIP}", "/t/nosuchtoken123"):
            r = await client.get(path)
            _baseline(r)
            csp = r.headers["content-security-policy"]
            assert (
                "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
            )
            assert "unsafe-inline" not in csp and r.headers["cache-control"] == "no-store"

        r = await client.get("/static/css/app.css")
        assert r.status_code == 200
        _baseline(r)

        r = await client.get("/docs")  # Swagger UI: framing forbidden, but its own page policy left alone
        assert r.status_code == 200 and "content-security-policy" not in r.headers
        _baseline(r)
        r = await client.get("/openapi.json")
        _baseline(r)

        redis.Redis.from_url(redis_url).set(subject_key("status", "127.0.0.1") + ":n", 10_000, px=60_000)
        r = await client.get("/api/status/nosuchtoken123")
        assert r.status_code == 429
        _baseline(r)

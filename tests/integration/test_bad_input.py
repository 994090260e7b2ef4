"""Bad input on every staff endpoint: a 4xx with {"error", "detail"}, never a 500, and no state change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis as sync_redis
from sqlalchemy import text

from tests.support.app import login, make_settings, running_app, seed
from token_service.queue import keys
from token_service.records.db import sync_engine

HIP = "IN0710000123"
TID = f"{HIP}.OPD1.20261122.00001"


def redis_state(url: str) -> dict[str, Any]:
    r = sync_redis.Redis.from_url(url, decode_responses=True)
    out: dict[str, Any] = {}
    for key in r.scan_iter("*"):
        if key.startswith("opd:rl:"):
            continue  # rate-limit counters count bad attempts too: that is their purpose
        kind = r.type(key)
        if kind == "hash":
            out[key] = r.hgetall(key)
        elif kind == "zset":
            out[key] = r.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            out[key] = r.lrange(key, 0, -1)
        elif kind == "string":
            out[key] = r.get(key)
        elif kind == "stream":
            out[key] = r.xlen(key)
    return out


def sql_state(settings: Any) -> tuple[int, ...]:
    with sync_engine(settings).connect() as conn:
        return tuple(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                     for t in ("token", "token_event", "audit_log", "facility", "counter", "desk"))  # fmt: skip


def cases(token_id: str) -> list[tuple[str, str, Any, set[int]]]:
    """(method, path, body, allowed statuses). body: bytes = raw, dict/list = JSON, None = nothing."""
    base = f"/api/facilities/{HIP}"
    garbage: list[Any] = [b"{not json", b"\xff\xfe\x00", [1, 2], "a string", {"unknown": 1}, b"null" * 5000]
    out: list[tuple[str, str, Any, set[int]]] = []
    for body in garbage:
        out += [
            ("POST", "/api/auth/login", body, {400, 413, 422}),
            ("POST", f"{base}/counters/OPD1/tokens", body, {400, 413, 422}),
            ("POST", f"{base}/counters/OPD1/call-next", body, {400, 413, 422}),
            ("POST", f"/api/tokens/{token_id}/skip", body, {400, 413, 422}),
            ("POST", f"/api/tokens/{token_id}/transfer", body, {400, 413, 422}),
            ("POST", f"/api/tokens/{token_id}/recall", body, {400, 413, 422}),
        ]
    out += [
        ("POST", "/api/auth/login", {"username": "", "password": "x"}, {422}),
        ("POST", "/api/auth/login", {"username": "clerk", "password": "wrong-password"}, {401}),
        ("POST", f"{base}/counters/OPD1/tokens", {"priority": "vip"}, {422}),
        ("POST", f"{base}/counters/OPD1/tokens", {"name": "x" * 500}, {422}),
        ("POST", f"{base}/counters/OPD1/tokens", {"abha_qr": "{not a card"}, {422}),
        ("POST", f"{base}/counters/NOPE/tokens", {}, {404}),
        ("POST", "/api/facilities/IN999/counters/OPD1/tokens", {}, {404}),
        ("POST", f"{base}/counters/bad%20code/tokens", {}, {404, 422}),
        ("POST", f"{base}/counters/OPD1/call-next", {"desk": "ZZ9"}, {404}),
        ("POST", f"{base}/counters/OPD1/call-next", {"desk": "../x"}, {422}),
        ("POST", f"{base}/desks/NOPE/call-next", None, {404}),
        ("POST", f"{base}/desks/D3/call-next", None, {403}),  # clerk is not assigned to ORTHO
        ("POST", f"{base}/desks/D1/undo", None, {409}),  # nothing to undo
        ("GET", f"{base}/counters/ORTHO/queue", None, {403}),
        ("GET", f"{base}/counters/NOPE/queue", None, {404}),
        ("GET", "/api/tokens/not-a-token", None, {404}),
        ("GET", f"/api/tokens/{HIP}.OPD1.20990101.00009", None, {404}),
        ("POST", f"/api/tokens/{token_id}/complete", None, {409}),  # still waiting
        ("POST", f"/api/tokens/{token_id}/recall", None, {409}),
        ("POST", f"/api/tokens/{token_id}/skip", {"places": 0}, {422}),
        ("POST", f"/api/tokens/{token_id}/skip", {"places": "three"}, {422}),
        ("POST", f"/api/tokens/{token_id}/transfer", {"counter": "NOPE"}, {404}),
        ("POST", f"/api/tokens/{token_id}/transfer", {"counter": "OPD1"}, {409}),
        ("POST", f"/api/tokens/{token_id}/transfer", {}, {422}),
        ("DELETE", f"/api/tokens/{token_id}", None, {405}),
        ("GET", "/api/no-such-endpoint", None, {404}),
    ]
    return out


async def test_bad_input_never_changes_state(tmp_path: Path, redis_url: str, database_url: str) -> None:
    settings = make_settings(tmp_path, redis_url, database_url)
    seed(settings)
    async with running_app(settings) as (_, client):
        h = await login(client, "clerk")
        r = await client.post(f"/api/facilities/{HIP}/counters/OPD1/tokens", headers=h)
        token_id = r.json()["id"]
        import asyncio

        stream = sync_redis.Redis.from_url(redis_url)
        for _ in range(100):  # until the recorder has written the issue event
            if not stream.xlen(keys.events_stream(HIP)):
                break
            await asyncio.sleep(0.1)
        stream.close()
        before_redis, before_sql = redis_state(redis_url), sql_state(settings)
        for method, path, body, allowed in cases(token_id):
            kwargs: dict[str, Any] = {"headers": {**h, "content-type": "application/json"}}
            if isinstance(body, bytes):
                kwargs["content"] = body
            elif body is not None:
                kwargs["json"] = body
            resp = await client.request(method, path, **kwargs)
            assert resp.status_code in allowed, (method, path, body if not isinstance(body, bytes) else body[:20],
                                                 resp.status_code, resp.text[:300])  # fmt: skip
            payload = resp.json()
            assert set(payload) >= {"error", "detail"} and isinstance(payload["error"], str), payload
        # Without credentials every staff endpoint is 401.
        client.cookies.clear()
        for method, path, _, _ in cases(token_id)[:6]:
            if path == "/api/auth/login":
                continue
            resp = await client.request(method, path, json={})
            assert resp.status_code == 401 and resp.json()["error"] == "unauthorized"
        await asyncio.sleep(0.2)
        assert redis_state(redis_url) == before_redis
        assert sql_state(settings) == before_sql


async def test_oversized_body_is_413(tmp_path: Path, redis_url: str, database_url: str) -> None:
    settings = make_settings(tmp_path, redis_url, database_url)
    seed(settings)
    async with running_app(settings) as (_, client):
        h = await login(client, "clerk")
        big = b'{"name": "' + b"x" * (settings.max_body_bytes + 10) + b'"}'
        r = await client.post(f"/api/facilities/{HIP}/counters/OPD1/tokens", content=big,
                              headers={**h, "content-type": "application/json"})  # fmt: skip
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"

"""Behind a reverse proxy: the client address comes from X-Forwarded-For only when the peer is a proxy
listed in OPD_FORWARDED_ALLOW_IPS, so per-address limits (status page, login lockouts) see each client.

The in-process transport's peer is 127.0.0.1 (the proxy on the same host)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.app import PASSWORD, make_settings, running_app, seed
from token_service.ratelimit import LOGIN_IP

STATUS = "/t/not-a-real-public-id"  # the limit counts reads before the page looks anything up


def fwd(addr: str, proto: str | None = None) -> dict[str, str]:
    headers = {"X-Forwarded-For": addr}
    if proto:
        headers["X-Forwarded-Proto"] = proto
    return headers


async def statuses(client: httpx.AsyncClient, n: int, headers: dict[str, str]) -> list[int]:
    return [(await client.get(STATUS, headers=headers)).status_code for _ in range(n)]


async def test_trusted_proxy_gives_each_client_its_own_budget(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(
        tmp_path, redis_url, rate_limit_status_per_minute=3, forwarded_allow_ips="10.0.0.0/8, 127.0.0.1"
    )
    seed(settings)
    async with running_app(settings) as (_, client):
        assert 429 not in await statuses(client, 3, fwd("203.0.113.7"))
        assert (await client.get(STATUS, headers=fwd("203.0.113.7"))).status_code == 429
        # Another patient behind the same proxy is not held back by the first one's budget ...
        assert 429 not in await statuses(client, 3, fwd("203.0.113.8"))
        # ... and a chain of proxies is unwound to the first address no trusted proxy vouches for.
        assert (await client.get(STATUS, headers=fwd("203.0.113.8, 10.1.2.3"))).status_code == 429
        assert 429 not in await statuses(client, 3, fwd("198.51.100.1, 10.1.2.3"))
        # A client cannot pick a fresh address by prepending one: the proxy appends the real peer.
        spoofed = await statuses(client, 2, fwd("192.0.2.55, 203.0.113.7"))
        assert spoofed == [429, 429]


@pytest.mark.parametrize("trusted", ["", "10.9.9.9"], ids=["nobody-trusted", "another-proxy-trusted"])
async def test_untrusted_peer_cannot_choose_its_address(tmp_path: Path, redis_url: str, trusted: str) -> None:
    settings = make_settings(tmp_path, redis_url, rate_limit_status_per_minute=3, forwarded_allow_ips=trusted)
    seed(settings)
    async with running_app(settings) as (_, client):
        got = [(await client.get(STATUS, headers=fwd(f"203.0.113.{i}"))).status_code for i in range(5)]
        # Every request counts against the peer's own address, whatever it claims to forward for.
        assert 429 not in got[:3] and got[3:] == [429, 429], got


async def test_login_lockout_per_forwarded_address(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url, forwarded_allow_ips="127.0.0.1")
    seed(settings)
    async with running_app(settings) as (_, client):
        attacker = fwd("203.0.113.66")
        for i in range(LOGIN_IP.threshold):  # many usernames, so no per-user lock comes first
            r = await client.post(
                "/api/auth/login", json={"username": f"guess{i}", "password": "x"}, headers=attacker
            )
            assert r.status_code == 401
        r = await client.post(
            "/api/auth/login", json={"username": "clerk", "password": PASSWORD}, headers=attacker
        )
        assert r.status_code == 429
        # The clerk at the desk behind the same proxy is a different address: not locked out.
        r = await client.post(
            "/api/auth/login", json={"username": "clerk", "password": PASSWORD}, headers=fwd("192.0.2.10")
        )
        assert r.status_code == 200, r.text

"""Outbound gateway client over httpx.MockTransport: exact on-share JSON, session caching, 401 retry."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from token_service.abdm.gateway import (
    GatewayClient,
    GatewayError,
    build_on_share_v1,
    build_on_share_v3,
    describe_gateway_error,
    gateway_timestamp,
)
from token_service.abdm.schemas import PatientProfile, ShareRequest

BASE = "https://gateway.test"
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

PROFILE = PatientProfile(
    abha_number=None,
    abha_address="ramesh.k1979@abdm",
    name="Ramesh Kumar",
    gender="M",
    year_of_birth=1979,
    month_of_birth=8,
    day_of_birth=14,
    phone="9876543210",
)
SHARE_V3 = ShareRequest(
    version="v3",
    request_id="5f7a535d-a3fd-416b-b069-c97d021fbacd",
    timestamp=None,
    hip_id="IN0710000123",
    counter_code="OPD1",
    intent="PROFILE_SHARE",
    profile=PROFILE,
)
SHARE_V1 = replace(SHARE_V3, version="v1", request_id="0f2f8b2e-8c5e-4a55-9d6f-3a2b1c0d9e8f", hip_id=None)


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


Responder = Callable[[httpx.Request], httpx.Response]


class FakeGateway:
    """Records every request; on-share answers come from a script (default 202)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.sessions_issued = 0
        self.expires_in = 600
        self.session_status = 200
        self.session_answer: dict[str, Any] | None = None  # instead of a good one
        self.on_share_script: list[int | Responder] = []

    def calls(self, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path == path]

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/api/hiecm/gateway/v3/sessions":
            if self.session_status != 200:
                return httpx.Response(
                    self.session_status,
                    json={"error": "unauthorized_client", "error_description": "bad secret"},
                )
            self.sessions_issued += 1
            if self.session_answer is not None:
                return httpx.Response(200, json=self.session_answer)
            return httpx.Response(
                200,
                json={
                    "accessToken": f"session-{self.sessions_issued}",
                    "expiresIn": self.expires_in,
                    "refreshExpiresIn": 1800,
                    "refreshToken": "r",
                    "tokenType": "bearer",
                },
            )
        step = self.on_share_script.pop(0) if self.on_share_script else 202
        if callable(step):
            return step(request)
        if step == 401:
            return httpx.Response(401, json={"fault": {"code": 900901, "message": "Invalid Credentials"}})
        return httpx.Response(step, json={"error": {"code": "ABDM-X", "message": f"status {step}"}})


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def client(gateway: FakeGateway, clock: FakeClock) -> AsyncIterator[GatewayClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(gateway.handler)) as http:
        yield GatewayClient(BASE, "HIP_CLIENT", "s3cret", "sbx", http, clock)


def _json(request: httpx.Request) -> Any:
    return json.loads(request.content)


def test_build_on_share_v3_success_exact() -> None:
    assert build_on_share_v3(SHARE_V3, "17", 1800) == {
        "acknowledgement": {
            "status": "SUCCESS",
            "abhaAddress": "ramesh.k1979@abdm",
            "profile": {"context": "OPD1", "tokenNumber": "17", "expiry": "1800"},
        },
        "response": {"requestId": "5f7a535d-a3fd-416b-b069-c97d021fbacd"},
    }


def test_build_on_share_v3_error_alone() -> None:
    body = build_on_share_v3(SHARE_V3, None, 1800, ("ABDM-9999", "Counter OPD9 is not configured"))
    assert body == {
        "error": {"code": "ABDM-9999", "message": "Counter OPD9 is not configured"},
        "response": {"requestId": "5f7a535d-a3fd-416b-b069-c97d021fbacd"},
    }


def test_build_on_share_v1_exact() -> None:
    ok = build_on_share_v1(SHARE_V1, "3", 1800, request_id="out-1", timestamp="2024-05-01T10:00:00.000Z")
    assert ok == {
        "requestId": "out-1",
        "timestamp": "2024-05-01T10:00:00.000Z",
        "acknowledgement": {"status": "SUCCESS", "healthId": "ramesh.k1979@abdm", "tokenNumber": "3"},
        "resp": {"requestId": "0f2f8b2e-8c5e-4a55-9d6f-3a2b1c0d9e8f"},
    }
    failed = build_on_share_v1(
        SHARE_V1, None, 1800, ("ABDM-9999", "no"), request_id="out-2", timestamp="2024-05-01T10:00:00.000Z"
    )
    assert failed == {
        "requestId": "out-2",
        "timestamp": "2024-05-01T10:00:00.000Z",
        "error": {"code": "ABDM-9999", "message": "no"},
        "resp": {"requestId": "0f2f8b2e-8c5e-4a55-9d6f-3a2b1c0d9e8f"},
    }


@pytest.mark.parametrize(("token", "error"), [("1", ("A", "b")), (None, None)])
def test_exactly_one_of_token_and_error(token: str | None, error: tuple[str, str] | None) -> None:
    with pytest.raises(ValueError):
        build_on_share_v3(SHARE_V3, token, 1800, error)


def test_gateway_timestamp_format() -> None:
    assert gateway_timestamp(datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)) == "2024-05-01T10:00:00.123Z"
    assert TIMESTAMP_RE.match(gateway_timestamp())


async def test_on_share_v3_request(client: GatewayClient, gateway: FakeGateway) -> None:
    result = await client.on_share(SHARE_V3, "17", 1800, None)
    assert result.ok and result.status == 202 and not result.retryable and result.error is None
    (session,) = gateway.calls("/api/hiecm/gateway/v3/sessions")
    assert _json(session) == {
        "clientId": "HIP_CLIENT",
        "clientSecret": "s3cret",
        "grantType": "client_credentials",
    }
    assert session.headers["X-CM-ID"] == "sbx"
    assert uuid.UUID(session.headers["REQUEST-ID"])
    assert TIMESTAMP_RE.match(session.headers["TIMESTAMP"])
    (call,) = gateway.calls("/api/hiecm/patient-share/v3/on-share")
    assert str(call.url) == f"{BASE}/api/hiecm/patient-share/v3/on-share"
    assert call.headers["Authorization"] == "Bearer session-1"
    assert call.headers["X-CM-ID"] == "sbx"
    assert call.headers["REQUEST-ID"] == result.outbound_request_id != SHARE_V3.request_id
    assert call.headers["REQUEST-ID"] != session.headers["REQUEST-ID"]
    assert TIMESTAMP_RE.match(call.headers["TIMESTAMP"])
    assert _json(call) == build_on_share_v3(SHARE_V3, "17", 1800)


async def test_on_share_v1_request(client: GatewayClient, gateway: FakeGateway) -> None:
    result = await client.on_share(SHARE_V1, "3", 1800, None)
    assert result.ok
    (call,) = gateway.calls("/gateway/v1.0/patients/profile/on-share")
    body = _json(call)
    assert body["requestId"] == call.headers["REQUEST-ID"] == result.outbound_request_id
    assert body["timestamp"] == call.headers["TIMESTAMP"]
    assert body == build_on_share_v1(
        SHARE_V1, "3", 1800, request_id=body["requestId"], timestamp=body["timestamp"]
    )
    assert call.headers["Authorization"] == "Bearer session-1"


async def test_on_share_failure_body(client: GatewayClient, gateway: FakeGateway) -> None:
    await client.on_share(SHARE_V3, None, 1800, ("ABDM-9999", "Counter OPD9 is not configured"))
    (call,) = gateway.calls("/api/hiecm/patient-share/v3/on-share")
    assert "acknowledgement" not in _json(call)
    assert _json(call)["error"]["code"] == "ABDM-9999"


async def test_fresh_request_id_every_call(client: GatewayClient, gateway: FakeGateway) -> None:
    results = [await client.on_share(SHARE_V3, str(n), 1800) for n in range(5)]
    ids = [r.headers["REQUEST-ID"] for r in gateway.requests]
    assert len(set(ids)) == len(ids) == 6
    assert [r.outbound_request_id for r in results] == ids[1:]


async def test_session_cached_and_refreshed_before_expiry(
    client: GatewayClient, gateway: FakeGateway, clock: FakeClock
) -> None:
    for _ in range(5):
        await client.on_share(SHARE_V3, "1", 1800)
    assert gateway.sessions_issued == 1
    clock.now += 600 - 31
    await client.on_share(SHARE_V3, "1", 1800)
    assert gateway.sessions_issued == 1
    clock.now += 2  # now inside the last 30 s of the token's life
    await client.on_share(SHARE_V3, "1", 1800)
    assert gateway.sessions_issued == 2
    assert gateway.requests[-1].headers["Authorization"] == "Bearer session-2"


async def test_short_session_refreshes_at_half_life(
    client: GatewayClient, gateway: FakeGateway, clock: FakeClock
) -> None:
    gateway.expires_in = 40
    assert await client.session_token() == "session-1"
    clock.now += 19
    assert await client.session_token() == "session-1"
    clock.now += 2
    assert await client.session_token() == "session-2"


async def test_concurrent_calls_share_one_session(client: GatewayClient, gateway: FakeGateway) -> None:
    results = await asyncio.gather(*(client.on_share(SHARE_V3, str(n), 1800) for n in range(20)))
    assert all(r.ok for r in results)
    assert gateway.sessions_issued == 1


async def test_401_refreshes_session_and_retries_once(client: GatewayClient, gateway: FakeGateway) -> None:
    await client.session_token()
    gateway.on_share_script = [401, 202]
    result = await client.on_share(SHARE_V3, "17", 1800)
    assert result.ok
    first, second = gateway.calls("/api/hiecm/patient-share/v3/on-share")
    assert first.headers["Authorization"] == "Bearer session-1"
    assert second.headers["Authorization"] == "Bearer session-2"
    assert first.headers["REQUEST-ID"] != second.headers["REQUEST-ID"] == result.outbound_request_id
    assert gateway.sessions_issued == 2


async def test_401_twice_gives_up(client: GatewayClient, gateway: FakeGateway) -> None:
    gateway.on_share_script = [401, 401, 202]
    result = await client.on_share(SHARE_V3, "17", 1800)
    assert not result.ok and result.status == 401 and result.retryable
    assert result.error is not None and "900901" in result.error
    assert len(gateway.calls("/api/hiecm/patient-share/v3/on-share")) == 2
    # The dead session was dropped: the next call starts with a fresh one.
    await client.on_share(SHARE_V3, "17", 1800)
    assert gateway.sessions_issued == 3


async def test_invalidate(client: GatewayClient, gateway: FakeGateway) -> None:
    await client.session_token()
    client.invalidate()
    assert await client.session_token() == "session-2"


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (429, True),
        (400, False),
        (404, False),
        (408, False),
    ],
)
async def test_status_classification(
    client: GatewayClient, gateway: FakeGateway, status: int, retryable: bool
) -> None:
    gateway.on_share_script = [status]
    result = await client.on_share(SHARE_V3, "1", 1800)
    assert (result.ok, result.status, result.retryable) == (False, status, retryable)
    assert result.error == f"HTTP {status}: ABDM-X status {status}"
    assert len(gateway.calls("/api/hiecm/patient-share/v3/on-share")) == 1


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (httpx.ReadTimeout("slow"), "timed out"),
        (httpx.ConnectTimeout("slow"), "timed out"),
        (httpx.ConnectError("refused"), "connection failed"),
        (httpx.RemoteProtocolError("eof"), "connection failed"),
    ],
)
async def test_transport_errors_are_retryable(
    client: GatewayClient, gateway: FakeGateway, exc: Exception, text: str
) -> None:
    def boom(_request: httpx.Request) -> httpx.Response:
        raise exc

    gateway.on_share_script = [boom]
    result = await client.on_share(SHARE_V3, "1", 1800)
    assert (result.ok, result.status, result.retryable) == (False, None, True)
    assert result.error is not None and text in result.error


@pytest.mark.parametrize(("status", "retryable"), [(401, False), (400, False), (503, True), (429, True)])
async def test_session_failure(
    client: GatewayClient, gateway: FakeGateway, status: int, retryable: bool
) -> None:
    gateway.session_status = status
    result = await client.on_share(SHARE_V3, "1", 1800)
    assert (result.ok, result.status, result.retryable) == (False, status, retryable)
    assert result.error is not None and result.error.startswith("session: ")
    assert not gateway.calls("/api/hiecm/patient-share/v3/on-share")
    with pytest.raises(GatewayError) as info:
        await client.session_token()
    assert info.value.status == status


@pytest.mark.parametrize("token", ["abc\r\nX-Injected: 1", "two words", "", None, 42])
async def test_session_token_unfit_for_a_header_is_refused(
    client: GatewayClient, gateway: FakeGateway, token: object
) -> None:
    """The token goes into every call's Authorization header: one that cannot is not used."""
    gateway.session_answer = {"accessToken": token, "expiresIn": 600}
    result = await client.on_share(SHARE_V3, "1", 1800)
    assert (result.ok, result.status, result.retryable) == (False, 200, True)
    assert result.error is not None and "accessToken" in result.error
    assert not gateway.calls("/api/hiecm/patient-share/v3/on-share")


async def test_register_bridge_url(client: GatewayClient, gateway: FakeGateway) -> None:
    result = await client.register_bridge_url("https://hip.example.org")
    assert result.ok
    (call,) = gateway.calls("/api/hiecm/gateway/v3/bridge/url")
    assert call.method == "PATCH" and _json(call) == {"url": "https://hip.example.org"}


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            b'{"error": {"code": "ABDM-1006", "message": "Bad request"}}',
            "HTTP 400: ABDM-1006 Bad request",
        ),
        (
            404,
            b'{"code": "ABDM-1001", "message": "Unknown requestId"}',
            "HTTP 404: ABDM-1001 Unknown requestId",
        ),
        (
            401,
            b'{"fault": {"code": 900901, "message": "Invalid Credentials", "description": "Access failure"}}',
            "HTTP 401: 900901 Invalid Credentials (Access failure)",
        ),
        (
            400,
            b'{"errors": [{"code": "ABDM-2402", "message": "clock skew"},'
            b' {"code": "ABDM-2404", "message": "reused"}]}',
            "HTTP 400: ABDM-2402 clock skew; ABDM-2404 reused",
        ),
        (
            400,
            b'{"timestamp": "2024", "status": 400, "error": "Bad Request", "path": "/x"}',
            "HTTP 400: Bad Request",
        ),
        (
            401,
            b'{"error": "unauthorized_client", "error_description": "bad"}',
            "HTTP 401: unauthorized_client bad",
        ),
        (
            400,
            b'{"status": 400, "error": "Bad Request", "message": "hipId is invalid"}',
            "HTTP 400: Bad Request hipId is invalid",
        ),
        (503, b"upstream connect error", "HTTP 503: upstream connect error"),
        (502, b"<html><body>Bad Gateway</body></html>", "HTTP 502"),
        (500, b"", "HTTP 500"),
        (500, b"{}", "HTTP 500"),
    ],
)
def test_describe_gateway_error_shapes(status: int, body: bytes, expected: str) -> None:
    assert describe_gateway_error(status, body) == expected

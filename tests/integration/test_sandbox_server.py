"""The gateway sandbox as a real uvicorn server: our GatewayClient and JWT verifier against it over TCP."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from tests.support.abdm import sandbox_gateway
from tests.support.servers import ServerThread
from token_service.abdm.gateway import GatewayClient, gateway_timestamp
from token_service.abdm.http1 import GatewayHttp
from token_service.abdm.jwt_verify import GatewayJWTVerifier, InvalidGatewayToken
from token_service.abdm.sandbox_state import SandboxState
from token_service.abdm.schemas import PatientProfile, ShareParseError, ShareRequest, parse_share

CLIENT_ID, CLIENT_SECRET = "HIP_CLIENT", "s3cret"
SHARE = ShareRequest(
    version="v3",
    request_id="5f7a535d-a3fd-416b-b069-c97d021fbacd",
    timestamp=None,
    hip_id="IN0710000123",
    counter_code="OPD1",
    intent="PROFILE_SHARE",
    profile=PatientProfile(
        abha_number=None,
        abha_address="ramesh.k1979@sbx",
        name="Ramesh Kumar",
        gender="M",
        year_of_birth=1979,
        month_of_birth=None,
        day_of_birth=None,
        phone=None,
    ),
)


@pytest.fixture(scope="module")
def sandbox_server() -> Iterator[tuple[SandboxState, str]]:
    yield from sandbox_gateway(SandboxState(client_id=CLIENT_ID, client_secret=CLIENT_SECRET))


@pytest.fixture
def state(sandbox_server: tuple[SandboxState, str]) -> SandboxState:
    sandbox, _ = sandbox_server
    sandbox.set_fault("ok")
    sandbox.clear_on_shares()
    return sandbox


@pytest.fixture
def base_url(sandbox_server: tuple[SandboxState, str]) -> str:
    return sandbox_server[1]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture(params=["http1", "httpx"])
async def outbound(
    request: pytest.FixtureRequest, http: httpx.AsyncClient
) -> AsyncIterator[httpx.AsyncClient | GatewayHttp]:
    """The client's own connection to the gateway: the service's `GatewayHttp`, or httpx."""
    if request.param == "httpx":
        yield http
        return
    session = GatewayHttp()
    try:
        yield session
    finally:
        await session.close()


@pytest.fixture
def client(base_url: str, outbound: httpx.AsyncClient | GatewayHttp) -> GatewayClient:
    return GatewayClient(base_url, CLIENT_ID, CLIENT_SECRET, "sbx", outbound, timeout_s=2.0)


async def test_connection_refused_is_retryable(outbound: httpx.AsyncClient | GatewayHttp) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = GatewayClient(f"http://127.0.0.1:{port}", CLIENT_ID, CLIENT_SECRET, "sbx", outbound)
    result = await client.on_share(SHARE, "1", 1800)
    assert (result.ok, result.status, result.retryable) == (False, None, True)
    assert result.error is not None and result.error.startswith("session: session request failed: ")


async def test_session_and_on_share_recorded(
    client: GatewayClient, state: SandboxState, base_url: str, http: httpx.AsyncClient
) -> None:
    result = await client.on_share(SHARE, "17", 1800)
    assert result.ok and result.status == 202
    records = (await http.get(f"{base_url}/api/on-shares")).json()
    assert len(records) == 1
    record = records[0]
    assert record["answered"] == 202 and record["version"] == "v3"
    assert record["tokenNumber"] == "17" and record["expiry"] == "1800"
    assert record["abhaAddress"] == "ramesh.k1979@sbx" and record["context"] == "OPD1"
    assert record["requestId"] == SHARE.request_id
    assert record["outboundRequestId"] == result.outbound_request_id
    page = (await http.get(f"{base_url}/")).text
    assert "ramesh.k1979@sbx" in page and SHARE.request_id in page and "<td>17</td>" in page


async def test_v1_on_share_recorded(client: GatewayClient, state: SandboxState) -> None:
    share = replace(SHARE, version="v1", request_id="0f2f8b2e-8c5e-4a55-9d6f-3a2b1c0d9e8f")
    result = await client.on_share(share, "4", 1800)
    assert result.ok
    (record,) = state.on_shares()
    assert (record["version"], record["tokenNumber"], record["requestId"]) == ("v1", "4", share.request_id)


async def test_newest_first_and_clear(
    client: GatewayClient, state: SandboxState, base_url: str, http: httpx.AsyncClient
) -> None:
    for n in (1, 2, 3):
        assert (await client.on_share(SHARE, str(n), 1800)).ok
    assert [r["tokenNumber"] for r in (await http.get(f"{base_url}/api/on-shares")).json()] == ["3", "2", "1"]
    assert (await http.delete(f"{base_url}/api/on-shares")).status_code == 204
    assert (await http.get(f"{base_url}/api/on-shares")).json() == []


async def test_wrong_secret(
    base_url: str, outbound: httpx.AsyncClient | GatewayHttp, state: SandboxState
) -> None:
    client = GatewayClient(base_url, CLIENT_ID, "wrong", "sbx", outbound)
    result = await client.on_share(SHARE, "1", 1800)
    assert (result.ok, result.status, result.retryable) == (False, 401, False)
    assert result.error is not None and "unauthorized_client" in result.error
    assert state.on_shares() == []


async def _set_fault(http: httpx.AsyncClient, base_url: str, **fault: Any) -> None:
    response = await http.post(f"{base_url}/api/faults", json=fault)
    assert response.status_code == 200, response.text


async def test_fault_5xx_until_reset(
    client: GatewayClient, state: SandboxState, base_url: str, http: httpx.AsyncClient
) -> None:
    await _set_fault(http, base_url, mode="5xx", until=None)
    for _ in range(3):
        result = await client.on_share(SHARE, "1", 1800)
        assert (result.ok, result.status, result.retryable) == (False, 503, True)
        assert result.error is not None and "ABDM-1024" in result.error
    await _set_fault(http, base_url, mode="ok")
    assert (await client.on_share(SHARE, "1", 1800)).ok
    assert [r["answered"] for r in state.on_shares()] == [202, 503, 503, 503]


async def test_fault_expires_after_until(
    client: GatewayClient, base_url: str, http: httpx.AsyncClient
) -> None:
    await _set_fault(http, base_url, mode="5xx", until=0.4)
    assert (await client.on_share(SHARE, "1", 1800)).status == 503
    await asyncio.sleep(0.5)
    assert (await client.on_share(SHARE, "1", 1800)).ok


async def test_fault_count(client: GatewayClient, base_url: str, http: httpx.AsyncClient) -> None:
    await _set_fault(http, base_url, mode="5xx", count=2)
    statuses = [(await client.on_share(SHARE, "1", 1800)).status for _ in range(3)]
    assert statuses == [503, 503, 202]


async def test_fault_401_once_refreshes_session_and_retries(
    client: GatewayClient, state: SandboxState, base_url: str, http: httpx.AsyncClient
) -> None:
    first = await client.session_token()
    await _set_fault(http, base_url, mode="401", count=1)
    result = await client.on_share(SHARE, "5", 1800)
    assert result.ok
    assert await client.session_token() != first
    assert [r["answered"] for r in state.on_shares()] == [202, 401]


async def test_fault_401_persistent(
    client: GatewayClient, state: SandboxState, base_url: str, http: httpx.AsyncClient
) -> None:
    await _set_fault(http, base_url, mode="401", until=60)
    result = await client.on_share(SHARE, "5", 1800)
    assert (result.ok, result.status, result.retryable) == (False, 401, True)
    assert len(state.on_shares()) == 2  # the call and its one retry


async def test_revoked_session_is_refreshed(client: GatewayClient, state: SandboxState) -> None:
    await client.session_token()
    state.revoke_sessions()
    assert (await client.on_share(SHARE, "6", 1800)).ok


async def test_fault_slow_times_out_then_recovers(
    base_url: str, http: httpx.AsyncClient, outbound: httpx.AsyncClient | GatewayHttp,
    state: SandboxState,
) -> None:  # fmt: skip
    client = GatewayClient(base_url, CLIENT_ID, CLIENT_SECRET, "sbx", outbound, timeout_s=0.3)
    await _set_fault(http, base_url, mode="slow", delay_s=1.0, until=None)
    started = time.monotonic()
    result = await client.on_share(SHARE, "1", 1800)
    assert (result.ok, result.status, result.retryable, result.error) == (False, None, True, "timed out")
    assert time.monotonic() - started < 1.0
    await _set_fault(http, base_url, mode="slow", delay_s=0.05)
    assert (await client.on_share(SHARE, "1", 1800)).ok


async def test_sandbox_refuses_bad_on_shares(
    base_url: str, http: httpx.AsyncClient, state: SandboxState
) -> None:
    token = await GatewayClient(base_url, CLIENT_ID, CLIENT_SECRET, "sbx", http).session_token()
    headers = {"Authorization": f"Bearer {token}", "X-CM-ID": "sbx", "REQUEST-ID": "fixed-id-1"}
    headers["TIMESTAMP"] = "2020-01-01T00:00:00.000Z"
    url = f"{base_url}/api/hiecm/patient-share/v3/on-share"
    body = {"error": {"code": "X", "message": "y"}, "response": {"requestId": "r"}}
    skewed = await http.post(url, json=body, headers=headers)
    assert skewed.status_code == 400 and skewed.json()["error"]["code"] == "ABDM-2402"
    headers["TIMESTAMP"] = gateway_timestamp()
    headers["REQUEST-ID"] = "fixed-id-2"
    both = {**body, "acknowledgement": {"status": "SUCCESS"}}
    assert (await http.post(url, json=both, headers=headers)).status_code == 400
    headers["REQUEST-ID"] = "fixed-id-3"
    assert (await http.post(url, json=body, headers=headers)).status_code == 202
    reused = await http.post(url, json=body, headers=headers)
    assert reused.status_code == 400 and reused.json()["error"]["code"] == "ABDM-2404"
    no_auth = await http.post(url, json=body, headers={**headers, "Authorization": "Bearer nope"})
    assert no_auth.status_code == 401


@pytest.mark.parametrize("path", ["/api/hiecm/gateway/v3/certs", "/gateway/v0.5/certs"])
async def test_verifier_against_real_jwks(
    base_url: str, http: httpx.AsyncClient, state: SandboxState, path: str
) -> None:
    verifier = GatewayJWTVerifier(f"{base_url}{path}", http)
    claims = await verifier.verify(f"Bearer {state.sign_gateway_jwt()}")
    assert claims["clientId"] == "GATEWAY" and claims["aud"] == "account"
    with pytest.raises(InvalidGatewayToken):
        await verifier.verify(f"Bearer {state.sign_gateway_jwt({'realm_access': {'roles': ['hip']}})}")
    # Our own session token is signed by the same key but is not the gateway's: refused.
    session = state.issue_session(CLIENT_ID, CLIENT_SECRET)
    assert session is not None
    with pytest.raises(InvalidGatewayToken):
        await verifier.verify(f"Bearer {session['accessToken']}")
    assert verifier.fetch_count == 1


# ---- the whole round trip: sandbox posts a share to a minimal HIP, which answers on-share ----


def make_hip(gateway_url: str) -> FastAPI:
    """Just enough of a HIP bridge to exercise the ABDM adapter end to end (no queue)."""
    numbers = itertools.count(1)
    pending: set[asyncio.Task[Any]] = set()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient() as http:
            app.state.verifier = GatewayJWTVerifier(f"{gateway_url}/api/hiecm/gateway/v3/certs", http)
            app.state.gateway = GatewayClient(gateway_url, CLIENT_ID, CLIENT_SECRET, "sbx", http)
            yield
            await asyncio.gather(*pending)

    app = FastAPI(lifespan=lifespan)

    async def receive(version: Any, request: Request) -> Response:
        try:
            await app.state.verifier.verify(request.headers.get("authorization"))
            share = parse_share(version, await request.body(), request.headers)
        except InvalidGatewayToken as exc:
            return JSONResponse({"error": "unauthorized", "detail": exc.reason}, 401)
        except ShareParseError as exc:
            return JSONResponse(exc.to_dict(), 400)
        task = asyncio.create_task(app.state.gateway.on_share(share, str(next(numbers)), 1800))
        pending.add(task)
        task.add_done_callback(pending.discard)
        return Response(status_code=202)

    @app.post("/api/v3/hip/patient/share")
    async def share_v3(request: Request) -> Response:
        return await receive("v3", request)

    @app.post("/v1.0/patients/profile/share")
    async def share_v1(request: Request) -> Response:
        return await receive("v1", request)

    @app.post("/v0.5/patients/profile/share")
    async def share_v05(request: Request) -> Response:
        return await receive("v0.5", request)

    return app


@pytest.fixture(scope="module")
def hip_url(sandbox_server: tuple[SandboxState, str]) -> Iterator[str]:
    with ServerThread(make_hip(sandbox_server[1])) as server:
        yield server.url


async def _wait_for_on_shares(state: SandboxState, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while len(state.on_shares()) < count:
        assert time.monotonic() < deadline, "on-share did not arrive"
        await asyncio.sleep(0.02)
    return state.on_shares()


@pytest.mark.parametrize("version", ["v3", "v1", "v0.5"])
async def test_share_round_trip(state: SandboxState, hip_url: str, version: Any) -> None:
    status, request_id = await state.post_share(
        hip_url, version, "IN0710000123", "OPD1", "Asha.Devi@sbx", name="आशा देवी"
    )
    assert status == 202
    (record,) = await _wait_for_on_shares(state, 1)
    assert record["answered"] == 202
    assert record["requestId"] == request_id
    assert record["abhaAddress"] == "asha.devi@sbx"
    assert record["latency_ms"] >= 0
    assert state.shares_sent()[0]["status"] == 202


async def test_share_with_forged_token_is_refused(state: SandboxState, hip_url: str) -> None:
    forged = SandboxState().sign_gateway_jwt()
    status, _ = await state.post_share(hip_url, "v3", "IN0710000123", "OPD1", "a@sbx", jwt_token=forged)
    assert status == 401


async def test_bridge_url_and_share_api(
    client: GatewayClient, state: SandboxState, base_url: str, http: httpx.AsyncClient, hip_url: str
) -> None:
    assert (await client.register_bridge_url(hip_url)).ok
    assert state.bridge_url == hip_url
    response = await http.post(
        f"{base_url}/api/shares", json={"hip_id": "IN0710000123", "counter": "OPD2", "abha_address": "b@sbx"}
    )
    assert response.status_code == 200 and response.json()["status"] == 202
    (record,) = await _wait_for_on_shares(state, 1)
    assert record["context"] == "OPD2" and record["requestId"] == response.json()["requestId"]
    bad = await http.post(
        f"{base_url}/api/shares",
        json={"hip_id": "X", "counter": "1", "abha_address": "c@sbx", "target": "http://127.0.0.1:9"},
    )
    assert bad.status_code == 502

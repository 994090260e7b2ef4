"""The gateway sandbox without sockets: its shares parse as real ones, its JWTs look like the gateway's."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from token_service.abdm.gateway import gateway_timestamp
from token_service.abdm.sandbox import create_sandbox_app, render_page
from token_service.abdm.sandbox_state import SandboxState
from token_service.abdm.schemas import parse_share


@pytest.fixture(scope="module")
def state() -> SandboxState:
    return SandboxState(client_id="HIP_CLIENT", client_secret="s3cret")


@pytest.fixture
async def api(state: SandboxState) -> AsyncIterator[httpx.AsyncClient]:
    state.set_fault("ok")
    state.clear_on_shares()
    # ASGITransport: the app in-process, no sockets (the real server is in tests/integration).
    transport = httpx.ASGITransport(app=create_sandbox_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as client:
        yield client


def _claims(state: SandboxState, token: str) -> dict[str, Any]:
    return jwt.decode(token, state.private_key.public_key(), algorithms=["RS256"], audience="account")


@pytest.mark.parametrize("version", ["v3", "v1", "v0.5"])
def test_built_shares_parse_as_real_ones(state: SandboxState, version: Any) -> None:
    headers, body = state.build_share(
        version,
        "IN0710000123",
        "OPD7",
        "Asha.Devi@sbx",
        name="आशा देवी",
        year_of_birth=1990,
        request_id="req-1",
    )
    assert headers["X-HIP-ID"] == "IN0710000123"
    share = parse_share(version, body, headers)
    assert share.request_id == "req-1"
    assert share.counter_code == "OPD7"
    assert share.profile.abha_address == "asha.devi@sbx"
    assert share.profile.name == "आशा देवी"
    assert (share.profile.year_of_birth, share.profile.month_of_birth, share.profile.day_of_birth) == (
        1990,
        8,
        14,
    )
    assert share.profile.phone == "9876543210"
    assert share.version == ("v3" if version == "v3" else "v1")
    assert _claims(state, headers["Authorization"].removeprefix("Bearer "))["clientId"] == "GATEWAY"
    raw = json.loads(body)
    if version == "v3":
        assert set(raw) == {"intent", "metaData", "profile"}
        assert headers["REQUEST-ID"] == "req-1" and headers["TIMESTAMP"].endswith("Z")
        assert raw["profile"]["patient"]["yearOfBirth"] == "1990"
    else:
        assert raw["requestId"] == "req-1" and "REQUEST-ID" not in headers
        assert ("intent" in raw) == (version == "v1")
        assert raw["profile"]["patient"]["yearOfBirth"] == 1990


def test_patient_extra_sends_raw_variants(state: SandboxState) -> None:
    headers, body = state.build_share(
        "v3",
        "IN0710000123",
        "OPD1",
        "a@sbx",
        address={"line": "x"},
        patient_extra={"address": {"pinCode": 110029}, "yearOfBirth": 1979, "abhaNumber": None},
    )
    share = parse_share("v3", body, headers)
    assert share.profile.address["pincode"] == "110029" and share.profile.year_of_birth == 1979


def test_gateway_jwt_shape(state: SandboxState) -> None:
    token = state.sign_gateway_jwt(ttl_s=120)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["kid"] == state.kid
    claims = _claims(state, token)
    assert claims["exp"] - claims["iat"] == 120 and claims["nbf"] == claims["iat"]
    assert abs(claims["iat"] - time.time()) < 5
    assert claims["aud"] == "account" and claims["iss"] == state.issuer and claims["sub"]
    assert "gateway" in claims["realm_access"]["roles"] and claims["clientId"] == "GATEWAY"
    trimmed = jwt.decode(
        state.sign_gateway_jwt({"aud": None, "clientId": "OTHER"}),
        state.private_key.public_key(),
        algorithms=["RS256"],
    )
    assert "aud" not in trimmed and trimmed["clientId"] == "OTHER"


def test_key_path_is_created_once_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "sandbox.pem"
    first = SandboxState.create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = SandboxState.create(path)
    assert first.kid == second.kid
    assert second.public_jwk()["n"] == first.public_jwk()["n"]
    assert SandboxState().kid != first.kid


def test_fault_count_and_expiry() -> None:
    now = [100.0]
    state = SandboxState(monotonic=lambda: now[0])
    state.set_fault("5xx", count=2)
    assert [state.take_fault().mode for _ in range(3)] == ["5xx", "5xx", "ok"]
    state.set_fault("slow", until_s=5, delay_s=0.5)
    assert state.fault_info()["remaining_s"] == 5
    assert state.take_fault().delay_s == 0.5
    now[0] += 5
    assert state.take_fault().mode == "ok"
    assert state.fault_info()["mode"] == "ok"
    with pytest.raises(ValueError):
        state.set_fault("explode")  # type: ignore[arg-type]


def _v3_session_headers() -> dict[str, str]:
    return {
        "REQUEST-ID": "0f2f8b2e-8c5e-4a55-9d6f-3a2b1c0d9e8f",
        "TIMESTAMP": gateway_timestamp(),
        "X-CM-ID": "sbx",
    }


async def test_sessions(api: httpx.AsyncClient, state: SandboxState) -> None:
    creds = {"clientId": "HIP_CLIENT", "clientSecret": "s3cret", "grantType": "client_credentials"}
    ok = await api.post("/api/hiecm/gateway/v3/sessions", json=creds, headers=_v3_session_headers())
    assert ok.status_code == 200
    assert set(ok.json()) == {"accessToken", "expiresIn", "refreshExpiresIn", "refreshToken", "tokenType"}
    assert state.session_valid(ok.json()["accessToken"])
    assert (await api.post("/api/hiecm/gateway/v3/sessions", json=creds)).status_code == 400
    wrong = await api.post(
        "/api/hiecm/gateway/v3/sessions", json={**creds, "clientSecret": "x"}, headers=_v3_session_headers()
    )
    assert wrong.status_code == 401
    v05 = await api.post("/gateway/v0.5/sessions", json={"clientId": "HIP_CLIENT", "clientSecret": "s3cret"})
    assert v05.status_code == 200


@pytest.mark.parametrize("path", ["/api/hiecm/gateway/v3/certs", "/gateway/v0.5/certs"])
async def test_certs(api: httpx.AsyncClient, state: SandboxState, path: str) -> None:
    (key,) = (await api.get(path)).json()["keys"]
    assert key["kid"] == state.kid and key["kty"] == "RSA" and key["alg"] == "RS256" and key["use"] == "sig"
    assert "d" not in key  # public half only


async def test_fault_api_validates(api: httpx.AsyncClient) -> None:
    assert (await api.post("/api/faults", json={"mode": "explode"})).status_code == 422
    assert (await api.post("/api/faults", json={"mode": "slow", "delay_s": -1})).status_code == 422
    set_ = await api.post("/api/faults", json={"mode": "5xx", "until": 30})
    assert set_.status_code == 200 and set_.json()["mode"] == "5xx" and set_.json()["remaining_s"] > 29
    assert (await api.get("/api/faults")).json()["mode"] == "5xx"


async def test_on_share_recorded_and_page_escapes(api: httpx.AsyncClient, state: SandboxState) -> None:
    session = state.issue_session("HIP_CLIENT", "s3cret")
    assert session is not None
    headers = {**_v3_session_headers(), "Authorization": f"Bearer {session['accessToken']}"}
    headers["REQUEST-ID"] = "escape-test-1"
    body = {
        "acknowledgement": {
            "status": "SUCCESS",
            "abhaAddress": "<script>alert(1)</script>",
            "profile": {"context": "OPD1", "tokenNumber": "9", "expiry": "1800"},
        },
        "response": {"requestId": "in-1"},
    }
    response = await api.post("/api/hiecm/patient-share/v3/on-share", json=body, headers=headers)
    assert response.status_code == 202
    page = render_page(state)
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert (await api.get("/")).status_code == 200


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"response": {"requestId": "r"}}, "ABDM-1006"),
        (
            {"acknowledgement": {"status": "SUCCESS", "abhaAddress": "a@sbx", "profile": {"tokenNumber": 9}}},
            "ABDM-1006",
        ),
        (
            {
                "acknowledgement": {
                    "status": "SUCCESS",
                    "abhaAddress": "a@sbx",
                    "profile": {"context": "OPD1", "tokenNumber": "9", "expiry": 1800},
                },
                "response": {"requestId": "r"},
            },
            "ABDM-1006",
        ),
    ],
)
async def test_on_share_shape_errors(
    api: httpx.AsyncClient, state: SandboxState, body: dict[str, Any], code: str
) -> None:
    session = state.issue_session("HIP_CLIENT", "s3cret")
    assert session is not None
    headers = {**_v3_session_headers(), "Authorization": f"Bearer {session['accessToken']}"}
    headers["REQUEST-ID"] = f"shape-{time.monotonic_ns()}"
    response = await api.post("/api/hiecm/patient-share/v3/on-share", json=body, headers=headers)
    assert response.status_code == 400 and response.json()["error"]["code"] == code
    assert state.on_shares()[0]["answered"] == 400


async def test_on_share_paths_keep_their_routes(
    api: httpx.AsyncClient, state: SandboxState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POSTs take the receiver's short path; the routes still document the paths and answer the rest."""
    app = api._transport.app  # type: ignore[attr-defined]
    routed: list[str] = []
    router_call = type(app.router).__call__

    async def counting(self: Any, scope: Any, receive: Any, send: Any) -> None:
        routed.append(f"{scope['method']} {scope['path']}")
        await router_call(self, scope, receive, send)

    monkeypatch.setattr(type(app.router), "__call__", counting)
    paths = (await api.get("/openapi.json")).json()["paths"]
    for path in ("/api/hiecm/patient-share/v3/on-share", "/gateway/v1.0/patients/profile/on-share"):
        assert "post" in paths[path]
        assert (await api.get(path)).status_code == 405
    unauthenticated = await api.post(
        "/gateway/v1.0/patients/profile/on-share", json={}, headers={"X-CM-ID": "sbx"}
    )
    assert unauthenticated.status_code == 401 and unauthenticated.json()["fault"]["code"] == 900901
    record = state.on_shares()[0]
    assert (record["version"], record["path"], record["answered"]) == (
        "v1",
        "/gateway/v1.0/patients/profile/on-share",
        401,
    )
    assert not [r for r in routed if r.startswith("POST")]  # the GETs were routed, the POST was not
    assert len(routed) == 3


async def test_share_api_needs_a_target(api: httpx.AsyncClient, state: SandboxState) -> None:
    state.bridge_url = None
    response = await api.post("/api/shares", json={"hip_id": "X", "counter": "OPD1", "abha_address": "a@sbx"})
    assert response.status_code == 400 and response.json()["error"] == "no_target"


def test_the_served_sandbox_freezes_its_startup_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    """Beside the service (demos, the benchmark) the sandbox gets a worker's collector settings, so no
    full collection over every imported module stalls its answers."""
    import gc

    from token_service.abdm import sandbox
    from token_service.app import GC_YOUNG_THRESHOLD

    seen: dict[str, Any] = {}

    def fake_run(app: Any, **kwargs: Any) -> None:
        seen.update(app=app, frozen=gc.get_freeze_count(), young=gc.get_threshold()[0], **kwargs)

    before = gc.get_threshold()
    monkeypatch.setattr(sandbox.uvicorn, "run", fake_run)
    try:
        sandbox.run_sandbox(port=1, state=SandboxState(client_id="c", client_secret="s"))
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    assert seen["port"] == 1
    assert seen["frozen"] > 10_000  # everything imported so far
    assert seen["young"] == GC_YOUNG_THRESHOLD

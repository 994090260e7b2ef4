"""Scan & Share intake through the real HTTP stack: a real sandbox gateway on TCP, real Redis and SQLite."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as sync_redis
from fastapi import FastAPI
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from tests.support.abdm import (
    V1,
    V3,
    on_share_for,
    post_share,
    service_app,
    sql_rows,
    validity_left,
)
from tests.support.app import HIP, PASSWORD, make_settings, seed
from token_service.abdm.sandbox_state import SandboxState
from token_service.config import Settings


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, sandbox: tuple[SandboxState, str]) -> Settings:
    s = make_settings(tmp_path, redis_url, abdm_gateway_url=sandbox[1])
    seed(s)
    return s


@pytest.fixture
async def service(settings: Settings, gw: SandboxState) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with service_app(settings) as (app, c):
        yield app, c


@pytest.fixture
def client(service: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return service[1]


def token_keys(redis_url: str) -> list[bytes]:
    r = sync_redis.Redis.from_url(redis_url)
    try:
        return list(r.scan_iter(match=f"opd:{{{HIP}}}:k:*"))
    finally:
        r.close()


async def test_v3_share_gets_202_and_on_share_with_token(
    client: httpx.AsyncClient, gw: SandboxState, settings: Settings
) -> None:
    started = time.perf_counter()
    r, rid = await post_share(client, gw)
    ack_ms = (time.perf_counter() - started) * 1000
    assert r.status_code == 202, r.text
    assert r.json() == {"status": "accepted", "requestId": rid}
    assert ack_ms < 500
    (on_share,) = await on_share_for(gw, rid)
    assert on_share["version"] == "v3" and on_share["tokenNumber"] == "A1"
    assert on_share["abhaAddress"] == "ramesh.k1979@sbx" and on_share["context"] == "OPD1"
    assert on_share["body"]["response"] == {"requestId": rid}
    assert on_share["outboundRequestId"] != rid  # a fresh REQUEST-ID for our own call
    # 30 minutes of validity, less the few seconds since issue (and capped at the facility's day end).
    assert -1 <= validity_left(settings) - int(on_share["expiry"]) <= 10
    (token,) = sql_rows(settings, "select id, number, source, request_id, patient from token")
    assert (token.number, token.source, token.request_id) == (1, "scan_share", rid)
    assert json.loads(token.patient)["name"] == "Ramesh Kumar"
    await asyncio.sleep(0.1)
    (row,) = sql_rows(settings, "select id, status, attempts, token_id from on_share")
    assert (row.status, row.attempts, row.token_id) == ("sent", 1, token.id)
    (attempt,) = sql_rows(settings, "select ok, status_code from on_share_attempt")
    assert (attempt.ok, attempt.status_code) == (1, 202)


async def test_duplicate_delivery_and_rescan_give_same_token(
    client: httpx.AsyncClient, gw: SandboxState, settings: Settings
) -> None:
    r1, rid = await post_share(client, gw)
    await on_share_for(gw, rid)
    r2, _ = await post_share(client, gw, request_id=rid)  # the gateway delivers the same share again
    assert (r1.status_code, r2.status_code) == (202, 202)
    again = await on_share_for(gw, rid, count=2)
    assert [o["tokenNumber"] for o in again] == ["A1", "A1"]
    r3, rid3 = await post_share(client, gw)  # the patient scans again: new REQUEST-ID, same ABHA address
    assert r3.status_code == 202
    (rescan,) = await on_share_for(gw, rid3)
    assert rescan["tokenNumber"] == "A1"
    _, rid4 = await post_share(client, gw, abha="sita.devi@sbx", name="सीता देवी")
    assert (await on_share_for(gw, rid4))[0]["tokenNumber"] == "A2"
    assert len(sql_rows(settings, "select id from token")) == 2
    outcomes = sorted(
        json.loads(r.payload)["outcome"] for r in sql_rows(settings, "select payload from on_share")
    )
    assert outcomes == ["created", "duplicate", "rescan"]  # the re-delivery re-armed the first row


async def test_rescan_after_completion_gets_new_token(client: httpx.AsyncClient, gw: SandboxState) -> None:
    _, rid = await post_share(client, gw)
    assert (await on_share_for(gw, rid))[0]["tokenNumber"] == "A1"
    login = await client.post("/api/auth/login", json={"username": "admin", "password": PASSWORD})
    h = {"Authorization": f"Bearer {login.json()['access_token']}"}
    called = await client.post(
        f"/api/facilities/{HIP}/counters/OPD1/call-next", json={"desk": "D1"}, headers=h
    )
    assert (await client.post(f"/api/tokens/{called.json()['id']}/complete", headers=h)).status_code == 200
    _, rid2 = await post_share(client, gw)
    assert (await on_share_for(gw, rid2))[0]["tokenNumber"] == "A2"


@pytest.mark.parametrize("version", ["v1", "v0.5"])
async def test_v1_and_v05_end_to_end(
    client: httpx.AsyncClient, gw: SandboxState, settings: Settings, version: str
) -> None:
    r, rid = await post_share(client, gw, version=version, counter="ORTHO")
    assert r.status_code == 202, r.text
    (on_share,) = await on_share_for(gw, rid)
    assert on_share["version"] == "v1" and on_share["path"] == "/gateway/v1.0/patients/profile/on-share"
    assert on_share["tokenNumber"] == "C1" and on_share["body"]["resp"] == {"requestId": rid}
    assert on_share["body"]["acknowledgement"]["healthId"] == "ramesh.k1979@sbx"
    (token,) = sql_rows(settings, "select counter, request_id from token")
    assert tuple(token) == ("ORTHO", rid)


@pytest.mark.parametrize(
    ("counter", "hip", "message"),
    [
        ("OPD9", HIP, "Counter OPD9 is not configured"),
        ("OPD1", "IN9999999999", "Facility IN9999999999 is not configured"),
    ],
)
async def test_unknown_counter_or_facility_gets_error_on_share(
    client: httpx.AsyncClient,
    gw: SandboxState,
    settings: Settings,
    redis_url: str,
    counter: str,
    hip: str,
    message: str,
) -> None:
    r, rid = await post_share(client, gw, counter=counter, hip_id=hip)
    assert r.status_code == 202
    (on_share,) = await on_share_for(gw, rid)
    assert on_share["error"]["code"] == "ABDM-9999" and message in on_share["error"]["message"]
    assert "acknowledgement" not in on_share["body"]
    assert on_share["body"]["response"] == {"requestId": rid}
    await asyncio.sleep(0.1)
    (row,) = sql_rows(settings, "select hip_id, status, payload from on_share")
    assert (row.hip_id, row.status) == (hip, "sent")
    assert json.loads(row.payload)["outcome"] == "rejected"
    assert sql_rows(settings, "select id from token") == [] and token_keys(redis_url) == []


async def test_closed_counter_gets_error_on_share(
    client: httpx.AsyncClient, gw: SandboxState, settings: Settings
) -> None:
    engine = create_engine(settings.sqlalchemy_url)
    with engine.begin() as conn:
        conn.execute(text("update counter set active = 0 where code = 'OPD2'"))
    engine.dispose()
    await asyncio.sleep(3.1)  # the per-process configuration cache
    r, rid = await post_share(client, gw, counter="OPD2")
    assert r.status_code == 202
    (on_share,) = await on_share_for(gw, rid)
    assert on_share["error"]["message"] == "Counter OPD2 is closed"


PATIENT_VARIANTS: list[dict[str, Any]] = [
    {"abhaNumber": None},
    {"abhaNumber": "91-1234-5678-9012"},
    {"abhaNumber": "91123456789012", "yearOfBirth": 1979, "monthOfBirth": 8, "dayOfBirth": 14},
    {"dayOfBirth": None, "monthOfBirth": None},
    {"address": {"line": "Gali 4", "district": "Patna", "state": "Bihar", "pinCode": "800001"}},
    {"address": {"line": "Gali 4", "pincode": 800001}},
    {"address": "H No 12, Gali 4, Patna"},
    {"name": "रमेश कुमार", "gender": "O"},
    {"name": "રમેશ કુમાર", "gender": "U", "phoneNumber": None},
    {"phoneNumber": "+91 98765 43210"},
]


@pytest.mark.parametrize("extra", PATIENT_VARIANTS)
async def test_observed_v3_payload_variants_accepted(
    client: httpx.AsyncClient, gw: SandboxState, extra: dict[str, Any]
) -> None:
    r, rid = await post_share(client, gw, patient_extra=extra)
    assert r.status_code == 202, r.text
    assert (await on_share_for(gw, rid))[0]["tokenNumber"] == "A1"


async def test_v3_metadata_variants_accepted(client: httpx.AsyncClient, gw: SandboxState) -> None:
    headers, raw = gw.build_share("v3", HIP, "OPD2", "x.y@sbx", request_id=str(uuid.uuid4()))
    body = json.loads(raw)
    body["metaData"].pop("hprId")
    body["metaData"].update(latitude=25.59, longitude=85.13)
    headers.pop("X-HIP-ID")  # the facility then comes from metaData.hipId
    r = await client.post(V3, content=json.dumps(body), headers=headers)
    assert r.status_code == 202, r.text
    assert (await on_share_for(gw, headers["REQUEST-ID"]))[0]["tokenNumber"] == "B1"


async def test_v1_variants_accepted(client: httpx.AsyncClient, gw: SandboxState) -> None:
    extra = {
        "healthIdNumber": None,
        "identifiers": [{"type": "EMAIL", "value": "a@b.c"}],
        "yearOfBirth": "1980",
    }
    r, rid = await post_share(client, gw, version="v1", patient_extra=extra)
    assert r.status_code == 202, r.text
    assert (await on_share_for(gw, rid))[0]["tokenNumber"] == "A1"


def _jwt_cases(gw: SandboxState) -> dict[str, str]:
    import jwt as pyjwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {
        "exp": now + 300,
        "iat": now,
        "nbf": now,
        "aud": "account",
        "realm_access": {"roles": ["gateway"]},
    }
    public_pem = gw.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_header = pyjwt.utils.base64url_encode(
        json.dumps({"alg": "HS256", "kid": gw.kid, "typ": "JWT"}).encode()
    )
    hs_payload = pyjwt.utils.base64url_encode(json.dumps(claims).encode())
    import hashlib
    import hmac

    signing_input = hs_header + b"." + hs_payload
    hs_sig = pyjwt.utils.base64url_encode(hmac.new(public_pem, signing_input, hashlib.sha256).digest())
    none_token = (
        pyjwt.utils.base64url_encode(json.dumps({"alg": "none", "kid": gw.kid}).encode())
        + b"."
        + hs_payload
        + b"."
    )
    return {
        "expired": gw.sign_gateway_jwt({"exp": now - 600, "iat": now - 900, "nbf": now - 900}),
        "nbf_future": gw.sign_gateway_jwt({"nbf": now + 600}),
        "unknown_kid": gw.sign_gateway_jwt(kid="not-a-gateway-key"),
        "wrong_signature": pyjwt.encode(claims, other, algorithm="RS256", headers={"kid": gw.kid}),
        "alg_none": none_token.decode(),
        "hs256_with_public_key": (signing_input + b"." + hs_sig).decode(),
        "missing_role": gw.sign_gateway_jwt({"realm_access": {"roles": ["hip"]}}),
        "wrong_audience": gw.sign_gateway_jwt({"aud": "someone-else"}),
        "garbage": "not.a.jwt",
    }


async def test_jwt_cases_rejected_with_401_and_nothing_issued(
    client: httpx.AsyncClient, gw: SandboxState, settings: Settings, redis_url: str
) -> None:
    r, rid = await post_share(client, gw)  # a valid token first: keys are cached
    assert r.status_code == 202
    await on_share_for(gw, rid)
    for case, token in _jwt_cases(gw).items():
        r, _ = await post_share(client, gw, jwt_token=token, abha=f"{case.replace('_', '.')}@sbx")
        assert r.status_code == 401, (case, r.text)
        assert r.json()["error"] == "invalid_gateway_token", case
    headers, body = gw.build_share("v3", HIP, "OPD1", "no.auth@sbx")
    headers.pop("Authorization")
    assert (await client.post(V3, content=body, headers=headers)).status_code == 401
    assert len(sql_rows(settings, "select id from token")) == 1
    assert len(sql_rows(settings, "select id from on_share")) == 1
    assert len(token_keys(redis_url)) == 1


async def test_unknown_kid_refetches_keys_then_rejects(
    service: tuple[FastAPI, httpx.AsyncClient], gw: SandboxState
) -> None:
    from token_service.api.abdm import runtime_of

    app, client = service
    verifier = runtime_of(app.state.opd).verifier
    r, _ = await post_share(client, gw)
    assert r.status_code == 202
    before = verifier.fetch_count
    verifier._last_attempt_at = None  # the refetch rate limit has passed
    r, _ = await post_share(client, gw, jwt_token=gw.sign_gateway_jwt(kid="rotated-away"))
    assert r.status_code == 401 and "unknown kid" in r.json()["detail"]
    assert verifier.fetch_count == before + 1
    r, _ = await post_share(client, gw, jwt_token=gw.sign_gateway_jwt(kid="rotated-again"))
    assert r.status_code == 401 and verifier.fetch_count == before + 1  # rate-limited: no second fetch


MALFORMED = [
    (b"", "invalid_json"),
    (b"{", "invalid_json"),
    (b"[]", "invalid_body"),
    (b'{"intent": "PROFILE_SHARE"}', "invalid_body"),
    (
        b'{"intent": "RECORD_SHARE", "metaData": {"context": "OPD1"}, "profile": {"patient": {}}}',
        "unsupported_intent",
    ),
    (
        b'{"intent": "PROFILE_SHARE", "metaData": {"context": "OPD 1!"}, "profile": {"patient": {"name": "A", "abhaAddress": "a@sbx"}}}',
        "invalid_counter_code",
    ),
    (
        b'{"intent": "PROFILE_SHARE", "metaData": {"context": "OPD1"}, "profile": {"patient": {"name": "A"}}}',
        "invalid_body",
    ),
    (
        b'{"intent": "PROFILE_SHARE", "metaData": {"context": "OPD1"}, "profile": {"patient": {"name": "A", "abhaAddress": "a@sbx", "abhaNumber": "12"}}}',
        "invalid_body",
    ),
    (b'{"a": NaN}', "invalid_json"),
    (b"[" * 5000 + b"]" * 5000, "invalid_json"),
]


@pytest.mark.parametrize(("body", "code"), MALFORMED)
async def test_malformed_bodies_get_clear_400(
    client: httpx.AsyncClient, gw: SandboxState, body: bytes, code: str
) -> None:
    headers, _ = gw.build_share("v3", HIP, "OPD1", "a@sbx")
    r = await client.post(V3, content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == code and r.json()["detail"]


async def test_missing_headers_and_facility(
    client: httpx.AsyncClient, gw: SandboxState, redis_url: str
) -> None:
    headers, body = gw.build_share("v3", HIP, "OPD1", "a@sbx")
    r = await client.post(V3, content=body, headers={k: v for k, v in headers.items() if k != "REQUEST-ID"})
    assert (r.status_code, r.json()["error"]) == (400, "missing_request_id")
    r = await client.post(V3, content=body, headers={**headers, "X-HIP-ID": "bad hip id!"})
    assert (r.status_code, r.json()["error"]) == (400, "invalid_hip_id")
    v1_headers, v1_body = gw.build_share("v1", HIP, "OPD1", "a@sbx")
    v1_headers.pop("X-HIP-ID")  # v1.0 bodies carry no facility: the header is the only place
    r = await client.post(V1, content=v1_body, headers=v1_headers)
    assert (r.status_code, r.json()["error"]) == (400, "missing_hip_id")
    big = b'{"x": "' + b"a" * 70_000 + b'"}'
    r = await client.post(V3, content=big, headers=headers)
    assert r.status_code == 413
    assert token_keys(redis_url) == []


_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
_keys = st.sampled_from(
    [
        "intent",
        "metaData",
        "profile",
        "requestId",
        "hipCode",
        "patient",
        "context",
        "abhaAddress",
        "healthId",
        "name",
    ]
)


def _share_like() -> st.SearchStrategy[Any]:
    patient = st.dictionaries(
        st.sampled_from(
            ["name", "abhaAddress", "abhaNumber", "gender", "yearOfBirth", "address", "phoneNumber"]
        ),
        _json,
        max_size=7,
    )
    meta = st.dictionaries(st.sampled_from(["hipId", "context", "hprId", "latitude"]), _json, max_size=4)
    shaped = st.fixed_dictionaries(
        {
            "intent": st.sampled_from(["PROFILE_SHARE", "profile_share", "X", 5, None]),
            "metaData": meta | _json,
            "profile": st.fixed_dictionaries({"patient": patient}) | _json,
        }
    )
    # Mostly share-shaped garbage (deep parsing paths), some arbitrary JSON and raw bytes.
    return (
        shaped.map(lambda d: json.dumps(d).encode())
        | st.dictionaries(_keys, _json, max_size=6).map(lambda d: json.dumps(d).encode())
        | st.binary(max_size=200)
    )


def _would_be_valid(body: bytes) -> bool:
    from token_service.abdm.schemas import ShareParseError, parse_share

    try:
        parse_share("v3", body, {"REQUEST-ID": "x"})
    except ShareParseError:
        return False
    return True


async def test_generated_malformed_bodies_never_500_never_issue(
    client: httpx.AsyncClient, gw: SandboxState, redis_url: str, settings: Settings
) -> None:
    headers, _ = gw.build_share("v3", HIP, "OPD1", "a@sbx")
    bodies: list[bytes] = []

    @hsettings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(_share_like())
    def collect(body: bytes) -> None:
        bodies.append(body)

    # In a thread: generating the bodies takes seconds on a busy box, and blocking the event loop that
    # long timed out the service's own fetch of the gateway's keys (every share then got a 503).
    await asyncio.to_thread(collect)
    invalid = [b for b in bodies if not _would_be_valid(b)]
    assert len(invalid) >= 190
    for body in invalid:
        r = await client.post(V3, content=body, headers=headers)
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
        assert set(r.json()) == {"error", "detail"}
    assert token_keys(redis_url) == [] and sql_rows(settings, "select id from on_share") == []


async def test_redis_down_answers_503_and_gateway_can_retry(
    tmp_path: Path, gw: SandboxState, sandbox: tuple[SandboxState, str]
) -> None:
    from tests.support.servers import RedisProc

    proc = RedisProc().start()
    try:
        s = make_settings(tmp_path, proc.url, abdm_gateway_url=sandbox[1])
        seed(s)
        async with service_app(s) as (_, c):
            r, _ = await post_share(c, gw)
            assert r.status_code == 202
            proc.kill()
            r2, rid2 = await post_share(c, gw, abha="later@sbx")
            assert r2.status_code == 503 and r2.json()["error"] == "unavailable"
            proc.start()
            await asyncio.sleep(0.2)
            r3, _ = await post_share(c, gw, abha="later@sbx", request_id=rid2)  # the gateway's retry
            assert r3.status_code == 202, r3.text
            assert (await on_share_for(gw, rid2))[0]["tokenNumber"] in ("A1", "A2")
    finally:
        proc.cleanup()


async def test_share_paths_bypass_the_router_and_answer_as_their_routes_do(
    service: tuple[FastAPI, httpx.AsyncClient], gw: SandboxState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POSTs to the three share paths are dispatched ahead of the middleware and FastAPI's router
    (`FastRoutes`, `ShareRoute`), and answer exactly as the registered routes do: every status, error
    body and header, what the application's middleware adds included (body limit, security headers)."""
    from token_service.fast_routes import FastRoutes

    app, client = service
    routed: list[str] = []
    router_call = type(app.router).__call__

    async def counting(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if self is app.router:  # (the sandbox gateway in this process is a FastAPI app too)
            routed.append(f"{scope['method']} {scope['path']}")
        await router_call(self, scope, receive, send)

    monkeypatch.setattr(type(app.router), "__call__", counting)
    headers, body = gw.build_share("v3", HIP, "OPD1", "a@sbx")
    no_jwt = {k: v for k, v in headers.items() if k.lower() != "authorization"}
    requests: list[tuple[str, str, bytes, dict[str, str]]] = [
        ("POST", V3, b"{not json", headers),
        ("POST", V3, body, no_jwt),
        ("POST", V3, body, {**headers, "Authorization": "Bearer not.a.jwt"}),
        ("POST", V1, b"[]", headers),
        ("POST", "/v0.5/patients/profile/share", b'{"requestId": 5}', headers),
        ("POST", V3, b"{" + b" " * (65 * 1024) + b"}", headers),
        ("POST", V3, body, {**headers, "X-HIP-ID": "no spaces allowed"}),
        ("GET", V3, b"", headers),
    ]
    kept = ("content-type", "x-content-type-options", "x-frame-options", "referrer-policy",
            "content-security-policy", "cache-control", "allow")  # fmt: skip

    async def answers() -> list[tuple[int, Any, dict[str, str]]]:
        out = []
        for method, path, content, hdrs in requests:
            r = await client.request(method, path, content=content, headers=hdrs)
            out.append((r.status_code, r.json(), {k: r.headers[k] for k in kept if k in r.headers}))
        return out

    dispatched = await answers()
    assert routed == ["GET " + V3]  # only the GET reached the router
    assert [status for status, _, _ in dispatched] == [400, 401, 401, 400, 400, 413, 400, 405]
    fast = app.middleware_stack
    assert isinstance(fast, FastRoutes)
    monkeypatch.setattr(fast, "routes", {})  # every request now takes the middleware and the routes
    routed.clear()
    assert await answers() == dispatched
    assert len(routed) == len(requests) - 1  # the body limit answers the 413 before any routing
    # A valid share through either path gets its token.
    monkeypatch.undo()
    r, rid = await post_share(client, gw)
    assert r.status_code == 202 and r.json() == {"status": "accepted", "requestId": rid}
    assert (await on_share_for(gw, rid))[0]["tokenNumber"] == "A1"
    spec = (await client.get("/openapi.json")).json()
    assert {V3, V1, "/v0.5/patients/profile/share"} <= set(spec["paths"])


async def test_an_unexpected_error_in_a_share_is_answered_by_the_catch_all(
    client: httpx.AsyncClient, gw: SandboxState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the error middleware does for a route, the share's own path does: the application's
    catch-all answers (logged, 500, with the security headers), and the next share is served."""
    from token_service.abdm.intake import ShareIntake

    accept = ShareIntake.accept

    async def broken(self: ShareIntake, *args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ShareIntake, "accept", broken)
    r, _ = await post_share(client, gw)
    assert r.status_code == 500 and r.json() == {"error": "internal", "detail": "internal error"}
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-store"
    monkeypatch.setattr(ShareIntake, "accept", accept)
    r, rid = await post_share(client, gw)
    assert r.status_code == 202
    assert (await on_share_for(gw, rid))[0]["tokenNumber"] == "A1"


def test_the_202_does_not_wait_for_the_on_shares_wake_up(
    settings: Settings, gw: SandboxState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The acknowledgement promises a committed token, profile and on-share row, nothing more: it is
    sent before the outbox's wake-up runs (here held back), and the on-share follows the wake-up."""
    from tests.support.servers import ServerThread
    from token_service.abdm.outbox import Outbox
    from token_service.app import create_app

    entered, gate = threading.Event(), threading.Event()
    wake = Outbox.wake

    async def held(self: Outbox, *args: Any) -> None:
        entered.set()
        await asyncio.to_thread(gate.wait, 10)
        await wake(self, *args)

    monkeypatch.setattr(Outbox, "wake", held)
    with ServerThread(create_app(settings)) as server:
        rid = str(uuid.uuid4())
        headers, body = gw.build_share("v3", HIP, "OPD1", "ramesh.k1979@sbx", request_id=rid)
        r = httpx.post(f"{server.url}{V3}", content=body, headers=headers, timeout=5)
        assert r.status_code == 202, r.text
        assert not gate.is_set()  # answered while the wake-up is still held
        assert entered.wait(5)  # ... which then runs, after the answer
        (token,) = sql_rows(settings, "select number, request_id from token")
        assert (token.number, token.request_id) == (1, rid)  # committed before the 202
        assert not [s for s in gw.on_shares() if s.get("requestId") == rid]
        gate.set()
        deadline = time.monotonic() + 5
        while not [s for s in gw.on_shares() if s.get("requestId") == rid and s["answered"] == 202]:
            assert time.monotonic() < deadline, "the on-share did not follow the wake-up"
            time.sleep(0.02)

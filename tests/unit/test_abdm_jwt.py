"""Gateway JWT verification against the sandbox's JWKS served through httpx.MockTransport."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from token_service.abdm.jwt_verify import GatewayJWTVerifier, InvalidGatewayToken, JWKSUnavailable
from token_service.abdm.sandbox_state import SandboxState

JWKS_URL = "https://gateway.test/api/hiecm/gateway/v3/certs"


@pytest.fixture(scope="module")
def state() -> SandboxState:
    return SandboxState()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class JWKSServer:
    """Serves the sandbox JWKS and counts fetches; can be told to fail."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.fetches = 0
        self.status = 200
        self.seen_auth: list[str | None] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        assert str(request.url) == JWKS_URL
        self.fetches += 1
        self.seen_auth.append(request.headers.get("authorization"))
        if self.status != 200:
            return httpx.Response(self.status, json={"error": "down"})
        return httpx.Response(200, json=self.state.jwks())


@pytest.fixture
def server(state: SandboxState) -> JWKSServer:
    return JWKSServer(state)


@pytest.fixture
async def http(server: JWKSServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handler)) as client:
        yield client


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def verifier(http: httpx.AsyncClient, clock: FakeClock) -> GatewayJWTVerifier:
    return GatewayJWTVerifier(JWKS_URL, http, clock=clock)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _gateway_claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "exp": now + 300,
        "iat": now,
        "nbf": now,
        "aud": "account",
        "clientId": "GATEWAY",
        "realm_access": {"roles": ["gateway"]},
        **extra,
    }


async def test_valid_token(verifier: GatewayJWTVerifier, state: SandboxState) -> None:
    claims = await verifier.verify(f"Bearer {state.sign_gateway_jwt()}")
    assert claims["clientId"] == "GATEWAY"
    assert "gateway" in claims["realm_access"]["roles"]
    assert claims["aud"] == "account"


async def test_bearer_scheme_is_case_insensitive(verifier: GatewayJWTVerifier, state: SandboxState) -> None:
    assert await verifier.verify(f"bearer  {state.sign_gateway_jwt()}")


async def test_many_verifications_fetch_jwks_once(
    verifier: GatewayJWTVerifier, state: SandboxState, server: JWKSServer
) -> None:
    tokens = [state.sign_gateway_jwt() for _ in range(5)]
    for _ in range(20):
        for token in tokens:
            await verifier.verify(f"Bearer {token}")
    assert server.fetches == 1


async def test_concurrent_cold_start_fetches_once(
    verifier: GatewayJWTVerifier, state: SandboxState, server: JWKSServer
) -> None:
    token = state.sign_gateway_jwt()
    await asyncio.gather(*(verifier.verify(f"Bearer {token}") for _ in range(30)))
    assert server.fetches == 1


async def test_expired(verifier: GatewayJWTVerifier, state: SandboxState) -> None:
    now = int(time.time())
    token = state.sign_gateway_jwt({"exp": now - 120, "iat": now - 600, "nbf": now - 600})
    with pytest.raises(InvalidGatewayToken, match="expired"):
        await verifier.verify(f"Bearer {token}")


async def test_expired_within_leeway_is_accepted(verifier: GatewayJWTVerifier, state: SandboxState) -> None:
    now = int(time.time())
    token = state.sign_gateway_jwt({"exp": now - 10, "iat": now - 600, "nbf": now - 600})
    assert await verifier.verify(f"Bearer {token}")


async def test_not_yet_valid(verifier: GatewayJWTVerifier, state: SandboxState) -> None:
    token = state.sign_gateway_jwt({"nbf": int(time.time()) + 600})
    with pytest.raises(InvalidGatewayToken, match="not yet valid"):
        await verifier.verify(f"Bearer {token}")


async def test_exp_is_required(verifier: GatewayJWTVerifier, state: SandboxState) -> None:
    with pytest.raises(InvalidGatewayToken):
        await verifier.verify(f"Bearer {state.sign_gateway_jwt({'exp': None})}")


async def test_unknown_kid_refetches_once_then_rejects(
    verifier: GatewayJWTVerifier, state: SandboxState, server: JWKSServer, clock: FakeClock
) -> None:
    await verifier.verify(f"Bearer {state.sign_gateway_jwt()}")
    assert server.fetches == 1
    clock.now += 60  # the cache is a minute old when a token with a new kid arrives
    forged = state.sign_gateway_jwt(kid="rotated-or-forged")
    with pytest.raises(InvalidGatewayToken, match="unknown kid"):
        await verifier.verify(f"Bearer {forged}")
    assert server.fetches == 2
    # An attacker spraying new kids gets no more fetches until the interval has passed.
    for n in range(25):
        with pytest.raises(InvalidGatewayToken, match="unknown kid"):
            await verifier.verify(f"Bearer {state.sign_gateway_jwt(kid=f'forged-{n}')}")
    assert server.fetches == 2
    clock.now += 11
    with pytest.raises(InvalidGatewayToken, match="unknown kid"):
        await verifier.verify(f"Bearer {forged}")
    assert server.fetches == 3
    # Known keys keep working throughout.
    assert await verifier.verify(f"Bearer {state.sign_gateway_jwt()}")
    assert server.fetches == 3


async def test_unknown_kid_right_after_a_fetch_does_not_refetch(
    verifier: GatewayJWTVerifier, state: SandboxState, server: JWKSServer
) -> None:
    await verifier.verify(f"Bearer {state.sign_gateway_jwt()}")
    with pytest.raises(InvalidGatewayToken, match="unknown kid"):
        await verifier.verify(f"Bearer {state.sign_gateway_jwt(kid='brand-new')}")
    assert server.fetches == 1


async def test_rotated_key_is_picked_up_by_refetch(http: httpx.AsyncClient, server: JWKSServer) -> None:
    old, new = SandboxState(), SandboxState()
    server.state = old
    verifier = GatewayJWTVerifier(JWKS_URL, http, min_refetch_interval_s=0)
    await verifier.verify(f"Bearer {old.sign_gateway_jwt()}")
    server.state = new  # the gateway rotated its key
    assert await verifier.verify(f"Bearer {new.sign_gateway_jwt()}")
    assert server.fetches == 2


async def test_wrong_signature_same_kid(verifier: GatewayJWTVerifier, state: SandboxState) -> None:
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(_gateway_claims(), other_key, algorithm="RS256", headers={"kid": state.kid})
    with pytest.raises(InvalidGatewayToken, match="signature"):
        await verifier.verify(f"Bearer {token}")


async def test_alg_none(verifier: GatewayJWTVerifier, state: SandboxState) -> None:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": state.kid}).encode())
    payload = _b64(json.dumps(_gateway_claims()).encode())
    for token in (f"{header}.{payload}.", f"{header}.{payload}"):
        with pytest.raises(InvalidGatewayToken):
            await verifier.verify(f"Bearer {token}")


async def test_hs256_with_public_key_as_secret(verifier: GatewayJWTVerifier, state: SandboxState) -> None:
    pem = state.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": state.kid}).encode())
    payload = _b64(json.dumps(_gateway_claims()).encode())
    signature = _b64(hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    with pytest.raises(InvalidGatewayToken, match="not allowed"):
        await verifier.verify(f"Bearer {header}.{payload}.{signature}")


async def test_rs512_with_the_right_key_is_still_refused(
    verifier: GatewayJWTVerifier, state: SandboxState
) -> None:
    token = jwt.encode(_gateway_claims(), state.private_key, algorithm="RS512", headers={"kid": state.kid})
    with pytest.raises(InvalidGatewayToken, match="not allowed"):
        await verifier.verify(f"Bearer {token}")


@pytest.mark.parametrize(
    "override",
    [
        {"realm_access": {"roles": ["hip", "offline_access"]}},
        {"realm_access": None},
        {"realm_access": {"roles": "gateway"}},
        {"realm_access": ["gateway"]},
    ],
)
async def test_missing_gateway_role(
    verifier: GatewayJWTVerifier, state: SandboxState, override: dict[str, Any]
) -> None:
    with pytest.raises(InvalidGatewayToken, match="role"):
        await verifier.verify(f"Bearer {state.sign_gateway_jwt(override)}")


async def test_audience(verifier: GatewayJWTVerifier, state: SandboxState) -> None:
    assert await verifier.verify(f"Bearer {state.sign_gateway_jwt({'aud': None})}")
    assert await verifier.verify(f"Bearer {state.sign_gateway_jwt({'aud': ['broker', 'account']})}")
    with pytest.raises(InvalidGatewayToken, match="audience"):
        await verifier.verify(f"Bearer {state.sign_gateway_jwt({'aud': 'somebody-else'})}")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer not.a.jwt",
        "Bearer abc",
        "Bearer " + "a" * 20000,
    ],
)
async def test_malformed_headers(verifier: GatewayJWTVerifier, header: str | None) -> None:
    with pytest.raises(InvalidGatewayToken):
        await verifier.verify(header)


async def test_token_without_kid(verifier: GatewayJWTVerifier, state: SandboxState) -> None:
    token = jwt.encode(_gateway_claims(), state.private_key, algorithm="RS256")
    with pytest.raises(InvalidGatewayToken, match="kid"):
        await verifier.verify(f"Bearer {token}")


async def test_jwks_unavailable_is_distinct_and_rate_limited(
    verifier: GatewayJWTVerifier, state: SandboxState, server: JWKSServer, clock: FakeClock
) -> None:
    server.status = 503
    token = state.sign_gateway_jwt()
    with pytest.raises(JWKSUnavailable):
        await verifier.verify(f"Bearer {token}")
    with pytest.raises(JWKSUnavailable):
        await verifier.verify(f"Bearer {token}")
    assert server.fetches == 1
    server.status = 200
    clock.now += 10
    assert await verifier.verify(f"Bearer {token}")
    assert server.fetches == 2


async def test_stale_keys_refetched_but_kept_when_gateway_is_down(
    http: httpx.AsyncClient, state: SandboxState, server: JWKSServer, clock: FakeClock
) -> None:
    verifier = GatewayJWTVerifier(JWKS_URL, http, clock=clock, max_age_s=600)
    token = state.sign_gateway_jwt()
    await verifier.verify(f"Bearer {token}")
    clock.now += 601
    server.status = 500
    assert await verifier.verify(f"Bearer {token}")
    assert server.fetches == 2
    assert await verifier.verify(f"Bearer {token}")
    assert server.fetches == 2


async def test_bearer_provider_authorises_jwks_fetch(
    http: httpx.AsyncClient, state: SandboxState, server: JWKSServer
) -> None:
    async def session_token() -> str:
        return "our-session-token"

    verifier = GatewayJWTVerifier(JWKS_URL, http, bearer_provider=session_token)
    await verifier.verify(f"Bearer {state.sign_gateway_jwt()}")
    assert server.seen_auth == ["Bearer our-session-token"]


async def test_jwks_entries_we_cannot_use_are_skipped(http: httpx.AsyncClient, state: SandboxState) -> None:
    jwk = state.public_jwk()
    document = {
        "keys": [
            "junk",
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {**jwk, "kid": "enc-key", "use": "enc"},
            {k: v for k, v in jwk.items() if k != "kid"},
            jwk,
        ]
    }
    transport = httpx.MockTransport(lambda _request: httpx.Response(200, json=document))
    async with httpx.AsyncClient(transport=transport) as client:
        verifier = GatewayJWTVerifier(JWKS_URL, client)
        assert await verifier.verify(f"Bearer {state.sign_gateway_jwt()}")
        with pytest.raises(InvalidGatewayToken):
            await verifier.verify(f"Bearer {state.sign_gateway_jwt(kid='enc-key')}")


segment = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=", max_size=40)
json_segment = st.dictionaries(
    st.sampled_from(["alg", "kid", "typ", "crit", "b64"]), st.none() | st.text() | st.integers()
)


@settings(max_examples=200, deadline=None)
@given(
    raw=st.text(max_size=80)
    | st.builds(lambda a, b, c: f"{a}.{b}.{c}", segment, segment, segment)
    | st.builds(
        lambda h, p: f"{_b64(json.dumps(h).encode())}.{_b64(json.dumps(p).encode())}.c2ln",
        json_segment,
        st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
    )
)
async def test_garbage_tokens_only_invalid_gateway_token(state: SandboxState, raw: str) -> None:
    transport = httpx.MockTransport(lambda _request: httpx.Response(200, json=state.jwks()))
    async with httpx.AsyncClient(transport=transport) as client:
        verifier = GatewayJWTVerifier(JWKS_URL, client)
        with pytest.raises(InvalidGatewayToken):
            await verifier.verify(f"Bearer {raw}")


async def test_verified_token_is_remembered_until_it_expires(
    http: httpx.AsyncClient, state: SandboxState, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = GatewayJWTVerifier(JWKS_URL, http, leeway_s=0)
    decoded: list[str] = []
    real_decode = verifier._decode

    def counting(token: str, key: Any) -> dict[str, Any]:
        decoded.append(token)
        return real_decode(token, key)

    monkeypatch.setattr(verifier, "_decode", counting)
    # Whole seconds: a token signed late in a second with a 1 s lifetime expired before a slow box
    # had verified it once. Two seconds leave at least one; then wait until it has expired.
    token = state.sign_gateway_jwt(ttl_s=2)
    first = await verifier.verify(f"Bearer {token}")
    assert await verifier.verify(f"Bearer {token}") == first
    assert decoded == [token]  # the signature was checked once
    await asyncio.sleep(first["exp"] - time.time() + 0.2)
    with pytest.raises(InvalidGatewayToken, match="expired"):
        await verifier.verify(f"Bearer {token}")
    assert decoded == [token, token]


async def test_remembered_token_goes_with_its_key(http: httpx.AsyncClient, server: JWKSServer) -> None:
    old, new = SandboxState(), SandboxState()
    server.state = old
    verifier = GatewayJWTVerifier(JWKS_URL, http, min_refetch_interval_s=0)
    old_token = old.sign_gateway_jwt()
    await verifier.verify(f"Bearer {old_token}")
    server.state = new  # the gateway rotated its key and dropped the old one
    await verifier.verify(f"Bearer {new.sign_gateway_jwt()}")
    with pytest.raises(InvalidGatewayToken):
        await verifier.verify(f"Bearer {old_token}")

"""Verification of the ABDM gateway's bearer JWT on inbound calls, against a cached JWKS.

Errors::

    InvalidGatewayToken        the caller should answer 401
      └── JWKSUnavailable      we could not get keys at all: answer 503 so the gateway retries
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import jwt

from token_service.tasks import SingleFlight

__all__ = ["GatewayJWTVerifier", "InvalidGatewayToken", "JWKSUnavailable"]

log = logging.getLogger(__name__)
JWKS = "jwks"  # the one fetch of the key set at a time

# Only RS256: the gateway signs with it, and naming one asymmetric algorithm is what defeats
# `alg: none` and the HS256-with-the-public-key confusion attack.
ALGORITHM = "RS256"
MAX_TOKEN_LEN = 16 * 1024
VERIFIED_MAX = 4096  # tokens remembered as verified (the gateway holds a handful at a time)


class InvalidGatewayToken(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JWKSUnavailable(InvalidGatewayToken):
    pass


def bearer_token(authorization_header: str | None) -> str:
    if not authorization_header:
        raise InvalidGatewayToken("missing Authorization header")
    scheme, _, token = authorization_header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise InvalidGatewayToken("Authorization header is not a Bearer token")
    if len(token) > MAX_TOKEN_LEN:
        raise InvalidGatewayToken("token is too long")
    return token


def keys_from_jwks(document: object) -> dict[str, jwt.PyJWK]:
    """RSA signing keys by kid; keys we could never use (no kid, other type or algorithm) are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("JWKS document has no 'keys' list")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid or entry.get("kty") != "RSA":
            continue
        if entry.get("use", "sig") != "sig" or entry.get("alg", ALGORITHM) != ALGORITHM:
            continue
        try:
            keys[kid] = jwt.PyJWK(entry, algorithm=ALGORITHM)
        except jwt.PyJWTError as exc:
            log.warning("skipping unusable JWK %s: %s", kid, exc)
    return keys


class GatewayJWTVerifier:
    """Verifies gateway JWTs. The JWKS is fetched once, then only on an unknown `kid` (at most once per
    `min_refetch_interval_s`, so forged kids cannot make us hammer the gateway) or after `max_age_s`."""

    def __init__(
        self,
        jwks_url: str,
        http: httpx.AsyncClient,
        leeway_s: float = 30,
        required_role: str = "gateway",
        audience: str = "account",
        min_refetch_interval_s: float = 10,
        *,
        max_age_s: float = 3600,
        fetch_timeout_s: float = 5.0,
        bearer_provider: Callable[[], Awaitable[str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._jwks_url = jwks_url
        self._http = http
        self._leeway_s = leeway_s
        self._required_role = required_role
        self._audience = audience
        self._min_refetch_interval_s = min_refetch_interval_s
        self._max_age_s = max_age_s
        self._fetch_timeout_s = fetch_timeout_s
        # The v3 certs endpoint was seen to want our session token; v0.5 and the sandbox do not.
        self._bearer_provider = bearer_provider
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] | None = None
        self._loaded_at: float | None = None
        self._last_attempt_at: float | None = None
        self._fetches: SingleFlight[None] = SingleFlight()  # concurrent shares share one fetch
        self.fetch_count = 0
        # The gateway reuses one bearer for many calls: a token verified once is remembered (claims,
        # kid) until it expires, so the RSA check runs once per token, not once per share. A kid
        # that leaves the key set takes its tokens with it.
        self._verified: dict[str, tuple[dict[str, Any], str]] = {}

    async def verify(self, authorization_header: str | None) -> dict[str, Any]:
        """The verified claims, or `InvalidGatewayToken` with a reason safe to log."""
        token = bearer_token(authorization_header)
        known = self._verified.get(token)
        if known is not None:
            claims, known_kid = known
            fresh = not self._stale() and self._cached(known_kid) is not None
            if fresh and time.time() < claims["exp"] + self._leeway_s:
                return claims
            del self._verified[token]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidGatewayToken(f"malformed token: {exc}") from exc
        alg = header.get("alg")
        if alg != ALGORITHM:
            raise InvalidGatewayToken(f"algorithm {str(alg)[:20]!r} is not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidGatewayToken("token has no kid")
        key = await self._key_for(kid)
        claims = self._decode(token, key)
        self._check_audience(claims)
        self._check_role(claims)
        if isinstance(claims.get("exp"), int | float):
            if len(self._verified) >= VERIFIED_MAX:
                self._verified.pop(next(iter(self._verified)))  # the oldest
            self._verified[token] = (claims, kid)
        return claims

    async def refresh(self) -> None:
        """Fetch the JWKS now (e.g. at startup), regardless of the rate limit."""
        await self._fetches.run(JWKS, self._fetch)

    def _decode(self, token: str, key: jwt.PyJWK) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key=key,
                algorithms=[ALGORITHM],
                leeway=self._leeway_s,
                # `aud` is checked by hand below: the gateway's tokens may lack it, and PyJWT would
                # reject a missing one once an audience is named.
                options={"require": ["exp"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidGatewayToken("token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise InvalidGatewayToken("token is not yet valid") from exc
        except jwt.InvalidSignatureError as exc:
            raise InvalidGatewayToken("signature does not verify") from exc
        except jwt.PyJWTError as exc:
            raise InvalidGatewayToken(f"invalid token: {exc}") from exc

    def _check_audience(self, claims: dict[str, Any]) -> None:
        if "aud" not in claims:
            return
        aud = claims["aud"]
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or self._audience not in audiences:
            raise InvalidGatewayToken(f"audience is not {self._audience!r}")

    def _check_role(self, claims: dict[str, Any]) -> None:
        realm_access = claims.get("realm_access")
        roles = realm_access.get("roles") if isinstance(realm_access, dict) else None
        if not isinstance(roles, list) or self._required_role not in roles:
            raise InvalidGatewayToken(f"token lacks role {self._required_role!r}")

    async def _key_for(self, kid: str) -> jwt.PyJWK:
        key = self._cached(kid)
        if key is not None and not self._stale():
            return key
        # A fetch under way (the startup's, say) is waited for; a new one only as often as allowed.
        if self._fetches.in_flight(JWKS) or self._may_fetch():
            with contextlib.suppress(JWKSUnavailable):  # the keys we have keep serving
                await self._fetches.run(JWKS, self._fetch_tolerating_errors)
        key = self._cached(kid)
        if key is not None:
            return key
        if self._keys is None:
            raise JWKSUnavailable("gateway keys (JWKS) are unavailable")
        raise InvalidGatewayToken("unknown kid")

    def _cached(self, kid: str) -> jwt.PyJWK | None:
        return self._keys.get(kid) if self._keys is not None else None

    def _stale(self) -> bool:
        return self._loaded_at is not None and self._clock() - self._loaded_at > self._max_age_s

    def _may_fetch(self) -> bool:
        last = self._last_attempt_at
        return last is None or self._clock() - last >= self._min_refetch_interval_s

    async def _fetch_tolerating_errors(self) -> None:
        try:
            await self._fetch()
        except JWKSUnavailable as exc:
            # Keep serving with the keys we have: a gateway hiccup must not lock every patient out.
            log.warning("JWKS refresh failed, keeping %s cached keys: %s", len(self._keys or {}), exc)

    async def _fetch(self) -> None:
        self._last_attempt_at = self._clock()
        self.fetch_count += 1
        headers = {"Accept": "application/json"}
        try:
            if self._bearer_provider is not None:
                headers["Authorization"] = f"Bearer {await self._bearer_provider()}"
            response = await self._http.get(self._jwks_url, headers=headers, timeout=self._fetch_timeout_s)
        except Exception as exc:  # the provider may fail in its own ways; all mean "no keys now"
            raise JWKSUnavailable(f"JWKS fetch failed: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise JWKSUnavailable(f"JWKS fetch answered HTTP {response.status_code}")
        try:
            keys = keys_from_jwks(response.json())
        except ValueError as exc:
            raise JWKSUnavailable(f"JWKS document is invalid: {exc}") from exc
        if not keys:
            raise JWKSUnavailable("JWKS has no usable RS256 keys")
        self._keys = keys
        self._loaded_at = self._clock()

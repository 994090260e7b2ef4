"""Outbound calls to the ABDM gateway: session token (cached) and profile on-share (v3 and v1.0).

Errors::

    GatewayError      session_token() could not get a token (status, retryable, detail)
    on_share() never raises for gateway trouble: it returns a GatewayResult.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from token_service.abdm.http1 import GatewayHttp, Unreachable
from token_service.abdm.schemas import ShareRequest
from token_service.tasks import SingleFlight

__all__ = [
    "GatewayClient",
    "GatewayError",
    "GatewayResult",
    "build_on_share_v1",
    "build_on_share_v3",
    "describe_gateway_error",
    "gateway_timestamp",
    "is_retryable_status",
]

log = logging.getLogger(__name__)

SESSIONS_PATH = "/api/hiecm/gateway/v3/sessions"
ON_SHARE_V3_PATH = "/api/hiecm/patient-share/v3/on-share"
ON_SHARE_V1_PATH = "/gateway/v1.0/patients/profile/on-share"
BRIDGE_URL_PATH = "/api/hiecm/gateway/v3/bridge/url"
# Refresh this long before the gateway's stated expiry so a token never dies in flight.
SESSION_EARLY_REFRESH_S = 30.0
DEFAULT_SESSION_TTL_S = 300.0


class GatewayError(Exception):
    def __init__(self, detail: str, status: int | None, retryable: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.retryable = retryable


@dataclass(frozen=True)
class GatewayResult:
    ok: bool
    status: int | None
    retryable: bool
    error: str | None
    outbound_request_id: str


def gateway_timestamp(now: datetime | None = None) -> str:
    """ISO-8601 UTC with milliseconds and `Z`, the only form the gateway's clock-skew check accepts."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def is_retryable_status(status: int) -> bool:
    return status >= 500 or status in (401, 429)


def _error_object(error: tuple[str, str]) -> dict[str, str]:
    code, message = error
    return {"code": code, "message": message}


def _check_outcome(token_number: str | None, error: tuple[str, str] | None) -> None:
    # The gateway reads "both" as malformed: exactly one of them, always.
    if (token_number is None) == (error is None):
        raise ValueError("give exactly one of token_number and error")


def build_on_share_v3(
    share: ShareRequest, token_number: str | None, expiry_s: int, error: tuple[str, str] | None = None
) -> dict[str, Any]:
    _check_outcome(token_number, error)
    response = {"requestId": share.request_id}
    if error is not None:
        return {"error": _error_object(error), "response": response}
    return {
        "acknowledgement": {
            "status": "SUCCESS",
            "abhaAddress": share.profile.abha_address,
            "profile": {
                "context": share.counter_code,
                "tokenNumber": str(token_number),
                "expiry": str(int(expiry_s)),
            },
        },
        "response": response,
    }


def build_on_share_v1(
    share: ShareRequest,
    token_number: str | None,
    expiry_s: int,
    error: tuple[str, str] | None = None,
    *,
    request_id: str,
    timestamp: str,
) -> dict[str, Any]:
    """v1.0 carries no expiry; `expiry_s` is accepted so both builders share a call shape."""
    _check_outcome(token_number, error)
    body: dict[str, Any] = {"requestId": request_id, "timestamp": timestamp}
    if error is not None:
        body["error"] = _error_object(error)
    else:
        body["acknowledgement"] = {
            "status": "SUCCESS",
            "healthId": share.profile.abha_address,
            "tokenNumber": str(token_number),
        }
    body["resp"] = {"requestId": share.request_id}
    return body


def _pick(obj: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()
    return None


def _describe_object(obj: dict[str, Any]) -> str | None:
    # Shapes seen: {"error": {code, message}}, {"code", "message"}, {"fault": {code, message,
    # description}} (API manager, e.g. 900901), {"errors": [{code, message}]}, Spring's
    # {"status", "error": "Bad Request", "message"}.
    for nested_key in ("error", "fault"):
        nested = obj.get(nested_key)
        if isinstance(nested, dict):
            return _describe_object(nested)
    errors = obj.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return "; ".join(d for e in errors[:3] if isinstance(e, dict) and (d := _describe_object(e)))
    message = _pick(obj, "message", "errorMessage", "error_description", "detail", "error")
    code = _pick(obj, "code", "errorCode") or (
        _pick(obj, "error") if message != _pick(obj, "error") else None
    )
    description = _pick(obj, "description")
    parts = [p for p in (code, message) if p]
    if description and description != message:
        parts.append(f"({description})")
    return " ".join(parts) or None


def describe_gateway_error(status: int, body: bytes) -> str:
    """One readable line for logs and the on-share record, whatever shape the gateway chose."""
    text = body.decode("utf-8", "replace").strip()
    detail: str | None = None
    try:
        data = json.loads(text) if text else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        detail = _describe_object(data)
    elif text and not text.lstrip().startswith("<"):
        detail = " ".join(text.split())
    line = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
    return line[:300]


class GatewayClient:
    """Talks to one gateway with one client id. Share it: the session token is cached across calls."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        cm_id: str,
        http: GatewayHttp | httpx.AsyncClient,
        clock: Callable[[], float] = time.monotonic,
        *,
        timeout_s: float = 5.0,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._cm_id = cm_id
        self._http = http
        self._clock = clock
        self._timeout_s = timeout_s
        self._token: str | None = None
        self._token_valid_until = 0.0
        self._sessions: SingleFlight[str] = SingleFlight()

    def invalidate(self) -> None:
        self._token = None
        self._token_valid_until = 0.0

    def _headers(self, request_id: str, token: str | None = None) -> dict[str, str]:
        headers = {
            "REQUEST-ID": request_id,
            "TIMESTAMP": gateway_timestamp(),
            "X-CM-ID": self._cm_id,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def session_token(self) -> str:
        """A cached session token, fetched again ~30 s before the gateway says it expires."""
        if self._token is not None and self._clock() < self._token_valid_until:
            return self._token
        # Concurrent callers share the one fetch.
        return await self._sessions.run("session", self._fetch_session)

    async def _fetch_session(self) -> str:
        body = {
            "clientId": self._client_id,
            "clientSecret": self._client_secret,
            "grantType": "client_credentials",
        }
        try:
            status, content = await self._request(
                "POST", self._base + SESSIONS_PATH, body, self._headers(str(uuid.uuid4()))
            )
        except Unreachable as exc:
            raise GatewayError(f"session request failed: {exc.name}", None, True) from exc
        if status != 200:
            # Wrong credentials stay wrong: only server trouble and rate limits are worth a retry here.
            retryable = status >= 500 or status == 429
            raise GatewayError(describe_gateway_error(status, content), status, retryable)
        try:
            data = json.loads(content)
            token = data["accessToken"]
            expires_in = float(data.get("expiresIn") or DEFAULT_SESSION_TTL_S)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise GatewayError("session answer has no accessToken", 200, True) from exc
        if not isinstance(token, str) or not token or not token.isprintable() or " " in token:
            # It goes into an Authorization header: no spaces or line breaks can be in it.
            raise GatewayError("session answer has no usable accessToken", 200, True)
        margin = min(SESSION_EARLY_REFRESH_S, expires_in / 2)
        self._token = token
        self._token_valid_until = self._clock() + expires_in - margin
        return token

    async def on_share(
        self,
        share: ShareRequest,
        token_number: str | None,
        expiry_s: int,
        error: tuple[str, str] | None = None,
    ) -> GatewayResult:
        """Send the on-share matching `share.version`. On 401 the session is refreshed and the call
        retried once, with a fresh REQUEST-ID (the gateway rejects a reused one, ABDM-2404)."""
        _check_outcome(token_number, error)
        path = ON_SHARE_V3_PATH if share.version == "v3" else ON_SHARE_V1_PATH
        result = GatewayResult(False, None, True, "not sent", "")
        for _attempt in range(2):
            request_id = str(uuid.uuid4())
            try:
                token = await self.session_token()
            except GatewayError as exc:
                return GatewayResult(False, exc.status, exc.retryable, f"session: {exc.detail}", request_id)
            headers = self._headers(request_id, token)
            if share.version == "v3":
                body = build_on_share_v3(share, token_number, expiry_s, error)
            else:
                body = build_on_share_v1(
                    share,
                    token_number,
                    expiry_s,
                    error,
                    request_id=request_id,
                    timestamp=headers["TIMESTAMP"],
                )
            result = await self._send("POST", path, body, headers, request_id)
            if result.status != 401:
                return result
            # The gateway dropped our session early (restart, revocation): a new one, one more try.
            self.invalidate()
        return result

    async def register_bridge_url(self, url: str) -> GatewayResult:
        """PATCH the callback (bridge) URL for this client id; the gateway keeps the last one written."""
        request_id = str(uuid.uuid4())
        try:
            token = await self.session_token()
        except GatewayError as exc:
            return GatewayResult(False, exc.status, exc.retryable, f"session: {exc.detail}", request_id)
        headers = self._headers(request_id, token)
        result = await self._send("PATCH", BRIDGE_URL_PATH, {"url": url}, headers, request_id)
        if result.status == 401:
            self.invalidate()
        return result

    async def _request(
        self, method: str, url: str, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """One call: (status, body). Raises Unreachable when no answer came (timeout, refused, reset).

        The service passes its own `GatewayHttp`: at the morning rush every share costs an on-share
        (see `http1`). An httpx client works the same (tests drive it with httpx's mock transport).
        """
        data = orjson.dumps(body)
        if isinstance(self._http, GatewayHttp):
            return await self._http.request(method, url, data, headers, self._timeout_s)
        try:
            response = await self._http.request(
                method, url, content=data, headers=headers, timeout=self._timeout_s
            )
        except httpx.TimeoutException as exc:
            raise Unreachable(type(exc).__name__, timed_out=True) from exc
        except httpx.TransportError as exc:
            raise Unreachable(type(exc).__name__) from exc
        return response.status_code, response.content

    async def _send(
        self, method: str, path: str, body: dict[str, Any], headers: dict[str, str], request_id: str
    ) -> GatewayResult:
        try:
            status, content = await self._request(method, self._base + path, body, headers)
        except Unreachable as exc:
            detail = "timed out" if exc.timed_out else f"connection failed: {exc.name}"
            return GatewayResult(False, None, True, detail, request_id)
        if 200 <= status < 300:
            return GatewayResult(True, status, False, None, request_id)
        detail = describe_gateway_error(status, content)
        log.info("gateway %s %s answered %s (REQUEST-ID %s)", method, path, detail, request_id)
        return GatewayResult(False, status, is_retryable_status(status), detail, request_id)

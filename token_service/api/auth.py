"""Staff login: a session cookie for the pages and the same token for `Authorization: Bearer` API use."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy import select

from token_service import sessions
from token_service.api.deps import SESSION_COOKIE, PrincipalDep, StateDep
from token_service.api.schemas import LoginIn
from token_service.auth import new_session, read_session_claims, verify_password
from token_service.errors import Unauthorized
from token_service.models import User
from token_service.ratelimit import (
    LoginThrottle,
    RateLimited,
    current_client_ip,
    limiter_of,
    rate_limited_response,
)
from token_service.state import AppState

router = APIRouter(prefix="/api/auth", tags=["auth"])

_LOGIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "wrong username or password"},
    429: {"description": "too many failed logins for this user or address; see Retry-After"},
    503: {"description": "the queue store (which counts failed logins) is down"},
}


@router.post("/login", responses=_LOGIN_RESPONSES)
async def login_route(body: LoginIn, request: Request, response: Response, state: StateDep) -> Any:
    try:
        return await login(body, response, state, client_ip=request.client.host if request.client else None)
    except RateLimited as exc:
        return rate_limited_response(exc)


async def login(
    body: LoginIn, response: Response, state: AppState, client_ip: str | None = None
) -> dict[str, Any]:
    """Check the password (after the lockouts), then issue a fresh session token and cookie.

    Every successful login mints a new token and overwrites whatever ``opd_session`` the browser
    presented, so a cookie planted before login is never the one the user ends up logged in with.
    """
    client_ip = client_ip or current_client_ip.get()
    throttle = LoginThrottle(limiter_of(state))
    await throttle.check(body.username, client_ip)
    async with state.engine.connect() as conn:
        row = (await conn.execute(select(User).where(User.username == body.username))).first()  # type: ignore[arg-type]
    ok = verify_password(row.password_hash if row else None, body.password)
    if row is None or not ok or not row.active:
        await throttle.failed(body.username, client_ip)
        raise Unauthorized("wrong username or password", code="invalid_credentials")
    await throttle.succeeded(body.username, client_ip)
    ttl = state.settings.session_ttl_seconds
    token, session = new_session(state.settings.secret_key, row.id, row.username, ttl)
    await sessions.start(state, session)
    response.set_cookie(SESSION_COOKIE, token, max_age=ttl, httponly=True, samesite="strict", path="/")
    return {
        "access_token": token,
        "token_type": "bearer",
        "expires_in": ttl,
        "user": {"username": row.username, "role": row.role, "hip_id": row.hip_id, "counters": row.counters},
    }


@router.post("/logout", status_code=204, responses={503: {"description": "the session store is down; retry"}})
async def logout(request: Request, state: StateDep) -> Response:
    """End the session (cookie or `Authorization: Bearer`) on the server and clear the cookie: a copy
    of the token is refused from now on."""
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    header = request.headers.get("authorization", "")
    bearer = header[7:].strip() if header[:7].lower() == "bearer " else None
    credentials = {request.cookies.get(SESSION_COOKIE), bearer}
    try:
        for credential in credentials:
            await end_session(state, credential)
    except (RedisError, OSError):
        # Not ended: say so (the client retries), though the cookie is cleared either way.
        body = {"error": "unavailable", "detail": "could not end the session now; retry shortly"}
        return JSONResponse(body, status_code=503, headers=dict(response.headers))
    request.scope.setdefault("state", {})[sessions.SESSION_ENDED] = True
    return response


async def end_session(state: AppState, credential: str | None) -> None:
    """End the session a token names, if it is one of ours; anything else is ignored."""
    if not credential or credential.startswith("dev_"):
        return
    try:
        session = read_session_claims(state.settings.secret_key, credential)
    except Unauthorized:
        return
    await sessions.end(state, session)


@router.get("/me")
async def me(principal: PrincipalDep) -> dict[str, Any]:
    return {"name": principal.name, "kind": principal.kind, "role": principal.role, "hip_id": principal.hip_id,
            "counters": list(principal.counters)}  # fmt: skip

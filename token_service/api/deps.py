"""Request dependencies: the app state, the authenticated principal and role checks."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select

from token_service import sessions
from token_service.auth import Principal, hash_device_token, read_session_claims
from token_service.errors import Unauthorized
from token_service.models import Device, User
from token_service.state import AppState

SESSION_COOKIE = "opd_session"
_PRINCIPAL_TTL_S = 5.0  # a deactivated user or revoked device is locked out within seconds


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.opd
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.cookies.get(SESSION_COOKIE)


async def _load(state: AppState, credential: str) -> Principal | None:
    cache: dict[str, tuple[float, Principal | None]] = state.extras.setdefault("principals", {})
    hit = cache.get(credential)
    if hit and time.monotonic() - hit[0] < _PRINCIPAL_TTL_S:
        principal = hit[1]
    else:
        principal = await _lookup(state, credential)
        if len(cache) > 10_000:
            cache.clear()
        cache[credential] = (time.monotonic(), principal)
    # Logout, a password reset or a deactivation ends a session in Redis; that is checked on every
    # request (one ZSCORE), never cached, so a copied token stops working at once in every worker.
    if principal is not None and principal.session is not None:
        if not await sessions.is_live(state, principal.session):
            raise Unauthorized("this session has ended (logged out or revoked); log in again")
    return principal


async def _lookup(state: AppState, credential: str) -> Principal | None:
    if credential.startswith("dev_"):
        async with state.engine.connect() as conn:
            drow = (
                await conn.execute(select(Device).where(Device.token_hash == hash_device_token(credential)))  # type: ignore[arg-type]
            ).first()
        if drow is not None and drow.active:
            return Principal("device", drow.name, drow.kind, drow.hip_id, device_id=drow.id)
        return None
    session = read_session_claims(state.settings.secret_key, credential)
    async with state.engine.connect() as conn:
        row = (await conn.execute(select(User).where(User.id == session.user_id))).first()  # type: ignore[arg-type]
    if row is not None and row.active:
        return Principal(
            "user", row.username, row.role, row.hip_id, tuple(row.counters or ()), session=session
        )
    return None


async def optional_principal(request: Request, state: StateDep) -> Principal | None:
    credential = _bearer(request)
    if not credential:
        return None
    try:
        return await _load(state, credential)
    except Unauthorized:
        return None


async def require_principal(request: Request, state: StateDep) -> Principal:
    credential = _bearer(request)
    if not credential:
        raise Unauthorized("log in first (session cookie or Authorization: Bearer)")
    principal = await _load(state, credential)
    if principal is None:
        raise Unauthorized("unknown, revoked or deactivated credentials")
    return principal


async def require_staff(principal: Annotated[Principal, Depends(require_principal)]) -> Principal:
    principal.require_role("admin", "clerk")
    return principal


async def require_admin(principal: Annotated[Principal, Depends(require_principal)]) -> Principal:
    principal.require_role("admin")
    return principal


PrincipalDep = Annotated[Principal, Depends(require_principal)]
StaffDep = Annotated[Principal, Depends(require_staff)]
AdminDep = Annotated[Principal, Depends(require_admin)]

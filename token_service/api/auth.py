"""Staff login: a session cookie for the pages and the same token for `Authorization: Bearer` API use."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from sqlalchemy import select

from token_service.api.deps import SESSION_COOKIE, PrincipalDep, StateDep
from token_service.api.schemas import LoginIn
from token_service.auth import issue_session, verify_password
from token_service.errors import Unauthorized
from token_service.models import User

router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post("/login")
async def login(body: LoginIn, response: Response, state: StateDep) -> dict[str, Any]:
    async with state.engine.connect() as conn:
        row = (await conn.execute(select(User).where(User.username == body.username))).first()  # type: ignore[arg-type]
    ok = verify_password(row.password_hash if row else None, body.password)
    if row is None or not ok or not row.active:
        raise Unauthorized("wrong username or password", code="invalid_credentials")
    ttl = state.settings.session_ttl_seconds
    token = issue_session(state.settings.secret_key, row.id, row.username, ttl)
    response.set_cookie(SESSION_COOKIE, token, max_age=ttl, httponly=True, samesite="strict", path="/")
    return {
        "access_token": token,
        "token_type": "bearer",
        "expires_in": ttl,
        "user": {"username": row.username, "role": row.role, "hip_id": row.hip_id, "counters": row.counters},
    }


@router.post("/logout", status_code=204)
async def logout(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")


@router.get("/me")
async def me(principal: PrincipalDep) -> dict[str, Any]:
    return {"name": principal.name, "kind": principal.kind, "role": principal.role, "hip_id": principal.hip_id,
            "counters": list(principal.counters)}  # fmt: skip

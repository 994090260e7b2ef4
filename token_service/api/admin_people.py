"""Admin API for people and machines: staff users, device tokens, the audit log; device last-seen stamps."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Query
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from token_service import sessions
from token_service.api.admin_access import admin_store_for, admit
from token_service.api.admin_schemas import (
    DEVICE_NAME,
    USERNAME,
    AuditOut,
    AuditPage,
    DeviceCreated,
    DeviceIn,
    DeviceOut,
    PasswordIn,
    PasswordOut,
    UserIn,
    UserOut,
    UserPatch,
)
from token_service.api.deps import AdminDep, StateDep
from token_service.auth import Principal, hash_device_token
from token_service.clock import from_ms
from token_service.records import admin_store
from token_service.state import AppState

HipId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Username = Annotated[str, Path(pattern=USERNAME)]
DeviceName = Annotated[str, Path(pattern=DEVICE_NAME)]
router = APIRouter(
    prefix="/api/admin/facilities/{hip_id}", tags=["admin"],
    responses={401: {"description": "not logged in"}, 403: {"description": "not an admin of this facility"},
               404: {"description": "unknown facility, user or device"}, 409: {"description": "duplicate"},
               422: {"description": "invalid body"}},
)  # fmt: skip
log = logging.getLogger("token_service.admin")
LAST_SEEN_EVERY_S = 30.0  # one SQL write per device per half minute is plenty for "is it alive?"


def forget_principals(state: AppState, match: Callable[[Principal], bool]) -> None:
    """Drop cached logins in this process so a lock-out is immediate here (other workers: within seconds)."""
    cache: dict[str, tuple[float, Principal | None]] = state.extras.get("principals", {})
    for credential, (_, principal) in list(cache.items()):
        if principal is not None and match(principal):
            cache.pop(credential, None)


def user_out(row: dict[str, Any]) -> UserOut:
    return UserOut(
        username=row["username"], role=row["role"], counters=row["counters"] or [], active=row["active"],
        created_at=row.get("created_at"),
    )  # fmt: skip


def device_out(row: dict[str, Any]) -> DeviceOut:
    return DeviceOut(name=row["name"], kind=row["kind"], printer=row["printer"], active=row["active"],
                     created_at=row.get("created_at"), last_seen_at=row.get("last_seen_at"))  # fmt: skip


async def _listing(state: AppState, hip_id: str, fn: Any) -> list[dict[str, Any]]:
    async with state.engine.connect() as conn:
        await admin_store.facility(conn, hip_id)
        rows: list[dict[str, Any]] = await fn(conn, hip_id)
        return rows


@router.get("/users", response_model=list[UserOut])
async def list_users(hip_id: HipId, principal: AdminDep, state: StateDep) -> list[UserOut]:
    await admit(principal, state, hip_id)
    return [user_out(r) for r in await _listing(state, hip_id, admin_store.users)]


@router.post("/users", response_model=UserOut, status_code=201)
async def create_user(hip_id: HipId, body: UserIn, principal: AdminDep, state: StateDep) -> UserOut:
    """Add a staff user (password hashed with argon2). A clerk with no counters serves every counter."""
    admin = await admin_store_for(principal, state, hip_id)
    return user_out(await admin.create_user(body))


@router.patch("/users/{username}", response_model=UserOut)
async def patch_user(
    hip_id: HipId, username: Username, body: UserPatch, principal: AdminDep, state: StateDep
) -> UserOut:
    """Change role or counters, or `{"active": false}` to lock the user out (and end their sessions)."""
    admin = await admin_store_for(principal, state, hip_id)
    row = await admin.update_user(username, body)
    forget_principals(state, lambda p: p.kind == "user" and p.name == username)
    if body.active is False:
        # The inactive flag already refuses them; ending the sessions keeps a reactivation from
        # bringing back tokens issued before it.
        try:
            await sessions.end_all(state, int(row["id"]))
        except (RedisError, OSError) as exc:
            log.warning("user %s deactivated; sessions not ended in Redis (%r)", username, exc)
    return user_out(row)


@router.post("/users/{username}/password", response_model=PasswordOut)
async def reset_password(
    hip_id: HipId, username: Username, principal: AdminDep, state: StateDep, body: PasswordIn | None = None
) -> PasswordOut:
    """Set a new password, or send no password to have one generated and shown once. Every session
    of the user ends (log out everywhere): whoever knew the old password is out."""
    admin = await admin_store_for(principal, state, hip_id)
    user_id = await _user_id(state, hip_id, username)
    if user_id is not None:
        await sessions.end_all(state, user_id)  # before the change: no Redis, no change (503)
    generated = await admin.reset_password(username, body.password if body else None)
    if user_id is not None:
        try:  # and after it, for a login with the old password that raced the change
            await sessions.end_all(state, user_id)
        except (RedisError, OSError) as exc:
            log.warning("password of %s reset; second session sweep failed (%r)", username, exc)
    forget_principals(state, lambda p: p.kind == "user" and p.name == username)
    return PasswordOut(username=username, password=generated)


async def _user_id(state: AppState, hip_id: str, username: str) -> int | None:
    async with state.engine.connect() as conn:
        query = select(admin_store.USER.c.id).where(
            admin_store.USER.c.username == username, admin_store.USER.c.hip_id == hip_id
        )
        found: int | None = (await conn.execute(query)).scalar_one_or_none()
        return found


@router.get("/devices", response_model=list[DeviceOut])
async def list_devices(hip_id: HipId, principal: AdminDep, state: StateDep) -> list[DeviceOut]:
    """Boards, kiosks and printers with the time each was last seen (updated at most every 30 s)."""
    await admit(principal, state, hip_id)
    return [device_out(r) for r in await _listing(state, hip_id, admin_store.devices)]


@router.post("/devices", response_model=DeviceCreated, status_code=201)
async def create_device(hip_id: HipId, body: DeviceIn, principal: AdminDep, state: StateDep) -> DeviceCreated:
    """Create a device and its bearer token. The token is in this answer only; SQL keeps its hash.

    A revoked device's name may be reused: the replacement gets a fresh token."""
    admin = await admin_store_for(principal, state, hip_id)
    row, token = await admin.create_device(body)
    return DeviceCreated(**device_out(row).model_dump(), token=token)


@router.post("/devices/{name}/revoke", response_model=DeviceOut)
async def revoke_device(hip_id: HipId, name: DeviceName, principal: AdminDep, state: StateDep) -> DeviceOut:
    """Revoke a device token: it gets 401 at once from this worker, within 5 s from every other one."""
    admin = await admin_store_for(principal, state, hip_id)
    row = await admin.revoke_device(name)
    forget_principals(state, lambda p: p.kind == "device" and p.device_id == row["id"])
    return device_out(row)


@router.get("/audit", response_model=AuditPage)
async def audit(
    hip_id: HipId, principal: AdminDep, state: StateDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100, before: Annotated[int | None, Query(ge=1)] = None,
) -> AuditPage:  # fmt: skip
    """Configuration changes and staff actions, newest first. Read-only: no API edits or deletes them."""
    await admit(principal, state, hip_id)
    async with state.engine.connect() as conn:
        await admin_store.facility(conn, hip_id)
        rows = await admin_store.audit_page(conn, hip_id, limit, before)
    items = [AuditOut(**{k: r[k] for k in AuditOut.model_fields}) for r in rows]
    return AuditPage(items=items, next_before=items[-1].id if len(items) == limit else None)


class DeviceLastSeen:
    """Stamp `device.last_seen_at` when a device token is answered with success (throttled, in background)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._stamped: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = _device_token(scope) if scope["type"] == "http" else None
        if token is None:
            await self.app(scope, receive, send)
            return

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                self._maybe_stamp(scope, token)
            await send(message)

        await self.app(scope, receive, watch)

    def _maybe_stamp(self, scope: Scope, token: str) -> None:
        now = time.monotonic()
        token_hash = hash_device_token(token)
        if now - self._stamped.get(token_hash, 0.0) < LAST_SEEN_EVERY_S:
            return
        state: AppState | None = getattr(scope["app"].state, "opd", None)
        if state is None:
            return
        if len(self._stamped) > 10_000:
            self._stamped.clear()
        self._stamped[token_hash] = now
        at = from_ms(state.clock.now_ms())

        async def work(conn: AsyncConnection) -> None:
            assert at is not None
            await admin_store.touch_device(conn, token_hash, at)

        task = asyncio.create_task(state.writer.submit(work))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # a missed stamp is harmless; retrieving the error keeps the loop quiet


def _device_token(scope: Scope) -> str | None:
    """The device credential of a request: the bearer header, or ``?token=`` (boards' EventSource)."""
    query: bytes = scope.get("query_string", b"")
    if b"token=dev_" in query:
        from urllib.parse import parse_qs

        for token in parse_qs(query.decode("latin-1")).get("token", []):
            if token.startswith("dev_"):
                return token
    for name, value in scope["headers"]:
        if name == b"authorization":
            text: str = value.decode("latin-1")
            token = text[7:].strip()
            if text[:7].lower() == "bearer " and token.startswith("dev_"):
                return token
    return None


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.add_middleware(DeviceLastSeen)

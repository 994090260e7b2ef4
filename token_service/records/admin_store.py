"""SQL for facility configuration changes; each change and its audit row commit in one transaction."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, and_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from token_service.api import admin_schemas as s
from token_service.auth import hash_password, new_device_token
from token_service.errors import Conflict, NotFound, Unprocessable
from token_service.models import AuditLog, Counter, Desk, Device, Facility, User

FACILITY: Table = Facility.__table__  # type: ignore[attr-defined]
COUNTER: Table = Counter.__table__  # type: ignore[attr-defined]
DESK: Table = Desk.__table__  # type: ignore[attr-defined]
USER: Table = User.__table__  # type: ignore[attr-defined]
DEVICE: Table = Device.__table__  # type: ignore[attr-defined]
AUDIT: Table = AuditLog.__table__  # type: ignore[attr-defined]


class AdminStore:
    """Configuration writes for one actor. Every public method audits what it changed."""

    def __init__(self, engine: AsyncEngine, actor: str, hip_id: str) -> None:
        self.engine = engine
        self.actor = actor
        self.hip_id = hip_id

    async def _audit(self, conn: AsyncConnection, action: str, target: str, detail: dict[str, Any]) -> None:
        await conn.execute(
            AUDIT.insert().values(
                at=datetime.now(UTC),
                actor=self.actor,
                action=action,
                hip_id=self.hip_id,
                target=target,
                detail=detail,
            )
        )

    async def _one(self, conn: AsyncConnection, table: Table, what: str, **key: str) -> Row[Any]:
        cond = and_(*(table.c[k] == v for k, v in key.items()))
        row = (await conn.execute(select(table).where(cond))).first()
        if row is None:
            raise NotFound(f"{what} {list(key.values())[-1]} not found")
        return row

    async def _update(
        self, conn: AsyncConnection, table: Table, row: Row[Any], values: Mapping[str, Any], action: str,
        target: str,
    ) -> dict[str, Any]:  # fmt: skip
        """Write only the fields that differ and audit them as {field: [old, new]}."""
        changed = {k: v for k, v in values.items() if getattr(row, k) != v}
        if changed:
            key = table.c.id == row.id if "id" in table.c else table.c.hip_id == row.hip_id
            await conn.execute(update(table).where(key).values(**changed))
            detail = {k: [getattr(row, k), v] for k, v in changed.items() if k != "password_hash"}
            await self._audit(conn, action, target, detail)
        return {**row._asdict(), **changed}

    async def _counter_codes(self, conn: AsyncConnection) -> set[str]:
        rows = await conn.execute(select(COUNTER.c.code).where(COUNTER.c.hip_id == self.hip_id))
        return {r.code for r in rows}

    async def _check_counters(self, conn: AsyncConnection, codes: Sequence[str]) -> list[str]:
        known = await self._counter_codes(conn)
        unknown = [c for c in codes if c not in known]
        if unknown:
            raise Unprocessable(f"unknown counter(s) at {self.hip_id}: {', '.join(unknown)}",
                                code="unknown_counter")  # fmt: skip
        return list(dict.fromkeys(codes))

    # ---- facility

    async def update_facility(self, patch: s.FacilityPatch) -> dict[str, Any]:
        values: dict[str, Any] = patch.model_dump(exclude_unset=True, exclude={"use_default_validity"})
        # An explicit null would reach NOT NULL columns (a 500); only validity_seconds may be cleared.
        nulls = sorted(k for k, v in values.items() if v is None and k != "validity_seconds")
        if nulls:
            raise Unprocessable(f"{', '.join(nulls)} cannot be null", code="invalid_body")
        if patch.timezone is not None:
            try:
                s.valid_timezone(patch.timezone)
            except ValueError as exc:
                raise Unprocessable(str(exc), code="invalid_timezone") from exc
        if patch.names is not None:
            if "en" not in patch.names:
                raise Unprocessable("the facility needs an English name (names.en)", code="name_required")
            values["name"] = patch.names["en"]
        if patch.use_default_validity:
            values["validity_seconds"] = None
        async with self.engine.begin() as conn:
            row = await self._one(conn, FACILITY, "facility", hip_id=self.hip_id)
            return await self._update(conn, FACILITY, row, values, "facility.update", self.hip_id)

    # ---- counters

    async def create_counter(self, body: s.CounterIn) -> dict[str, Any]:
        if body.code.lower() == self.hip_id.lower():
            raise Unprocessable("the counter code must differ from the facility's HIP id (ABDM rule)",
                                code="code_is_hip_id")  # fmt: skip
        if "en" not in body.names:
            raise Unprocessable("the counter needs an English name (names.en)", code="name_required")
        desks = list(dict.fromkeys(body.desks if body.desks is not None else [body.code]))
        async with self.engine.begin() as conn:
            await self._one(conn, FACILITY, "facility", hip_id=self.hip_id)
            if body.code in await self._counter_codes(conn):
                raise Conflict(f"counter {body.code} already exists at {self.hip_id}", code="duplicate")
            row = {"hip_id": self.hip_id, "code": body.code, "name": body.names["en"], "names": body.names,
                   "prefix": body.prefix, "department": body.department, "active": body.active}  # fmt: skip
            try:
                await conn.execute(COUNTER.insert().values(**row))
            except IntegrityError as exc:  # a concurrent create of the same code
                raise Conflict(
                    f"counter {body.code} already exists at {self.hip_id}", code="duplicate"
                ) from exc
            for code in desks:
                await self._attach_desk(conn, code, body.code)
            detail = {k: v for k, v in row.items() if k != "hip_id"}
            await self._audit(conn, "counter.create", body.code, {**detail, "desks": desks})
        return {**row, "desks": desks}

    async def _attach_desk(self, conn: AsyncConnection, desk: str, counter: str) -> None:
        found = (
            await conn.execute(select(DESK).where(and_(DESK.c.hip_id == self.hip_id, DESK.c.code == desk)))
        ).first()
        if found is None:
            await conn.execute(DESK.insert().values(hip_id=self.hip_id, code=desk, name=f"Desk {desk}",
                                                    counters=[counter], active=True))  # fmt: skip
        elif counter not in found.counters:
            await conn.execute(
                update(DESK).where(DESK.c.id == found.id).values(counters=[*found.counters, counter])
            )

    async def update_counter(self, code: str, patch: s.CounterPatch) -> dict[str, Any]:
        values: dict[str, Any] = patch.model_dump(exclude_unset=True)
        if patch.names is not None:
            if "en" not in patch.names:
                raise Unprocessable("the counter needs an English name (names.en)", code="name_required")
            values["name"] = patch.names["en"]
        for key in ("names", "prefix", "department", "active"):
            if key in values and values[key] is None:
                raise Unprocessable(f"{key} cannot be null", code="invalid_body")
        async with self.engine.begin() as conn:
            row = await self._one(conn, COUNTER, "counter", hip_id=self.hip_id, code=code)
            action = "counter.update"
            if set(values) == {"active"}:
                action = "counter.activate" if values["active"] else "counter.deactivate"
            return await self._update(conn, COUNTER, row, values, action, code)

    # ---- desks

    async def create_desk(self, body: s.DeskIn) -> dict[str, Any]:
        async with self.engine.begin() as conn:
            await self._one(conn, FACILITY, "facility", hip_id=self.hip_id)
            counters = await self._check_counters(conn, body.counters)
            exists = await conn.execute(select(DESK.c.id).where(and_(DESK.c.hip_id == self.hip_id,
                                                                     DESK.c.code == body.code)))  # fmt: skip
            if exists.first() is not None:
                raise Conflict(f"desk {body.code} already exists at {self.hip_id}", code="duplicate")
            row = {"hip_id": self.hip_id, "code": body.code, "name": body.name.strip() or f"Desk {body.code}",
                   "counters": counters, "active": body.active}  # fmt: skip
            try:
                await conn.execute(DESK.insert().values(**row))
            except IntegrityError as exc:
                raise Conflict(f"desk {body.code} already exists at {self.hip_id}", code="duplicate") from exc
            await self._audit(conn, "desk.create", body.code, {k: v for k, v in row.items() if k != "hip_id"})
        return row

    async def update_desk(self, code: str, patch: s.DeskPatch) -> dict[str, Any]:
        values: dict[str, Any] = patch.model_dump(exclude_unset=True)
        if any(v is None for v in values.values()):
            raise Unprocessable("fields of a desk cannot be null", code="invalid_body")
        async with self.engine.begin() as conn:
            row = await self._one(conn, DESK, "desk", hip_id=self.hip_id, code=code)
            if "counters" in values:
                values["counters"] = await self._check_counters(conn, values["counters"])
            if "name" in values:
                values["name"] = values["name"].strip() or f"Desk {code}"
            return await self._update(conn, DESK, row, values, "desk.update", code)

    # ---- users

    async def create_user(self, body: s.UserIn) -> dict[str, Any]:
        async with self.engine.begin() as conn:
            await self._one(conn, FACILITY, "facility", hip_id=self.hip_id)
            counters = await self._check_counters(conn, body.counters)
            if (await conn.execute(select(USER.c.id).where(USER.c.username == body.username))).first():
                raise Conflict(f"user {body.username} already exists", code="duplicate")
            row = {
                "username": body.username, "password_hash": hash_password(body.password), "role": body.role,
                "hip_id": self.hip_id, "counters": counters, "active": True, "created_at": datetime.now(UTC),
            }  # fmt: skip
            try:
                await conn.execute(USER.insert().values(**row))
            except IntegrityError as exc:
                raise Conflict(f"user {body.username} already exists", code="duplicate") from exc
            await self._audit(conn, "user.create", body.username, {"role": body.role, "counters": counters})
        return row

    async def update_user(self, username: str, patch: s.UserPatch) -> dict[str, Any]:
        values: dict[str, Any] = patch.model_dump(exclude_unset=True)
        if any(v is None for v in values.values()):
            raise Unprocessable("fields of a user cannot be null", code="invalid_body")
        # An admin who demotes or locks out themselves could leave the facility with nobody to fix it.
        if username == self.actor and (values.get("active") is False or values.get("role") == "clerk"):
            raise Conflict("you cannot deactivate or demote your own account", code="self_lockout")
        async with self.engine.begin() as conn:
            row = await self._one(conn, USER, "user", hip_id=self.hip_id, username=username)
            if "counters" in values:
                values["counters"] = await self._check_counters(conn, values["counters"])
            action = "user.update"
            if set(values) == {"active"}:
                action = "user.activate" if values["active"] else "user.deactivate"
            return await self._update(conn, USER, row, values, action, username)

    async def reset_password(self, username: str, password: str | None) -> str | None:
        """Set a new password; without one, generate it and return it (shown to the admin once)."""
        generated = None if password else secrets.token_urlsafe(9)
        async with self.engine.begin() as conn:
            row = await self._one(conn, USER, "user", hip_id=self.hip_id, username=username)
            new_hash = hash_password(password or generated or "")
            await conn.execute(update(USER).where(USER.c.id == row.id).values(password_hash=new_hash))
            await self._audit(conn, "user.password_reset", username, {"generated": generated is not None})
        return generated

    # ---- devices

    async def create_device(self, body: s.DeviceIn) -> tuple[dict[str, Any], str]:
        if body.printer and body.kind != "kiosk":
            raise Unprocessable("only a kiosk pairs with a printer", code="invalid_body")
        token, token_hash = new_device_token()
        async with self.engine.begin() as conn:
            await self._one(conn, FACILITY, "facility", hip_id=self.hip_id)
            if body.printer:
                p = await self._one(conn, DEVICE, "printer", hip_id=self.hip_id, name=body.printer)
                if p.kind != "printer" or not p.active:
                    raise Unprocessable(
                        f"{body.printer} is not an active printer device", code="invalid_printer"
                    )
            cond = and_(DEVICE.c.hip_id == self.hip_id, DEVICE.c.name == body.name)
            old = (await conn.execute(select(DEVICE).where(cond))).first()
            row = {"hip_id": self.hip_id, "name": body.name, "kind": body.kind, "printer": body.printer,
                   "token_hash": token_hash, "active": True, "created_at": datetime.now(UTC),
                   "last_seen_at": None}  # fmt: skip
            if old is not None and old.active:
                raise Conflict(f"device {body.name} already exists at {self.hip_id}; revoke it first",
                               code="duplicate")  # fmt: skip
            try:
                if old is None:
                    await conn.execute(DEVICE.insert().values(**row))
                else:  # a revoked device's name is reused for its replacement
                    await conn.execute(update(DEVICE).where(DEVICE.c.id == old.id).values(**row))
            except IntegrityError as exc:
                raise Conflict(
                    f"device {body.name} already exists at {self.hip_id}", code="duplicate"
                ) from exc
            detail = {"kind": body.kind, "printer": body.printer, "replaced": old is not None}
            await self._audit(conn, "device.create", body.name, detail)
        return row, token

    async def revoke_device(self, name: str) -> dict[str, Any]:
        async with self.engine.begin() as conn:
            row = await self._one(conn, DEVICE, "device", hip_id=self.hip_id, name=name)
            if not row.active:
                return dict(row._asdict())
            await conn.execute(update(DEVICE).where(DEVICE.c.id == row.id).values(active=False))
            await self._audit(conn, "device.revoke", name, {"kind": row.kind})
        return {**row._asdict(), "active": False}


# ---- reads (always from SQL: the directory cache may be seconds old and an admin expects their edit)


async def facility(conn: AsyncConnection, hip_id: str) -> Row[Any]:
    row = (await conn.execute(select(FACILITY).where(FACILITY.c.hip_id == hip_id))).first()
    if row is None:
        raise NotFound(f"facility {hip_id} not found")
    return row


async def counters(conn: AsyncConnection, hip_id: str) -> list[dict[str, Any]]:
    desks = await conn.execute(select(DESK.c.code, DESK.c.counters).where(DESK.c.hip_id == hip_id))
    served_by: dict[str, list[str]] = {}
    for d in desks:
        for code in d.counters or []:
            served_by.setdefault(code, []).append(d.code)
    rows = await conn.execute(select(COUNTER).where(COUNTER.c.hip_id == hip_id).order_by(COUNTER.c.code))
    return [{**r._asdict(), "desks": sorted(served_by.get(r.code, []))} for r in rows]


async def desks(conn: AsyncConnection, hip_id: str) -> list[dict[str, Any]]:
    rows = await conn.execute(select(DESK).where(DESK.c.hip_id == hip_id).order_by(DESK.c.code))
    return [dict(r._asdict()) for r in rows]


async def users(conn: AsyncConnection, hip_id: str) -> list[dict[str, Any]]:
    rows = await conn.execute(select(USER).where(USER.c.hip_id == hip_id).order_by(USER.c.username))
    return [dict(r._asdict()) for r in rows]


async def devices(conn: AsyncConnection, hip_id: str) -> list[dict[str, Any]]:
    rows = await conn.execute(select(DEVICE).where(DEVICE.c.hip_id == hip_id).order_by(DEVICE.c.name))
    return [dict(r._asdict()) for r in rows]


async def audit_page(
    conn: AsyncConnection, hip_id: str, limit: int, before: int | None
) -> list[dict[str, Any]]:
    cond = AUDIT.c.hip_id == hip_id
    if before is not None:
        cond = and_(cond, AUDIT.c.id < before)
    rows = await conn.execute(select(AUDIT).where(cond).order_by(AUDIT.c.id.desc()).limit(limit))
    return [dict(r._asdict()) for r in rows]


async def touch_device(conn: AsyncConnection, token_hash: str, at: datetime) -> None:
    await conn.execute(
        update(DEVICE)
        .where(and_(DEVICE.c.token_hash == token_hash, DEVICE.c.active.is_(True)))
        .values(last_seen_at=at)
    )

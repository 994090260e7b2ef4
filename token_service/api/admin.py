"""Admin API: facility settings, counters and desks (admin role, own facility only); installs the rest."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path

from token_service.api import admin_people, admin_reports
from token_service.api.admin_access import admin_store_for, admit
from token_service.api.admin_schemas import (
    CounterIn,
    CounterOut,
    CounterPatch,
    DeskIn,
    DeskOut,
    DeskPatch,
    FacilityOut,
    FacilityPatch,
)
from token_service.api.deps import AdminDep, StateDep
from token_service.api.live import announce_config
from token_service.api.schemas import CODE
from token_service.records import admin_store

PREFIX = "/api/admin/facilities/{hip_id}"
HipId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Code = Annotated[str, Path(pattern=CODE)]
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "not logged in"},
    403: {"description": "not an admin of this facility"},
    404: {"description": "unknown facility, counter or desk"},
    409: {"description": "duplicate code"},
    422: {"description": "invalid body (bad timezone, code equal to the HIP id, unknown counter, ...)"},
}
router = APIRouter(prefix=PREFIX, tags=["admin"], responses=ERRORS)


def facility_out(row: Any, default_validity: int, boards_public: bool) -> FacilityOut:
    return FacilityOut(
        hip_id=row.hip_id, name=row.name, names=row.names or {}, timezone=row.timezone,
        validity_seconds=row.validity_seconds,
        effective_validity_seconds=row.validity_seconds or default_validity,
        priority_ratio=row.priority_ratio, ageing_seconds=row.ageing_seconds, skip_places=row.skip_places,
        languages=row.languages or [], board_names=bool(row.board_names),
        board_requires_device=bool(row.board_requires_device),
        board_public=boards_public and not row.board_requires_device,
    )  # fmt: skip


def counter_out(row: dict[str, Any]) -> CounterOut:
    return CounterOut(
        code=row["code"], name=row["name"], names=row["names"] or {}, prefix=row["prefix"],
        department=row["department"], active=row["active"], desks=row.get("desks", []),
    )  # fmt: skip


def desk_out(row: dict[str, Any]) -> DeskOut:
    return DeskOut(code=row["code"], name=row["name"], counters=row["counters"] or [], active=row["active"])


@router.get("/settings", response_model=FacilityOut)
async def get_settings(hip_id: HipId, principal: AdminDep, state: StateDep) -> FacilityOut:
    await admit(principal, state, hip_id)
    async with state.engine.connect() as conn:
        row = await admin_store.facility(conn, hip_id)
    return facility_out(row, state.settings.token_validity_seconds, state.settings.board_public)


@router.patch("/settings", response_model=FacilityOut)
async def patch_settings(
    hip_id: HipId, body: FacilityPatch, principal: AdminDep, state: StateDep
) -> FacilityOut:
    """Change facility settings; only the fields sent change. Every worker sees them at once (the queue,
    and boards: names appear or vanish, and open boards without a device token are closed when
    `board_requires_device` is turned on)."""
    admin = await admin_store_for(principal, state, hip_id)
    row = await admin.update_facility(body)
    await announce_config(state, hip_id)
    return facility_out(_Row(row), state.settings.token_validity_seconds, state.settings.board_public)


class _Row:
    """Attribute access to a dict, so a freshly updated row renders like one read from SQL."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


@router.get("/counters", response_model=list[CounterOut])
async def list_counters(hip_id: HipId, principal: AdminDep, state: StateDep) -> list[CounterOut]:
    await admit(principal, state, hip_id)
    async with state.engine.connect() as conn:
        await admin_store.facility(conn, hip_id)
        return [counter_out(r) for r in await admin_store.counters(conn, hip_id)]


@router.post("/counters", response_model=CounterOut, status_code=201)
async def create_counter(hip_id: HipId, body: CounterIn, principal: AdminDep, state: StateDep) -> CounterOut:
    """Add a counter (an ABDM counter code). `desks` default to one desk named like the counter."""
    admin = await admin_store_for(principal, state, hip_id)
    row = await admin.create_counter(body)
    await announce_config(state, hip_id)
    return counter_out(row)


@router.patch("/counters/{code}", response_model=CounterOut)
async def patch_counter(
    hip_id: HipId, code: Code, body: CounterPatch, principal: AdminDep, state: StateDep
) -> CounterOut:
    """Edit a counter; `{"active": false}` closes it (new tokens get 409 counter_closed)."""
    admin = await admin_store_for(principal, state, hip_id)
    await admin.update_counter(code, body)
    await announce_config(state, hip_id)
    async with state.engine.connect() as conn:
        rows = await admin_store.counters(conn, hip_id)
    return counter_out(next(r for r in rows if r["code"] == code))


@router.get("/desks", response_model=list[DeskOut])
async def list_desks(hip_id: HipId, principal: AdminDep, state: StateDep) -> list[DeskOut]:
    await admit(principal, state, hip_id)
    async with state.engine.connect() as conn:
        await admin_store.facility(conn, hip_id)
        return [desk_out(r) for r in await admin_store.desks(conn, hip_id)]


@router.post("/desks", response_model=DeskOut, status_code=201)
async def create_desk(hip_id: HipId, body: DeskIn, principal: AdminDep, state: StateDep) -> DeskOut:
    """Add a desk. An empty `counters` list means the desk serves every active counter."""
    admin = await admin_store_for(principal, state, hip_id)
    row = await admin.create_desk(body)
    await announce_config(state, hip_id)
    return desk_out(row)


@router.patch("/desks/{code}", response_model=DeskOut)
async def patch_desk(
    hip_id: HipId, code: Code, body: DeskPatch, principal: AdminDep, state: StateDep
) -> DeskOut:
    admin = await admin_store_for(principal, state, hip_id)
    row = await admin.update_desk(code, body)
    await announce_config(state, hip_id)
    return desk_out(row)


def install(app: FastAPI) -> None:
    app.include_router(router)
    admin_people.install(app)
    admin_reports.install(app)

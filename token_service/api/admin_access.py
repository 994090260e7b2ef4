"""The gate every admin call passes: the facility must exist (404) and be the admin's own (403)."""

from __future__ import annotations

from token_service.auth import Principal
from token_service.records.admin_store import AdminStore
from token_service.state import AppState


async def admit(principal: Principal, state: AppState, hip_id: str) -> None:
    """An unknown facility is 404 as everywhere in the API; somebody else's facility is 403."""
    await state.directory.get(hip_id)
    principal.require_facility(hip_id)


async def admin_store_for(principal: Principal, state: AppState, hip_id: str) -> AdminStore:
    """Configuration writes as this admin, after the gate."""
    await admit(principal, state, hip_id)
    return AdminStore(state.engine, principal.name, hip_id)

"""Actions on one token: recall, skip, complete, cancel, transfer; and reading it."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Path

from token_service.api.deps import StaffDep, StateDep
from token_service.api.schemas import ActionIn, SkipIn, TokenOut, TransferIn
from token_service.auth import Principal
from token_service.errors import Conflict, NotFound
from token_service.queue.service import Token
from token_service.records import tokens as token_sql
from token_service.state import AppState

router = APIRouter(prefix="/api/tokens", tags=["tokens"])
TokenId = Annotated[str, Path(max_length=120)]
TOKEN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}\.[A-Za-z0-9]{1,20}\.\d{8}\.\d{5,}$")


async def _load(token_id: str, principal: Principal, state: AppState) -> Token:
    if not TOKEN_ID.match(token_id):
        raise NotFound(f"token {token_id} not found")
    token = await state.queue.get(token_id)
    principal.require_counter(token.hip_id, token.counter)
    return token


@router.get("/{token_id}", response_model=TokenOut)
async def get_token(token_id: TokenId, principal: StaffDep, state: StateDep) -> TokenOut:
    token = await _load(token_id, principal, state)
    async with state.engine.connect() as conn:
        patient = (await token_sql.patients_for(conn, [token.id])).get(token.id)
    return TokenOut.of(token, patient=patient)


async def _act(action: str, token_id: str, body: ActionIn | None, principal: Principal, state: AppState,
               **kw: object) -> TokenOut:  # fmt: skip
    token = await _load(token_id, principal, state)
    desk = (body.desk if body else None) or token.desk or ""
    return TokenOut.of(await state.tokens.act(action, token.id, principal.name, desk, **kw))


@router.post("/{token_id}/recall", response_model=TokenOut)
async def recall(
    token_id: TokenId, principal: StaffDep, state: StateDep, body: ActionIn | None = None
) -> TokenOut:
    return await _act("recall", token_id, body, principal, state)


@router.post("/{token_id}/skip", response_model=TokenOut)
async def skip(
    token_id: TokenId, principal: StaffDep, state: StateDep, body: SkipIn | None = None
) -> TokenOut:
    places = body.places if body and body.places else None
    if places is None:
        token = await _load(token_id, principal, state)
        places = (await state.directory.get(token.hip_id)).facility.skip_places
    return await _act("skip", token_id, body, principal, state, places=places)


@router.post("/{token_id}/complete", response_model=TokenOut)
async def complete(
    token_id: TokenId, principal: StaffDep, state: StateDep, body: ActionIn | None = None
) -> TokenOut:
    return await _act("complete", token_id, body, principal, state)


@router.post("/{token_id}/cancel", response_model=TokenOut)
async def cancel(
    token_id: TokenId, principal: StaffDep, state: StateDep, body: ActionIn | None = None
) -> TokenOut:
    return await _act("cancel", token_id, body, principal, state)


@router.post("/{token_id}/transfer", response_model=TokenOut)
async def transfer(token_id: TokenId, body: TransferIn, principal: StaffDep, state: StateDep) -> TokenOut:
    token = await _load(token_id, principal, state)
    target = (await state.directory.get(token.hip_id)).counter(body.counter)
    if not target.active:
        raise Conflict(f"counter {body.counter} is closed", code="counter_closed")
    return await _act("transfer", token_id, body, principal, state, counter=body.counter)

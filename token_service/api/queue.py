"""Counter and desk endpoints: walk-in issue, call-next, the waiting line, undo."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Response

from token_service.api.deps import PrincipalDep, StaffDep, StateDep
from token_service.api.schemas import CODE, CallNextIn, IssueIn, QueueOut, TokenOut
from token_service.errors import Forbidden, Unprocessable
from token_service.queue.status import Priority, Source
from token_service.records import tokens as token_sql

router = APIRouter(prefix="/api/facilities/{hip_id}", tags=["queue"])
HipId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Code = Annotated[str, Path(pattern=CODE)]


@router.post("/counters/{code}/tokens", status_code=201, response_model=TokenOut)
async def issue_walk_in(
    hip_id: HipId, code: Code, principal: PrincipalDep, state: StateDep, body: IssueIn | None = None
) -> TokenOut:
    body = body or IssueIn()
    (await state.directory.get(hip_id)).counter(code)  # 404 before 403: unknown stays unknown
    if principal.role not in ("admin", "clerk", "kiosk"):
        raise Forbidden("only staff and kiosks issue walk-in tokens")
    if principal.kind == "user":
        principal.require_counter(hip_id, code)
    else:
        principal.require_facility(hip_id)
        if body.priority is Priority.EMERGENCY:
            raise Forbidden("a kiosk cannot issue emergency tokens; ask the desk")
    patient: dict[str, object] | None = {"name": body.name} if body.name else None
    source = Source.WALK_IN
    abha_address = None
    if body.abha_qr:
        from token_service.abdm.abha_card import AbhaCardError, parse_abha_card

        try:
            profile = parse_abha_card(body.abha_qr)
        except AbhaCardError as exc:
            raise Unprocessable(f"ABHA card QR not readable: {exc}", code="invalid_abha_qr") from exc
        patient = {**profile.to_json(), "verified": False}
        source, abha_address = Source.ABHA_CARD, profile.abha_address
    result = await state.tokens.issue(
        hip_id, code, source=source, priority=body.priority, abha_address=abha_address, patient=patient,
        actor=principal.name,
    )  # fmt: skip
    return TokenOut.of(result.token, outcome=result.outcome, patient=patient)


async def _call(
    hip_id: str, desk: str, principal: StaffDep, state: StateDep, only: list[str] | None
) -> TokenOut | Response:
    (await state.directory.get(hip_id)).desk(desk)
    principal.require_facility(hip_id)
    result = await state.tokens.call_next(hip_id, desk, principal.name, principal.allowed_counters(), only)
    if result.called is None:
        return Response(status_code=204)
    return TokenOut.of(result.called)


@router.post(
    "/counters/{code}/call-next", response_model=TokenOut, responses={204: {"description": "nobody waits"}}
)
async def call_next_counter(
    hip_id: HipId, code: Code, principal: StaffDep, state: StateDep, body: CallNextIn | None = None
) -> TokenOut | Response:
    cfg = await state.directory.get(hip_id)
    cfg.counter(code)
    principal.require_counter(hip_id, code)
    desk = body.desk if body and body.desk else _default_desk(cfg, code)
    return await _call(hip_id, desk, principal, state, [code])


def _default_desk(cfg: object, code: str) -> str:
    from token_service.directory import FacilityConfig

    assert isinstance(cfg, FacilityConfig)
    if code in cfg.desks:
        return code
    for desk in cfg.desks.values():
        if code in desk.counters:
            return desk.code
    raise Unprocessable(
        f'counter {code} has no desk; name one in the body as {{"desk": ...}}', code="no_desk"
    )


@router.post(
    "/desks/{desk}/call-next", response_model=TokenOut, responses={204: {"description": "nobody waits"}}
)
async def call_next_desk(
    hip_id: HipId, desk: Code, principal: StaffDep, state: StateDep
) -> TokenOut | Response:
    return await _call(hip_id, desk, principal, state, None)


@router.post("/desks/{desk}/undo", response_model=list[TokenOut])
async def undo(hip_id: HipId, desk: Code, principal: StaffDep, state: StateDep) -> list[TokenOut]:
    cfg = await state.directory.get(hip_id)
    d = cfg.desk(desk)
    principal.require_facility(hip_id)
    allowed = principal.allowed_counters()
    if allowed is not None and not set(cfg.desk_counters(d)) & set(allowed):
        raise Forbidden(f"you are not assigned to desk {desk}")
    return [TokenOut.of(t) for t in await state.tokens.undo(hip_id, desk, principal.name)]


@router.get("/counters/{code}/queue", response_model=QueueOut)
async def queue_listing(hip_id: HipId, code: Code, principal: StaffDep, state: StateDep) -> QueueOut:
    (await state.directory.get(hip_id)).counter(code)
    principal.require_counter(hip_id, code)
    waiting = await state.queue.waiting(hip_id, code)
    called = await state.queue.called(hip_id, code)
    async with state.engine.connect() as conn:
        patients = await token_sql.patients_for(conn, [t.id for t in (*waiting, *called)])
    return QueueOut(
        hip_id=hip_id,
        counter=code,
        waiting=[TokenOut.of(t, patient=patients.get(t.id)) for t in waiting],
        called=[TokenOut.of(t, patient=patients.get(t.id)) for t in called],
    )


_ = Body  # FastAPI reads optional bodies from the annotations above

"""Print endpoints: slips for staff and kiosks, the agent's long-poll, ack and heartbeat, the printer list."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Query, Response

from token_service.api.deps import PrincipalDep, StaffDep, StateDep
from token_service.auth import Principal
from token_service.errors import Forbidden
from token_service.printing.schemas import (
    AckIn,
    AckOut,
    HeartbeatIn,
    HeartbeatOut,
    JobOut,
    PrinterOut,
    PrintIn,
    PrintQueuedOut,
)
from token_service.printing.service import MAX_WAIT_S, PrinterRef, PrintService
from token_service.printing.wakeup import Wakeups
from token_service.state import AppState

router = APIRouter(tags=["printing"])
TokenId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}\.[A-Za-z0-9]{1,20}\.\d{8}\.\d{5,}$")]
HipId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
EXTRA = "printing"


def _service(state: AppState) -> PrintService:
    service: PrintService = state.extras[EXTRA]
    return service


def _printer(principal: Principal) -> PrinterRef:
    if principal.kind != "device" or principal.role != "printer" or principal.hip_id is None:
        raise Forbidden("only a printer device's agent takes print jobs")
    return PrinterRef(principal.hip_id, principal.name)


@router.post("/api/tokens/{token_id}/print", status_code=202, response_model=PrintQueuedOut)
async def print_token(
    token_id: TokenId, principal: PrincipalDep, state: StateDep, body: PrintIn | None = None
) -> PrintQueuedOut:
    body = body or PrintIn()
    return await _service(state).request(principal, token_id, body.printer, body.language)


@router.get(
    "/api/print-jobs/next", response_model=JobOut, responses={204: {"description": "no job within the wait"}}
)
async def next_job(
    principal: PrincipalDep,
    state: StateDep,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 0,
    lease: Annotated[
        float, Query(ge=1, le=600, description="seconds before an unacked job is re-delivered")
    ] = 30,
) -> JobOut | Response:
    job = await _service(state).next_job(_printer(principal), wait, lease)
    return job if job is not None else Response(status_code=204)


@router.post("/api/print-jobs/{job_id}/ack", response_model=AckOut)
async def ack_job(
    job_id: Annotated[int, Path(ge=1)], body: AckIn, principal: PrincipalDep, state: StateDep
) -> AckOut:
    status = await _service(state).ack(_printer(principal), job_id, body.status, body.error)
    return AckOut(id=job_id, status=status)


@router.post("/api/printers/heartbeat", response_model=HeartbeatOut)
async def heartbeat(body: HeartbeatIn, principal: PrincipalDep, state: StateDep) -> HeartbeatOut:
    printer = _printer(principal)
    queued = await _service(state).heartbeat(printer, principal.device_id, body.healthy, body.detail)
    return HeartbeatOut(printer=printer.name, queued=queued)


@router.get("/api/facilities/{hip_id}/printers", response_model=list[PrinterOut])
async def list_printers(hip_id: HipId, principal: StaffDep, state: StateDep) -> list[PrinterOut]:
    principal.require_facility(hip_id)
    return await _service(state).printers(hip_id)


def _release_long_polls_on_exit(wakeups: Wakeups) -> list[tuple[int, Any]]:
    """Chain uvicorn's SIGTERM/SIGINT handlers so a stopping server answers its long-polls at once.

    uvicorn waits for in-flight requests before running the lifespan shutdown, so without this a
    restart would hang for up to MAX_WAIT_S on every agent's open long-poll.
    """
    import threading

    import uvicorn

    if threading.current_thread() is not threading.main_thread():
        return []
    restore: list[tuple[int, Any]] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not isinstance(getattr(previous, "__self__", None), uvicorn.Server):
            continue

        def chained(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            wakeups.closing = True
            wakeups.wake_all()
            previous(signum, frame)

        signal.signal(sig, chained)
        restore.append((sig, previous))
    return restore


def install(app: FastAPI) -> None:
    app.include_router(router)

    async def start(state: AppState) -> None:
        wakeups = Wakeups(state.redis)
        wakeups.start()
        state.extras[EXTRA] = PrintService(state, wakeups)
        state.extras[EXTRA + ".signals"] = _release_long_polls_on_exit(wakeups)

    async def stop(state: AppState) -> None:
        service = state.extras.pop(EXTRA, None)
        for sig, previous in state.extras.pop(EXTRA + ".signals", []):
            signal.signal(sig, previous)
        if service is not None:
            await service.wakeups.close()

    app.state.startup_hooks.append(start)
    app.state.shutdown_hooks.append(stop)

"""Admin reports: the day's figures as JSON and every token of the day as CSV."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Query, Response

from token_service import reports
from token_service.api.admin_access import admit
from token_service.api.deps import AdminDep, StateDep

HipId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Day = Annotated[date | None, Query(alias="date", description="local date YYYY-MM-DD; default: today there")]
router = APIRouter(
    prefix="/api/admin/facilities/{hip_id}/reports", tags=["admin reports"],
    responses={401: {"description": "not logged in"}, 403: {"description": "not an admin of this facility"},
               404: {"description": "unknown facility"}, 422: {"description": "malformed date"}},
)  # fmt: skip


@router.get("/daily")
async def daily(hip_id: HipId, principal: AdminDep, state: StateDep, day: Day = None) -> dict[str, Any]:
    """Tokens per counter and per source (Scan & Share / walk-in / ABHA card), outcomes, wait and service
    times (mean, nearest-rank p90, max, in seconds) and arrivals per local hour."""
    await admit(principal, state, hip_id)
    async with state.engine.connect() as conn:
        report = await reports.daily_report(conn, hip_id, day, state.clock.now_ms())
    return report.to_json()


@router.get(
    "/daily.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "one row per token"}},
)
async def daily_csv(
    hip_id: HipId, principal: AdminDep, state: StateDep, day: Day = None,
    include_personal: Annotated[bool, Query(description="add ABHA address/number, name, gender, birth year "
                                                        "and phone columns")] = False,
) -> Response:  # fmt: skip
    """Every token of the day, one row each, times in the facility's timezone. Without
    `include_personal=1` the file carries no name, phone or ABHA columns, so it can be shared onward."""
    await admit(principal, state, hip_id)
    async with state.engine.connect() as conn:
        fac, day = await reports.facility_day(conn, hip_id, day, state.clock.now_ms())
        rows = await reports.day_rows(conn, hip_id, day)
    body = reports.csv_text(rows, fac.timezone, include_personal)
    name = f"opd-{hip_id}-{day.isoformat()}{'-personal' if include_personal else ''}.csv"
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"}
    return Response(body, media_type="text/csv; charset=utf-8", headers=headers)


def install(app: FastAPI) -> None:
    app.include_router(router)

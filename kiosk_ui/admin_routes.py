"""Admin pages: facility settings, counters, desks, users, devices, reports and the audit log."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any
from zoneinfo import available_timezones

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from kiosk_ui.i18n import Translator, pick_lang, render
from kiosk_ui.routes import login_redirect, page_principal
from token_service import reports
from token_service.api.admin_schemas import LANGUAGES
from token_service.api.deps import get_state
from token_service.auth import Principal
from token_service.errors import NotFound
from token_service.records import admin_store

router = APIRouter(include_in_schema=False)
SECTIONS = ("settings", "counters", "desks", "users", "devices", "reports", "audit")
# The zones an Indian hospital is likely to need first; every IANA name is still accepted.
COMMON_ZONES = ("Asia/Kolkata", "Asia/Kathmandu", "Asia/Dhaka", "Asia/Colombo", "Asia/Dubai", "UTC")


class Gate:
    """Who may see an admin page and which facility it shows; `response` is set when they may not."""

    def __init__(self, principal: Principal | None, hip_id: str, response: Response | None) -> None:
        self.principal = principal
        self.hip_id = hip_id
        self.response = response


async def gate(request: Request) -> Gate:
    principal = await page_principal(request)
    if principal is None or principal.kind != "user":
        return Gate(None, "", login_redirect(request))
    t = Translator(pick_lang(request))
    if principal.role != "admin":
        page = render(request, "message.html", {"message": t("app.forbidden"), "principal": principal,
                                                "link": "/console", "link_text": t("admin.to_console")},
                      status_code=403)  # fmt: skip
        return Gate(principal, "", page)
    state = await get_state(request)
    # A global admin (no facility of their own) picks one with ?hip=; default the first.
    hip_id = (
        principal.hip_id or request.query_params.get("hip") or next(iter(await state.directory.hip_ids()), "")
    )
    try:
        await state.directory.get(hip_id)
    except NotFound:
        page = render(request, "message.html", {"message": t("admin.no_facility"), "principal": principal},
                      status_code=404)  # fmt: skip
        return Gate(principal, hip_id, page)
    return Gate(principal, hip_id, None)


def page_data(payload: dict[str, Any]) -> str:
    """JSON for <script type="application/json">: `<` escaped so no value can close the element."""
    return json.dumps(payload, ensure_ascii=False, default=str).replace("<", "\\u003c")


async def show(request: Request, g: Gate, section: str, template: str, ctx: dict[str, Any]) -> Response:
    state = await get_state(request)
    t = Translator(pick_lang(request))
    async with state.engine.connect() as conn:
        fac = await admin_store.facility(conn, g.hip_id)
    data = {"hip_id": g.hip_id, "api": f"/api/admin/facilities/{g.hip_id}", "strings": t.subset("admin.js.")}
    base = {"principal": g.principal, "section": section, "sections": SECTIONS, "hip_id": g.hip_id,
            "facility_name": t.localized(fac.names, fac.name), "facility": fac, "languages": LANGUAGES,
            "page_data": page_data(data), "hq": _hip_query(g)}  # fmt: skip
    return render(request, f"admin/{template}", {**base, **ctx})


def _hip_query(g: Gate) -> str:
    """Links keep `?hip=` only for a global admin; a facility admin's pages need no parameter."""
    return "" if g.principal and g.principal.hip_id else f"?hip={g.hip_id}"


def when(t: Translator, value: datetime | None, tz: str) -> str:
    if value is None:
        return "—"
    from datetime import UTC

    return t.datetime(value if value.tzinfo else value.replace(tzinfo=UTC), tz)


@router.get("/admin")
async def settings_page(request: Request) -> Response:
    g = await gate(request)
    if g.response:
        return g.response
    zones = sorted(available_timezones())
    return await show(request, g, "settings", "settings.html", {"zones": zones, "common_zones": COMMON_ZONES,
                      "default_validity": (await get_state(request)).settings.token_validity_seconds,
                      "boards_public": (await get_state(request)).settings.board_public})  # fmt: skip


async def _counters_and_desks(request: Request, page: str) -> Response:
    """The counters page and the desks page show the same two lists, each editing one of them."""
    g = await gate(request)
    if g.response:
        return g.response
    async with (await get_state(request)).engine.connect() as conn:
        counters = await admin_store.counters(conn, g.hip_id)
        desks = await admin_store.desks(conn, g.hip_id)
    return await show(request, g, page, f"{page}.html", {"counters": counters, "desks": desks})


@router.get("/admin/counters")
async def counters_page(request: Request) -> Response:
    return await _counters_and_desks(request, "counters")


@router.get("/admin/desks")
async def desks_page(request: Request) -> Response:
    return await _counters_and_desks(request, "desks")


@router.get("/admin/users")
async def users_page(request: Request) -> Response:
    g = await gate(request)
    if g.response:
        return g.response
    async with (await get_state(request)).engine.connect() as conn:
        counters = await admin_store.counters(conn, g.hip_id)
        users = await admin_store.users(conn, g.hip_id)
    return await show(request, g, "users", "users.html", {"counters": counters, "users": users})


@router.get("/admin/devices")
async def devices_page(request: Request) -> Response:
    g = await gate(request)
    if g.response:
        return g.response
    state = await get_state(request)
    t = Translator(pick_lang(request))
    async with state.engine.connect() as conn:
        fac = await admin_store.facility(conn, g.hip_id)
        devices = await admin_store.devices(conn, g.hip_id)
    for d in devices:
        d["last_seen_text"] = when(t, d["last_seen_at"], fac.timezone)
    printers = [d["name"] for d in devices if d["kind"] == "printer" and d["active"]]
    health = await _printer_health(state, g.hip_id, t, fac.timezone)
    return await show(request, g, "devices", "devices.html",
                      {"devices": devices, "printers": printers, "health": health})  # fmt: skip


async def _printer_health(state: Any, hip_id: str, t: Translator, timezone: str) -> list[dict[str, Any]]:
    """Printer health from the print service (heartbeats, queue), for the admin to spot a dead printer."""
    service = state.extras.get("printing")  # set by token_service.api.printing
    if service is None:
        return []
    rows = []
    for p in await service.printers(hip_id):
        row = p.model_dump()
        row["last_seen_text"] = when(t, p.last_seen_at, timezone)
        row["last_printed_text"] = when(t, p.last_printed_at, timezone)
        rows.append(row)
    return rows


def _day(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


@router.get("/admin/reports")
async def reports_page(request: Request) -> Response:
    g = await gate(request)
    if g.response:
        return g.response
    state = await get_state(request)
    async with state.engine.connect() as conn:
        report = await reports.daily_report(conn, g.hip_id, _day(request.query_params.get("date")),
                                            state.clock.now_ms())  # fmt: skip
    return await show(
        request, g, "reports", "reports.html", {"report": report, "chart": hourly_chart(report)}
    )


def hourly_chart(report: reports.DayReport) -> dict[str, Any]:
    """Bar geometry for the arrivals chart, drawn as plain SVG (no script, no inline style: CSP)."""
    width, height, top, bottom, left = 1500, 240, 20, 28, 40
    peak = max(report.hourly) or 1
    step = (width - left) / 24
    plot = height - top - bottom
    bars = []
    for hour, count in enumerate(report.hourly):
        h = plot * count / peak
        x = left + hour * step
        y = round(top + plot - h, 1)
        bars.append({"hour": hour, "count": count, "x": round(x + 3, 1), "w": round(step - 6, 1), "y": y,
                     "h": round(h, 1), "cx": round(x + step / 2, 1)})  # fmt: skip
    ticks = sorted({0, peak // 2, peak}) if peak > 1 else [0, 1]
    grid = [{"value": v, "y": round(top + plot - plot * v / peak, 1)} for v in ticks]
    return {"width": width, "height": height, "bars": bars, "grid": grid, "base": top + plot, "left": left,
            "label_y": height - 8}  # fmt: skip


@router.get("/admin/audit")
async def audit_page(request: Request) -> Response:
    g = await gate(request)
    if g.response:
        return g.response
    state = await get_state(request)
    t = Translator(pick_lang(request))
    before = request.query_params.get("before", "")
    async with state.engine.connect() as conn:
        fac = await admin_store.facility(conn, g.hip_id)
        rows = await admin_store.audit_page(conn, g.hip_id, 100, int(before) if before.isdigit() else None)
    for r in rows:
        r["at_text"] = when(t, r["at"], fac.timezone)
        r["detail_text"] = json.dumps(r["detail"], ensure_ascii=False) if r["detail"] else ""
    older = rows[-1]["id"] if len(rows) == 100 else None
    return await show(request, g, "audit", "audit.html", {"rows": rows, "older": older})


def install(app: FastAPI) -> None:
    app.include_router(router)

"""Staff and public pages: login, clerk console, display board, patient status; static files and CSRF."""

from __future__ import annotations

import hmac
import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from kiosk_ui.i18n import (
    CSRF_COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    LANG_COOKIE,
    LANGS,
    Translator,
    apply_page_headers,
    pick_lang,
    render,
)
from token_service.api import auth as auth_api
from token_service.api.deps import SESSION_COOKIE, get_state, optional_principal
from token_service.api.schemas import LoginIn
from token_service.auth import Principal
from token_service.directory import FacilityConfig
from token_service.errors import Forbidden, NotFound, Unauthorized
from token_service.ratelimit import RateLimited

STATIC_DIR = Path(__file__).resolve().parent / "static"
router = APIRouter(include_in_schema=False)
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
# Logging in needs no proof of an earlier page load; everything else written with a cookie does.
_CSRF_EXEMPT = ("/api/auth/login",)


def _cookies(scope: Scope) -> dict[str, str]:
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            return cookie_parser(value.decode("latin-1"))
    return {}


class CsrfGuard:
    """Double-submit check for API writes authenticated by the session cookie (Bearer callers are exempt).

    The session cookie is SameSite=Strict already; this closes the gap for browsers or proxies that
    ignore SameSite. Pages send the ``opd_csrf`` cookie value back in ``X-CSRF-Token`` (static/js/base.js).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in _UNSAFE and scope["path"].startswith("/api/"):
            headers = {k: v for k, v in scope["headers"]}
            # Only a Bearer token exempts: browsers attach cached Basic credentials (of a proxy, say)
            # to cross-site posts on their own, and then the session cookie is what authenticates.
            bearer = headers.get(b"authorization", b"")[:7].lower() == b"bearer "
            if not bearer and scope["path"] not in _CSRF_EXEMPT:
                cookies = _cookies(scope)
                if SESSION_COOKIE in cookies:
                    sent = headers.get(CSRF_HEADER.encode(), b"").decode("latin-1")
                    expected = cookies.get(CSRF_COOKIE, "")
                    if not expected or not hmac.compare_digest(sent, expected):
                        body = {"error": "csrf_failed", "detail": "missing or wrong X-CSRF-Token header"}
                        await JSONResponse(body, status_code=403)(scope, receive, send)
                        return
        await self.app(scope, receive, send)


async def page_principal(request: Request) -> Principal | None:
    return await optional_principal(request, await get_state(request))


def _safe_next(value: str | None, default: str) -> str:
    """Only same-site relative paths: an open redirect would turn the login page into a phishing aid."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return default


def _home_for(request: Request, principal: Principal) -> str:
    if principal.role == "admin" and any(getattr(r, "path", "") == "/admin" for r in request.app.routes):
        return "/admin"
    return "/console"


def login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={_quote(target)}", status_code=303)


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="/")


def check_form_csrf(request: Request, form: Any) -> bool:
    sent = str(form.get(CSRF_FIELD, ""))
    expected = request.cookies.get(CSRF_COOKIE, "")
    return bool(expected) and hmac.compare_digest(sent, expected)


@router.get("/")
async def index(request: Request) -> Response:
    principal = await page_principal(request)
    if principal is None or principal.kind != "user":
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse(_home_for(request, principal), status_code=303)


@router.get("/favicon.ico")
async def favicon() -> Response:
    # Browsers ask for /favicon.ico on their own (the API pages, a bookmark); the pages link the icon.
    return RedirectResponse("/static/icon.svg", status_code=308)


@router.get("/lang/{code}")
async def switch_language(request: Request, code: str) -> Response:
    target = _safe_next(request.query_params.get("next"), "/")
    response = RedirectResponse(target, status_code=303)
    if code in LANGS:
        response.set_cookie(LANG_COOKIE, code, max_age=365 * 24 * 3600, samesite="lax", path="/")
    return response


@router.get("/login")
async def login_page(request: Request) -> Response:
    principal = await page_principal(request)
    next_url = _safe_next(request.query_params.get("next"), "")
    if principal is not None and principal.kind == "user":
        return RedirectResponse(next_url or _home_for(request, principal), status_code=303)
    return render(request, "login.html", {"next": next_url, "error": None, "username": ""})


@router.post("/login")
async def login_submit(request: Request) -> Response:
    form = await request.form()
    username = str(form.get("username", ""))[:64]
    next_url = _safe_next(str(form.get("next", "")), "")
    t = Translator(pick_lang(request))

    def again(error: str, status: int) -> Response:
        ctx = {"next": next_url, "error": error, "username": username}
        return render(request, "login.html", ctx, status_code=status)

    if not check_form_csrf(request, form):
        return again(t("login.error_expired"), 403)
    try:
        body = LoginIn(username=username, password=str(form.get("password", ""))[:256])
    except ValueError:
        return again(t("login.error_missing"), 422)
    state = await get_state(request)
    carrier = Response()
    try:
        result = await auth_api.login(body, carrier, state)
    except RateLimited as exc:
        response = again(t("login.error_locked"), 429)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except Unauthorized:
        return again(t("login.error_wrong"), 401)
    role = result["user"]["role"]
    home = "/admin" if role == "admin" and _has_route(request, "/admin") else "/console"
    response = RedirectResponse(next_url or home, status_code=303)
    for name, value in carrier.raw_headers:
        if name == b"set-cookie":
            response.raw_headers.append((name, value))
    return apply_page_headers(response, request)


def _has_route(request: Request, path: str) -> bool:
    return any(getattr(r, "path", "") == path for r in request.app.routes)


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await request.form()
    response = RedirectResponse("/login", status_code=303)
    if check_form_csrf(request, form):
        response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# ---- pages


def _page_data(payload: dict[str, Any]) -> str:
    """JSON for <script type="application/json">: `<` escaped so no value can close the element."""
    return json.dumps(payload, ensure_ascii=False).replace("<", "\\u003c")


def _counter_rows(cfg: FacilityConfig) -> list[dict[str, Any]]:
    rows = []
    for c in cfg.counters.values():
        if c.active:
            rows.append({"code": c.code, "name": c.name, "names": c.names or {}, "prefix": c.prefix})
    return rows


@router.get("/console")
async def console_page(request: Request) -> Response:
    principal = await page_principal(request)
    if principal is None or principal.kind != "user":
        return login_redirect(request)
    state = await get_state(request)
    hip_id = (
        principal.hip_id or request.query_params.get("hip") or next(iter(await state.directory.hip_ids()), "")
    )
    t = Translator(pick_lang(request))
    try:
        cfg = await state.directory.get(hip_id)
    except NotFound:
        return render(request, "message.html", {"message": t("console.no_facility")}, status_code=404)
    allowed = principal.allowed_counters()
    desks = []
    for d in cfg.desks.values():
        served = cfg.desk_counters(d)
        if d.active and served and (allowed is None or set(served) <= set(allowed)):
            desks.append({"code": d.code, "name": d.name, "counters": served})
    wanted = request.query_params.get("desk")
    desk = next((d for d in desks if d["code"] == wanted), None)
    data = {
        "hip_id": hip_id, "desks": desks, "desk": desk["code"] if desk else None,
        "counters": _counter_rows(cfg),
        "lang": t.lang, "strings": t.subset("console.", "priority.", "source.", "gender.", "app."),
        "user": principal.name,
    }  # fmt: skip
    name = t.localized(cfg.facility.names, cfg.facility.name)
    ctx = {"principal": principal, "desks": desks, "desk": desk, "page_data": _page_data(data),
           "facility_name": name}  # fmt: skip
    return render(request, "console.html", ctx)


@router.get("/board/{hip_id}")
async def board_page(request: Request, hip_id: str) -> Response:
    from token_service.api.board import board_access

    state = await get_state(request)
    t = Translator(pick_lang(request))
    try:
        cfg = await board_access(request, state, hip_id)
    except NotFound:
        return render(request, "message.html", {"message": t("app.not_found")}, status_code=404)
    except (Unauthorized, Forbidden) as exc:  # the facility (or service) requires a board device token
        code = 401 if isinstance(exc, Unauthorized) else 403
        return render(request, "message.html", {"message": t("board.needs_device")}, status_code=code)
    query = {k: v for k, v in request.query_params.items() if k in ("counters", "department", "token")}
    data = {
        "hip_id": hip_id, "query": query, "lang": t.lang, "languages": list(cfg.facility.languages or ["en"]),
        "counters": _counter_rows(cfg), "strings": t.subset("board.", "app."),
        # Times on the board are the facility's, whatever timezone the TV's PC was installed with.
        "timezone": cfg.facility.timezone,
    }  # fmt: skip
    ctx = {"facility_name": t.localized(cfg.facility.names, cfg.facility.name), "page_data": _page_data(data)}
    return render(request, "board.html", ctx)


@router.get("/t/{public_id}")
async def status_page(request: Request, public_id: str) -> Response:
    from token_service.api.board import lookup_of

    state = await get_state(request)
    t = Translator(pick_lang(request))
    try:
        if not public_id.replace("-", "").replace("_", "").isalnum() or len(public_id) > 32:
            raise NotFound("no such token")
        token = await lookup_of(state).token(public_id)
        cfg = await state.directory.get(token.hip_id)
    except NotFound:
        return render(request, "message.html", {"message": t("status.not_found")}, status_code=404)
    data = {"public_id": public_id, "lang": t.lang, "strings": t.subset("status.", "app.")}
    ctx = {"facility_name": t.localized(cfg.facility.names, cfg.facility.name), "label": token.label,
           "page_data": _page_data(data)}  # fmt: skip
    return render(request, "status.html", ctx)


def install(app: FastAPI) -> None:
    app.include_router(router)
    if not any(getattr(r, "path", "") == "/static" for r in app.routes):
        app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    app.add_middleware(CsrfGuard)

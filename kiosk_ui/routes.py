"""Staff and public pages: login, clerk console, display board, patient status; static files and CSRF."""

from __future__ import annotations

import hmac
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
from token_service.errors import Unauthorized

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
            if b"authorization" not in headers and scope["path"] not in _CSRF_EXEMPT:
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
    return await optional_principal(request, get_state(request))


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
    state = get_state(request)
    carrier = Response()
    try:
        result = await auth_api.login(body, carrier, state)
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


def install(app: FastAPI) -> None:
    app.include_router(router)
    if not any(getattr(r, "path", "") == "/static" for r in app.routes):
        app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    app.add_middleware(CsrfGuard)

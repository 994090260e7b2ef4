"""Security headers on every response, the request-rate limits and the daily personal-data purge."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from token_service.ratelimit import RateLimits
from token_service.retention import purge_daily
from token_service.state import AppState

# Pages set their own, stricter set (CSP, COOP, Permissions-Policy: kiosk_ui.i18n.SECURITY_HEADERS);
# these are the floor for everything else, the JSON API, static files and error bodies included.
BASELINE: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
# JSON is data, never a document: if a browser is tricked into rendering it, nothing may run or load.
JSON_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


def _has_credentials(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"authorization" or (name == b"cookie" and b"opd_session=" in value):
            return True
    return False


class SecurityHeaders:
    """Adds the baseline headers a response lacks; ``Cache-Control: no-store`` on authenticated API answers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        # Shared caches and the browser's back button must never replay a patient's profile or a
        # session token; login answers carry the token even though the request had no credentials.
        private = path.startswith("/api/") and (_has_credentials(scope) or path.startswith("/api/auth/"))

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in BASELINE.items():
                    headers.setdefault(name, value)
                if headers.get("content-type", "").startswith("application/json"):
                    headers.setdefault("Content-Security-Policy", JSON_CSP)
                if private:
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, with_headers)


def install(app: FastAPI) -> None:
    # Added last, so outermost: the 429s of the limiter and the 403s of the CSRF guard get headers too.
    app.add_middleware(RateLimits)
    app.add_middleware(SecurityHeaders)
    tasks: list[asyncio.Task[None]] = []

    async def start_purge(state: AppState) -> None:
        tasks.append(asyncio.create_task(purge_daily(state), name="retention-purge"))

    async def stop_purge(state: AppState) -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        tasks.clear()

    app.state.startup_hooks.append(start_purge)
    app.state.shutdown_hooks.append(stop_purge)

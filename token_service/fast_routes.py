"""Requests answered ahead of an application's whole middleware stack, for the few paths that are nearly
all of the traffic at the morning rush: the gateway's share callbacks (and, in the sandbox, its on-share
receiver).

FastAPI's own layers (error middleware, exception telemetry, its body limit, exception middleware) and
an application's middleware took ~45 µs of a worker's CPU per share, more than the share's parsing,
though none of them but the body limit and the security headers has anything to do for a share. A fast
route's handler brings what it needs of them itself. It sits inside FastAPI's own entry, so FastAPI's
OpenTelemetry instrumentation, when configured, still traces it. Behind a root path every request takes
the whole stack.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["FastRoutes", "fast_routes"]


class FastRoutes:
    """Sends a request whose (method, path) is in `routes` to its handler, every other to `app`."""

    def __init__(self, app: ASGIApp, routes: dict[tuple[str, str], ASGIApp]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            fast = self.routes.get((scope["method"], scope["path"]))
            if fast is not None:
                await fast(scope, receive, send)
                return
        await self.app(scope, receive, send)


def fast_routes(app: FastAPI) -> dict[tuple[str, str], ASGIApp]:
    """The application's fast routes, (method, path) -> ASGI handler, to add to before it serves: its
    middleware stack, when built, is wrapped in `FastRoutes`. The handler finds the application in
    `scope["app"]`, as a route would."""
    routes: dict[tuple[str, str], ASGIApp] | None = getattr(app.state, "fast_routes", None)
    if routes is None:
        routes = app.state.fast_routes = {}
        build = app.build_middleware_stack

        def build_with_fast_routes() -> ASGIApp:
            return FastRoutes(build(), routes)

        app.build_middleware_stack = build_with_fast_routes  # type: ignore[method-assign]
    return routes

"""ABDM routes: the gateway's profile-share callbacks (v3, v1.0, v0.5) and the counter QR downloads."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, FastAPI, Path, Request, Response
from fastapi.responses import JSONResponse
from starlette._exception_handler import wrap_app_handling_exceptions
from starlette.background import BackgroundTask
from starlette.types import Receive, Scope, Send

from token_service.abdm.gateway import GatewayClient
from token_service.abdm.http1 import GatewayHttp
from token_service.abdm.intake import ShareIntake
from token_service.abdm.jwt_verify import GatewayJWTVerifier, InvalidGatewayToken, JWKSUnavailable
from token_service.abdm.outbox import Outbox
from token_service.abdm.schemas import ShareParseError, parse_share
from token_service.api.deps import PrincipalDep, StateDep
from token_service.api.schemas import CODE
from token_service.app import BodyLimit
from token_service.errors import BadRequest, PayloadTooLarge, Unauthorized, Unavailable
from token_service.fast_routes import fast_routes
from token_service.security import SecurityHeaders
from token_service.state import AppState

log = logging.getLogger(__name__)

router = APIRouter(tags=["abdm"])
_HIP_HEADER_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
HipId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Code = Annotated[str, Path(pattern=CODE)]
EXTRA_KEY = "abdm"


@dataclass
class AbdmRuntime:
    """Per worker process: the HTTP clients (on-shares, key fetches), the JWKS cache, the gateway session
    and the outbox loop."""

    http: httpx.AsyncClient
    session: GatewayHttp
    verifier: GatewayJWTVerifier
    gateway: GatewayClient
    outbox: Outbox
    intake: ShareIntake
    warmup: asyncio.Task[None] | None = None


async def startup(state: AppState) -> None:
    s = state.settings
    # On-shares go out on the worker's own HTTP/1.1 client (`http1`): at the morning rush every share
    # costs one, and it spends about a quarter of aiohttp's CPU per call. The key fetches are rare and
    # stay on httpx.
    session = GatewayHttp(limit=100)
    http = httpx.AsyncClient()
    gateway = GatewayClient(s.abdm_gateway_url, s.abdm_client_id, s.abdm_client_secret, s.abdm_cm_id, session)
    # The v3 certs endpoint was seen to want our session token; without credentials there is none to send.
    provider = gateway.session_token if s.abdm_client_id else None
    verifier = GatewayJWTVerifier(s.jwks_url, http, bearer_provider=provider)
    outbox = Outbox(state.redis, state.engine, state.writer, gateway, state.clock, s.onshare_deadline_seconds)
    runtime = AbdmRuntime(
        http, session, verifier, gateway, outbox, ShareIntake(state.tokens, state.directory, outbox)
    )
    state.extras[EXTRA_KEY] = runtime
    outbox.start()  # its first step queues on-shares left pending by a previous run
    runtime.warmup = asyncio.create_task(_warm_keys(verifier), name="jwks-warmup")


async def _warm_keys(verifier: GatewayJWTVerifier) -> None:
    # Fetch the keys now so the first patient's share does not wait for them; failure is not fatal.
    try:
        await verifier.refresh()
    except InvalidGatewayToken as exc:
        log.warning("gateway keys not fetched at startup (%s); will retry on the first share", exc.reason)


async def shutdown(state: AppState) -> None:
    runtime: AbdmRuntime | None = state.extras.pop(EXTRA_KEY, None)
    if runtime is None:
        return
    if runtime.warmup is not None:
        runtime.warmup.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runtime.warmup
    await runtime.outbox.close()
    await runtime.http.aclose()
    await runtime.session.close()


def runtime_of(state: AppState) -> AbdmRuntime:
    runtime: AbdmRuntime | None = state.extras.get(EXTRA_KEY)
    if runtime is None:
        raise Unavailable("ABDM intake is starting")
    return runtime


def _facility_id(header: str | None, body_hip_id: str | None) -> str:
    """One bridge may serve many facilities: the gateway names the one meant in X-HIP-ID."""
    if header is not None and header.strip():
        value = header.strip()
        if not _HIP_HEADER_RE.match(value):
            raise BadRequest("X-HIP-ID is not a valid facility id", code="invalid_hip_id")
        return value
    if body_hip_id:
        return body_hip_id
    raise BadRequest("the facility is unknown: send X-HIP-ID (or metaData.hipId)", code="missing_hip_id")


async def _share(request: Request, state: AppState, version: Literal["v3", "v1", "v0.5"]) -> JSONResponse:
    runtime = runtime_of(state)
    try:
        await runtime.verifier.verify(request.headers.get("authorization"))
    except JWKSUnavailable as exc:
        raise Unavailable(f"cannot verify the gateway token now: {exc.reason}") from exc
    except InvalidGatewayToken as exc:
        raise Unauthorized(f"gateway token rejected: {exc.reason}", code="invalid_gateway_token") from exc
    body = await request.body()
    try:
        share = parse_share(version, body, request.headers, max_bytes=state.settings.max_body_bytes)
    except ShareParseError as exc:
        if exc.code == "body_too_large":
            raise PayloadTooLarge(exc.message) from exc
        raise BadRequest(exc.message, code=exc.code) from exc
    hip_id = _facility_id(request.headers.get("x-hip-id"), share.hip_id)
    result = await runtime.intake.accept(share, hip_id)
    # Deliberately nothing about the token here: the gateway learns it from the on-share. The on-share
    # is made due once the 202 is sent: the acknowledgement waits only for what it promises (token,
    # profile and on-share committed), not for the outbox's Redis round trip as well.
    return JSONResponse(
        {"status": "accepted", "requestId": share.request_id},
        status_code=202,
        background=BackgroundTask(runtime.intake.wake, result),
    )


_SHARE_DOC: dict[str, Any] = {
    "responses": {
        202: {"description": "accepted; the token follows in the on-share to the gateway"},
        400: {"description": 'malformed share: `{"error", "detail"}`'},
        401: {"description": "missing or invalid gateway JWT"},
        503: {"description": "queue store or gateway keys unavailable: retry"},
    },
    "openapi_extra": {
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
    },
}


@router.post("/api/v3/hip/patient/share", status_code=202, summary="ABDM v3 profile share", **_SHARE_DOC)
async def share_v3(request: Request, state: StateDep) -> JSONResponse:
    """Headers: `Authorization: Bearer <gateway JWT>`, `REQUEST-ID`, `TIMESTAMP`, `X-HIP-ID`."""
    return await _share(request, state, "v3")


@router.post("/v1.0/patients/profile/share", status_code=202, summary="ABDM v1.0 profile share", **_SHARE_DOC)
async def share_v1(request: Request, state: StateDep) -> JSONResponse:
    return await _share(request, state, "v1")


@router.post("/v0.5/patients/profile/share", status_code=202, summary="ABDM v0.5 profile share", **_SHARE_DOC)
async def share_v05(request: Request, state: StateDep) -> JSONResponse:
    return await _share(request, state, "v0.5")


_MEDIA = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf", "poster.png": "image/png"}


async def _artifact(hip_id: str, code: str, fmt: str, principal: PrincipalDep, state: AppState) -> Response:
    from token_service.posters import counter_artifact

    cfg = await state.directory.get(hip_id)
    counter = cfg.counter(code)  # 404 before 403: an unknown counter stays unknown
    principal.require_role("admin")
    principal.require_facility(hip_id)
    data = await asyncio.to_thread(counter_artifact, state.settings, cfg.facility, counter, fmt)
    name = {"png": "qr.png", "svg": "qr.svg", "pdf": "poster.pdf", "poster.png": "poster.png"}[fmt]
    headers = {
        "Content-Disposition": f'inline; filename="{hip_id}-{code}-{name}"',
        "Cache-Control": "private, max-age=300",
    }
    return Response(data, media_type=_MEDIA[fmt], headers=headers)


_QR_DOC: dict[str, Any] = {
    "responses": {200: {"content": {}}, 401: {"description": "log in"}, 403: {"description": "admins only"}},
    "response_class": Response,
}


@router.get("/api/facilities/{hip_id}/counters/{code}/qr.png", tags=["counters"], **_QR_DOC)
async def counter_qr_png(hip_id: HipId, code: Code, principal: PrincipalDep, state: StateDep) -> Response:
    """The counter's Scan & Share QR code (PNG)."""
    return await _artifact(hip_id, code, "png", principal, state)


@router.get("/api/facilities/{hip_id}/counters/{code}/qr.svg", tags=["counters"], **_QR_DOC)
async def counter_qr_svg(hip_id: HipId, code: Code, principal: PrincipalDep, state: StateDep) -> Response:
    """The counter's Scan & Share QR code (SVG)."""
    return await _artifact(hip_id, code, "svg", principal, state)


@router.get("/api/facilities/{hip_id}/counters/{code}/poster.pdf", tags=["counters"], **_QR_DOC)
async def counter_poster_pdf(hip_id: HipId, code: Code, principal: PrincipalDep, state: StateDep) -> Response:
    """The printable A4 poster with the QR and the facility and counter names (PDF)."""
    return await _artifact(hip_id, code, "pdf", principal, state)


@router.get("/api/facilities/{hip_id}/counters/{code}/poster.png", tags=["counters"], **_QR_DOC)
async def counter_poster_png(hip_id: HipId, code: Code, principal: PrincipalDep, state: StateDep) -> Response:
    """The same A4 poster as a 150 dpi PNG."""
    return await _artifact(hip_id, code, "poster.png", principal, state)


# The gateway's callbacks, by path, with the share format each one carries.
SHARE_PATHS: dict[str, Literal["v3", "v1", "v0.5"]] = {
    "/api/v3/hip/patient/share": "v3",
    "/v1.0/patients/profile/share": "v1",
    "/v0.5/patients/profile/share": "v0.5",
}


class ShareRoute:
    """One of the `SHARE_PATHS`, answered ahead of the application's middleware and router
    (`token_service.fast_routes`).

    At the morning rush these three paths are nearly all of the traffic. The middleware stack, FastAPI's
    router (matching every included router, then again inside the chosen one) and its dependency solving
    cost more CPU per share than the share's parsing. What the stack does for a share, this does too:
    the body limit and the security headers (the same middleware classes, around this one; see
    `install`), the application's exception handlers, as a route's errors meet them, and its catch-all
    answer (500, or 503 when a store is down), which keeps the connection open. The routes below stay
    registered: they document the callbacks in the OpenAPI schema, answer every other method (405), and
    take the shares behind a root path.
    """

    def __init__(self, version: Literal["v3", "v1", "v0.5"]) -> None:
        self.version = version
        self._handlers: tuple[dict[Any, Any], dict[int, Any]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        answering = False

        async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
            nonlocal answering
            response = await _share(request, request.app.state.opd, self.version)
            answering = True
            await response(scope, receive, send)

        scope["starlette.exception_handlers"] = self._handlers or self._route_handlers(scope)
        try:
            await wrap_app_handling_exceptions(endpoint, request)(scope, receive, send)
        except Exception as exc:
            catch_all = scope["app"].exception_handlers.get(Exception)
            if answering or catch_all is None:
                raise
            response = catch_all(request, exc)
            if inspect.isawaitable(response):
                response = await response
            await response(scope, receive, send)

    def _route_handlers(self, scope: Scope) -> tuple[dict[Any, Any], dict[int, Any]]:
        """The handlers a route's errors meet (Starlette's ExceptionMiddleware takes all but the
        catch-all for `Exception` / 500, which the outermost error middleware answers)."""
        by_type: dict[Any, Any] = {}
        by_status: dict[int, Any] = {}
        for key, handler in scope["app"].exception_handlers.items():
            if key in (500, Exception):
                continue
            if isinstance(key, int):
                by_status[key] = handler
            else:
                by_type[key] = handler
        self._handlers = (by_type, by_status)
        return self._handlers


def install(app: FastAPI) -> None:
    app.include_router(router)
    limit = app.state.settings.max_body_bytes
    for path, version in SHARE_PATHS.items():
        fast_routes(app)[("POST", path)] = BodyLimit(SecurityHeaders(ShareRoute(version)), limit=limit)
    app.state.startup_hooks.append(startup)
    app.state.shutdown_hooks.append(shutdown)

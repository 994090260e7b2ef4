"""create_app(settings): the FastAPI application and the lifespan that owns Redis, SQL and scripts."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError as SqlInterfaceError
from sqlalchemy.exc import OperationalError as SqlOperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from token_service.api import auth as auth_api
from token_service.api import health as health_api
from token_service.api import queue as queue_api
from token_service.api import tokens as tokens_api
from token_service.clock import Clock, SystemClock
from token_service.config import Settings
from token_service.directory import Directory
from token_service.embedded import EmbeddedRedis
from token_service.errors import OpdError
from token_service.operations import TokenService
from token_service.queue.scripts import Scripts
from token_service.queue.service import TokenQueue
from token_service.records.db import async_engine
from token_service.records.recorder import Recorder
from token_service.records.writer import SqlWriter
from token_service.redis_guard import PROBE_TIMEOUT_S, RedisBreaker, guard
from token_service.state import AppState
from token_service.sweeper import sweep_forever

log = logging.getLogger("token_service")


def error_body(code: str, detail: Any) -> dict[str, Any]:
    return {"error": code, "detail": detail}


class BodyLimit:
    """Reject request bodies over the limit with 413 before the app reads them (also for chunked bodies)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._reject(send)
                return
        seen = 0
        too_big = False

        async def limited() -> Message:
            nonlocal seen, too_big
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    too_big = True
                    # FastAPI turns any other exception raised while reading a body into a 400.
                    raise StarletteHTTPException(413, f"request body over {self.limit} bytes")
            return message

        try:
            await self.app(scope, limited, send)
        except StarletteHTTPException:
            if not too_big:
                raise
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        resp = JSONResponse(error_body("payload_too_large", f"request body over {self.limit} bytes"), 413)
        await send({"type": "http.response.start", "status": 413, "headers": resp.raw_headers})
        await send({"type": "http.response.body", "body": resp.body})


def redis_client(url: str, **options: Any) -> Redis:
    """The client for `url`. `redis+cluster://host:port` (or `?cluster=1`) means Redis Cluster: any one
    node is enough, the client finds the rest. Every queue script touches one facility's hash tag, so
    the cluster client routes it to that slot's master like a single-key command."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    plain_query = [(k, v) for k, v in query if k != "cluster"]
    scheme, _, flavour = parts.scheme.partition("+")
    if flavour != "cluster" and len(plain_query) == len(query):
        return Redis.from_url(url, **options)
    plain = urlunsplit((scheme, parts.netloc, parts.path, urlencode(plain_query), ""))
    # The cluster client speaks the same command API; AppState keeps its one `Redis` type.
    return cast(Redis, RedisCluster.from_url(plain, **options))


async def build_state(settings: Settings, clock: Clock) -> AppState:
    embedded = None
    redis_url = settings.redis_url
    if not redis_url:
        embedded = EmbeddedRedis(settings.data_dir).start()
        redis_url = embedded.url
    # A pooled connection that died with a Redis restart is retried once, at once, on a fresh connection,
    # so the first request after recovery succeeds. No backoff and no second retry: while Redis is down a
    # reconnect is refused in a millisecond, and each retry would only delay the 503 (every request
    # makes two or three Redis calls). Timeouts are not retried: a hung Redis would double the wait.
    retry = Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,))
    redis = redis_client(
        redis_url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=1.0,
        health_check_interval=15, max_connections=512, retry=retry,
    )  # fmt: skip
    # A Redis that hangs instead of dying: after the first timeout every command fails at once (503)
    # until a probe on its own short-timeout client gets an answer (token_service.redis_guard).
    probe = {"socket_timeout": PROBE_TIMEOUT_S, "socket_connect_timeout": PROBE_TIMEOUT_S}
    breaker = RedisBreaker(lambda: redis_client(redis_url, **probe))
    redis = guard(redis, breaker)
    if isinstance(redis, RedisCluster):
        # Load the slot map before requests race for the client: first commands sent concurrently by
        # an uninitialised cluster client go to the seed node, come back MOVED, and the client's
        # recovery then closes connections that other requests are still reading from.
        await redis.initialize()
    scripts = Scripts.register(redis)
    queue = TokenQueue(redis, scripts, clock)
    engine = async_engine(settings)
    writer = SqlWriter(engine)
    directory = Directory(engine, settings.token_validity_seconds)
    recorder = Recorder(redis, writer, directory.hip_ids)
    tokens = TokenService(queue, writer, directory)
    state = AppState(
        settings, clock, redis, scripts, queue, engine, writer, recorder, directory, tokens, embedded
    )
    state.breaker = breaker
    return state


SHUTDOWN_STEP_S = 5.0


async def _bounded(aw: Any, name: str) -> None:
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait([task], timeout=SHUTDOWN_STEP_S)
    if not done:
        log.error("shutdown step %s did not finish in %.0f s; going on without it", name, SHUTDOWN_STEP_S)
        for other in asyncio.all_tasks():
            if other is not asyncio.current_task():
                log.error(
                    "task %s still running:\n%s",
                    other.get_name(),
                    "".join(
                        __import__("traceback").format_stack(other.get_stack(limit=6)[-1])
                        if other.get_stack()
                        else ""
                    ),
                )
        task.cancel()
    elif task.exception() is not None:
        log.error("shutdown step %s failed: %r", name, task.exception())


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or Settings()
    clock = clock or SystemClock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await build_state(settings, clock)
        app.state.opd = state
        state.writer.start()
        state.recorder.start()
        sweeper = asyncio.create_task(sweep_forever(state), name="expiry-sweeper")
        for hook in app.state.startup_hooks:
            await hook(state)
        try:
            yield
        finally:
            # Close in reverse order of dependency: producers first, then the stores they write to. Each
            # step is bounded so a stuck component can never keep the process from exiting.
            for hook in reversed(app.state.shutdown_hooks):
                await _bounded(hook(state), getattr(hook, "__qualname__", "hook"))
            sweeper.cancel()
            await _bounded(asyncio.gather(sweeper, return_exceptions=True), "sweeper")
            await _bounded(state.recorder.close(), "recorder")
            await _bounded(state.writer.close(), "sql writer")
            if state.breaker:
                await _bounded(state.breaker.aclose(), "redis probe")
            await _bounded(state.scripts.batch.aclose(), "script connection")
            await _bounded(state.redis.aclose(), "redis")
            await _bounded(state.engine.dispose(), "database")
            if state.embedded:
                state.embedded.stop()

    # The API pages (/docs, /redoc) load Swagger UI and ReDoc from files the package ships, not from a
    # CDN: a hospital's network often has no internet, and the pages would be blank there.
    app = FastAPIOffline(
        title="OPD token service",
        version="0.1.0",
        summary="ABDM Scan & Share OPD tokens: intake, queue, board and print",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.startup_hooks = []
    app.state.shutdown_hooks = []
    install_error_handlers(app)
    for module in (health_api, auth_api, queue_api, tokens_api):
        app.include_router(module.router)
    for extension in _extensions():
        extension(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app


# The collector's defaults suit short scripts, not a server holding ~165,000 objects after startup
# (modules, routes, schemas, compiled statements): a young collection every 700 net allocations, and
# full passes that walk every one of those objects. Under share load that was ~3 s of collection per
# worker in 50 s, with full passes of 50-150 ms that stalled every request in flight. Freezing what
# startup built takes it out of every later pass; a larger young generation makes passes ~14x rarer.
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Collector settings for a long-running worker; called once its startup is complete."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD)


def create_worker_app() -> FastAPI:
    """The application as `opd-token serve` runs it in each worker process."""
    app = create_app()

    async def tune(_: AppState) -> None:
        tune_gc()

    app.state.startup_hooks.append(tune)  # last: after every extension's own startup
    return app


# Modules with an `install(app)` that adds routers and lifespan hooks (app.state.startup_hooks /
# shutdown_hooks receive the AppState). A module that is absent is skipped.
EXTENSIONS = (
    "token_service.api.abdm",
    "token_service.api.printing",
    "token_service.api.board",
    "token_service.api.admin",
    "kiosk_ui.routes",
    "kiosk_ui.admin_routes",
    "kiosk_ui.kiosk_routes",
    "token_service.security",
)


def _extensions() -> list[Any]:
    """Optional parts (ABDM intake, pages, printing) register their routers here when present."""
    found = []
    for name in EXTENSIONS:
        try:
            module = __import__(name, fromlist=["install"])
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise
            continue
        found.append(module.install)
    return found


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OpdError)
    async def opd_error(_: Request, exc: OpdError) -> JSONResponse:
        body = error_body(exc.code, exc.detail)
        body.update(exc.extra)
        return JSONResponse(body, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return JSONResponse(error_body("invalid_body", errors), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {
            400: "bad_request",
            404: "not_found",
            405: "method_not_allowed",
            401: "unauthorized",
            403: "forbidden",
            413: "payload_too_large",
        }
        return JSONResponse(
            error_body(codes.get(exc.status_code, "http_error"), exc.detail),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def redis_down(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body("unavailable", "queue store unavailable, retry shortly"), 503)

    # Registered by class (not under the catch-all below): Starlette answers these in its exception
    # middleware, whereas the catch-all runs in the outermost error middleware, which re-raises after
    # answering, and the server then drops the keep-alive connection the client will reuse.
    @app.exception_handler(SqlOperationalError)
    @app.exception_handler(SqlInterfaceError)
    async def database_down(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body("unavailable", "database unavailable, retry shortly"), 503)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        from sqlalchemy.exc import InterfaceError, OperationalError

        if isinstance(exc, OperationalError | InterfaceError | ConnectionError | OSError):
            return JSONResponse(error_body("unavailable", "database unavailable, retry shortly"), 503)
        log.exception("unhandled error")
        return JSONResponse(error_body("internal", "internal error"), 500)

"""Liveness, readiness (Redis and SQL both answer) and Prometheus metrics."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from sqlalchemy import text

from token_service.api.deps import StateDep

router = APIRouter(tags=["health"])
QUEUE_LENGTH = Gauge("opd_queue_waiting", "Tokens waiting per counter", ["hip_id", "counter"])
READY_TIMEOUT_S = 1.0
# How this process's collector is set (a served worker tunes it at startup: see app.tune_gc).
Gauge("opd_gc_frozen_objects", "Objects frozen out of garbage collection at worker start").set_function(
    gc.get_freeze_count
)
Gauge("opd_gc_young_threshold", "Net allocations between young-generation collections").set_function(
    lambda: gc.get_threshold()[0]
)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _check(coro: Any) -> str:
    try:
        await asyncio.wait_for(coro, READY_TIMEOUT_S)
        return "ok"
    except Exception as exc:
        return f"down: {type(exc).__name__}"


@router.get("/readyz")
async def readyz(state: StateDep) -> JSONResponse:
    async def sql() -> None:
        async with state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    redis_status, sql_status = await asyncio.gather(_check(state.redis.ping()), _check(sql()))
    ok = redis_status == "ok" and sql_status == "ok"
    body = {"status": "ok" if ok else "unavailable", "redis": redis_status, "database": sql_status}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics(state: StateDep) -> Response:
    try:
        for hip in await state.directory.hip_ids():
            cfg = await state.directory.get(hip)
            counts = await asyncio.wait_for(state.queue.waiting_counts(hip, list(cfg.counters)), 1.0)
            for code, n in counts.items():
                QUEUE_LENGTH.labels(hip, code).set(n)
    except Exception:  # metrics must render even while a store is down
        pass
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

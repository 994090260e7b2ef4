"""API smoke on a real 3-master Redis Cluster: `opd-token serve` (2 workers) with OPD_REDIS_URL=redis+cluster://
issues, calls, streams the call to the board, takes a share and delivers its on-share, and prints a slip."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis
from redis.asyncio import RedisCluster

from tests.support.app import HIP, ServiceProc, make_settings, running_writer, seconds_until_recorded, seed
from tests.support.cluster import RedisClusterProc, running_cluster
from tests.support.load import login_headers, sql_rows
from tests.support.servers import ServerThread
from token_service.abdm.outbox import Outbox
from token_service.abdm.sandbox import create_sandbox_app
from token_service.abdm.sandbox_state import SandboxState
from token_service.app import redis_client
from token_service.clock import SystemClock
from token_service.queue.scripts import Scripts
from token_service.queue.service import TokenQueue
from token_service.records.recorder import IDLE_MAX_S, SETTLE_MS, Recorder


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterProc]:
    yield from running_cluster()


def xfail_unless_outbox_supports_cluster(url: str) -> None:
    """The on-share outbox opens a second client for its blocking waits; until it can do that for a
    cluster client, the service cannot start on a cluster (constructing it does no I/O)."""
    client = redis_client(url, decode_responses=True)
    try:
        Outbox(client, None, None, None, None, 25.0)  # type: ignore[arg-type]
    except AttributeError as exc:
        if "connection_pool" not in str(exc):
            raise
        pytest.xfail("the on-share outbox builds its blocking client from a single-node connection pool")


def board_call_event(url: str, headers: dict[str, str]) -> dict[str, object]:
    """Call next at desk D1 while the board's SSE stream is open; the first `call` event on it."""

    def call_soon() -> None:
        time.sleep(1.0)  # the stream subscribes first
        r = httpx.post(f"{url}/api/facilities/{HIP}/desks/D1/call-next", headers=headers, timeout=10)
        assert r.status_code == 200, r.text

    caller = threading.Thread(target=call_soon)
    with (
        httpx.Client(base_url=url, timeout=10) as c,
        c.stream("GET", f"/api/facilities/{HIP}/board/events") as s,
    ):
        caller.start()
        try:
            kind = ""
            for line in s.iter_lines():
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:") and kind == "call":
                    event: dict[str, object] = json.loads(line[5:])
                    return event
        finally:
            caller.join()
    raise AssertionError("the board stream ended without a call event")


def test_service_on_redis_cluster(tmp_path: Path, cluster: RedisClusterProc) -> None:
    cluster.flushall()
    gw = SandboxState()
    with ServerThread(create_sandbox_app(gw)) as gw_server:
        settings = make_settings(tmp_path, cluster.url, abdm_gateway_url=gw_server.url)
        s = seed(settings)
        xfail_unless_outbox_supports_cluster(cluster.url)
        svc = ServiceProc(settings, workers=2).start(timeout=40)
        try:
            admin = login_headers(svc.url)
            with httpx.Client(base_url=svc.url, headers=admin, timeout=10) as c:
                tokens = [
                    c.post(f"/api/facilities/{HIP}/counters/{code}/tokens", json={})
                    for code in ("OPD1", "OPD2", "ORTHO")
                ]
                assert [t.status_code for t in tokens] == [201, 201, 201]
                assert [t.json()["number"] for t in tokens] == [1, 1, 1]
            event = board_call_event(svc.url, admin)
            assert "A1" in json.dumps(event)
            # A share through the gateway path: 202 at once, then the on-share from the cluster-backed outbox.
            headers, body = gw.build_share("v3", HIP, "OPD2", "cluster.test@sbx")
            r = httpx.post(svc.url + "/api/v3/hip/patient/share", content=body, headers=headers, timeout=10)
            assert r.status_code == 202, r.text
            deadline = time.monotonic() + 10
            while not any(o.get("answered") == 202 and o.get("tokenNumber") == "B2" for o in gw.on_shares()):
                assert time.monotonic() < deadline, gw.on_shares()
                time.sleep(0.05)
            # A slip for the printer's agent, through the Redis-leased print queue.
            tid = tokens[2].json()["id"]
            assert (
                httpx.post(
                    f"{svc.url}/api/tokens/{tid}/print", json={"printer": "printer1"}, headers=admin
                ).status_code
                == 202
            )
            printer = {"Authorization": f"Bearer {s.devices['printer1']}"}
            job = httpx.get(f"{svc.url}/api/print-jobs/next", params={"wait": 2}, headers=printer, timeout=10)
            assert job.status_code == 200 and job.json()["token_id"] == tid
            ack = httpx.post(
                f"{svc.url}/api/print-jobs/{job.json()['id']}/ack",
                json={"status": "printed"},
                headers=printer,
            )
            assert ack.status_code == 200
            # The recorder read the facility's event stream on its master and wrote the history.
            deadline = time.monotonic() + 10
            while sql_rows(settings.sqlalchemy_url, "SELECT count(*) FROM token_event")[0][0] < 5:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        finally:
            svc.stop()


async def test_an_idle_recorder_on_a_cluster_asks_each_stream_less_often(
    tmp_path: Path, cluster: RedisClusterProc
) -> None:
    """A cluster refuses one read of streams in different slots, so there the recorder asks each
    facility's stream on its own; while nothing comes the wait between rounds doubles from 50 ms up to
    SETTLE_MS. The first event that comes is still copied."""
    cluster.flushall()
    settings = make_settings(tmp_path, cluster.url)
    client = redis_client(cluster.url, decode_responses=True)
    await cast(RedisCluster, client).initialize()
    queue = TokenQueue(client, Scripts.register(client), SystemClock())

    async def hips() -> list[str]:
        return [HIP]

    def reads() -> int:
        total = 0
        for url in cluster.node_urls:
            node = redis.Redis.from_url(url)
            try:
                stats: Any = node.info("commandstats")
                total += int(stats.get("cmdstat_xreadgroup", {}).get("calls", 0))
            finally:
                node.close()
        return total

    async with running_writer(settings) as (engine, writer):
        rec = Recorder(client, writer, facilities=hips)
        rec.start()
        try:
            await asyncio.sleep(0.2)
            before = reads()
            await asyncio.sleep(2.0)
            # Waits of 0.05, 0.1, 0.2, 0.4 s, then 0.5 s each: a handful of reads in 2 s, where a read
            # every 50 ms made about 40.
            assert reads() - before <= 12
            assert await seconds_until_recorded(queue, engine, HIP) < IDLE_MAX_S + SETTLE_MS / 1000 + 1.0
        finally:
            await rec.close()
            await client.aclose()

"""A Redis that hangs (SIGSTOP: it accepts connections and never answers) under load, through the real
service with 2 workers: after the first socket timeout each worker's circuit breaker answers 503 at once
(staff API and ABDM shares, readiness too), and after SIGCONT traffic resumes within ~2 s with no
acknowledged token lost or duplicated and the recorder and outbox running again."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import redis as sync_redis

from tests.support.app import HIP, ServiceProc, make_settings, seed
from tests.support.load import (
    CLIENTS,
    UNTHROTTLED,
    V3,
    Call,
    assert_acknowledged_kept,
    load,
    login_headers,
    post_share,
    probe,
    sessions,
    until_issued,
)
from tests.support.servers import RedisProc
from token_service.abdm.sandbox_state import SandboxState
from token_service.queue import keys
from token_service.records.recorder import GROUP

SOCKET_TIMEOUT_S = 2.0  # build_state's Redis socket timeout: the one wait before the breaker opens


async def ready(c: httpx.AsyncClient) -> Call:
    """/readyz on a fresh connection (so either worker may answer)."""
    sent = time.monotonic()
    r = await c.get("/readyz", headers={"Connection": "close"})
    return Call("ready", sent, time.monotonic(), r.status_code, r.json())


async def share(c: httpx.AsyncClient, gw: SandboxState, abha: str) -> Call:
    """A signed share as the gateway posts it, timed from the request alone (the client is reused)."""
    headers, body = gw.build_share("v3", HIP, "OPD1", abha)
    sent = time.monotonic()
    r = await c.post(V3, content=body, headers=headers)
    return Call("share", sent, time.monotonic(), r.status_code, r.json() if r.content else {})


def wait_group_caught_up(redis_url: str, timeout: float = 20.0) -> int:
    """Until the recorder group has nothing pending and nothing unread; the entries left in the stream.

    A recorder's XACK can reach Redis while its XDEL never does (the client gave up on the XACK's reply
    when Redis stopped answering): such entries are recorded and acknowledged, just not deleted."""
    r = sync_redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            (group,) = [g for g in r.xinfo_groups(keys.events_stream(HIP)) if g["name"] == GROUP]
            if group["pending"] == 0 and group.get("lag") == 0:
                return int(r.xlen(keys.events_stream(HIP)))
            assert time.monotonic() < deadline, group
            time.sleep(0.1)
    finally:
        r.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def test_redis_hang_answers_503_at_once_and_recovers(
    tmp_path: Path, sandbox: tuple[SandboxState, str]
) -> None:
    gw, gw_url = sandbox
    rproc = RedisProc(appendonly=True).start()
    svc: ServiceProc | None = None
    assert rproc.proc is not None
    redis_pid = rproc.proc.pid
    try:
        settings = make_settings(tmp_path, rproc.url, abdm_gateway_url=gw_url)
        seed(settings)
        svc = ServiceProc(settings, workers=2, env_extra=UNTHROTTLED).start()
        headers = login_headers(svc.url)
        t: dict[str, float] = {}
        shares_hung: list[Call] = []
        readiness: list[Call] = []

        async def scenario() -> tuple[list[Call], list[Call], list[Call]]:
            creds = await sessions(svc.url, CLIENTS)
            for i in range(4):  # both workers have verified a gateway token and issued from a share
                assert (await post_share(gw, svc.url, abha=f"warm{i}@sbx")).status == 202
            progress: list[Call] = []
            burst = asyncio.create_task(
                load(svc.url, time.monotonic() + 50, CLIENTS, creds=creds, calls=progress)
            )
            await until_issued(progress, 40)
            os.kill(redis_pid, signal.SIGSTOP)
            t["stopped"] = time.monotonic()
            # Every command in flight now waits out the socket timeout; the first one to expire in a
            # worker opens that worker's breaker (the recorder polls every 50 ms, so both open at once).
            await asyncio.sleep(SOCKET_TIMEOUT_S + 0.4)
            t["open"] = time.monotonic()
            watch = asyncio.create_task(probe(svc.url, headers, t["open"] + 1.5))
            async with httpx.AsyncClient(base_url=svc.url, timeout=5) as c:
                for abha in ("asha.devi@sbx", "ravi.k@sbx", "meena.s@sbx", "kiran.p@sbx", "lata.m@sbx"):
                    shares_hung.append(await share(c, gw, abha))
                    readiness.append(await ready(c))
            hung = await watch
            os.kill(redis_pid, signal.SIGCONT)
            back = t["continued"] = time.monotonic()
            up = await probe(svc.url, headers, back + 2.5)
            await until_issued(progress, sum(c.status == 201 for c in progress) + 40)
            burst.cancel()
            await asyncio.gather(burst, return_exceptions=True)
            return progress, hung, up

        calls, probed_hung, probed_up = asyncio.run(scenario())
        stopped, opened, back = t["stopped"], t["open"], t["continued"]
        before = [c for c in calls if c.done < stopped]
        assert sum(c.status == 201 for c in before) > 20, Counter((c.op, c.status) for c in before)

        # Requests sent before the breakers opened waited at most one socket timeout (plus scheduling).
        waited = [c for c in calls if stopped - 0.5 < c.sent < opened - 0.5]
        assert waited and max(c.ms for c in waited) < (SOCKET_TIMEOUT_S + 1.0) * 1000, [c.ms for c in waited]
        # Once open, every staff call and share is a clean 503 with the usual body, at once.
        hung = [c for c in calls + probed_hung if c.sent >= opened and c.done < back]
        assert len(hung) > 20
        assert {c.status for c in hung} == {503}, Counter(c.status for c in hung)
        assert all(c.body.get("error") == "unavailable" for c in hung)
        alone = [c.ms for c in probed_hung if c.sent >= opened]
        loaded = [c.ms for c in hung if c not in probed_hung]
        share_ms = [s.ms for s in shares_hung]
        print(f"503 while Redis hangs: single caller n={len(alone)} p50={pct(alone, 0.5):.1f} "
              f"p90={pct(alone, 0.9):.1f} max={max(alone):.1f} ms; under load n={len(loaded)} "
              f"p50={pct(loaded, 0.5):.1f} max={max(loaded):.1f} ms; shares {[round(x) for x in share_ms]} ms; "
              f"readyz {[round(r.ms) for r in readiness]} ms")  # fmt: skip
        assert pct(alone, 0.5) < 50, sorted(round(x) for x in alone)
        assert max(alone) < 1000 and max(loaded) < 1000, (sorted(alone)[-5:], sorted(loaded)[-5:])
        assert [s.status for s in shares_hung] == [503] * len(shares_hung), shares_hung
        assert all(s.body.get("error") == "unavailable" for s in shares_hung)
        assert pct(share_ms, 0.5) < 50 and max(share_ms) < 1000, share_ms
        # Readiness says so, without waiting for a PING that would hang.
        assert {r.status for r in readiness} == {503} and all(r.body["redis"] != "ok" for r in readiness)
        assert max(r.ms for r in readiness) < 500, [r.ms for r in readiness]

        # Recovery: the first 201 after SIGCONT (the probe runs every 0.5 s).
        first_ok = min(c.done for c in calls + probed_up if c.status == 201 and c.sent >= back)
        print(f"first 201 {(first_ok - back) * 1000:.0f} ms after SIGCONT")
        assert first_ok - back < 2.0
        assert 0 not in {c.status for c in calls + probed_hung + probed_up}, (
            "a request hung or lost its connection"
        )
        assert {c.status for c in calls} <= {200, 201, 204, 429, 503}, Counter(c.status for c in calls)
        assert httpx.get(svc.url + "/readyz").status_code == 200

        # The recorder caught up, nothing acknowledged was lost or given out twice ...
        calls += probed_hung + probed_up
        left = wait_group_caught_up(rproc.url)
        print(f"recorder caught up; {left} acknowledged entries left undeleted in the stream")
        issued = assert_acknowledged_kept(calls, rproc.url, settings.sqlalchemy_url)
        assert len(issued) > 80
        # ... the gateway's retry of a refused share is accepted and its on-share delivered (outbox alive).
        again = asyncio.run(post_share(gw, svc.url, abha="asha.devi@sbx"))
        assert again.status == 202, again
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            sent = [r for r in gw.on_shares() if r.get("requestId") == again.body["requestId"]]
            if sent:
                break
            time.sleep(0.05)
        assert sent, "no on-share after recovery"
        log = svc.log.read_text() if svc.log else ""
        assert log.count("Redis did not answer in time") >= 1 and "circuit closed" in log
        assert "Traceback" not in log, log[-3000:]
    finally:
        if rproc.proc and rproc.proc.poll() is None:
            os.kill(redis_pid, signal.SIGCONT)
        if svc:
            svc.stop()
        rproc.cleanup()

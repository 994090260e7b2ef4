"""Gateway storms (slow, 5xx, 401 set through the sandbox's POST /api/faults) against the real service:
on-share retries stay bounded, every on-share ends sent or failed, and intake acks stay as fast as without."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from tests.support.app import ServiceProc, make_settings, seed
from tests.support.load import post_share, sql_rows
from tests.support.servers import RedisProc
from token_service.abdm.sandbox_state import SandboxState

SHARES = 40
CONCURRENCY = 4
# Short on-share deadline so a storm's retries run out within the test; the production default is 25 s.
DEADLINE_S = 5.0


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def share_wave(gw: SandboxState, url: str, tag: str) -> tuple[list[float], list[str]]:
    """SHARES shares from CONCURRENCY callers: their ack latencies (ms) and request ids."""
    latencies: list[float] = []
    request_ids: list[str] = []
    todo = iter(range(SHARES))

    async def caller() -> None:
        for i in todo:
            call = await post_share(gw, url, counter=("OPD1", "OPD2", "ORTHO")[i % 3], abha=f"{tag}{i}@sbx")
            assert call.status == 202, call
            latencies.append(call.ms)
            request_ids.append(call.body["requestId"])

    await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
    return latencies, request_ids


def outcomes(database_url: str, request_ids: list[str], timeout: float) -> dict[str, tuple[str, int]]:
    """Wait until none of these on-shares is pending; request id -> (status, attempts)."""
    quoted = ",".join(f"'{r}'" for r in request_ids)
    deadline = time.monotonic() + timeout
    while True:
        rows = sql_rows(
            database_url, f"SELECT request_id, status, attempts FROM on_share WHERE request_id IN ({quoted})"
        )
        found = {r[0]: (r[1], int(r[2])) for r in rows}
        if len(found) == len(request_ids) and all(s != "pending" for s, _ in found.values()):
            return found
        if time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def attempt_rows(database_url: str, request_ids: list[str]) -> dict[str, int]:
    quoted = ",".join(f"'{r}'" for r in request_ids)
    rows = sql_rows(database_url, "SELECT o.request_id, count(a.id) FROM on_share o JOIN on_share_attempt a "
                                  f"ON a.on_share_id = o.id WHERE o.request_id IN ({quoted}) GROUP BY o.request_id")  # fmt: skip
    return {r[0]: int(r[1]) for r in rows}


def test_gateway_storms_keep_retries_bounded_and_intake_fast(
    tmp_path: Path, sandbox: tuple[SandboxState, str]
) -> None:
    gw, gw_url = sandbox
    rproc = RedisProc().start()
    svc: ServiceProc | None = None
    try:
        settings = make_settings(tmp_path, rproc.url, abdm_gateway_url=gw_url)
        seed(settings)
        svc = ServiceProc(settings, workers=2, env_extra={"OPD_ONSHARE_DEADLINE_SECONDS": str(DEADLINE_S)})
        svc.start()
        db = settings.sqlalchemy_url

        def fault(mode: str, **kw: float) -> None:
            r = httpx.post(gw_url + "/api/faults", json={"mode": mode, **kw}, timeout=5)
            assert r.status_code == 200, r.text

        report: dict[str, str] = {}
        asyncio.run(share_wave(gw, svc.url, "warm"))  # both workers warm
        base, ids = asyncio.run(share_wave(gw, svc.url, "base"))
        done = outcomes(db, ids, 10)
        assert {s for s, _ in done.values()} == {"sent"} and {a for _, a in done.values()} == {1}
        report["none"] = f"ack p99 {p99(base):.0f} ms"

        for mode, extra in (("5xx", {}), ("401", {}), ("slow", {"delay_s": 1.5})):
            fault(mode, **extra)
            lat, ids = asyncio.run(share_wave(gw, svc.url, mode))
            done = outcomes(db, ids, DEADLINE_S + 10)
            fault("ok")
            attempts = attempt_rows(db, ids)
            statuses = {s for s, _ in done.values()}
            most = max(attempts.values())
            report[mode] = (
                f"ack p99 {p99(lat):.0f} ms, attempts per on-share max {most}, outcomes {sorted(statuses)}"
            )
            assert len(done) == SHARES and "pending" not in statuses, done
            # Intake never waits for the gateway: the storm does not show in the ack latency.
            assert p99(lat) < max(3 * p99(base), p99(base) + 50), report
            # attempts column and attempt rows agree: every call to the gateway was recorded.
            assert all(attempts[r] == a for r, (_, a) in done.items())
            if mode == "slow":
                # A slow gateway still answers within the client timeout: one attempt each, all sent.
                assert statuses == {"sent"} and most == 1
            else:
                # Retried with backoff (0.25, 0.5, 1, 2, 3 s ...) until the deadline, then given up.
                assert statuses == {"failed"}
                assert min(attempts.values()) >= 2 and most <= 8, attempts
        # After the storm a new share is delivered at once.
        _, ids = asyncio.run(share_wave(gw, svc.url, "after"))
        done = outcomes(db, ids, 10)
        assert {s for s, _ in done.values()} == {"sent"}
        for mode, line in report.items():
            print(f"gateway {mode}: {line}")
    finally:
        fault_reset = gw.set_fault("ok")
        assert fault_reset["mode"] == "ok"
        if svc:
            svc.stop()
        rproc.cleanup()

"""Scenario 8: a bounded soak mixing shares, call-nexts and SSE clients; RSS and p99 over time."""

from __future__ import annotations

import asyncio
import time

import httpx

from bench import checks, pgwaits
from bench.context import Run
from bench.loadgen import drive
from bench.procs import COUNTERS
from bench.scen_sse import ClientFleet, board_latencies, call_next
from bench.stats import Section, summary_ms

WINDOWS = 10
CALLS_MAX_PER_S = 10.0  # ten call-outs a second is already far beyond any OPD hall


async def run_soak(run: Run, section: Section) -> None:
    stack = run.need_stack()
    sizes = run.sizes
    # Half the measured ceiling at most: a soak looks for drift and leaks, not for the overload point.
    measured = float(run.figures.get("shares_max_per_s") or 0.0)
    rate = min(sizes.soak_share_rate, 0.5 * measured) if measured > 0 else sizes.soak_share_rate
    rate = max(rate, 1.0)
    call_rate = min(rate, CALLS_MAX_PER_S)
    window_s = sizes.soak_s / WINDOWS
    headers = stack.login()
    requests, ids = stack.share_requests(int(rate * sizes.soak_s * 1.05) + 20, "soak")
    fleet = ClientFleet(stack, run, sizes.soak_sse_clients, [], "soak")
    await fleet.ready()
    sent: dict[str, float] = {}
    call_errors = 0
    stop = asyncio.Event()

    async def clerks() -> None:
        """Desks call steadily; every call fans out to every board."""
        nonlocal call_errors
        gap = 1.0 / call_rate
        async with httpx.AsyncClient(headers=headers, timeout=30) as http:
            i = 0
            while not stop.is_set():
                counter = COUNTERS[i % len(COUNTERS)]
                t0 = time.time()
                try:
                    status, label = await call_next(http, stack, counter, "D" + counter)
                except httpx.HTTPError:
                    status, label = 599, None
                if label is not None:
                    sent[label] = t0
                elif status != 204:
                    call_errors += 1
                i += 1
                await asyncio.sleep(max(0.0, gap - (time.time() - t0)))

    clerk_task = asyncio.create_task(clerks())
    waits = stack.wait_sampler()
    cursor = 0
    used: list[str] = []
    windows: list[tuple[float, float]] = []
    share_errors = 0
    try:
        for _w in range(WINDOWS):
            started = time.time()
            res = await drive(
                stack.service.url, requests[cursor:], concurrency=32, duration_s=window_s, rate=rate
            )
            used += [ids[cursor + i] for i in res.index]
            cursor += max(res.index, default=-1) + 1
            ok = [x for x, s in zip(res.latency_s, res.status, strict=True) if s == 202]
            errors = res.count - len(ok)
            share_errors += errors
            a = summary_ms(ok)
            rss = stack.service.worker_rss_mb()
            section.rows.append({"minute": round((started - windows[0][0] if windows else 0) / 60, 2),
                                 "shares": res.count, "ack_p50_ms": a["p50"], "ack_p99_ms": a["p99"],
                                 "share_errors": errors, "rss_mb_per_worker": rss})  # fmt: skip
            windows.append((started, time.time()))
    finally:
        stop.set()
        await clerk_task
        if waits is not None:
            waits.stop()
    await asyncio.sleep(1.5)
    boards, _, dropped = await fleet.collect()
    # Per window: the p99 of call-next → board event for the calls made in that window.
    for row, (t_from, t_to) in zip(section.rows, windows, strict=True):
        in_window = {label: t for label, t in sent.items() if t_from <= t < t_to}
        b = summary_ms(board_latencies(boards, in_window))
        row["calls"] = len(in_window)
        row["sse_p50_ms"], row["sse_p99_ms"] = b["p50"], b["p99"]
        if waits is not None:
            row.update(waits.window(t_from, t_to))
    received = len(board_latencies(boards, sent))
    missing = len(boards) * len(sent) - received
    run.figures["soak_rss_mb"] = [x for row in section.rows for x in row["rss_mb_per_worker"]]
    first, last = section.rows[0]["rss_mb_per_worker"], section.rows[-1]["rss_mb_per_worker"]
    section.notes.append(
        f"{sizes.soak_s / 60:.1f} min: shares at {rate:.0f}/s, call-next at {call_rate:.0f}/s over "
        f"{len(COUNTERS)} desks ({len(sent)} calls), {fleet.connected} SSE clients ({len(boards)} boards). "
        f"RSS per worker {first} MB → {last} MB."
    )
    if waits is not None:
        section.notes.append(pgwaits.NOTE + " A share's acknowledgement and a clerk's call both wait for "
                             "their commit; the board events do not.")  # fmt: skip
    total_errors = share_errors + call_errors + dropped + fleet.failed + missing
    section.check("soak errors = 0", total_errors == 0,
                  f"{share_errors} share errors, {call_errors} call errors, {fleet.failed} SSE connect failures, "
                  f"{dropped} SSE drops, {missing} board events missing of {len(boards) * len(sent)}",
                  invariant=True)  # fmt: skip
    checks.on_shares(stack, section, used)
    checks.numbering(stack, section)

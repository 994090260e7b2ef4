"""Scenarios 2 and 3: ABDM share intake throughput and ack latency; scan to on-share at the sandbox."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

from bench import checks, pgwaits
from bench.context import Run
from bench.loadgen import LoadResult, drive
from bench.stack import BoxCpu
from bench.stats import Section, summary_ms

CLOSED_CONCURRENCY = 64


def _row(label: str, res: LoadResult, target: float | None) -> dict[str, object]:
    ok = [lat for lat, st in zip(res.latency_s, res.status, strict=True) if st == 202]
    s = summary_ms(ok)
    errors = res.count - len(ok)
    return {"load": label, "offered_per_s": round(target, 1) if target else "max", "acked_per_s":
            round(len(ok) / res.elapsed_s, 1), "p50_ms": s["p50"], "p90_ms": s["p90"], "p99_ms": s["p99"],
            "errors": errors, "statuses": dict(Counter(res.status))}  # fmt: skip


async def run_intake(run: Run, section: Section) -> None:
    stack = run.need_stack()
    step = run.sizes.step_s
    budget = int(3500 * step * 4.5) if not run.smoke else 400
    requests, ids = stack.share_requests(budget, "i")
    url = stack.service.url
    cursor = 0
    used: list[str] = []
    span = (0.0, 0.0)  # the last step's start and end

    cores = os.cpu_count() or 1
    step_cpu: dict[str, float] = {}  # the last step's CPU, in all the stack's processes and outside it
    busiest = [""]  # the last step's busiest processes outside the stack
    outside_notes: list[str] = []
    wakeups_by_part = [""]  # the last step's wake-ups per share, by part of the stack
    wakeup_notes: list[str] = []
    cpu_by_part: dict[str, dict[str, float]] = {}  # CPU ms per share by part of the stack, per step
    last_parts: dict[str, float] = {}  # the last step's

    async def load(n: int, concurrency: int, duration_s: float, rate: float | None = None) -> LoadResult:
        nonlocal cursor, span
        started = time.time()
        ours = stack.stack_pids()
        box0, parts0, woke0 = BoxCpu.now(), stack.cpu_seconds(), stack.wakeups()
        r = await drive(
            url, requests[cursor : cursor + n], concurrency=concurrency, duration_s=duration_s, rate=rate
        )
        parts = {k: max(0.0, s - parts0.get(k, 0.0)) for k, s in stack.cpu_seconds().items()}
        cpu = sum(parts.values())
        woke = {k: count - woke0.get(k, 0) for k, count in stack.wakeups().items()}
        outside = BoxCpu.now().since(box0, ours, r.elapsed_s)
        busiest[0] = str(outside.pop("other_busiest"))
        step_cpu.update(outside)  # type: ignore[arg-type]
        shares = max(1, r.ok_count(202))
        step_cpu["cpu_ms_per_share"] = round(cpu * 1000 / shares, 2)
        step_cpu["cpu_busy_pct"] = round(100 * cpu / (r.elapsed_s * cores), 1)
        step_cpu["wakeups_per_share"] = round(sum(woke.values()) / shares, 1)
        last_parts.clear()
        last_parts.update({k: round(sec * 1000 / shares, 3) for k, sec in parts.items()})
        wakeups_by_part[0] = ", ".join(f"{k} {count / shares:.1f}" for k, count in woke.items())
        step_cpu["core_ms"] = stack.cores.window(started, time.time()) if stack.cores else []
        sent = [ids[cursor + i] for i in r.index]
        used.extend(sent)
        span = (started, time.time())
        cursor += max(r.index, default=-1) + 1
        # The on-shares this step owes are sent before the next step starts.
        r.drain_s = await asyncio.to_thread(checks.wait_delivered, stack, sent)
        return r

    await load(budget // 10, concurrency=16, duration_s=step / 2)  # warm-up, not reported
    cpu_before, scans_before, wal_before = stack.cpu_seconds(), stack.scanned_rows(), stack.wal_bytes()
    calls_before = stack.redis_calls()
    res = await load(budget, concurrency=CLOSED_CONCURRENCY, duration_s=step)
    cpu_after, scans_after, wal_after = stack.cpu_seconds(), stack.scanned_rows(), stack.wal_bytes()
    calls_after = stack.redis_calls()
    max_rate = res.ok_count(202) / res.elapsed_s
    per_share = {
        k: max(0.0, cpu_after[k] - cpu_before[k]) * 1000 / max(1, res.ok_count(202)) for k in cpu_after
    }
    run.figures["cpu_ms_per_share"] = {k: round(v, 2) for k, v in per_share.items()}
    section.notes.append(
        "CPU per share during the closed loop (its on-shares included): "
        + ", ".join(f"{k} {v:.2f} ms" for k, v in per_share.items())
        + f"; {sum(per_share.values()):.2f} ms in all, so {cores} cores allow about "
        f"{cores * 1000 / max(0.01, sum(per_share.values())):.0f} shares/s."
    )
    section.rows.append(_row(f"closed loop, {CLOSED_CONCURRENCY} connections", res, None) | step_cpu)
    closed_cores = list(step_cpu.get("core_ms") or [])
    wakeup_notes.append(f"closed loop: {wakeups_by_part[0]}")
    cpu_by_part["closed loop"] = dict(last_parts)
    shares = max(1, res.ok_count(202))
    calls = {
        k: (n - calls_before.get(k, 0)) / shares for k, n in calls_after.items() if n > calls_before.get(k, 0)
    }
    calls.pop("info", None)  # the benchmark's own reads
    run.figures["redis_calls_per_share"] = {k: round(v, 2) for k, v in sorted(calls.items())}
    section.notes.append(
        f"Redis ran {sum(calls.values()):.1f} commands per share during the closed loop ("
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v >= 0.01)
        + "; the commands a script runs count as well as its evalsha)."
    )
    if wal_before is not None and wal_after is not None:
        wal = (wal_after - wal_before) / max(1, res.ok_count(202))
        run.figures["wal_bytes_per_share"] = round(wal)
        section.notes.append(
            f"PostgreSQL's write-ahead log grew by {wal:,.0f} bytes per share during the closed loop (the "
            "share's rows, its on-share's outcome and the recorder's history, with their indexes); "
            "every commit waits for these bytes to reach the disk."
        )
    if scans_after:
        # A share's statements all go by key: no table should be read whole. (A backend reports its
        # counts about once a second while busy, so the last second or so may fall in the next step:
        # a guard against a scan that grows with the tables, not an exact count.)
        scanned = {
            t: n - scans_before.get(t, 0) for t, n in scans_after.items() if n > scans_before.get(t, 0)
        }
        scan_rows = sum(scanned.values()) / max(1, res.ok_count(202))
        run.figures["seq_scan_rows_per_share"] = round(scan_rows, 2)
        section.check("no sequential scan on the share path (rows read by sequential scans per share ≤ 1)",
                      scan_rows <= 1.0, f"{scan_rows:.2f} rows per share"
                      + (f" ({', '.join(f'{t} {n}' for t, n in sorted(scanned.items()))})" if scanned else ""))  # fmt: skip
    end_to_end = res.ok_count(202) / (res.elapsed_s + res.drain_s)
    run.figures["shares_end_to_end_per_s"] = round(end_to_end, 1)
    section.notes.append(
        f"Closed loop: {res.ok_count(202)} shares acknowledged in {res.elapsed_s:.1f} s; their on-shares "
        f"were all at the sandbox {res.drain_s:.1f} s later, so intake and delivery together ran at "
        f"{end_to_end:.0f} shares/s. Each step below starts once the previous one owes no on-share."
    )
    p99_at_half = float("nan")
    waits = stack.wait_sampler()
    try:
        for frac in (0.25, 0.5, 0.75, 1.0):
            rate = max(1.0, frac * max_rate)
            n = int(rate * step) + 1
            # Enough connections that the client never holds a request back: each may wait up to 0.5 s
            # for its answer before the offered rate would slip (a client-side limit would show as
            # latency).
            conc = min(512, max(32, int(rate * 0.5)))
            r = await load(n, concurrency=conc, duration_s=step, rate=rate)
            row = _row(f"{int(frac * 100)} % of max", r, rate) | step_cpu
            outside_notes.append(f"{int(frac * 100)} %: {busiest[0]}")
            wakeup_notes.append(f"{int(frac * 100)} %: {wakeups_by_part[0]}")
            cpu_by_part[f"{int(frac * 100)} %"] = dict(last_parts)
            if waits is not None:
                row.update(waits.window(*span))
            section.rows.append(row)
            if frac == 0.5:
                p99_at_half = float(str(row["p99_ms"]))
    finally:
        if waits is not None:
            waits.stop()
    if waits is not None:
        section.notes.append(pgwaits.NOTE)
    run.figures["shares_max_per_s"] = max_rate
    section.notes.append(
        "Latency is from the intended send time (open loop), so queueing inside the service is counted. "
        "Each step's connections (half a second's worth of requests) are opened before its clock starts. "
        f"The load generator, the sandbox and PostgreSQL share the same {cores} cores with the service. "
        "cpu_ms_per_share is the CPU of every process of the stack (the load generator included) during "
        "the step, per acknowledged share; cpu_busy_pct the same as a share of the box's cores. Under "
        "a steady load each message wakes its receiver on its own, where at the ceiling every wake-up "
        "finds several waiting: a share costs more CPU at half the ceiling than at the ceiling, so the "
        "cores are busier than half."
    )
    section.notes.append(
        "other_cpu_pct is the CPU that processes outside the stack used during the step (the box's own "
        "services), kernel_threads_pct that of the kernel's threads (some of it the stack's own loopback "
        "traffic), steal_pct the time the hypervisor gave to other machines, each as a share of the box's "
        "cores. Busiest processes outside the stack, by step: " + "; ".join(outside_notes) + "."
    )
    section.notes.append(
        "wakeups_per_share is how many times the stack's processes went to sleep and were woken again "
        "during the step (their main threads' voluntary context switches: waits for a socket, a timer, a "
        "lock or the disk), "
        "per acknowledged share. Each costs the wake-up itself and the code after it, which runs on "
        "caches the other processes have cooled (`python -m bench.wakeup` measures the first part on "
        "the box). By part of the stack: " + "; ".join(wakeup_notes) + "."
    )
    run.figures["cpu_ms_per_share_by_step"] = cpu_by_part
    section.notes.append(
        "cpu_ms_per_share by part of the stack, by step (which processes' CPU grows below the ceiling): "
        + "; ".join(f"{step}: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
                    for step, parts in cpu_by_part.items())
        + "."
    )  # fmt: skip
    hello_cores = run.figures.get("core_ms")
    section.notes.append(
        "core_ms is how long a fixed piece of Python work took, in CPU time, on each of the box's cores "
        "during the step (medians of samples every 0.5 s; `bench/coreprobe.py`)"
        + (", against " + " and ".join(f"{ms} ms" for ms in hello_cores) + " while the hello was measured"
           if hello_cores else "")
        + ". A larger figure means that core ran slower: every "
        "process's CPU per share rises with it, and the ratio to the hello understates the service."
    )  # fmt: skip
    w = run.sizes.workers
    section.check(f"≥ 2,000 shares/s with {w} workers", max_rate >= 2000, f"{max_rate:.0f} shares/s")
    hello = run.figures.get("hello_rps")
    if hello:
        section.check("throughput ≥ 0.5 × bare hello", max_rate >= 0.5 * hello,
                      f"{max_rate:.0f} / {hello:.0f} = {max_rate / hello:.2f} × hello")  # fmt: skip
        if hello_cores and closed_cores:
            # Both are CPU-bound on the same cores: at the hello's core speed the closed loop would have
            # run faster (or slower) by the ratio of the cores' figures.
            slower = (sum(closed_cores) / len(closed_cores)) / (sum(hello_cores) / len(hello_cores))
            section.notes.append(
                f"The probe's work took {slower:.2f} × as long on the cores during the closed loop as while "
                f"the hello was measured: at the hello's core speed the closed loop would have "
                f"taken about {max_rate * slower:.0f} shares/s, {max_rate * slower / hello:.2f} × the hello "
                "(an estimate, not a check)."
            )
    section.check("ack p99 ≤ 20 ms at 50 % of max", p99_at_half <= 20, f"p99 {p99_at_half} ms")
    checks.on_shares(stack, section, used)
    checks.numbering(stack, section)
    run.figures["intake_rss_mb"] = stack.service.worker_rss_mb()


async def run_scan(run: Run, section: Section) -> None:
    """Scan → on-share received at the sandbox, at the target rate and, below the ceiling, at half of it."""
    stack = run.need_stack()
    step = max(run.sizes.step_s, 1.0)
    rates = [run.sizes.scan_rate]
    ceiling = float(run.figures.get("shares_max_per_s") or 0.0)
    if 0 < ceiling < 2 * run.sizes.scan_rate:
        rates.append(max(1.0, round(0.5 * ceiling, 1)))  # what on-share delivery adds when intake keeps up
    for rate in rates:
        requests, ids = stack.share_requests(int(rate * step) + 1, f"s{rate:g}")
        cleared = await asyncio.to_thread(httpx.delete, stack.gateway_url + "/bench/received")
        cleared.raise_for_status()
        res = await drive(stack.service.url, requests, concurrency=min(128, max(8, int(rate * 0.05))),
                          duration_s=step, rate=rate)  # fmt: skip
        sent = {ids[i]: t for i, t in zip(res.index, res.sent_at, strict=True)}
        received = checks.on_shares(stack, section, list(sent), wait_s=60)
        lat = [received[rid] - t for rid, t in sent.items() if rid in received]
        s = summary_ms(lat)
        acks = summary_ms([x for x, st in zip(res.latency_s, res.status, strict=True) if st == 202])
        section.rows.append({"rate_per_s": rate, "shares": res.count, "took_s": round(res.elapsed_s, 1),
                             "ack_p50_ms": acks["p50"], "ack_p99_ms": acks["p99"], "onshare_p50_ms": s["p50"],
                             "onshare_p90_ms": s["p90"], "onshare_p99_ms": s["p99"], "onshare_max_ms": s["max"]})  # fmt: skip
        if rate == run.sizes.scan_rate:
            section.check(f"scan → on-share p99 ≤ 250 ms at {rate:.0f} shares/s", s["p99"] <= 250,
                          f"p99 {s['p99']} ms (sending {res.count} shares took {res.elapsed_s:.0f} s)")  # fmt: skip
    checks.numbering(stack, section)


async def profile_intake(run: Run, section: Section) -> Path | None:
    """py-spy on one worker while shares run closed-loop; the collapsed stacks go next to the report."""
    stack = run.need_stack()
    # The virtualenv's py-spy also when the venv is not activated (`.venv/bin/python -m bench`).
    spy_bin = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if run.sizes.profile_s <= 0 or spy_bin is None:
        section.notes.append("py-spy not installed or smoke mode: no profile taken.")
        return None
    pid = stack.service.worker_pids()[0]
    out = run.workdir / "share-path.collapsed"
    seconds = run.sizes.profile_s
    requests, ids = stack.share_requests(int(4000 * (seconds + 3)), "prof")
    cmd = [spy_bin, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250",
           "--format", "raw", "--nonblocking", "--output", str(out)]  # fmt: skip
    run.commands.append(" ".join(["py-spy", *cmd[1:3], "<worker pid>", *cmd[4:-1], "share-path.collapsed"]))
    spy = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    res = await drive(stack.service.url, requests, concurrency=CLOSED_CONCURRENCY, duration_s=seconds + 1.5)
    await asyncio.wait_for(spy.wait(), 60)
    checks.on_shares(stack, section, [ids[i] for i in res.index])
    return out if out.exists() else None

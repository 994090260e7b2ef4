"""Scenario 1: the ceilings measured in the same run (Redis, a bare FastAPI app) and keep-alive latency."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import time
from urllib.parse import urlsplit

import redis

from bench.context import Run
from bench.loadgen import single_connection_latency
from bench.procs import start_hello
from bench.stats import Section, summary_ms
from token_service.queue import keys
from token_service.queue.scripts import _source

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, connections: int, seconds: float, run: Run) -> dict[str, float] | None:
    """Requests/s and latency percentiles (ms) from `wrk --latency`; None when wrk is not installed."""
    if not run.has_wrk:
        return None
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", url]
    run.commands.append(" ".join(cmd))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    figures: dict[str, float] = {}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    figures["rps"] = float(rps.group(1)) if rps else 0.0
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        figures[f"p{pct}"] = round(float(value) * _UNITS[unit], 3)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    figures["non_2xx"] = float(errors.group(1)) if errors else 0.0
    return figures


def redis_benchmark(url: str, args: list[str], n: int, run: Run) -> dict[str, float]:
    parts = urlsplit(url)
    cmd = ["redis-benchmark", "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port), "-c", "50",
           "-n", str(n), "--dbnum", "1", "--csv", *args]  # fmt: skip
    shown = [a if a else "''" for a in cmd]
    run.commands.append(" ".join(shown) if len(" ".join(shown)) < 200 else " ".join(shown[:14]) + " …")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    rows = list(csv.reader(io.StringIO(out)))
    header, last = rows[0], rows[-1]
    data = dict(zip(header, last, strict=False))
    return {
        "rps": float(data["rps"]),
        "p50": float(data["p50_latency_ms"]),
        "p95": float(data["p95_latency_ms"]),
        "p99": float(data["p99_latency_ms"]),
    }


async def run_limits(run: Run, section: Section) -> None:
    stack = run.need_stack()
    n = run.sizes.redis_requests
    # redis-benchmark runs in database 1 (--dbnum 1), away from the service's keys in database 0.
    client = redis.Redis.from_url(stack.redis_url.rsplit("/", 1)[0] + "/1")
    sha = client.script_load(_source("issue"))
    hip = "BENCH0000001"  # its own facility in its own database: the service's counters stay gapless
    day_end = int(time.time() * 1000) + 86_400_000
    lua_args = ["EVALSHA", sha, "2", keys.events_stream(hip), keys.expiry_index(hip), keys.facility_prefix(hip),
                str(int(time.time() * 1000)), hip, "OPD1", time.strftime("%Y%m%d"), str(day_end), "1800000",
                "", "", "normal", "walk_in", "pub", "A"]  # fmt: skip
    lua = redis_benchmark(stack.redis_url, lua_args, n, run)
    issued = int(client.get(keys.sequence_key(hip, "OPD1", time.strftime("%Y%m%d"))) or 0)
    client.flushdb()
    incr = redis_benchmark(stack.redis_url, ["-t", "incr"], n, run)
    client.close()
    section.rows.append({"what": "redis-benchmark EVALSHA issue.lua (50 conns)", "per_s": lua["rps"],
                         "p50_ms": lua["p50"], "p95_ms": lua["p95"], "p99_ms": lua["p99"]})  # fmt: skip
    section.rows.append({"what": "redis-benchmark INCR (50 conns)", "per_s": incr["rps"], "p50_ms": incr["p50"],
                         "p95_ms": incr["p95"], "p99_ms": incr["p99"]})  # fmt: skip
    section.check("issue.lua allocated every call", issued == n, f"{issued} numbers for {n} calls")
    run.figures["redis_lua_rps"] = lua["rps"]

    hello, hello_url = start_hello(run.workdir, run.sizes.workers)
    try:
        seconds, conns = run.sizes.step_s, run.sizes.wrk_connections
        hello_from = time.time()
        hello_wrk = wrk(hello_url + "/", conns, seconds, run)
        core_ms = stack.cores.window(hello_from, time.time()) if stack.cores else []
        health_wrk = wrk(stack.service.url + "/healthz", conns, seconds, run)
        hello_one = await single_connection_latency(hello_url + "/", 2000 if not run.smoke else 30, 6.0)
    finally:
        hello.stop()
    svc_one = await single_connection_latency(stack.service.url + "/healthz", 2000 if not run.smoke else 30)
    w = run.sizes.workers
    if hello_wrk is None or health_wrk is None:
        section.notes.append("wrk is not installed: the HTTP ceilings were skipped (apt-get install -y wrk).")
    else:
        for name, fig in ((f"bare FastAPI hello, `uvicorn --workers {w}` (wrk)", hello_wrk),
                          (f"service GET /healthz, `opd-token serve --workers {w}` (wrk)", health_wrk)):  # fmt: skip
            section.rows.append({"what": name + f" ({conns} conns)", "per_s": fig["rps"], "p50_ms": fig.get("p50"),
                                 "p90_ms": fig.get("p90"), "p99_ms": fig.get("p99")})  # fmt: skip
        run.figures["hello_rps"] = hello_wrk["rps"]
        run.figures["healthz_rps"] = health_wrk["rps"]
        if core_ms:
            run.figures["core_ms"] = core_ms
            section.notes.append(
                "While wrk measured the hello, a fixed piece of Python work took "
                + " and ".join(f"{ms} ms" for ms in core_ms)
                + " of CPU time on the box's cores (medians; `bench/coreprobe.py` samples every core"
                " through the run). Scenario 2 gives the same for each of its steps."
            )
    for name, samples in ((f"single keep-alive connection: bare hello, uvicorn --workers {w}", hello_one),
                          (f"single keep-alive connection: service /healthz, opd-token serve --workers {w}",
                           svc_one)):  # fmt: skip
        s = summary_ms(samples)
        section.rows.append({"what": name, "n": int(s["n"]), "p50_ms": s["p50"], "p90_ms": s["p90"],
                             "p99_ms": s["p99"]})  # fmt: skip
    svc = summary_ms(svc_one)
    run.figures["keepalive_p50_ms"] = svc["p50"]
    section.check("service keep-alive p50 < 1 ms (TCP_NODELAY on the served socket)", svc["p50"] < 1.0,
                  f"p50 {svc['p50']} ms; plain uvicorn multi-worker p50 {summary_ms(hello_one)['p50']} ms")  # fmt: skip

"""Scenario 4: call-next to the event on thousands of real SSE connections (boards and status pages)."""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
import time
from typing import Any

import httpx
import orjson

from bench.context import Run
from bench.procs import HIP
from bench.stack import Stack
from bench.stats import Section, summary_ms

PROCESSES = 2  # client processes: one per core, so the clients' own parsing is not one queue
STATUS_SHARE = 0.2  # of the clients follow a patient's status page, the rest a board
CALL_GAP_S = 0.5
COUNTER, DESK = "OPD1", "DOPD1"
StatusPage = tuple[int | None, list[tuple[int, float]]]  # place before the calls; (place, arrival) updates
OTHER_FILES = 1000  # a worker's or client process's files besides its clients' sockets


def clients_within_open_files(workers: int) -> tuple[int, int]:
    """(the box's open-file limit per process, the most clients it lets the run hold): each worker and
    each client process holds its share of the sockets, the workers' shares a few per cent uneven."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return -1, 10**9
    return hard, int(max(0, hard - OTHER_FILES) * 0.9) * min(workers, PROCESSES)


async def fill_queue(stack: Stack, headers: dict[str, str], n: int) -> list[str]:
    """Walk-in tokens on one counter; returns their public ids in queue order."""
    url = f"{stack.service.url}/api/facilities/{HIP}/counters/{COUNTER}/tokens"
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        sem = asyncio.Semaphore(16)

        async def one() -> tuple[int, str]:
            async with sem:
                r = await http.post(url, json={})
                r.raise_for_status()
                body = r.json()
                return int(body["number"]), str(body["public_id"])

        made = await asyncio.gather(*(one() for _ in range(n)))
    return [pid for _, pid in sorted(made)]


class ClientFleet:
    """SSE client processes: spawn, wait until every client has its first event, stop and collect."""

    def __init__(self, stack: Stack, run: Run, n: int, status_ids: list[str], tag: str) -> None:
        n_status = int(n * STATUS_SHARE) if status_ids else 0
        n_boards = n - n_status
        per = [n_boards // PROCESSES + (1 if i < n_boards % PROCESSES else 0) for i in range(PROCESSES)]
        status_ids = (status_ids * (n_status // max(1, len(status_ids)) + 1))[:n_status]
        self.procs: list[subprocess.Popen[str]] = []
        self.outs = [run.workdir / f"sse-{tag}-{i}.json" for i in range(PROCESSES)]
        for i in range(PROCESSES):
            # Each process connects from a loopback address of its own: one address has about 28,000
            # ports to connect from, fewer than the clients a box can hold.
            args = [sys.executable, "-m", "bench.sse_clients", "--url", stack.service.url, "--hip", HIP,
                    "--boards", str(per[i]), "--status", ",".join(status_ids[i::PROCESSES]),
                    "--out", str(self.outs[i]), "--source", f"127.0.0.{i + 1}"]  # fmt: skip
            self.procs.append(
                subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            )
        self.connected = self.failed = 0
        self.connect_s = 0.0
        self.reasons: dict[str, int] = {}

    async def ready(self) -> None:
        for p in self.procs:
            assert p.stdout is not None
            line = (await asyncio.to_thread(p.stdout.readline)).split()
            if len(line) == 4 and line[0] == "ready":
                self.connected += int(line[1])
                self.failed += int(line[2])
                self.connect_s = max(self.connect_s, float(line[3]))

    async def collect(self) -> tuple[list[list[tuple[str, float]]], list[StatusPage], int]:
        """Per board client its (label, arrival) calls; per status client its place in line before the
        calls and its (place, arrival) updates; drops."""
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write("stop\n")
            p.stdin.flush()
        for p in self.procs:
            await asyncio.to_thread(p.wait, 120)
        boards: list[list[tuple[str, float]]] = []
        status: list[StatusPage] = []
        dropped = 0
        for out in self.outs:
            data = orjson.loads(out.read_bytes())
            dropped += int(data["dropped"])
            for reason, count in data["reasons"].items():
                self.reasons[reason] = self.reasons.get(reason, 0) + int(count)
            boards += [[(str(a), float(b)) for a, b in calls] for calls in data["boards"]]
            status += [(start, [(int(p), float(t)) for p, t in updates]) for start, updates in data["status"]]
            out.unlink()
        return boards, status, dropped


def board_latencies(boards: list[list[tuple[str, float]]], sent: dict[str, float]) -> list[float]:
    return [t - sent[label] for calls in boards for label, t in calls if label in sent]


def status_latencies(status: list[StatusPage], call_times: list[float]) -> tuple[list[float], int]:
    """Per status page and call: from the call to the first update that shows the page's token at the
    place that call moved it to, or nearer the front (a later update stands in for one it replaced).
    Also the calls a page never showed. Each call on the counter moves every waiting token up one."""
    out: list[float] = []
    missing = 0
    for start, updates in status:
        if start is None:
            missing += len(call_times)
            continue
        for k, t0 in enumerate(call_times):
            shown = next((t for place, t in updates if place <= start - (k + 1)), None)
            if shown is None:
                missing += 1
            else:
                out.append(shown - t0)
    return out, missing


async def call_next(http: httpx.AsyncClient, stack: Stack, counter: str, desk: str) -> tuple[int, str | None]:
    url = f"{stack.service.url}/api/facilities/{HIP}/counters/{counter}/call-next"
    r = await http.post(url, json={"desk": desk})
    return r.status_code, (str(r.json()["label"]) if r.status_code == 200 else None)


async def clients_round(stack: Stack, run: Run, headers: dict[str, str], n: int, status_ids: list[str],
                        calls: int) -> dict[str, Any]:  # fmt: skip
    """Connect `n` clients, make `calls` call-nexts, return latency figures."""
    fleet = ClientFleet(stack, run, n, status_ids, str(n))
    await fleet.ready()
    sent: dict[str, float] = {}
    call_times: list[float] = []
    pause = 0.3 if run.smoke else 1.0
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        await asyncio.sleep(pause)
        for _ in range(calls):
            t0 = time.time()
            _status, label = await call_next(http, stack, COUNTER, DESK)
            if label is not None:
                sent[label] = t0
                call_times.append(t0)
            await asyncio.sleep(CALL_GAP_S * pause)
        await asyncio.sleep(2.0 * pause)
    rss = stack.service.worker_rss_mb()  # while every client is still connected
    boards, status_updates, dropped = await fleet.collect()
    board_lat = board_latencies(boards, sent)
    status_lat, status_missing = status_latencies(status_updates, call_times)
    expected = len(boards) * len(sent)
    b, s = summary_ms(board_lat), summary_ms(status_lat)
    return {"clients": n, "connected": fleet.connected, "connect_failed": fleet.failed,
            "connect_s": round(fleet.connect_s, 1), "calls": len(sent), "board_events": len(board_lat),
            "board_missing": expected - len(board_lat), "board_p50_ms": b["p50"], "board_p90_ms": b["p90"],
            "board_p99_ms": b["p99"], "status_events": len(status_lat), "status_missing": status_missing,
            "status_p50_ms": s["p50"], "status_p99_ms": s["p99"], "worker_rss_mb": max(rss, default=None),
            "dropped": dropped, "failures": fleet.reasons or None}  # fmt: skip


async def run_sse(run: Run, section: Section) -> None:
    stack = run.need_stack()
    headers = stack.login()
    sizes = run.sizes
    wanted = [sizes.sse_clients, *[n for n in sizes.sse_ramp if n > sizes.sse_clients]]
    open_files, most = clients_within_open_files(sizes.workers)
    rounds = [n for n in wanted if n <= most] or wanted[:1]
    status_ids = await fill_queue(stack, headers, sizes.sse_calls * len(rounds) + 60)
    watched = status_ids[-50:]  # the tail of the queue stays waiting through every call
    best = 0
    for i, n in enumerate(rounds):
        row = await clients_round(stack, run, headers, n, watched, sizes.sse_calls)
        section.rows.append(row)
        healthy = not (
            row["connect_failed"] or row["board_missing"] or row["status_missing"] or row["dropped"]
        )
        # Boards and patients' phones alike: the slower of the two is the figure.
        p99 = max(row["board_p99_ms"] or 0, row["status_p99_ms"] or 0)
        if i == 0:
            section.check(f"call-next → event on {n} SSE clients (boards and status pages), p99 ≤ 250 ms",
                          healthy and p99 <= 250,
                          f"board p99 {row['board_p99_ms']} ms, status p99 {row['status_p99_ms']} ms, "
                          f"{row['board_missing']} board and {row['status_missing']} status events missing, "
                          f"{row['connect_failed']} failed")  # fmt: skip
        if healthy and p99 <= 1000:
            best = n
        else:
            break
    run.figures["sse_max_clients"] = best
    section.notes.append(
        f"Clients: {int((1 - STATUS_SHARE) * 100)} % boards, {int(STATUS_SHARE * 100)} % patient status pages, "
        f"in {PROCESSES} client processes on the same box. Status pages get their update after the snapshot "
        "is rebuilt: at once for an isolated call (5 ms to gather its events), at most every 80 ms while "
        "events keep coming."
    )
    limit = ""
    if best == rounds[-1]:
        limit = " (the most tried"
        if len(rounds) < len(wanted):
            limit += (
                f": {open_files:,} open files a process allow about {most:,} clients in all, "
                f"so {', '.join(f'{n:,}' for n in wanted[len(rounds) :])} were not tried"
            )
        limit += ")"
    section.notes.append(f"Most clients held with board and status p99 ≤ 1 s in this run: {best}{limit} "
                         f"(ramp {list(rounds)}). worker_rss_mb: the largest worker's RSS with every client "
                         "connected.")  # fmt: skip

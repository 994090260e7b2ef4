"""`python -m bench [--smoke]`: start the stack on loopback, run every scenario, write the report."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import uvloop

from bench import profile, report
from bench.context import Run, Sizes
from bench.procs import postgres_available
from bench.scen_alloc import run_alloc
from bench.scen_intake import profile_intake, run_intake, run_scan
from bench.scen_limits import run_limits
from bench.scen_memory import run_memory
from bench.scen_render import run_render
from bench.scen_soak import run_soak
from bench.scen_sse import run_sse
from bench.stack import running_stack
from bench.stats import Section, machine

HERE = Path(__file__).resolve().parent
Scenario = Callable[[Run, Section], Awaitable[None]]


async def _scenario(run: Run, sections: list[Section], key: str, title: str, fn: Scenario) -> Section:
    section = Section(key, title)
    sections.append(section)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    print(f"[bench] {key}. {title} …", file=sys.stderr, flush=True)
    try:
        await fn(run, section)
    except Exception:
        # One broken scenario must not cost the others their figures; the run still fails at the end.
        section.check("scenario ran to the end", False, traceback.format_exc(limit=8)[-1500:], invariant=True)
    section.seconds = time.perf_counter() - started
    # The box is shared: the load average says how much CPU other work took while this scenario ran.
    section.notes.append(
        f"1-minute load average: {load_before:.2f} at start, {os.getloadavg()[0]:.2f} at end."
    )
    for c in section.checks:
        print(f"[bench]   {'ok ' if c.ok else 'NO '} {c.name}: {c.detail[:300]}", file=sys.stderr, flush=True)
    return section


async def _profile(run: Run, section: Section) -> None:
    path = await profile_intake(run, section)
    if path is None:
        return
    samples, layers, leaves = profile.fold(path)
    section.notes.append(f"{samples} samples of one worker at 250 Hz during {run.sizes.profile_s:.0f} s of "
                         "closed-loop shares (64 connections); idle time is not sampled.")  # fmt: skip
    section.rows += [
        {"layer (any frame in the stack)": name, "% of CPU samples": pct} for name, pct in layers
    ]
    section.rows += [{"hot function (self time)": name, "% of CPU samples": pct} for name, pct in leaves]
    shutil.copy(path, run.workdir.parent / "share-path.collapsed") if run.smoke else None


async def main_async(ns: argparse.Namespace) -> int:
    sizes = Sizes.smoke(ns.workers) if ns.smoke else Sizes.full(ns.workers, ns.soak_minutes * 60)
    workdir = Path(tempfile.mkdtemp(prefix="opd-bench-"))
    run = Run(ns.smoke, sizes, workdir)
    database = "postgres" if postgres_available() else "sqlite"
    sections: list[Section] = []
    started = datetime.now(UTC)
    meta_machine = machine()
    groups: list[list[tuple[str, str, Scenario]]] = [
        [("1", "Limits measured in the same run", run_limits),
         ("2", "ABDM share intake end to end", run_intake),
         ("3", "Scan → on-share received at the sandbox", run_scan),
         ("2p", "Profile of the share path (py-spy, one worker)", _profile)],
        [("4", "Call-next → SSE clients (boards and status pages)", run_sse),
         ("6", "Slip, ESC/POS, QR poster, board snapshot", run_render)],
        [("8", "Soak", run_soak)],
    ]  # fmt: skip
    alone: list[tuple[str, str, Scenario]] = [
        ("5", "Allocation strategies on PostgreSQL", run_alloc), ("7", "Memory", run_memory)]  # fmt: skip
    if ns.only:
        wanted = set(ns.only.split(","))
        groups = [[item for item in group if item[0] in wanted] for group in groups]
        groups = [group for group in groups if group]
        alone = [item for item in alone if item[0] in wanted]
    if ns.smoke:
        # One stack for everything: starting three costs more than the tiny scenarios themselves.
        groups = [[item for group in groups for item in group]]
    try:
        for i, group in enumerate(groups):
            # A fresh stack per group: SSE and the soak must not inherit the intake run's 100k waiting.
            with running_stack(workdir / f"stack{i}", sizes.workers, database) as stack:
                run.stack = stack
                for key, title, fn in group:
                    await _scenario(run, sections, key, title, fn)
            run.stack = None
        for key, title, fn in alone:
            await _scenario(run, sections, key, title, fn)
    finally:
        run.stack = None
        if not ns.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    finished = datetime.now(UTC)
    analysis_file = HERE / "ANALYSIS.md"
    analysis = analysis_file.read_text() if analysis_file.exists() and not (ns.smoke or ns.only) else ""
    meta = {
        "smoke": ns.smoke, "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"), "seconds": (finished - started).total_seconds(),
        "machine": meta_machine, "settings": {"workers": sizes.workers, "database": database,
                                              **{k: v for k, v in vars(sizes).items() if k != "workers"}},
        "reproduce": ["apt-get install -y wrk redis-server   # redis-benchmark comes with redis",
                      "pip install -e '.[bench]'             # py-spy for the share-path profile",
                      f"python -m bench --workers {sizes.workers} --soak-minutes {ns.soak_minutes:g}"
                      + (" --smoke" if ns.smoke else "")],
        "commands": sorted(set(run.commands)), "figures": run.figures,
    }  # fmt: skip
    default_out = HERE.parent / "test-artifacts" / ("bench-smoke" if ns.smoke else "bench-only")
    out = Path(ns.out) if ns.out else (default_out if ns.smoke or ns.only else HERE)
    sections.sort(key=lambda s: (int(s.key[0]), s.key))
    report.write(out, meta, sections, analysis)
    print(f"[bench] report: {out / 'RESULTS.md'}", file=sys.stderr)
    broken = [c for s in sections for c in s.checks if c.invariant and not c.ok]
    return 1 if broken else 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="every scenario at tiny sizes (a few seconds)")
    parser.add_argument("--workers", type=int, default=2, help="service workers (default 2)")
    parser.add_argument("--soak-minutes", type=float, default=10.0, help="length of the soak (default 10)")
    parser.add_argument("--out", help="report directory (default: bench/, or test-artifacts/bench-smoke)")
    parser.add_argument(
        "--only",
        help="comma-separated scenario keys to run, e.g. 2,5 (report goes to "
        "test-artifacts/bench-only unless --out is given; bench/RESULTS.md is left alone)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, profiles)")
    ns = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        sys.exit(runner.run(main_async(ns)))


if __name__ == "__main__":
    main()

"""Code versions side by side: `python -m bench.paired CHECKOUT [CHECKOUT ...]`.

On a shared box the cores' speed moves from minute to minute by more than most changes to be measured
(`bench/coreprobe.py`), so one version's run after another's compares the box, not the code. Here each
CHECKOUT, a directory holding a version of this project (for example one made by `git worktree add
../base <commit>`), gets a whole stack of its own: Redis, a database on the same PostgreSQL server, the
gateway sandbox and the service with N workers, all started from that checkout's code. Every stack is
driven at the same time, in rounds, by a closed loop or at a fixed rate, so whatever slows the box slows
every version alike; the figures to compare are each round's ratios.

Per round and version it reports shares acknowledged per second, the acknowledgement's p50 and p99, and
the CPU per share of the version's workers, its Redis and its sandbox. PostgreSQL's server is shared by
the stacks and the load generator is this one process, so neither is split by version. After the last
round every version's shares must each have got exactly one on-share and every (counter, day) gapless
numbers, as in the full benchmark.

Children are started from a directory outside every checkout, with PYTHONPATH set to their checkout:
`python -m` puts the working directory first on the module path, so a child started inside a checkout
would run that checkout's code whatever PYTHONPATH says. The versions must share the database schema:
the stacks are seeded by this checkout's code. Each version's own dependencies must be installed (an
older version may need a package the current one dropped).

The stacks are not quite alike: in runs here at a fixed rate, whichever stack was started first had the
worse acknowledgement p99, in both orders, and the CPU per share moved by a few per cent with the
order. Run a comparison twice, with the checkouts' order swapped, and trust a difference that keeps its
sign. (One checkout against itself, closed loops: shares/s 0.99-1.01, worker CPU per share 0.96-1.03.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import checks
from bench.loadgen import LoadResult, drive
from bench.procs import postgres_available
from bench.stack import Stack, running_stack
from bench.stats import Section, summary_ms

CLOSED_CONCURRENCY = 64  # as scenario 2's closed loop
PARTS = ("service workers", "Redis", "sandbox gateway")


@dataclass
class Version:
    name: str
    checkout: Path
    stack: Stack | None = None
    requests: list[bytes] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    cursor: int = 0
    used: list[str] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    section: Section = field(init=False)  # the correctness checks after the last round

    def __post_init__(self) -> None:
        self.section = Section(self.name, f"{self.name} ({self.checkout})")


@contextmanager
def running_from(checkout: Path) -> Iterator[None]:
    """Children started inside this block import the project from `checkout`."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(checkout)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def outside_checkouts(cwd: Path, checkouts: list[Path]) -> bool:
    """Whether `cwd` lies outside every checkout (a child started there imports from PYTHONPATH)."""
    return not any(cwd == c or c in cwd.parents for c in checkouts)


def version_names(checkouts: list[Path]) -> list[str]:
    """Short, distinct names: the directories' own names, numbered where two are alike."""
    names = [c.name or str(c) for c in checkouts]
    return [f"{n} ({i + 1})" if names.count(n) > 1 else n for i, n in enumerate(names)]


def round_row(name: str, result: LoadResult, cpu_s: dict[str, float]) -> dict[str, Any]:
    """One version's figures for one round, from its load result and its parts' CPU seconds in it."""
    shares = result.ok_count(202)
    lat = summary_ms(result.latency_s)
    row: dict[str, Any] = {
        "version": name, "shares_per_s": round(shares / result.elapsed_s, 1) if result.elapsed_s else 0.0,
        "ack_p50_ms": lat["p50"], "ack_p99_ms": lat["p99"], "errors": result.count - shares,
    }  # fmt: skip
    for part in PARTS:
        row[f"{part} ms/share"] = round(cpu_s.get(part, 0.0) * 1000 / max(1, shares), 3)
    return row


def ratios(rounds: list[list[dict[str, Any]]], key: str) -> list[list[float]]:
    """Per round, each version's `key` over the first version's in the same round."""
    out = []
    for row in rounds:
        base = row[0][key] or float("nan")
        out.append([round(r[key] / base, 3) for r in row])
    return out


async def _round(versions: list[Version], per_round: int, step_s: float, rate: float | None) -> None:
    stacks = [v.stack for v in versions if v.stack is not None]
    assert len(stacks) == len(versions), "every version's stack is running"
    before = [s.cpu_seconds() for s in stacks]
    concurrency = CLOSED_CONCURRENCY if rate is None else min(512, max(32, int(rate * 0.5)))
    results = await asyncio.gather(*(
        drive(s.service.url, v.requests[v.cursor : v.cursor + per_round], concurrency=concurrency,
              duration_s=step_s, rate=rate)
        for v, s in zip(versions, stacks, strict=True)
    ))  # fmt: skip
    after = [s.cpu_seconds() for s in stacks]
    sent: list[list[str]] = []
    for v, r, cpu0, cpu1 in zip(versions, results, before, after, strict=True):
        sent.append([v.ids[v.cursor + i] for i in r.index])
        v.used.extend(sent[-1])
        v.cursor += max(r.index, default=-1) + 1
        v.rounds.append(round_row(v.name, r, {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1}))
    # The next round starts once no stack owes an on-share: a backlog would be the next round's load.
    await asyncio.gather(*(
        asyncio.to_thread(checks.wait_delivered, s, ids) for s, ids in zip(stacks, sent, strict=True)
    ))  # fmt: skip


def markdown(versions: list[Version]) -> str:
    rounds = [[v.rounds[i] for v in versions] for i in range(len(versions[0].rounds))]
    cols = ["round", "version", "shares_per_s", "ack_p50_ms", "ack_p99_ms", "errors",
            *(f"{p} ms/share" for p in PARTS)]  # fmt: skip
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for i, row in enumerate(rounds, 1):
        for r in row:
            lines.append("| " + " | ".join([str(i), *(str(r[c]) for c in cols[1:])]) + " |")
    lines.append("")
    for key in ("shares_per_s", "service workers ms/share", "ack_p99_ms"):
        per_round = ratios(rounds, key)
        for j, v in enumerate(versions[1:], 1):
            got = [r[j] for r in per_round]
            lines.append(
                f"- {key}, {v.name} against {versions[0].name}, by round: "
                + ", ".join(f"{x:.3f}" for x in got)
                + f" (median {statistics.median(got):.3f})"
            )
    return "\n".join(lines)


async def measure(ns: argparse.Namespace, versions: list[Version], root: Path, database: str) -> None:
    """Start a stack per version under `root`, warm them up, drive them together for `ns.rounds` rounds
    (figures land in each version's `rounds`) and stop them."""
    per_round = int(ns.rate * ns.step_s) + 1 if ns.rate else int(5000 * ns.step_s)
    with ExitStack() as stacks:
        for i, v in enumerate(versions):
            print(f"[paired] starting {v.name} from {v.checkout}", file=sys.stderr)
            with running_from(v.checkout):
                try:
                    v.stack = stacks.enter_context(running_stack(root / f"stack{i}", ns.workers, database))
                except TimeoutError:
                    # Most often the version needs a package this environment lacks: its log says which.
                    print(f"[paired] {v.name} did not start; its processes' logs: {root / f'stack{i}'}",
                          file=sys.stderr)  # fmt: skip
                    raise
            v.requests, v.ids = v.stack.share_requests(per_round * (ns.rounds + 1), f"v{i}")
        print(f"[paired] warm-up, then {ns.rounds} rounds of {ns.step_s:g} s", file=sys.stderr)
        await _round(versions, per_round, ns.step_s / 2, ns.rate)
        for v in versions:
            v.rounds.clear()
        for i in range(ns.rounds):
            await _round(versions, per_round, ns.step_s, ns.rate)
            print("[paired] round", i + 1, [(r["version"], r["shares_per_s"], r["service workers ms/share"])
                                            for r in (v.rounds[-1] for v in versions)], file=sys.stderr)  # fmt: skip
        for v in versions:
            assert v.stack is not None
            checks.on_shares(v.stack, v.section, v.used)
            checks.numbering(v.stack, v.section)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.paired", description=__doc__.split("\n", 1)[0])
    p.add_argument("checkouts", nargs="+", help="directories each holding a version of this project")
    p.add_argument("--rate", type=float, default=None, help="shares/s per version (default: closed loop)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--step-s", type=float, default=8.0, help="seconds per round")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="", help="also write the figures to this JSON file")
    ns = p.parse_args(argv)
    checkouts = [Path(c).resolve() for c in ns.checkouts]
    for checkout in checkouts:
        if not (checkout / "token_service" / "cli.py").exists():
            p.error(f"{checkout} holds no version of this project")
    out = Path(ns.out).resolve() if ns.out else None
    versions = [Version(n, c) for n, c in zip(version_names(checkouts), checkouts, strict=True)]
    database = "postgres" if postgres_available() else "sqlite"
    root = Path(tempfile.mkdtemp(prefix="opd-paired-"))
    os.chdir(root)  # the children's working directory: outside every checkout
    assert outside_checkouts(Path.cwd(), checkouts)
    asyncio.run(measure(ns, versions, root, database))
    shutil.rmtree(root, ignore_errors=True)
    text = markdown(versions)
    every = [(v.name, check) for v in versions for check in v.section.checks]
    for name, check in every:
        text += f"\n- {'ok' if check.ok else 'FAILED'}: {name}: {check.name}: {check.detail}"
    print(text)
    if out is not None:
        out.write_text(json.dumps({
            "database": database, "workers": ns.workers, "step_s": ns.step_s, "rate": ns.rate,
            "versions": [{"name": v.name, "checkout": str(v.checkout), "rounds": v.rounds,
                          "checks": v.section.to_json()["checks"]} for v in versions],
        }, indent=1))  # fmt: skip
    return 1 if any(not check.ok for _, check in every) else 0


if __name__ == "__main__":
    sys.exit(main())

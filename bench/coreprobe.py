"""How fast each core runs, sampled through a run: `python -m bench.coreprobe OUT [EVERY_S]`.

A shared box's cores do not keep one speed: here one of two was seen running the same work 1.8 times
slower than the other for minutes, then as fast again, with no other process busy and no steal
reported (the host ran something beside it). Every figure a step is judged by moves with it, the
ratio to a hello measured minutes earlier above all. This process pins itself to each core in turn
and times a fixed piece of Python work there in CPU time, so waiting for the core does not count,
and appends `unix_time core ms` lines to OUT. `CoreProbe.window` gives a stretch of time's figures.
The work's data fits a core's own caches: a neighbour crowding a shared cache or memory is not seen.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.procs import Child

EVERY_S = 0.5
ROUNDS = 3  # each about 1.3 ms of CPU: the probe costs about 1 % of a 2-core box


def _probe_work() -> int:
    # Interpreted Python of the kind the stack runs: dicts, strings, small integers, a sort.
    rows = [{"n": i, "label": f"A{i:04d}", "day": "2026-01-01"} for i in range(3000)]
    rows.sort(key=lambda r: r["label"], reverse=True)
    return sum(len(r["label"]) + r["n"] % 7 for r in rows)


def speed_probe_ms(rounds: int) -> float:
    """The fixed work, best of `rounds`, in ms of this thread's CPU time."""
    best = math.inf
    for _ in range(rounds):
        started = time.thread_time()
        _probe_work()
        best = min(best, time.thread_time() - started)
    return round(best * 1000, 3)


def main(out: Path, every_s: float) -> None:
    cores = sorted(os.sched_getaffinity(0))
    with out.open("a") as f:
        while True:
            for core in cores:
                os.sched_setaffinity(0, {core})
                f.write(f"{time.time():.3f} {core} {speed_probe_ms(ROUNDS)}\n")
            f.flush()
            time.sleep(every_s)


@dataclass
class CoreProbe:
    child: Child
    out: Path

    @classmethod
    def start(cls, workdir: Path, every_s: float = EVERY_S) -> CoreProbe:
        out = workdir / "core-speeds.txt"
        out.unlink(missing_ok=True)
        args = [sys.executable, "-m", "bench.coreprobe", str(out), str(every_s)]
        return cls(Child("core probe", args, workdir / "core-probe.log").start(), out)

    def stop(self) -> None:
        self.child.stop()

    def window(self, t_from: float, t_to: float) -> list[float]:
        """Each core's median figure (ms, in core order) over the samples taken in [t_from, t_to); [] if
        none were."""
        by_core: dict[int, list[float]] = {}
        if self.out.exists():
            for line in self.out.read_text().splitlines():
                parts = line.split()
                if len(parts) == 3 and t_from <= float(parts[0]) < t_to:
                    by_core.setdefault(int(parts[1]), []).append(float(parts[2]))
        return [round(statistics.median(v), 2) for _, v in sorted(by_core.items())]


if __name__ == "__main__":
    main(Path(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else EVERY_S)

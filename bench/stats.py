"""Percentiles, figures and the machine description that every scenario reports with."""

from __future__ import annotations

import math
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no samples."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def summary_ms(samples_s: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds of latencies given in seconds."""
    ms = [s * 1000 for s in samples_s]
    return {
        "n": float(len(ms)),
        "p50": round(percentile(ms, 50), 3),
        "p90": round(percentile(ms, 90), 3),
        "p99": round(percentile(ms, 99), 3),
        "max": round(max(ms), 3) if ms else math.nan,
    }


@dataclass
class Check:
    """A target or correctness check: passed or not, with the figures that decided it."""

    name: str
    ok: bool
    detail: str
    invariant: bool = False  # a correctness check (fails the run) rather than a performance target


@dataclass
class Section:
    """One scenario's results: figures (a table of rows), checks and notes."""

    key: str
    title: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def check(self, name: str, ok: bool, detail: str, *, invariant: bool = False) -> bool:
        self.checks.append(Check(name, ok, detail, invariant))
        return ok

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "seconds": round(self.seconds, 1),
            "rows": self.rows,
            "checks": [
                {"name": c.name, "ok": c.ok, "detail": c.detail, "invariant": c.invariant}
                for c in self.checks
            ],
            "notes": self.notes,
        }


def _version(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return "not installed"
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def _package(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "redis": _version(["redis-server", "--version"]),
        "postgresql": _version(["psql", "--version"]),
        "wrk": _version(["wrk", "--version"]),
        "packages": {
            name: _package(name)
            for name in (
                "fastapi",
                "uvicorn",
                "uvloop",
                "httptools",
                "redis",
                "hiredis",
                "sqlalchemy",
                "psycopg",
                "pyjwt",
                "cryptography",
                "orjson",
                "starlette",
                "pillow",
            )
        },
    }

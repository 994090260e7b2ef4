"""What scenarios share within one run: sizes for smoke or full mode, the stack, figures for ratios."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.stack import Stack


@dataclass(frozen=True)
class Sizes:
    """Every bound of a run in one place, so smoke mode is the same code at tiny sizes."""

    workers: int
    step_s: float  # one load step
    redis_requests: int
    wrk_connections: int
    scan_rate: float
    sse_clients: int
    sse_calls: int
    sse_ramp: tuple[int, ...]
    alloc_clients: int
    alloc_s: float
    render_iterations: int
    memory_tokens: int
    soak_s: float
    soak_share_rate: float
    soak_sse_clients: int
    profile_s: float

    @classmethod
    def full(cls, workers: int, soak_s: float) -> Sizes:
        return cls(workers=workers, step_s=8.0, redis_requests=200_000, wrk_connections=64, scan_rate=500.0,
                   sse_clients=5000, sse_calls=20,
                   sse_ramp=(5000, 10_000, 15_000, 20_000, 25_000, 30_000, 35_000, 40_000), alloc_clients=50,
                   alloc_s=8.0, render_iterations=50, memory_tokens=100_000, soak_s=soak_s,
                   soak_share_rate=50.0, soak_sse_clients=500, profile_s=8.0)  # fmt: skip

    @classmethod
    def smoke(cls, workers: int) -> Sizes:
        return cls(workers=workers, step_s=0.6, redis_requests=2000, wrk_connections=8, scan_rate=40.0,
                   sse_clients=20, sse_calls=3, sse_ramp=(), alloc_clients=8, alloc_s=0.5,
                   render_iterations=2, memory_tokens=1000, soak_s=4.0, soak_share_rate=30.0,
                   soak_sse_clients=10, profile_s=0.0)  # fmt: skip


@dataclass
class Run:
    smoke: bool
    sizes: Sizes
    workdir: Path
    stack: Stack | None = None
    figures: dict[str, Any] = field(default_factory=dict)  # named numbers later scenarios compare with
    commands: list[str] = field(default_factory=list)

    @property
    def has_wrk(self) -> bool:
        return shutil.which("wrk") is not None

    def need_stack(self) -> Stack:
        assert self.stack is not None, "this scenario runs inside the service stack"
        return self.stack

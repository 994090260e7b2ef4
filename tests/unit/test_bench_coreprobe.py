"""The benchmark's core probe: a fixed piece of work timed in CPU time on each core through a run."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bench import coreprobe
from bench.coreprobe import CoreProbe
from bench.procs import Child


def _spin(cpu_s: float) -> None:
    started = time.thread_time()
    while time.thread_time() - started < cpu_s:
        pass


def test_speed_probe_reports_the_fastest_round(monkeypatch: pytest.MonkeyPatch) -> None:
    durations = iter([0.040, 0.030, 0.002, 0.050])  # the third round ran on a fast core

    def work() -> int:
        _spin(next(durations))
        return 0

    monkeypatch.setattr(coreprobe, "_probe_work", work)
    assert 2.0 <= coreprobe.speed_probe_ms(rounds=4) < 25.0


def test_speed_probe_does_not_count_time_spent_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    def work() -> int:
        time.sleep(0.030)  # pre-empted, or waiting for the core: not the core's speed
        _spin(0.002)
        return 0

    monkeypatch.setattr(coreprobe, "_probe_work", work)
    assert coreprobe.speed_probe_ms(rounds=2) < 20.0


def test_window_gives_each_cores_median_inside_the_stretch(tmp_path: Path) -> None:
    out = tmp_path / "core-speeds.txt"
    out.write_text("9.0 0 5.0\n10.0 0 1.0\n10.1 1 2.0\n10.5 0 3.0\n10.6 1 2.5\n11.0 1 4.0\n12.0 0 9.0\n")
    probe = CoreProbe(Child("unused", ["true"], tmp_path / "log"), out)
    assert probe.window(10.0, 12.0) == [2.0, 2.5]
    assert probe.window(20.0, 30.0) == []


def test_the_probe_samples_every_core_while_it_runs(tmp_path: Path) -> None:
    probe = CoreProbe.start(tmp_path, every_s=0.1)
    started = time.time()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(probe.window(started, time.time())) < len(
            os.sched_getaffinity(0)
        ):
            time.sleep(0.1)
        speeds = probe.window(started, time.time())
    finally:
        probe.stop()
    assert len(speeds) == len(os.sched_getaffinity(0))
    assert all(0 < ms < 1000 for ms in speeds)
    assert probe.child.proc is not None and probe.child.proc.poll() is not None

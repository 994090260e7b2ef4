"""The benchmark's speed probe: the best of its rounds, so one pre-empted round does not count."""

from __future__ import annotations

import os
import time

import pytest

from bench import stats


def test_speed_probe_reports_the_fastest_round(monkeypatch: pytest.MonkeyPatch) -> None:
    durations = iter([0.040, 0.030, 0.002, 0.050])  # the third round ran undisturbed

    def work() -> int:
        time.sleep(next(durations))
        return 0

    monkeypatch.setattr(stats, "_probe_work", work)
    ms = stats.speed_probe_ms(rounds=4)
    assert 2.0 <= ms < 25.0


def test_speed_probe_does_the_same_work_every_round() -> None:
    assert stats._probe_work() == stats._probe_work() > 0
    assert stats.speed_probe_ms(rounds=2) > 0


def test_core_speeds_probe_each_core_and_restore_the_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    allowed = os.sched_getaffinity(0)
    seen: list[set[int]] = []

    def probe() -> float:
        seen.append(os.sched_getaffinity(0))
        return 1.0

    monkeypatch.setattr(stats, "speed_probe_ms", probe)
    assert stats.core_speeds_ms() == [1.0] * len(allowed)
    assert seen == [{cpu} for cpu in sorted(allowed)]
    assert os.sched_getaffinity(0) == allowed

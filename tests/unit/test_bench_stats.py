"""The benchmark's speed probe: the best of its rounds, so one pre-empted round does not count."""

from __future__ import annotations

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

"""The wake-up probe bounces a byte between two processes and reports both sides' CPU per round trip."""

from __future__ import annotations

from bench.wakeup import round_trips


def test_back_to_back_round_trips_report_both_processes_cpu() -> None:
    n, sender_us, echo_us = round_trips(0, 0.3)
    assert n > 50
    assert sender_us > 0 and echo_us > 0


def test_a_fixed_rate_paces_the_round_trips() -> None:
    n, _, echo_us = round_trips(100, 0.5)
    assert 40 <= n <= 52  # 100/s for half a second, the first at once
    assert echo_us > 0

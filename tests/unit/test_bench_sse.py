"""Scenario 4's arithmetic: a status page's delay per call, and the ramp's bound by the open-file limit."""

from __future__ import annotations

import resource

import pytest

from bench import scen_sse


def test_the_open_file_limit_bounds_the_clients_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 20_000))
    # Two workers and two client processes, each holding half the sockets besides its other files.
    assert scen_sse.clients_within_open_files(2) == (20_000, 2 * int(19_000 * 0.9))
    assert scen_sse.clients_within_open_files(1) == (20_000, int(19_000 * 0.9))
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, resource.RLIM_INFINITY))
    assert scen_sse.clients_within_open_files(2)[1] >= 1_000_000


def test_a_status_page_shows_each_call_when_its_place_in_line_moves() -> None:
    calls = [100.0, 101.0, 102.0]
    # Place 10 before the calls. The first update came 0.1 s after call 0; call 1's update was late and
    # replaced by one after call 2, which shows both.
    page = (10, [(9, 100.1), (7, 102.3)])
    latencies, missing = scen_sse.status_latencies([page], calls)
    assert [round(x, 3) for x in latencies] == [0.1, 1.3, 0.3] and missing == 0
    # A page that stopped after call 0, and one that never had its first place: calls missing.
    latencies, missing = scen_sse.status_latencies([(10, [(9, 100.2)]), (None, [])], calls)
    assert [round(x, 3) for x in latencies] == [0.2] and missing == 2 + 3

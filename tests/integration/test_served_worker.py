"""`opd-token serve` workers run with the collector tuned for a long-running server."""

from __future__ import annotations

import gc
from pathlib import Path

import httpx

from tests.support.app import ServiceProc, make_settings, running_app
from token_service.app import GC_YOUNG_THRESHOLD


def _gauge(text: str, name: str) -> float:
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    assert len(values) == 1, f"{name} not in /metrics"
    return values[0]


def test_served_workers_freeze_their_startup_objects(tmp_path: Path, redis_url: str) -> None:
    service = ServiceProc(make_settings(tmp_path, redis_url), workers=2).start()
    try:
        for _ in range(4):  # either worker may answer; both are tuned
            metrics = httpx.get(service.url + "/metrics", timeout=5).text
            # Everything startup built (modules, routes, schemas, connections) is out of the collector's
            # reach, and young collections run every GC_YOUNG_THRESHOLD net allocations instead of 700.
            assert _gauge(metrics, "opd_gc_frozen_objects") > 50_000
            assert _gauge(metrics, "opd_gc_young_threshold") == GC_YOUNG_THRESHOLD
    finally:
        service.stop()


async def test_an_in_process_app_leaves_its_hosts_collector_alone(tmp_path: Path, redis_url: str) -> None:
    before = gc.get_threshold(), gc.get_freeze_count()
    async with running_app(make_settings(tmp_path, redis_url)):
        assert (gc.get_threshold(), gc.get_freeze_count()) == before

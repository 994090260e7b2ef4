"""The benchmark's smoke mode runs every scenario at tiny sizes, so the benchmark code cannot rot."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import postgres_url

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = {"1", "2", "2p", "3", "4", "5", "6", "7", "8"}


@pytest.mark.skipif(shutil.which("redis-benchmark") is None, reason="redis-benchmark (redis-tools) missing")
def test_smoke_run_covers_every_scenario_and_keeps_the_invariants(tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads((out / "results.json").read_text())
    sections = {s["key"]: s for s in data["sections"]}
    assert set(sections) == SCENARIOS
    # No scenario may die half-way, and the correctness checks (gapless numbers, one on-share per share,
    # no soak errors) must hold even at tiny sizes; performance targets are not judged in smoke mode.
    for key, section in sections.items():
        broken = [c for c in section["checks"] if c["invariant"] and not c["ok"]]
        assert not broken, (key, broken)
    invariants = " | ".join(c["name"] for s in data["sections"] for c in s["checks"] if c["invariant"])
    assert "numbers unique and gapless per (counter, day)" in invariants
    assert "every share got exactly one on-share" in invariants
    assert "soak errors = 0" in invariants
    intake = sections["2"]["rows"]
    assert intake[0]["acked_per_s"] > 0 and all(r["errors"] == 0 for r in intake)
    by_step = data["figures"]["cpu_ms_per_share_by_step"]
    assert list(by_step) == ["closed loop", "25 %", "50 %", "75 %", "100 %"]
    # Only the closed loop is sure to keep the workers busy for a whole clock tick (CPU time moves in
    # 10 ms ticks): the smoke's fixed-rate steps are a few shares each.
    assert by_step["closed loop"]["service workers"] > 0
    for step, row in zip(by_step.values(), intake, strict=True):
        assert min(step.values()) >= 0
        # The parts add up to the step's figure for the whole stack.
        assert sum(step.values()) == pytest.approx(
            row["cpu_ms_per_share"], abs=0.02 + 0.02 * sum(step.values())
        )
    sse = sections["4"]["rows"][0]
    assert sse["connected"] == sse["clients"] and sse["board_missing"] == 0
    if postgres_url() is not None:
        strategies = {r["strategy"].split(":")[0]: r for r in sections["5"]["rows"]}
        assert strategies["ours"]["duplicates"] == 0
        assert set(strategies) >= {
            "ours",
            "SQL row lock (SELECT … FOR UPDATE)",
            "count today + 1 (OpenMRS, CARE)",
        }
    if shutil.which("wrk") is None:
        assert any("wrk is not installed" in n for n in sections["1"]["notes"])
    else:
        assert any("bare FastAPI hello" in r["what"] for r in sections["1"]["rows"])
    markdown = (out / "RESULTS.md").read_text()
    assert "## 8. Soak" in markdown and "## Targets and checks" in markdown


def test_versions_side_by_side_run_and_keep_the_invariants(tmp_path: Path) -> None:
    """`python -m bench.paired`: this checkout against itself, briefly, at a fixed rate."""
    out = tmp_path / "paired.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.paired", str(ROOT), str(ROOT), "--rounds", "2", "--step-s", "0.5",
         "--rate", "30", "--workers", "1", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(out.read_text())
    assert [v["name"] for v in data["versions"]] == [f"{ROOT.name} (1)", f"{ROOT.name} (2)"]
    for version in data["versions"]:
        assert len(version["rounds"]) == 2
        assert all(r["shares_per_s"] > 0 and r["errors"] == 0 for r in version["rounds"])
        assert all(r["service workers ms/share"] > 0 for r in version["rounds"])
        assert [c["ok"] for c in version["checks"]] == [True, True]
    assert "against" in proc.stdout and "every share got exactly one on-share" in proc.stdout

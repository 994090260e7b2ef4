"""Versions side by side: each stack runs its own checkout's code, and rounds compare as ratios."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.loadgen import LoadResult
from bench.paired import outside_checkouts, ratios, round_row, running_from, version_names


def _fake_checkout(root: Path, says: str) -> Path:
    """A directory holding a `token_service.cli` that only prints which checkout it is."""
    pkg = root / "token_service"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "cli.py").write_text(f"print({says!r})\n")
    return root


def _cli_says(cwd: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "token_service.cli"], cwd=cwd, capture_output=True, text=True, timeout=30
    )
    return out.stdout.strip()


def test_a_child_runs_the_checkout_it_is_given_only_from_outside_the_checkouts(tmp_path: Path) -> None:
    base = _fake_checkout(tmp_path / "base", "base")
    new = _fake_checkout(tmp_path / "new", "new")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with running_from(base):
        assert _cli_says(elsewhere) == "base"
        # The trap: started inside another checkout, `python -m` takes the working directory's code.
        assert _cli_says(new) == "new"
    with running_from(new):
        assert _cli_says(elsewhere) == "new"
    assert outside_checkouts(elsewhere, [base, new])
    assert not outside_checkouts(new, [base, new])
    assert not outside_checkouts(new / "token_service", [base, new])


def test_running_from_restores_the_module_path(tmp_path: Path) -> None:
    before = os.environ.get("PYTHONPATH")
    with running_from(tmp_path):
        assert os.environ["PYTHONPATH"] == str(tmp_path)
    assert os.environ.get("PYTHONPATH") == before


def test_names_rows_and_ratios() -> None:
    assert version_names([Path("/a/base"), Path("/b/main")]) == ["base", "main"]
    assert version_names([Path("/w/main"), Path("/w/main")]) == ["main (1)", "main (2)"]

    result = LoadResult(
        latency_s=[0.002] * 98 + [0.010, 0.050], status=[202] * 99 + [599], index=list(range(100)),
        elapsed_s=2.0,
    )  # fmt: skip
    row = round_row("new", result, {"service workers": 0.0396, "Redis": 0.0099, "sandbox gateway": 0.0})
    assert row["shares_per_s"] == 49.5 and row["errors"] == 1
    assert row["ack_p50_ms"] == 2.0 and row["ack_p99_ms"] == 10.0
    assert row["service workers ms/share"] == 0.4 and row["Redis ms/share"] == 0.1
    assert row["sandbox gateway ms/share"] == 0.0

    rounds = [
        [{"shares_per_s": 100.0}, {"shares_per_s": 120.0}],
        [{"shares_per_s": 80.0}, {"shares_per_s": 100.0}],
    ]
    assert ratios(rounds, "shares_per_s") == [[1.0, 1.2], [1.0, 1.25]]

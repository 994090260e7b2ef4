"""The report: results.json (everything) and RESULTS.md (tables, checks, notes)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.stats import Section


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value).replace("|", "\\|")


def table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    cols: list[str] = []
    for row in rows:
        cols += [c for c in row if c not in cols]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_cell(row.get(c)) for c in cols) + " |" for row in rows]
    return out


def markdown(meta: dict[str, Any], sections: list[Section], analysis: str) -> str:
    lines = [
        f"# Benchmark results{' (smoke run: sizes too small to mean anything)' if meta['smoke'] else ''}",
        "",
    ]
    lines += [f"Run {meta['started']} – {meta['finished']} ({meta['seconds']:.0f} s).", ""]
    lines += ["## Reproduce", "", "```sh", *meta["reproduce"], "```", ""]
    m = meta["machine"]
    lines += ["## Machine and versions", ""]
    lines += [f"- CPU: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; kernel {m['kernel']}",
              f"- load average at start: {m['load_average_at_start']} (the machine is shared)",
              f"- Python {m['python']}; {m['redis']}; {m['postgresql']}; {m['wrk']}",
              "- " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()),
              f"- settings: {json.dumps(meta['settings'])}", ""]  # fmt: skip
    lines += ["## Targets and checks", "", "| scenario | check | result | figures |", "|---|---|---|---|"]
    for s in sections:
        for c in s.checks:
            verdict = "pass" if c.ok else ("**FAIL**" if c.invariant else "**missed**")
            lines.append(f"| {s.key} | {c.name} | {verdict} | {_cell(c.detail)} |")
    lines.append("")
    if analysis:
        lines += [analysis.strip(), ""]
    for s in sections:
        lines += [f"## {s.key}. {s.title}", "", f"_{s.seconds:.0f} s_", ""]
        lines += table(s.rows)
        lines.append("")
        lines += [f"- {n}" for n in s.notes]
        lines.append("")
    lines += ["## Commands the run executed", "", "```", *meta["commands"], "```", ""]
    return "\n".join(lines)


def write(out_dir: Path, meta: dict[str, Any], sections: list[Section], analysis: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {**meta, "sections": [s.to_json() for s in sections]}
    (out_dir / "results.json").write_text(json.dumps(data, indent=1, ensure_ascii=False, default=str) + "\n")
    (out_dir / "RESULTS.md").write_text(markdown(meta, sections, analysis))

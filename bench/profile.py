"""Where a worker's CPU goes on the share path: py-spy's collapsed stacks folded into layers and hot spots."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

# An app-level layer is counted when any frame of a sample's stack matches; a sample can count for more
# than one (JWT verify runs inside the route), so the column does not add up to 100 %.
LAYERS: tuple[tuple[str, str], ...] = (
    ("share route (_share: verify, parse, intake, 202)", r"api/abdm\.py"),
    ("JWT verify (RS256)", r"abdm/jwt_verify\.py"),
    ("share parse + validation", r"abdm/schemas\.py|abdm/profile\.py"),
    ("Lua issue call (TokenQueue.issue)", r"TokenQueue\.issue"),
    ("SQL writer task (group commit), all units", r"SqlWriter\._run"),
    ("  rows: tokens (upsert, with the shared profile)", r"_upsert_rows \(token_service/records/tokens\.py"),
    ("  rows: on-share (upsert, attempts, outcomes)", r"_(upsert|attempt|outcome)_rows \(token_service/abdm/outbox\.py"),
    ("  rows: history (token_event)", r"_event_rows \(token_service/records/tokens\.py"),
    ("outbox delivery (claim, POST on-share, mark done)", r"Outbox\._deliver"),
    ("  of which the HTTP client (abdm/http1.py)", r"Outbox\._deliver.*(abdm/http1\.py|httpx/|httpcore/)"),
    ("recorder loop (stream reads, parsing)", r"Recorder\.|records/recorder\.py"),
    ("live hub (pub/sub fan-out, snapshots)", r"api/live\.py"),
    ("SQLAlchemy statement building + compiling", r"sqlalchemy/sql/"),
    ("SQLAlchemy engine + pool (incl. pre-ping)", r"sqlalchemy/engine/|sqlalchemy/pool/"),
    ("psycopg", r"psycopg/"),
    ("redis-py client", r"\(redis/"),
    ("Starlette/FastAPI (the share route runs inside their middleware)", r"starlette/|fastapi/"),
    ("  of which outside the share route (middleware, routing, responses)",
     r"^(?!.*_share \(token_service/api/abdm\.py).*(starlette/|fastapi/)"),
    ("uvicorn protocol code", r"uvicorn/protocols/http/[a-z_]+\.py:\d+\)$"),
    ("JSON (orjson/json)", r"json/|orjson"),
)

_LINE = re.compile(r"^(.*) (\d+)$")


def fold(path: Path) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]]]:
    """(samples, [(layer, % of samples)], [(leaf function, % self time)] top 15)."""
    total = 0
    layers: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    compiled = [(name, re.compile(rx)) for name, rx in LAYERS]
    for line in path.read_text(errors="replace").splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        stack, count = m.group(1), int(m.group(2))
        total += count
        for name, rx in compiled:
            if rx.search(stack):
                layers[name] += count
        leaf = stack.rsplit(";", 1)[-1]
        leaves[re.sub(r":\d+\)$", ")", leaf)] += count
    if not total:
        return 0, [], []
    layer_pct = [(name, round(100 * layers[name] / total, 1)) for name, _ in LAYERS]
    leaf_pct = [(name, round(100 * n / total, 1)) for name, n in leaves.most_common(15)]
    return total, layer_pct, leaf_pct

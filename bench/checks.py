"""Correctness after each scenario: gapless unique numbers per (counter, day), one on-share per share."""

from __future__ import annotations

import time
from collections import Counter

from bench.stack import Stack
from bench.stats import Section


def numbering(stack: Stack, section: Section, *, settle_s: float = 15.0) -> None:
    """Every (counter, day) holds numbers 1..max, each once (SQL is the durable record)."""
    deadline = time.monotonic() + settle_s
    while True:
        rows = stack.numbering()
        bad = [r for r in rows if not (r[2] == r[3] == r[5] and r[4] == 1)]
        if not bad or time.monotonic() > deadline:
            break
        time.sleep(0.5)  # the group-commit writer may still be flushing the tail
    total = sum(r[2] for r in rows)
    detail = (
        "; ".join(f"{c} {d}: {n} tokens, numbers {lo}..{hi}" for c, d, n, _, lo, hi in rows) or "no tokens"
    )
    if bad:
        detail = "NOT gapless/unique: " + "; ".join(
            f"{c} {d}: {n} rows, {k} distinct, {lo}..{hi}" for c, d, n, k, lo, hi in bad
        )
    section.check(
        f"numbers unique and gapless per (counter, day) ({total} tokens)", not bad, detail, invariant=True
    )


def wait_delivered(stack: Stack, request_ids: list[str], *, wait_s: float = 60.0) -> float:
    """Block until the sandbox has an on-share for each of these shares (or `wait_s` passed); the
    seconds it took. A load step starts only once the previous step owes nothing, so its latency is
    not the previous step's backlog."""
    want = set(request_ids)
    started = time.monotonic()
    while want and time.monotonic() - started < wait_s:
        if want <= {str(r[0]) for r in stack.received()}:
            break
        time.sleep(0.2)
    return time.monotonic() - started


def on_shares(
    stack: Stack, section: Section, request_ids: list[str], *, wait_s: float = 40.0
) -> dict[str, float]:
    """Wait until every share's on-share arrived; check each got exactly one, accepted, with a token.

    Returns received_at (wall clock) per REQUEST-ID for latency figures.
    """
    want = set(request_ids)
    wait_delivered(stack, request_ids, wait_s=wait_s)
    time.sleep(1.0 if want else 0)  # a late duplicate would land now
    rows = stack.received()
    counts = Counter(str(r[0]) for r in rows if str(r[0]) in want)
    missing = len(want) - len(counts)
    doubled = sum(1 for c in counts.values() if c > 1)
    refused = sum(1 for r in rows if str(r[0]) in want and (r[2] != 202 or r[5] or not r[3]))
    ok = missing == 0 and doubled == 0 and refused == 0
    section.check(
        f"every share got exactly one on-share ({len(want)} shares)", ok,
        f"{len(counts)} received, {missing} missing, {doubled} more than once, {refused} not a 202 SUCCESS",
        invariant=True,
    )  # fmt: skip
    return {str(r[0]): float(str(r[1])) for r in rows if str(r[0]) in want}

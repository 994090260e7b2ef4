"""What PostgreSQL's processes wait on during a scenario, sampled from `pg_stat_activity`.

Every acknowledgement waits for its commit, and a commit waits for its write-ahead log to reach the
disk. On a shared disk that fsync can stall behind a checkpoint's page writes for most of a second,
which shows as the service's latency. Sampling the waits beside the latency tells the disk's stalls
apart from the service's own.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.engine import Engine

SAMPLE_EVERY_S = 0.25
# A commit flushing the log (IO:WALSync, IO:WALWrite), or waiting for the one that is (LWLock:WALWrite).
WAL_WAITS = {("IO", "WALSync"), ("IO", "WALWrite"), ("LWLock", "WALWrite")}
# The checkpointer waits on CheckpointerMain between checkpoints; anything else is a checkpoint at work.
CHECKPOINTER_IDLE = "CheckpointerMain"

# What the report says about the columns `WaitSampler.window` adds.
NOTE = (
    "PostgreSQL sampled every 0.25 s: wal_wait_pct is the share of samples in which a commit waited for "
    "the write-ahead log (its fsync or write, or the lock of the commit doing one), checkpoint_pct the "
    "share in which a checkpoint was writing pages, wal_waiters_max the most commits seen waiting at once."
)

_QUERY = text(
    "SELECT backend_type, wait_event_type, wait_event FROM pg_stat_activity"
    " WHERE (datname = current_database() AND state = 'active' AND pid <> pg_backend_pid())"
    " OR backend_type IN ('checkpointer', 'walwriter')"
)


@dataclass
class Sample:
    at: float
    wal_waiters: int  # backends of the service's database waiting on the log
    checkpointing: bool


@dataclass
class WaitSampler:
    """Samples in a thread of its own until `stop`; `window` summarises a stretch of time."""

    engine: Engine
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pg-waits", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.engine.dispose()

    def _run(self) -> None:
        with self.engine.connect() as conn:
            while not self._stop.wait(SAMPLE_EVERY_S):
                # A failed sample ends the thread with its traceback; the windows after it show no figures.
                rows = conn.execute(_QUERY).all()
                conn.rollback()  # a fresh statistics snapshot next time
                waiters = sum(
                    1
                    for kind, etype, event in rows
                    if kind == "client backend" and (etype, event) in WAL_WAITS
                )
                checkpointing = any(
                    kind == "checkpointer" and event != CHECKPOINTER_IDLE for kind, _, event in rows
                )
                self.samples.append(Sample(time.time(), waiters, checkpointing))

    def window(self, t_from: float, t_to: float) -> dict[str, float]:
        """Per cent of samples in [t_from, t_to) with a commit waiting on the log, and with a checkpoint
        writing; and the most backends seen waiting on the log at once."""
        inside = [s for s in self.samples if t_from <= s.at < t_to]
        if not inside:
            return {"wal_wait_pct": float("nan"), "checkpoint_pct": float("nan"), "wal_waiters_max": 0}
        n = len(inside)
        return {
            "wal_wait_pct": round(100 * sum(1 for s in inside if s.wal_waiters) / n, 1),
            "checkpoint_pct": round(100 * sum(1 for s in inside if s.checkpointing) / n, 1),
            "wal_waiters_max": max(s.wal_waiters for s in inside),
        }

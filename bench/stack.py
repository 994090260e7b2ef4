"""One run's stack: redis, a database, the gateway sandbox and the service, seeded and torn down."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bench.coreprobe import CoreProbe
from bench.loadgen import encode
from bench.pgwaits import WaitSampler
from bench.procs import (
    CLIENT_ID,
    CLIENT_SECRET,
    COUNTERS,
    HIP,
    SECRET_KEY,
    Child,
    Service,
    create_database,
    drop_database,
    start_redis,
    start_sandbox,
)  # fmt: skip
from token_service.abdm.sandbox_shares import SHARE_PATHS
from token_service.abdm.sandbox_state import SandboxState
from token_service.auth import hash_password
from token_service.config import Settings
from token_service.models import Counter, Desk, Facility, User
from token_service.records.db import migrate, sync_engine

PASSWORD = "bench-password-1"
JWT_POOL = 64


def settings_for(workdir: Path, redis_url: str, database_url: str, gateway_url: str = "") -> Settings:
    return Settings(
        data_dir=workdir / "service-data", redis_url=redis_url, database_url=database_url,
        secret_key_value=SECRET_KEY, abdm_gateway_url=gateway_url or "http://127.0.0.1:9",
        abdm_client_id=CLIENT_ID, abdm_client_secret=CLIENT_SECRET,
    )  # fmt: skip


def seed(settings: Settings) -> None:
    """One facility, three counters with a desk each, one clerk who serves them all."""
    migrate(settings)
    with Session(sync_engine(settings)) as db:
        db.add(Facility(hip_id=HIP, name="District Hospital Patna",
                        names={"en": "District Hospital Patna", "hi": "जिला अस्पताल पटना"},
                        timezone="Asia/Kolkata", languages=["hi", "en"]))  # fmt: skip
        db.flush()
        for code, prefix in zip(COUNTERS, "ABC", strict=True):
            db.add(Counter(hip_id=HIP, code=code, name=f"Counter {code}", names={"en": code}, prefix=prefix))
            db.add(Desk(hip_id=HIP, code=f"D{code}", name=f"Desk {code}", counters=[code]))
        db.add(User(username="clerk", password_hash=hash_password(PASSWORD), role="clerk", hip_id=HIP,
                    counters=[]))  # fmt: skip
        db.commit()


@dataclass
class Stack:
    workdir: Path
    redis_url: str
    database_url: str
    gateway_url: str
    service: Service
    signer: SandboxState
    jwts: list[str] = field(default_factory=list)
    others: dict[str, Child] = field(default_factory=dict)  # redis, sandbox: for CPU accounting
    cores: CoreProbe | None = None  # the cores' speed through the run
    _engine: Engine | None = field(default=None, init=False, repr=False)

    @property
    def postgres(self) -> bool:
        return self.database_url.startswith("postgresql")

    def sql(self) -> Engine:
        """The benchmark's own connection pool to the service's database (one per stack)."""
        if self._engine is None:
            self._engine = sync_engine(self.settings)
        return self._engine

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def stack_pids(self) -> set[int]:
        """Every process of the stack: the service (its supervisor too), Redis, the sandbox, PostgreSQL's
        server processes, this process and the core probe."""
        assert self.service.child is not None
        procs = [*self.service.child.tree(), *(p for c in self.others.values() for p in c.tree())]
        pids = {p.pid for p in procs} | {psutil.Process().pid}
        if self.cores is not None:
            pids |= {p.pid for p in self.cores.child.tree()}
        return pids | {p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"}

    def _parts(self) -> dict[str, list[psutil.Process]]:
        """The stack's processes by part (PostgreSQL: all its server processes; the load generator: this
        process)."""
        out = {"service workers": [psutil.Process(p) for p in self.service.worker_pids()]}
        for name, child in self.others.items():
            out[name] = child.tree()
        out["PostgreSQL"] = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"]
        out["load generator (this process)"] = [psutil.Process()]
        return out

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU seconds used so far by each part of the stack on this box."""
        return {name: _total(procs, _cpu_seconds) for name, procs in self._parts().items()}

    def wakeups(self) -> dict[str, float]:
        """Times each part of the stack has gone to sleep so far, each followed by a wake-up: the
        voluntary context switches (a wait for a socket, a timer, a lock or the disk) of each process's
        main thread, where the stack's work runs (psutil reads them from /proc/PID/status)."""
        return {name: _total(procs, _sleeps) for name, procs in self._parts().items()}

    @property
    def settings(self) -> Settings:
        return settings_for(self.workdir, self.redis_url, self.database_url, self.gateway_url)

    def share_requests(self, n: int, tag: str) -> tuple[list[bytes], list[str]]:
        """`n` signed v3 shares, each a new patient, spread over the counters; and their REQUEST-IDs."""
        if not self.jwts:
            # The gateway reuses its bearer for many calls; the service still verifies every one.
            self.jwts = [self.signer.sign_gateway_jwt(ttl_s=3600) for _ in range(JWT_POOL)]
        url = self.service.url + SHARE_PATHS["v3"]
        out, ids = [], []
        for i in range(n):
            rid = str(uuid.uuid4())
            headers, body = self.signer.build_share(
                "v3", HIP, COUNTERS[i % len(COUNTERS)], f"p{tag}{i}@sbx", request_id=rid,
                jwt_token=self.jwts[i % JWT_POOL],
            )  # fmt: skip
            out.append(encode("POST", url, headers, body))
            ids.append(rid)
        return out, ids

    def login(self) -> dict[str, str]:
        r = httpx.post(self.service.url + "/api/auth/login", json={"username": "clerk", "password": PASSWORD})
        r.raise_for_status()
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    def numbering(self) -> list[tuple[str, str, int, int, int, int]]:
        """(counter, day, rows, distinct numbers, min, max) per counter and local day, from SQL."""
        q = text(
            "SELECT origin_counter, CAST(local_date AS TEXT), COUNT(*), COUNT(DISTINCT number), MIN(number),"
            " MAX(number) FROM token GROUP BY origin_counter, local_date"
        )
        with self.sql().connect() as conn:
            return [(r[0], r[1], int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in conn.execute(q)]

    def scanned_rows(self) -> dict[str, int]:
        """Rows each table has given to sequential scans so far (PostgreSQL's statistics; {} on SQLite). A
        statement that scans a growing table on the share path shows here long before it shows as speed."""
        if not self.postgres:
            return {}
        q = text("SELECT relname, seq_tup_read FROM pg_stat_user_tables")
        with self.sql().connect() as conn:
            return {str(r[0]): int(r[1]) for r in conn.execute(q)}

    def wal_bytes(self) -> int | None:
        """Bytes PostgreSQL has written to its write-ahead log so far (None on SQLite): every row version,
        row lock and index entry a statement makes goes through it, and each commit waits for it to
        reach the disk, so its growth per share is the database's share of the work, whatever the
        box's speed."""
        if not self.postgres:
            return None
        with self.sql().connect() as conn:
            return int(conn.execute(text("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")).scalar_one())

    def redis_calls(self) -> dict[str, int]:
        """Commands Redis has run so far, by name (INFO commandstats): the commands a script runs count
        one by one, besides its EVALSHA."""
        client = redis.Redis.from_url(self.redis_url)
        try:
            stats: dict[str, dict[str, int]] = client.info("commandstats")  # type: ignore[assignment]
        finally:
            client.close()
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}

    def wait_sampler(self) -> WaitSampler | None:
        """A started sampler of PostgreSQL's waits (None on SQLite); the caller stops it."""
        if not self.postgres:
            return None
        sampler = WaitSampler(sync_engine(self.settings))
        sampler.start()
        return sampler

    def received(self) -> list[list[object]]:
        r = httpx.get(self.gateway_url + "/bench/received", timeout=30)
        r.raise_for_status()
        rows: list[list[object]] = r.json()
        return rows


def _total(procs: list[psutil.Process], read: Callable[[psutil.Process], float]) -> float:
    """`read` summed over `procs`, skipping those gone meanwhile (a PostgreSQL backend that ended)."""
    total = 0.0
    for proc in procs:
        try:
            total += read(proc)
        except psutil.Error:
            continue
    return total


def _cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _sleeps(proc: psutil.Process) -> float:
    return float(proc.num_ctx_switches().voluntary)


@contextmanager
def running_stack(workdir: Path, workers: int, database: str) -> Iterator[Stack]:
    """Redis, a fresh database ("sqlite" or "postgres"), the sandbox and the service; all stopped after."""
    workdir.mkdir(parents=True, exist_ok=True)
    children: list[Child] = []
    database_url = create_database() if database == "postgres" else ""
    service: Service | None = None
    stack: Stack | None = None
    try:
        redis_child, redis_url = start_redis(workdir)
        children.append(redis_child)
        key = workdir / "gateway-key.pem"
        sandbox_child, gateway_url = start_sandbox(workdir, key)
        children.append(sandbox_child)
        data_dir = workdir / "service-data"
        data_dir.mkdir(parents=True, exist_ok=True)
        seed(settings_for(workdir, redis_url, database_url, gateway_url))
        service = Service(workdir, redis_url, database_url, gateway_url, workers).start()
        others = {"Redis": redis_child, "sandbox gateway": sandbox_child}
        stack = Stack(
            workdir, redis_url, database_url, gateway_url, service, SandboxState.create(key), others=others
        )
        stack.cores = CoreProbe.start(workdir)
        yield stack
    finally:
        if stack is not None:
            if stack.cores is not None:
                stack.cores.stop()
            stack.dispose()
        if service is not None:
            service.stop()
        for child in reversed(children):
            child.stop()
        if database_url:
            drop_database(database_url)


@dataclass(frozen=True)
class BoxCpu:
    """The whole box's CPU at one moment: its counters and every process's user + system seconds."""

    times: Any  # psutil's scputimes
    procs: dict[int, tuple[str, float, bool]]  # pid -> name, CPU seconds, a kernel thread

    @classmethod
    def now(cls) -> BoxCpu:
        procs = {}
        for p in psutil.process_iter(["name", "ppid", "cpu_times"]):
            t = p.info["cpu_times"]
            if t is not None:
                kernel = p.pid == 2 or p.info["ppid"] == 2  # kthreadd and its children
                procs[p.pid] = (str(p.info["name"]), t.user + t.system, kernel)
        return cls(psutil.cpu_times(), procs)

    def since(self, before: BoxCpu, stack: set[int], elapsed_s: float) -> dict[str, object]:
        """What the box did meanwhile outside the stack, as a share of its cores: the CPU of the other
        processes (the box's own services), of the kernel's threads (some of it the stack's own network
        traffic), and the time the hypervisor gave to other machines; the busiest of the other
        processes by name."""
        cores = psutil.cpu_count() or 1
        others: dict[str, float] = {}
        kernel_s = 0.0
        for pid, (name, cpu, kernel) in self.procs.items():
            if pid in stack:
                continue
            used = cpu - before.procs[pid][1] if pid in before.procs else cpu
            if used <= 0:
                continue
            if kernel:
                kernel_s += used
            else:
                others[name] = others.get(name, 0.0) + used
        pct = 100 / (elapsed_s * cores)
        busiest = sorted(others.items(), key=lambda kv: -kv[1])[:3]
        return {
            "other_cpu_pct": round(sum(others.values()) * pct, 1),
            "kernel_threads_pct": round(kernel_s * pct, 1),
            "steal_pct": round((self.times.steal - before.times.steal) * pct, 1),
            "other_busiest": ", ".join(f"{n} {v * pct:.1f} %" for n, v in busiest if v * pct >= 0.1)
            or "none",
        }

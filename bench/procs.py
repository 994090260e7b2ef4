"""The processes a run needs on loopback: redis-server, the gateway sandbox, the service, a bare hello app."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

HIP = "IN0710000123"
COUNTERS = ("OPD1", "OPD2", "ORTHO")
CLIENT_ID, CLIENT_SECRET = "bench-hip", "bench-secret"
SECRET_KEY = "bench-secret-key-0123456789abcdef0123456789"
PG_ADMIN = os.environ.get("OPD_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer 200 within {timeout} s")


@dataclass
class Child:
    """A child process in its own session, stopped with SIGTERM (then SIGKILL) of its group."""

    name: str
    args: list[str]
    log: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def tree(self) -> list[psutil.Process]:
        """This process and its children (uvicorn's supervisor and workers)."""
        try:
            me = psutil.Process(self.pid)
            return [me, *me.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def start_redis(workdir: Path, maxclients: int = 20000) -> tuple[Child, str]:
    port = free_port()
    data = workdir / f"redis-{port}"
    data.mkdir(parents=True, exist_ok=True)
    args = [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", "",
        "--appendonly", "no", "--loglevel", "warning", "--maxclients", str(maxclients),
    ]  # fmt: skip
    child = Child("redis", args, workdir / f"redis-{port}.log").start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.02)
    return child, f"redis://127.0.0.1:{port}/0"


def create_database() -> str:
    """A fresh PostgreSQL database; returns its SQLAlchemy URL."""
    import psycopg

    name = "opd_bench_" + uuid.uuid4().hex[:8]
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return "postgresql+psycopg://" + PG_ADMIN.split("://", 1)[1].rsplit("/", 1)[0] + "/" + name


def drop_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN, connect_timeout=2):
            return True
    except Exception:
        return False


@dataclass
class Service:
    """`opd-token serve --workers N` against our redis, database and sandbox."""

    workdir: Path
    redis_url: str
    database_url: str
    gateway_url: str
    workers: int
    port: int = field(default_factory=free_port)
    child: Child | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPD_")}
        env.update(
            OPD_DATA_DIR=str(self.workdir / "service-data"), OPD_REDIS_URL=self.redis_url,
            OPD_DATABASE_URL=self.database_url, OPD_SECRET_KEY=SECRET_KEY,
            OPD_ABDM_GATEWAY_URL=self.gateway_url, OPD_ABDM_CLIENT_ID=CLIENT_ID,
            OPD_ABDM_CLIENT_SECRET=CLIENT_SECRET, OPD_PUBLIC_BASE_URL=self.url,
            # Every simulated patient's status page comes from 127.0.0.1; the per-address budget
            # (300 a minute) would turn thousands of them away with 429s.
            OPD_RATE_LIMIT_STATUS_PER_MINUTE="0",
        )  # fmt: skip
        return env

    def start(self) -> Service:
        args = [sys.executable, "-m", "token_service.cli", "serve", "--port", str(self.port),
                "--workers", str(self.workers)]  # fmt: skip
        log = self.workdir / f"service-{self.port}.log"
        self.child = Child("service", args, log, self.env()).start()
        wait_http(self.url + "/readyz", 60)
        # Every worker must be up (and have fetched the gateway keys) before a timed loop starts.
        deadline = time.monotonic() + 30
        while len(self.worker_pids()) < self.workers and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        return self

    def worker_pids(self) -> list[int]:
        assert self.child is not None
        tree = self.child.tree()
        if self.workers == 1:
            return [p.pid for p in tree[:1]]
        # uvicorn's supervisor spawns workers through multiprocessing; skip its resource tracker.
        return [p.pid for p in tree[1:] if "resource_tracker" not in " ".join(_cmdline(p))]

    def worker_rss_mb(self) -> list[float]:
        out = []
        for pid in self.worker_pids():
            try:
                out.append(round(psutil.Process(pid).memory_info().rss / 2**20, 1))
            except psutil.NoSuchProcess:
                pass
        return out

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return list(p.cmdline())
    except psutil.Error:
        return []


def start_sandbox(workdir: Path, key_path: Path) -> tuple[Child, str]:
    port = free_port()
    args = [sys.executable, "-m", "bench.gateway", "--port", str(port), "--key", str(key_path)]
    child = Child("sandbox", args, workdir / f"sandbox-{port}.log").start()
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz", 30)
    return child, url


def start_hello(workdir: Path, workers: int) -> tuple[Child, str]:
    """The bare FastAPI app under plain `uvicorn --workers N`, the way most deployments run it."""
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "bench.hello_app:app", "--port", str(port),
            "--workers", str(workers), "--no-access-log", "--log-level", "warning"]  # fmt: skip
    child = Child("hello", args, workdir / f"hello-{port}.log").start()
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/", 30)
    time.sleep(1.0)
    return child, url

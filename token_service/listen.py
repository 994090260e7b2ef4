"""The service's listening sockets: TCP_NODELAY on every connection, with several workers a socket of
each worker's own, so that the kernel spreads connections evenly between them, and room for thousands of
open connections per worker.

Two faults of the usual setup are mended here.

- uvicorn's multi-worker mode binds with proto 0, and asyncio only sets TCP_NODELAY on accepted sockets
  whose listener reports IPPROTO_TCP, so every keep-alive response after the first would wait ~40 ms
  for a delayed ACK. Binding with IPPROTO_TCP fixes that.
- Workers sharing one listening socket take connections in turns of whoever is awake first: 500 board
  and status-page streams opened at once split 172-328 between two workers. A stream holds its worker's
  memory and is written to on every event, so the busier worker sets the latency everybody sees.
  With ``SO_REUSEPORT`` each worker listens on a socket of its own in one group, and the kernel hands
  each connection to one of them by a hash of its addresses.
- Every board and patient status page holds a connection open, and each is a file descriptor. A service
  started by systemd gets a soft limit of 1,024 open files (its hard limit is far higher): a worker then
  stops accepting at about a thousand connections, and a big OPD's waiting patients and boards exceed
  that. Python does not lift the soft limit by itself; ``raise_open_files`` does, and workers inherit it.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

try:
    import resource
except ImportError:  # not POSIX: nothing to raise
    resource = None  # type: ignore[assignment]

BACKLOG = 2048
OPEN_FILES_WANTED = 1 << 20  # the target when the hard limit is unlimited
REUSEPORT = hasattr(socket, "SO_REUSEPORT") and sys.platform.startswith("linux")  # load-balancing only there


def _bound(host: str, port: int, reuseport: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def listener(host: str, port: int) -> socket.socket:
    """One listening socket, for a single worker."""
    sock = _bound(host, port)
    try:
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def _group_member(host: str, port: int) -> socket.socket:
    """A socket bound into the port's ``SO_REUSEPORT`` group, not yet listening: the worker's server
    listens on it once the app has started, so no connection waits on a worker still starting."""
    return _bound(host, port, reuseport=True)


class WorkerListeners:
    """The port of a multi-worker service, held by the supervisor, from which each worker takes a
    listening socket of its own.

    The supervisor checks that nothing else holds the port (a plain bind, which fails beside any socket
    bound there, a second copy of this service included), then keeps a member of the port's group that
    never listens: it holds the port across worker restarts without taking connections. uvicorn hands
    the supervisor's sockets to every worker it starts (at start, on a restart, on SIGTTIN) by pickling
    them into the new process; `member` pickles as a call that binds a fresh group member in the worker.
    A worker's socket closes with it, and the kernel stops hashing connections to it. Connections
    still waiting in a dying worker's accept queue are reset then (their clients retry), where a shared
    socket would have left them to the other workers; ``sysctl net.ipv4.tcp_migrate_req=1`` (Linux
    5.14+) hands them to another worker instead.
    """

    def __init__(self, host: str, port: int) -> None:
        listener(host, port).close()  # raises OSError if the port is taken
        self.holder = _group_member(host, port)
        self.host = host
        self.port = self.holder.getsockname()[1]

    @property
    def member(self) -> _Member:
        return _Member(self.host, self.port)

    def close(self) -> None:
        self.holder.close()


class _Member:
    """Stands for a worker's socket until it reaches the worker (see `WorkerListeners`)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def __reduce__(self) -> tuple[Any, tuple[str, int]]:
        return _group_member, (self.host, self.port)


def raise_open_files() -> int:
    """Lift this process's soft limit on open files to its hard limit (children inherit it); the limit
    now in effect (-1: unlimited, or not a POSIX system). Where it cannot be raised it stays as it was."""
    if resource is None:
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):  # macOS refuses more than its own per-process maximum
        return soft
    return target

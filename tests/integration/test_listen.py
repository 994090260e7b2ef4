"""`opd-token serve --workers N`: each worker listens on a socket of its own in the port's SO_REUSEPORT
group, so connections are spread by the kernel instead of going to whichever worker wakes first."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from tests.support.app import ServiceProc, make_settings
from tests.support.servers import wait_for


def _workers(service: ServiceProc) -> list[psutil.Process]:
    assert service.proc is not None
    children = psutil.Process(service.proc.pid).children()
    return [p for p in children if "spawn_main" in " ".join(p.cmdline())]


def _held(worker: psutil.Process, port: int, status: str) -> int:
    return sum(
        1 for c in worker.net_connections("tcp") if c.laddr and c.laddr.port == port and c.status == status
    )


def test_each_worker_listens_and_connections_are_spread_evenly(tmp_path: Path, redis_url: str) -> None:
    service = ServiceProc(make_settings(tmp_path, redis_url), workers=2).start()
    clients: list[socket.socket] = []
    try:
        workers = _workers(service)
        assert len(workers) == 2
        wait_for(
            lambda: all(_held(w, service.port, psutil.CONN_LISTEN) == 1 for w in workers),
            20,
            "both listening",
        )
        for _ in range(400):  # opened one after another, as a board wall reconnecting after a restart
            clients.append(socket.create_connection(("127.0.0.1", service.port)))
        wait_for(
            lambda: sum(_held(w, service.port, psutil.CONN_ESTABLISHED) for w in workers) == 400,
            20,
            "400 held",
        )
        split = sorted(_held(w, service.port, psutil.CONN_ESTABLISHED) for w in workers)
        # A hash of the client's port sends each to one of two sockets: 200 +- 10 is one standard deviation.
        assert split[0] >= 150, split
    finally:
        for c in clients:
            c.close()
        service.stop()


def test_a_killed_worker_stops_taking_connections_and_its_replacement_listens(
    tmp_path: Path, redis_url: str
) -> None:
    service = ServiceProc(make_settings(tmp_path, redis_url), workers=2).start()
    try:
        # The service answers once one worker is up; the other may still be starting, not yet listening.
        wait_for(
            lambda: [_held(w, service.port, psutil.CONN_LISTEN) for w in _workers(service)] == [1, 1],
            20,
            "both listening",
        )
        victim = _workers(service)[0]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        # From the moment it died, every connection goes to a worker that answers.
        for _ in range(60):
            assert httpx.get(service.url + "/healthz", timeout=5).status_code == 200

        def replaced() -> bool:
            workers = _workers(service)
            return (
                len(workers) == 2
                and victim.pid not in {w.pid for w in workers}
                and all(_held(w, service.port, psutil.CONN_LISTEN) == 1 for w in workers)
            )

        wait_for(replaced, 30, "a listening replacement")
        clients = [socket.create_connection(("127.0.0.1", service.port)) for _ in range(100)]
        try:
            workers = _workers(service)
            wait_for(
                lambda: sum(_held(w, service.port, psutil.CONN_ESTABLISHED) for w in workers) == 100,
                20,
                "100 held",
            )
            assert all(_held(w, service.port, psutil.CONN_ESTABLISHED) > 0 for w in workers)
        finally:
            for c in clients:
                c.close()
    finally:
        service.stop()


def test_a_second_service_cannot_take_the_port(tmp_path: Path, redis_url: str) -> None:
    first = ServiceProc(make_settings(tmp_path / "a", redis_url), workers=2).start()
    try:
        second = ServiceProc(make_settings(tmp_path / "b", redis_url), workers=2, port=first.port)
        done = subprocess.run(
            [sys.executable, "-m", "token_service.cli", "serve", "--port", str(first.port), "--workers", "2"],
            env=second.env(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode != 0
        assert f"cannot listen on 127.0.0.1:{first.port}" in done.stderr
    finally:
        first.stop()


def test_a_worker_holds_more_connections_than_the_soft_open_file_limit_it_was_started_with(
    tmp_path: Path, redis_url: str
) -> None:
    # systemd starts a service with a soft limit of 1,024 open files; every board and status page holds
    # one. The service lifts the soft limit to the hard one, and its workers inherit it.
    soft, hard = 256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard == resource.RLIM_INFINITY or hard >= 1024

    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    service = ServiceProc(make_settings(tmp_path, redis_url), workers=2, preexec=low_soft_limit).start()
    clients: list[socket.socket] = []
    try:
        workers = _workers(service)
        assert len(workers) == 2
        assert all(w.rlimit(psutil.RLIMIT_NOFILE)[0] > soft for w in workers)
        for _ in range(800):  # 400 a worker: more than the limit it was started with
            clients.append(socket.create_connection(("127.0.0.1", service.port)))
        wait_for(
            lambda: sum(_held(w, service.port, psutil.CONN_ESTABLISHED) for w in workers) == 800,
            30,
            "800 accepted",
        )
        for c in clients[-20:]:  # the last ones in are served like the first
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: opd\r\n\r\n")
            assert c.recv(64).startswith(b"HTTP/1.1 200 ")
    finally:
        for c in clients:
            c.close()
        service.stop()

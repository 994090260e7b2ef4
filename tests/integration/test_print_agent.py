"""The print agent as a real process against the real service and a fake TCP printer: faults and recovery."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from printer.raster import decode_raster, join_vertical
from tests.support.app import HIP, PASSWORD, Seed, ServiceProc, make_settings, seed
from tests.support.servers import free_port, wait_for


@dataclass
class FakePrinter:
    """A raw port-9100 printer on 127.0.0.1 that refuses connections until started, then records jobs."""

    port: int = field(default_factory=free_port)
    jobs: list[bytes] = field(default_factory=list)  # one entry per connection that carried data
    _sock: socket.socket | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def uri(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> FakePrinter:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(8)
        self._sock = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening: connections are refused from now on, as from a printer switched off."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        chunks: list[bytes] = []
        with conn:
            try:
                while chunk := conn.recv(65536):
                    chunks.append(chunk)
            except OSError:
                pass
        data = b"".join(chunks)
        if data:  # the agent's idle health probe connects and sends nothing
            with self._lock:
                self.jobs.append(data)

    def complete_jobs(self) -> list[bytes]:
        return complete(self.jobs)


def complete(jobs: list[bytes]) -> list[bytes]:
    """Jobs that arrived whole: every raster block complete and the paper cut at the end."""
    whole = []
    for data in list(jobs):
        try:
            decode_raster(data)
        except ValueError:
            continue
        if b"\x1dV" in data[-8:]:
            whole.append(data)
    return whole


@dataclass
class FifoPrinter:
    """A `file://` printer on a named pipe shrunk to one page: when the reader stalls, the agent blocks
    in the middle of writing the slip, which makes "killed mid-print" deterministic."""

    path: Path
    jobs: list[bytes] = field(default_factory=list)
    stall: bool = True
    stalled: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def uri(self) -> str:
        return f"file://{self.path}"

    def start(self) -> FifoPrinter:
        os.mkfifo(self.path)
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        # Opened before any writer (non-blocking) so the pipe exists and can be shrunk first.
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 4096)
        chunks: list[bytes] = []
        while True:
            try:
                chunk = os.read(fd, 1024)
            except BlockingIOError:  # a writer is connected but has not written yet
                chunk = None
            if chunk:
                chunks.append(chunk)
                if self.stall and not self.stalled.is_set():
                    self.stalled.set()
                    self.release.wait(30)
                continue
            if chunk == b"" and chunks:  # the writer closed: one job done
                self.jobs.append(b"".join(chunks))
                chunks = []
            time.sleep(0.005)


class Agent:
    """`python -m printer.agent` as a child process with its log captured to a file."""

    def __init__(self, server: str, token: str, printer: str, spool: Path, lease: float, *extra: str) -> None:
        spool.mkdir(parents=True, exist_ok=True)
        self.log = spool / f"agent-{time.monotonic_ns()}.log"
        args = [sys.executable, "-m", "printer.agent", "--server", server, "--token", token,
                "--printer", printer, "--spool", str(spool), "--lease", str(lease), "--heartbeat", "0.5",
                "--max-backoff", "0.4", *extra]  # fmt: skip
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def terminate(self, timeout: float = 5.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@dataclass
class Site:
    """A running service with the seeded facility, and helpers to issue and print tokens."""

    service: ServiceProc
    seed: Seed
    tmp: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.service.url, timeout=10)

    def issue_and_print(self) -> tuple[dict[str, Any], int]:
        kiosk = {"Authorization": f"Bearer {self.seed.devices['kiosk1']}"}
        with self.client() as c:
            r = c.post(f"/api/facilities/{HIP}/counters/OPD1/tokens", json={}, headers=kiosk)
            assert r.status_code == 201, r.text
            token = r.json()
            r = c.post(f"/api/tokens/{token['id']}/print", json={}, headers=kiosk)
            assert r.status_code == 202, r.text
            return token, int(r.json()["job_id"])

    def printer_row(self) -> dict[str, Any]:
        with self.client() as c:
            r = c.post("/api/auth/login", json={"username": "admin", "password": PASSWORD})
            h = {"Authorization": f"Bearer {r.json()['access_token']}"}
            (row,) = c.get(f"/api/facilities/{HIP}/printers", headers=h).json()
            return dict(row)

    def agent(self, printer: FakePrinter | FifoPrinter, lease: float = 30.0, *extra: str) -> Agent:
        token = self.seed.devices["printer1"]
        return Agent(self.service.url, token, printer.uri, self.tmp / "spool", lease, *extra)


@pytest.fixture
def site(tmp_path: Path, redis_url: str) -> Iterator[Site]:
    settings = make_settings(tmp_path / "data", redis_url)
    s = seed(settings)
    service = ServiceProc(settings).start()
    try:
        yield Site(service, s, tmp_path)
    finally:
        service.stop()


def test_printer_refusing_connections_gets_the_job_exactly_once_when_back(site: Site) -> None:
    printer = FakePrinter()  # not listening yet: every connection is refused
    agent = site.agent(printer)
    try:
        token, job_id = site.issue_and_print()
        # The agent holds the job (leased, unacknowledged) while it retries and reports the printer down.
        row = wait_for(lambda: (r := site.printer_row())["in_flight"] == 1 and r, 10, "the job taken")
        assert row["healthy"] is False and row["online"] is True
        assert "refused" in row["detail"].lower()
        time.sleep(1.0)  # several retries against the dead port
        assert printer.jobs == []
        printer.start()
        back = time.monotonic()
        wait_for(lambda: printer.jobs, 5, "the slip")
        row = wait_for(lambda: (r := site.printer_row())["last_printed_at"] and r, 5, "the ack")
        print(f"printer back -> slip received in {time.monotonic() - back:.2f} s")
        assert (row["queued"], row["in_flight"], row["healthy"]) == (0, 0, True)
        time.sleep(0.5)
        assert len(printer.jobs) == 1 and printer.complete_jobs() == printer.jobs
        assert join_vertical(decode_raster(printer.jobs[0])).width == 576
        assert agent.terminate() == 0
        assert f"job {job_id} printed (token {token['id']}" in agent.text()
    finally:
        agent.terminate()
        printer.stop()


def test_agent_killed_mid_job_prints_it_at_most_once_more(site: Site) -> None:
    printer = FifoPrinter(site.tmp / "lp0").start()
    agent = site.agent(printer, 2.0)
    try:
        _, job_id = site.issue_and_print()
        assert printer.stalled.wait(10), agent.text()
        time.sleep(0.3)
        agent.kill9()  # 1 KiB on paper, 4 KiB in the pipe, the rest never written
        assert site.printer_row()["in_flight"] == 1  # never acknowledged
        printer.stall = False
        printer.release.set()
        wait_for(lambda: printer.jobs, 5, "the cut-off first attempt")
        assert complete(printer.jobs) == []
        second = site.agent(printer, 2.0)
        try:
            wait_for(lambda: complete(printer.jobs), 10, "the re-delivered slip")
            wait_for(lambda: site.printer_row()["last_printed_at"], 5, "the ack")
            time.sleep(0.5)
            assert len(complete(printer.jobs)) == 1 and len(printer.jobs) == 2
            assert f"job {job_id} printed" in second.text() and "attempt 2" in second.text()
        finally:
            assert second.terminate() == 0
    finally:
        agent.terminate()


def test_redelivered_job_already_in_the_journal_is_acked_without_printing(site: Site) -> None:
    """The crash window between journal and ack: the job comes back, the agent must not print it again."""
    printer = FakePrinter().start()
    _, first = site.issue_and_print()
    spool = site.tmp / "spool"
    spool.mkdir()
    (spool / "printed.log").write_text(f"{first}\n12")  # a torn last line, as after a power cut mid-write
    agent = site.agent(printer)
    try:
        wait_for(lambda: site.printer_row()["last_printed_at"], 10, "the ack of the journaled job")
        assert "was printed before" in agent.text()
        _, second = site.issue_and_print()
        wait_for(lambda: printer.jobs, 10, "the second job")
        time.sleep(0.3)
        assert len(printer.jobs) == 1  # only the second job reached paper
        journal = (spool / "printed.log").read_text().split()
        assert journal[0] == str(first) and journal[-1] == str(second)
    finally:
        agent.terminate()
        printer.stop()


def test_service_restart_agent_reconnects_and_prints_the_next_job(site: Site) -> None:
    printer = FakePrinter().start()
    agent = site.agent(printer, 30.0, "--heartbeat", "20")  # idle long-polls of 20 s
    try:
        site.issue_and_print()
        wait_for(lambda: len(printer.jobs) == 1, 10, "the first job")
        time.sleep(0.3)  # the agent is back in its long-poll
        started = time.monotonic()
        site.service.stop()
        stopped = time.monotonic() - started
        time.sleep(1.0)  # the agent's long-poll fails and it backs off
        site.service.start()
        restarted = time.monotonic()
        site.issue_and_print()
        wait_for(lambda: len(printer.jobs) == 2, 10, "the job after the restart")
        printed_in = time.monotonic() - restarted
        print(f"service stop {stopped:.2f} s; after restart the next slip printed in {printed_in:.2f} s")
        assert stopped < 5, "a stopping service answers open long-polls at once"
        assert "service unreachable" in agent.text()
        t0 = time.monotonic()
        assert agent.terminate() == 0 and time.monotonic() - t0 < 2  # SIGTERM ends a long-poll promptly
        assert "stopped after printing 2 job(s)" in agent.text()
    finally:
        agent.terminate()
        printer.stop()


def test_agent_refuses_a_bad_token_and_a_bad_uri(site: Site) -> None:
    for token, uri, message in (
        ("dev_not-a-token", "dummy://", "refused this device token"),
        (site.seed.devices["printer1"], "lpt://1", "unsupported printer URI"),
    ):
        args = [sys.executable, "-m", "printer.agent", "--server", site.service.url, "--token", token,
                "--printer", uri, "--spool", str(site.tmp / "spool-bad")]  # fmt: skip
        done = subprocess.run(args, capture_output=True, text=True, timeout=20, env={**os.environ})
        assert done.returncode == 2 and message in done.stderr, done.stderr

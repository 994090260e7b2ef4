"""opd-print-agent: take one printer's jobs from the service by long-poll, print them, acknowledge them.

Delivery is at least once (an unacknowledged job comes back after its lease). The agent records every
job id it printed in an fsync'd journal *before* acknowledging, so a job that comes back after it was
printed is acknowledged without printing again; a job cut off mid-print is printed at most once more.

Errors and what the agent does:
    PrinterUnavailable   keep the job, report unhealthy, retry with backoff (never lost, never skipped)
    ServiceDown          the service is unreachable or answered 5xx: reconnect with backoff
    AgentConfigError     bad printer URI, rejected device token, spool in use: exit with status 2
    ValueError (slip)    a malformed job: acknowledged as failed with the reason
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import httpx

from printer.escpos_encode import encode_slip
from printer.slip import WIDTH_58MM, WIDTH_80MM, SlipData, render_slip
from printer.transport import PrinterUnavailable, open_printer, parse_uri, send

log = logging.getLogger("opd-print-agent")

MAX_WAIT_S = 25.0  # the service answers a long-poll within this; the HTTP timeout allows a margin
JOURNAL_KEEP = 1000  # ids kept on compaction: far more than can be open at once for one printer


class AgentConfigError(Exception):
    """The agent cannot work as configured; retrying will not help."""


class ServiceDown(Exception):
    """The service could not be reached or answered with a server error."""


class Stop(Exception):
    """SIGTERM/SIGINT arrived while the agent was waiting."""


class Journal:
    """Job ids already printed, one per line in ``printed.log``; each append is fsync'd before the ack."""

    def __init__(self, spool: Path) -> None:
        spool.mkdir(parents=True, exist_ok=True)
        self.path = spool / "printed.log"
        # One agent per spool: two agents sharing a journal could both print a re-delivered job.
        self._lock: IO[bytes] = open(spool / "agent.lock", "wb")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AgentConfigError(f"another agent is using the spool directory {spool}") from None
        raw = self.path.read_bytes() if self.path.exists() else b""
        whole = raw[: raw.rfind(b"\n") + 1]
        # Only newline-terminated entries count: a torn last line (power cut mid-write) may be the prefix
        # of another id ("12" of "123") and must not mark that job printed.
        self.ids = [int(line) for line in whole.split() if line.isdigit()]
        self._seen = set(self.ids)
        self._file = open(self.path, "ab")
        if len(whole) != len(raw):
            self._file.truncate(len(whole))
        _fsync_dir(spool)

    def __contains__(self, job_id: int) -> bool:
        return job_id in self._seen

    def add(self, job_id: int) -> None:
        self._file.write(f"{job_id}\n".encode("ascii"))
        self._file.flush()
        os.fsync(self._file.fileno())
        self.ids.append(job_id)
        self._seen.add(job_id)
        if len(self.ids) > 2 * JOURNAL_KEEP:
            self._compact()

    def _compact(self) -> None:
        keep = self.ids[-JOURNAL_KEEP:]
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write("".join(f"{i}\n" for i in keep).encode("ascii"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        self._file.close()
        self._file = open(self.path, "ab")
        self.ids, self._seen = keep, set(keep)

    def close(self) -> None:
        self._file.close()
        self._lock.close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Backoff:
    """Exponential delays with jitter, so agents restarted together do not hammer the service in step."""

    initial: float = 0.5
    cap: float = 30.0
    _next: float = 0.0

    def delay(self) -> float:
        self._next = self.initial if self._next == 0 else min(self._next * 2, self.cap)
        return self._next * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self._next = 0.0


class Service:
    """The agent's side of the print API, over one keep-alive HTTP connection."""

    def __init__(self, server: str, token: str, transport: httpx.BaseTransport | None = None) -> None:
        self.http = httpx.Client(
            base_url=server.rstrip("/"), headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(10.0, read=MAX_WAIT_S + 10.0), transport=transport,
        )  # fmt: skip

    def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise ServiceDown(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code in (401, 403):
            raise AgentConfigError(
                f"the service refused this device token ({response.status_code}): {response.text}"
            )
        if response.status_code >= 500:
            raise ServiceDown(f"service answered {response.status_code}")
        return response

    def next_job(self, wait: float, lease: float) -> dict[str, Any] | None:
        r = self._call("GET", "/api/print-jobs/next", params={"wait": wait, "lease": lease})
        if r.status_code == 204:
            return None
        r.raise_for_status()
        job: dict[str, Any] = r.json()
        return job

    def ack(self, job_id: int, status: str, error: str | None = None) -> None:
        body: dict[str, Any] = {"status": status}
        if error:
            body["error"] = error[:500]
        r = self._call("POST", f"/api/print-jobs/{job_id}/ack", json=body)
        if r.status_code != 404:  # 404: the job was removed meanwhile, nothing left to acknowledge
            r.raise_for_status()

    def heartbeat(self, healthy: bool, detail: str) -> None:
        self._call("POST", "/api/printers/heartbeat", json={"healthy": healthy, "detail": detail[:500]})

    def close(self) -> None:
        self.http.close()


@dataclass
class Agent:
    service: Service
    printer_uri: str
    journal: Journal
    width: int = WIDTH_80MM
    lease: float = 30.0
    heartbeat_every: float = 15.0
    printer_timeout: float = 10.0
    probe: bool = True
    max_backoff: float = 30.0
    healthy: bool = True
    detail: str = "starting"
    printed: int = 0
    _stopping: bool = False
    _interruptible: bool = False
    _last_beat: float = field(default=-1e9)

    # -- lifecycle ----------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: finishing up", signum)
        self._stopping = True
        if self._interruptible:
            raise Stop()

    @contextlib.contextmanager
    def _waiting(self) -> Iterator[None]:
        """Only waits (long-poll, backoff) are cut short by a signal; printer and journal writes never are."""
        if self._stopping:
            raise Stop()
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    def _sleep(self, seconds: float) -> None:
        with self._waiting():
            time.sleep(seconds)

    def run(self) -> int:
        backoff = Backoff(cap=self.max_backoff)
        try:
            while not self._stopping:
                try:
                    self._beat_if_due()
                    with self._waiting():
                        job = self.service.next_job(min(MAX_WAIT_S, self.heartbeat_every), self.lease)
                    backoff.reset()
                except ServiceDown as exc:
                    delay = backoff.delay()
                    log.warning("service unreachable (%s); retrying in %.1f s", exc, delay)
                    self._sleep(delay)
                    continue
                if job is not None:
                    self.handle(job)
        except Stop:
            pass
        log.info("stopped after printing %d job(s)", self.printed)
        return 0

    # -- one job ------------------------------------------------------------------------------------

    def handle(self, job: dict[str, Any]) -> None:
        job_id = int(job["id"])
        if job_id in self.journal:
            log.info("job %d was printed before; acknowledging again", job_id)
            self._ack(job_id, "printed")
            return
        try:
            data = encode_slip(render_slip(SlipData.from_json(job["payload"]), self.width))
        except (ValueError, KeyError, TypeError) as exc:
            log.error("job %d cannot be rendered: %s", job_id, exc)
            self._ack(job_id, "failed", f"cannot render the slip: {exc}")
            return
        self._print(job_id, data)
        self.journal.add(job_id)  # before the ack: a re-delivery after a crash here is not printed again
        self.printed += 1
        log.info("job %d printed (token %s, attempt %s)", job_id, job.get("token_id"), job.get("attempt"))
        self._ack(job_id, "printed")

    def _print(self, job_id: int, data: bytes) -> None:
        backoff = Backoff(initial=0.5, cap=self.max_backoff)
        while True:
            try:
                send(self.printer_uri, data, timeout=self.printer_timeout)
            except PrinterUnavailable as exc:
                self._set_health(False, exc.reason)
                delay = backoff.delay()
                log.warning("job %d: printer unavailable (%s); retrying in %.1f s", job_id, exc.reason, delay)
                self._sleep(delay)
                continue
            self._set_health(True, "ready")
            return

    def _ack(self, job_id: int, status: str, error: str | None = None) -> None:
        backoff = Backoff(cap=self.max_backoff)
        while True:
            try:
                self.service.ack(job_id, status, error)
                return
            except ServiceDown as exc:
                # The journal already holds a printed job, so giving up here on shutdown loses nothing.
                delay = backoff.delay()
                log.warning("ack of job %d failed (%s); retrying in %.1f s", job_id, exc, delay)
                self._sleep(delay)

    # -- health -------------------------------------------------------------------------------------

    def _set_health(self, healthy: bool, detail: str) -> None:
        changed = (healthy, detail) != (self.healthy, self.detail)
        self.healthy, self.detail = healthy, detail
        if changed:
            self._beat()

    def _beat_if_due(self) -> None:
        if time.monotonic() - self._last_beat < self.heartbeat_every:
            return
        if self.probe:
            self._probe_printer()
        self._beat()

    def _probe_printer(self) -> None:
        """Open and close the printer while idle, so "out of paper / offline" shows before a patient waits."""
        device: Any = None
        try:
            device = open_printer(self.printer_uri, timeout=min(self.printer_timeout, 3.0))
            device.open()
            self.healthy, self.detail = True, "ready"
        except Exception as exc:  # sockets raise OSError, python-escpos its own DeviceNotFoundError
            self.healthy, self.detail = False, " ".join(str(exc).split()) or type(exc).__name__
        finally:
            if device is not None:
                with contextlib.suppress(Exception):
                    device.close()

    def _beat(self) -> None:
        self._last_beat = time.monotonic()
        try:
            self.service.heartbeat(self.healthy, self.detail)
        except ServiceDown as exc:
            log.info("heartbeat not delivered: %s", exc)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="opd-print-agent",
        description="Print the OPD token slips queued for one printer device.",
    )
    p.add_argument("--server", required=True, help="the service's base URL, e.g. http://opd.local:8000")
    p.add_argument("--token", default=os.environ.get("OPD_DEVICE_TOKEN"),
                   help="the printer device's token (or OPD_DEVICE_TOKEN)")  # fmt: skip
    p.add_argument(
        "--printer", required=True, help="tcp://host:9100, usb://VID:PID, file:///dev/usb/lp0, dummy://"
    )
    p.add_argument("--spool", type=Path, default=Path.home() / ".opd-print-agent",
                   help="directory of the printed-jobs journal (default ~/.opd-print-agent)")  # fmt: skip
    p.add_argument("--paper", choices=("58", "80"), default="80", help="paper width in mm (default 80)")
    p.add_argument(
        "--lease", type=float, default=30.0, help="seconds before an unacknowledged job comes back"
    )
    p.add_argument("--heartbeat", type=float, default=15.0, help="seconds between health reports")
    p.add_argument("--max-backoff", type=float, default=30.0, help="longest wait between retries, seconds")
    p.add_argument("--no-probe", action="store_true", help="do not open the printer while idle to check it")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
        force=True,  # a library may have configured the root logger on import
    )
    for noisy in ("httpx", "escpos"):  # one line per request / per printer open is not news
        logging.getLogger(noisy).setLevel(logging.WARNING)
    journal: Journal | None = None
    try:
        if not args.token:
            raise AgentConfigError("give the printer device token with --token or OPD_DEVICE_TOKEN")
        try:
            parse_uri(args.printer)
        except ValueError as exc:
            raise AgentConfigError(str(exc)) from None
        journal = Journal(args.spool)
        agent = Agent(
            Service(args.server, args.token), args.printer, journal,
            width=WIDTH_58MM if args.paper == "58" else WIDTH_80MM, lease=args.lease,
            heartbeat_every=args.heartbeat, probe=not args.no_probe, max_backoff=args.max_backoff,
        )  # fmt: skip
        agent.install_signal_handlers()
        log.info("printing jobs from %s on %s (spool %s)", args.server, args.printer, args.spool)
        code = agent.run()
        agent.service.close()
    except AgentConfigError as exc:
        log.error("%s", exc)
        code = 2
    finally:
        if journal is not None:
            journal.close()
    sys.exit(code)


if __name__ == "__main__":
    main()

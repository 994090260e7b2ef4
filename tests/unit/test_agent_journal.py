"""The print agent without sockets: its journal, backoff, and one job's handling against a mock service."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from printer.agent import Agent, AgentConfigError, Backoff, Journal, Service, ServiceDown, Stop
from printer.raster import decode_raster, join_vertical
from printer.slip import SlipData, render_slip

SLIP = SlipData(
    facility_names={"en": "District Hospital Patna", "hi": "जिला अस्पताल पटना"},
    counter_names={"en": "General OPD"},
    token_label="A17",
    priority="normal",
    issued_at=datetime(2026, 3, 12, 4, 35, tzinfo=UTC),
    timezone="Asia/Kolkata",
    languages=["hi", "en"],
    status_url="http://127.0.0.1:8000/t/abc123",
)


def test_journal_survives_reopen_and_ignores_a_torn_line(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.add(5)
    journal.add(7)
    journal.close()
    with open(tmp_path / "printed.log", "ab") as fh:
        fh.write(b"12")  # power cut mid-write: "12" may be the start of "123"
    again = Journal(tmp_path)
    assert 5 in again and 7 in again and 12 not in again
    again.add(123)
    again.close()
    assert (tmp_path / "printed.log").read_text() == "5\n7\n123\n"


def test_journal_compacts_and_locks_its_spool(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    with pytest.raises(AgentConfigError, match="another agent"):
        Journal(tmp_path)
    for i in range(1, 2002):
        journal.add(i)
    assert 1 not in journal and 2001 in journal and 1002 in journal
    assert len((tmp_path / "printed.log").read_text().split()) == 1000
    journal.close()
    assert 2001 in Journal(tmp_path)


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    b = Backoff(initial=0.5, cap=4.0)
    delays = [b.delay() for _ in range(8)]
    assert 0.4 <= delays[0] <= 0.6 and all(3.2 <= d <= 4.8 for d in delays[4:])
    b.reset()
    assert b.delay() <= 0.6


class FakeService:
    """The far side of the network: records acks, fails the first `down` calls with a 503."""

    def __init__(self, down: int = 0) -> None:
        self.acks: list[tuple[int, dict[str, Any]]] = []
        self.beats: list[dict[str, Any]] = []
        self.down = down

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            self.down -= 1
            return httpx.Response(503, json={"error": "unavailable"})
        if request.url.path.endswith("/ack"):
            self.acks.append((int(request.url.path.split("/")[-2]), json.loads(request.content)))
            return httpx.Response(200, json={})
        if request.url.path == "/api/printers/heartbeat":
            self.beats.append(json.loads(request.content))
            return httpx.Response(200, json={})
        return httpx.Response(204)


def _agent(tmp_path: Path, fake: FakeService) -> Agent:
    service = Service("http://opd.test", "dev_x", transport=httpx.MockTransport(fake))
    printer = tmp_path / "lp0"
    printer.touch()
    return Agent(service, f"file://{printer}", Journal(tmp_path / "spool"), max_backoff=0.01)


def test_a_job_is_printed_journaled_then_acked(tmp_path: Path) -> None:
    fake = FakeService(down=2)  # the first ack attempts hit a restarting service
    agent = _agent(tmp_path, fake)
    agent.handle({"id": 9, "token_id": "T", "payload": SLIP.to_json(), "attempt": 1})
    printed = (tmp_path / "lp0").read_bytes()
    assert join_vertical(decode_raster(printed)).tobytes() == render_slip(SLIP).tobytes()
    assert 9 in agent.journal and fake.acks == [(9, {"status": "printed"})]
    # Delivered again (the ack was lost): acknowledged, not printed twice.
    agent.handle({"id": 9, "token_id": "T", "payload": SLIP.to_json(), "attempt": 2})
    assert (tmp_path / "lp0").read_bytes() == printed and len(fake.acks) == 2


def test_a_malformed_job_is_acked_as_failed(tmp_path: Path) -> None:
    fake = FakeService()
    agent = _agent(tmp_path, fake)
    agent.handle({"id": 3, "payload": {**SLIP.to_json(), "priority": "vip"}})
    ((job_id, body),) = fake.acks
    assert job_id == 3 and body["status"] == "failed" and "vip" in body["error"]
    assert (tmp_path / "lp0").read_bytes() == b"" and 3 not in agent.journal


def test_an_offline_printer_keeps_the_job_and_reports_unhealthy(tmp_path: Path) -> None:
    fake = FakeService()
    agent = _agent(tmp_path, fake)
    agent.printer_uri = f"file://{tmp_path}/missing/lp0"
    agent._stopping = True  # the first wait after the failure ends the attempt, as SIGTERM would
    with pytest.raises(Stop):
        agent.handle({"id": 4, "payload": SLIP.to_json()})
    assert fake.acks == [] and 4 not in agent.journal
    assert fake.beats[-1]["healthy"] is False and "missing" in fake.beats[-1]["detail"]


def test_service_errors_are_classified() -> None:
    def answer(status: int) -> Service:
        return Service(
            "http://opd.test", "dev_x", transport=httpx.MockTransport(lambda _: httpx.Response(status))
        )

    with pytest.raises(AgentConfigError):
        answer(401).next_job(0, 30)
    with pytest.raises(ServiceDown):
        answer(502).next_job(0, 30)
    assert answer(204).next_job(0, 30) is None

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ServiceDown):
        Service("http://opd.test", "dev_x", transport=httpx.MockTransport(refuse)).heartbeat(True, "ok")

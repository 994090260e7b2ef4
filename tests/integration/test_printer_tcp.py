"""Sending ESC/POS to a raw TCP (port 9100 style) printer: a real local listener stands in for it."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from printer.escpos_encode import encode_slip
from printer.raster import decode_raster, join_vertical
from printer.slip import SlipData, render_slip
from printer.transport import PrinterUnavailable, send

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "printer"


class _Capture(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        chunks = []
        while chunk := self.request.recv(65536):
            chunks.append(chunk)
        server: _Printer = self.server  # type: ignore[assignment]
        server.jobs.append(b"".join(chunks))
        server.received.set()


class _Printer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Capture)
        self.jobs: list[bytes] = []
        self.received = threading.Event()


@pytest.fixture
def printer() -> Iterator[_Printer]:
    server = _Printer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_slip_arrives_byte_for_byte(printer: _Printer) -> None:
    data = SlipData.from_json(json.loads((GOLDEN / "slip_data.json").read_text(encoding="utf-8")))
    slip = render_slip(data)
    payload = encode_slip(slip)
    send(f"tcp://127.0.0.1:{printer.server_address[1]}", payload, timeout=5)
    assert printer.received.wait(5)
    assert printer.jobs == [payload]
    assert join_vertical(decode_raster(printer.jobs[0])).tobytes() == slip.tobytes()


def test_two_jobs_are_two_connections(printer: _Printer) -> None:
    uri = f"tcp://127.0.0.1:{printer.server_address[1]}"
    send(uri, b"\x1b@first", timeout=5)
    send(uri, b"\x1b@second", timeout=5)
    deadline = time.monotonic() + 5
    while len(printer.jobs) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(printer.jobs) == [b"\x1b@first", b"\x1b@second"]


def test_closed_port_fails_fast() -> None:
    start = time.monotonic()
    with pytest.raises(PrinterUnavailable) as info:
        send(f"tcp://127.0.0.1:{_free_port()}", b"\x1b@", timeout=5)
    assert time.monotonic() - start < 1.0
    assert "127.0.0.1" in str(info.value)


def test_printer_that_stops_reading_times_out() -> None:
    # A jammed printer accepts the connection but its buffer never drains: the send must give up, not hang.
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # never accept(): the kernel completes the handshake, nobody reads
        start = time.monotonic()
        with pytest.raises(PrinterUnavailable):
            send(f"tcp://127.0.0.1:{listener.getsockname()[1]}", b"\0" * (64 << 20), timeout=0.5)
        assert time.monotonic() - start < 5

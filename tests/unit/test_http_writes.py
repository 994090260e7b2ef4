"""The served protocol writes a response's head and body together, and never reorders a connection's bytes."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from token_service.security import BoundedHttpToolsProtocol, HeadWithBody

GET = b"GET /x HTTP/1.1\r\nHost: example\r\n\r\n"


class Recorder(asyncio.Transport):
    """What reached the socket, one entry per system call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.calls.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.calls.append(b"".join(bytes(d) for d in list_of_data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _served(app: Any, request: bytes, settle_s: float = 0.05) -> Recorder:
    config = uvicorn.Config(app, http=BoundedHttpToolsProtocol, log_level="warning", lifespan="off")
    config.load()
    protocol = BoundedHttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
    transport = Recorder()
    protocol.connection_made(transport)
    protocol.data_received(request)
    await asyncio.sleep(settle_s)
    return transport


async def _whole(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 202, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_a_whole_response_is_one_write() -> None:
    transport = await _served(_whole, GET)
    assert len(transport.calls) == 1
    assert transport.calls[0].startswith(b"HTTP/1.1 202 ") and transport.calls[0].endswith(b"\r\n\r\nok")


async def test_pipelined_requests_are_answered_in_order_one_write_each() -> None:
    transport = await _served(_whole, GET * 3)
    assert len(transport.calls) == 3
    assert all(call.startswith(b"HTTP/1.1 202 ") and call.endswith(b"ok") for call in transport.calls)


async def test_a_streams_head_goes_out_before_its_first_event() -> None:
    gate = asyncio.Event()

    async def stream(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await gate.wait()
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": False})

    transport = await _served(stream, GET)
    assert len(transport.calls) == 1 and transport.calls[0].startswith(b"HTTP/1.1 200 ")  # the head, alone
    gate.set()
    await asyncio.sleep(0.05)
    assert transport.calls[1:] == [b"9\r\ndata: 1\n\n\r\n", b"9\r\ndata: 2\n\n\r\n0\r\n\r\n"]


async def test_closing_writes_what_is_held_first() -> None:
    transport = Recorder()
    conn = HeadWithBody(transport, asyncio.get_running_loop())
    conn.expect_head()
    conn.write(b"HEAD")
    conn.close()
    assert transport.calls == [b"HEAD"] and transport.closed
    await asyncio.sleep(0)  # the end-of-turn flush finds nothing left
    assert transport.calls == [b"HEAD"]


async def test_only_a_heads_first_write_is_held_and_a_large_one_goes_at_once() -> None:
    transport = Recorder()
    conn = HeadWithBody(transport, asyncio.get_running_loop())
    conn.write(b"no head expected")
    assert transport.calls == [b"no head expected"]
    conn.expect_head()
    big = b"x" * (HeadWithBody.HOLD_MAX + 1)
    conn.write(big)
    assert transport.calls[-1] == big
    conn.expect_head()
    conn.write(b"head")
    conn.write(b"body")
    conn.write(b"more")
    assert transport.calls[2:] == [b"headbody", b"more"]

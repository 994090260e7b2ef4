"""The gateway's HTTP/1.1 client against small servers on loopback that answer as each test scripts."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from token_service.abdm.http1 import GatewayHttp, Unreachable

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
BODY = b'{"requestId":"r1"}'
HEADERS = {"REQUEST-ID": "r1", "Content-Type": "application/json", "Authorization": "Bearer abc"}


@dataclass
class Request:
    head: bytes
    body: bytes

    @property
    def lines(self) -> list[bytes]:
        return self.head.split(b"\r\n")


@dataclass
class Server:
    url: str
    connections: int = 0
    requests: list[Request] = field(default_factory=list)
    open_now: int = 0
    most_open: int = 0


Answer = Callable[[Server, Request, asyncio.StreamWriter], Awaitable[bool]]
"""Writes the answer to one request; returns whether to keep reading requests on the connection."""


async def answer_ok(_: Server, __: Request, writer: asyncio.StreamWriter) -> bool:
    writer.write(OK)
    return True


@asynccontextmanager
async def server(answer: Answer = answer_ok, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    srv = Server("")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        srv.connections += 1
        srv.open_now += 1
        srv.most_open = max(srv.most_open, srv.open_now)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                req = Request(head[:-4], await reader.readexactly(length))
                srv.requests.append(req)
                if not await answer(srv, req, writer):
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            srv.open_now -= 1
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    port = listener.sockets[0].getsockname()[1]
    srv.url = f"{'https' if tls else 'http'}://{'localhost' if tls else '127.0.0.1'}:{port}"
    try:
        yield srv
    finally:
        listener.close()


@pytest.fixture
async def client() -> AsyncIterator[GatewayHttp]:
    http = GatewayHttp()
    yield http
    await http.close()


async def test_requests_reuse_one_connection_and_are_written_whole(client: GatewayHttp) -> None:
    async with server() as srv:
        for _ in range(20):
            status, body = await client.request("POST", srv.url + "/api/on-share?x=1", BODY, HEADERS, 2.0)
            assert (status, body) == (200, b"{}")
        assert srv.connections == 1
        assert len(srv.requests) == 20
        req = srv.requests[0]
        port = srv.url.rsplit(":", 1)[1]
        assert req.lines[0] == b"POST /api/on-share?x=1 HTTP/1.1"
        assert f"Host: 127.0.0.1:{port}".encode() in req.lines
        assert f"Content-Length: {len(BODY)}".encode() in req.lines
        assert b"Authorization: Bearer abc" in req.lines and b"REQUEST-ID: r1" in req.lines
        assert req.body == BODY


async def test_chunked_answer_is_joined(client: GatewayHttp) -> None:
    async def chunked(_: Server, __: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in (b'{"error":', b'{"code":"ABDM-1017"}}'):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        return True

    async with server(chunked) as srv:
        assert await client.request("POST", srv.url + "/", BODY, {}, 2.0) == (
            400,
            b'{"error":{"code":"ABDM-1017"}}',
        )
        assert await client.request("POST", srv.url + "/", BODY, {}, 2.0) == (
            400,
            b'{"error":{"code":"ABDM-1017"}}',
        )
        assert srv.connections == 1


async def test_body_to_the_end_of_the_connection(client: GatewayHttp) -> None:
    async def until_close(_: Server, __: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nbusy, try again")
        return False

    async with server(until_close) as srv:
        assert await client.request("POST", srv.url + "/", BODY, {}, 2.0) == (503, b"busy, try again")
        assert await client.request("POST", srv.url + "/", BODY, {}, 2.0) == (503, b"busy, try again")
        assert srv.connections == 2  # an answer that ends with its connection leaves nothing to reuse
    assert client.connections == 0


async def test_connection_close_is_not_reused(client: GatewayHttp) -> None:
    async def closing(_: Server, __: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        return True  # the server would go on reading: the client must not send on it again

    async with server(closing) as srv:
        for _ in range(3):
            assert await client.request("POST", srv.url + "/", BODY, {}, 2.0) == (202, b"")
        assert srv.connections == 3


async def test_connection_closed_while_idle_is_not_used(client: GatewayHttp) -> None:
    async def then_close(_: Server, __: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(OK)
        await writer.drain()
        return False  # a keep-alive answer, then the server closes the connection on its own

    async with server(then_close) as srv:
        assert await client.request("POST", srv.url + "/", BODY, {}, 2.0) == (200, b"{}")
        await asyncio.sleep(0.05)
        assert await client.request("POST", srv.url + "/", BODY, {}, 2.0) == (200, b"{}")
        assert srv.connections == 2
        assert len(srv.requests) == 2


async def test_closed_before_answering_a_reused_connection_is_retried_once(client: GatewayHttp) -> None:
    """The server closed a kept-alive connection as the request went out on it (its idle timeout)."""

    async def close_second(srv: Server, __: Request, writer: asyncio.StreamWriter) -> bool:
        if len(srv.requests) == 2:
            return False  # closed without a byte of answer
        writer.write(OK)
        return True

    async with server(close_second) as srv:
        assert await client.request("POST", srv.url + "/", BODY, {}, 2.0) == (200, b"{}")
        assert await client.request("POST", srv.url + "/", BODY, {}, 2.0) == (200, b"{}")
        assert srv.connections == 2 and len(srv.requests) == 3


async def test_closed_before_answering_a_new_connection_is_not_retried(client: GatewayHttp) -> None:
    async def close(_: Server, __: Request, ___: asyncio.StreamWriter) -> bool:
        return False

    async with server(close) as srv:
        with pytest.raises(Unreachable, match="closed before an answer"):
            await client.request("POST", srv.url + "/", BODY, {}, 2.0)
        assert srv.connections == 1 and len(srv.requests) == 1


async def test_closed_during_the_answer_is_not_sent_again(client: GatewayHttp) -> None:
    async def cut_second(srv: Server, __: Request, writer: asyncio.StreamWriter) -> bool:
        if len(srv.requests) == 1:
            writer.write(OK)
            return True
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"par')
        return False

    async with server(cut_second) as srv:
        assert await client.request("POST", srv.url + "/", BODY, {}, 2.0) == (200, b"{}")
        with pytest.raises(Unreachable, match="closed during the answer") as caught:
            await client.request("POST", srv.url + "/", BODY, {}, 2.0)
        assert not caught.value.timed_out
        assert len(srv.requests) == 2  # the server may have acted on it: it is not sent again


async def test_no_answer_times_out_and_the_connection_is_dropped(client: GatewayHttp) -> None:
    async def silent(_: Server, __: Request, ___: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(5)
        return True

    async with server(silent) as srv:
        started = time.monotonic()
        with pytest.raises(Unreachable) as caught:
            await client.request("POST", srv.url + "/", BODY, {}, 0.2)
        assert caught.value.timed_out
        assert 0.15 < time.monotonic() - started < 1.0
        assert client.connections == 0


async def test_refused_connection_is_unreachable(client: GatewayHttp) -> None:
    async with server() as srv:
        url = srv.url
    with pytest.raises(Unreachable) as caught:
        await client.request("POST", url + "/", BODY, {}, 2.0)
    assert not caught.value.timed_out and caught.value.name == "ConnectionRefusedError"


async def test_an_answer_over_the_limit_is_refused() -> None:
    async def big(_: Server, __: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000)
        return True

    http = GatewayHttp(max_response_bytes=1000)
    try:
        async with server(big) as srv:
            with pytest.raises(Unreachable, match="over 1000 bytes"):
                await http.request("GET", srv.url + "/", b"", {}, 2.0)
            assert http.connections == 0
    finally:
        await http.close()


async def test_what_is_not_http_is_unreachable(client: GatewayHttp) -> None:
    async def garbage(_: Server, __: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        return True

    async with server(garbage) as srv:
        with pytest.raises(Unreachable, match="bad answer"):
            await client.request("POST", srv.url + "/", BODY, {}, 2.0)


async def test_interim_answer_is_skipped(client: GatewayHttp) -> None:
    async def early_hints(_: Server, __: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
        return True

    async with server(early_hints) as srv:
        assert await client.request("POST", srv.url + "/", BODY, {}, 2.0) == (200, b"{}")
        assert await client.request("POST", srv.url + "/", BODY, {}, 2.0) == (200, b"{}")
        assert srv.connections == 1


async def test_idle_connections_expire() -> None:
    http = GatewayHttp(idle_s=0.05)
    try:
        async with server() as srv:
            await http.request("POST", srv.url + "/", BODY, {}, 2.0)
            await http.request("POST", srv.url + "/", BODY, {}, 2.0)
            await asyncio.sleep(0.1)
            await http.request("POST", srv.url + "/", BODY, {}, 2.0)
            assert srv.connections == 2
    finally:
        await http.close()


async def test_at_most_limit_connections_at_once() -> None:
    async def slow(_: Server, __: Request, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.05)
        writer.write(OK)
        return True

    http = GatewayHttp(limit=3)
    try:
        async with server(slow) as srv:
            answers = await asyncio.gather(
                *(http.request("POST", srv.url + "/", BODY, {}, 5.0) for _ in range(12))
            )
            assert answers == [(200, b"{}")] * 12
            assert srv.connections == 3 and srv.most_open == 3
    finally:
        await http.close()


async def test_a_cancelled_request_leaves_no_connection_to_reuse(client: GatewayHttp) -> None:
    answered = asyncio.Event()

    async def first_slow(srv: Server, __: Request, writer: asyncio.StreamWriter) -> bool:
        if len(srv.requests) == 1:
            await asyncio.sleep(0.3)
        writer.write(OK)
        answered.set()
        return True

    async with server(first_slow) as srv:
        task = asyncio.create_task(client.request("POST", srv.url + "/", BODY, {}, 2.0))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The late answer to the cancelled request must not be taken for the next one's.
        assert await client.request("POST", srv.url + "/", BODY, {}, 2.0) == (200, b"{}")
        assert srv.connections == 2


async def test_line_breaks_in_headers_are_refused(client: GatewayHttp) -> None:
    async with server() as srv:
        with pytest.raises(ValueError, match="line break"):
            await client.request("POST", srv.url + "/", BODY, {"Authorization": "Bearer x\r\nX-Evil: 1"}, 2.0)
        assert srv.requests == []


async def test_tls(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    async with server(tls=server_tls) as srv:
        trusting = GatewayHttp(ssl_context=ssl.create_default_context(cadata=cert_pem.decode()))
        try:
            assert await trusting.request("POST", srv.url + "/", BODY, {}, 2.0) == (200, b"{}")
            assert await trusting.request("POST", srv.url + "/", BODY, {}, 2.0) == (200, b"{}")
            assert srv.connections == 1
        finally:
            await trusting.close()
        # The system's certificates do not vouch for a self-signed one.
        default = GatewayHttp()
        try:
            with pytest.raises(Unreachable, match="SSLCertVerificationError"):
                await default.request("POST", srv.url + "/", BODY, {}, 2.0)
        finally:
            await default.close()

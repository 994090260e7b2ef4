"""The benchmark's HTTP client reads answers however the server's bytes are split, and honours close."""

from __future__ import annotations

import asyncio

from bench.loadgen import HttpConn, encode

ANSWERS = [
    # (pieces the server writes, with a pause between them)
    [b"HTTP/1.1 202 Accepted\r\nContent-Len", b"gth: 5\r\n\r\nab", b"cde"],
    [b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"],
    [b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"],
    [b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nnew"],
]


async def test_split_answers_keep_alive_and_close() -> None:
    connections = 0
    served = iter(ANSWERS)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                pieces = next(served)
                for piece in pieces:
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.01)
                if b"Connection: close" in pieces[0]:
                    break
        except (asyncio.IncompleteReadError, StopIteration):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/x"
    conn = HttpConn(url)
    try:
        got = [await conn.send(encode("GET", url, {})) for _ in ANSWERS]
    finally:
        await conn.close()
        server.close()
        await server.wait_closed()
    assert got == [(202, b"abcde"), (200, b""), (404, b"{}"), (200, b"new")]
    assert connections == 2  # the answer that said "close" ended the first connection

"""Security headers on every response, proxy headers, rate limits, logout ends sessions, the daily purge."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

import httptools
from fastapi import FastAPI
from redis.exceptions import RedisError
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from token_service.api.auth import end_session
from token_service.ratelimit import RateLimits
from token_service.retention import purge_daily
from token_service.sessions import SESSION_ENDED
from token_service.state import AppState

log = logging.getLogger("token_service.security")

# Pages set their own, stricter set (CSP, COOP, Permissions-Policy: kiosk_ui.i18n.SECURITY_HEADERS);
# these are the floor for everything else, the JSON API, static files and error bodies included.
BASELINE: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
# JSON is data, never a document: if a browser is tricked into rendering it, nothing may run or load.
JSON_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


_BASELINE_RAW = [(name.lower().encode(), value.encode()) for name, value in BASELINE.items()]
_JSON_CSP_RAW = (b"content-security-policy", JSON_CSP.encode())
_NO_STORE_RAW = (b"cache-control", b"no-store")


def _with_baseline(raw: Iterable[tuple[bytes, bytes]], private: bool) -> list[tuple[bytes, bytes]]:
    """A response's raw headers with the baseline ones it lacks added (a header it sets itself wins)."""
    headers = list(raw)
    present = set()
    json = False
    for name, value in headers:
        name = name.lower()
        present.add(name)
        if name == b"content-type" and value.startswith(b"application/json"):
            json = True
    headers.extend(pair for pair in _BASELINE_RAW if pair[0] not in present)
    if json and _JSON_CSP_RAW[0] not in present:
        headers.append(_JSON_CSP_RAW)
    if private and _NO_STORE_RAW[0] not in present:
        headers.append(_NO_STORE_RAW)
    return headers


def _has_credentials(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"authorization" or (name == b"cookie" and b"opd_session=" in value):
            return True
    return False


class SecurityHeaders:
    """Adds the baseline headers a response lacks; ``Cache-Control: no-store`` on authenticated API answers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        # Shared caches and the browser's back button must never replay a patient's profile or a
        # session token; login answers carry the token even though the request had no credentials.
        private = path.startswith("/api/") and (_has_credentials(scope) or path.startswith("/api/auth/"))

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _with_baseline(message.get("headers", ()), private)
            await send(message)

        await self.app(scope, receive, with_headers)


MAX_HEAD_BYTES = 32 * 1024
_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"x-content-type-options: nosniff\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
)
_431_BODY = b'{"error":"header_too_large","detail":"request line and headers over %d bytes"}' % MAX_HEAD_BYTES


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's fast HTTP/1.1 protocol with a bound on the request head (line + headers).

    httptools buffers a header of any size (a 64 MB header is read into memory and handed to the
    app), so each connection could pin unbounded memory. A head that is still incomplete past the
    bound gets 431 and the connection is closed before more is buffered; a complete one that
    arrived in a single read and is over the bound is refused by the parser callback (400).
    Serve with ``uvicorn.Config(http=BoundedHttpToolsProtocol)``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # One attribute, not four: uvicorn sets 28, and an instance dict with over 30 keys stops
        # sharing its key table with the other connections' (1.5 KB more per connection).
        self._head = _HeadCount()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Every write of the connection, the protocol's own included, goes through it: they stay in order.
        self.transport = HeadWithBody(transport, self.loop)  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        head = self._head
        if head.pending:
            window = head.tail + data
            end = window.find(b"\r\n\r\n")
            seen = head.bytes + (len(data) if end < 0 else end + 4 - len(head.tail))
            if seen > MAX_HEAD_BYTES:
                self.transport.write(_431 % (len(_431_BODY), _431_BODY))
                self.transport.close()
                return
            head.pending = end < 0
            head.bytes, head.tail = (seen, window[-3:]) if end < 0 else (0, b"")
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head.parsed = 0

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self.transport.expect_head()  # type: ignore[attr-defined]

    def on_url(self, url: bytes) -> None:
        self._grow(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        head = self._head  # keep-alive: the next request's head
        head.pending, head.bytes, head.tail = True, 0, b""

    def _grow(self, n: int) -> None:
        # Pipelined heads and a whole head in one read bypass the byte count above; this catches them.
        self._head.parsed += n
        if self._head.parsed > MAX_HEAD_BYTES:
            raise httptools.HttpParserError("request head too large")


class HeadWithBody:
    """A connection's transport that sends a response's head in the same write as its body.

    uvicorn writes the status line and headers as soon as the app starts its response, and the body in
    a second write: two system calls and two TCP segments for a 72-byte acknowledgement, the peer woken
    twice. Here the first write after a request's head has been read (the response's head) is held;
    the next write, which for a whole response comes in the same step of its task, goes out with it.
    If none follows in this turn of the event loop (a stream's head, before its first event), the head
    is written at the end of the turn. Writes keep their order; closing writes what is held first.
    """

    __slots__ = ("_held", "_loop", "_transport", "_waiting")

    HOLD_MAX = 8192  # a larger first write is a body, not a head: it goes at once

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._waiting = 0  # responses whose head has not been written (pipelined requests: several)
        self._held: bytes | None = None

    def expect_head(self) -> None:
        self._waiting += 1

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.writelines((held, data))
        elif self._waiting and len(data) <= self.HOLD_MAX:
            self._waiting -= 1
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._waiting = max(0, self._waiting - 1)
            self._transport.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:  # get_extra_info, abort, pause_reading, ...
        return getattr(self._transport, name)


class _HeadCount:
    """How much of the current request's head a connection has seen."""

    __slots__ = ("bytes", "parsed", "pending", "tail")

    def __init__(self) -> None:
        self.pending = True  # the head has not been seen to end yet
        self.bytes = 0
        self.tail = b""  # the last bytes of the previous read: a CRLFCRLF may straddle two reads
        self.parsed = 0  # request line and headers delivered by the parser


def _session_cookie(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"cookie" and b"opd_session=" in value:
            return cookie_parser(value.decode("latin-1")).get("opd_session") or None
    return None


def _clears_session(message: Message) -> bool:
    for name, value in message.get("headers", ()):
        if name == b"set-cookie" and value.startswith(b"opd_session=") and b"max-age=0" in value.lower():
            return True
    return False


class EndSessionOnLogout:
    """A response that clears the session cookie ends, on the server, the session the request carried.

    The pages' logout form only clears the cookie; without this a copy of the token would keep working
    until it expires. The API logout ends its session itself (and says so in the scope state).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        credential = _session_cookie(scope) if scope["type"] == "http" and scope["method"] == "POST" else None
        if credential is None:
            await self.app(scope, receive, send)
            return

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and _clears_session(message):
                state: AppState | None = getattr(scope["app"].state, "opd", None)
                if state is not None and not scope.get("state", {}).get(SESSION_ENDED):
                    try:
                        await end_session(state, credential)
                    except (RedisError, OSError) as exc:
                        log.error("logout: the session could not be ended on the server (%r)", exc)
            await send(message)

        await self.app(scope, receive, watch)


def install(app: FastAPI) -> None:
    app.add_middleware(EndSessionOnLogout)
    # Added last, so outermost: the 429s of the limiter and the 403s of the CSRF guard get headers too.
    app.add_middleware(RateLimits)
    app.add_middleware(SecurityHeaders)
    trusted = app.state.settings.forwarded_allow_ips.strip()
    if trusted:
        # Outermost of all: behind a reverse proxy the client address (rate limits, login lockouts) is
        # taken from X-Forwarded-For, but only when the peer is one of the configured proxies.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=trusted)
    tasks: list[asyncio.Task[None]] = []

    async def start_purge(state: AppState) -> None:
        tasks.append(asyncio.create_task(purge_daily(state), name="retention-purge"))

    async def stop_purge(state: AppState) -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        tasks.clear()

    app.state.startup_hooks.append(start_purge)
    app.state.shutdown_hooks.append(stop_purge)

"""Hostile bytes against a real `opd-token serve`: deep JSON, bad UTF-8, huge bodies and headers; no 5xx."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.app import HIP, PASSWORD, ServiceProc, make_settings, seed
from tests.support.servers import RedisProc

DEPTH = 10_000


BOUNDED = "token_service.security:BoundedHttpToolsProtocol"
_SERVE = (
    "import sys, uvicorn; uvicorn.run('token_service.app:create_app', factory=True, host='127.0.0.1', "
    "port=int(sys.argv[1]), http=sys.argv[2], log_level='warning', access_log=False)"
)


class BoundedServer(ServiceProc):
    """The real app in a real uvicorn process, served with the bounded HTTP/1.1 protocol."""

    def start(self, timeout: float = 30.0) -> BoundedServer:
        self.log = Path(self.settings.data_dir) / f"uvicorn-{self.port}.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _SERVE, str(self.port), BOUNDED], env=self.env(), stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise TimeoutError(self.log.read_text()[-2000:])


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, redis_proc: RedisProc
) -> Iterator[tuple[ServiceProc, dict[str, str]]]:
    # Its own Redis database: the per-test flush of the shared one would pull the queue from under it.
    settings = make_settings(tmp_path_factory.mktemp("bad-input"), redis_proc.url.removesuffix("/0") + "/3")
    seed(settings)
    proc = BoundedServer(settings).start()
    r = httpx.post(proc.url + "/api/auth/login", json={"username": "admin", "password": PASSWORD}, timeout=10)
    try:
        yield proc, {"Authorization": f"Bearer {r.json()['access_token']}"}
    finally:
        proc.stop()


def _raw(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes as they are (no client library would send most of these) and read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b"connection: close" in b"".join(chunks).lower():
                break
    return b"".join(chunks)


def _status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


def _alive(proc: ServiceProc) -> None:
    assert httpx.get(proc.url + "/readyz", timeout=10).status_code == 200


WRITE_PATHS = (
    "/api/auth/login",
    f"/api/facilities/{HIP}/counters/OPD1/tokens",
    f"/api/facilities/{HIP}/counters/OPD1/call-next",
    f"/api/tokens/{HIP}.OPD1.20261122.00001/transfer",
    "/api/v3/hip/patient/share",
    "/v1.0/patients/profile/share",
    f"/api/admin/facilities/{HIP}/counters",
    f"/api/admin/facilities/{HIP}/users",
)


@pytest.mark.parametrize("shape", ["array", "object"])
def test_deeply_nested_json_is_a_clean_4xx(service: tuple[ServiceProc, dict[str, str]], shape: str) -> None:
    proc, admin = service
    body = ("[" * DEPTH + "]" * DEPTH) if shape == "array" else ('{"a":' * DEPTH + "1" + "}" * DEPTH)
    assert len(body) < 64 * 1024  # under the body limit: it reaches the JSON parser
    with httpx.Client(base_url=proc.url, timeout=30) as c:
        for path in WRITE_PATHS:
            r = c.post(path, content=body, headers={**admin, "Content-Type": "application/json"})
            assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:300])
            assert r.json()["error"], path
        r = c.patch(
            f"/api/admin/facilities/{HIP}/settings",
            content=body,
            headers={**admin, "Content-Type": "application/json"},
        )
        assert 400 <= r.status_code < 500
    _alive(proc)


def test_invalid_utf8_anywhere_is_a_clean_4xx(service: tuple[ServiceProc, dict[str, str]]) -> None:
    proc, admin = service
    bodies = (
        b'{"username": "\xff\xfe\xfd", "password": "x"}',
        b"\xef\xbb\xbf\xc3\x28{}",
        b'{"name": "\xed\xa0\x80"}',
    )
    with httpx.Client(base_url=proc.url, timeout=30) as c:
        for path in WRITE_PATHS:
            for body in bodies:
                r = c.post(path, content=body, headers={**admin, "Content-Type": "application/json"})
                assert 400 <= r.status_code < 500, (path, body, r.status_code, r.text[:300])
        r = c.post(
            "/login",
            content=b"username=\xff\xfe&password=\xc3\x28",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert 400 <= r.status_code < 500
    token = admin["Authorization"].encode()
    for request in (
        b"GET /t/\xff\xfe\xfd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /api/status/%FF%FE%FD HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /api/tokens/%C0%AF.OPD1.20261122.00001 HTTP/1.1\r\nHost: x\r\nAuthorization: "
        + token
        + b"\r\nConnection: close\r\n\r\n",
        b"GET /api/auth/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n",
        b"GET /api/auth/me HTTP/1.1\r\nHost: x\r\nCookie: opd_session=\xff\xfe; opd_csrf=\xc3\x28\r\nConnection: close\r\n\r\n",
        b"GET /board/"
        + HIP.encode()
        + b"?lang=\xff&counters=%FF HTTP/1.1\r\nHost: x\r\nAccept-Language: \xff\xfe\r\nConnection: close\r\n\r\n",
    ):
        status = _status(_raw(proc.port, request))
        assert status < 500, (request, status)
    _alive(proc)


def test_oversized_bodies_are_413(service: tuple[ServiceProc, dict[str, str]]) -> None:
    proc, admin = service
    huge = b'{"name": "' + b"x" * (1024 * 1024) + b'"}'
    with httpx.Client(base_url=proc.url, timeout=30) as c:
        r = c.post(
            f"/api/facilities/{HIP}/counters/OPD1/tokens",
            content=huge,
            headers={**admin, "Content-Type": "application/json"},
        )
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"

    _alive(proc)


def _chunks() -> Iterator[bytes]:
    """1 MiB with no Content-Length: the limit must hold while the body streams in."""
    for _ in range(64):
        yield b"x" * 16384


def test_unauthenticated_share_is_refused_before_its_body(
    service: tuple[ServiceProc, dict[str, str]],
) -> None:
    proc, _ = service
    r = httpx.post(proc.url + "/api/v3/hip/patient/share", content=_chunks(), timeout=30,
                   headers={"Content-Type": "application/json"})  # fmt: skip
    assert r.status_code in (401, 413)
    _alive(proc)


def test_chunked_oversized_body_is_413(service: tuple[ServiceProc, dict[str, str]]) -> None:
    proc, admin = service
    r = httpx.post(proc.url + f"/api/facilities/{HIP}/counters/OPD1/tokens", content=_chunks(), timeout=30,
                   headers={**admin, "Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"


def test_huge_and_many_headers_are_refused_without_a_crash(
    service: tuple[ServiceProc, dict[str, str]],
) -> None:
    proc, _ = service
    big = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (64 * 1024) + b"\r\nConnection: close\r\n\r\n"
    )
    assert _status(_raw(proc.port, big)) in (400, 431)
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(5000))
    assert _status(
        _raw(proc.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"Connection: close\r\n\r\n")
    ) in (400, 431)
    cookie = (
        b"GET /api/auth/me HTTP/1.1\r\nHost: x\r\nCookie: "
        + b"a=b; " * 12000
        + b"\r\nConnection: close\r\n\r\n"
    )
    assert _status(_raw(proc.port, cookie)) in (400, 401, 431)
    garbage = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(
        range(256)
    )  # a TLS hello on the plain port
    answer = _raw(proc.port, garbage)
    assert answer == b"" or _status(answer) == 400
    _alive(proc)


def test_opd_token_serve_bounds_the_request_head(tmp_path: Path, redis_proc: RedisProc) -> None:
    settings = make_settings(tmp_path, redis_proc.url.removesuffix("/0") + "/4")
    seed(settings)
    proc = ServiceProc(settings).start()
    try:
        big = (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
            + b"a" * (64 * 1024)
            + b"\r\nConnection: close\r\n\r\n"
        )
        assert _status(_raw(proc.port, big)) in (400, 431)
    finally:
        proc.stop()


def test_huge_query_strings_and_paths(service: tuple[ServiceProc, dict[str, str]], tmp_path: Path) -> None:
    proc, admin = service
    with httpx.Client(base_url=proc.url, timeout=30) as c:
        for path in (
            "/api/status/" + "a" * 8000,
            "/t/" + "%00" * 2000,
            f"/api/admin/facilities/{HIP}/audit?limit=" + "9" * 5000,
            f"/api/admin/facilities/{HIP}/audit?before=-1&limit=-5",
            f"/api/admin/facilities/{HIP}/reports/daily?date=" + "2026-13-45",
            f"/api/admin/facilities/{HIP}/reports/daily?date=99999-01-01",
            f"/api/facilities/{'x' * 3000}/board",
            f"/api/tokens/{'.' * 200}",
        ):
            r = c.get(path, headers=admin)
            assert r.status_code < 500, (path[:80], r.status_code, r.text[:300])
    _alive(proc)

"""Run the service for tests: in-process over ASGI (with lifespan) or as a real `opd-token serve` process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Session

from tests.support.servers import free_port, wait_port
from token_service.app import create_app
from token_service.auth import hash_password, new_device_token
from token_service.clock import Clock
from token_service.config import Settings
from token_service.models import Counter, Desk, Device, Facility, User
from token_service.queue.service import FacilityRules, TokenQueue
from token_service.queue.status import Source
from token_service.records.db import async_engine, migrate, sync_engine
from token_service.records.writer import SqlWriter

HIP = "IN0710000123"
PASSWORD = "correct-horse-1"


@asynccontextmanager
async def running_writer(settings: Settings) -> AsyncIterator[tuple[AsyncEngine, SqlWriter]]:
    """A migrated database and a started writer on it, closed afterwards."""
    migrate(settings)
    engine = async_engine(settings)
    writer = SqlWriter(engine)
    writer.start()
    try:
        yield engine, writer
    finally:
        await writer.close()
        await engine.dispose()


async def seconds_until_recorded(queue: TokenQueue, engine: AsyncEngine, hip_id: str) -> float:
    """Issue a walk-in token and wait (up to 5 s) for a running recorder to copy its event into the
    empty history; the seconds that took."""
    await queue.issue(hip_id, "OPD1", FacilityRules(validity_s=3600), prefix="A", source=Source.WALK_IN)
    issued = time.monotonic()
    copied = 0
    while not copied and time.monotonic() - issued < 5:
        await asyncio.sleep(0.05)
        async with engine.connect() as conn:
            copied = (await conn.execute(text("SELECT count(*) FROM token_event"))).scalar_one()
    assert copied == 1
    return time.monotonic() - issued


def make_settings(data_dir: Path, redis_url: str, database_url: str = "", **extra: object) -> Settings:
    return Settings(
        data_dir=data_dir, redis_url=redis_url, database_url=database_url,
        secret_key_value="test-secret-key-please-change-0123456789", **extra,
    )  # fmt: skip


@dataclass
class Seed:
    """What `seed()` created: facility HIP with counters OPD1 (prefix A), OPD2 (B), ORTHO (C)."""

    hip_id: str = HIP
    counters: tuple[str, ...] = ("OPD1", "OPD2", "ORTHO")
    desks: dict[str, list[str]] = field(
        default_factory=lambda: {"D1": ["OPD1"], "D2": ["OPD1", "OPD2"], "D3": ["ORTHO"]}
    )
    users: dict[str, str] = field(
        default_factory=lambda: {"admin": "admin", "clerk": "clerk", "ortho": "clerk"}
    )
    devices: dict[str, str] = field(default_factory=dict)  # name -> token


def seed(settings: Settings, *, timezone: str = "Asia/Kolkata", validity_seconds: int | None = None,
         languages: Sequence[str] = ("hi", "en"),
         devices: Iterable[tuple[str, str]] = (("board1", "board"), ("kiosk1", "kiosk"), ("printer1", "printer"))) -> Seed:  # fmt: skip
    """Create a facility with three counters, three desks, users admin/clerk/ortho and devices."""
    migrate(settings)
    s = Seed()
    with Session(sync_engine(settings)) as db:
        db.add(Facility(hip_id=HIP, name="District Hospital Patna",
                        names={"en": "District Hospital Patna", "hi": "जिला अस्पताल पटना"},
                        timezone=timezone, languages=list(languages), validity_seconds=validity_seconds))  # fmt: skip
        db.flush()
        for code, prefix, name, hi in (("OPD1", "A", "General OPD", "सामान्य ओपीडी"), ("OPD2", "B", "Medicine", "मेडिसिन"),
                                       ("ORTHO", "C", "Orthopaedics", "हड्डी रोग")):  # fmt: skip
            db.add(Counter(hip_id=HIP, code=code, name=name, names={"en": name, "hi": hi}, prefix=prefix))
        for code, counters in s.desks.items():
            db.add(Desk(hip_id=HIP, code=code, name=f"Desk {code[1:]}", counters=counters))
        db.add(
            User(
                username="admin", password_hash=hash_password(PASSWORD), role="admin", hip_id=HIP, counters=[]
            )
        )
        db.add(User(username="clerk", password_hash=hash_password(PASSWORD), role="clerk", hip_id=HIP,
                    counters=["OPD1", "OPD2"]))  # fmt: skip
        db.add(User(username="ortho", password_hash=hash_password(PASSWORD), role="clerk", hip_id=HIP,
                    counters=["ORTHO"]))  # fmt: skip
        for name, kind in devices:
            token, token_hash = new_device_token()
            db.add(Device(hip_id=HIP, name=name, kind=kind, token_hash=token_hash,
                          printer="printer1" if kind == "kiosk" else None))  # fmt: skip
            s.devices[name] = token
        db.commit()
    return s


@asynccontextmanager
async def running_app(
    settings: Settings, clock: Clock | None = None
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app in-process with its lifespan, and an httpx client speaking ASGI to it."""
    app = create_app(settings, clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield app, client


async def login(client: httpx.AsyncClient, username: str) -> dict[str, str]:
    r = await client.post("/api/auth/login", json={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@dataclass
class ServiceProc:
    """`opd-token serve` as a real child process (kill -9 and restart it in fault tests)."""

    settings: Settings
    workers: int = 1
    port: int = field(default_factory=free_port)
    env_extra: dict[str, str] = field(default_factory=dict)
    preexec: Callable[[], None] | None = None  # run in the child before it starts (limits, say)
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPD_")}
        env.update(
            OPD_DATA_DIR=str(self.settings.data_dir), OPD_REDIS_URL=self.settings.redis_url,
            OPD_DATABASE_URL=self.settings.database_url, OPD_SECRET_KEY=self.settings.secret_key,
            OPD_ABDM_GATEWAY_URL=self.settings.abdm_gateway_url, OPD_PUBLIC_BASE_URL=self.url,
        )  # fmt: skip
        env.update(self.env_extra)
        return env

    def start(self, timeout: float = 30.0) -> ServiceProc:
        self.log = Path(self.settings.data_dir) / f"service-{self.port}.log"
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "token_service.cli", "serve", "--port", str(self.port),
                 "--workers", str(self.workers)],
                env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=self.preexec,
            )  # fmt: skip
        wait_port(self.port, timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"service not ready; log: {self.log.read_text()[-2000:]}")

    def kill9(self) -> None:
        """SIGKILL the whole process group (supervisor and workers), as a power cut would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()

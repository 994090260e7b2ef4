"""`opd-token sandbox` (a local ABDM gateway, `sandbox scan`) and `opd-token demo` (everything, one command)."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Annotated, Literal

import httpx
import typer
import uvicorn

from token_service.config import Settings

sandbox_app = typer.Typer(
    help="A local stand-in for the ABDM gateway: sessions, JWKS, on-share receiver, signed shares.",
    invoke_without_command=True,
)

DEMO_HIP = "IN0000000001"
DEMO_COUNTERS = (
    ("OPD1", "A", "General OPD", "सामान्य ओपीडी", "જનરલ ઓપીડી"),
    ("OPD2", "B", "Medicine", "मेडिसिन", "મેડિસિન"),
    ("ORTHO", "C", "Orthopaedics", "हड्डी रोग", "હાડકાં વિભાગ"),
)
DEMO_DESKS = {"D1": ["OPD1"], "D2": ["OPD1", "OPD2"], "D3": ["ORTHO"]}
DEMO_PATIENTS = (
    ("ramesh.k1979@sbx", "Ramesh Kumar", "M", 1979),
    ("sita.devi@sbx", "सीता देवी", "F", 1958),
    ("mohammed.irfan@sbx", "Mohammed Irfan", "M", 1991),
    ("priya.patel@sbx", "પ્રિયા પટેલ", "F", 1988),
    ("anita.sharma@sbx", "अनीता शर्मा", "F", 1972),
    ("gurpreet.s@sbx", "Gurpreet Singh", "M", 1949),
    ("lakshmi.n@sbx", "Lakshmi Narayanan", "F", 2001),
    ("arjun.yadav@sbx", "अर्जुन यादव", "M", 1995),
)


def _key_path(settings: Settings) -> Path:
    # In the data dir so a restarted sandbox keeps its kid and services keep trusting it.
    return settings.data_dir / "sandbox-key.pem"


@sandbox_app.callback()
def sandbox(
    ctx: typer.Context,
    port: Annotated[int, typer.Option("--port", help="port to listen on")] = 9009,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
) -> None:
    """Run the sandbox gateway (page at /, API at /docs). Point OPD_ABDM_GATEWAY_URL at it."""
    if ctx.invoked_subcommand is not None:
        return
    from token_service.abdm.sandbox import run_sandbox

    s = Settings()
    typer.echo(f"ABDM gateway sandbox on http://{host}:{port}  (on-shares: /, API: /docs)")
    run_sandbox(
        host, port, key_path=_key_path(s), client_id=s.abdm_client_id or None,
        client_secret=s.abdm_client_secret or None, log_level="warning",
    )  # fmt: skip


@sandbox_app.command("scan")
def sandbox_scan(
    hip_id: Annotated[str, typer.Option("--hip-id")],
    counter: Annotated[str, typer.Option("--counter", help="counter code (the QR's counter-id)")],
    abha_address: Annotated[str, typer.Option("--abha-address")],
    version: Annotated[str, typer.Option("--version", help="v3, v1 or v0.5")] = "v3",
    name: Annotated[str, typer.Option("--name")] = "Ramesh Kumar",
    target: Annotated[
        str | None, typer.Option("--target", help="HIP base URL (default OPD_PUBLIC_BASE_URL)")
    ] = None,
    sandbox_url: Annotated[
        str | None, typer.Option("--sandbox", help="a running sandbox sends it (and shows the on-share)")
    ] = None,
    request_id: Annotated[
        str | None, typer.Option("--request-id", help="repeat one to test re-delivery")
    ] = None,
) -> None:
    """Post one signed profile share to a HIP, exactly as the gateway does after a patient taps Share."""
    if version not in ("v3", "v1", "v0.5"):
        raise typer.BadParameter("--version takes v3, v1 or v0.5")
    s = Settings()
    target = target or s.public_base_url
    share = {"version": version, "hip_id": hip_id, "counter": counter, "abha_address": abha_address, "name": name,
             "target": target, "request_id": request_id}  # fmt: skip
    try:
        if sandbox_url:
            r = httpx.post(sandbox_url.rstrip("/") + "/api/shares", json=share, timeout=15)
            answer = r.json()
            if r.status_code != 200:
                typer.secho(
                    f"error: sandbox answered {r.status_code}: {answer}", err=True, fg=typer.colors.RED
                )
                raise typer.Exit(2)
            status, rid = int(answer["status"]), str(answer["requestId"])
        else:
            status, rid = _post_locally(s, share)
    except httpx.HTTPError as exc:
        typer.secho(f"error: cannot reach {sandbox_url or target}: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    typer.echo(f"HIP answered {status} for REQUEST-ID {rid}")
    if not 200 <= status < 300:
        raise typer.Exit(1)


def _post_locally(s: Settings, share: dict[str, str | None]) -> tuple[int, str]:
    from token_service.abdm.sandbox_state import SandboxState

    state = SandboxState.create(_key_path(s))
    version: Literal["v3", "v1", "v0.5"] = share["version"]  # type: ignore[assignment]
    return asyncio.run(
        state.post_share(
            str(share["target"]), version, str(share["hip_id"]), str(share["counter"]),
            str(share["abha_address"]), name=str(share["name"]), request_id=share["request_id"],
        )
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_secret(path: Path, value: str) -> None:
    """Write `value` to `path`, readable by its owner only from the moment it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fd, 0o600)  # a file that existed keeps its mode through O_CREAT
        fh.write(value)


def _secret_file(path: Path, make: str) -> tuple[str, bool]:
    """The value stored at `path`, written (mode 0600) with `make` the first time; (value, created)."""
    if path.exists():
        return path.read_text(encoding="utf-8").strip(), False
    _write_secret(path, make)
    return make, True


DEMO_DEVICES = (("demo-board", "board"), ("demo-kiosk", "kiosk"))


def seed_demo(s: Settings) -> dict[str, str]:
    """Create (once) the demo facility, counters, desks, users, a board and a kiosk device; returns the
    password and each device's token (`board_token`, `kiosk_token`), kept in the data directory."""
    from sqlmodel import Session, select

    from token_service.auth import hash_password, new_device_token
    from token_service.models import Counter, Desk, Device, Facility, User
    from token_service.records.db import migrate, sync_engine

    migrate(s)
    password, _ = _secret_file(s.data_dir / "demo-password.txt", "demo-" + secrets.token_hex(4))
    engine = sync_engine(s)
    with Session(engine) as db:
        if db.get(Facility, DEMO_HIP) is None:
            db.add(Facility(hip_id=DEMO_HIP, name="Demo District Hospital",
                            names={"en": "Demo District Hospital", "hi": "डेमो ज़िला अस्पताल",
                                   "gu": "ડેમો જિલ્લા હોસ્પિટલ"}, languages=["hi", "gu", "en"]))  # fmt: skip
            db.flush()
        for code, prefix, name, hi, gu in DEMO_COUNTERS:
            if (
                db.exec(select(Counter).where(Counter.hip_id == DEMO_HIP, Counter.code == code)).first()
                is None
            ):
                db.add(Counter(hip_id=DEMO_HIP, code=code, name=name, names={"en": name, "hi": hi, "gu": gu},
                               prefix=prefix, department=name))  # fmt: skip
        for code, counters in DEMO_DESKS.items():
            if db.exec(select(Desk).where(Desk.hip_id == DEMO_HIP, Desk.code == code)).first() is None:
                db.add(Desk(hip_id=DEMO_HIP, code=code, name=f"Desk {code[1:]}", counters=counters))
        for username, role in (("admin", "admin"), ("clerk", "clerk")):
            if db.exec(select(User).where(User.username == username)).first() is None:
                db.add(
                    User(username=username, password_hash=hash_password(password), role=role, hip_id=DEMO_HIP)
                )
        fresh: dict[Path, str] = {}
        for name, kind in DEMO_DEVICES:
            # Only a device token's hash is stored: the token itself is kept beside the password for the
            # next start. A device whose token file is gone gets a new token (the old one stops working).
            token_file = s.data_dir / f"{name}-token.txt"
            device = db.exec(select(Device).where(Device.hip_id == DEMO_HIP, Device.name == name)).first()
            if device is None or not token_file.exists():
                token, token_hash = new_device_token()
                if device is None:
                    device = Device(hip_id=DEMO_HIP, name=name, kind=kind, token_hash=token_hash)
                else:
                    device.token_hash = token_hash  # its token file is gone: a new token replaces it
                db.add(device)
                fresh[token_file] = token
        db.commit()
    engine.dispose()
    for token_file, token in fresh.items():
        _write_secret(token_file, token)
    creds = {"password": password}
    for name, kind in DEMO_DEVICES:
        creds[f"{kind}_token"] = (s.data_dir / f"{name}-token.txt").read_text(encoding="utf-8").strip()
    return creds


class _SandboxThread:
    """The sandbox gateway served from a thread of the demo process, on a free loopback port."""

    def __init__(self, key_path: Path) -> None:
        from token_service.abdm.sandbox import create_sandbox_app
        from token_service.abdm.sandbox_state import SandboxState

        self.state = SandboxState.create(key_path)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_sandbox_app(self.state), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="sandbox", daemon=True)

    def start(self) -> _SandboxThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)


def _simulate(
    sandbox: _SandboxThread, service_url: str, scans: int, interval: float, stop: threading.Event
) -> None:
    """Simulated patients scanning the counter posters; some scan twice (they get the same token)."""
    deadline = time.monotonic() + 60
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            if httpx.get(service_url + "/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        stop.wait(0.3)
    rng = random.Random()
    for n in range(scans):
        if stop.wait(interval if n else 1.0):
            return
        abha, name, gender, year = rng.choice(DEMO_PATIENTS)
        counter = rng.choice(DEMO_COUNTERS)[0]
        version: Literal["v3", "v1"] = "v3" if rng.random() < 0.8 else "v1"
        try:
            status, _ = asyncio.run(
                sandbox.state.post_share(service_url, version, DEMO_HIP, counter, abha, name=name, gender=gender,
                                         year_of_birth=year)
            )  # fmt: skip
            typer.echo(f"scan {n + 1}/{scans}: {name} at {counter} ({version}) → HIP answered {status}")
        except httpx.HTTPError as exc:
            typer.echo(f"scan {n + 1}/{scans}: service unreachable ({type(exc).__name__})")


def demo(
    port: Annotated[int, typer.Option("--port", help="service port")] = 8000,
    scans: Annotated[int, typer.Option("--scans", min=0, help="simulated patient scans to post")] = 12,
    interval: Annotated[float, typer.Option("--interval", min=0.2, help="seconds between scans")] = 4.0,
) -> None:
    """Serve a demo facility with a local gateway sandbox and simulated scans; prints the URLs to open."""
    from token_service.cli import run_service

    s = Settings()
    creds = seed_demo(s)
    sandbox = _SandboxThread(_key_path(s)).start()
    service_url = f"http://127.0.0.1:{port}"
    # The service reads its settings from the environment: point it at the sandbox and at itself.
    os.environ.update(OPD_ABDM_GATEWAY_URL=sandbox.url, OPD_PUBLIC_BASE_URL=service_url)
    os.environ.pop("OPD_ABDM_JWKS_URL", None)
    lines = [
        "", "OPD token demo — open these:",
        f"  API docs        {service_url}/docs",
        f"  display board   {service_url}/board/{DEMO_HIP}",
        f"  clerk console   {service_url}/console      (user clerk or admin, password {creds['password']})",
        f"  admin           {service_url}/admin",
        f"  walk-in kiosk   {service_url}/kiosk/{DEMO_HIP}?device={creds['kiosk_token']}",
        f"  gateway sandbox {sandbox.url}/            (on-shares the service sent)",
        f"  board device token: {creds['board_token']}",
        f"Posting {scans} simulated scans, one every {interval:g} s. Ctrl-C stops everything.", "",
    ]  # fmt: skip
    typer.echo("\n".join(lines))
    stop = threading.Event()
    simulator = threading.Thread(
        target=_simulate, args=(sandbox, service_url, scans, interval, stop), name="scans", daemon=True
    )
    simulator.start()
    try:
        run_service("127.0.0.1", port, 1)
    finally:
        stop.set()
        simulator.join(5)
        sandbox.stop()
        typer.echo("demo stopped")


def register(app: typer.Typer) -> None:
    app.add_typer(sandbox_app, name="sandbox")
    app.command("demo")(demo)

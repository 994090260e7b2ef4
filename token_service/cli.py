"""`opd-token`: run the service and administer facilities, counters, desks, users and devices."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from datetime import date
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from token_service.auth import DEVICE_KINDS, ROLES, hash_password, new_device_token
from token_service.config import Settings
from token_service.listen import REUSEPORT, WorkerListeners, listener, raise_open_files
from token_service.models import Counter, Desk, Device, Facility, User

app = typer.Typer(
    help="OPD token queue for ABDM Scan & Share.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
facility_app = typer.Typer(help="Facilities (hospitals, by HFR id).", no_args_is_help=True)
counter_app = typer.Typer(help="Counters (ABDM counter codes) and their QR posters.", no_args_is_help=True)
user_app = typer.Typer(help="Staff users.", no_args_is_help=True)
device_app = typer.Typer(help="Boards, kiosks and printers.", no_args_is_help=True)
app.add_typer(facility_app, name="facility")
app.add_typer(counter_app, name="counter")
app.add_typer(user_app, name="user")
app.add_typer(device_app, name="device")

CODE_RE = re.compile(r"^[A-Za-z0-9]{1,20}$")
HIP_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def fail(message: str) -> typer.Exit:
    """One clear line on stderr and a non-zero exit, never a traceback."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def settings() -> Settings:
    return Settings()


def session() -> Session:
    from token_service.records.db import migrate, sync_engine

    s = settings()
    migrate(s)
    return Session(sync_engine(s))


def _facility(db: Session, hip_id: str) -> Facility:
    facility = db.get(Facility, hip_id)
    if facility is None:
        raise fail(f"unknown facility {hip_id!r}; add it first with `opd-token facility add`")
    return facility


def _names(pairs: list[str] | None, english: str) -> dict[str, str]:
    names = {"en": english}
    for pair in pairs or []:
        lang, sep, text = pair.partition("=")
        if not sep or not lang.isalpha() or not text.strip():
            raise fail(f"--name-local takes LANG=TEXT, e.g. hi=सामान्य ओपीडी (got {pair!r})")
        names[lang.lower()] = text.strip()
    return names


@facility_app.command("add")
def facility_add(
    hip_id: Annotated[str, typer.Option("--hip-id", help="HFR facility id (= ABDM HIP id)")],
    name: Annotated[str, typer.Option("--name", help="Name in English")],
    timezone: Annotated[str, typer.Option("--timezone")] = "Asia/Kolkata",
    name_local: Annotated[
        list[str] | None, typer.Option("--name-local", help="LANG=NAME, repeatable")
    ] = None,
    languages: Annotated[str, typer.Option("--languages", help="call-out/slip languages in order")] = "hi,en",
) -> None:
    """Add a facility."""
    if not HIP_RE.match(hip_id):
        raise fail("--hip-id takes 1-64 letters, digits, '-' or '_'")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise fail(f"invalid timezone {timezone!r} (use an IANA name such as Asia/Kolkata)") from None
    langs = [x.strip() for x in languages.split(",") if x.strip()]
    with session() as db:
        if db.get(Facility, hip_id) is not None:
            raise fail(f"facility {hip_id} already exists")
        db.add(
            Facility(
                hip_id=hip_id, name=name, names=_names(name_local, name), timezone=timezone, languages=langs
            )
        )
        db.commit()
    typer.echo(f"facility {hip_id} added ({name}, {timezone})")


@counter_app.command("add")
def counter_add(
    hip_id: Annotated[str, typer.Option("--hip-id")],
    code: Annotated[str, typer.Option("--code", help="ABDM counter code: 1-20 letters/digits")],
    name: Annotated[str, typer.Option("--name")],
    desk: Annotated[
        list[str] | None, typer.Option("--desk", help="desk(s) serving it; default: one desk named CODE")
    ] = None,
    prefix: Annotated[str, typer.Option("--prefix", help="token label prefix, e.g. A → A17")] = "",
    department: Annotated[str, typer.Option("--department")] = "",
    name_local: Annotated[
        list[str] | None, typer.Option("--name-local", help="LANG=NAME, repeatable")
    ] = None,
) -> None:
    """Add a counter (and its desks)."""
    if not CODE_RE.match(code):
        raise fail("--code takes 1-20 letters or digits")
    if code == hip_id:
        raise fail("the counter code must differ from the HIP id (ABDM rule)")
    if prefix and not re.match(r"^[A-Za-z0-9-]{1,8}$", prefix):
        raise fail("--prefix takes up to 8 letters, digits or '-'")
    desks = desk or [code]
    for d in desks:
        if not CODE_RE.match(d):
            raise fail(f"desk code {d!r} must be 1-20 letters or digits")
    with session() as db:
        _facility(db, hip_id)
        if db.exec(select(Counter).where(Counter.hip_id == hip_id, Counter.code == code)).first():
            raise fail(f"counter {code} already exists at {hip_id}")
        db.add(Counter(hip_id=hip_id, code=code, name=name, names=_names(name_local, name), prefix=prefix,
                       department=department))  # fmt: skip
        for d in desks:
            row = db.exec(select(Desk).where(Desk.hip_id == hip_id, Desk.code == d)).first()
            if row is None:
                db.add(Desk(hip_id=hip_id, code=d, name=f"Desk {d}", counters=[code]))
            elif code not in row.counters:
                row.counters = [*row.counters, code]
                db.add(row)
        db.commit()
    typer.echo(f"counter {code} added at {hip_id} (desks: {', '.join(desks)})")


@counter_app.command("qr")
def counter_qr(
    hip_id: Annotated[str, typer.Option("--hip-id")],
    code: Annotated[str, typer.Option("--code")],
    out: Annotated[Path, typer.Option("--out", help=".png, .svg or .pdf (A4 poster)")],
) -> None:
    """Write the counter's Scan & Share QR (PNG, SVG) or its A4 poster (PDF)."""
    from token_service.posters import counter_artifact

    suffix = out.suffix.lower()
    if suffix not in (".png", ".svg", ".pdf"):
        raise fail("--out must end in .png, .svg or .pdf")
    with session() as db:
        facility = _facility(db, hip_id)
        counter = db.exec(select(Counter).where(Counter.hip_id == hip_id, Counter.code == code)).first()
        if counter is None:
            raise fail(f"unknown counter {code!r} at {hip_id}")
        data = counter_artifact(settings(), facility, counter, suffix.lstrip("."))
    out.write_bytes(data)
    typer.echo(f"wrote {out} ({len(data)} bytes)")


@user_app.command("add")
def user_add(
    username: Annotated[str, typer.Option("--username")],
    role: Annotated[str, typer.Option("--role", help="admin or clerk")],
    counter: Annotated[
        list[str] | None, typer.Option("--counter", help="counters a clerk serves (default: all)")
    ] = None,
    hip_id: Annotated[str | None, typer.Option("--hip-id", help="facility (default: the only one)")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from stdin")
    ] = False,
) -> None:
    """Add a staff user."""
    if role not in ROLES:
        raise fail(f"unknown role {role!r}; use one of: {', '.join(ROLES)}")
    if not re.match(r"^[A-Za-z0-9._@-]{1,64}$", username):
        raise fail("--username takes 1-64 letters, digits or . _ @ -")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        raise fail("no terminal to ask for the password: pass --password-stdin and pipe it in")
    if len(password) < 8:
        raise fail("the password needs at least 8 characters")
    with session() as db:
        if hip_id is None:
            facilities = db.exec(select(Facility)).all()
            if len(facilities) == 1:
                hip_id = facilities[0].hip_id
            elif counter:
                raise fail("several facilities exist: name one with --hip-id")
        if hip_id is not None:
            _facility(db, hip_id)
            for code in counter or []:
                if not db.exec(select(Counter).where(Counter.hip_id == hip_id, Counter.code == code)).first():
                    raise fail(f"unknown counter {code!r} at {hip_id}")
        if db.exec(select(User).where(User.username == username)).first():
            raise fail(f"user {username} already exists")
        db.add(User(username=username, password_hash=hash_password(password), role=role, hip_id=hip_id,
                    counters=list(counter or [])))  # fmt: skip
        db.commit()
    typer.echo(f"user {username} added ({role})")


@device_app.command("add")
def device_add(
    hip_id: Annotated[str, typer.Option("--hip-id")],
    name: Annotated[str, typer.Option("--name")],
    kind: Annotated[str, typer.Option("--kind", help="board, kiosk or printer")],
    printer: Annotated[str | None, typer.Option("--printer", help="a kiosk's paired printer device")] = None,
) -> None:
    """Add a device; prints its token once, alone on the last line."""
    if kind not in DEVICE_KINDS:
        raise fail(f"unknown device kind {kind!r}; use one of: {', '.join(DEVICE_KINDS)}")
    if not re.match(r"^[A-Za-z0-9._-]{1,64}$", name):
        raise fail("--name takes 1-64 letters, digits or . _ -")
    token, token_hash = new_device_token()
    with session() as db:
        _facility(db, hip_id)
        if db.exec(select(Device).where(Device.hip_id == hip_id, Device.name == name)).first():
            raise fail(f"device {name} already exists at {hip_id}")
        db.add(Device(hip_id=hip_id, name=name, kind=kind, token_hash=token_hash, printer=printer))
        try:
            db.commit()
        except IntegrityError:
            raise fail("could not store the device (duplicate)") from None
    typer.echo(f"device {name} ({kind}) added at {hip_id}; its token (shown only now):")
    typer.echo(token)


@app.command("rebuild")
def rebuild(
    hip_id: Annotated[str | None, typer.Option("--hip-id", help="default: every facility")] = None,
    day: Annotated[str | None, typer.Option("--date", help="local date YYYY-MM-DD (default: today)")] = None,
) -> None:
    """Restore the day's live queues in Redis from the SQL record (after Redis lost its data)."""
    from token_service.rebuild import rebuild_queues

    target: date | None = None
    if day:
        try:
            target = date.fromisoformat(day)
        except ValueError:
            raise fail("--date takes YYYY-MM-DD") from None
    with session() as db:
        hips = [hip_id] if hip_id else [f.hip_id for f in db.exec(select(Facility)).all()]
        if hip_id:
            _facility(db, hip_id)
    for hip, restored in asyncio.run(rebuild_queues(settings(), hips, target)).items():
        typer.echo(f"{hip}: restored {restored} tokens")


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64)] = 1,
) -> None:
    """Run the service (API and pages)."""
    run_service(host, port, workers)


FEW_OPEN_FILES = 4096  # a worker holds an open file per board and status page; fewer is worth a warning


def run_service(host: str, port: int, workers: int, on_ready: str | None = None) -> None:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from token_service.embedded import EmbeddedRedis, EmbeddedServerError
    from token_service.records.db import migrate

    s = settings()
    migrate(s)
    embedded = None
    if not s.redis_url:
        try:
            embedded = EmbeddedRedis(s.data_dir).start()
        except EmbeddedServerError as exc:
            raise fail(str(exc)) from None
        # Workers connect to the server this process owns; they must not start their own.
        os.environ["OPD_REDIS_URL"] = embedded.url
    try:
        # Without SO_REUSEPORT (not Linux) the workers share one socket.
        ports = WorkerListeners(host, port) if workers > 1 and REUSEPORT else listener(host, port)
    except OSError as exc:
        if embedded:
            embedded.stop()
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    config = uvicorn.Config(
        "token_service.app:create_worker_app", factory=True, workers=workers, log_level="info",
        timeout_keep_alive=30, access_log=False, proxy_headers=False,
        http="token_service.security:BoundedHttpToolsProtocol",
    )  # fmt: skip
    typer.echo(f"OPD token service on http://{host}:{port}  (docs: /docs, health: /readyz)")
    open_files = raise_open_files()
    if 0 <= open_files < FEW_OPEN_FILES:
        typer.echo(
            f"warning: {open_files} open files per process: each worker holds at most about that many "
            "boards, status pages and requests at once. Raise the hard limit (systemd: LimitNOFILE=65536; "
            "docker: --ulimit nofile=65536).",
            err=True,
        )
    try:
        if isinstance(ports, WorkerListeners):
            Multiprocess(config, sockets=[ports.member]).run()  # type: ignore[list-item]
        elif workers > 1:
            Multiprocess(config, sockets=[ports]).run()
        else:
            uvicorn.Server(config).run(sockets=[ports])
    finally:
        ports.close()
        if embedded:
            embedded.stop()


def _register_extensions() -> None:
    """Command groups that live beside their feature (`opd-token sandbox`, `demo`, ...)."""
    for name in ("token_service.cli_abdm", "token_service.cli_print", "token_service.cli_security"):
        try:
            module = __import__(name, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise
            continue
        module.register(app)


_register_extensions()


def main() -> None:
    app()


if __name__ == "__main__":
    main()

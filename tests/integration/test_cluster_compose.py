"""docker-compose.yml resolves with `docker compose config` (or docker-compose) and has what a deployment
relies on; .env.example documents every OPD_* setting."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from token_service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
AGENT_VARIABLES = {"OPD_DEVICE_TOKEN"}  # read by opd-print-agent, not by the service's Settings


def compose_command() -> list[str] | None:
    """`docker compose` when the plugin is installed, else the standalone docker-compose, else None."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def run_config(env_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed")
    # The caller's own OPD_* or POSTGRES_* variables would override the env file: leave them out.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPD_", "POSTGRES_", "COMPOSE_"))}
    return subprocess.run(
        [*command, "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml"),
         "--env-file", str(env_file), *extra, "config"],
        capture_output=True, text=True, timeout=60, env=env, cwd=ROOT,
    )  # fmt: skip


def test_compose_config_resolves_with_the_example_env() -> None:
    done = run_config(ROOT / ".env.example", "--profile", "printer")
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    services = config["services"]
    assert set(services) == {"redis", "postgres", "service", "print-agent"}
    redis_cmd = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and "--appendfsync everysec" in redis_cmd
    assert services["redis"]["image"].startswith("redis:7")
    assert services["postgres"]["image"].startswith("postgres:16")
    assert any("/var/lib/postgresql/data" in str(v) for v in services["postgres"]["volumes"])
    for name in ("redis", "postgres", "service"):
        assert services[name]["healthcheck"]["test"], name
    service = services["service"]
    assert service["build"]["dockerfile"].endswith("deploy/Dockerfile")
    # docker compose v2 adds `required`/`restart` to each entry; the condition is what matters.
    assert {k: v["condition"] for k, v in service["depends_on"].items()} == {
        "redis": "service_healthy",
        "postgres": "service_healthy",
    }
    command = [str(part) for part in service["command"]]
    assert command[:2] == ["opd-token", "serve"] and command[command.index("--workers") + 1] == "4"
    env = service["environment"]
    assert env["OPD_REDIS_URL"] == "redis://redis:6379/0"
    assert (
        env["OPD_DATABASE_URL"].startswith("postgresql+psycopg://opd:")
        and "@postgres:5432/opd" in env["OPD_DATABASE_URL"]
    )
    assert env["OPD_SECRET_KEY"]
    nofile = service["ulimits"]["nofile"]  # room for thousands of boards and status pages
    assert (nofile if isinstance(nofile, int) else nofile["soft"]) >= 65536
    agent = services["print-agent"]
    assert agent["profiles"] == ["printer"]
    assert agent["command"][0] == "opd-print-agent" and "OPD_DEVICE_TOKEN" in agent["environment"]


def test_compose_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    bare = tmp_path / "bare.env"
    bare.write_text("OPD_WORKERS=2\n")
    done = run_config(bare)
    assert done.returncode != 0
    assert "POSTGRES_PASSWORD" in done.stderr or "OPD_SECRET_KEY" in done.stderr, done.stderr


def test_env_example_documents_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    mentioned = set(re.findall(r"\b(OPD_[A-Z_]+)=", text))
    settings_vars = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        settings_vars.add(alias if isinstance(alias, str) else f"OPD_{name.upper()}")
    assert settings_vars - mentioned == set()
    assert AGENT_VARIABLES <= mentioned
    # Every variable the compose file reads is in the example, so `cp .env.example .env` is complete.
    compose = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)", compose))
    assert used - set(re.findall(r"\b([A-Z_]+)=", text)) == set()


def test_dockerfile_builds_the_packages_and_serves() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    for package in ("token_service", "kiosk_ui", "printer"):
        assert f"COPY {package} ./{package}" in dockerfile
    assert "USER opd" in dockerfile and "HEALTHCHECK" in dockerfile
    assert '"opd-token", "serve", "--host", "0.0.0.0"' in dockerfile

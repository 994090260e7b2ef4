"""Service settings: every `OPD_*` variable of the external contract, read from the environment or `.env`."""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """One place for configuration. Constructing it does no I/O; `secret_key` is resolved lazily."""

    model_config = SettingsConfigDict(env_prefix="OPD_", env_file=".env", extra="ignore")

    data_dir: Path = Path("./opd-data")
    database_url: str = ""
    redis_url: str = ""
    public_base_url: str = "http://127.0.0.1:8000"
    abdm_gateway_url: str = "https://dev.abdm.gov.in"
    abdm_jwks_url: str = ""
    abdm_client_id: str = ""
    abdm_client_secret: str = ""
    abdm_cm_id: str = "sbx"
    phr_share_url: str = "https://phrsbx.abdm.gov.in/share-profile"
    token_validity_seconds: int = Field(default=1800, ge=60, le=24 * 3600)
    secret_key_value: str = Field(default="", validation_alias="OPD_SECRET_KEY")

    # Not part of the external contract: tuning knobs with safe defaults.
    session_ttl_seconds: int = 12 * 3600
    max_body_bytes: int = 64 * 1024
    onshare_deadline_seconds: float = 25.0
    board_public: bool = True
    # Requests per minute, 0 turns one off: per client address for the status page and its API, per kiosk
    # device for walk-in issue (token_service.ratelimit). Login lockouts are fixed.
    rate_limit_status_per_minute: int = Field(default=300, ge=0)
    rate_limit_issue_per_minute: int = Field(default=30, ge=0)
    # Days after which the daily job clears patients' personal data from tokens; 0 turns the job off.
    retention_days: int = Field(default=90, ge=0)
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed: comma-separated addresses
    # or networks ("10.0.0.5,192.168.1.0/24"; "*" trusts every peer). Empty: nobody, the TCP peer is the
    # client.
    forwarded_allow_ips: str = ""

    @property
    def jwks_url(self) -> str:
        return self.abdm_jwks_url or f"{self.abdm_gateway_url.rstrip('/')}/api/hiecm/gateway/v3/certs"

    @property
    def sqlalchemy_url(self) -> str:
        """Synchronous URL (CLI, migrations)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'opd.sqlite3').resolve()}"

    @property
    def async_sqlalchemy_url(self) -> str:
        """The same database through an asyncio driver."""
        url = self.sqlalchemy_url
        if url.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
        if url.startswith("postgresql://"):
            return "postgresql+psycopg://" + url.removeprefix("postgresql://")
        return url

    @cached_property
    def secret_key(self) -> str:
        """`OPD_SECRET_KEY`, else a key generated once into the data dir (mode 0600)."""
        if self.secret_key_value:
            return self.secret_key_value
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / "secret.key"
        if not path.exists():
            fresh = secrets.token_urlsafe(48)
            try:
                with open(path, "x", encoding="ascii") as fh:
                    fh.write(fresh)
                path.chmod(0o600)
            except FileExistsError:
                pass  # another worker wrote it first: use theirs
        return path.read_text(encoding="ascii").strip()

"""`opd-token purge`: forget patients' personal data on old tokens, keeping the figures for reports."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from token_service.retention import DEFAULT_DAYS, MIN_DAYS, PurgeResult, purge


def register(app: typer.Typer) -> None:
    @app.command("purge")
    def purge_command(
        older_than_days: Annotated[
            int,
            typer.Option("--older-than-days", min=MIN_DAYS, help="clear tokens issued more than N days ago"),
        ] = DEFAULT_DAYS,
        hip_id: Annotated[str | None, typer.Option("--hip-id", help="only this facility")] = None,
    ) -> None:
        """Clear patient snapshots, ABHA addresses and REQUEST-IDs of old tokens (counts and times stay)."""
        from token_service.cli import settings
        from token_service.records.db import async_engine, migrate

        s = settings()
        migrate(s)

        async def run() -> PurgeResult:
            engine = async_engine(s)
            try:
                return await purge(engine, older_than_days, hip_id=hip_id)
            finally:
                await engine.dispose()

        result = asyncio.run(run())
        typer.echo(
            f"cleared personal data of {result.tokens} tokens and {result.on_shares} on-share records "
            f"issued before {result.cutoff:%Y-%m-%d %H:%M} UTC"
        )

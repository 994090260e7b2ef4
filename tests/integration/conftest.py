"""Fixtures the integration tests share: the ABDM gateway sandbox (one per test module)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.abdm import reset_gateway, sandbox_gateway
from token_service.abdm.sandbox_state import SandboxState


@pytest.fixture(scope="module")
def sandbox() -> Iterator[tuple[SandboxState, str]]:
    """A real sandbox gateway server (sessions, JWKS, on-share receiver) and its URL."""
    yield from sandbox_gateway()


@pytest.fixture
def gw(sandbox: tuple[SandboxState, str]) -> SandboxState:
    """The sandbox's state, with faults and recorded on-shares cleared for this test."""
    return reset_gateway(sandbox[0])

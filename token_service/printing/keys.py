"""The Redis keys of printing (leases, wake-up channels, printer health), with their lifetimes."""

from __future__ import annotations

from token_service.queue.keys import ROOT, facility_prefix

# Health older than this is shown as "unknown": an agent that stopped heartbeating says nothing.
HEALTH_TTL_S = 24 * 3600

# Every wake-up channel matches this pattern, so one subscription per process serves all printers.
WAKE_PATTERN = f"{ROOT}:*:print:wake:*"


def lease_key(hip_id: str, job_id: int) -> str:
    """Held (SET NX PX) while one agent has the job; its expiry makes the job deliverable again."""
    return facility_prefix(hip_id) + f"print:lease:{job_id}"


def wake_channel(hip_id: str, printer: str) -> str:
    """Pub/sub channel announcing "a job is waiting for this printer"."""
    return facility_prefix(hip_id) + f"print:wake:{printer}"


def health_key(hip_id: str, printer: str) -> str:
    """Hash: healthy (1/0), detail, at (ms) as last reported by the printer's agent."""
    return facility_prefix(hip_id) + f"print:health:{printer}"

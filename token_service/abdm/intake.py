"""Scan & Share intake: match a parsed share to a facility and counter, issue its token, owe an on-share."""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass

from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram

from token_service.abdm.outbox import Outbox, OutboxEntry
from token_service.abdm.schemas import ShareRequest
from token_service.directory import Directory
from token_service.errors import Conflict, NotFound
from token_service.operations import TokenService
from token_service.queue.service import Token
from token_service.queue.status import Source

__all__ = ["IntakeResult", "ShareIntake"]

log = logging.getLogger(__name__)

# ABDM has no code of its own for "this HIP does not know that counter"; integrators use the generic one.
UNKNOWN_CODE = "ABDM-9999"

SHARES = PromCounter(
    "opd_abdm_shares_total", "Inbound profile shares, by version and outcome", ["version", "outcome"]
)
INTAKE_LATENCY = Histogram(
    "opd_abdm_intake_seconds",
    "Inbound share handling up to the acknowledgement (token issue, SQL, outbox)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
share_count = functools.cache(SHARES.labels)  # each label set's child, looked up once


@dataclass(frozen=True)
class IntakeResult:
    on_share_id: int
    outcome: str  # created | duplicate | rescan | rejected
    token: Token | None
    error: tuple[str, str] | None
    entry: OutboxEntry  # the on-share owed, committed; `ShareIntake.wake` makes it due


class ShareIntake:
    """Everything between a verified, parsed share and its 202. The on-share is only queued here."""

    def __init__(self, tokens: TokenService, directory: Directory, outbox: Outbox) -> None:
        self.tokens = tokens
        self.directory = directory
        self.outbox = outbox

    async def _refusal(self, share: ShareRequest, hip_id: str) -> tuple[str, str] | None:
        try:
            cfg = await self.directory.get(hip_id)
        except NotFound:
            return UNKNOWN_CODE, f"Facility {hip_id} is not configured at this HIP"
        counter = cfg.counters.get(share.counter_code)
        if counter is None:
            return UNKNOWN_CODE, f"Counter {share.counter_code} is not configured"
        if not counter.active:
            return UNKNOWN_CODE, f"Counter {share.counter_code} is closed"
        return None

    async def accept(self, share: ShareRequest, hip_id: str) -> IntakeResult:
        """Issue (or find) the token and record the on-share owed for it; both are committed on return,
        in one transaction.

        Redis or SQL trouble propagates (the caller answers 503 and the gateway retries the same
        REQUEST-ID, which yields the same token). A share we cannot serve is still acknowledged and
        recorded, with an error on-share so the patient's app says why instead of timing out.

        The on-share is not made due here: the caller calls `wake` once the acknowledgement is on its
        way (nothing committed depends on it, and a lost wake-up is found by the outbox's sweep).
        """
        started = time.perf_counter()
        token: Token | None = None
        outcome = "rejected"
        error = await self._refusal(share, hip_id)
        patient = share.profile.to_json()
        if error is None:
            try:
                result = await self.tokens.issue(
                    hip_id, share.counter_code, source=Source.SCAN_SHARE, request_id=share.request_id,
                    abha_address=share.profile.abha_address, patient=patient,
                    persist=False,
                )  # fmt: skip
            except (Conflict, NotFound) as exc:
                # The counter closed or vanished between the check and the script: same answer as above.
                error = UNKNOWN_CODE, f"Counter {share.counter_code} is not taking tokens: {exc.detail}"
            else:
                token, outcome = result.token, result.outcome
        entry = OutboxEntry(
            hip_id=hip_id,
            request_id=share.request_id,
            version=share.version,
            counter=share.counter_code,
            abha_address=share.profile.abha_address,
            token_id=token.id if token else None,
            token_number=token.label if token else None,
            expires_ms=token.expires_ms if token else None,
            error=error,
            outcome=outcome,
        )
        if token is not None:
            # The token and the on-share owed for it commit together, in one write.
            (on_share_id,) = await self.tokens.persist([token], patient, also=[self.outbox.row(entry)])
        else:
            on_share_id = await self.outbox.record(entry)
        share_count(share.version, outcome).inc()
        INTAKE_LATENCY.observe(time.perf_counter() - started)
        if error is not None:
            log.info("share %s for %s/%s refused: %s", share.request_id, hip_id, share.counter_code, error[1])
        return IntakeResult(on_share_id, outcome, token, error, entry)

    async def wake(self, result: IntakeResult) -> None:
        """Make the accepted share's on-share due now; this worker starts sending it when it has room.
        Never raises: the outbox's sweep delivers an on-share whose wake-up was lost."""
        await self.outbox.wake(result.on_share_id, result.entry)

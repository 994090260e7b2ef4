"""One pub/sub subscription per process that wakes the long-polls waiting for a printer's next job."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from token_service.printing.keys import WAKE_PATTERN
from token_service.tasks import cancel_and_wait

log = logging.getLogger("token_service.printing")

# A blocking read on the subscription returns at least this often, so close() is noticed promptly.
_READ_TIMEOUT_S = 5.0
_MAX_BACKOFF_S = 5.0


@dataclass
class Wakeups:
    """Per-channel events: a waiter takes the current event, checks SQL, then awaits it.

    A message pops and sets the channel's event, so the next waiter gets a fresh one and a message that
    arrives between a waiter's check and its await is never missed. If the subscription drops, every
    waiter is woken on reconnect to re-check (messages published meanwhile are lost to pub/sub).
    """

    redis: Redis
    _events: dict[str, asyncio.Event] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    closing: bool = False

    def waiter(self, channel: str) -> asyncio.Event:
        event = self._events.get(channel)
        if event is None or event.is_set():
            event = self._events[channel] = asyncio.Event()
        return event

    def wake(self, channel: str) -> None:
        event = self._events.pop(channel, None)
        if event is not None:
            event.set()

    def wake_all(self) -> None:
        events, self._events = self._events, {}
        for event in events.values():
            event.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="print-wakeups")

    async def close(self) -> None:
        self.closing = True
        self.wake_all()
        if self._task is not None:
            await cancel_and_wait(self._task)

    async def _run(self) -> None:
        backoff = 0.1
        while not self.closing:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.psubscribe(WAKE_PATTERN)
                backoff = 0.1
                self.wake_all()
                while not self.closing:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=_READ_TIMEOUT_S
                    )
                    if message is not None and message.get("type") == "pmessage":
                        self.wake(str(message["channel"]))
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("print wake-up subscription lost (%s); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

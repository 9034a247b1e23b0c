"""The durable outbox: notifications are stored before they are sent, then delivered at least once.

Each due notification is handed to its channel; every attempt is recorded with its outcome. A failed
attempt is retried after an exponential backoff with jitter (``base * 2**attempts``, capped, times a
random factor in [0.5, 1]) until it is delivered or ``expires_at`` passes (then it is ``expired``).
A group's notifications to one notifier go out in the order they were made (the store's ``due`` holds
one back while an older one of its group is pending), so a receiver back from an outage hears a
group's "firing" before the "resolved" that ends it, even though the newer one has backed off less.
Delivery is at-least-once: only a crash between the receiver's acceptance and the outbox update can
produce a duplicate, and the idempotency key in every payload lets a receiver drop it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from mlwatch.errors import NotifyError
from mlwatch.storage.alertstore import NotificationRow

log = logging.getLogger("mlwatch.notify")


class Channel(Protocol):
    """One notifier: sends a notification payload or raises NotifyError."""

    name: str

    async def send(self, payload: Mapping[str, Any]) -> None: ...


class OutboxStore(Protocol):
    async def due(self, now: float, limit: int) -> list[NotificationRow]: ...
    async def record(
        self, nid: int, ts: float, ok: bool, error: str, seconds: float, status: str, next_attempt_at: float
    ) -> None: ...


@dataclass
class Backoff:
    base_s: float = 2.0
    cap_s: float = 600.0

    def delay(self, attempts: int, rng: random.Random) -> float:
        """The wait after the ``attempts``-th failed attempt (1-based)."""
        raw = min(self.cap_s, self.base_s * 2 ** max(0, attempts - 1))
        return float(raw * (0.5 + rng.random() / 2))


class Outbox:
    """Delivers due notifications through their channels, recording every attempt."""

    def __init__(
        self,
        store: OutboxStore,
        channels: Mapping[str, Channel],
        *,
        clock: Callable[[], float],
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        concurrency: int = 8,
        on_attempt: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.store = store
        self.channels = dict(channels)
        self.clock = clock
        self.backoff = backoff or Backoff()
        self.rng = rng or random.Random()
        self._sem = asyncio.Semaphore(concurrency)
        self.on_attempt = on_attempt
        self.secrets: frozenset[str] = frozenset()  # replaced by <secret> in recorded errors

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if len(secret) >= 4:  # a 1-3 character "secret" would blank out ordinary words
                text = text.replace(secret, "<secret>")
        return text

    async def deliver_due(self, now: float | None = None, limit: int = 100) -> int:
        """One pass over the due notifications; returns how many were delivered."""
        now = self.clock() if now is None else now
        rows = await self.store.due(now, limit)
        results = await asyncio.gather(*(self._one(row, now) for row in rows))
        return sum(results)

    async def _one(self, row: NotificationRow, now: float) -> bool:
        async with self._sem:
            channel = self.channels.get(row.notifier)
            started = time.perf_counter()
            error = ""
            if channel is None:
                error = f"no notifier named {row.notifier!r} in the configuration"
            else:
                try:
                    await channel.send(row.payload)
                except NotifyError as exc:
                    error = str(exc)
                except Exception as exc:  # noqa: BLE001 - a channel bug is still a failed attempt, recorded
                    error = f"{type(exc).__name__}: {exc}"
            error = self.redact(error)
            seconds = time.perf_counter() - started
            attempts = row.attempts + 1
            if not error:
                await self.store.record(row.id, now, True, "", seconds, "delivered", now)
                ok = True
            else:
                nxt = now + self.backoff.delay(attempts, self.rng)
                status = "expired" if nxt >= row.expires_at else "pending"
                log.warning(
                    "notification %s via %s failed (attempt %d%s): %s",
                    row.key[:12],
                    row.notifier,
                    attempts,
                    ", giving up" if status == "expired" else "",
                    error,
                )
                await self.store.record(row.id, now, False, error, seconds, status, nxt)
                ok = False
            if self.on_attempt is not None:
                self.on_attempt(row.notifier, ok)
            return ok


AwaitableFactory = Callable[[], Awaitable[None]]

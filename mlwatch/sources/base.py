"""What every source target shares: the result of one collection, health, and staleness tracking.

A *target* is one thing collected on a schedule (one ``host:port`` of an http job, a log source, a
command). Its ``collect(now_ms)`` returns a :class:`Collection`: the samples, their metadata and the
producer state to commit in ONE transaction, plus callbacks the manager calls once the batch is
committed (``commit``) or refused by storage (``abort``), so in-memory offsets never run ahead of
the database. A failed collection is a :class:`Collection` with ``error`` set, never an exception.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from mlwatch.model import STALE_NAN, MetricMeta, Sample, SeriesKey

__all__ = [
    "HEALTH_INDEX_KEY",
    "Collection",
    "Health",
    "SeriesTracker",
    "Target",
    "TargetHealth",
    "health_key",
]  # fmt: skip

HEALTH_PREFIX = "source_health/"
HEALTH_INDEX_KEY = "source_health_index"
MAX_REJECTED = 5
MAX_REJECTED_CHARS = 500


def health_key(job: str, instance: str) -> str:
    """The ``source_state`` key under which a target's health (JSON) is stored for the TUI."""
    return f"{HEALTH_PREFIX}{job}/{instance}"


def _noop() -> None:
    return None


@dataclass(slots=True)
class Collection:
    """The outcome of one collection of one target."""

    samples: list[Sample] = field(default_factory=list)
    meta: dict[str, MetricMeta] = field(default_factory=dict)
    state: dict[str, bytes] = field(default_factory=dict)
    error: str | None = None  # set: the collection failed (up = 0)
    reason: str | None = None  # short machine word for mlwatch_source_errors_total{reason}
    scraped: int = 0  # samples found (before relabelling / sampling)
    kept: int = 0  # samples kept (after relabelling)
    bad: collections.Counter[str] = field(default_factory=collections.Counter)  # bad input by reason
    rejected: list[str] = field(default_factory=list)  # a few rejected inputs, for the TUI
    more: bool = False  # a log source has more lines ready: collect again right away
    lost: tuple[int, int] | None = None  # a log source's totals of bytes and lines lost to copytruncate
    buffer_on_failure: bool = True  # scrapes may wait in memory; logs re-read (the file is the buffer)
    commit: Callable[[], None] = _noop
    abort: Callable[[], None] = _noop


class Target(Protocol):
    """One collected thing; see the module docstring."""

    job: str
    instance: str
    labels: dict[str, str]  # target labels: job, instance and the source's labels
    scrape_url: str
    interval_ms: int
    timeout_ms: int

    async def collect(self, now_ms: int) -> Collection: ...

    def removed(self, now_ms: int) -> list[Sample]:
        """Staleness markers for every series this target wrote, when it goes away."""
        ...

    async def close(self) -> None: ...


class Health(str, Enum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


@dataclass(slots=True)
class TargetHealth:
    """What the manager knows about one target; stored as JSON so another process can show it."""

    job: str
    instance: str
    source_type: str
    scrape_url: str
    labels: dict[str, str]
    health: Health = Health.UNKNOWN
    last_scrape_ms: int = 0
    last_duration_s: float = 0.0
    last_error: str = ""
    last_error_ms: int = 0
    samples_total: int = 0
    errors_total: collections.Counter[str] = field(default_factory=collections.Counter)
    rejected: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=MAX_REJECTED))
    dropped_samples: int = 0  # scrape samples dropped because storage stayed unavailable
    lost_bytes_total: int = 0  # log sources: unread bytes that a truncation without a copy lost
    lost_lines_total: int = 0  # ... and the lines among them that could be counted

    def record_bad(self, bad: collections.Counter[str], rejected: Iterable[str]) -> None:
        self.errors_total.update(bad)
        for line in rejected:
            self.rejected.append(line if len(line) <= MAX_REJECTED_CHARS else line[:MAX_REJECTED_CHARS] + "…")

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "job": self.job,
            "instance": self.instance,
            "type": self.source_type,
            "scrape_url": self.scrape_url,
            "labels": self.labels,
            "health": self.health.value,
            "last_scrape_ms": self.last_scrape_ms,
            "last_duration_s": self.last_duration_s,
            "last_error": self.last_error,
            "last_error_ms": self.last_error_ms,
            "samples_total": self.samples_total,
            "errors_total": dict(self.errors_total),
            "rejected": list(self.rejected),
            "dropped_samples": self.dropped_samples,
            "lost_bytes_total": self.lost_bytes_total,
            "lost_lines_total": self.lost_lines_total,
        }
        return json.dumps(doc, ensure_ascii=False).encode()


class SeriesTracker:
    """Remembers the series of the last successful collection to write staleness markers, as
    Prometheus does: a series missing from the next collection, or every series after a failed one,
    gets ``STALE_NAN`` at that collection's time. Series with explicit timestamps are not tracked."""

    __slots__ = ("_pending", "current")

    def __init__(self) -> None:
        self.current: set[SeriesKey] = set()
        self._pending: set[SeriesKey] | None = None

    def stale_for(self, seen: set[SeriesKey], ts: int) -> list[Sample]:
        """Markers for series that were there last time and are not in ``seen``; ``seen`` becomes current
        once :meth:`accept` is called (after the batch is committed or buffered)."""
        self._pending = seen
        return [Sample(k, ts, STALE_NAN) for k in self.current - seen]

    def accept(self) -> None:
        if self._pending is not None:
            self.current = self._pending
            self._pending = None

    def all_stale(self, ts: int) -> list[Sample]:
        return [Sample(k, ts, STALE_NAN) for k in self.current]

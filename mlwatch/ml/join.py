"""Late labels: true labels read by one log source, joined by key to the predictions of another.

Two sources commit their state separately, so the join is a hand-off with sequence numbers rather
than shared mutable state:

- the label source's :class:`LabelOutbox` numbers every label it reads (``seq``) and keeps it until
  every consumer has *committed* past it; the outbox (labels and next ``seq``) is the label source's
  state, committed with its offsets;
- a prediction source's consumer remembers the last ``seq`` it applied (``done``), committed with
  *its* offsets and windows. It takes labels with ``seq > done`` at each evaluation.

Either side may crash or be refused by storage at any point: a label source that re-reads lines after
a rollback gives them the same numbers (same lines, same order), which a consumer that already
applied them skips; a consumer that rolls back takes them again from the outbox, which still has
them because it only drops what consumers had committed. So every label is applied exactly once.

:class:`PendingPredictions` holds predictions waiting for their label (bounded: beyond ``limit`` the
oldest is dropped and counted), in arrival order so expiry after ``max_delay`` is a scan of the front.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["DELAY_BUCKETS_S", "LabelItem", "LabelOutbox", "PendingPredictions"]

DELAY_BUCKETS_S = (1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0, 172800.0, 604800.0)
"""Buckets (seconds) of the ``<prefix>_label_delay_seconds`` histogram: one second to one week."""


@dataclass(frozen=True, slots=True)
class LabelItem:
    seq: int
    key: str
    values: dict[str, Any]  # the label fields the prediction side reads (label / target)
    ts_ms: int  # when the label became known


class LabelOutbox:
    """Labels read by a ``labels_for`` source, waiting for the prediction source's consumers."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._items: list[LabelItem] = []
        self.next_seq = 1
        self.dropped = 0  # labels dropped because no consumer took them before the limit
        self._committed: dict[str, int] = {}  # consumer -> the seq it has committed up to

    def put(self, key: str, values: dict[str, Any], ts_ms: int) -> None:
        with self._lock:
            self._items.append(LabelItem(self.next_seq, key, values, ts_ms))
            self.next_seq += 1
            if len(self._items) > self.limit:
                drop = len(self._items) - self.limit
                self.dropped += drop
                del self._items[:drop]

    def take(self, consumer: str, committed_done: int) -> list[LabelItem]:
        """Labels after ``committed_done`` for ``consumer``, whose state up to that seq is committed;
        labels every consumer has committed are forgotten."""
        with self._lock:
            self._committed[consumer] = committed_done
            low = min(self._committed.values())
            if self._items and self._items[0].seq <= low:
                self._items = [it for it in self._items if it.seq > low]
            return [it for it in self._items if it.seq > committed_done]

    def snapshot(self) -> Any:
        with self._lock:
            return {"next": self.next_seq, "dropped": self.dropped,
                    "items": [[it.seq, it.key, it.values, it.ts_ms] for it in self._items]}  # fmt: skip

    def restore(self, state: Any) -> None:
        with self._lock:
            state = state or {}
            self.next_seq = int(state.get("next", 1))
            self.dropped = int(state.get("dropped", 0))
            self._items = [LabelItem(int(s), str(k), dict(v), int(ts)) for s, k, v, ts in state.get("items", [])]


class PendingPredictions:
    """Predictions waiting for a label, by key; entries are JSON-able lists ``[ts_ms, group, ...]``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: dict[str, list[Any]] = {}

    def add(self, key: str, entry: list[Any]) -> list[Any] | None:
        """Keep ``entry``; returns the oldest entry dropped to stay within the limit (if any)."""
        items = self.items
        items.pop(key, None)  # a repeated key: the newer prediction wins, at the back
        items[key] = entry
        if len(items) > self.limit:
            oldest = next(iter(items))
            return items.pop(oldest)
        return None

    def pop(self, key: str) -> list[Any] | None:
        return self.items.pop(key, None)

    def expire(self, before_ms: int) -> Iterator[list[Any]]:
        """Remove and yield entries predicted before ``before_ms`` (arrival order ≈ time order)."""
        items = self.items
        while items:
            key = next(iter(items))
            entry = items[key]
            if entry[0] >= before_ms:
                # arrival order is only nearly time order: look on for a few stragglers, no further
                stragglers = [k for k, e in list(items.items())[:64] if e[0] < before_ms]
                for k in stragglers:
                    yield items.pop(k)
                return
            del items[key]
            yield entry

    def __len__(self) -> int:
        return len(self.items)

"""Sampling of log lines before they feed per-line metrics (and, later, ML windows).

Every sampler takes :class:`LineEvent` objects in order and returns the events that pass now:

- :class:`RandomSampler` keeps an event when a 64-bit hash of its key (a field, or the line's
  position) is below ``rate``: deterministic, no state, the same lines after a restart;
- :class:`StratifiedSampler` keeps at most ``per_stratum`` events (or a ``rate`` share, the first one
  always) of each value of ``by`` per window, so rare strata are never starved;
- :class:`ReservoirSampler` keeps a uniform sample of ``size`` events per window (Algorithm R with
  a hash-seeded choice) and releases it when the window closes.

Stateful samplers expose ``snapshot()``/``restore()`` (plain JSON), committed with the offsets.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Protocol

from mlwatch.config.parts import SamplingConfig
from mlwatch.sources.fieldpath import MISSING, FieldPath

__all__ = ["LineEvent", "Sampler", "make_sampler"]

_TWO64 = float(2**64)


@dataclass(slots=True)
class LineEvent:
    """One parsed line: its fields, its time, and where it was read (``position``, stable across restarts)."""

    fields: dict[str, Any]
    ts_ms: int
    position: str


class Sampler(Protocol):
    def offer(self, event: LineEvent) -> list[LineEvent]: ...
    def flush(self, now_ms: int) -> list[LineEvent]: ...
    def snapshot(self) -> Any: ...
    def restore(self, state: Any) -> None: ...


def hash_unit(text: str) -> float:
    """A stable hash of ``text`` in [0, 1)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little") / _TWO64


def _field_text(path: FieldPath | None, event: LineEvent) -> str:
    if path is None:
        return event.position
    value = path.get(event.fields)
    return "" if value is MISSING or value is None else str(value)


class RandomSampler:
    def __init__(self, rate: float, key: str | None) -> None:
        self.rate = rate
        self._key = FieldPath(key) if key else None

    def offer(self, event: LineEvent) -> list[LineEvent]:
        return [event] if hash_unit(_field_text(self._key, event)) < self.rate else []

    def flush(self, now_ms: int) -> list[LineEvent]:
        return []

    def snapshot(self) -> Any:
        return None

    def restore(self, state: Any) -> None:
        return None


class StratifiedSampler:
    def __init__(self, by: str, per_stratum: int | None, rate: float | None, window_ms: int) -> None:
        self._by = FieldPath(by)
        self.per_stratum = per_stratum
        self.rate = rate
        self.window_ms = window_ms
        self.window = -1
        self.counts: dict[str, int] = {}

    def offer(self, event: LineEvent) -> list[LineEvent]:
        window = event.ts_ms // self.window_ms
        if window != self.window:
            if window < self.window:
                window = self.window  # an older line counts in the current window
            else:
                self.window, self.counts = window, {}
        stratum = _field_text(self._by, event)
        n = self.counts.get(stratum, 0)
        self.counts[stratum] = n + 1
        if self.per_stratum is not None:
            return [event] if n < self.per_stratum else []
        assert self.rate is not None
        return [event] if math.ceil((n + 1) * self.rate) > math.ceil(n * self.rate) else []

    def flush(self, now_ms: int) -> list[LineEvent]:
        return []

    def snapshot(self) -> Any:
        return {"window": self.window, "counts": self.counts}

    def restore(self, state: Any) -> None:
        if state:
            self.window = int(state["window"])
            self.counts = {str(k): int(v) for k, v in state["counts"].items()}


class ReservoirSampler:
    def __init__(self, size: int, window_ms: int) -> None:
        self.size = size
        self.window_ms = window_ms
        self.window = -1
        self.seen = 0
        self.items: list[LineEvent] = []

    def _close(self) -> list[LineEvent]:
        out = sorted(self.items, key=lambda e: e.ts_ms)
        self.items, self.seen = [], 0
        return out

    def offer(self, event: LineEvent) -> list[LineEvent]:
        window = event.ts_ms // self.window_ms
        released: list[LineEvent] = []
        if window > self.window:
            released = self._close() if self.window >= 0 else []
            self.window = window
        i = self.seen
        self.seen += 1
        if i < self.size:
            self.items.append(event)
        else:
            j = int(hash_unit(f"{self.window}:{i}:{event.position}") * (i + 1))
            if j < self.size:
                self.items[j] = event
        return released

    def flush(self, now_ms: int) -> list[LineEvent]:
        """Release the window's sample once ``now_ms`` is past its end."""
        if self.window >= 0 and now_ms >= (self.window + 1) * self.window_ms and self.items:
            return self._close()
        return []

    def snapshot(self) -> Any:
        return {
            "window": self.window,
            "seen": self.seen,
            "items": [[e.fields, e.ts_ms, e.position] for e in self.items],
        }

    def restore(self, state: Any) -> None:
        if state:
            self.window = int(state["window"])
            self.seen = int(state["seen"])
            self.items = [LineEvent(f, int(ts), str(pos)) for f, ts, pos in state["items"]]


def make_sampler(cfg: SamplingConfig) -> Sampler:
    if cfg.strategy == "random":
        assert cfg.rate is not None
        return RandomSampler(cfg.rate, cfg.key)
    if cfg.strategy == "stratified":
        assert cfg.by is not None
        return StratifiedSampler(cfg.by, cfg.per_stratum, cfg.rate, cfg.window)
    assert cfg.size is not None
    return ReservoirSampler(cfg.size, cfg.window)

"""Sliding windows as sums of per-interval buckets.

A :class:`BucketWindow` keeps one accumulator per time bucket of width ``resolution`` (ms). Bucket
``b`` holds the outcomes known at times in ``((b - 1) * resolution, b * resolution]``, so the window
``(t - window, t]`` is the sum of buckets ``b`` with ``t - window < b * resolution`` and
``b * resolution - resolution < t``: exact when ``t`` and ``window`` are multiples of the resolution,
otherwise it reaches back less than one ``resolution`` further. A window is a sum of buckets, never a
rescan of outcomes; buckets that leave every window are dropped.

Accumulators are plain JSON-able values so a window serialises with the log offsets it came from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["BucketWindow", "default_resolution"]

A = TypeVar("A")


def default_resolution(window_ms: int) -> int:
    """Bucket width for a window: at most 300 buckets, never finer than one second."""
    return max(1000, -(-window_ms // 300))


def bucket_of(ts_ms: int, resolution: int) -> int:
    return -((-ts_ms) // resolution)  # ceil: bucket b ends (inclusively) at b * resolution


class BucketWindow(Generic[A]):
    """Per-bucket accumulators of type ``A`` for one window."""

    __slots__ = ("_dumped", "buckets", "new", "resolution", "window")

    def __init__(self, window_ms: int, resolution_ms: int, new: Callable[[], A]) -> None:
        self.window = window_ms
        self.resolution = resolution_ms
        self.new = new
        self.buckets: dict[int, A] = {}
        # bucket -> its last snapshot; dropped when the bucket is handed out by at()/bucket(), the only
        # way to change it, so a snapshot re-dumps only the buckets that may have changed since the last
        self._dumped: dict[int, Any] = {}

    def at(self, ts_ms: int) -> A:
        """The accumulator of the bucket holding time ``ts_ms`` (created when missing), to be changed."""
        return self.bucket(bucket_of(ts_ms, self.resolution))

    def bucket(self, b: int) -> A:
        """The accumulator of bucket number ``b`` (see :func:`bucket_of`; created when missing), to be changed."""
        self._dumped.pop(b, None)
        acc = self.buckets.get(b)
        if acc is None:
            acc = self.buckets[b] = self.new()
        return acc

    def _first(self, t_ms: int) -> int:
        # the oldest bucket whose end lies inside (t - window, t]
        return (t_ms - self.window) // self.resolution + 1

    def covering(self, t_ms: int) -> Iterator[A]:
        """Accumulators of the window ending at ``t_ms``, oldest first."""
        first, last = self._first(t_ms), bucket_of(t_ms, self.resolution)
        for b in sorted(self.buckets):
            if first <= b <= last:
                yield self.buckets[b]

    def evict(self, t_ms: int) -> None:
        """Drop buckets that no window ending at or after ``t_ms`` covers."""
        first = self._first(t_ms)
        for b in [b for b in self.buckets if b < first]:
            del self.buckets[b]
            self._dumped.pop(b, None)

    def snapshot(self, dump: Callable[[A], Any]) -> list[Any]:
        """``[[bucket, dump(acc)], ...]``; ``dump`` must dump alike at every call (its results of
        unchanged buckets are reused, so they must not be changed by whoever holds the snapshot)."""
        dumped = self._dumped
        out = []
        for b, acc in sorted(self.buckets.items()):
            raw = dumped.get(b)
            if raw is None:
                raw = dumped[b] = dump(acc)
            out.append([b, raw])
        return out

    def restore(self, state: list[Any] | None, load: Callable[[Any], A]) -> None:
        self.buckets = {int(b): load(raw) for b, raw in state or []}
        self._dumped = {}

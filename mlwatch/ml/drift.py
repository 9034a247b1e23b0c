"""Drift of a field: the current window against a reference (the previous window, or a fixed baseline).

- numeric fields: the two-sample Kolmogorov–Smirnov statistic ``D = sup |F_ref(x) - F_cur(x)|``
  (exactly ``scipy.stats.ks_2samp(...).statistic``), and the population stability index over
  ``bins`` bins cut at the reference's quantiles;
- categorical fields: the PSI over the categories of both.

``PSI = Σ_i (c_i - r_i) · ln(c_i / r_i)`` over bin shares ``r_i`` (reference) and ``c_i`` (current);
an empty bin's share is taken as ``PSI_FLOOR`` so the index stays finite (common practice; a bin
empty on both sides contributes 0). Rules of thumb: < 0.1 no shift, 0.1–0.25 moderate, > 0.25 large.

:class:`DriftWindow` keeps per-bucket values of one field (the first ``MAX_VALUES_PER_BUCKET``
numeric values of each bucket, so KS is exact below that rate, or category counts) for twice the window, so both the current window and the previous one are sums of buckets.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from mlwatch.ml.windows import BucketWindow, bucket_of

__all__ = ["PSI_FLOOR", "DriftWindow", "ks_statistic", "psi", "psi_categorical", "psi_numeric"]

PSI_FLOOR = 1e-4
MAX_VALUES_PER_BUCKET = 2000
MAX_BASELINE_VALUES = 20_000


def ks_statistic(reference: Sequence[float], current: Sequence[float]) -> float | None:
    """The two-sample KS statistic; None when either sample is empty."""
    if not len(reference) or not len(current):
        return None
    a = np.sort(np.asarray(reference, dtype=float))
    b = np.sort(np.asarray(current, dtype=float))
    points = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, points, side="right") / a.size
    cdf_b = np.searchsorted(b, points, side="right") / b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


def psi(reference: Sequence[float], current: Sequence[float]) -> float | None:
    """PSI of two aligned lists of bin counts; None when either is empty."""
    rn, cn = sum(reference), sum(current)
    if not rn or not cn:
        return None
    total = 0.0
    for r, c in zip(reference, current, strict=True):
        if not r and not c:
            continue
        rs = max(r / rn, PSI_FLOOR)
        cs = max(c / cn, PSI_FLOOR)
        total += (cs - rs) * math.log(cs / rs)
    return total


def psi_numeric(reference: Sequence[float], current: Sequence[float], bins: int) -> float | None:
    """PSI with ``bins`` bins cut at the reference's quantiles (fewer when values repeat)."""
    if not len(reference) or not len(current):
        return None
    ref = np.sort(np.asarray(reference, dtype=float))
    edges = sorted(set(np.quantile(ref, [i / bins for i in range(1, bins)]).tolist()))

    def counts(values: Iterable[float]) -> list[int]:
        out = [0] * (len(edges) + 1)
        for v in values:
            out[bisect.bisect_right(edges, v)] += 1
        return out

    return psi(counts(ref.tolist()), counts(current))


def psi_categorical(reference: Counter[str], current: Counter[str]) -> float | None:
    cats = sorted(set(reference) | set(current))
    return psi([reference[c] for c in cats], [current[c] for c in cats])


class DriftWindow:
    """One field of one group: per-bucket values over two windows, and an optional fixed baseline."""

    def __init__(self, numeric: bool, window_ms: int, resolution_ms: int, reference: str, bins: int) -> None:
        self.numeric = numeric
        self.window = window_ms
        self.reference = reference
        self.bins = bins
        self.buckets: BucketWindow[Any] = BucketWindow(2 * window_ms, resolution_ms, self._new)
        self.first_ms: int | None = None
        self.baseline: Any = None  # frozen reference (list of values or category counts)

    def _new(self) -> Any:
        return [0, []] if self.numeric else Counter()

    def _freeze_baseline(self, t_ms: int) -> None:
        """Keep the first ``window`` of data as the baseline once it is complete (before it is evicted)."""
        if self.reference != "baseline" or self.baseline is not None or self.first_ms is None:
            return
        if t_ms < self.first_ms + self.window:
            return
        end = bucket_of(self.first_ms + self.window, self.buckets.resolution)
        base = self._collect(acc for b, acc in sorted(self.buckets.buckets.items()) if b <= end)
        self.baseline = base[:MAX_BASELINE_VALUES] if self.numeric else base

    def add(self, ts_ms: int, value: Any) -> None:
        if self.first_ms is None:
            self.first_ms = ts_ms
        self._freeze_baseline(ts_ms)
        acc = self.buckets.at(ts_ms)
        if self.numeric:
            acc[0] += 1
            if len(acc[1]) < MAX_VALUES_PER_BUCKET:
                acc[1].append(value)
        else:
            acc[value] += 1

    def _collect(self, accs: Iterable[Any]) -> Any:
        if self.numeric:
            return [v for acc in accs for v in acc[1]]
        total: Counter[str] = Counter()
        for acc in accs:
            total.update(acc)
        return total

    def figures(self, t_ms: int) -> dict[str, float]:
        """``psi`` (and ``ks`` for numbers) of the window ending at ``t_ms`` against the reference."""
        self._freeze_baseline(t_ms)
        self.buckets.evict(t_ms)
        res = self.buckets.resolution
        first_current = (t_ms - self.window) // res + 1
        current = self._collect(acc for b, acc in sorted(self.buckets.buckets.items()) if b >= first_current)
        if self.reference == "baseline":
            if self.baseline is None:
                return {}
            ref = self.baseline
        else:
            ref = self._collect(acc for b, acc in self.buckets.buckets.items() if b < first_current)
        out: dict[str, float] = {}
        if self.numeric:
            p = psi_numeric(ref, current, self.bins)
            k = ks_statistic(ref, current)
            if k is not None:
                out["ks"] = k
        else:
            p = psi_categorical(ref, current)
        if p is not None:
            out["psi"] = p
        return out

    def snapshot(self) -> Any:
        dump = (lambda a: [a[0], list(a[1])]) if self.numeric else (lambda a: dict(a))
        base = self.baseline if self.numeric or self.baseline is None else dict(self.baseline)
        return {"b": self.buckets.snapshot(dump), "first": self.first_ms, "base": base}

    def restore(self, state: Any) -> None:
        if not state:
            return
        self.buckets.restore(state["b"], _load_values if self.numeric else _load_counts)
        self.first_ms = state["first"]
        base = state["base"]
        self.baseline = base if base is None or self.numeric else Counter(base)


def _load_values(raw: Any) -> Any:
    return [int(raw[0]), [float(v) for v in raw[1]]]


def _load_counts(raw: Any) -> Any:
    return Counter({str(k): int(v) for k, v in raw.items()})

"""Range-vector functions (``rate``, ``increase``, ``*_over_time``, ``deriv`` ...), vectorised over steps.

Each function sees, per step, the samples of its window as a row of a (steps x width) matrix with a mask,
built a block of steps at a time (:func:`_blocks`), and computes every step of a series in a handful of
numpy operations, in the order and with the rounding of Prometheus 2.x (Kahan compensation where it
uses it, counter resets added one by one). Every one but ``last_over_time`` drops the metric name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from mlwatch.promql.aggregations import quantile_columns
from mlwatch.promql.errors import ExecutionError, Unsupported
from mlwatch.promql.values import F64, I64, InstantVector, Labels, RangeVector, drop_name

RANGE_OVER_TIME = {
    "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time",
    "stddev_over_time", "stdvar_over_time", "last_over_time", "present_over_time", "changes", "resets",
}

MAX_CELLS = 1 << 21  # window-matrix cells per block


# ------------------------------------------------------------------ window matrices
def _blocks(ts: I64, vals: F64, lo: I64, hi: I64) -> Iterator[tuple[slice, F64, I64, Any, Any]]:
    """(step slice, values, timestamps, mask, counts) of the windows, a block of steps at a time."""
    n = len(lo)
    cnt = hi - lo
    width = int(cnt.max()) if n else 0
    if width == 0 or not len(ts):
        return
    per = max(1, MAX_CELLS // width)
    cols = np.arange(width)
    for s in range(0, n, per):
        sl = slice(s, min(n, s + per))
        c = cnt[sl]
        mask = cols[None, :] < c[:, None]
        idx = np.where(mask, lo[sl, None] + cols[None, :], 0)
        yield sl, vals[idx], ts[idx], mask, c


def _range_apply(rv: RangeVector, fn: Callable[..., tuple[F64, Any]], *, min_samples: int = 1,
                 keep_name: bool = False) -> InstantVector:
    """Apply ``fn(values, timestamps, mask, counts, step_slice)`` -> (result, ok) to each series' windows."""
    steps = len(rv.ends)
    labels: list[Labels] = []
    values: list[F64] = []
    present: list[Any] = []
    for i, lab in enumerate(rv.labels):
        out = np.zeros(steps)
        ok = np.zeros(steps, bool)
        for sl, V, T, M, C in _blocks(rv.ts[i], rv.values[i], rv.lo[i], rv.hi[i]):
            with np.errstate(all="ignore"):
                res, good = fn(V, T, M, C, sl)
            ok[sl] = (C >= min_samples) & good
            out[sl] = res
        if ok.any():
            labels.append(lab if keep_name else drop_name(lab))
            values.append(out)
            present.append(ok)
    if not labels:
        return InstantVector.empty(steps)
    if len(set(labels)) != len(labels):
        raise ExecutionError("vector cannot contain metrics with the same labelset")
    return InstantVector(labels, np.vstack(values), np.vstack(present))


def _last(V: F64, C: Any) -> F64:
    return np.asarray(V[np.arange(len(C)), np.maximum(C - 1, 0)], dtype=np.float64)


def extrapolated_rate(rv: RangeVector, *, counter: bool, rate: bool) -> InstantVector:
    """Prometheus 2.x ``extrapolatedRate``, from the first and last sample of each window (no window matrix)."""
    rng = rv.range_ms
    steps = len(rv.ends)
    labels: list[Labels] = []
    values: list[F64] = []
    present: list[Any] = []
    ends = rv.ends
    starts = ends - rng
    for i, lab in enumerate(rv.labels):
        ts, vals, lo, hi = rv.ts[i], rv.values[i], rv.lo[i], rv.hi[i]
        ok = (hi - lo) >= 2
        if not ok.any():
            continue
        a = np.where(ok, lo, 0)
        b = np.where(ok, hi - 1, 0)
        first_v, last_v = vals[a], vals[b]
        first_t, last_t = ts[a], ts[b]
        with np.errstate(all="ignore"):
            result = last_v - first_v
            if counter and len(vals) > 1:
                drop = vals[1:] < vals[:-1]
                if drop.any():
                    # A reset adds the value before it, one after the other as Prometheus does (same rounding);
                    # only the windows that hold a reset need the sequential pass.
                    ndrop = np.zeros(len(vals), np.int64)
                    ndrop[1:] = np.cumsum(drop)
                    hit = np.flatnonzero(ok & (ndrop[b] > ndrop[a]))
                    if len(hit):
                        result[hit] = _with_resets(ts, vals, lo[hit], hi[hit], result[hit])
            to_start = (first_t - starts) / 1000.0
            to_end = (ends - last_t) / 1000.0
            sampled = (last_t - first_t) / 1000.0
            count = hi - lo
            avg = sampled / np.maximum(count - 1, 1)
            if counter:
                to_zero = sampled * (first_v / result)
                use = (result > 0) & (first_v >= 0) & (to_zero < to_start)
                to_start = np.where(use, to_zero, to_start)
            threshold = avg * 1.1
            interval = sampled + np.where(to_start < threshold, to_start, avg / 2)
            interval = interval + np.where(to_end < threshold, to_end, avg / 2)
            result = result * (interval / sampled)
            if rate:
                result = result / (rng / 1000.0)
        labels.append(drop_name(lab))
        values.append(result)
        present.append(ok)
    if not labels:
        return InstantVector.empty(steps)
    if len(set(labels)) != len(labels):
        raise ExecutionError("vector cannot contain metrics with the same labelset")
    return InstantVector(labels, np.vstack(values), np.vstack(present))


def _with_resets(ts: I64, vals: F64, lo: I64, hi: I64, result: F64) -> F64:
    """``result`` (last - first) plus, in order, the value before each counter reset in each window."""
    out = result.copy()
    for sl, V, _T, M, _C in _blocks(ts, vals, lo, hi):
        res = out[sl]
        prev = np.zeros(len(res))
        for j in range(V.shape[1]):
            m, v = M[:, j], V[:, j]
            res = np.where(m & (v < prev), res + prev, res)
            prev = np.where(m, v, prev)
        out[sl] = res
    return out


def instant_delta(rv: RangeVector, *, rate: bool) -> InstantVector:
    def fn(V: F64, T: I64, M: Any, C: Any, sl: slice) -> tuple[F64, Any]:
        rows = np.arange(len(C))
        i1, i0 = np.maximum(C - 1, 0), np.maximum(C - 2, 0)
        v1, v0, t1, t0 = V[rows, i1], V[rows, i0], T[rows, i1], T[rows, i0]
        res = v1 - v0
        if rate:
            res = np.where(v1 < v0, v1, res)
        interval = (t1 - t0).astype(np.float64)
        if rate:
            res = res / (interval / 1000.0)
        return res, interval != 0

    return _range_apply(rv, fn, min_samples=2)


def _columns(V: F64, M: Any) -> Iterator[tuple[int, F64, Any]]:
    for j in range(V.shape[1]):
        yield j, V[:, j], M[:, j]


def over_time(name: str, rv: RangeVector, arg: F64 | None = None) -> InstantVector:
    keep = name == "last_over_time"  # Prometheus 2.x keeps the name here only

    def fn(V: F64, T: I64, M: Any, C: Any, sl: slice) -> tuple[F64, Any]:
        if name == "count_over_time":
            return C.astype(np.float64), True
        if name == "present_over_time":
            return np.ones(len(C)), True
        if name == "last_over_time":
            return _last(V, C), True
        if name == "sum_over_time":
            total = np.zeros(len(C))
            comp = np.zeros(len(C))
            for _, v, m in _columns(V, M):
                t, c = _kahan_inc(v, total, comp)
                total, comp = np.where(m, t, total), np.where(m, c, comp)
            return np.where(np.isinf(total), total, total + comp), True
        if name == "avg_over_time":
            return _incremental_mean(V, M, C), True
        if name == "min_over_time":
            return np.fmin.reduce(np.where(M, V, np.nan), axis=1), True
        if name == "max_over_time":
            return np.fmax.reduce(np.where(M, V, np.nan), axis=1), True
        if name in ("stddev_over_time", "stdvar_over_time"):
            count = np.zeros(len(C))
            mean = np.zeros(len(C))
            m2 = np.zeros(len(C))
            for _, v, m in _columns(V, M):
                count = np.where(m, count + 1, count)
                delta = v - mean
                mean = np.where(m, mean + delta / np.maximum(count, 1), mean)
                m2 = np.where(m, m2 + delta * (v - mean), m2)
            var = m2 / count
            return (var if name == "stdvar_over_time" else np.sqrt(var)), True
        if name == "quantile_over_time":
            assert arg is not None
            return quantile_columns(arg[sl], V, M), True
        if name == "changes" or name == "resets":
            n = np.zeros(len(C))
            prev = V[:, 0]
            for j, v, m in _columns(V, M):
                if j == 0:
                    continue
                if name == "changes":
                    hit = ~((v == prev) | (np.isnan(v) & np.isnan(prev)))
                else:
                    hit = v < prev
                n = np.where(m & hit, n + 1, n)
                prev = np.where(m, v, prev)
            return n, True
        raise Unsupported(f"function {name}()")

    return _range_apply(rv, fn, keep_name=keep)


def _kahan_inc(inc: F64, total: F64, comp: F64) -> tuple[F64, F64]:
    """Prometheus' ``kahanSumInc`` (Neumaier's variant), elementwise."""
    t = total + inc
    c = comp + np.where(np.abs(total) >= np.abs(inc), (total - t) + inc, (inc - t) + total)
    return t, c


def _incremental_mean(V: F64, M: Any, C: Any) -> F64:
    """Prometheus 2.x ``avg_over_time``: a running mean with Kahan compensation and its handling of infinities."""
    mean = np.zeros(len(C))
    comp = np.zeros(len(C))
    count = np.zeros(len(C))
    for _, v, m in _columns(V, M):
        count = np.where(m, count + 1, count)
        skip = np.isinf(mean) & ((np.isinf(v) & ((mean > 0) == (v > 0))) | (~np.isinf(v) & ~np.isnan(v)))
        step = m & ~skip
        t, c = _kahan_inc(v / count - mean / count, mean, comp)
        mean, comp = np.where(step, t, mean), np.where(step, c, comp)
    return np.where(np.isinf(mean), mean, mean + comp)


def _regression(V: F64, T: I64, M: Any, intercept_t: I64) -> tuple[F64, F64]:
    n = np.zeros(V.shape[0])
    sx = np.zeros_like(n)
    sy = np.zeros_like(n)
    sxy = np.zeros_like(n)
    sx2 = np.zeros_like(n)
    for j in range(V.shape[1]):
        m = M[:, j]
        x = (T[:, j] - intercept_t) / 1e3
        v = V[:, j]
        n = np.where(m, n + 1, n)
        sy = np.where(m, sy + v, sy)
        sx = np.where(m, sx + x, sx)
        sxy = np.where(m, sxy + x * v, sxy)
        sx2 = np.where(m, sx2 + x * x, sx2)
    cov = sxy - sx * sy / n
    var = sx2 - sx * sx / n
    slope = cov / var
    intercept = sy / n - slope * sx / n
    # Prometheus special-cases a window whose values all equal the first: slope 0 exactly (NaN for infinities)
    first = V[:, 0]
    const = np.all(~M | (V == first[:, None]), axis=1)
    inf = np.isinf(first)
    slope = np.where(const, np.where(inf, np.nan, 0.0), slope)
    intercept = np.where(const, np.where(inf, np.nan, first), intercept)
    return slope, intercept


def deriv(rv: RangeVector) -> InstantVector:
    def fn(V: F64, T: I64, M: Any, C: Any, sl: slice) -> tuple[F64, Any]:
        slope, _ = _regression(V, T, M, T[:, 0])
        return slope, True

    return _range_apply(rv, fn, min_samples=2)


def predict_linear(rv: RangeVector, duration: F64, eval_times: I64) -> InstantVector:
    def fn(V: F64, T: I64, M: Any, C: Any, sl: slice) -> tuple[F64, Any]:
        slope, intercept = _regression(V, T, M, eval_times[sl])
        return slope * duration[sl] + intercept, True

    return _range_apply(rv, fn, min_samples=2)


def holt_winters(rv: RangeVector, sf: F64, tf: F64) -> InstantVector:
    for arr, what in ((sf, "smoothing"), (tf, "trend")):
        bad = (arr <= 0) | (arr >= 1) | np.isnan(arr)
        if bad.any():
            letter = "sf" if what == "smoothing" else "tf"
            raise ExecutionError(f"invalid {what} factor. Expected: 0 < {letter} < 1, got: {arr[bad][0]:f}")

    def fn(V: F64, T: I64, M: Any, C: Any, sl: slice) -> tuple[F64, Any]:
        a, b_ = sf[sl], tf[sl]
        s1 = V[:, 0].copy()
        b = V[:, 1] - V[:, 0] if V.shape[1] > 1 else np.zeros(len(C))
        s0 = np.zeros(len(C))
        for j in range(1, V.shape[1]):
            m = M[:, j]
            x = a * V[:, j]
            nb = b if j == 1 else b_ * (s1 - s0) + (1 - b_) * b
            y = (1 - a) * (s1 + nb)
            b = np.where(m, nb, b)
            s0, s1 = np.where(m, s1, s0), np.where(m, x + y, s1)
        return s1, True

    return _range_apply(rv, fn, min_samples=2)

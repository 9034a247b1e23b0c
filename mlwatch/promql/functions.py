"""PromQL functions, with Prometheus 2.x semantics, vectorised over steps.

Range-vector functions see, per step, the samples of a window as a row of a (steps x width) matrix
with a mask; they compute every step of a series in a handful of numpy operations. Every function
but ``sort``, ``sort_desc``, ``label_replace``, ``label_join`` and ``vector``/``scalar`` drops the
metric name. Anything outside CONTRACT §5 is refused with an "unsupported" error naming it.
"""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import promql_parser as pp

from mlwatch.model import LABEL_NAME_RE
from mlwatch.promql.aggregations import quantile_columns
from mlwatch.promql.errors import ExecutionError, Unsupported
from mlwatch.promql.values import (
    F64,
    I64,
    InstantVector,
    Labels,
    RangeVector,
    Scalar,
    drop_name,
    make_labels,
    merge_same_labels,
)

if TYPE_CHECKING:
    from mlwatch.promql.engine import _Evaluator

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


def _extrapolated(rv: RangeVector, *, counter: bool, rate: bool) -> InstantVector:
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


def _instant_delta(rv: RangeVector, *, rate: bool) -> InstantVector:
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


def _over_time(name: str, rv: RangeVector, arg: F64 | None = None) -> InstantVector:
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


def _deriv(rv: RangeVector) -> InstantVector:
    def fn(V: F64, T: I64, M: Any, C: Any, sl: slice) -> tuple[F64, Any]:
        slope, _ = _regression(V, T, M, T[:, 0])
        return slope, True

    return _range_apply(rv, fn, min_samples=2)


def _predict_linear(rv: RangeVector, duration: F64, eval_times: I64) -> InstantVector:
    def fn(V: F64, T: I64, M: Any, C: Any, sl: slice) -> tuple[F64, Any]:
        slope, intercept = _regression(V, T, M, eval_times[sl])
        return slope * duration[sl] + intercept, True

    return _range_apply(rv, fn, min_samples=2)


def _holt_winters(rv: RangeVector, sf: F64, tf: F64) -> InstantVector:
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


# ------------------------------------------------------------------ instant-vector functions
def _map(vec: InstantVector, fn: Callable[[F64], F64]) -> InstantVector:
    with np.errstate(all="ignore"):
        values = fn(vec.values)
    return merge_same_labels(InstantVector([drop_name(lab) for lab in vec.labels], values, vec.present))


def _sgn(v: F64) -> F64:
    return np.where(v < 0, -1.0, np.where(v > 0, 1.0, v))


MATH: dict[str, Callable[[F64], F64]] = {
    "abs": np.abs, "ceil": np.ceil, "floor": np.floor, "exp": np.exp, "sqrt": np.sqrt,
    "ln": np.log, "log2": np.log2, "log10": np.log10, "sgn": _sgn,
    "acos": np.arccos, "acosh": np.arccosh, "asin": np.arcsin, "asinh": np.arcsinh, "atan": np.arctan,
    "atanh": np.arctanh, "cos": np.cos, "cosh": np.cosh, "sin": np.sin, "sinh": np.sinh, "tan": np.tan,
    "tanh": np.tanh, "deg": np.degrees, "rad": np.radians,
}


def _date_parts(secs: F64, part: str) -> F64:
    out = np.full(secs.shape, np.nan)
    flat = secs.ravel()
    res = out.ravel()
    for k, s in enumerate(flat):
        if not math.isfinite(s):
            continue
        t = _utc(int(s))
        if part == "day_of_week":
            res[k] = (t.tm_wday + 1) % 7
        elif part == "day_of_month":
            res[k] = t.tm_mday
        elif part == "day_of_year":
            res[k] = t.tm_yday
        elif part == "days_in_month":
            res[k] = calendar.monthrange(t.tm_year, t.tm_mon)[1]
        elif part == "hour":
            res[k] = t.tm_hour
        elif part == "minute":
            res[k] = t.tm_min
        elif part == "month":
            res[k] = t.tm_mon
        elif part == "year":
            res[k] = t.tm_year
    return res.reshape(secs.shape)


def _utc(s: int) -> Any:
    import time as _time

    return _time.gmtime(s)


DATE = {"day_of_week", "day_of_month", "day_of_year", "days_in_month", "hour", "minute", "month", "year"}


def _go_expand(template: str, match: re.Match[str]) -> str:
    """Go regexp ``Expand``: ``$1``, ``${1}``, ``$name``, ``${name}``, ``$$``; unknown groups are empty."""
    out = []
    i = 0
    while i < len(template):
        c = template[i]
        if c != "$" or i + 1 >= len(template):
            out.append(c)
            i += 1
            continue
        nxt = template[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
            continue
        if nxt == "{":
            close = template.find("}", i + 2)
            name = template[i + 2 : close] if close > 0 else ""
            if close < 0 or not re.fullmatch(r"[A-Za-z0-9_]+", name):
                out.append(c)
                i += 1
                continue
            i = close + 1
        else:
            m = re.match(r"[A-Za-z0-9_]+", template[i + 1 :])
            if not m:
                out.append(c)
                i += 1
                continue
            name = m.group(0)
            i += 1 + len(name)
        try:
            val = match.group(int(name)) if name.isdigit() else match.group(name)
        except IndexError:
            val = ""
        out.append(val or "")
    return "".join(out)


def _label_replace(vec: InstantVector, dst: str, repl: str, src: str, regex: str) -> InstantVector:
    try:
        rx = re.compile(f"^(?:{regex})$")  # Prometheus 2.x: '.' does not match a newline here
    except re.error as exc:
        raise ExecutionError(f"invalid regular expression in label_replace(): {regex}: {exc}") from None
    if not LABEL_NAME_RE.match(dst):
        raise ExecutionError(f"invalid destination label name in label_replace(): {dst}")
    labels = []
    for lab in vec.labels:
        d = dict(lab)
        m = rx.match(d.get(src, ""))
        if m is not None:
            res = _go_expand(repl, m)
            if res:
                d[dst] = res
            else:
                d.pop(dst, None)
        labels.append(make_labels(d))
    return merge_same_labels(InstantVector(labels, vec.values, vec.present))


def _label_join(vec: InstantVector, dst: str, sep: str, srcs: list[str]) -> InstantVector:
    if not LABEL_NAME_RE.match(dst):
        raise ExecutionError(f"invalid destination label name in label_join(): {dst}")
    for s in srcs:
        if not LABEL_NAME_RE.match(s):
            raise ExecutionError(f"invalid source label name in label_join(): {s}")
    labels = []
    for lab in vec.labels:
        d = dict(lab)
        joined = sep.join(d.get(s, "") for s in srcs)
        if joined:
            d[dst] = joined
        else:
            d.pop(dst, None)
        labels.append(make_labels(d))
    return merge_same_labels(InstantVector(labels, vec.values, vec.present))


def _absent_labels(node: Any) -> Labels:
    while isinstance(node, pp.ParenExpr):
        node = node.expr
    if isinstance(node, pp.MatrixSelector):
        node = node.vector_selector
    if not isinstance(node, pp.VectorSelector):
        return ()
    d: dict[str, str] = {}
    dropped: set[str] = set()
    for m in node.matchers.matchers:
        if m.name == "__name__":
            continue
        if str(m.op).endswith("Equal") and not str(m.op).endswith("NotEqual") and m.name not in d \
                and m.name not in dropped:
            d[m.name] = m.value
        elif m.name in d:
            del d[m.name]
            dropped.add(m.name)
    return make_labels(d)


def _histogram_quantile(q: F64, vec: InstantVector) -> InstantVector:
    groups: dict[Labels, list[tuple[float, int]]] = {}
    for i, lab in enumerate(vec.labels):
        d = dict(lab)
        le = d.pop("le", None)
        if le is None:
            continue
        try:
            if "_" in le:
                raise ValueError(le)
            bound = float(le)
        except ValueError:
            continue
        d.pop("__name__", None)
        groups.setdefault(make_labels(d), []).append((bound, i))
    steps = vec.steps
    keys = list(groups)
    values = np.zeros((len(keys), steps))
    present = np.zeros((len(keys), steps), bool)
    for g, key in enumerate(keys):
        members = sorted(groups[key], key=lambda b: b[0])
        rows = [i for _, i in members]
        bounds = [b for b, _ in members]
        P = vec.present[rows]
        V = vec.values[rows]
        for j in np.flatnonzero(P.any(axis=0)):
            bk = [(bounds[r], float(V[r, j])) for r in range(len(rows)) if P[r, j]]
            values[g, j] = _bucket_quantile(float(q[j]), bk)
            present[g, j] = True
    return InstantVector(keys, values, present)


def _bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    if not buckets or not (math.isinf(buckets[-1][0]) and buckets[-1][0] > 0):
        return math.nan
    merged: list[list[float]] = []
    for bound, count in buckets:
        if merged and merged[-1][0] == bound:
            merged[-1][1] += count
        else:
            merged.append([bound, count])
    top = -math.inf
    for bucket in merged:
        if bucket[1] > top:
            top = bucket[1]
        elif bucket[1] < top:
            bucket[1] = top
    if len(merged) < 2:
        return math.nan
    observations = merged[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = len(merged) - 1
    for k in range(len(merged) - 1):
        if merged[k][1] >= rank:
            b = k
            break
    if b == len(merged) - 1:
        return merged[-2][0]
    if b == 0 and merged[0][0] <= 0:
        return merged[0][0]
    start, end, count = 0.0, merged[b][0], merged[b][1]
    if b > 0:
        start = merged[b - 1][0]
        count -= merged[b - 1][1]
        rank -= merged[b - 1][1]
    return start + (end - start) * (rank / count)


# ------------------------------------------------------------------ dispatch
RANGE_OVER_TIME = {
    "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time",
    "stddev_over_time", "stdvar_over_time", "last_over_time", "present_over_time", "changes", "resets",
}
SUPPORTED = (
    RANGE_OVER_TIME | set(MATH) | DATE
    | {"rate", "irate", "increase", "delta", "idelta", "quantile_over_time", "deriv", "predict_linear",
       "holt_winters", "absent_over_time", "round", "clamp", "clamp_min", "clamp_max", "histogram_quantile",
       "label_replace", "label_join", "time", "timestamp", "vector", "scalar", "absent", "sort", "sort_desc", "pi"}
)


def _scalar(v: Any) -> F64:
    assert isinstance(v, Scalar)
    return v.values


def call(ev: _Evaluator, node: Any, T: I64) -> Any:
    name = node.func.name
    if name not in SUPPORTED:
        raise Unsupported(f"function {name}()")
    raw = list(node.args)
    args: list[Any] = [ev.eval(a, T) for a in raw]
    steps = len(T)
    if name in ("rate", "increase", "delta"):
        return _extrapolated(args[0], counter=name != "delta", rate=name == "rate")
    if name in ("irate", "idelta"):
        return _instant_delta(args[0], rate=name == "irate")
    if name in RANGE_OVER_TIME:
        return _over_time(name, args[0])
    if name == "quantile_over_time":
        return _over_time(name, args[1], _scalar(args[0]))
    if name == "deriv":
        return _deriv(args[0])
    if name == "predict_linear":
        return _predict_linear(args[0], _scalar(args[1]), T)
    if name == "holt_winters":
        return _holt_winters(args[0], _scalar(args[1]), _scalar(args[2]))
    if name == "absent_over_time":
        rv: RangeVector = args[0]
        any_ = np.zeros(steps, bool)
        for w_lo, w_hi in zip(rv.lo, rv.hi, strict=True):
            any_ |= w_hi > w_lo
        return InstantVector([_absent_labels(raw[0])], np.ones((1, steps)), ~any_[None, :]).compact()
    if name == "absent":
        vec: InstantVector = args[0]
        any_ = np.asarray(vec.present.any(axis=0)) if len(vec.labels) else np.zeros(steps, bool)
        return InstantVector([_absent_labels(raw[0])], np.ones((1, steps)), ~any_[None, :]).compact()
    if name in MATH:
        return _map(args[0], MATH[name])
    if name == "round":
        to = _scalar(args[1]) if len(args) > 1 else np.ones(steps)
        inv = 1.0 / to
        return _map(args[0], lambda v: np.floor(v * inv + 0.5) / inv)
    if name == "clamp":
        lo, hi = _scalar(args[1]), _scalar(args[2])
        vec = _map(args[0], lambda v: np.maximum(lo, np.minimum(hi, v)))
        vec.present = vec.present & ~(hi < lo)[None, :]
        return vec
    if name == "clamp_min":
        lo = _scalar(args[1])
        return _map(args[0], lambda v: np.maximum(v, lo))
    if name == "clamp_max":
        hi = _scalar(args[1])
        return _map(args[0], lambda v: np.minimum(v, hi))
    if name in DATE:
        if args:
            return _map(args[0], lambda v: _date_parts(v, name))
        return InstantVector([()], _date_parts(T[None, :] / 1000.0, name), np.ones((1, steps), bool))
    if name == "time":
        return Scalar(T / 1000.0)
    if name == "pi":
        return Scalar(np.full(steps, math.pi))
    if name == "timestamp":
        vec = args[0]
        inner = raw[0]
        while isinstance(inner, pp.ParenExpr):
            inner = inner.expr
        if isinstance(inner, pp.VectorSelector) and vec.timestamps is not None:
            stamps = vec.timestamps / 1000.0
        else:
            stamps = np.broadcast_to(T / 1000.0, vec.values.shape)
        return merge_same_labels(InstantVector([drop_name(lab) for lab in vec.labels], stamps.copy(), vec.present))
    if name == "vector":
        return InstantVector([()], _scalar(args[0])[None, :].copy(), np.ones((1, steps), bool))
    if name == "scalar":
        vec = args[0]
        n = vec.present.sum(axis=0)
        vals = np.where(vec.present, vec.values, 0.0).sum(axis=0)
        return Scalar(np.where(n == 1, vals, np.nan))
    if name in ("sort", "sort_desc"):
        return args[0]
    if name == "histogram_quantile":
        return _histogram_quantile(_scalar(args[0]), args[1])
    if name == "label_replace":
        return _label_replace(args[0], *(a.value for a in args[1:5]))
    if name == "label_join":
        return _label_join(args[0], args[1].value, args[2].value, [a.value for a in args[3:]])
    raise Unsupported(f"function {name}()")


def result_order(node: Any) -> bool | None:
    """For an instant query whose top node is sort()/sort_desc(): False/True (descending); else None."""
    while isinstance(node, pp.ParenExpr):
        node = node.expr
    if isinstance(node, pp.Call) and node.func.name in ("sort", "sort_desc"):
        return node.func.name == "sort_desc"
    return None


def sort_series(series: list[tuple[Labels, Any, Any]], *, descending: bool) -> list[tuple[Labels, Any, Any]]:
    """Prometheus' sort/sort_desc: by value, NaN last in both."""

    def key(item: tuple[Labels, Any, Any]) -> tuple[int, float]:
        v = float(item[2][0])
        if math.isnan(v):
            return (1, 0.0)
        return (0, -v if descending else v)

    return sorted(series, key=key)


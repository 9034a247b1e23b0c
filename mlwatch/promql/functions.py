"""PromQL function calls, with Prometheus 2.x semantics, vectorised over steps: the dispatch, and the
instant-vector functions (math, clamping, dates, labels, ``histogram_quantile``, ``absent``, ``sort``).

Range-vector functions live in :mod:`mlwatch.promql.rangefuncs`. Every function but ``sort``,
``sort_desc``, ``label_replace``, ``label_join``, ``last_over_time`` and ``vector``/``scalar`` drops the
metric name. Anything else PromQL knows is refused with an "unsupported" error naming it.
"""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import promql_parser as pp

from mlwatch.model import LABEL_NAME_RE
from mlwatch.promql import rangefuncs
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
from mlwatch.regex import RegexError, compile_regex

if TYPE_CHECKING:
    from mlwatch.promql.engine import _Evaluator

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
        rx = compile_regex(regex, anchored=True)  # Prometheus 2.x: '.' does not match a newline here
    except RegexError as exc:
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
SUPPORTED = (
    rangefuncs.RANGE_OVER_TIME | set(MATH) | DATE
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
        return rangefuncs.extrapolated_rate(args[0], counter=name != "delta", rate=name == "rate")
    if name in ("irate", "idelta"):
        return rangefuncs.instant_delta(args[0], rate=name == "irate")
    if name in rangefuncs.RANGE_OVER_TIME:
        return rangefuncs.over_time(name, args[0])
    if name == "quantile_over_time":
        return rangefuncs.over_time(name, args[1], _scalar(args[0]))
    if name == "deriv":
        return rangefuncs.deriv(args[0])
    if name == "predict_linear":
        return rangefuncs.predict_linear(args[0], _scalar(args[1]), T)
    if name == "holt_winters":
        return rangefuncs.holt_winters(args[0], _scalar(args[1]), _scalar(args[2]))
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

